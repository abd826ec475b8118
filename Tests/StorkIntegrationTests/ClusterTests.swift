import Foundation
import Logging
import Testing
import StorkConfig
import StorkDCS
import StorkProcess
import StorkTestSupport

/// Reads the cluster as the agents wrote it, through the same backend code.
func readView(scope: String, dcs: TestDCS) async throws -> ClusterView {
    let settings: DCSSettings
    switch dcs {
    case .etcd(let urls): settings = .etcd3(Etcd3Settings(endpoints: urls))
    case .local(let path): settings = .local(path: path)
    }
    let pg = PostgresSettings(listen: "127.0.0.1:1", connectAddress: "127.0.0.1:1", dataDir: "/nonexistent", pgpass: "/nonexistent",
                              superuser: PostgresUser(username: "postgres", password: nil),
                              replication: PostgresUser(username: "replicator", password: nil))
    let config = Config(scope: scope, name: "reader", dcs: settings, postgresql: pg)
    return try await makeDCS(config: config, logger: Logger(label: "test")).clusterView()
}

func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

/// Three agents on empty directories: one bootstraps, two clone, all stream; then a replica's
/// agent is restarted and rejoins without cloning again.
func threeMembersBootstrapAndRejoin(dcs: TestDCS) async throws {
    let cluster = TestCluster(dcs: dcs)
    defer { cluster.destroy() }
    for i in 0..<3 { cluster.addMember("pg\(i)") }
    // An operator's `stork list` as root before any agent runs must not lock the agents out of
    // the embedded store's files.
    let early = try runStork(["list", cluster.members[0].configPath])
    #expect(early.status == 0, "\(early.err)")
    // An inherited PGPASSWORD must not replace the configured passwords.
    for m in cluster.members { try m.start(environment: m.name == "pg1" ? ["PGPASSWORD": "wrong-from-environment"] : [:]) }

    let streaming = await cluster.waitAllStreaming(timeout: 120)
    #expect(streaming, "cluster did not reach one primary and two streaming replicas\n\(cluster.logs())")
    guard streaming else { return }

    _ = await TestSupport.waitUntil(timeout: 10) {
        cluster.members.map { count("replica has been created using basebackup", in: $0.log) }.reduce(0, +) == 2
    }
    let logs = cluster.members.map(\.log)
    #expect(logs.map { count("initialized a new cluster", in: $0) }.reduce(0, +) == 1, "exactly one initdb\n\(cluster.logs())")
    #expect(logs.map { count("replica has been created using basebackup", in: $0) }.reduce(0, +) == 2, "\(cluster.logs())")

    let primaries = await cluster.primaries()
    #expect(primaries.count == 1)
    let primary = try #require(primaries.first)
    let sysid = primary.sql("SELECT system_identifier FROM pg_control_system()")
    // The major the run is for (STORK_TEST_PG_BINDIR), not whatever pg_config names.
    let version = primary.sql("SELECT current_setting('server_version_num')::int / 10000")
    #expect(version == String(TestSupport.pgMajor), "PostgreSQL \(version ?? "?") runs; this run is for \(TestSupport.pgMajor) (\(TestSupport.pgBinDir))")
    // Member keys are rewritten every cycle (loop_wait 1): wait until all say running.
    var view = try await readView(scope: cluster.scope, dcs: dcs)
    _ = try await TestSupport.waitUntil(timeout: 10) {
        view = try await readView(scope: cluster.scope, dcs: dcs)
        return view.members.count == 3 && view.members.allSatisfy { $0.state == "running" && $0.timeline != nil }
    }
    #expect(view.initialize != nil && view.initialize == sysid)
    #expect(view.leader == primary.name)
    #expect(Set(view.members.map(\.name)) == ["pg0", "pg1", "pg2"])
    for m in view.members {
        #expect(m.connURL == "postgres://127.0.0.1:\(cluster.members.first { $0.name == m.name }!.pgPort)/postgres")
        #expect(m.apiURL?.hasSuffix("/patroni") == true)
        #expect(m.state == "running")
        #expect(m.role == (m.name == primary.name ? "primary" : "replica"))
        #expect(m.timeline == 1)
    }
    #expect(view.config?["loop_wait"]?.intValue == 1)

    // Each replica streams through its own physical slot on the primary (Patroni's use_slots).
    let replicaNames = cluster.members.filter { $0 !== primary }.map(\.name).sorted()
    #expect(primary.sql("SELECT string_agg(slot_name || ':' || active, ',' ORDER BY slot_name) FROM pg_replication_slots")
            == replicaNames.map { "\($0):true" }.joined(separator: ","))

    // GET /patroni answers Patroni's fields.
    let (code, doc) = await primary.api("/patroni")
    #expect(code == 200)
    #expect(doc["role"] as? String == "primary")
    #expect(doc["database_system_identifier"] as? String == sysid)
    #expect((doc["patroni"] as? [String: Any])?["scope"] as? String == "batman")

    // A replica's agent stopped and started again rejoins without a new clone.
    let replica = try #require(cluster.members.first { $0 !== primary })
    replica.stop()
    #expect(!FileManager.default.fileExists(atPath: replica.dataDir + "/postmaster.pid"), "the agent stops PostgreSQL on SIGTERM")
    try replica.start()
    let back = await cluster.waitAllStreaming(timeout: 60)
    #expect(back, "replica did not rejoin\n\(cluster.logs())")
    #expect(count("replica has been created using basebackup", in: replica.log) == 1, "no second clone\n\(replica.log)")

    // The replica's agent crashes (its PostgreSQL keeps running) and comes back: it finds the
    // server already following the leader and leaves it running.
    let pidBefore = try String(contentsOfFile: replica.dataDir + "/postmaster.pid", encoding: .utf8).split(separator: "\n").first
    replica.crash()
    let logBefore = replica.log.count
    try replica.start()
    let settled = await TestSupport.waitUntil(timeout: 20) {
        String(replica.log.dropFirst(logBefore)).contains("a secondary, and following a leader (\(primary.name))")
    }
    #expect(settled, "\(replica.log)")
    let pidAfter = try String(contentsOfFile: replica.dataDir + "/postmaster.pid", encoding: .utf8).split(separator: "\n").first
    #expect(pidBefore == pidAfter, "the running replica must not be restarted\n\(replica.log)")
    #expect(await cluster.waitAllStreaming(timeout: 30), "\(cluster.logs())")

    // stork list shows the three members with the right roles.
    // Member keys follow the servers within one loop_wait.
    var list = try runStork(["list", primary.configPath])
    _ = try await TestSupport.waitUntil(timeout: 10) {
        list = try runStork(["list", primary.configPath])
        return count("streaming", in: list.out) == 2
    }
    #expect(list.status == 0, "\(list.err)")
    #expect(list.out.contains("| \(primary.name) ") && list.out.contains("Leader"))
    #expect(count("Replica", in: list.out) == 2 && count("streaming", in: list.out) == 2, "\(list.out)")
}

@Suite("A cluster on etcd", .serialized)
struct EtcdClusterTests {
    @Test(.timeLimit(.minutes(5)))
    func threeMembersOnEtcd() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        try await threeMembersBootstrapAndRejoin(dcs: .etcd([etcd.clientURL]))
    }

    /// Five agents started together on empty directories, ten rounds: exactly one initdb each round.
    @Test(.timeLimit(.minutes(10)))
    func initializeRace() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let rounds = Int(ProcessInfo.processInfo.environment["STORK_RACE_ROUNDS"] ?? "") ?? 10
        for round in 1...rounds {
            let cluster = TestCluster(scope: "race\(round)", dcs: .etcd([etcd.clientURL]))
            defer { cluster.destroy() }
            for i in 0..<5 { cluster.addMember("pg\(i)") }
            for m in cluster.members { try m.start() }
            let ok = await cluster.waitAllStreaming(timeout: 120)
            let initdbs = cluster.members.filter { $0.log.contains("initialized a new cluster") }.count
            let clones = cluster.members.filter { $0.log.contains("replica has been created using basebackup") }.count
            #expect(ok, "round \(round): not all streaming\n\(cluster.logs())")
            #expect(initdbs == 1, "round \(round): \(initdbs) members ran initdb\n\(cluster.logs())")
            #expect(clones == 4, "round \(round): \(clones) clones\n\(cluster.logs())")
            if !ok || initdbs != 1 { return }
        }
    }

    /// A data directory of another cluster: the agent says so, exits non-zero, touches nothing.
    @Test(.timeLimit(.minutes(3)))
    func systemIdentifierMismatch() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let first = try await cluster.startPrimary("pg0")

        let stranger = cluster.addMember("pg1")
        let initdb = try runAsPostgres(TestSupport.pgBinDir + "/initdb", ["-D", stranger.dataDir, "-A", "trust", "-U", "postgres"])
        try #require(initdb.status == 0, "\(initdb.output)")
        let before = try snapshotTree(stranger.dataDir)
        let otherSysid = try runAsPostgres(TestSupport.pgBinDir + "/pg_controldata", [stranger.dataDir]).output
            .split(separator: "\n").first { $0.hasPrefix("Database system identifier") }?.split(separator: ":").last?
            .trimmingCharacters(in: .whitespaces)
        let sysid = first.sql("SELECT system_identifier FROM pg_control_system()")

        try stranger.start()
        let status = await stranger.waitForExit(timeout: 30)
        #expect(status != nil && status != 0, "the agent must exit non-zero\n\(stranger.log)")
        #expect(stranger.log.contains("system ID mismatch, node pg1 belongs to a different cluster: \(otherSysid ?? "?") != \(sysid ?? "?")"),
                "\(stranger.log)")
        #expect(try snapshotTree(stranger.dataDir) == before, "the foreign data directory must be untouched")
        #expect(await first.api("/primary").0 == 200)
    }

    /// A clone that cannot succeed (wrong replication password): two attempts with the directory
    /// wiped between them, a clear error, tried again on a later cycle, the leader untouched.
    @Test(.timeLimit(.minutes(3)))
    func cloneThatCannotSucceed() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let leader = try await cluster.startPrimary("pg0")
        let leaderSysid = leader.sql("SELECT system_identifier FROM pg_control_system()")

        let bad = cluster.addMember("pg1", replicationPassword: "wrong-password")
        try bad.start()
        let retried = await TestSupport.waitUntil(timeout: 60) {
            count("Error creating replica using method basebackup", in: bad.log) >= 2
        }
        #expect(retried, "a failed clone is tried again on a later cycle\n\(bad.log)")
        #expect(bad.log.contains("attempt 1 of 2") && bad.log.contains("attempt 2 of 2"))
        #expect(bad.log.contains("password authentication failed"), "the error says why\n\(bad.log)")
        #expect(!bad.log.contains("wrong-password"), "no password in the logs")
        #expect(!FileManager.default.fileExists(atPath: bad.dataDir + "/PG_VERSION"), "the half-built directory is wiped")
        #expect(await bad.api("/health").0 == 503)
        #expect(await leader.api("/primary").0 == 200)
        #expect(leader.sql("SELECT system_identifier FROM pg_control_system()") == leaderSysid)
        #expect(leader.sql("SELECT count(*) FROM pg_stat_replication") == "0")
    }

    /// etcd as a three-member cluster; one etcd member stopped while the Stork cluster runs:
    /// the agents move to another endpoint and nothing changes role.
    @Test(.timeLimit(.minutes(4)))
    func etcdMemberLoss() async throws {
        let etcds = try await EtcdServer.startCluster(count: 3)
        defer { etcds.forEach { $0.destroy() } }
        let cluster = TestCluster(dcs: .etcd(etcds.map(\.clientURL)))
        defer { cluster.destroy() }
        for i in 0..<3 { cluster.addMember("pg\(i)") }
        for m in cluster.members { try m.start() }
        #expect(await cluster.waitAllStreaming(timeout: 120), "\(cluster.logs())")
        let primaryBefore = await cluster.primaries().map(\.name)

        etcds[0].stop()  // the first endpoint every agent lists
        // Longer than ttl: a primary that could not reach etcd would lose its key by now.
        try await Task.sleep(nanoseconds: 15_000_000_000)
        #expect(await cluster.primaries().map(\.name) == primaryBefore)
        #expect(await cluster.waitAllStreaming(timeout: 20), "\(cluster.logs())")
        for m in cluster.members { #expect(!m.log.contains("demoting"), "\(m.name) changed role\n\(m.log)") }
        let view = try await readView(scope: cluster.scope, dcs: .etcd([etcds[1].clientURL]))
        #expect(view.leader == primaryBefore.first)
    }
}

/// SIGTERM while the agent bootstraps: whatever moment it lands, no PostgreSQL is left running
/// and the initialize key is either the finished cluster's or gone.
@Suite("Shutdown during bootstrap", .serialized)
struct ShutdownDuringBootstrapTests {
    @Test(.timeLimit(.minutes(3)), arguments: ["trying to bootstrap a new cluster", "starting PostgreSQL", "accepts connections"])
    func sigtermDuringBootstrap(after logLine: String) async throws {
        let dir = TestSupport.makeTempDir("stork-dcs")
        defer { TestSupport.removeTree(dir) }
        let cluster = TestCluster(dcs: .local(dir))
        defer { cluster.destroy() }
        let m = cluster.addMember("pg0")
        try m.start()
        if logLine == "accepts connections" {
            // Between the server's start and the end of bootstrap (roles, DCS keys).
            #expect(await TestSupport.waitUntil(timeout: 30, interval: 0.01) { m.sql("SELECT 1") == "1" }, "\(m.log)")
        } else {
            #expect(await TestSupport.waitUntil(timeout: 30, interval: 0.01) { m.log.contains(logLine) }, "\(m.log)")
        }
        m.stop()
        #expect(!m.isAgentRunning)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: m.base).filter { $0.hasPrefix("data") }
        for d in leftovers where FileManager.default.fileExists(atPath: m.base + "/" + d + "/postmaster.pid") {
            Issue.record("PostgreSQL still running in \(d) after the agent stopped\n\(m.log)")
        }
        let view = try await readView(scope: cluster.scope, dcs: .local(dir))
        if let sysid = view.initialize {
            let control = try runAsPostgres(TestSupport.pgBinDir + "/pg_controldata", [m.dataDir]).output
            #expect(control.contains(sysid), "initialize \(sysid) must be the data directory's\n\(m.log)")
        }
        #expect(view.leader == nil, "the leader key is released on shutdown")
    }
}

/// SIGKILL while the agent bootstraps, then the agent again: its unfinished bootstrap is moved
/// aside (never started), the empty `initialize` it held is given back, and it bootstraps anew.
@Suite("Crash during bootstrap", .serialized)
struct CrashDuringBootstrapTests {
    /// A member whose agent was killed (SIGKILL) just as its bootstrap started PostgreSQL.
    static func crashedWhileBootstrapStartsServer(_ cluster: TestCluster) async throws -> TestMember {
        let m = cluster.addMember("pg0")
        try m.start()
        #expect(await TestSupport.waitUntil(timeout: 30, interval: 0.005) { m.log.contains("starting PostgreSQL") }, "\(m.log)")
        m.crash()
        return m
    }

    @Test(.timeLimit(.minutes(3)))
    func crashThenRestart() async throws {
        let dir = TestSupport.makeTempDir("stork-dcs")
        defer { TestSupport.removeTree(dir) }
        let cluster = TestCluster(dcs: .local(dir))
        defer { cluster.destroy() }
        let m = try await Self.crashedWhileBootstrapStartsServer(cluster)
        let stale = try await readView(scope: cluster.scope, dcs: .local(dir))
        try m.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let sysid = m.sql("SELECT system_identifier FROM pg_control_system()")
        let view = try await readView(scope: cluster.scope, dcs: .local(dir))
        #expect(view.initialize == sysid && view.leader == "pg0")
        let movedAside = try FileManager.default.contentsOfDirectory(atPath: m.base).filter { $0.hasPrefix("data_") }
        if stale.initialize == "" {
            // killed before the cluster existed: the unfinished bootstrap was moved aside
            #expect(movedAside.count == 1, "\(m.log)")
            #expect(m.log.contains("removed the data directory left by an unfinished bootstrap"), "\(m.log)")
            #expect(count("initialized a new cluster", in: m.log) == 1)
        } else {
            #expect(movedAside.isEmpty, "a bootstrapped cluster is kept\n\(m.log)")
        }
        #expect(!FileManager.default.fileExists(atPath: m.dataDir + ".stork-incomplete"))
    }

    /// A program still running PostgreSQL on the unfinished bootstrap's directory without a
    /// postmaster.pid (here a stand-in whose arguments name it with -D, as a forked pg_ctl's and a
    /// postmaster's do; in CI, the postmaster of a pg_ctl the agent stopped an instant after it
    /// forked): the
    /// directory is neither moved nor removed until it has ended; then the agent goes on.
    @Test(.timeLimit(.minutes(3)))
    func aServerStillStartingKeepsTheDirectoryInPlace() async throws {
        let dir = TestSupport.makeTempDir("stork-dcs")
        defer { TestSupport.removeTree(dir) }
        let cluster = TestCluster(dcs: .local(dir))
        defer { cluster.destroy() }
        let m = try await Self.crashedWhileBootstrapStartsServer(cluster)
        // Gone when the test ends; in a session of its own, as a forked postmaster would be.
        let user = try #require(TestSupport.postgresUser)
        let starting = try Companion.start(["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups",
                                            "/bin/sh", "-c", "sleep 12; true", "postgres", "-D", m.dataDir], environment: [])
        let startingPID = starting.pid
        defer { kill(-startingPID, SIGKILL); starting.close(kill: true) }
        let since = Date()
        try m.start()
        // For the stand-in's life (12 s, less what has passed): nothing moved aside, and the
        // agent says why (after 5 s of waiting for it to end).
        let movedAside = { (try? FileManager.default.contentsOfDirectory(atPath: m.base))?.filter { $0.hasPrefix("data_") } ?? [] }
        while Date().timeIntervalSince(since) < 10 {
            if !movedAside().isEmpty { Issue.record("moved aside while a server ran on it: \(movedAside())\n\(m.log)"); break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(await TestSupport.waitUntil(timeout: 2) { m.log.contains("PostgreSQL still runs on \(m.dataDir) (PID ") }, "\(m.log)")
        // Once it has ended, the unfinished bootstrap is moved aside and the agent bootstraps anew.
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(m.log.contains("removed the data directory left by an unfinished bootstrap"), "\(m.log)")
    }
}

@Suite("A cluster on the embedded single-host store", .serialized)
struct LocalClusterTests {
    @Test(.timeLimit(.minutes(5)))
    func threeMembersOnLocalStore() async throws {
        let dir = TestSupport.makeTempDir("stork-dcs")
        defer { TestSupport.removeTree(dir) }
        try await threeMembersBootstrapAndRejoin(dcs: .local(dir))
    }
}

/// The relative paths and sizes of every file under `path` (a directory left untouched keeps both).
func snapshotTree(_ path: String) throws -> [String: Int] {
    var out: [String: Int] = [:]
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: path) else { return out }
    for case let rel as String in e {
        let attrs = try fm.attributesOfItem(atPath: path + "/" + rel)
        out[rel] = (attrs[.size] as? Int) ?? -1
    }
    return out
}
