import Foundation
import StorkProcess
import Testing
import StorkConfig
import StorkDCS
import StorkPostgres
import StorkTestSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// TLS and passwords on every link, configured through `PATRONI_*` variables beside a YAML
/// file that holds only what variables cannot say (`bootstrap`, `postgresql.parameters`):
/// PostgreSQL accepts TCP connections only over TLS with a client certificate
/// (`hostssl ... clientcert=verify-ca`, no `host` line); the REST API is HTTPS with
/// `verify_client: required`, an encrypted key and basic authentication; etcd serves HTTPS
/// and requires client certificates.
final class TLSCluster: @unchecked Sendable {
    let cluster: TestCluster
    let etcd: EtcdServer
    let certs: TestCertificates
    /// The client certificate of the `ctl` section (and of the tests' API calls).
    let apiClient: (cert: String, key: String)
    let server: (cert: String, key: String)
    let superuser: (cert: String, key: String)
    let replicator: (cert: String, key: String)

    /// `withoutReplicationCertificate`: members whose replication user gets sslmode and
    /// sslrootcert but no client certificate.
    init(withoutReplicationCertificate: Set<String> = []) throws {
        certs = try TestCertificates()
        etcd = try EtcdServer(tls: certs)
        let etcdTLS = etcd.tlsFiles!
        server = try certs.issue("server", cn: "127.0.0.1")
        let plainAPIServer = try certs.issue("api-server", cn: "127.0.0.1")
        let apiServer = (cert: plainAPIServer.cert, key: try certs.encrypted(plainAPIServer.key, label: "api-server", passphrase: apiKeyPassphrase))
        apiClient = try certs.issue("api-client", cn: "stork-ctl")
        superuser = try certs.issue("postgres", cn: "postgres")
        let plainReplicator = try certs.issue("replicator", cn: "replicator")
        // The replicator's key is encrypted: its passphrase (sslpassword) is a secret too.
        replicator = (plainReplicator.cert, try certs.encrypted(plainReplicator.key, label: "replicator", passphrase: keyPassphrase))
        cluster = TestCluster(scope: "tls", dcs: .etcd([etcd.clientURL]))
        // post_bootstrap connects with nothing but the connection string it is given.
        let post = cluster.root + "/post_bootstrap.sh"
        try """
            #!/bin/sh
            \(TestSupport.pgBinDir)/psql "$1" -XAtc "SELECT ssl || ':' || coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()" > \(cluster.root)/post_bootstrap.out 2>&1
            """.write(toFile: post, atomically: true, encoding: .utf8)
        chmod(post, 0o755)
        // pg2 runs a custom replica method first (it records its arguments, waits a moment to be
        // seen, and fails), then basebackup: secrets must stay out of its command line too.
        let probe = cluster.root + "/probe.sh"
        try "#!/bin/sh\necho \"$@\" > \(cluster.root)/probe.out\nsleep 1\nexit 1\n".write(toFile: probe, atomically: true, encoding: .utf8)
        chmod(probe, 0o755)
        for i in 0..<3 {
            let name = "pg\(i)"
            let methods = i == 2 ? "  create_replica_methods: [probe, basebackup]\n  probe:\n    command: \(probe)\n" : ""
            let yaml = """
                bootstrap:
                  dcs:
                    ttl: 20
                    loop_wait: 1
                    retry_timeout: 4
                  initdb:
                  - encoding: UTF8
                  post_bootstrap: \(post)
                  pg_hba:
                  - local all all trust
                  - hostssl replication replicator 127.0.0.1/32 scram-sha-256 clientcert=verify-ca
                  - hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca
                postgresql:
                  bin_dir: \(TestSupport.pgBinDir)
                \(methods)  parameters:
                    unix_socket_directories: \(cluster.root)/\(name)
                    shared_buffers: 16MB
                    max_connections: 30
                    ssl: on
                    ssl_cert_file: \(server.cert)
                    ssl_key_file: \(server.key)
                    ssl_ca_file: \(certs.caCert)
                    log_connections: on

                """
            let m = TestMember(name: name, scope: "tls", dcs: cluster.dcs, root: cluster.root, yaml: yaml)
            let pgPort = m.pgPort, apiPort = m.apiPort
            var env = [
                "PATRONI_NAME": name,
                "PATRONI_SCOPE": "tls",
                "PATRONI_RESTAPI_LISTEN": "127.0.0.1:\(apiPort)",
                "PATRONI_RESTAPI_CONNECT_ADDRESS": "127.0.0.1:\(apiPort)",
                "PATRONI_RESTAPI_CERTFILE": apiServer.cert,
                "PATRONI_RESTAPI_KEYFILE": apiServer.key,
                "PATRONI_RESTAPI_KEYFILE_PASSWORD": apiKeyPassphrase,
                "PATRONI_RESTAPI_CAFILE": certs.caCert,
                "PATRONI_RESTAPI_VERIFY_CLIENT": "required",
                "PATRONI_RESTAPI_USERNAME": "stork-admin",
                "PATRONI_RESTAPI_PASSWORD": apiPassword,
                "PATRONI_CTL_CERTFILE": apiClient.cert,
                "PATRONI_CTL_KEYFILE": apiClient.key,
                "PATRONI_ETCD3_HOSTS": etcd.clientURL.replacingOccurrences(of: "https://", with: ""),
                "PATRONI_ETCD3_PROTOCOL": "https",
                "PATRONI_ETCD3_CACERT": etcdTLS.caCert,
                "PATRONI_ETCD3_CERT": etcdTLS.clientCert,
                "PATRONI_ETCD3_KEY": etcdTLS.clientKey,
                "PATRONI_POSTGRESQL_LISTEN": "127.0.0.1:\(pgPort)",
                "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "127.0.0.1:\(pgPort)",
                "PATRONI_POSTGRESQL_DATA_DIR": m.dataDir,
                "PATRONI_POSTGRESQL_PGPASS": m.base + "/pgpass",
                "PATRONI_SUPERUSER_USERNAME": "postgres",
                "PATRONI_SUPERUSER_PASSWORD": superuserPassword,
                "PATRONI_SUPERUSER_SSLMODE": "verify-ca",
                "PATRONI_SUPERUSER_SSLROOTCERT": certs.caCert,
                "PATRONI_SUPERUSER_SSLCERT": superuser.cert,
                "PATRONI_SUPERUSER_SSLKEY": superuser.key,
                "PATRONI_REPLICATION_USERNAME": "replicator",
                "PATRONI_REPLICATION_PASSWORD": replicationPassword,
                "PATRONI_REPLICATION_SSLMODE": "verify-ca",
                "PATRONI_REPLICATION_SSLROOTCERT": certs.caCert,
            ]
            if !withoutReplicationCertificate.contains(name) {
                env["PATRONI_REPLICATION_SSLCERT"] = replicator.cert
                env["PATRONI_REPLICATION_SSLKEY"] = replicator.key
                env["PATRONI_REPLICATION_SSLPASSWORD"] = keyPassphrase
            }
            m.environment = env
            m.clientTLS = (superuser.cert, superuser.key, certs.caCert)
            m.apiScheme = "https"
            m.apiClient = MemberAPIClient(cacert: certs.caCert, certfile: apiClient.cert, keyfile: apiClient.key, timeout: 3)
            cluster.members.append(m)
        }
    }

    var members: [TestMember] { cluster.members }

    /// Waits for etcd; call before starting members.
    func ready() async throws { try await etcd.waitReady() }

    func destroy() {
        cluster.destroy()
        etcd.destroy()
        certs.destroy()
    }
}

/// The passphrase of the replicator's encrypted client key.
let keyPassphrase = "key-Passphrase-3"
/// The REST API's basic-authentication password and the passphrase of its encrypted key.
let apiPassword = "api-Secret-4"
let apiKeyPassphrase = "api-key-Passphrase-5"
/// Every secret the TLS cluster's agents are given.
let tlsClusterSecrets = [superuserPassword, replicationPassword, keyPassphrase, apiPassword, apiKeyPassphrase]

/// The command lines of every process the postgres OS user runs now.
func postgresCommandLines() -> [String] {
    let uid = TestSupport.postgresUser?.uid ?? geteuid()
    var out: [String] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(entry) != nil {
        var st = stat()
        guard stat("/proc/\(entry)", &st) == 0, st.st_uid == uid,
              let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty else { continue }
        out.append(String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self))
    }
    return out
}

/// The command line and environment of every process the postgres OS user runs now, but
/// the agents' own (their environment is where the PATRONI_* variables come from) and the
/// test's.
func postgresChildEnvironments() -> [(commandLine: String, environment: [String])] {
    let uid = TestSupport.postgresUser?.uid ?? geteuid()
    var out: [(String, [String])] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(entry) != nil {
        var st = stat()
        guard stat("/proc/\(entry)", &st) == 0, st.st_uid == uid,
              let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty,
              let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
        let argv = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if argv.first == storkBinary && argv.dropFirst().first == "agent" { continue }
        // The test's own psql (its PGPASSWORD is the test's): a child of this process.
        let stat = (try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8)) ?? ""
        let ppid = stat.split(separator: ")").last?.split(separator: " ").dropFirst().first.flatMap { pid_t($0) }
        if ppid == getpid() { continue }
        out.append((argv.joined(separator: " "), environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }))
    }
    return out
}

/// Reads `postgresCommandLines()` and `postgresChildEnvironments()` every 10 ms on a thread of
/// its own until `stop()`.
final class CommandLineWatch: Sendable {
    private let state = Mutex<(running: Bool, lines: Set<String>, environments: [String: Set<String>], rounds: Int)>((true, [], [:], 0))

    init() {
        Thread { [self] in
            while state.withLock({ $0.running }) {
                let lines = postgresCommandLines()
                let environments = postgresChildEnvironments()
                state.withLock {
                    $0.lines.formUnion(lines)
                    for (line, environment) in environments { $0.environments[line, default: []].formUnion(environment) }
                    $0.rounds += 1
                }
                usleep(10_000)
            }
        }.start()
    }

    /// Stops the thread; every distinct command line seen and how many times /proc was read.
    func stop() -> (lines: Set<String>, rounds: Int) {
        state.withLock { $0.running = false; return ($0.lines, $0.rounds) }
    }

    /// Every child's command line with the variables seen in its environment (after `stop()`).
    var environments: [String: Set<String>] { state.withLock { $0.environments } }
}

/// Regular files under `root` (not following links) whose text holds `needle`, with their modes.
func files(under root: String, containing needle: String, maxSize: Int = 1 << 20) -> [(path: String, mode: mode_t)] {
    var out: [(String, mode_t)] = []
    guard let e = FileManager.default.enumerator(atPath: root) else { return out }
    let bytes = Array(needle.utf8)
    for case let rel as String in e {
        let path = root + "/" + rel
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) <= maxSize,
              let data = FileManager.default.contents(atPath: path) else { continue }
        if data.range(of: Data(bytes)) != nil { out.append((path, st.st_mode & 0o777)) }
    }
    return out
}

@Suite("PostgreSQL with TLS and client certificates", .serialized)
struct PostgresTLSTests {
    /// Three members, only `hostssl` with client certificates: one bootstraps, two clone and
    /// stream; no password in any postgres process's argv while they clone, nor in the logs.
    @Test(.timeLimit(.minutes(5)))
    func clusterWithClientCertificates() async throws {
        let tls = try TLSCluster()
        defer { tls.destroy() }
        try await tls.ready()
        let cluster = tls.cluster
        let (first, second, third) = (tls.members[0], tls.members[1], tls.members[2])
        // Watch the command lines from the bootstrap (post_bootstrap) to the end of the clones.
        let watch = CommandLineWatch()
        defer { _ = watch.stop() }
        try first.start()
        let led = await TestSupport.waitUntil(timeout: 60) { await first.api("/primary").0 == 200 }
        #expect(led, "pg0 did not bootstrap\n\(cluster.logs())")
        guard led else { return }
        // The server really refuses a connection without a client certificate.
        let noCert = try runAsPostgres(TestSupport.pgBinDir + "/psql",
                                       ["-h", "127.0.0.1", "-p", String(first.pgPort), "-U", "postgres", "-d", "postgres", "-Atc", "SELECT 1"],
                                       env: ["PGPASSWORD": superuserPassword, "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "3"])
        #expect(noCert.status != 0 && noCert.output.contains("certificate"), "\(noCert.output)")
        #expect(first.sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t")

        // Some data, so that the clones take a moment to watch.
        #expect(first.sql("CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 300000) g; SELECT 1")?.hasSuffix("1") == true)

        try second.start()
        try third.start()
        let streaming = await cluster.waitAllStreaming(timeout: 120)
        let (seen, rounds) = watch.stop()
        #expect(streaming, "cluster did not reach one primary and two streaming replicas\n\(cluster.logs())")
        guard streaming else { return }
        // Tests run in parallel: other clusters' pg_basebackup runs show too; ours are under our root.
        let basebackups = seen.filter { $0.contains("pg_basebackup --pgdata=\(cluster.root)/") }
        #expect(basebackups.count >= 2, "the watch saw \(basebackups.count) pg_basebackup commands in \(rounds) rounds")
        for line in seen where tlsClusterSecrets.contains(where: { line.contains($0) }) {
            Issue.record("a secret in a command line: \(line)")
        }
        // Nor in any child's environment: pg_basebackup, the custom method, post_bootstrap,
        // pg_ctl and the servers get no PATRONI_* variable and no password.
        // (Other suites' processes show too: ours name our root.)
        let environments = watch.environments.filter { $0.key.contains(cluster.root + "/") }
        #expect(environments.keys.contains { $0.contains("probe.sh") } && environments.keys.contains { $0.contains("pg_basebackup") },
                "the watch read no environment of the custom method or pg_basebackup: \(environments.keys.sorted())")
        for (line, variables) in environments {
            for variable in variables where variable.hasPrefix("PATRONI_") || tlsClusterSecrets.contains(where: { variable.contains($0) }) {
                Issue.record("\(variable.prefix { $0 != "=" }) in the environment of \(line)")
            }
        }
        // Nor in the REST API's answers.
        for m in tls.members {
            let (_, body) = await m.api("/patroni")
            let text = String(describing: body)
            #expect(!tlsClusterSecrets.contains { text.contains($0) }, "\(m.name): a secret in GET /patroni")
        }
        // The custom method ran while watched, with a connection string that names the service
        // file holding the key's passphrase, never the passphrase itself.
        let probes = seen.filter { $0.contains("probe.sh") && $0.contains("--connstring=") }
        #expect(!probes.isEmpty, "the watch did not see the custom method")
        let probeArgs = (try? String(contentsOfFile: cluster.root + "/probe.out", encoding: .utf8)) ?? ""
        #expect(probeArgs.contains("service=stork") && probeArgs.contains("sslcert=") && !probeArgs.contains(keyPassphrase), "\(probeArgs)")
        for line in basebackups {
            #expect(line.contains("sslmode=verify-ca") && line.contains("sslcert=") && line.contains("sslkey=")
                    && line.contains("sslrootcert=") && line.contains("service=stork"), "\(line)")
        }

        // Replication itself runs over TLS, as the replicator, with its client certificate.
        let rows = first.sql("""
            SELECT r.application_name || ':' || s.ssl || ':' || coalesce(s.client_dn, '')
            FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1
            """)
        #expect(rows == "pg1:true:/CN=replicator\npg2:true:/CN=replicator", "\(rows ?? "nil")")
        // The agent's own connections and replication ran over TLS (log_connections).
        let serverLog = (try? String(contentsOfFile: first.dataDir + ".log", encoding: .utf8)) ?? ""
        for needle in ["connection authorized: user=postgres database=postgres application_name=stork SSL enabled",
                       "replication connection authorized: user=replicator application_name=pg1 SSL enabled",
                       "replication connection authorized: user=replicator application_name=pg2 SSL enabled"] {
            #expect(serverLog.contains(needle), "pg0's server log has no \"\(needle)\"")
        }
        #expect(!serverLog.contains("SSL off") && !serverLog.contains("no encryption"), "a connection without TLS")
        // post_bootstrap reached the new primary with the superuser's certificate.
        let post = (try? String(contentsOfFile: cluster.root + "/post_bootstrap.out", encoding: .utf8)) ?? ""
        #expect(post.trimmingCharacters(in: .whitespacesAndNewlines) == "true:/CN=postgres", "post_bootstrap: \(post)")
        for m in [second, third] {
            let conf = (try? String(contentsOfFile: m.dataDir + "/postgresql.conf", encoding: .utf8)) ?? ""
            let conninfo = conf.split(separator: "\n").first { $0.hasPrefix("primary_conninfo") }.map(String.init) ?? ""
            for needle in ["sslmode=verify-ca", "sslcert=", "sslkey=", "sslrootcert=", "passfile=", "service=stork-replication"] {
                #expect(conninfo.contains(needle), "\(m.name): primary_conninfo has no \(needle): \(conninfo)")
            }
            #expect(!conninfo.contains(replicationPassword))
        }

        // Secrets: no password in any log; pgpass files 0600; no private key copied elsewhere.
        for m in tls.members {
            let server = (try? String(contentsOfFile: m.dataDir + ".log", encoding: .utf8)) ?? ""
            for (what, text) in [("agent log", m.log), ("server log", server)] {
                #expect(!tlsClusterSecrets.contains { text.contains($0) }, "\(m.name): a secret in the \(what)")
            }
            var st = stat()
            #expect(stat(m.base + "/pgpass", &st) == 0 && st.st_mode & 0o777 == 0o600, "\(m.name): pgpass mode \(String(st.st_mode & 0o777, radix: 8))")
        }
        // The servers do not inherit the agents' PATRONI_* variables (passwords among them).
        for m in tls.members {
            let pidText = (try? String(contentsOfFile: m.dataDir + "/postmaster.pid", encoding: .utf8)) ?? ""
            let pid = pidText.split(separator: "\n").first.map(String.init) ?? ""
            let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ").map { String(decoding: $0, as: UTF8.self) } ?? ""
            #expect(!environ.isEmpty, "\(m.name): cannot read the postmaster's environment (pid \(pid))")
            // Variables named PATRONI_*: scripts/test's own STORK_PATRONI_VENV is not one.
            let names = environ.split(separator: "\0").map { $0.prefix { $0 != "=" } }
            #expect(!names.contains { $0.hasPrefix("PATRONI_") } && !tlsClusterSecrets.contains { environ.contains($0) },
                    "\(m.name): the postmaster inherited PATRONI_* variables")
        }
        // The key passphrase went to pg_basebackup through a temporary service file, gone now.
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [])
            .filter { $0.hasPrefix("stork-pgservice") }
            .filter { ((try? String(contentsOfFile: "/tmp/" + $0, encoding: .utf8)) ?? "").contains(keyPassphrase) }
        #expect(leftovers.isEmpty, "service files left behind: \(leftovers)")
        let keyCopies = files(under: cluster.root, containing: "PRIVATE KEY")
        #expect(keyCopies.isEmpty, "private keys under the cluster's directories: \(keyCopies.map(\.path))")
        // Every file the agents and their servers wrote (configuration, logs, WAL, data files):
        // a secret is only ever in a pgpass file or the replication service file, mode 0600.
        for secret in tlsClusterSecrets {
            for file in files(under: cluster.root, containing: secret, maxSize: 64 << 20)
            where !((file.path.hasSuffix("/pgpass") || file.path.hasSuffix("/pgpass.service")) && file.mode == 0o600) {
                Issue.record("\(file.path) (mode \(String(file.mode, radix: 8))) holds a secret")
            }
        }
    }

    /// A replica whose replication user has no client certificate: its clone fails with the
    /// server's reason, is tried again, and the leader and the other replica go on.
    @Test(.timeLimit(.minutes(4)))
    func replicaWithoutClientCertificate() async throws {
        let tls = try TLSCluster(withoutReplicationCertificate: ["pg2"])
        defer { tls.destroy() }
        try await tls.ready()
        let cluster = tls.cluster
        let (first, second, third) = (tls.members[0], tls.members[1], tls.members[2])
        try first.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { await first.api("/primary").0 == 200 }, "\(cluster.logs())")
        let sysid = first.sql("SELECT system_identifier FROM pg_control_system()")
        #expect(sysid != nil)
        try second.start()
        try third.start()
        // Two attempts per cycle, then a new cycle: at least three failures.
        let retried = await TestSupport.waitUntil(timeout: 60) {
            count("Error creating replica using method basebackup (attempt", in: third.log) >= 3
        }
        #expect(retried, "pg2 did not retry its clone\n\(third.log)")
        // The error entry (its first line and the output tail under it) gives the server's reason.
        let entry = third.log.components(separatedBy: "Error creating replica using method basebackup").dropFirst().first
            .map { $0.components(separatedBy: "\n20").first ?? $0 } ?? ""
        #expect(entry.contains("certificate"), "the error does not say why: \(entry)")
        #expect(third.log.contains("every replica method failed"), "\(third.log)")
        #expect(third.log.contains("Error when fetching backup: pg_basebackup exited with code=1"), "Patroni's line is missing")
        #expect(!third.log.contains(replicationPassword) && !third.log.contains(superuserPassword))

        // pg2 is not a replica; pg0 leads the same cluster and pg1 streams from it.
        third.stop()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(await first.api("/primary").0 == 200)
        #expect(first.sql("SELECT system_identifier FROM pg_control_system()") == sysid)
        #expect(first.sql("SELECT string_agg(application_name, ',') FROM pg_stat_replication") == "pg1")
        #expect(!FileManager.default.fileExists(atPath: third.dataDir + "/PG_VERSION"), "pg2's failed clone was not wiped")
        #expect(count("initialized a new cluster", in: first.log) == 1)
        #expect(!second.log.contains("initialized a new cluster") && !third.log.contains("initialized a new cluster"))
    }

    /// `POST /reinitialize` on the HTTPS API: refused without credentials and with wrong ones
    /// (401), at the handshake with a client certificate from another CA or none; refused by
    /// the leader (503); accepted with the right ones through `stork reinit`, configured by the
    /// member's own `PATRONI_*` variables (the `ctl` section). The replica is rebuilt, its old
    /// data directory removed, and it streams again.
    @Test(.timeLimit(.minutes(5)))
    func reinitializeOverHTTPS() async throws {
        let tls = try TLSCluster()
        defer { tls.destroy() }
        try await tls.ready()
        let cluster = tls.cluster
        let (first, second) = (tls.members[0], tls.members[1])
        try first.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { await first.api("/primary").0 == 200 }, "\(cluster.logs())")
        try second.start()
        let streaming = await cluster.waitAllStreaming(timeout: 90)
        #expect(streaming, "\(cluster.logs())")
        guard streaming else { return }
        let sysid = second.sql("SELECT system_identifier FROM pg_control_system()")

        func client(_ pair: (cert: String, key: String)?, _ user: String?, _ password: String?) -> MemberAPIClient {
            MemberAPIClient(cacert: tls.certs.caCert, certfile: pair?.cert, keyfile: pair?.key, username: user, password: password, timeout: 5)
        }
        let url = "https://127.0.0.1:\(second.apiPort)/reinitialize"
        let none = try await client(tls.apiClient, nil, nil).request("POST", url: url, json: .object([:]))
        #expect(none.status == 401 && none.text == "no auth header received", "\(none)")
        let wrong = try await client(tls.apiClient, "stork-admin", "guess").request("POST", url: url, json: .object([:]))
        #expect(wrong.status == 401 && wrong.text == "not authenticated", "\(wrong)")
        let otherCA = try TestCertificates(name: "Other CA")
        defer { otherCA.destroy() }
        let stranger = try otherCA.issue("stranger", cn: "stork-ctl")
        for pair in [stranger, nil] {
            do {
                let r = try await client(pair, "stork-admin", apiPassword).request("POST", url: url, json: .object([:]))
                Issue.record("a client with \(pair == nil ? "no certificate" : "another CA's certificate") got HTTP \(r.status)")
            } catch {
                #expect("\(error)".contains("TLS"), "not refused at the handshake: \(error)")
            }
        }
        let leader = try await client(tls.apiClient, "stork-admin", apiPassword)
            .request("POST", url: "https://127.0.0.1:\(first.apiPort)/reinitialize")
        #expect(leader.status == 503 && leader.text == "I am the leader, can not reinitialize", "\(leader)")
        #expect(!second.log.contains("reinitialize requested"), "a refused request started a rebuild")

        // A file that only the old data directory holds.
        let marker = second.dataDir + "/stork-test-old-directory"
        #expect(FileManager.default.createFile(atPath: marker, contents: Data("old".utf8)))
        TestSupport.chownToPostgres(marker)
        let wrongCluster = try runStork(["reinit", second.configPath, "batman", "pg1"], env: second.environment)
        #expect(wrongCluster.status == 1 && wrongCluster.err.contains("cluster batman is not this configuration's scope (tls)"), "\(wrongCluster.err)")
        let r = try runStork(["reinit", second.configPath, "tls", "pg1", "--wait"], env: second.environment)
        #expect(r.status == 0, "stork reinit: \(r.out)\(r.err)\n\(second.log)")
        #expect(r.out.contains("Success: reinitialize for member pg1"), "\(r.out)")
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(!FileManager.default.fileExists(atPath: marker), "the data directory was not rebuilt")
        #expect(second.log.contains("reinitialize: the old data directory stays until the new copy is complete"), "\(second.log)")
        #expect(second.log.contains("reinitialize: rebuilt from leader 'pg0'"), "\(second.log)")
        let asides = ((try? FileManager.default.contentsOfDirectory(atPath: second.base)) ?? []).filter { $0.hasPrefix("data") && $0 != "data" && $0 != "data.log" }
        #expect(asides.isEmpty, "directories left beside the data directory: \(asides)")
        #expect(second.sql("SELECT system_identifier FROM pg_control_system()") == sysid)
        for secret in tlsClusterSecrets {
            #expect(!r.out.contains(secret) && !r.err.contains(secret) && !second.log.contains(secret))
        }
    }
}
