import Foundation
import StorkProcess
import Testing
import StorkConfig
import StorkDCS
import StorkPostgres
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// An rsync daemon on a free loopback port exporting each member's data directory read-only
/// as a module named after the member (`rsync://127.0.0.1:PORT/pg0`); stopped by PID.
final class RsyncDaemon: @unchecked Sendable {
    let port = TestSupport.freePort()
    let directory = TestSupport.makeTempDir("stork-rsyncd")
    private var process: Process?

    init(modules: [(name: String, path: String)]) throws {
        let user = TestSupport.postgresUser
        var conf = "use chroot = no\nread only = yes\nsocket options = TCP_NODELAY\npid file = \(directory)/rsyncd.pid\n"
        if let user { conf += "uid = \(user.uid)\ngid = \(user.gid)\n" }
        for m in modules { conf += "[\(m.name)]\npath = \(m.path)\n" }
        try conf.write(toFile: directory + "/rsyncd.conf", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestSupport.which("rsync") ?? "/usr/bin/rsync")
        p.arguments = ["--daemon", "--no-detach", "--config=\(directory)/rsyncd.conf", "--address=127.0.0.1",
                       "--port=\(port)", "--log-file=\(directory)/rsyncd.log"]
        try p.run()
        process = p
    }

    /// The `postgresql.rsync.source` template for this daemon.
    var source: String { "rsync://127.0.0.1:\(port)/{name}" }

    func stop() {
        if let p = process, p.isRunning { p.terminate(); p.waitUntilExit() }
        TestSupport.removeTree(directory)
    }
}

/// Waits until `replica` has replayed everything `primary` had written when called.
func waitCaughtUp(_ replica: TestMember, _ primary: TestMember, timeout: Double = 60) async -> Bool {
    guard let lsn = primary.sql("SELECT pg_current_wal_lsn()") else { return false }
    return await TestSupport.waitUntil(timeout: timeout) {
        replica.sql("SELECT pg_last_wal_replay_lsn() >= '\(lsn)'::pg_lsn") == "t"
    }
}

/// A checksum of every pgbench table's content.
func pgbenchChecksum(_ m: TestMember) -> String? {
    m.sql("""
        SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
          SELECT 'a' || aid || ':' || abalance AS x FROM pgbench_accounts
          UNION ALL SELECT 'b' || bid || ':' || bbalance FROM pgbench_branches
          UNION ALL SELECT 't' || tid || ':' || tbalance FROM pgbench_tellers
          UNION ALL SELECT 'h' || tid || ':' || aid || ':' || delta || ':' || mtime FROM pgbench_history) s
        """)
}

/// `POST /reinitialize` on a member's plain-HTTP API.
func reinitialize(_ m: TestMember, fromLeader: Bool = false) async throws -> MemberAPIResponse {
    try await MemberAPIClient(timeout: 10).request("POST", url: "http://127.0.0.1:\(m.apiPort)/reinitialize",
                                                   json: .object(["from_leader": .bool(fromLeader)]))
}

@Suite("Rebuilding replicas: rsync, reinitialize, clonefrom, a crash in the middle", .serialized)
struct ReplicaRebuildTests {
    /// rsync builds two replicas that stream. Both stop while pgbench writes to the primary,
    /// then `POST /reinitialize` re-syncs them in place, and every table matches the primary's.
    /// pg1 uses the default delta (the files the primary wrote since pg1's latest checkpoint):
    /// a deleted relation file comes back, a file pgbench wrote that sits behind the primary's
    /// size and modification time with other bytes (what rsync's quick check skips) is copied,
    /// a table written before that checkpoint is left alone (same inode), and a relation file
    /// the primary does not have is removed. pg2 uses
    /// `delta: checksum`: a damaged file of that cold table, behind the primary's size and
    /// modification time, is found and copied.
    @Test(.timeLimit(.minutes(5)))
    func rsyncBuildsAndResyncs() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "rsync", dcs: .local(dcsDir))
        let primary = cluster.addMember("pg0")
        let daemon = try RsyncDaemon(modules: [("pg0", primary.dataDir)])
        defer { cluster.destroy(); daemon.stop(); TestSupport.removeTree(dcsDir) }
        try primary.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pgbench = TestSupport.pgBinDir + "/pgbench"
        let connection = ["-h", "127.0.0.1", "-p", String(primary.pgPort), "-U", "postgres", "postgres"]
        let initialized = try runAsPostgres(pgbench, ["-i", "-s", "3", "-q"] + connection, env: ["PGPASSWORD": superuserPassword])
        try #require(initialized.status == 0, "\(initialized.output)")
        // A table nothing writes to again (frozen, no autovacuum), flushed on the primary.
        for statement in ["CREATE TABLE cold WITH (autovacuum_enabled = off) AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g",
                          "VACUUM (FREEZE) cold", "CHECKPOINT"] {
            #expect(primary.sql(statement) != nil, "\(statement)")
        }

        // max_clock_skew 0: one machine, one clock; the cold table's last write must fall
        // before the replica's checkpoint for the delta to leave it alone.
        let rsync = "create_replica_methods: [rsync]\nrsync:\n  source: \(daemon.source)"
        let pg1 = cluster.addMember("pg1", postgresqlYAML: rsync + "\n  max_clock_skew: 0")
        let pg2 = cluster.addMember("pg2", postgresqlYAML: rsync + "\n  delta: checksum\n  streams: 3")
        try pg1.start()
        try pg2.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        for replica in [pg1, pg2] {
            #expect(replica.log.contains("rsync from rsync://127.0.0.1:\(daemon.port)/pg0 (full copy: "), "\(replica.log)")
            #expect(replica.log.contains("replica has been created using rsync"))
            #expect(!replica.log.contains("could not copy the backup's WAL"), "\(replica.log)")
        }
        // A checkpoint a second after the cold table's, replayed and made a restartpoint on both.
        try await Task.sleep(for: .seconds(1.2))
        #expect(primary.sql("CHECKPOINT") != nil)
        for replica in [pg1, pg2] {
            #expect(await waitCaughtUp(replica, primary))
            #expect(replica.sql("CHECKPOINT") != nil)
        }
        let coldWant = primary.sql("SELECT md5(string_agg(h, ',' ORDER BY g)) FROM cold")

        // The replicas stop; pgbench writes; their files are damaged.
        pg1.stop()
        pg2.stop()
        let run = try runAsPostgres(pgbench, ["-t", "300", "-c", "2"] + connection, env: ["PGPASSWORD": superuserPassword])
        #expect(run.status == 0, "\(run.output)")
        _ = primary.sql("CHECKPOINT")
        let files = primary.sql("""
            SELECT pg_relation_filepath('pgbench_branches') || ' ' || pg_relation_filepath('pgbench_accounts') || ' ' || pg_relation_filepath('cold')
            """)?.split(separator: " ").map(String.init) ?? []
        try #require(files.count == 3)
        /// Other bytes behind the primary's size and modification time: rsync's quick check would skip it.
        func damage(_ replica: TestMember, _ file: String) throws {
            let damaged = replica.dataDir + "/" + file, original = primary.dataDir + "/" + file
            let size = (try FileManager.default.attributesOfItem(atPath: original)[.size] as? Int) ?? 0
            try #require(size > 0)
            try Data(repeating: 0x5a, count: size).write(to: URL(fileURLWithPath: damaged))
            TestSupport.chownToPostgres(damaged)
            let touch = try runAsPostgres("/usr/bin/touch", ["-r", original, damaged])
            #expect(touch.status == 0)
        }
        try FileManager.default.removeItem(atPath: pg1.dataDir + "/" + files[0])
        try damage(pg1, files[1])
        // A relation file the primary does not have: the re-sync removes it.
        let stray = pg1.dataDir + "/" + files[1] + "9"
        #expect(FileManager.default.createFile(atPath: stray, contents: Data(count: 8192)))
        TestSupport.chownToPostgres(stray)
        try damage(pg2, files[2])
        func inode(_ path: String) -> UInt64? { (try? FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? UInt64) ?? nil }
        let coldInode = inode(pg1.dataDir + "/" + files[2])

        for replica in [pg1, pg2] {
            try replica.start()
            let up = await TestSupport.waitUntil(timeout: 60) { await replica.api("/patroni").1["state"] as? String == "running" }
            #expect(up, "\(replica.log)")
            let answer = try await reinitialize(replica)
            #expect(answer.status == 200, "\(answer)")
        }
        for replica in [pg1, pg2] {
            let resynced = await TestSupport.waitUntil(timeout: 90) { count("replica has been created using rsync", in: replica.log) >= 2 }
            #expect(resynced, "\(replica.log)")
        }
        #expect(pg1.log.contains(" less max_clock_skew), "), "\(pg1.log)")
        #expect(pg2.log.contains("(delta: files compared by checksum, as postgresql.rsync.delta asks)"), "\(pg2.log)")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let want = pgbenchChecksum(primary)
        for replica in [pg1, pg2] {
            #expect(await waitCaughtUp(replica, primary))
            #expect(want != nil && pgbenchChecksum(replica) == want, "\(replica.name): the re-synced replica differs from the primary")
            #expect(replica.sql("SELECT count(*) FROM pgbench_branches") == "3")
            #expect(replica.sql("SELECT md5(string_agg(h, ',' ORDER BY g)) FROM cold") == coldWant, "\(replica.name): cold differs")
        }
        #expect(coldInode != nil && inode(pg1.dataDir + "/" + files[2]) == coldInode, "the delta copied the cold table again")
        #expect(!FileManager.default.fileExists(atPath: stray), "a file the primary does not have survived the re-sync")
    }

    /// An rsync attempt stopped half-way (its timeout, with every stream slowed down) leaves
    /// a copy that says so: its `backup_label` is Stork's placeholder, which PostgreSQL refuses,
    /// and the next attempt compares every file by checksum instead of trusting the copy's
    /// `pg_control`, which may already be the source's while other files are old (the test
    /// puts it there). After the last attempt the copy is wiped.
    @Test(.timeLimit(.minutes(3)))
    func anUnfinishedRsyncIsNotTrusted() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "halfrsync", dcs: .local(dcsDir))
        let primary = cluster.addMember("pg0")
        let daemon = try RsyncDaemon(modules: [("pg0", primary.dataDir)])
        defer { cluster.destroy(); daemon.stop(); TestSupport.removeTree(dcsDir) }
        try primary.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        // About 40 MiB at 2 x 1 MB/s: far from done when the timeout stops it.
        let replica = cluster.addMember("pg1", postgresqlYAML: """
            create_replica_methods: [rsync]
            rsync:
              source: \(daemon.source)
              timeout: 3
              retries: 1
              options: [--bwlimit=1000]
            """)
        try replica.start()
        let placeholder = "stork: an rsync copy into this directory did not finish"
        let labelled = await TestSupport.waitUntil(timeout: 30) {
            (try? String(contentsOfFile: replica.dataDir + "/backup_label", encoding: .utf8))?.hasPrefix(placeholder) == true
        }
        #expect(labelled, "\(replica.log)")
        // The worst case: the source's pg_control has arrived, most relation files have not.
        let control = replica.dataDir + "/global/pg_control"
        _ = try? FileManager.default.createDirectory(atPath: replica.dataDir + "/global", withIntermediateDirectories: true)
        _ = try? FileManager.default.removeItem(atPath: control)
        try FileManager.default.copyItem(atPath: primary.dataDir + "/global/pg_control", toPath: control)
        TestSupport.chownToPostgres(replica.dataDir + "/global")
        TestSupport.chownToPostgres(control)
        let twice = await TestSupport.waitUntil(timeout: 60) { count("rsync did not finish within 3 s and was stopped", in: replica.log) >= 2 }
        #expect(twice, "\(replica.log)")
        #expect(replica.log.contains("(full copy: "), "\(replica.log)")
        #expect(replica.log.contains("(delta: files compared by checksum, the copy never finished replaying the backup it came from, or an earlier rsync into it did not finish)"),
                "\(replica.log)")
        #expect(!replica.log.contains("starting PostgreSQL"), "\(replica.log)")
    }

    /// A replica whose relation file was deleted is rebuilt by reinitialize (basebackup into the
    /// staging directory, the old directory replaced only at the end) and streams; a member
    /// tagged `clonefrom` is the source of the next replica (a file only its directory holds
    /// arrives in the new one).
    @Test(.timeLimit(.minutes(5)))
    func reinitializeAndClonefrom() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "reinit", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let primary = try await cluster.startPrimary("pg0")
        #expect(primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g; SELECT 1")?.hasSuffix("1") == true)
        let tagged = cluster.addMember("pg1", extraYAML: "tags:\n  clonefrom: true\n")
        try tagged.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(await waitCaughtUp(tagged, primary))

        // A relation file deleted under the stopped replica: it cannot read t any more.
        let file = try #require(primary.sql("SELECT pg_relation_filepath('t')"))
        tagged.stop()
        try FileManager.default.removeItem(atPath: tagged.dataDir + "/" + file)
        try tagged.start()
        _ = await TestSupport.waitUntil(timeout: 60) { await tagged.api("/patroni").1["state"] as? String == "running" }
        #expect(tagged.sql("SELECT count(*) FROM t") == nil, "the damaged replica still reads t")
        let answer = try await reinitialize(tagged)
        #expect(answer.status == 200, "\(answer)")
        let rebuilt = await TestSupport.waitUntil(timeout: 90) { tagged.log.contains("reinitialize: rebuilt from leader 'pg0'") }
        #expect(rebuilt, "\(tagged.log)")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(tagged.sql("SELECT count(*) FROM t") == "10000")

        // A label only pg1's data directory holds arrives in pg2, cloned from pg1.
        let label = "stork-test-cloned-from-pg1"
        FileManager.default.createFile(atPath: tagged.dataDir + "/" + label, contents: Data("pg1".utf8))
        TestSupport.chownToPostgres(tagged.dataDir + "/" + label)
        _ = await TestSupport.waitUntil(timeout: 30) {
            // The tag reaches the member key with the next cycle.
            (try? runStork(["list", tagged.configPath]).out.contains("pg1")) ?? false
        }
        let third = cluster.addMember("pg2")
        try third.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(third.log.contains("trying to bootstrap from replica 'pg1'"), "\(third.log)")
        #expect(FileManager.default.fileExists(atPath: third.dataDir + "/" + label), "pg2 was not copied from pg1")
    }

    /// The agent killed with SIGKILL while basebackup copies into the staging directory: the
    /// data directory is never started half-copied; the restarted agent stops the orphaned copy
    /// it recorded starting, and nothing else (an operator's program naming the staging
    /// directory, which it killed before), removes the staging directory, and clones again to a
    /// streaming replica.
    @Test(.timeLimit(.minutes(5)))
    func crashDuringClone() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "crash", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let primary = try await cluster.startPrimary("pg0")
        #expect(primary.sql("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 300000) g; SELECT 1")?.hasSuffix("1") == true)
        // Slow enough to be caught in the middle: about 80 MB at 8 MB/s.
        let replica = cluster.addMember("pg1", postgresqlYAML: "basebackup:\n  max-rate: 8M")
        try replica.start()
        let staging = replica.dataDir + ".stork-staging"
        let copying = await TestSupport.waitUntil(timeout: 60, interval: 0.1) {
            (try? FileManager.default.contentsOfDirectory(atPath: staging + "/base"))?.isEmpty == false
        }
        #expect(copying, "\(replica.log)")
        // The method's progress, in the REST API and in stork list.
        var seen: [String: Any] = [:]
        let reported = await TestSupport.waitUntil(timeout: 20) {
            seen = await replica.api("/patroni").1["replica_creation"] as? [String: Any] ?? [:]
            return (seen["bytes_done"] as? Int ?? 0) > 0 && (seen["bytes_total"] as? Int ?? 0) > 0
        }
        #expect(reported && seen["method"] as? String == "basebackup" && seen["attempt"] as? Int == 1 && seen["attempts"] as? Int == 2, "\(seen)")
        let listed = await TestSupport.waitUntil(timeout: 20) {
            ((try? runStork(["list", replica.configPath]))?.out ?? "").contains("creating replica (basebackup 1/2, ")
        }
        #expect(listed, "\((try? runStork(["list", replica.configPath]))?.out ?? "")")
        replica.crash()
        #expect(!FileManager.default.fileExists(atPath: replica.dataDir + "/PG_VERSION"), "a half-built copy at the data directory")
        #expect(!FileManager.default.fileExists(atPath: replica.dataDir + "/postmaster.pid"))
        // The operator's own program, in a session of its own, naming the staging directory.
        // (Started as a Companion: a background child of Foundation's Process would hold its exit socket.)
        let user = try #require(TestSupport.postgresUser)
        let operators = try Companion.start(["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups",
                                             "/bin/sh", "-c", "sleep 300", "operators-tar", staging], environment: [])
        let operatorsPID = operators.pid
        defer { kill(-operatorsPID, SIGKILL); operators.close(kill: true) }
        try replica.start()
        #expect(await cluster.waitAllStreaming(timeout: 120), "\(cluster.logs())")
        #expect(replica.log.contains("holds an unfinished copy of this agent: removing it"), "\(replica.log)")
        #expect(replica.log.contains("stopping what an earlier agent left running on its copy: pg_basebackup (PID "), "\(replica.log)")
        // Not a zombie (our child, never reaped while the test runs): still running.
        let state = (try? String(contentsOfFile: "/proc/\(operatorsPID)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
        #expect(state != nil && state != "Z", "the operator's program naming the staging directory was stopped (state \(state ?? "gone"))")
        #expect(replica.sql("SELECT count(*) FROM filler") == "300000")
        #expect(!FileManager.default.fileExists(atPath: staging))
        let orphans = postgresCommandLines().filter { $0.contains("pg_basebackup") && $0.contains(staging) }
        #expect(orphans.isEmpty, "pg_basebackup still runs: \(orphans)")
    }

    /// A replica whose WAL lives elsewhere (`waldir`) and whose tablespace is mapped
    /// (`tablespace-mapping`) keeps both through a clone into the staging directory and a
    /// reinitialize that replaces its data directory: the links point where configured, no
    /// staging or replaced directory is left behind, and the tablespace's table reads.
    @Test(.timeLimit(.minutes(4)))
    func walAndTablespaceDirectoriesSurvive() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "outside", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let primary = try await cluster.startPrimary("pg0")
        let ts0 = cluster.root + "/pg0-space"
        mkdir(ts0, 0o700)
        TestSupport.chownToPostgres(ts0)
        #expect(primary.sql("CREATE TABLESPACE space LOCATION '\(ts0)'") != nil)
        #expect(primary.sql("CREATE TABLE spaced TABLESPACE space AS SELECT g FROM generate_series(1, 5000) g; SELECT 1")?.hasSuffix("1") == true)
        let wal = cluster.root + "/pg1-wal", ts1 = cluster.root + "/pg1-space"
        let replica = cluster.addMember("pg1", postgresqlYAML: "basebackup:\n- waldir: \(wal)\n- tablespace-mapping: \(ts0)=\(ts1)")
        try replica.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")

        func check(_ when: String) {
            let fm = FileManager.default
            #expect((try? fm.destinationOfSymbolicLink(atPath: replica.dataDir + "/pg_wal")) == wal, "\(when): pg_wal")
            let spaces = (try? fm.contentsOfDirectory(atPath: replica.dataDir + "/pg_tblspc")) ?? []
            #expect(spaces.count == 1 && spaces.allSatisfy { (try? fm.destinationOfSymbolicLink(atPath: replica.dataDir + "/pg_tblspc/" + $0)) == ts1 },
                    "\(when): tablespace links \(spaces)")
            #expect(((try? fm.contentsOfDirectory(atPath: wal)) ?? []).contains { $0.count == 24 }, "\(when): no WAL in \(wal)")
            let leftovers = ((try? fm.contentsOfDirectory(atPath: cluster.root)) ?? []) + ((try? fm.contentsOfDirectory(atPath: replica.base)) ?? [])
            #expect(!leftovers.contains { $0.contains(".stork-staging") || $0.contains(".stork-old") }, "\(when): left behind: \(leftovers)")
            #expect(replica.sql("SELECT count(*) FROM spaced") == "5000", "\(when): the tablespace's table")
        }
        #expect(await waitCaughtUp(replica, primary))
        check("after the clone")
        let answer = try await reinitialize(replica)
        #expect(answer.status == 200, "\(answer)")
        let rebuilt = await TestSupport.waitUntil(timeout: 90) { replica.log.contains("reinitialize: rebuilt from leader 'pg0'") }
        #expect(rebuilt, "\(replica.log)")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(await waitCaughtUp(replica, primary))
        check("after reinitialize")
    }
}
