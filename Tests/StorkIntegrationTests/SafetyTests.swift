import Foundation
import Synchronization
import Logging
import Testing
import StorkDCS
import StorkProcess
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Never two primaries, never a lost data directory: each test reproduces one way the HA core
/// could do either, on real PostgreSQL and etcd (ttl 20, loop_wait 1, retry_timeout 4).
@Suite("Safety: signals, a second agent, timing from the DCS, odd data_dir paths", .serialized)
struct SafetyTests {
    /// `postmaster.pid`'s PID and start time: the same server, not one started again.
    static func postmasterIdentity(_ m: TestMember) -> String? {
        let lines = (try? String(contentsOfFile: m.dataDir + "/postmaster.pid", encoding: .utf8))?.split(separator: "\n") ?? []
        return lines.count > 2 ? "\(lines[0]) \(lines[2])" : nil
    }

    /// Starts `stork agent CONFIG` as postgres beside `m`'s agent and waits for it to exit.
    static func secondAgent(_ m: TestMember, timeout: Double) async throws -> (status: Int32?, log: String) {
        let logPath = m.base + "/second-agent.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let p = Process()
        let user = try #require(TestSupport.postgresUser)
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--", storkBinary, "agent", m.configPath]
        p.standardOutput = FileHandle(forWritingAtPath: logPath)
        p.standardError = FileHandle(forWritingAtPath: logPath)
        try p.run()
        let exited = await TestSupport.waitUntil(timeout: timeout) { !p.isRunning }
        if !exited { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        return (exited ? p.terminationStatus : nil, (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
    }

    /// SIGHUP reloads the configuration file and never ends the agent (Patroni's systemd unit
    /// sends it on `systemctl reload`); a file that no longer loads keeps the running one. A
    /// second agent on the same configuration exits non-zero before it touches the server,
    /// the member key or the leader key.
    @Test(.timeLimit(.minutes(3)))
    func hangupReloadsAndASecondAgentTouchesNothing() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe1", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let agentPID = try #require(pg0.process?.processIdentifier)
        let server = try #require(Self.postmasterIdentity(pg0))
        let original = try String(contentsOfFile: pg0.configPath, encoding: .utf8)

        // A new tag, then SIGHUP: the agent stays, the server too, and the tag reaches the member key.
        // pg_ctl_timeout, read by the PostgreSQL side at start, keeps its value and the log says so.
        let edited = original.replacingOccurrences(of: "  pgpass: ", with: "  pg_ctl_timeout: 61\n  pgpass: ")
        try (edited + "tags:\n  reloaded_by: sighup\n").write(toFile: pg0.configPath, atomically: false, encoding: .utf8)
        kill(agentPID, SIGHUP)
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.contains("reloaded the configuration from \(pg0.configPath): tags changed") },
                "\(pg0.log)")
        #expect(pg0.log.contains("postgresql.pg_ctl_timeout changed, and keep their running values until the agent restarts"), "\(pg0.log)")
        #expect(await TestSupport.waitUntil(timeout: 10) {
            ((try? runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe1/members/pg0"])) ?? "").contains("reloaded_by")
        })
        // A file that no longer loads: told, and the running configuration stays.
        try "scope: [safe1\n".write(toFile: pg0.configPath, atomically: false, encoding: .utf8)
        kill(agentPID, SIGHUP)
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.contains("configuration not reloaded: \(pg0.configPath):") }, "\(pg0.log)")
        try original.write(toFile: pg0.configPath, atomically: false, encoding: .utf8)
        try await Task.sleep(for: .seconds(3))
        #expect(pg0.isAgentRunning, "the agent ended on SIGHUP:\n\(pg0.log)")
        #expect(await pg0.api("/primary").0 == 200)
        #expect(Self.postmasterIdentity(pg0) == server, "PostgreSQL was restarted")

        // A second agent for the same data directory.
        let second = try await Self.secondAgent(pg0, timeout: 30)
        #expect(second.status == 1, "second agent: \(second.log)")
        #expect(second.log.contains("another stork agent (PID \(agentPID)) runs for \(pg0.dataDir)"), "\(second.log)")
        #expect(!second.log.contains("REST API listening"), "it got as far as the REST API: \(second.log)")
        try await Task.sleep(for: .seconds(2))
        #expect(Self.postmasterIdentity(pg0) == server, "the second agent stopped or restarted PostgreSQL:\n\(pg0.log)")
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe1/leader"]) == "pg0")
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe1/members/pg0"]).contains("\"role\""))
        #expect(pg0.isAgentRunning && !pg0.log.contains("demot"), "\(pg0.log)")
    }

    /// `patronictl edit-config` with `ttl: 30, retry_timeout: 60` once let a primary cut off
    /// from the DCS keep writing for 60 s while its key lived 30: two primaries for 30 s. The
    /// values from the DCS are held to Patroni's rule (loop_wait + 2 * retry_timeout <= ttl)
    /// as the bootstrap ones are, with one warning, so the primary stops writing before its
    /// key can expire.
    @Test(.timeLimit(.minutes(3)))
    func timingFromTheDCSIsHeldToTheRule() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe2", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let key = "/service/safe2/config"
        let current = try runEtcdctl(etcd, ["get", "--print-value-only", key])
        let edited = current.replacingOccurrences(of: "\"retry_timeout\":4", with: "\"retry_timeout\":60")
            .replacingOccurrences(of: "\"ttl\":20", with: "\"ttl\":30")
        #expect(edited.contains("\"retry_timeout\":60") && edited.contains("\"ttl\":30"), "\(current)")
        _ = try runEtcdctl(etcd, ["put", key, edited])
        let warning = "the DCS config key: loop_wait + 2*retry_timeout must not exceed ttl (30); retry_timeout adjusted from 60 to 14"
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.contains(warning) }, "\(pg0.log)")
        // The leader key now lives 30 s: the primary must be read-only well before that.
        try await Task.sleep(for: .seconds(2))
        etcd.stop()
        let cut = Date()
        let readOnly = await TestSupport.waitUntil(timeout: 70, interval: 0.2) { pg0.sql("SELECT pg_is_in_recovery()") == "t" }
        let took = Date().timeIntervalSince(cut)
        #expect(readOnly, "\(pg0.log)")
        #expect(took < 30, "the primary took \(Int(took)) s to stop writing, the leader key lives 30 s")
        #expect(pg0.log.components(separatedBy: warning).count == 2, "the warning is said once per change")
    }

    /// A `data_dir` with a trailing slash put the staging directory, the work marker and
    /// `.stork-old` inside the data directory; one that is a symbolic link was renamed away by
    /// the swap and its target orphaned. Both clone now, and the link stays a link.
    @Test(.timeLimit(.minutes(3)))
    func trailingSlashAndSymbolicLinkDataDirectories() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe3", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        // The leader makes a member's slot once it sees its key; made first here, pg2's
        // pg_basebackup finds it and retries into an emptied target (which once replaced the link).
        #expect(pg0.sql("SELECT pg_create_physical_replication_slot('pg2')") != nil)
        let slash = cluster.addMember("pg1")
        let config = try String(contentsOfFile: slash.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: "data_dir: \(slash.dataDir)\n", with: "data_dir: \(slash.dataDir)/\n")
            .write(toFile: slash.configPath, atomically: false, encoding: .utf8)
        let linked = cluster.addMember("pg2")
        let target = linked.base + "/elsewhere"
        mkdir(target, 0o700)
        TestSupport.chownToPostgres(target)
        #expect(symlink(target, linked.dataDir) == 0)
        try slash.start()
        try linked.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        let inside = (try? FileManager.default.contentsOfDirectory(atPath: slash.dataDir)) ?? []
        #expect(inside.contains("PG_VERSION"), "\(inside)")
        #expect(!inside.contains { $0.hasPrefix(".stork") }, "Stork's own files inside the data directory: \(inside)")
        #expect(!FileManager.default.fileExists(atPath: slash.dataDir + ".stork-old"))
        var st = stat()
        #expect(lstat(linked.dataDir, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "the link was replaced")
        #expect(FileManager.default.fileExists(atPath: target + "/PG_VERSION"), "the link's target does not hold the copy")
        #expect(!FileManager.default.fileExists(atPath: linked.dataDir + ".stork-old"))
    }

    /// A former primary stopped cleanly, started again while the newer timeline's primary is
    /// down, once took the leader key at once and started as primary without rows that
    /// timeline had committed (they were on a `nofailover` member). Now it starts read-only,
    /// races, and never leads while it is behind the cluster's timeline; the member that has
    /// the rows leads again once it is back.
    @Test(.timeLimit(.minutes(4)))
    func formerPrimaryBehindTheTimelineNeverLeads() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe4", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        let pg2 = cluster.addMember("pg2", extraYAML: "tags:\n  nofailover: true\n")
        try pg1.start()
        try pg2.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        pg0.stop()
        #expect(await TestSupport.waitUntil(timeout: 40) { pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(cluster.logs())")
        #expect(pg1.sql("CREATE TABLE committed (i int); INSERT INTO committed VALUES (42)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 30) { pg2.sql("SELECT count(*) FROM committed") == "1" }, "\(pg2.log)")
        pg1.stop()

        try pg0.start()
        var writable: [String] = []
        let deadline = Date().addingTimeInterval(25)
        while Date() < deadline {
            if pg0.sql("SELECT NOT pg_is_in_recovery()") == "t" { writable.append("pg0 writable") }
            if let leader = try? runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe4/leader"]), leader == "pg0" {
                writable.append("pg0 holds the leader key")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(writable.isEmpty, "\(Set(writable)):\n\(pg0.log)")
        #expect(pg0.log.contains("my timeline 1 is behind the cluster's timeline 2"), "\(pg0.log)")

        // The member with the rows comes back and leads; they are all there.
        try pg1.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(cluster.logs())")
        #expect(pg1.sql("SELECT i FROM committed") == "42")
        #expect(pg0.sql("SELECT NOT pg_is_in_recovery()") != "t")
    }

    /// SQL over the member's Unix socket, where the test clusters trust local connections:
    /// it works whatever the superuser's password is now. nil when the server does not answer.
    static func socketSQL(_ m: TestMember, _ query: String) -> String? {
        let r = try? runAsPostgres(TestSupport.pgBinDir + "/psql",
                                   ["-h", m.base, "-p", String(m.pgPort), "-U", "postgres", "-d", "postgres", "-Atc", query],
                                   env: ["PGCONNECT_TIMEOUT": "2"])
        guard let r, r.status == 0 else { return nil }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A rotated superuser password once left the primary's agent unable to query it: it
    /// raced as if it were a replica, failed to promote, gave the key back, and the server
    /// went on accepting writes without a key. A primary the agent cannot check is kept only
    /// for retry_timeout, then stopped; never two writable servers, never one without the key.
    @Test(.timeLimit(.minutes(3)))
    func primaryTheAgentCannotQueryStopsAcceptingWrites() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe5", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        #expect(Self.socketSQL(pg0, "ALTER ROLE postgres PASSWORD 'rotated-Elsewhere-9'") != nil)
        let rotated = Date()
        var seen: Set<String> = []
        var stoppedAfter: Double?
        while Date().timeIntervalSince(rotated) < 30 {
            // The key read before the servers: a server writable now held the key then, unless
            // it writes without one (the key goes only after the server has stopped).
            let leader = (try? runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe5/leader"])) ?? "?"
            let writable = [pg0, pg1].filter { Self.socketSQL($0, "SELECT NOT pg_is_in_recovery()") == "t" }.map(\.name)
            if writable.count > 1 { seen.insert("two writable: \(writable)") }
            for name in writable where name != leader { seen.insert("\(name) writable while the leader key says \(leader.isEmpty ? "nobody" : leader)") }
            if !writable.contains("pg0"), stoppedAfter == nil { stoppedAfter = Date().timeIntervalSince(rotated) }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(seen.isEmpty, "\(seen.sorted())\n\(cluster.logs())")
        let after = try #require(stoppedAfter, "pg0 kept accepting writes:\n\(pg0.log)")
        #expect(after < 4 + 1 + 10, "pg0 accepted writes for \(after) s (retry_timeout 4)")
        #expect(pg0.log.contains("stopping PostgreSQL: it runs as a primary the agent cannot check"), "\(pg0.log)")
        #expect(pg0.isAgentRunning && pg1.isAgentRunning)
    }

    /// `POST /reinitialize` with an rsync source nothing answers on once emptied the data
    /// directory 0.2 s after the request ("Leaving data directory uncleaned", then the listing
    /// failed and the chain wiped the directory). The source is checked before anything
    /// touches the directory: it stays as it was and starts again; once the source is back, the
    /// re-sync runs and the replica streams.
    @Test(.timeLimit(.minutes(4)))
    func aFailedResyncKeepsTheDataDirectory() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe6", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        var daemon = try RsyncDaemon(modules: [("pg0", pg0.dataDir)])
        defer { daemon.stop() }
        let pg1 = cluster.addMember("pg1", postgresqlYAML: "create_replica_methods: [rsync]\nrsync:\n  source: \(daemon.source)")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg0.sql("CREATE TABLE kept AS SELECT g FROM generate_series(1, 1000) g") != nil)
        #expect(await waitCaughtUp(pg1, pg0))

        daemon.stop()
        let answer = try await reinitialize(pg1)
        #expect(answer.status == 200, "\(answer.text)")
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.log.contains("every replica method failed") }, "\(pg1.log)")
        try await Task.sleep(for: .seconds(3))
        let files = (try? FileManager.default.contentsOfDirectory(atPath: pg1.dataDir)) ?? []
        #expect(files.contains("PG_VERSION") && files.contains("base") && files.contains("global"), "the data directory was emptied: \(files)")
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-resync"), "marked though nothing touched it")
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.sql("SELECT count(*) FROM kept") == "1000" }, "\(pg1.log)")

        // The source is back: the next cycle syncs again, and the replica streams.
        daemon = try RsyncDaemon(modules: [("pg0", pg0.dataDir)])
        let pg1Config = try String(contentsOfFile: pg1.configPath, encoding: .utf8)
        let oldPort = pg1Config.components(separatedBy: "rsync://127.0.0.1:").dropFirst().first?.split(separator: "/").first.map(String.init) ?? ""
        try pg1Config.replacingOccurrences(of: "rsync://127.0.0.1:\(oldPort)/", with: "rsync://127.0.0.1:\(daemon.port)/")
            .write(toFile: pg1.configPath, atomically: false, encoding: .utf8)
        kill(try #require(pg1.process?.processIdentifier), SIGHUP)
        #expect(await TestSupport.waitUntil(timeout: 10) { pg1.log.contains("reloaded the configuration") }, "\(pg1.log)")
        #expect(try await reinitialize(pg1).status == 200)
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.log.contains("replica has been created using rsync") && pg1.log.contains("reinitialize: rebuilt") }, "\(pg1.log)")
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg1.sql("SELECT count(*) FROM kept") == "1000")
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-resync"))
    }

    /// A primary whose agent died while its server kept running, and that wrote after a
    /// replica had promoted, once came back stuck: demoted to a replica on its old timeline,
    /// it could never stream ("new timeline 2 forked off current database system timeline 1
    /// before current recovery point"). Demoted, it now rejoins as a former primary does:
    /// rewound (use_pg_rewind), then streaming from the new leader with its rows.
    @Test(.timeLimit(.minutes(4)))
    func aDemotedPrimaryThatDivergedIsRewound() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe7", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        // wal_keep_size: pg_rewind reads the old primary's WAL back to the fork.
        let pg0 = cluster.addMember("pg0", postgresqlYAML: "use_pg_rewind: true",
                                    dcsYAML: "postgresql:\n  parameters:\n    wal_keep_size: 256MB")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg0.sql("CREATE TABLE t (i int, origin text); INSERT INTO t VALUES (1, 'both')") != nil)
        #expect(await waitCaughtUp(pg1, pg0))

        pg0.crash()  // the agent only: its PostgreSQL goes on as a primary
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(pg1.log)")
        #expect(pg1.sql("INSERT INTO t VALUES (2, 'new leader'); CHECKPOINT") != nil)
        // The old primary writes on its own timeline: the histories fork.
        #expect(pg0.sql("INSERT INTO t VALUES (3, 'lost'); SELECT pg_switch_wal()") != nil)

        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.lastStreamingState)\n\(pg0.log)")
        #expect(pg0.log.contains("rewinding it with pg_rewind"), "\(pg0.log)")
        #expect(pg0.sql("SELECT string_agg(i::text, ',' ORDER BY i) FROM t") == "1,2")
    }

    /// A `failover` key the leader will never act on (it names another leader) once stayed
    /// for good, and its candidate skipped the lag and peer checks in every later race. The
    /// leader removes it and says why.
    @Test(.timeLimit(.minutes(3)))
    func theLeaderRemovesAStaleFailoverKey() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe8", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        _ = try runEtcdctl(etcd, ["put", "/service/safe8/failover", "{\"leader\": \"pg9\", \"member\": \"pg1\"}"])
        #expect(await TestSupport.waitUntil(timeout: 10) {
            ((try? runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe8/failover"])) ?? "x").isEmpty
        }, "the stale failover key stays:\n\(pg0.log)")
        #expect(pg0.log.contains("removed the failover key: it names pg9 as the leader, and pg0 leads"), "\(pg0.log)")
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe8/leader"]) == "pg0")
        #expect(await cluster.waitAllStreaming(timeout: 10))
    }

    /// An rsync source that lists no data directory (an empty module, a wrong path) once made
    /// the re-sync delete every local file. Such a listing is refused before anything is
    /// copied or deleted.
    @Test(.timeLimit(.minutes(3)))
    func anRsyncSourceThatIsNoDataDirectoryIsRefused() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe9", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let empty = TestSupport.makeTempDir("stork-empty-module")
        defer { TestSupport.removeTree(empty) }
        let daemon = try RsyncDaemon(modules: [("pg0", pg0.dataDir), ("empty", empty)])
        defer { daemon.stop() }
        let pg1 = cluster.addMember("pg1", postgresqlYAML: "create_replica_methods: [rsync]\nrsync:\n  source: \(daemon.source)")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        let before = PostgresFiles.count(pg1.dataDir)

        pg1.stop()
        let config = try String(contentsOfFile: pg1.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: daemon.source, with: "rsync://127.0.0.1:\(daemon.port)/empty")
            .write(toFile: pg1.configPath, atomically: false, encoding: .utf8)
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let answer = try await reinitialize(pg1)
        #expect(answer.status == 200, "\(answer.text)")
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.log.contains("has no PG_VERSION and global/pg_control: not a PostgreSQL data directory") }, "\(pg1.log)")
        try await Task.sleep(for: .seconds(2))
        let after = PostgresFiles.count(pg1.dataDir)
        #expect(after >= before - 5 && FileManager.default.fileExists(atPath: pg1.dataDir + "/global/pg_control"),
                "files before \(before), after \(after)")
    }

    /// A leader whose PostgreSQL will not start once renewed its lease forever, and the
    /// cluster had no primary. With `primary_start_timeout` (Patroni's, default 300 s) past and
    /// a replica to take over, it gives the key back and the replica promotes.
    @Test(.timeLimit(.minutes(3)))
    func aLeaderThatCannotStartGivesTheKeyBack() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe10", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", dcsYAML: "primary_start_timeout: 5")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        // postgresql.auto.conf wins over the agent's postgresql.conf, and is not replicated.
        #expect(pg0.sql("ALTER SYSTEM SET shared_preload_libraries = 'stork_no_such_library'") != nil)
        // The agent and its server die; the agent comes back while its key still lives.
        let pid = try #require(FailoverTests.postmasterPID(pg0))
        pg0.crash()
        kill(pid, SIGKILL)
        #expect(await TestSupport.waitUntil(timeout: 10) { kill(pid, 0) != 0 })
        try pg0.start()
        let killed = Date()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(cluster.logs())")
        let took = Date().timeIntervalSince(killed)
        #expect(took < 5 + 20, "a new primary after \(Int(took)) s")
        #expect(pg0.log.contains("giving the leader key back: PostgreSQL has not started as primary within primary_start_timeout (5 s)"), "\(pg0.log)")
        #expect(pg0.isAgentRunning)
    }

    /// `pg_controldata` failing while PostgreSQL runs once made the agent hands-off: the data
    /// directory "unusable", no key refresh, no demotion, while the primary kept accepting
    /// writes; a replica promoted once the key expired. The running server is used instead.
    @Test(.timeLimit(.minutes(3)))
    func pgControldataFailingWhilePostgresRunsKeepsTheLeader() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe11", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        // A bin_dir of links to PostgreSQL's programs, so one of them can be broken.
        let bin = cluster.root + "/bin"
        mkdir(bin, 0o755)
        for program in try FileManager.default.contentsOfDirectory(atPath: TestSupport.pgBinDir) {
            #expect(symlink(TestSupport.pgBinDir + "/" + program, bin + "/" + program) == 0)
        }
        let pg0 = cluster.addMember("pg0", postgresqlYAML: "bin_dir: \(bin)")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        pg0.crash()
        unlink(bin + "/pg_controldata")
        try "#!/bin/sh\necho 'pg_controldata: broken for the test' >&2\nexit 1\n".write(toFile: bin + "/pg_controldata", atomically: true, encoding: .utf8)
        chmod(bin + "/pg_controldata", 0o755)
        try pg0.start()
        // Past the key's ttl (20 s): pg0 still leads, and pg1 never became writable.
        let deadline = Date().addingTimeInterval(30)
        var seen: Set<String> = []
        while Date() < deadline {
            if pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" { seen.insert("pg1 writable") }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(seen.isEmpty, "\(seen)\n\(cluster.logs())")
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/safe11/leader"]) == "pg0", "\(pg0.log)")
        #expect(pg0.log.components(separatedBy: "pg_controldata fails while PostgreSQL runs").count == 2, "said once, not every cycle: \(pg0.log)")
    }
}

extension SafetyTests {
    /// One hung query (a lock the agent's state query waits for) once stalled the leader's
    /// cycle past the ttl while it kept its key, and a replica promoted beside a writable
    /// primary. The agent's queries time out after 2 s (Patroni's statement_timeout): the
    /// cycle goes on, and the primary it cannot read is stopped before another promotes.
    @Test(.timeLimit(.minutes(3)))
    func aHungQueryDoesNotStallTheLeadersCycle() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "safe14", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        // An exclusive lock on a view the agent's state query reads, held for 40 s.
        let locker = Task.detached {
            try? runAsPostgres(TestSupport.pgBinDir + "/psql",
                               ["-h", "127.0.0.1", "-p", String(pg0.pgPort), "-U", "postgres", "-d", "postgres", "-c",
                                "BEGIN; LOCK TABLE pg_catalog.pg_stat_wal_receiver IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(40); COMMIT"],
                               env: ["PGPASSWORD": superuserPassword])
        }
        defer { locker.cancel() }
        let cycles = { pg0.log.components(separatedBy: "Lock owner: ").count }
        let before = cycles()
        let s = await FencingTests.sample(first: pg0, second: pg1, timeout: 35, extra: 3)
        #expect(s.bothWritable == 0, "two writable primaries in \(s.bothWritable) of \(s.count) samples\n\(cluster.logs())")
        #expect(cycles() - before >= 3, "pg0's cycle stalled: \(cycles() - before) cycles in \(s.count / 10) s\n\(pg0.log)")
        #expect(pg0.log.contains("statement timeout"), "\(pg0.log)")
    }

    /// A primary whose etcd is a 100 ms round trip away, first under 1,100 idle connections to
    /// its REST API for a ttl (they exhausted the descriptors a systemd default of 1024 gives,
    /// which etcd and libpq share), then under 200 clients sending authorized `POST /switchover`
    /// naming a candidate that does not exist, back to back for twice the ttl: it holds few
    /// descriptors, keeps its leader key with time to spare, runs its cycles, and nobody fails
    /// over. Every request in flight used to put a DCS call ahead of the leader key refresh on
    /// the agent's one etcd queue; only one of them reaches the DCS at a time now.
    @Test(.timeLimit(.minutes(4)))
    func aFloodOfSwitchoversKeepsTheLeaderKey() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let proxy = try DelayProxy(to: Int(etcd.clientURL.split(separator: ":").last!)!, delay: .milliseconds(50))
        defer { proxy.stop() }
        let cluster = TestCluster(scope: "safe15", dcs: .etcd(["http://127.0.0.1:\(proxy.port)"]))
        defer { cluster.destroy() }
        let credentials = ["PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "api-Secret-3"]
        for name in ["pg0", "pg1"] {
            let m = cluster.addMember(name)
            m.environment = credentials
            try m.start()
            #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        }
        let pg0 = cluster.members[0], pg1 = cluster.members[1]
        let direct = EtcdDCS(options: EtcdClientOptions(endpoints: [etcd.clientURL]), keyPrefix: "/service/safe15/", memberName: "pg0",
                             logger: Logger(label: "test"))
        #expect(try await direct.clusterView().leader == "pg0")
        let ttl = 20.0
        let agentPID = try #require(pg0.process?.processIdentifier)
        func agentDescriptors() -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agentPID)/fd")) ?? []).count }

        // 1,100 idle connections for a ttl (the test process may need more descriptors than a
        // default 1024).
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 { limit.rlim_cur = min(4096, limit.rlim_max); setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        let idle = (0..<1100).map { _ in LoopbackTCP.connect(pg0.apiPort, blocking: false) }
        var idleOpen = true
        defer { if idleOpen { for fd in idle where fd >= 0 { close(fd) } } }
        var mostDescriptors = 0, leastWhileIdle = ttl
        let idleStart = Date(), idleCycles = { pg0.log.components(separatedBy: "Lock owner: ").count }, idleCyclesBefore = idleCycles()
        while Date().timeIntervalSince(idleStart) < ttl {
            mostDescriptors = max(mostDescriptors, agentDescriptors())
            leastWhileIdle = min(leastWhileIdle, (try? await direct.leaderExpiresIn()) ?? 0)
            try await Task.sleep(for: .milliseconds(500))
        }
        for fd in idle where fd >= 0 { close(fd) }
        idleOpen = false
        print("1,100 idle connections for \(Int(ttl)) s: the agent held at most \(mostDescriptors) descriptors, the key had at least \(leastWhileIdle) s left, \(idleCycles() - idleCyclesBefore) cycles")
        #expect(idle.filter { $0 >= 0 }.count == 1100)
        #expect(mostDescriptors < 400, "the agent held \(mostDescriptors) descriptors under 1,100 idle connections")
        #expect(leastWhileIdle > ttl / 2 && idleCycles() - idleCyclesBefore >= 5, "key \(leastWhileIdle) s, \(idleCycles() - idleCyclesBefore) cycles\n\(pg0.log)")

        // 200 clients sending switchovers for twice the ttl.
        let authorization = "Authorization: Basic " + Data("admin:api-Secret-3".utf8).base64EncodedString()
        let body = #"{"leader": "pg0", "candidate": "nobody"}"#
        let stop = Shared(false), answers = Shared<[Int: Int]>([:]), running = Shared(200)
        defer { stop.value.withLock { $0 = true } }
        for _ in 0..<200 {
            Thread.detachNewThread {
                while !stop.value.withLock({ $0 }) {
                    let code = LoopbackTCP.request(pg0.apiPort, "POST", "/switchover", body: body, headers: [authorization]) ?? 0
                    answers.value.withLock { $0[code, default: 0] += 1 }
                }
                running.value.withLock { $0 -= 1 }
            }
        }
        let cycles = { pg0.log.components(separatedBy: "Lock owner: ").count }
        let cyclesBefore = cycles()
        var least = ttl, samples = 0, lost: [String] = []
        let start = Date()
        while Date().timeIntervalSince(start) < 2 * ttl {
            let view = try? await direct.clusterView()
            if view?.leader != "pg0" { lost.append("\(Int(Date().timeIntervalSince(start))) s: leader \(view?.leader ?? "none")") }
            least = min(least, (try? await direct.leaderExpiresIn()) ?? 0)
            samples += 1
            try await Task.sleep(for: .milliseconds(500))
        }
        stop.value.withLock { $0 = true }
        _ = await TestSupport.waitUntil(timeout: 30) { running.value.withLock { $0 } == 0 }
        let counts = answers.value.withLock { $0 }
        print("flood of \(counts.values.reduce(0, +)) switchovers \(counts): the leader key had at least \(least) s left in \(samples) samples, "
              + "\(cycles() - cyclesBefore) cycles of pg0 in \(Int(2 * ttl)) s")
        #expect(lost.isEmpty, "the leader key was lost: \(lost)\n\(cluster.logs())")
        #expect(least > ttl / 2, "the leader key was left with \(least) s of its \(ttl)\n\(pg0.log)")
        #expect(cycles() - cyclesBefore >= 10, "pg0 ran \(cycles() - cyclesBefore) cycles in \(Int(2 * ttl)) s (loop_wait 1)")
        // Past the 100 connections served and the listen backlog, the kernel drops connections
        // (the bound at work): a few clients of 200 get no answer (0) on a loaded machine.
        let total = counts.values.reduce(0, +)
        #expect(counts[412, default: 0] > 0 && counts.keys.allSatisfy { [412, 503, 0].contains($0) }, "\(counts)")
        #expect(counts[0, default: 0] * 100 <= total, "\(counts[0, default: 0]) of \(total) requests had no answer")
        let primary = await pg0.api("/primary").0, replica = await pg1.api("/replica").0
        #expect(primary == 200 && replica == 200, "\(cluster.logs())")
        #expect(!pg0.log.contains("demot"), "\(pg0.log)")
    }
}

/// Counting a data directory's files, for tests that must see nothing deleted.
enum PostgresFiles {
    static func count(_ directory: String) -> Int {
        (FileManager.default.enumerator(atPath: directory)?.allObjects.count) ?? 0
    }
}
