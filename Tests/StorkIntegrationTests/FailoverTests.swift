import Foundation
import StorkConfig
import Testing
import StorkDCS
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Failover, demotion and rejoin on real PostgreSQL and etcd (ttl 20, loop_wait 1, retry_timeout 4).
@Suite("Failover: the leader race, demotion, rejoin by rewind and by the replica methods", .serialized)
struct FailoverTests {
    /// The postmaster's PID from `postmaster.pid`.
    static func postmasterPID(_ m: TestMember) -> Int32? {
        (try? String(contentsOfFile: m.dataDir + "/postmaster.pid", encoding: .utf8))?.split(separator: "\n").first.flatMap { Int32($0) }
    }

    /// The agent and the postmaster of `m` killed with SIGKILL, as a machine that dies.
    static func killMachine(_ m: TestMember) async {
        let pid = postmasterPID(m)
        m.crash()
        if let pid { kill(pid, SIGKILL) }
        // The backends notice their postmaster is gone and exit.
        _ = await TestSupport.waitUntil(timeout: 10) { m.sql("SELECT 1") == nil }
    }

    static func primary(of members: [TestMember]) -> TestMember? {
        members.first { $0.sql("SELECT NOT pg_is_in_recovery()") == "t" }
    }

    /// The primary (agent and postmaster) killed: the replica with the most WAL, not the one
    /// whose replay is paused, is primary within ttl + loop_wait and the other follows it;
    /// `history` records the promotion. The old primary started again rejoins by pg_rewind
    /// (use_pg_rewind). Then the new primary is killed too: the third member takes over, and
    /// the second, without use_pg_rewind, rejoins through the replica methods.
    @Test(.timeLimit(.minutes(5)))
    func killedPrimaryFailsOverAndRejoins() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fo", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", postgresqlYAML: "use_pg_rewind: true")
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        let pg1 = cluster.addMember("pg1")
        let pg2 = cluster.addMember("pg2")
        try pg1.start()
        try pg2.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.lastStreamingState)\n\(cluster.logs())")
        #expect(pg0.sql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg2.sql("SELECT count(*) FROM t") == "1" })
        // pg2 stops replaying: it receives the next rows but has not applied them.
        #expect(pg2.sql("SELECT pg_wal_replay_pause()") != nil)
        #expect(pg0.sql("INSERT INTO t VALUES (2)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg1.sql("SELECT count(*) FROM t") == "2" })

        let killed = Date()
        await Self.killMachine(pg0)
        let promoted = await TestSupport.waitUntil(timeout: 40) { Self.primary(of: [pg1, pg2]) != nil }
        let took = Date().timeIntervalSince(killed)
        #expect(promoted, "\(cluster.logs())")
        #expect(took <= 21 + 5, "a new primary after \(took) s (ttl 20 + loop_wait 1)")
        #expect(Self.primary(of: [pg1, pg2]) === pg1, "the replica with paused replay won: \(pg2.log)")
        #expect(pg1.log.contains("promoted self to leader by acquiring session lock"), "\(pg1.log)")
        // pg2's own cycle at the same expiry either lost the race and says why, or found pg1
        // already holding the key (it may log after pg1 has promoted).
        let lost = await TestSupport.waitUntil(timeout: 15) {
            pg2.log.contains("following nobody: pg1 is ahead") || pg2.log.contains("failed to acquire the leader lock")
                || pg2.log.contains("Lock owner: pg1; I am pg2")
        }
        #expect(lost, "\(pg2.log)")
        #expect(pg1.sql("INSERT INTO t VALUES (3)") != nil)
        // pg2 follows pg1 without a restart, and has everything once its replay resumes.
        #expect(pg2.sql("SELECT pg_wal_replay_resume()") != nil)
        #expect(await TestSupport.waitUntil(timeout: 40) { pg2.sql("SELECT count(*) FROM t") == "3" }, "\(pg2.log)")
        #expect(pg2.log.contains("following pg1 without a restart"), "\(pg2.log)")
        let history = try runEtcdctl(etcd, ["get", "--print-value-only", "/service/fo/history"])
        #expect(history.contains("\"pg1\"") && history.hasPrefix("[[1,"), "\(history)")

        // The old primary comes back: crash recovery, then pg_rewind, then it streams from pg1.
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) {
            pg0.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" && pg0.sql("SELECT count(*) FROM t") == "3"
        }, "\(pg0.log)")
        #expect(pg0.log.contains("running crash recovery in single-user mode"), "\(pg0.log)")
        #expect(pg0.log.contains("rewinding it with pg_rewind") || pg0.log.contains("has not diverged"), "\(pg0.log)")

        // pg1 dies too: pg0 or pg2 takes over; pg1 (no use_pg_rewind) is rebuilt by the methods.
        await Self.killMachine(pg1)
        #expect(await TestSupport.waitUntil(timeout: 40) { Self.primary(of: [pg0, pg2]) != nil }, "\(cluster.logs())")
        let next = try #require(Self.primary(of: [pg0, pg2]))
        #expect(next.sql("INSERT INTO t VALUES (4)") != nil)
        try pg1.start()
        #expect(await TestSupport.waitUntil(timeout: 90) {
            pg1.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" && pg1.sql("SELECT count(*) FROM t") == "4"
        }, "\(pg1.log)")
        #expect(pg1.log.contains("rebuilding it through create_replica_methods") || pg1.log.contains("has not diverged"), "\(pg1.log)")
    }

    /// A replica that replayed WAL the new leader never received once followed it forever
    /// without streaming ("new timeline 2 forked off current database system timeline 1")
    /// while `GET /replica` said 200. It now sees the fork from the leader's timeline history,
    /// answers 503, and rejoins as a former primary does (rebuilt, without use_pg_rewind).
    @Test(.timeLimit(.minutes(4)))
    func aReplicaForkedByTheFailoverRejoins() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fork", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1", extraYAML: "tags:\n  nofailover: true\n")
        let pg2 = cluster.addMember("pg2")
        try pg1.start()
        try pg2.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg0.sql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg2.sql("SELECT count(*) FROM t") == "1" })
        // pg0's WAL sender to pg2 stopped (on the sending side, so that no byte waits in a
        // socket): pg1 replays rows pg2 never receives, then pg0 dies.
        let sender = try #require(pg0.sql("SELECT pid FROM pg_stat_replication WHERE application_name = 'pg2'").flatMap { Int32($0) })
        kill(sender, SIGSTOP)
        #expect(pg0.sql("INSERT INTO t SELECT generate_series(2, 100)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg1.sql("SELECT count(*) FROM t") == "100" })
        await Self.killMachine(pg0)
        kill(sender, SIGKILL)
        #expect(await TestSupport.waitUntil(timeout: 45) { Self.primary(of: [pg2]) != nil }, "\(cluster.logs())")
        #expect(pg2.sql("SELECT count(*) FROM t") == "1")

        // pg1 can never stream from pg2: it says so, is not offered for reads, and is rebuilt.
        var replicaAnswers: [Int] = []
        let rejoined = await TestSupport.waitUntil(timeout: 90, interval: 0.3) {
            if pg1.log.contains("this replica cannot follow pg2") { replicaAnswers.append(await pg1.api("/replica").0) }
            return pg1.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming"
        }
        #expect(rejoined, "\(pg1.log)")
        #expect(pg1.log.contains("this replica cannot follow pg2: it replayed timeline 1 up to"), "\(pg1.log)")
        #expect(pg1.log.contains("rebuilding it through create_replica_methods"), "\(pg1.log)")
        #expect(replicaAnswers.first == 503, "GET /replica once the fork was seen: \(replicaAnswers)")
        #expect(pg1.sql("SELECT count(*) FROM t") == "1", "pg1 keeps rows the cluster's timeline 2 never had")
        #expect(pg2.sql("INSERT INTO t VALUES (200)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg1.sql("SELECT max(i) FROM t") == "200" }, "\(pg1.log)")
    }

    /// A diverged former primary whose data directory is a symbolic link (a mount point too)
    /// can only be rebuilt in its place, which once removed it at once: the only copy of the
    /// rows it took after the failover. Without `remove_data_directory_on_diverged_timelines`
    /// it is kept as it is and the log says what would rebuild it; `POST /reinitialize` does.
    /// Both when pg_rewind finds the WAL to compare (`wal_keep_size`) and when it does not.
    @Test(.timeLimit(.minutes(4)), arguments: [true, false])
    func aDivergedFormerPrimaryOnAMountPointIsKept(walKept: Bool) async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "keep", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", dcsYAML: walKept ? "postgresql:\n  parameters:\n    wal_keep_size: 256MB" : "")
        let target = pg0.base + "/volume"
        mkdir(target, 0o700)
        TestSupport.chownToPostgres(target)
        #expect(symlink(target, pg0.dataDir) == 0)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        // pg0's agent dies, its server goes on; pg1 takes over and pg0 takes a row pg1 never sees.
        pg0.crash()
        #expect(await TestSupport.waitUntil(timeout: 45) { pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(cluster.logs())")
        #expect(pg0.sql("CREATE TABLE only_here (i int); INSERT INTO only_here VALUES (7)") != nil)
        // pg_control's first field: the system identifier.
        func systemIdentifier() -> Data? { FileManager.default.contents(atPath: target + "/global/pg_control")?.prefix(8) }
        let identifier = systemIdentifier()
        #expect(identifier?.count == 8)
        try pg0.start()
        let kept = "reinitialize: keeping the data directory \(pg0.dataDir) as it is: the rebuild would remove it before the new copy is complete (it is a mount point or a symbolic link"
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains(kept) }, "\(pg0.log)")
        #expect(pg0.log.contains("remove_data_directory_on_diverged_timelines is off"), "\(pg0.log)")
        let verdict = walKept ? "history diverged from pg1's and use_pg_rewind is off" : "history diverged from pg1's and pg_rewind cannot rewind it"
        #expect(pg0.log.contains(verdict), "\(pg0.log)")
        try await Task.sleep(for: .seconds(3))
        #expect(FileManager.default.fileExists(atPath: target + "/PG_VERSION"), "the data directory was removed")
        #expect(systemIdentifier() == identifier, "another data directory is in place")
        #expect(FileManager.default.fileExists(atPath: target + "/base"))
        #expect(!pg0.log.contains("creating replica using method"), "\(pg0.log)")
        #expect(pg0.sql("SELECT 1") == nil, "the diverged server was started")

        // The operator asks: rebuilt in place, the link stays a link, and it follows pg1.
        #expect(try await reinitialize(pg0).status == 200)
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        var st = stat()
        #expect(lstat(pg0.dataDir, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "the link was replaced")
        #expect(pg0.sql("SELECT count(*) FROM pg_class WHERE relname = 'only_here'") == "0")
    }

    /// `POST /switchover` with Patroni's checks and answers: the candidate leads, the old
    /// leader follows it, the `failover` key is gone; wrong requests are refused with 412/400.
    @Test(.timeLimit(.minutes(2)))
    func switchoverHandsTheKeyOver() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "so", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.lastStreamingState)")
        #expect(await TestSupport.waitUntil(timeout: 10) { await pg1.api("/patroni").1["state"] as? String == "running" })
        func post(_ body: String) throws -> (Int, String) {
            let r = try runAsPostgres("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-d", body,
                                                       "http://127.0.0.1:\(pg0.apiPort)/switchover"])
            let lines = r.output.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }
        // The history key keeps the newest entry only (checked after the second switchover).
        #expect(await pg0.send("PATCH", "/config", #"{"max_timelines_history": 1}"#).0 == 200)
        #expect(try post("{\"leader\": \"pg0\", \"candidate\": \"pg0\"}") == (400, "Switchover target and source are the same"))
        #expect(try post("{\"leader\": \"pg1\", \"candidate\": \"pg0\"}") == (412, "leader name does not match"))
        #expect(try post("{\"candidate\": \"pg1\"}") == (400, "Switchover could be performed only from a specific leader"))
        #expect(try post("{\"leader\": \"pg0\", \"candidate\": \"nosuch\"}") == (412, "candidate does not exists"))
        // Schedules Patroni refuses, and a failover, which cannot be scheduled.
        #expect(try post(#"{"leader": "pg0", "candidate": "pg1", "scheduled_at": "tomorrow"}"#)
                == (422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"))
        #expect(try post(#"{"leader": "pg0", "candidate": "pg1", "scheduled_at": "2030-01-01T00:00:00"}"#)
                == (400, "Timezone information is mandatory for the scheduled switchover"))
        #expect(try post(#"{"leader": "pg0", "candidate": "pg1", "scheduled_at": "2020-01-01T00:00:00+00:00"}"#)
                == (422, "Cannot schedule switchover in the past"))
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/so/failover"]).isEmpty, "a refused request wrote the key")
        #expect(pg0.sql("CREATE TABLE t AS SELECT 1 AS i") != nil)
        let answer = try post("{\"leader\": \"pg0\", \"candidate\": \"pg1\"}")
        #expect(answer == (200, "Successfully switched over to \"pg1\""), "\(answer)\n\(cluster.logs())")
        #expect(await TestSupport.waitUntil(timeout: 30) {
            pg1.sql("SELECT NOT pg_is_in_recovery()") == "t" && pg0.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming"
        }, "\(cluster.logs())")
        #expect(pg0.log.contains("manual failover: demoting myself in favour of pg1"), "\(pg0.log)")
        #expect(pg1.sql("INSERT INTO t VALUES (2)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) { pg0.sql("SELECT count(*) FROM t") == "2" })
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/so/failover"]).isEmpty)

        // Scheduled with patronictl: 202 at once, shown by patronictl list and GET /cluster,
        // the leader awaits it, and at its time pg0 leads again.
        let ctl = try Patronictl(cluster: cluster, etcd: etcd)
        #expect(await TestSupport.waitUntil(timeout: 20) { await pg0.api("/patroni").1["state"] as? String == "running" })
        let at = Date().addingTimeInterval(8)
        let scheduled = try ctl.run(["switchover", cluster.scope, "--leader", "pg1", "--candidate", "pg0",
                                     "--scheduled", DateText.isoformat(at), "--force"])
        #expect(scheduled.status == 0 && scheduled.output.contains("Switchover scheduled"), "\(scheduled.output)")
        let listed = try ctl.run(["list", cluster.scope])
        #expect(listed.output.contains("Switchover scheduled at: "), "\(listed.output)")
        let clusterDoc = await pg1.api("/cluster").1
        #expect((clusterDoc["scheduled_switchover"] as? [String: Any]).map { $0["from"] as? String == "pg1" && $0["to"] as? String == "pg0" } == true,
                "\(clusterDoc)")
        #expect(await TestSupport.waitUntil(timeout: 5) { pg1.log.contains("Awaiting switchover at ") }, "\(pg1.log.suffix(2000))")
        #expect(pg1.sql("SELECT NOT pg_is_in_recovery()") == "t", "switched before its time")
        #expect(await TestSupport.waitUntil(timeout: 40) { pg0.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(cluster.logs())")
        #expect(Date() >= at.addingTimeInterval(-0.5), "switched before its time")
        #expect(pg1.log.contains("Manual scheduled switchover at "), "\(pg1.log.suffix(2000))")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")

        // One far ahead, flushed with patronictl; DELETE /switchover then finds none.
        let later = try ctl.run(["switchover", cluster.scope, "--leader", "pg0", "--candidate", "pg1",
                                 "--scheduled", DateText.isoformat(Date().addingTimeInterval(3600)), "--force"])
        #expect(later.output.contains("Switchover scheduled"), "\(later.output)")
        let flushed = try ctl.run(["flush", cluster.scope, "switchover", "--force"])
        #expect(flushed.output.contains("scheduled switchover deleted"), "\(flushed.output)")
        #expect(await pg0.send("DELETE", "/switchover", "") == (404, "no switchover is scheduled"))
        let history = try runEtcdctl(etcd, ["get", "--print-value-only", "/service/so/history"])
        #expect(history.hasPrefix("[[2,") && history.components(separatedBy: "],[").count == 1, "\(history)")
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/so/failover"]).isEmpty)
    }

    /// A postmaster killed under a live agent: the agent starts it again as primary, on the
    /// same timeline, still holding the key.
    @Test(.timeLimit(.minutes(2)))
    func killedPostmasterComesBackAsPrimary() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "pm", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let timeline = try #require(pg0.sql("SELECT timeline_id FROM pg_control_checkpoint()"))
        let pid = try #require(Self.postmasterPID(pg0))
        kill(pid, SIGKILL)
        #expect(await TestSupport.waitUntil(timeout: 30) {
            Self.postmasterPID(pg0) != pid && pg0.sql("SELECT NOT pg_is_in_recovery()") == "t"
        }, "\(pg0.log)")
        #expect(pg0.sql("SELECT timeline_id FROM pg_control_checkpoint()") == timeline)
        // The REST answer is the agent's last cycle, which may predate the restart by a loop_wait.
        #expect(await TestSupport.waitUntil(timeout: 10) { await pg0.api("/primary").0 == 200 }, "\(pg0.log)")
    }

    /// etcd stopped: the primary stops accepting writes within retry_timeout (plus a cycle);
    /// etcd back: the same member leads again and accepts writes.
    @Test(.timeLimit(.minutes(2)))
    func dcsLossDemotesThePrimary() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "dl", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        etcd.stop()
        let stopped = Date()
        #expect(await TestSupport.waitUntil(timeout: 20) { pg0.sql("SELECT pg_is_in_recovery()") == "t" }, "\(pg0.log)")
        let took = Date().timeIntervalSince(stopped)
        #expect(took <= 4 + 1 + 5, "writes accepted for \(took) s after etcd stopped (retry_timeout 4)")
        // Which message depends on where the cycle stood when etcd went: its read failed, or,
        // having read the cluster just before, its leader key refresh.
        #expect(pg0.log.contains("demoting self because DCS is not accessible and I was a leader")
                || pg0.log.contains("demoting self because failed to update leader lock"), "\(pg0.log)")
        try etcd.start(initialCluster: "\(etcd.name)=\(etcd.peerURL)")
        try await etcd.waitReady()
        #expect(await TestSupport.waitUntil(timeout: 40) { pg0.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(pg0.log)")
        #expect(pg0.sql("CREATE TABLE after_etcd AS SELECT 1") != nil)
    }
}

/// `etcdctl` (v3 API) against `etcd`: its standard output.
func runEtcdctl(_ etcd: EtcdServer, _ args: [String]) throws -> String {
    let etcdctl = TestSupport.which("etcdctl") ?? "/usr/bin/etcdctl"
    let result = try TestSupport.runTool(etcdctl, ["--endpoints", etcd.clientURL] + args, environment: ["ETCDCTL_API": "3"])
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
}
