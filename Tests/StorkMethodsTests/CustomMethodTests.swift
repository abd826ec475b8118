import Testing
import StorkConfig
@testable import StorkMethods

@Suite("Custom replica methods: the calling convention")
struct CustomMethodTests {
    func spec(_ section: [String: JSONValue]) -> ReplicaMethodSpec {
        var s = ReplicaMethodSpec(name: "wal_e", kind: .custom(command: ["/usr/bin/wal-e", "restore"]))
        s.section = section
        s.noParams = section["no_params"]?.isTruthy ?? false
        return s
    }

    @Test func patroniArguments() {
        let args = CustomMethod.arguments(command: ["/usr/bin/wal-e", "restore"],
                                          spec: spec(["command": .string("x"), "envdir": .string("/etc/wal-e"), "retries": .int(2),
                                                      "no_leader": .bool(true), "threshold": .double(1.5)]),
                                          scope: "batman", datadir: "/pg/data.stork-staging", connstring: "host=10.0.0.1 port=5432 user=rep")
        #expect(args == ["restore", "--scope=batman", "--role=replica", "--datadir=/pg/data.stork-staging",
                         "--connstring=host=10.0.0.1 port=5432 user=rep",
                         "--envdir=/etc/wal-e", "--no_leader=True", "--retries=2", "--threshold=1.5"])
    }

    @Test func noParamsStripsStorksKeys() {
        let args = CustomMethod.arguments(command: ["restore"],
                                          spec: spec(["command": .string("x"), "no_params": .bool(true), "keep_data": .bool(true),
                                                      "retries": .int(1), "timeout": .int(5), "bucket": .string("b")]),
                                          scope: "s", datadir: "/d", connstring: "")
        #expect(args == ["--bucket=b"])
    }

    @Test func pythonTexts() {
        #expect(CustomMethod.pythonText(.bool(false)) == "False")
        #expect(CustomMethod.pythonText(.null) == "None")
        #expect(CustomMethod.pythonText(.array([.string("a"), .int(1)])) == "['a', 1]")
        #expect(CustomMethod.pythonText(.object(["k": .string("it's")])) == "{'k': 'it\\'s'}")
    }

    @Test func pausesGrow() {
        #expect((1...8).map { ReplicaBuilder.pause(afterAttempt: $0) } == [1, 2, 4, 8, 16, 30, 30, 30])
    }
}

@Suite("Custom bootstrap: the command's arguments")
struct CustomBootstrapArgumentTests {
    @Test func patronisArguments() {
        var spec = BootstrapMethodSpec(name: "clone", command: ["/usr/bin/clone", "--fast"])
        spec.section = ["command": .string("/usr/bin/clone --fast"), "recovery_conf": .object(["restore_command": .string("x")]),
                        "keep_existing_recovery_conf": .bool(false), "no_params": .bool(false),
                        "source": .string("host=a"), "jobs": .int(4), "verify": .bool(true)]
        #expect(CustomBootstrap.arguments(spec, scope: "main", datadir: "/data") ==
                ["--fast", "--scope=main", "--datadir=/data", "--jobs=4", "--source=host=a", "--verify=True"])
        spec.noParams = true
        spec.section["no_params"] = .bool(true)
        #expect(CustomBootstrap.arguments(spec, scope: "main", datadir: "/data") == ["--fast", "--jobs=4", "--source=host=a", "--verify=True"])
    }
}
