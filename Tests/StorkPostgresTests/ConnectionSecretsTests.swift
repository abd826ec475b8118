import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkProcess
import StorkTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The connection strings Stork hands to other programs carry the users' `ssl*` options, and
/// never a secret: an `sslpassword` goes through a temporary service file.
@Suite("Connection strings on command lines")
struct ConnectionSecretsTests {
    @Test func inheritedVariablesLeftOut() async throws {
        setenv("STORKTEST_DROPPED_PASSWORD", "dropped-Secret-9", 1)
        setenv("STORKTEST_KEPT", "kept", 1)
        var command = Command("/usr/bin/env")
        command.withoutInherited = ["STORKTEST_DROPPED_"]
        command.environment = ["STORKTEST_DROPPED_BUT_GIVEN": "given"]
        let result = try await ProcessRunner.run(command, logger: Logger(label: "t"))
        let lines = Set(result.output.split(separator: "\n").map(String.init))
        #expect(!result.output.contains("dropped-Secret-9"))
        #expect(lines.contains("STORKTEST_KEPT=kept"))
        #expect(lines.contains("STORKTEST_DROPPED_BUT_GIVEN=given"))
        let all = try await ProcessRunner.run(Command("/usr/bin/env"), logger: Logger(label: "t"))
        #expect(all.output.contains("STORKTEST_DROPPED_PASSWORD=dropped-Secret-9"))
    }

    @Test func movingSecretsToAServiceFile() throws {
        let plain = "host=h port=1 user=u sslmode=verify-ca"
        #expect(try ConnInfo.movingSecrets(plain, toService: "stork") == (plain, nil))
        #expect(try ConnInfo.movingSecrets("postgres://u:pw@h/db", toService: "stork") == ("postgres://u:pw@h/db", nil))
        let split = try ConnInfo.movingSecrets("host=h sslpassword='key pass\\'word' sslkey=/k password=pw", toService: "stork")
        #expect(split.conninfo == "host=h sslkey=/k service=stork")
        #expect(split.serviceFile == "[stork]\nsslpassword=key pass'word\npassword=pw\n")
        #expect(throws: PostgresError.self) { try ConnInfo.movingSecrets("host=h sslpassword='a\nb'", toService: "s") }
        #expect(throws: PostgresError.self) { try ConnInfo.movingSecrets("host=h sslpassword='ab '", toService: "s") }
    }

    /// A node whose superuser and replication user have TLS options and a key passphrase.
    static func node(_ t: TestNode, binDir: String) -> PostgresNode {
        var settings = t.node.settings
        settings.binDir = binDir
        settings.superuser.sslOptions = ["sslmode": "verify-ca", "sslcert": "/certs/su.crt", "sslkey": "/certs/su.key",
                                         "sslrootcert": "/certs/ca.crt", "sslpassword": "su-Key-Pass",
                                         "channel_binding": "require", "gssencmode": "disable", "sslcrl": "/certs/crl.pem"]
        settings.replication.sslOptions = ["sslmode": "verify-full", "sslcert": "/certs/rep.crt", "sslkey": "/certs/rep key",
                                           "sslrootcert": "/certs/ca.crt", "sslpassword": "rep-Key-Pass"]
        return PostgresNode(settings: settings, memberName: "m1", runAs: TestSupport.postgresUser, logger: Logger(label: "t"))
    }

    /// A script that records its arguments, PGPASSFILE, and the service file's mode and text.
    static let recorder = """
        #!/bin/sh
        out="$(dirname "$0")/../$(basename "$0").out"
        for a in "$@"; do echo "arg=$a"; done > "$out"
        echo "pgpassfile=$PGPASSFILE" >> "$out"
        echo "servicefile=$PGSERVICEFILE" >> "$out"
        echo "mode=$(stat -c '%a %U' "$PGSERVICEFILE")" >> "$out"
        cat "$PGSERVICEFILE" >> "$out"
        """

    @Test func postBootstrapGetsTheSuperusersOptionsAndNoSecret() async throws {
        let t = TestNode(name: "post-ssl", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        try FileManager.default.createDirectory(atPath: t.directory + "/bin", withIntermediateDirectories: false)
        TestSupport.chownToPostgres(t.directory + "/bin")
        try writeScript(t.directory + "/bin/post", Self.recorder)
        let node = Self.node(t, binDir: t.directory + "/bin")
        try await node.runPostBootstrap("'\(t.directory)/bin/post'")
        let out = try String(contentsOfFile: t.directory + "/post.out", encoding: .utf8)
        let lines = out.split(separator: "\n").map(String.init)
        let port = node.settings.port
        #expect(lines.first == "arg=host=127.0.0.1 port=\(port) user=postgres dbname=postgres channel_binding=require gssencmode=disable "
                + "sslcert=/certs/su.crt sslcrl=/certs/crl.pem sslkey=/certs/su.key sslmode=verify-ca sslrootcert=/certs/ca.crt service=stork")
        #expect(lines.filter { $0.hasPrefix("arg=") }.count == 1)
        #expect(lines.contains("pgpassfile=\(node.settings.pgpass)"))
        #expect(lines.contains("mode=600 \(TestSupport.postgresUser?.name ?? String(cString: getpwuid(geteuid())!.pointee.pw_name))"), "\(out)")
        #expect(lines.suffix(2) == ["[stork]", "sslpassword=su-Key-Pass"], "\(out)")
        let serviceFile = try #require(lines.first { $0.hasPrefix("servicefile=") }).dropFirst("servicefile=".count)
        #expect(!FileManager.default.fileExists(atPath: String(serviceFile)), "the service file is removed afterwards")
    }

    /// pg_rewind's `--source-server` once carried the key passphrase in argv.
    @Test func rewindGetsTheOptionsAndNoSecret() async throws {
        let t = TestNode(name: "rw-ssl", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        try FileManager.default.createDirectory(atPath: t.directory + "/bin", withIntermediateDirectories: false)
        TestSupport.chownToPostgres(t.directory + "/bin")
        try writeScript(t.directory + "/bin/pg_rewind", Self.recorder)
        let node = Self.node(t, binDir: t.directory + "/bin")
        #expect(try await node.rewind(fromConnURL: "postgres://127.0.0.1:6543/postgres", dryRun: true) == .needed)
        let out = try String(contentsOfFile: t.directory + "/pg_rewind.out", encoding: .utf8)
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("arg=--source-server=host=127.0.0.1 port=6543 user=postgres") && $0.hasSuffix(" service=stork") }, "\(out)")
        #expect(!lines.contains { $0.hasPrefix("arg=") && $0.contains("Pass") }, "\(out)")
        #expect(lines.suffix(2) == ["[stork]", "sslpassword=su-Key-Pass"], "\(out)")
    }

    @Test func basebackupGetsTheReplicationOptionsAndNoSecret() async throws {
        let t = TestNode(name: "bb-ssl", recorder: LogRecorder())
        defer { TestSupport.removeTree(t.directory) }
        try FileManager.default.createDirectory(atPath: t.directory + "/bin", withIntermediateDirectories: false)
        TestSupport.chownToPostgres(t.directory + "/bin")
        try writeScript(t.directory + "/bin/pg_basebackup", Self.recorder)
        let node = Self.node(t, binDir: t.directory + "/bin")
        let conninfo = node.replicationConninfo(toConnURL: "postgres://127.0.0.1:6543/postgres", applicationName: .some(nil))
        #expect(conninfo.contains("sslpassword=rep-Key-Pass"), "the replication conninfo itself is complete: \(conninfo)")
        try await node.basebackup(from: conninfo, options: nil)
        let out = try String(contentsOfFile: t.directory + "/pg_basebackup.out", encoding: .utf8)
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.contains("arg=--dbname=host=127.0.0.1 port=6543 user=replicator dbname=postgres sslcert=/certs/rep.crt "
                               + "sslkey='/certs/rep key' sslmode=verify-full sslrootcert=/certs/ca.crt service=stork"), "\(out)")
        #expect(!lines.contains { $0.hasPrefix("arg=") && $0.contains("Pass") }, "\(out)")
        #expect(lines.suffix(2) == ["[stork]", "sslpassword=rep-Key-Pass"], "\(out)")
        #expect(lines.contains { $0.hasPrefix("mode=600 ") }, "\(out)")
        let serviceFile = try #require(lines.first { $0.hasPrefix("servicefile=") }).dropFirst("servicefile=".count)
        #expect(!FileManager.default.fileExists(atPath: String(serviceFile)))
        // The pgpass file holds the replication password for that upstream, mode 0600.
        let pgpass = try String(contentsOfFile: node.settings.pgpass, encoding: .utf8)
        #expect(pgpass.contains("127.0.0.1:6543:*:replicator:"))
        #expect(ownerAndMode(node.settings.pgpass)?.mode == 0o600)

        // primary_conninfo: the options, the passfile, and the key passphrase (a 0600 file the
        // server reads, as Patroni writes it); never the password.
        try FileManager.default.createDirectory(atPath: node.settings.dataDir, withIntermediateDirectories: true)
        TestSupport.chownToPostgres(node.settings.dataDir)
        try node.writeConfiguration(parameters: [:], hba: [], role: .replica(primaryConninfo: node.replicationConninfo(toConnURL: "postgres://127.0.0.1:6543/postgres")))
        let conf = try String(contentsOfFile: node.settings.dataDir + "/postgresql.conf", encoding: .utf8)
        let primary = try #require(conf.split(separator: "\n").first { $0.hasPrefix("primary_conninfo") })
        for needle in ["sslmode=verify-full", "sslcert=/certs/rep.crt", "sslrootcert=/certs/ca.crt", "application_name=m1",
                       "passfile=\(node.settings.pgpass)"] {
            #expect(primary.contains(needle), "\(primary)")
        }
        #expect(!primary.contains(Secrets.replication))
        #expect(ownerAndMode(node.settings.dataDir + "/postgresql.conf")?.mode == 0o600)
    }
}
