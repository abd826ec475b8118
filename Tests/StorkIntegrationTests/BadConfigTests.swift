import Foundation
import Testing
import StorkTestSupport
import StorkProcess

private let valid = """
    scope: batman
    name: pg0
    restapi:
      listen: 127.0.0.1:8008
      connect_address: 127.0.0.1:8008
    etcd3:
      hosts: 127.0.0.1:2379
    postgresql:
      listen: 127.0.0.1:5432
      connect_address: 127.0.0.1:5432
      data_dir: /tmp/stork-never-created
      authentication:
        superuser:
          username: postgres
          password: topsecret-su
        replication:
          username: replicator
          password: topsecret-repl

    """

struct BadConfig: CustomTestStringConvertible, Sendable {
    var label: String
    var yaml: String
    /// Lines `stork check` and `stork agent` must print, each one whole line of stderr.
    var expected: [String]
    var testDescription: String { label }
}

private let badConfigs: [BadConfig] = [
    .init(label: "no data_dir", yaml: valid.replacingOccurrences(of: "  data_dir: /tmp/stork-never-created\n", with: ""),
          expected: ["postgresql.data_dir: required"]),
    .init(label: "etcd port not a number", yaml: valid.replacingOccurrences(of: "127.0.0.1:2379", with: "x:y"),
          expected: ["etcd3.hosts: \"x:y\": port is not a number"]),
    .init(label: "restapi.listen not host:port", yaml: valid.replacingOccurrences(of: "listen: 127.0.0.1:8008", with: "listen: abc"),
          expected: ["restapi.listen: \"abc\": expected host:port"]),
    .init(label: "no DCS", yaml: valid.replacingOccurrences(of: "etcd3:\n  hosts: 127.0.0.1:2379\n", with: ""),
          expected: ["etcd3: required (or local for the embedded single-host store)"]),
    .init(label: "etcd v2 section", yaml: valid.replacingOccurrences(of: "etcd3:", with: "etcd:"),
          expected: ["etcd: Stork speaks the etcd v3 API only; rename the section to etcd3"]),
    .init(label: "ttl not a number", yaml: valid + "bootstrap:\n  dcs:\n    ttl: abc\n",
          expected: ["bootstrap.dcs.ttl: \"abc\": expected an integer"]),
    .init(label: "refused initdb option", yaml: valid + "bootstrap:\n  initdb:\n  - pgdata: /elsewhere\n",
          expected: ["bootstrap.initdb: option \"pgdata\" is set by Stork and cannot be given"]),
    .init(label: "two problems at once", yaml: valid.replacingOccurrences(of: "scope: batman\nname: pg0\n", with: ""),
          expected: ["scope: required", "name: required"]),
    .init(label: "unknown replica method", yaml: valid + "  create_replica_methods: [wal_x, basebackup]\n",
          expected: ["postgresql.create_replica_methods: \"wal_x\": no section postgresql.wal_x with a command (built in: basebackup, rsync, archive)"]),
    .init(label: "replica method command does not exist",
          yaml: valid + "  create_replica_methods: [restore]\n  restore:\n    command: /nonexistent/restore --fast\n",
          expected: ["postgresql.restore.command: \"/nonexistent/restore\": no such executable file"]),
    .init(label: "rsync source with an unknown placeholder",
          yaml: valid + "  create_replica_methods: [rsync]\n  rsync:\n    source: rsync://{host}/{datadir}\n",
          expected: ["postgresql.rsync.source: \"rsync://{host}/{datadir}\": unknown placeholder {datadir} (known: {host}, {port}, {name}, {scope})"]),
    .init(label: "negative retries", yaml: valid + "  create_replica_methods: [restore]\n  restore:\n    command: /bin/true\n    retries: -1\n",
          expected: ["postgresql.restore.retries: -1: expected 0 or more"]),
    .init(label: "REST API username without a password (authentication silently off)",
          yaml: valid.replacingOccurrences(of: "  connect_address: 127.0.0.1:8008\n", with: "  connect_address: 127.0.0.1:8008\n  authentication:\n    username: admin\n"),
          expected: ["restapi.authentication: a username and no password: the REST API would change the cluster for anyone; set both username and password (or PATRONI_RESTAPI_USERNAME and PATRONI_RESTAPI_PASSWORD), or neither"]),
    .init(label: "YAML syntax error", yaml: "scope: batman\nname: [pg0\nrestapi: {\n",
          expected: ["YAML syntax error"]),
]

@Suite("Bad configurations: one line per problem, exit status 2, nothing started")
struct BadConfigTests {
    @Test(arguments: badConfigs)
    func checkRefuses(_ c: BadConfig) throws {
        let dir = TestSupport.makeTempDir("stork-badcfg")
        defer { TestSupport.removeTree(dir) }
        let path = dir + "/bad.yml"
        FileManager.default.createFile(atPath: path, contents: Data(c.yaml.utf8))
        for command in ["check", "agent"] {
            let r = try runStork([command, path])
            #expect(r.status == 2, "stork \(command) exit status\n\(r.err)")
            let lines = r.err.split(separator: "\n").map(String.init)
            for want in c.expected {
                #expect(lines.contains { $0 == want || (want == "YAML syntax error" && $0.hasPrefix(path + ":") && $0.contains(want)) },
                        "stork \(command): missing line \(want)\n\(r.err)")
            }
            #expect(!r.err.contains("topsecret"), "no password in error output")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/stork-never-created"), "nothing started")
        }
    }

    @Test func yamlErrorHasLineAndColumn() throws {
        let dir = TestSupport.makeTempDir("stork-badcfg")
        defer { TestSupport.removeTree(dir) }
        let path = dir + "/bad.yml"
        FileManager.default.createFile(atPath: path, contents: Data("scope: x\n  name: [\n".utf8))
        let r = try runStork(["check", path])
        #expect(r.status == 2)
        #expect(r.err.hasPrefix("\(path):2:7: YAML syntax error: "), "\(r.err)")
    }

    @Test func checkMasksPasswords() throws {
        let dir = TestSupport.makeTempDir("stork-badcfg")
        defer { TestSupport.removeTree(dir) }
        let path = dir + "/good.yml"
        FileManager.default.createFile(atPath: path, contents: Data(valid.utf8))
        let r = try runStork(["check", path])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("data_dir: /tmp/stork-never-created"))
        #expect(r.out.contains("******") && !r.out.contains("topsecret"))
        // PATRONI_* variables win over the file.
        let env = try runStork(["check", path], env: ["PATRONI_POSTGRESQL_DATA_DIR": "/srv/pg", "PATRONI_NAME": "pg9"])
        #expect(env.out.contains("data_dir: /srv/pg") && env.out.contains("name: pg9"), "\(env.out)")
    }

    /// Secrets under keys no list names (an S3 source's `secret_access_key` and
    /// `session_token` once printed in clear) are masked by their look, in every section; a
    /// `*_key` that holds a file path is shown.
    @Test func checkMasksEverySecretLookingKey() throws {
        let dir = TestSupport.makeTempDir("stork-badcfg")
        defer { TestSupport.removeTree(dir) }
        let path = dir + "/secrets.yml"
        let yaml = valid + """
            bootstrap:
              method: archive
              archive:
                url: s3://bucket/prefix
                access_key_id: AKIDPLAIN
                secret_access_key: leak-s3-secret
                session_token: leak-s3-token
            tags:
              api_token: leak-tag-token
            """
        let methods = """
              create_replica_methods: [tool, basebackup]
              tool:
                command: /bin/true
                db_pass: leak-pass
                encryption_key: leak-key
                client_secret: leak-client-secret
                ssl_key: /etc/stork/client.key

            """
        FileManager.default.createFile(atPath: path, contents: Data(yaml.replacingOccurrences(of: "  authentication:\n", with: methods + "  authentication:\n").utf8))
        let r = try runStork(["check", path])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("tool:") && r.out.contains("secret_access_key"), "\(r.out)")
        #expect(!r.out.contains("leak-"), "\(r.out)")
        #expect(r.out.contains("ssl_key: /etc/stork/client.key"), "\(r.out)")
        #expect(r.out.contains("access_key_id: AKIDPLAIN"), "\(r.out)")
    }

    /// Files the agent's user cannot read, told as such. Run as the postgres user: root reads
    /// every file, and the agent runs as postgres.
    @Test func unreadableFilesAreToldAsPermissionDenied() throws {
        let user = try #require(TestSupport.postgresUser, "the postgres OS user is needed")
        let dir = TestSupport.makeTempDir("stork-badcfg")
        defer { TestSupport.removeTree(dir) }
        let locked = dir + "/locked.yml"
        FileManager.default.createFile(atPath: locked, contents: Data(valid.utf8), attributes: [.posixPermissions: 0])
        let config = try runStork(["check", locked], as: user)
        #expect(config.status == 2)
        #expect(config.err == "\(locked): cannot read the configuration file: Permission denied\n", "\(config.err)")

        let ca = dir + "/locked-ca.crt"
        FileManager.default.createFile(atPath: ca, contents: Data("not read".utf8), attributes: [.posixPermissions: 0])
        let path = dir + "/tls.yml"
        FileManager.default.createFile(atPath: path, contents: Data(valid.replacingOccurrences(
            of: "etcd3:\n  hosts: 127.0.0.1:2379\n", with: "etcd3:\n  hosts: 127.0.0.1:2379\n  cacert: \(ca)\n").utf8),
            attributes: [.posixPermissions: 0o644])
        let tls = try runStork(["check", path], as: user)
        #expect(tls.status == 2)
        #expect(tls.err.split(separator: "\n").contains("etcd3.cacert: \"\(ca)\": permission denied (cannot read it as user \(user.uid))"),
                "\(tls.err)")
    }
}

/// A DCS that refuses the configured credentials stops the agent at start: one line naming the
/// key, exit status 2, nothing started.
@Suite("Refused etcd credentials at start", .serialized)
struct RefusedCredentialsTests {
    @Test(.timeLimit(.minutes(2)))
    func wrongEtcdPassword() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let etcdctl = try #require(TestSupport.which("etcdctl"), "etcdctl missing: apt-get install etcd-client")
        for args in [["user", "add", "root", "--new-user-password=right-etcd-pw"], ["user", "grant-role", "root", "root"], ["auth", "enable"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: etcdctl)
            p.arguments = ["--endpoints=\(etcd.clientURL)"] + args
            p.environment = ["ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            p.waitUntilExit()
            try #require(p.terminationStatus == 0, "etcdctl \(args) failed")
        }
        let cluster = TestCluster(dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let m = cluster.addMember("pg0", extraYAML: "")
        var yaml = try String(contentsOfFile: m.configPath, encoding: .utf8)
        yaml = yaml.replacingOccurrences(of: "etcd3:\n", with: "etcd3:\n  username: root\n  password: wrong-etcd-pw\n")
        try yaml.write(toFile: m.configPath, atomically: true, encoding: .utf8)
        TestSupport.chownToPostgres(m.configPath)
        try m.start()
        let status = await m.waitForExit(timeout: 30)
        #expect(status == 2, "\(m.log)")
        #expect(m.log.split(separator: "\n").contains { $0.hasPrefix("etcd3.password: ") }, "\(m.log)")
        #expect(!m.log.contains("wrong-etcd-pw"))
        #expect(!FileManager.default.fileExists(atPath: m.dataDir + "/PG_VERSION"), "nothing started")
    }
}
