import Foundation
import Logging
import Testing
import StorkConfig
import StorkDCS
import StorkPostgres
import StorkProcess
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The repository's top directory (Methods/, Recipes/ are under it).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The `stork` binary under test: `STORK_BIN` (scripts/test sets it), else the debug build.
let storkBinary: String = ProcessInfo.processInfo.environment["STORK_BIN"] ?? repositoryRoot + "/.build/debug/stork"

let superuserPassword = "super-Secret-1"
let replicationPassword = "repl-Secret-2"

/// Which DCS a test cluster uses.
enum TestDCS {
    case etcd([String])
    case local(String)

    var yaml: String {
        switch self {
        case .etcd(let urls):
            let hosts = urls.map { $0.replacingOccurrences(of: "http://", with: "") }.joined(separator: ",")
            return "etcd3:\n  hosts: \(hosts)\n"
        case .local(let path):
            return "local:\n  path: \(path)\n"
        }
    }
}

/// One member: its configuration file, ports, directories and (when started) its agent process.
final class TestMember: @unchecked Sendable {
    // @unchecked: tests drive a member from one task at a time.
    let name: String
    let base: String
    let pgPort: Int
    let apiPort: Int
    var process: Process?
    var extraYAML: String
    /// Extra environment for every start of the agent (PATRONI_* variables, say).
    var environment: [String: String] = [:]
    /// When set, `sql()` connects with this client certificate (PGSSLMODE=verify-ca).
    var clientTLS: (cert: String, key: String, rootCert: String)?
    /// How `api()` reaches the REST API: `https` with a client for the agent's TLS settings.
    var apiScheme = "http"
    var apiClient = MemberAPIClient(timeout: 3)

    var dataDir: String { base + "/data" }
    var configPath: String { base + "/stork.yml" }
    var logPath: String { base + "/agent.log" }

    /// `yaml`, when given, is the whole configuration file (the rest comes from `environment`).
    init(name: String, scope: String, dcs: TestDCS, root: String, replicationPassword: String = replicationPassword,
         extraYAML: String = "", postgresqlYAML: String = "", bootstrap: Bool = true, bootstrapYAML: String = "",
         dcsYAML: String = "", yaml fullYAML: String? = nil) {
        self.name = name
        self.base = root + "/" + name
        self.pgPort = TestSupport.freePort()
        self.apiPort = TestSupport.freePort()
        self.extraYAML = extraYAML
        mkdir(base, 0o755)
        TestSupport.chownToPostgres(base)
        let bootstrapSection = bootstrap ? """
            bootstrap:
              dcs:
                ttl: 20
                loop_wait: 1
                retry_timeout: 4
            \(dcsYAML.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
              initdb:
              - encoding: UTF8
              - data-checksums
              pg_hba:
              - local all all trust
              - host replication replicator 127.0.0.1/32 scram-sha-256
              - host all all 127.0.0.1/32 scram-sha-256
            \(bootstrapYAML.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))

            """ : ""
        let yaml = fullYAML ?? """
            scope: \(scope)
            name: \(name)
            restapi:
              listen: 127.0.0.1:\(apiPort)
              connect_address: 127.0.0.1:\(apiPort)
            \(dcs.yaml)\(bootstrapSection)postgresql:
              listen: 127.0.0.1:\(pgPort)
              connect_address: 127.0.0.1:\(pgPort)
              data_dir: \(dataDir)
              \(postgresqlYAML.contains("bin_dir:") ? "" : "bin_dir: " + TestSupport.pgBinDir)
              pgpass: \(base)/pgpass
              authentication:
                superuser:
                  username: postgres
                  password: \(superuserPassword)
                replication:
                  username: replicator
                  password: \(replicationPassword)
            \(postgresqlYAML.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
              parameters:
                unix_socket_directories: \(base)
                shared_buffers: 16MB
                max_connections: 30
            \(extraYAML)
            """
        FileManager.default.createFile(atPath: configPath, contents: Data(yaml.utf8))
        TestSupport.chownToPostgres(configPath)
    }

    /// Starts `stork agent` as the postgres OS user, its output in agent.log.
    func start(environment extra: [String: String] = [:]) throws {
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let p = Process()
        if let user = TestSupport.postgresUser {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", storkBinary, "agent", configPath]
        } else {
            p.executableURL = URL(fileURLWithPath: storkBinary)
            p.arguments = ["agent", configPath]
        }
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = base
        env.merge(environment) { _, new in new }
        env.merge(extra) { _, new in new }
        p.environment = env
        // Appending: a self-fence an earlier agent left behind writes to the same file.
        let log = FileHandle(fileDescriptor: open(logPath, O_WRONLY | O_APPEND), closeOnDealloc: true)
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
    }

    var isAgentRunning: Bool { process?.isRunning ?? false }

    /// SIGTERM to the agent (it stops PostgreSQL and releases its keys), then waits.
    func stop(timeout: Double = 60) {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }

    /// SIGKILL to the agent: a crash. PostgreSQL and any child the agent started keep running.
    func crash() {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Waits for the agent to exit by itself; its exit status, or nil on timeout.
    func waitForExit(timeout: Double) async -> Int32? {
        guard let p = process else { return nil }
        let ok = await TestSupport.waitUntil(timeout: timeout) { !p.isRunning }
        return ok ? p.terminationStatus : nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `pg_ctl start` as postgres, without the agent, its output in `manual.log`; through
    /// Stork's process runner (as `ArchivingServer` does): Foundation's Process leaves its
    /// descriptor open in the postmaster, and the wait would never end.
    func startPostgresByHand() async throws {
        var command = Command(TestSupport.pgBinDir + "/pg_ctl", ["start", "-D", dataDir, "-w", "-l", base + "/manual.log"])
        command.runAs = TestSupport.postgresUser
        command.timeout = 60
        let result = try await ProcessRunner.run(command, logger: Logger(label: "test"))
        #expect(result.succeeded, "pg_ctl start: \(result.output)")
    }

    /// Stops a PostgreSQL that an agent left behind (after SIGKILL of the agent, say).
    func stopPostgresIfRunning() {
        let dirs = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter { $0.hasPrefix("data") }
        for dir in dirs where FileManager.default.fileExists(atPath: base + "/" + dir + "/postmaster.pid") {
            _ = try? runAsPostgres(TestSupport.pgBinDir + "/pg_ctl", ["stop", "-D", base + "/" + dir, "-m", "immediate", "-w"])
        }
    }

    /// GET on the member's REST API: status code (0 when it cannot be reached) and JSON body.
    func api(_ path: String) async -> (Int, [String: Any]) {
        guard let r = try? await apiClient.request("GET", url: "\(apiScheme)://127.0.0.1:\(apiPort)\(path)") else { return (0, [:]) }
        let json = (try? JSONSerialization.jsonObject(with: Data(r.text.utf8))) as? [String: Any] ?? [:]
        return (r.status, json)
    }

    /// A request with a JSON body on the member's plain-HTTP REST API: status (0 when it
    /// cannot be reached) and body.
    func send(_ method: String, _ path: String, _ body: String) async -> (Int, String) {
        let port = apiPort
        let answer = await Task.detached {
            LoopbackTCP.exchange(port, method, path, body: body, headers: ["Content-Type: application/json"])
        }.value
        return answer.map { ($0.status, $0.body) } ?? (0, "")
    }

    /// Runs SQL on this member's PostgreSQL as the superuser; nil when it cannot connect.
    func sql(_ query: String) -> String? {
        var env = ["PGPASSWORD": superuserPassword, "PGCONNECT_TIMEOUT": "3"]
        if let tls = clientTLS {
            env.merge(["PGSSLMODE": "verify-ca", "PGSSLCERT": tls.cert, "PGSSLKEY": tls.key, "PGSSLROOTCERT": tls.rootCert]) { _, n in n }
        }
        let r = try? runAsPostgres(TestSupport.pgBinDir + "/psql",
                                   ["-h", "127.0.0.1", "-p", String(pgPort), "-U", "postgres", "-d", "postgres",
                                    "-Atc", query], env: env)
        guard let r, r.status == 0 else { return nil }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Runs a program as the postgres OS user (when root) and returns its status and output.
@discardableResult
func runAsPostgres(_ program: String, _ args: [String], env: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let p = Process()
    if let user = TestSupport.postgresUser {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", program] + args
    } else {
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
    }
    var e = ProcessInfo.processInfo.environment
    e.merge(env) { _, n in n }
    p.environment = e
    p.currentDirectoryURL = URL(fileURLWithPath: "/tmp")
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Runs `stork` with arguments (as the current user) and returns its status, stdout and stderr.
/// `stork ARGS` to its end; as `user` (through setpriv) when given.
func runStork(_ args: [String], env: [String: String] = [:], as user: OSUser? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    if let user {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--", storkBinary] + args
    } else {
        p.executableURL = URL(fileURLWithPath: storkBinary)
        p.arguments = args
    }
    var e = ProcessInfo.processInfo.environment
    for k in e.keys where k.hasPrefix("PATRONI_") { e[k] = nil }
    e.merge(env) { _, n in n }
    p.environment = e
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let r = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: r, as: UTF8.self))
}

/// A set of members of one cluster in one temporary directory, torn down by `destroy()`.
final class TestCluster: @unchecked Sendable {
    let root: String
    let scope: String
    let dcs: TestDCS
    var members: [TestMember] = []

    init(scope: String = "batman", dcs: TestDCS) {
        self.root = TestSupport.makeTempDir("stork-it")
        self.scope = scope
        self.dcs = dcs
    }

    @discardableResult
    func addMember(_ name: String, replicationPassword: String = replicationPassword, extraYAML: String = "",
                   postgresqlYAML: String = "", bootstrapYAML: String = "", dcsYAML: String = "") -> TestMember {
        let m = TestMember(name: name, scope: scope, dcs: dcs, root: root, replicationPassword: replicationPassword,
                           extraYAML: extraYAML, postgresqlYAML: postgresqlYAML, bootstrapYAML: bootstrapYAML, dcsYAML: dcsYAML)
        members.append(m)
        return m
    }

    /// Adds and starts the first member and waits until it is a running primary.
    func startPrimary(_ name: String) async throws -> TestMember {
        let m = addMember(name)
        try m.start()
        #expect(await waitAllStreaming(timeout: 60), "\(logs())")
        return m
    }

    /// The members whose REST API says `/primary` 200.
    func primaries() async -> [TestMember] {
        var out: [TestMember] = []
        for m in members where await m.api("/primary").0 == 200 { out.append(m) }
        return out
    }

    /// What the last `waitAllStreaming` saw when it was not yet satisfied.
    var lastStreamingState = ""

    /// Waits until exactly one primary and every other started member is a streaming replica
    /// that the primary lists in pg_stat_replication under its member name.
    func waitAllStreaming(timeout: Double) async -> Bool {
        await TestSupport.waitUntil(timeout: timeout, interval: 0.5) {
            let ps = await primaries()
            guard ps.count == 1, let primary = ps.first else {
                lastStreamingState = "primaries: \(ps.map(\.name))"
                return false
            }
            let expected = Set(members.filter { $0 !== primary && $0.isAgentRunning }.map(\.name))
            let rows = primary.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") ?? ""
            let seen = Set(rows.split(separator: "\n").map(String.init))
            guard seen == expected else {
                lastStreamingState = "primary \(primary.name) streams to \(seen.sorted()), expected \(expected.sorted())"
                return false
            }
            // pg_basebackup's own WAL stream shows in pg_stat_replication too: ask each replica.
            for m in members where m !== primary && m.isAgentRunning {
                let receiver = m.sql("SELECT status FROM pg_stat_wal_receiver")
                let api = await m.api("/replica").0
                guard receiver == "streaming", api == 200 else {
                    lastStreamingState = "\(m.name): wal receiver \(receiver ?? "nil"), GET /replica \(api)"
                    return false
                }
            }
            return true
        }
    }

    /// The member logs plus what the last wait saw, for failure messages.
    func logs() -> String {
        "last seen: \(lastStreamingState)\n" + members.map { m in
            let server = (try? String(contentsOfFile: m.dataDir + ".log", encoding: .utf8)) ?? ""
            return "----- \(m.name) -----\n" + String(m.log.suffix(5000)) + "\n--- \(m.name) server log ---\n" + String(server.suffix(1500))
        }.joined(separator: "\n")
    }

    func destroy() {
        for m in members { m.stop(timeout: 30) }
        for m in members { m.stopPostgresIfRunning() }
        // STORK_TEST_KEEP=1 keeps the members' directories and logs for a look afterwards.
        if ProcessInfo.processInfo.environment["STORK_TEST_KEEP"] == nil { TestSupport.removeTree(root) }
    }
}
