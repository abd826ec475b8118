import Foundation
import Testing
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A custom replica method for the tests: records its arguments, `PGPASSFILE` and its whole
/// environment (`env: NAME=value` lines) in `--log`,
/// then does `--action`: `fail` (exit 1), `tempfail` (exit 75), `hang` (sleeps, with a child
/// that sleeps too, recording both PIDs), `copy` (lists what the target holds, then copies the
/// base backup in `--backup`), `copy-in-place` (the same into the data directory given as `--into`).
let methodScript = """
    #!/bin/bash
    for a in "$@"; do
      case "$a" in
        --datadir=*) datadir="${a#--datadir=}";;
        --into=*) datadir="${a#--into=}";;
        --action=*) action="${a#--action=}";;
        --log=*) log="${a#--log=}";;
        --backup=*) backup="${a#--backup=}";;
      esac
    done
    echo "args: $*" >> "$log"
    echo "PGPASSFILE=${PGPASSFILE:-}" >> "$log"
    env | sed 's/^/env: /' >> "$log"
    case "$action" in
      fail) exit 1;;
      tempfail) exit 75;;
      hang) sleep 1000 & echo "child $!" >> "$log"; echo "self $$" >> "$log"; wait;;
      copy)
        echo "target holds: $(ls -A "$datadir" | tr '\\n' ' ')" >> "$log"
        cp -a "$backup"/. "$datadir"/ || exit 1
        # As pg_basebackup -R or a restore tool would: settings Stork must not keep.
        echo "primary_conninfo = 'host=192.0.2.1 port=1'" >> "$datadir/postgresql.auto.conf";;
    esac
    exit 0

    """

/// One cluster for the replica-method tests: a primary on the embedded store, the method
/// script, and a base backup of the primary (what the `copy` action restores).
final class MethodCluster: @unchecked Sendable {
    let cluster: TestCluster
    let dcsDir: String
    let script: String
    let backup: String
    var primary: TestMember!

    init() throws {
        dcsDir = TestSupport.makeTempDir("stork-dcs")
        cluster = TestCluster(scope: "methods", dcs: .local(dcsDir))
        script = cluster.root + "/method.sh"
        try methodScript.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        backup = cluster.root + "/backup"
    }

    func log(_ name: String) -> String { cluster.root + "/\(name).log" }

    /// Starts the primary, then takes the base backup `copy` uses.
    func startPrimary() async throws {
        primary = try await cluster.startPrimary("pg0")
        let r = try runAsPostgres(TestSupport.pgBinDir + "/pg_basebackup",
                                  ["-D", backup, "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", String(primary.pgPort),
                                   "-U", "replicator", "--no-manifest"],
                                  env: ["PGPASSWORD": replicationPassword])
        #expect(r.status == 0, "\(r.output)")
    }

    /// A member whose chain is `methods`, each a (name, YAML lines of its section) pair.
    func addMember(_ name: String, methods: [(String, String)], extraYAML: String = "") -> TestMember {
        var yaml = "create_replica_methods: [\(methods.map(\.0).joined(separator: ", "))]\n"
        for (method, section) in methods where !section.isEmpty {
            yaml += "\(method):\n" + section.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n"
        }
        return cluster.addMember(name, extraYAML: extraYAML, postgresqlYAML: yaml)
    }

    func destroy() {
        cluster.destroy()
        TestSupport.removeTree(dcsDir)
    }
}

func lines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

@Suite("Replica methods: the chain, custom commands, retries, timeouts", .serialized)
struct ReplicaMethodTests {
    /// A first method that exits 1, then basebackup: the replica is built by basebackup and
    /// streams. The failing command got Patroni's arguments (datadir = the staging directory,
    /// a connection string without password) and a pgpass file, and of the agent's environment
    /// the operator's own variables, never the `PATRONI_*` ones that hold passwords.
    @Test(.timeLimit(.minutes(3)))
    func failingMethodThenBasebackup() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        let log = mc.log("pg1")
        let pg1 = mc.addMember("pg1", methods: [("broken", "command: \(mc.script) --action=fail\nlog: \(log)\nextra_key: 42"),
                                                ("basebackup", "")])
        try pg1.start(environment: ["PATRONI_SUPERUSER_PASSWORD": superuserPassword, "PATRONI_REPLICATION_PASSWORD": replicationPassword,
                                    "OPERATOR_SETTING": "kept-for-the-tools"])
        #expect(await mc.cluster.waitAllStreaming(timeout: 60), "\(mc.cluster.logs())")
        let recorded = lines(log)
        let environment = recorded.filter { $0.hasPrefix("env: ") }
        #expect(environment.contains("env: OPERATOR_SETTING=kept-for-the-tools"), "\(environment)")
        #expect(!environment.contains { $0.hasPrefix("env: PATRONI_") || $0.contains(superuserPassword) || $0.contains(replicationPassword) },
                "\(environment)")
        let args = recorded.first { $0.hasPrefix("args: ") } ?? ""
        #expect(args.contains("--action=fail --scope=methods --role=replica --datadir=\(pg1.dataDir).stork-staging --connstring="), "\(args)")
        #expect(args.contains("--extra_key=42") && args.contains("--log=\(log)"), "\(args)")
        #expect(args.contains("host=127.0.0.1") && args.contains("user=replicator") && !args.contains(replicationPassword), "\(args)")
        #expect(recorded.contains("PGPASSFILE=\(pg1.base)/pgpass"), "\(recorded)")
        #expect(pg1.log.contains("Error creating replica using method broken (attempt 1 of 1)"), "\(pg1.log)")
        #expect(pg1.log.contains("replica has been created using basebackup"))
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-staging"), "staging directory left behind")
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-incomplete"), "work marker left behind")
    }

    /// `retries: 2` gives exactly three attempts, then the next method; `no_params` gets none of
    /// Stork's arguments; exit status 75 is retried as an attempt of the same method, and the
    /// chain then waits for a later cycle instead of moving on.
    @Test(.timeLimit(.minutes(3)))
    func retriesNoParamsAndTryLater() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        let log1 = mc.log("pg1"), log2 = mc.log("pg2")
        let pg1 = mc.addMember("pg1", methods: [
            ("flaky", "command: \(mc.script) --action=fail\nlog: \(log1)\nretries: 2\nno_params: true"),
            ("basebackup", ""),
        ])
        let pg2 = mc.addMember("pg2", methods: [
            ("later", "command: \(mc.script) --action=tempfail\nlog: \(log2)\nretries: 1"),
            ("basebackup", ""),
        ])
        try pg1.start()
        try pg2.start()
        let pg1Streams = await TestSupport.waitUntil(timeout: 60) { await pg1.api("/replica").0 == 200 }
        #expect(pg1Streams, "\(mc.cluster.logs())")
        let attempts = lines(log1).filter { $0.hasPrefix("args: ") }
        #expect(attempts.count == 3, "\(attempts)")
        for a in attempts {
            #expect(a == "args: --action=fail --log=\(log1)", "no_params must pass only the section's own keys: \(a)")
        }
        // pg2: two attempts (75 twice), no basebackup, then the whole chain again on a later cycle.
        let twoRounds = await TestSupport.waitUntil(timeout: 30) { lines(log2).filter { $0.hasPrefix("args: ") }.count >= 4 }
        #expect(twoRounds, "\(pg2.log)")
        #expect(pg2.log.contains("asks to be tried again later (exit status 75, attempt 2 of 2)"), "\(pg2.log)")
        #expect(!pg2.log.contains("using method basebackup"), "exit status 75 moved on to the next method")
        #expect(await pg2.api("/patroni").1["state"] as? String != "running")
    }

    /// `timeout: 3` on a command that sleeps forever and has a child that sleeps: both end
    /// within a few seconds, and the next method builds the replica.
    @Test(.timeLimit(.minutes(3)))
    func timeoutEndsTheCommandAndItsChildren() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        let log = mc.log("pg1")
        let pg1 = mc.addMember("pg1", methods: [("stuck", "command: \(mc.script) --action=hang\nlog: \(log)\ntimeout: 3"),
                                                ("basebackup", "")])
        try pg1.start()
        let started = await TestSupport.waitUntil(timeout: 30) { lines(log).contains { $0.hasPrefix("child ") } }
        #expect(started, "\(pg1.log)")
        let since = Date()
        let pids = lines(log).compactMap { line -> pid_t? in
            guard line.hasPrefix("child ") || line.hasPrefix("self ") else { return nil }
            return pid_t(line.split(separator: " ")[1])
        }
        #expect(pids.count == 2)
        let gone = await TestSupport.waitUntil(timeout: 20) { pids.allSatisfy { kill($0, 0) != 0 } }
        #expect(gone, "the command or its child still runs")
        #expect(Date().timeIntervalSince(since) < 15, "took \(Date().timeIntervalSince(since)) s")
        #expect(await mc.cluster.waitAllStreaming(timeout: 60), "\(mc.cluster.logs())")
        #expect(pg1.log.contains("Error creating replica using method stuck (attempt 1 of 1): \(mc.script) did not finish within 3 s and was stopped"), "\(pg1.log)")
    }

    /// With the leader stopped, only `no_leader` methods run, with an empty connection string:
    /// the replica is built from a backup (by the test's script) and starts; `keep_data` builds
    /// in place and keeps what the directory held.
    /// A replica built while the primary is down would win the leader race (as in Patroni);
    /// these tests are about the copy, and want it to wait for the primary.
    static let followsThePrimary = "tags:\n  nofailover: true"

    @Test(.timeLimit(.minutes(3)))
    func noLeaderAndKeepData() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        let sysid = mc.primary.sql("SELECT system_identifier FROM pg_control_system()")
        mc.primary.stop()
        let log = mc.log("pg1")
        let pg1 = mc.addMember("pg1", methods: [
            ("basebackup", ""),
            ("restore", "command: \(mc.script) --action=copy\nlog: \(log)\nbackup: \(mc.backup)\nno_leader: true\nkeep_data: true"),
        ], extraYAML: Self.followsThePrimary)
        // A hidden file: the data directory still counts as empty, and keep_data must keep it.
        mkdir(pg1.dataDir, 0o700)
        TestSupport.chownToPostgres(pg1.dataDir)
        FileManager.default.createFile(atPath: pg1.dataDir + "/.keep-me", contents: Data("x".utf8))
        try pg1.start()
        let running = await TestSupport.waitUntil(timeout: 60) { await pg1.api("/patroni").1["state"] as? String == "running" }
        #expect(running, "\(pg1.log)")
        let args = lines(log).first { $0.hasPrefix("args: ") } ?? ""
        #expect(args.contains("--datadir=\(pg1.dataDir) ") || args.hasSuffix("--datadir=\(pg1.dataDir)"), "keep_data builds in place: \(args)")
        #expect(args.contains("--connstring=") && !args.contains("host="), "no leader: an empty connection string: \(args)")
        #expect(lines(log).contains { $0.hasPrefix("target holds: ") && $0.contains(".keep-me") }, "\(lines(log))")
        #expect(FileManager.default.fileExists(atPath: pg1.dataDir + "/.keep-me"))
        #expect(!pg1.log.contains("using method basebackup"), "basebackup ran without a leader")
        #expect(pg1.log.contains("trying to bootstrap (without leader)"), "\(pg1.log)")
        #expect(pg1.sql("SELECT system_identifier FROM pg_control_system()") == sysid)
        #expect(pg1.sql("SELECT pg_is_in_recovery()") == "t")
        // The method's primary_conninfo is gone: when the leader returns, the replica follows it.
        let auto = (try? String(contentsOfFile: pg1.dataDir + "/postgresql.auto.conf", encoding: .utf8)) ?? ""
        #expect(!auto.contains("192.0.2.1"), "\(auto)")
        try mc.primary.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" }, "\(pg1.log)")
    }

    /// `Methods/restore-directory`, the example method, builds a replica from a base backup
    /// with the leader stopped; before the backup is there it asks to be tried later (75).
    @Test(.timeLimit(.minutes(3)))
    func exampleMethodFromMethods() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        mc.primary.stop()
        let method = repositoryRoot + "/Methods/restore-directory"
        let later = mc.cluster.root + "/backup-later"
        let pg1 = mc.addMember("pg1", methods: [("restore_directory", "command: \(method)\nbackup: \(later)\nno_leader: true")],
                               extraYAML: Self.followsThePrimary)
        try pg1.start()
        let asked = await TestSupport.waitUntil(timeout: 30) { pg1.log.contains("asks to be tried again later (exit status 75") }
        #expect(asked, "\(pg1.log)")
        #expect(pg1.log.contains("does not hold a base backup"), "the method's reason is not in the log")
        // The backup arrives; the next cycle builds the replica.
        try FileManager.default.copyItem(atPath: mc.backup, toPath: later)
        let chown = Process()
        chown.executableURL = URL(fileURLWithPath: "/bin/chown")
        chown.arguments = ["-R", "postgres:postgres", later]
        try chown.run()
        chown.waitUntilExit()
        let running = await TestSupport.waitUntil(timeout: 60) { await pg1.api("/patroni").1["state"] as? String == "running" }
        #expect(running, "\(pg1.log)")
        #expect(pg1.log.contains("replica has been created using restore_directory"))
        #expect(pg1.sql("SELECT pg_is_in_recovery()") == "t")
    }

    /// `stork explain` reads the live cluster and prints the chain without running anything:
    /// the source, each method's command line with secrets masked, and what is skipped.
    @Test(.timeLimit(.minutes(2)))
    func explainShowsTheChain() async throws {
        let mc = try MethodCluster()
        defer { mc.destroy() }
        try await mc.startPrimary()
        let pg1 = mc.addMember("pg1", methods: [("wal_fetch", "command: \(mc.script) --action=fail\napi_password: hunter2-Secret\nretries: 2"),
                                                ("basebackup", "")])
        let r = try runStork(["explain", pg1.configPath])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("copy source: leader 'pg0' (postgres://127.0.0.1:\(mc.primary.pgPort)/postgres)"), "\(r.out)")
        #expect(r.out.contains("1. wal_fetch: 3 attempts, into \(pg1.dataDir).stork-staging, renamed into place once checked"), "\(r.out)")
        #expect(r.out.contains("\(mc.script) --action=fail --scope=methods --role=replica --datadir=\(pg1.dataDir).stork-staging"), "\(r.out)")
        #expect(r.out.contains("--api_password=******") && !r.out.contains("hunter2"), "\(r.out)")
        #expect(r.out.contains("pg_basebackup --pgdata=\(pg1.dataDir).stork-staging -X stream --checkpoint=fast"), "\(r.out)")
        #expect(r.out.contains("--slot=pg1 --create-slot"), "\(r.out)")
        #expect(!r.out.contains(replicationPassword) && !r.out.contains(superuserPassword))
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-staging") && lines(mc.log("pg1")).isEmpty, "explain ran something")
        // Without a leader nothing can run: basebackup and the command are skipped.
        mc.primary.stop()
        let none = try runStork(["explain", pg1.configPath])
        #expect(none.out.contains("copy source: none"), "\(none.out)")
        #expect(none.out.contains("skipped: needs a member to copy from") && none.out.contains("nothing would run"), "\(none.out)")
    }
}
