import Foundation
import Logging
import StorkProcess
import Testing
import StorkConfig
import StorkPostgres
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("stork wal-push and wal-fetch as PostgreSQL's archive and restore commands", .serialized)
struct WALArchiveTests {
    /// A server archives 100+ segments through `stork wal-push`; a copy of its base backup
    /// recovers through `stork wal-fetch` to the end of the archive and has every row. The
    /// commands' exit statuses: a second push of an archived segment 0, a missing segment 1
    /// (quietly), an unreadable object 255 (recovery must stop, not end early).
    @Test(.timeLimit(.minutes(4)))
    func hundredSegmentsRoundTrip() async throws {
        let root = TestSupport.makeTempDir("stork-it")
        defer { TestSupport.removeTree(root) }
        TestSupport.chownToPostgres(root)
        let conf = root + "/stork.yml"
        try """
            scope: src
            name: src1
            restapi: {listen: 127.0.0.1:8008}
            local: {path: \(root)/dcs}
            postgresql:
              listen: 127.0.0.1:5432
              data_dir: \(root)/main/src
              bin_dir: \(TestSupport.pgBinDir)
              authentication:
                superuser: {username: postgres}
                replication: {username: replicator}
            archive:
              url: file://\(root)/archive
              compression: zstd
            """.write(toFile: conf, atomically: true, encoding: .utf8)
        TestSupport.chownToPostgres(conf)
        try runAsPostgres("/bin/mkdir", ["-p", root + "/main", root + "/archive"])
        let source = try ArchivingServer(root: root + "/main", archiveCommand: "\(storkBinary) wal-push \(conf) %p")
        defer { source.stop() }
        try await source.start()
        #expect(source.sql("CREATE TABLE t (i int)") != nil)
        let backup = root + "/backup"
        let taken = try runAsPostgres(source.bin + "pg_basebackup", ["-D", backup, "-X", "none", "-c", "fast",
                                                                     "-h", "127.0.0.1", "-p", String(source.port), "-U", "postgres"])
        try #require(taken.status == 0, "\(taken.output)")
        var last = ""
        for i in 1...100 {
            #expect(source.sql("INSERT INTO t VALUES (\(i))") != nil)
            last = source.sql("SELECT pg_walfile_name(pg_switch_wal())") ?? last
        }
        let archived = await TestSupport.waitUntil(timeout: 120) {
            source.sql("SELECT last_archived_wal >= '\(last)' AND failed_count = 0 FROM pg_stat_archiver") == "t"
        }
        #expect(archived, "\(source.sql("SELECT * FROM pg_stat_archiver") ?? "")")
        let objects = (try? FileManager.default.contentsOfDirectory(atPath: root + "/archive/src/wal")) ?? []
        #expect(objects.count >= 100 && objects.allSatisfy { $0.hasSuffix(".zst") }, "\(objects.count) objects")

        // The commands' exit statuses.
        let again = try runAsPostgres(storkBinary, ["wal-push", conf, source.dataDir + "/pg_wal/" + last])
        if FileManager.default.fileExists(atPath: source.dataDir + "/pg_wal/" + last) {
            #expect(again.status == 0 && again.output.contains("archived already"), "\(again.output)")
        }
        let missing = try runAsPostgres(storkBinary, ["wal-fetch", conf, "0000000100000000000000FF", root + "/missing"])
        #expect(missing.status == 1 && missing.output.isEmpty && !FileManager.default.fileExists(atPath: root + "/missing"), "\(missing.output)")
        try runAsPostgres("/bin/sh", ["-c", "printf garbage > \(root)/archive/src/wal/00000009.history.zst"])
        let corrupt = try runAsPostgres(storkBinary, ["wal-fetch", conf, "00000009.history", root + "/corrupt"])
        #expect(corrupt.status == 255 && corrupt.output.contains("stork wal-fetch:"), "\(corrupt.output)")
        #expect(!FileManager.default.fileExists(atPath: root + "/corrupt"))
        try runAsPostgres("/bin/rm", [root + "/archive/src/wal/00000009.history.zst"])

        // Through the lean stork-wal-fetch too: a miss runs the full command, with its statuses.
        let leanFetch = (storkBinary as NSString).deletingLastPathComponent + "/stork-wal-fetch"
        let leanMissing = try runAsPostgres(leanFetch, [conf, "0000000100000000000000FF", root + "/missing"])
        #expect(leanMissing.status == 1 && leanMissing.output.isEmpty, "\(leanMissing.output)")

        // Recovery of the base backup from the archive alone, the prefetcher keeping the spool ahead.
        let port = TestSupport.freePort()
        try runAsPostgres("/bin/sh", ["-c", """
            touch \(backup)/recovery.signal && cat >> \(backup)/postgresql.auto.conf <<'CONF'
            restore_command = '\(leanFetch) \(conf) %f %p'
            archive_mode = off
            CONF
            """])
        var start = Command(source.bin + "pg_ctl", ["start", "-w", "-t", "120", "-D", backup, "-l", root + "/restored.log", "-o",
                                                    "-p \(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories=\(root)"])
        start.runAs = TestSupport.postgresUser
        start.timeout = 150
        let started = try await ProcessRunner.run(start, logger: Logger(label: "test"))
        #expect(started.succeeded, "\(started.output)")
        defer { _ = try? runAsPostgres(source.bin + "pg_ctl", ["stop", "-D", backup, "-m", "immediate", "-w"]) }
        func restored(_ q: String) -> String? {
            let r = try? runAsPostgres(source.bin + "psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-Atc", q])
            return r?.status == 0 ? r?.output.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }
        #expect(await TestSupport.waitUntil(timeout: 120) { restored("SELECT pg_is_in_recovery()") == "f" },
                "\(String(((try? String(contentsOfFile: root + "/restored.log", encoding: .utf8)) ?? "").suffix(3000)))")
        #expect(restored("SELECT count(*), sum(i) FROM t") == "100|5050")
        // Each prefetcher adds its line when it ends: wait until none holds the lock.
        let lockPath = backup + "/pg_wal/stork-spool/.prefetch.lock"
        #expect(await TestSupport.waitUntil(timeout: 40) {
            let fd = open(lockPath, O_RDONLY)
            defer { if fd >= 0 { close(fd) } }
            return fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0
        })
        let note = (try? String(contentsOfFile: lockPath, encoding: .utf8)) ?? ""
        let prefetched = note.split(separator: "\n").compactMap { Int($0.split(separator: " ").dropFirst().first ?? "") }.reduce(0, +)
        #expect(prefetched >= 80, "\(note)")
    }

    /// With an `archive` section and no commands of the user's, the agent sets archive_mode,
    /// archive_command (stork wal-push) and restore_command (stork wal-fetch): the primary
    /// archives, and a replica carries the restore command.
    @Test(.timeLimit(.minutes(3)))
    func theAgentSetsTheCommands() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "archived", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        try runAsPostgres("/bin/mkdir", ["-p", cluster.root + "/archive"])
        let section = "archive:\n  url: file://\(cluster.root)/archive"
        let pg0 = cluster.addMember("pg0", extraYAML: section)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        let pg1 = cluster.addMember("pg1", extraYAML: section)
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let stork = URL(fileURLWithPath: storkBinary).resolvingSymlinksInPath().path
        let command = pg0.sql("SHOW archive_command") ?? ""
        #expect(command == "\(stork) wal-push \(pg0.configPath) %p", "\(command)")
        #expect(pg1.sql("SHOW restore_command") == "\((stork as NSString).deletingLastPathComponent)/stork-wal-fetch \(pg1.configPath) %f %p")
        #expect(pg0.sql("CREATE TABLE t AS SELECT 1") != nil)
        let segment = try #require(pg0.sql("SELECT pg_walfile_name(pg_current_wal_lsn())"))
        #expect(pg0.sql("SELECT pg_switch_wal()") != nil)
        let archived = await TestSupport.waitUntil(timeout: 30) {
            FileManager.default.fileExists(atPath: cluster.root + "/archive/archived/wal/" + segment + ".zst")
        }
        #expect(archived, "\(pg0.sql("SELECT * FROM pg_stat_archiver") ?? "")")
        // GET /metrics counts what wal-push did, as pg_stat_archiver does.
        var metrics: [String: Double] = [:]
        let counted = try await TestSupport.waitUntil(timeout: 10) {
            metrics = try prometheusMetrics(pg0, scope: cluster.scope)
            let archiver = pg0.sql("SELECT archived_count || ',' || failed_count FROM pg_stat_archiver") ?? ""
            return "\(Int(metrics["stork_wal_pushed_total"] ?? -1)),\(Int(metrics["stork_wal_push_failures_total"] ?? -1))" == archiver
        }
        #expect(counted && (metrics["stork_wal_pushed_total"] ?? 0) >= 1, "\(metrics)\n\(pg0.sql("SELECT * FROM pg_stat_archiver") ?? "")")
        #expect((metrics["stork_wal_pushed_bytes_total"] ?? 0) >= 16 * 1024 * 1024, "\(metrics)")
    }
}
