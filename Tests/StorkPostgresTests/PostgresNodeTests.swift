import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("PostgresNode files and tools")
struct PostgresNodeFileTests {
    @Test func binaryUsesBinDirThenPgConfig() {
        let recorder = LogRecorder()
        let withBinDir = TestNode(name: "bin", recorder: recorder, binDir: "/opt/pg/bin")
        defer { TestSupport.removeTree(withBinDir.directory) }
        #expect(withBinDir.node.binary("initdb") == "/opt/pg/bin/initdb")
        let fromPgConfig = TestNode(name: "bin2", recorder: recorder)
        defer { TestSupport.removeTree(fromPgConfig.directory) }
        #expect(fromPgConfig.node.binary("pg_ctl") == "/usr/lib/postgresql/15/bin/pg_ctl")
    }

    @Test func majorVersions() throws {
        #expect(PostgresNode.major(ofVersion: "15") == "15")
        #expect(PostgresNode.major(ofVersion: "15.18") == "15")
        #expect(PostgresNode.major(ofVersion: "18.6") == "18")
        #expect(PostgresNode.major(ofVersion: "9.6") == "9.6")
        #expect(PostgresNode.major(ofVersion: "9.6.24") == "9.6")
        #expect(PostgresNode.major(ofVersion: "9") == nil)
        #expect(PostgresNode.major(ofVersion: "devel") == nil)
        #expect(PostgresNode.major(ofVersion: "18beta1") == "18")
        #expect(PostgresNode.major(ofVersion: "17devel") == "17")
        #expect(PostgresNode.major(ofVersion: "9.6beta1") == "9.6")
        #expect(PostgresNode.major(ofVersionOutput: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") == "15")
        #expect(PostgresNode.major(ofVersionOutput: "postgres (PostgreSQL) 18.6") == "18")
        #expect(PostgresNode.major(ofVersionOutput: "postgres (PostgreSQL) 19devel") == "19")
        #expect(PostgresNode.major(ofVersionOutput: "bash: postgres: command not found") == nil)
        #expect(PostgresNode.major(ofVersionNumber: 150018) == "15")
        #expect(PostgresNode.major(ofVersionNumber: 180006) == "18")
        #expect(PostgresNode.major(ofVersionNumber: 90624) == "9.6")
        // The installed binaries, and a directory without them.
        let t = TestNode(name: "major", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        #expect(try t.node.binariesMajor() == "15")
        let none = TestNode(name: "nobin", recorder: LogRecorder(), binDir: "/nonexistent/bin")
        defer { TestSupport.removeTree(none.directory) }
        #expect(throws: PostgresError.self) { try none.node.binariesMajor() }
        // PG_VERSION of another major than the binaries: refused, both named.
        try FileManager.default.createDirectory(atPath: t.node.settings.dataDir, withIntermediateDirectories: true)
        try "14\n".write(toFile: t.node.settings.dataDir + "/PG_VERSION", atomically: true, encoding: .utf8)
        #expect(PostgresNode.dataDirectoryMajor(t.node.settings.dataDir) == "14")
        do {
            try t.node.checkBinariesFitDataDirectory()
            Issue.record("a PostgreSQL 14 data directory passed with 15's binaries")
        } catch {
            #expect("\(error)".contains("holds a PostgreSQL 14 cluster") && "\(error)".contains("are PostgreSQL 15"), "\(error)")
        }
        #expect(throws: PostgresError.self) { try t.node.checkSourceMajor(180006, source: "pg0") }
        try t.node.checkSourceMajor(150018, source: "pg0")
    }

    @Test func dataDirectoryStates() throws {
        let t = TestNode(name: "state", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        let data = t.node.settings.dataDir
        #expect(t.node.dataDirectoryState() == .empty)
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: false)
        #expect(t.node.dataDirectoryState() == .empty)
        _ = FileManager.default.createFile(atPath: data + "/.hidden", contents: nil)
        #expect(t.node.dataDirectoryState() == .empty)
        try "15\n".write(toFile: data + "/PG_VERSION", atomically: true, encoding: .utf8)
        #expect(t.node.dataDirectoryState() == .unusable("\(data) is not empty but has no global/pg_control"))
        try FileManager.default.createDirectory(atPath: data + "/global", withIntermediateDirectories: false)
        _ = FileManager.default.createFile(atPath: data + "/global/pg_control", contents: Data([0]))
        #expect(t.node.dataDirectoryState() == .initialized)
        TestSupport.removeTree(data)
        _ = FileManager.default.createFile(atPath: data, contents: nil)
        #expect(t.node.dataDirectoryState() == .unusable("\(data) is not a directory"))
    }

    @Test func initdbMapOptionsAndPasswordFile() async throws {
        let recorder = LogRecorder()
        let scratch = TestSupport.makeTempDir("stork-fakebin")
        defer { TestSupport.removeTree(scratch) }
        let realInitdb = try #require(TestSupport.which("initdb"))
        // A wrapper that records what initdb receives, then runs the real one.
        try FileManager.default.createDirectory(atPath: scratch + "/bin", withIntermediateDirectories: false)
        try writeScript(scratch + "/bin/initdb", """
            #!/bin/sh
            printf '%s\\n' "$@" > \(scratch)/argv
            for a in "$@"; do
              case "$a" in --pwfile=*) f="${a#--pwfile=}"; stat -c '%a %U' "$f" > \(scratch)/pwstat; cat "$f" > \(scratch)/pwcopy;; esac
            done
            exec \(realInitdb) "$@"
            """)
        let realControldata = try #require(TestSupport.which("pg_controldata"))
        try FileManager.default.createSymbolicLink(atPath: scratch + "/bin/pg_controldata", withDestinationPath: realControldata)
        let t = TestNode(name: "initdb-map", recorder: recorder, binDir: scratch + "/bin")
        defer { TestSupport.removeTree(t.directory) }

        try await t.node.initdb(options: .object([
            "encoding": .string("UTF8"), "data-checksums": .bool(true), "locale": .string("\"C\""),
            "auth-host": .string("scram-sha-256"), "nothing": .bool(false),
        ]))

        let argv = try String(contentsOfFile: scratch + "/argv", encoding: .utf8).split(separator: "\n").map(String.init)
        try #require(argv.count == 8)
        #expect(Array(argv.prefix(7)) == [
            "-D", t.node.settings.dataDir, "--auth-host=scram-sha-256", "--data-checksums", "--encoding=UTF8",
            "--locale=C", "--username=postgres",
        ])
        let pwfile = String(argv[7].dropFirst("--pwfile=".count))
        #expect(argv[7].hasPrefix("--pwfile=/"))
        #expect(!argv.joined(separator: " ").contains(Secrets.superuser))
        #expect(try String(contentsOfFile: scratch + "/pwstat", encoding: .utf8) == "600 postgres\n")
        #expect(try String(contentsOfFile: scratch + "/pwcopy", encoding: .utf8) == Secrets.superuser + "\n")
        #expect(!FileManager.default.fileExists(atPath: pwfile), "the password file is removed")
        #expect(!recorder.all.contains(Secrets.superuser))

        #expect(t.node.dataDirectoryState() == .initialized)
        #expect(ownerAndMode(t.node.settings.dataDir).map { "\($0.owner) \(String($0.mode, radix: 8))" } == "postgres 700")
        let control = try await t.node.controlData()
        #expect(control.clusterState == "shut down")
        #expect(control.timeline == 1)
        #expect(control.fields["Data page checksum version"] == "1")
        #expect(control.checkpointLSN > 0)
    }

    @Test func passwordFileIsRemovedWhenInitdbFails() async throws {
        let scratch = TestSupport.makeTempDir("stork-fakebin")
        defer { TestSupport.removeTree(scratch) }
        try FileManager.default.createDirectory(atPath: scratch + "/bin", withIntermediateDirectories: false)
        try writeScript(scratch + "/bin/initdb", """
            #!/bin/sh
            for a in "$@"; do case "$a" in --pwfile=*) echo "${a#--pwfile=}" > \(scratch)/pwfile;; esac; done
            echo "initdb: error: something went wrong" >&2
            exit 1
            """)
        let t = TestNode(name: "initdb-fail", recorder: LogRecorder(), binDir: scratch + "/bin")
        defer { TestSupport.removeTree(t.directory) }
        do {
            try await t.node.initdb(options: nil)
            Issue.record("expected initdb to fail")
        } catch let error as PostgresError {
            #expect(error.exitStatus == 1)
            #expect(error.message.hasPrefix("initdb failed with exit status 1"))
            #expect(error.message.contains("initdb: error: something went wrong"))
        }
        let pwfile = try String(contentsOfFile: scratch + "/pwfile", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(pwfile.hasPrefix("/"))
        #expect(!FileManager.default.fileExists(atPath: pwfile))
    }

    @Test(arguments: [
        JSONValue.array([.string("pgdata")]),
        .array([.string("nosync")]),
        .array([.object(["pwfile": .string("/tmp/x")])]),
        .array([.string("sync-only")]),
        .array([.string("version")]),
        .object(["pgdata": .string("/elsewhere")]),
        .array([.object(["encoding": .string("UTF8"), "locale": .string("C")])]),
        .string("data-checksums"),
    ])
    func refusedInitdbOptions(_ options: JSONValue) async throws {
        let t = TestNode(name: "refused", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        do {
            try await t.node.initdb(options: options)
            Issue.record("initdb accepted \(options.jsonString())")
        } catch let error as PostgresError {
            #expect(error.message.hasPrefix("bootstrap.initdb"))
        }
        #expect(t.node.dataDirectoryState() == .empty, "nothing ran")
    }

    @Test func writeConfigurationFiles() throws {
        let t = TestNode(name: "conf", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        let data = t.node.settings.dataDir
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: false)
        try "# the original\nshared_buffers = 128MB\n".write(toFile: data + "/postgresql.conf", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: data + "/recovery.signal", contents: nil)

        let upstream = "host=10.0.0.1 port=5432 user=replicator dbname=postgres application_name=conf"
        let parameters: [String: JSONValue] = [
            "cluster_name": .string("batman"), "max_connections": .int(100), "hot_standby": .bool(true),
            "archive_command": .string("cp '%p' /archive/%f"),
            "primary_conninfo": .string("host=ignored password=never"),
        ]
        try t.node.writeConfiguration(parameters: parameters, hba: ["local all all trust", "host replication replicator 10.0.0.0/8 scram-sha-256"],
                                      role: .replica(primaryConninfo: upstream))
        let port = t.node.settings.port
        #expect(try String(contentsOfFile: data + "/postgresql.base.conf", encoding: .utf8) == "# the original\nshared_buffers = 128MB\n")
        #expect(try String(contentsOfFile: data + "/postgresql.conf", encoding: .utf8) == """
            # Do not edit this file manually! It will be overwritten by Stork
            include 'postgresql.base.conf'

            archive_command = 'cp ''%p'' /archive/%f'
            cluster_name = 'batman'
            hot_standby = 'on'
            listen_addresses = '127.0.0.1'
            max_connections = '100'
            port = '\(port)'
            primary_conninfo = '\(upstream) passfile=\(t.node.settings.pgpass)'

            """)
        #expect(try String(contentsOfFile: data + "/pg_hba.conf", encoding: .utf8) == """
            # Do not edit this file manually! It will be overwritten by Stork
            local all all trust
            host replication replicator 10.0.0.0/8 scram-sha-256

            """)
        #expect(FileManager.default.fileExists(atPath: data + "/standby.signal"))
        let pgpass = try String(contentsOfFile: t.node.settings.pgpass, encoding: .utf8)
        #expect(pgpass.hasSuffix("10.0.0.1:5432:*:replicator:rep\\:pass 1\n"))
        for file in ["postgresql.conf", "postgresql.base.conf", "pg_hba.conf", "standby.signal"] {
            #expect(ownerAndMode(data + "/" + file).map { "\($0.owner) \(String($0.mode, radix: 8))" } == "postgres 600", "\(file)")
        }
        #expect(ownerAndMode(t.node.settings.pgpass).map { "\($0.owner) \(String($0.mode, radix: 8))" } == "postgres 600")

        // As a primary: the signals go, primary_conninfo goes, the base file stays the original,
        // and pg_hba.conf is kept when no lines are given.
        try t.node.writeConfiguration(parameters: parameters, hba: [], role: .primary)
        #expect(try String(contentsOfFile: data + "/postgresql.base.conf", encoding: .utf8) == "# the original\nshared_buffers = 128MB\n")
        let conf = try String(contentsOfFile: data + "/postgresql.conf", encoding: .utf8)
        #expect(!conf.contains("primary_conninfo"))
        #expect(conf.hasSuffix("port = '\(port)'\n"))
        #expect(!FileManager.default.fileExists(atPath: data + "/standby.signal"))
        #expect(!FileManager.default.fileExists(atPath: data + "/recovery.signal"))
        #expect(try String(contentsOfFile: data + "/pg_hba.conf", encoding: .utf8).contains("10.0.0.0/8"))
    }

    @Test func connURLAndReplicationConninfo() {
        var settings = PostgresSettings(
            listen: "0.0.0.0:5433", connectAddress: "10.0.0.7:5433", dataDir: "/d", pgpass: "/p",
            superuser: PostgresUser(username: "postgres", password: nil),
            replication: PostgresUser(username: "rep user", password: "secret"))
        settings.replication.sslOptions = ["sslmode": "verify-full", "sslrootcert": "/etc/ssl/my ca.pem"]
        let node = PostgresNode(settings: settings, memberName: "node-1", logger: .init(label: "t"))
        #expect(node.connURL == "postgres://10.0.0.7:5433/postgres")
        #expect(node.replicationConninfo(toConnURL: "postgres://10.0.0.9:5444/postgres")
                == "host=10.0.0.9 port=5444 user='rep user' dbname=postgres application_name=node-1 sslmode=verify-full sslrootcert='/etc/ssl/my ca.pem'")
        #expect(node.replicationConninfo(toConnURL: "postgres://[fe80::1]:5432/postgres").hasPrefix("host=fe80::1 port=5432 "))
        #expect(node.replicationConninfo(toConnURL: "postgresql://u@db.example:6000").hasPrefix("host=db.example port=6000 "))
        #expect(!node.replicationConninfo(toConnURL: "postgres://h:1/postgres").contains("secret"))
    }
}
