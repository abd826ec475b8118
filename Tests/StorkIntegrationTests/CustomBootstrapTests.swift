import Foundation
import StorkProcess
import Testing
import StorkConfig
import StorkDCS
import StorkPostgres
import Logging
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A plain PostgreSQL (no agent) that archives its WAL by `cp`: the other cluster a custom
/// bootstrap copies or restores from.
final class ArchivingServer: @unchecked Sendable {
    let root: String
    let port = TestSupport.freePort()
    var dataDir: String { root + "/src" }
    var archive: String { root + "/archive" }
    let bin = TestSupport.pgBinDir + "/"

    let archiveCommand: String

    /// `archiveCommand` defaults to a `cp` into `archive`.
    init(root: String, archiveCommand: String? = nil) throws {
        self.root = root
        self.archiveCommand = archiveCommand ?? "cp %p \(root)/archive/%f"
        try runAsPostgres("/bin/mkdir", ["-p", root + "/archive"])
        let initdb = try runAsPostgres(bin + "initdb", ["-D", dataDir, "-U", "postgres", "--auth=trust"])
        try #require(initdb.status == 0, "\(initdb.output)")
    }

    /// `pg_ctl start` through Stork's process runner: a server started by Foundation's
    /// Process keeps its parent's pipe open, and the wait never ends.
    func start() async throws {
        var command = Command(bin + "pg_ctl", ["start", "-w", "-D", dataDir, "-l", root + "/src.log", "-o",
            "-p \(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories=\(root) -c archive_mode=on -c archive_command='\(archiveCommand)'"])
        command.runAs = TestSupport.postgresUser
        command.timeout = 60
        let result = try await ProcessRunner.run(command, logger: Logger(label: "test"))
        try #require(result.succeeded, "pg_ctl start: \(result.output)")
    }

    /// Starts it with a table `t` and takes a base backup (no WAL) into `<root>/backup`: its path.
    func startWithBackup() async throws -> String {
        try await start()
        #expect(sql("CREATE TABLE t (v text)") != nil)
        let backup = root + "/backup"
        let taken = try runAsPostgres(bin + "pg_basebackup", ["-D", backup, "-X", "none", "-c", "fast",
                                                              "-h", "127.0.0.1", "-p", String(port), "-U", "postgres"])
        try #require(taken.status == 0, "\(taken.output)")
        return backup
    }

    func sql(_ query: String) -> String? {
        let r = try? runAsPostgres(bin + "psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-Atc", query])
        guard let r, r.status == 0 else { return nil }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() { _ = try? runAsPostgres(bin + "pg_ctl", ["stop", "-D", dataDir, "-m", "immediate", "-w"]) }
}

/// Writes an executable script owned by postgres.
func writeScript(_ path: String, _ body: String) throws {
    try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    chmod(path, 0o755)
    TestSupport.chownToPostgres(path)
}

@Suite("Custom bootstrap: a restore to a point in time, pause and resume, failures that lose nothing", .serialized)
struct CustomBootstrapTests {
    /// A new cluster restored from another cluster's base backup and WAL archive to a time
    /// between two inserts, pausing there (`recovery_target_action: pause`) until
    /// `stork resume`; then roles, `post_bootstrap`, the real pg_hba.conf, and a replica.
    @Test(.timeLimit(.minutes(4)))
    func pointInTimeRestorePausesAndResumes() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "pitr", dcs: .local(dcsDir))
        let source = try ArchivingServer(root: cluster.root + "/other")
        defer { cluster.destroy(); source.stop(); TestSupport.removeTree(dcsDir) }
        let backup = try await source.startWithBackup()
        #expect(source.sql("INSERT INTO t VALUES ('first')") != nil)
        try await Task.sleep(for: .seconds(1.1))
        let target = try #require(source.sql("SELECT now()"))
        try await Task.sleep(for: .seconds(1.1))
        #expect(source.sql("INSERT INTO t VALUES ('second')") != nil)
        let last = try #require(source.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) { source.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" })

        let restore = cluster.root + "/restore.sh", post = cluster.root + "/post.sh"
        try writeScript(restore, """
            echo "$@" > \(cluster.root)/restore-args
            for a in "$@"; do case $a in --datadir=*) d=${a#--datadir=};; --backup=*) b=${a#--backup=};; esac; done
            cp -a "$b"/. "$d"/
            """)
        try writeScript(post, """
            \(TestSupport.pgBinDir)/psql "$1" -XAtc "CREATE TABLE loaded AS SELECT current_user AS who, current_setting('synchronous_commit') AS sc"
            """)
        let pg0 = cluster.addMember("pg0", bootstrapYAML: """
            method: pitr
            pitr:
              command: /bin/sh \(restore)
              backup: \(backup)
              recovery_conf:
                restore_command: cp \(source.archive)/%f %p
                recovery_target_time: '\(target)'
                recovery_target_action: pause
            post_bootstrap: \(post)
            users:
              app: {password: app-secret, options: [login]}
            """)
        try pg0.start()
        let paused = await TestSupport.waitUntil(timeout: 60) { await pg0.api("/patroni").1["state"] as? String == "recovery paused" }
        #expect(paused, "\(pg0.log)")
        #expect(pg0.log.contains("recovery is paused"), "\(pg0.log)")
        // Where the recovery is, in GET /patroni (and so in the member key and stork list).
        let progress = await pg0.api("/patroni").1["recovery_progress"] as? [String: Any]
        #expect(progress?["paused"] as? Bool == true && (progress?["target"] as? String)?.contains(target) == true
                && progress?["replayed_lsn"] is String, "\(String(describing: progress))")
        // Paused at the target: the first row is there, the second is not, read-only.
        #expect(pg0.sql("SELECT string_agg(v, ',') FROM t") == "first")
        let resumed = try runAsPostgres(storkBinary, ["resume", pg0.configPath])
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("recovery of pg0 resumes"), "\(resumed.output)")
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        let again = try runAsPostgres(storkBinary, ["resume", pg0.configPath])
        #expect(again.status == 1 && again.output.contains("is not in recovery: nothing to resume"), "\(again.output)")

        #expect(pg0.sql("SELECT string_agg(v, ',') FROM t") == "first")
        #expect(pg0.sql("SELECT pg_is_in_recovery()") == "f")
        let walFile = pg0.sql("SELECT pg_walfile_name(pg_current_wal_lsn())") ?? ""
        #expect(walFile.count == 24 && !walFile.hasPrefix("00000001"), "still on timeline 1: \(walFile)")
        let args = (try? String(contentsOfFile: cluster.root + "/restore-args", encoding: .utf8)) ?? ""
        #expect(args.trimmingCharacters(in: .whitespacesAndNewlines) == "--scope=pitr --datadir=\(pg0.dataDir) --backup=\(backup)", "\(args)")
        #expect(pg0.sql("SELECT who || ' ' || sc FROM loaded") == "postgres local", "post_bootstrap")
        #expect(pg0.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app'") == "t")
        let hba = (try? String(contentsOfFile: pg0.dataDir + "/pg_hba.conf", encoding: .utf8)) ?? ""
        #expect(!hba.contains("127.0.0.1/32 trust") && hba.contains("host all all 127.0.0.1/32 scram-sha-256"), "\(hba)")
        #expect(!FileManager.default.fileExists(atPath: pg0.dataDir + "/recovery.signal"))
        let conf = (try? String(contentsOfFile: pg0.dataDir + "/postgresql.conf", encoding: .utf8)) ?? ""
        #expect(!conf.contains("recovery_target_time"), "\(conf)")
        let view = try await readView(scope: "pitr", dcs: .local(dcsDir))
        #expect(view.initialize == pg0.sql("SELECT system_identifier FROM pg_control_system()"))

        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg1.sql("SELECT string_agg(v, ',') FROM t") == "first")
    }

    /// Four failures, each with `initialize` given back, the data directory moved aside with
    /// its contents and the agent exiting non-zero: a command that exits 1 (with `no_params`:
    /// only its own words), a directory PostgreSQL cannot start (twice: one moved-aside copy
    /// is kept), a failing `post_bootstrap`, a recovery that never ends against
    /// `bootstrap.recovery_timeout`. Then a member with initdb bootstraps the cluster.
    @Test(.timeLimit(.minutes(4)))
    func failuresLoseNothingAndLetAnotherMemberBootstrap() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "failing", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let root = cluster.root
        try writeScript(root + "/exit1.sh", """
            echo "$@" > \(root)/exit1-args
            echo "restore: backup set 42 is missing" >&2
            exit 1
            """)
        try writeScript(root + "/broken.sh", """
            for a in "$@"; do case $a in --datadir=*) d=${a#--datadir=};; esac; done
            \(TestSupport.pgBinDir)/initdb -D "$d" -X "$d-wal" -U postgres >/dev/null && echo "work_mem = lots" >> "$d/postgresql.conf" && echo kept > "$d/marker"
            """)
        try writeScript(root + "/copy.sh", """
            for a in "$@"; do case $a in --datadir=*) d=${a#--datadir=};; esac; done
            \(TestSupport.pgBinDir)/initdb -D "$d" -U postgres >/dev/null && echo kept > "$d/marker"
            """)
        try writeScript(root + "/post-fails.sh", "echo 'schema.sql: relation \"x\" already exists' >&2; exit 3")

        /// Runs a member that must fail; its log.
        func failing(_ name: String, _ bootstrapYAML: String, expect line: String) async throws -> TestMember {
            let m = cluster.addMember(name, bootstrapYAML: bootstrapYAML)
            try m.start()
            let status = await m.waitForExit(timeout: 90)
            #expect(status != nil && status != 0, "\(name): exit status \(String(describing: status))\n\(m.log)")
            #expect(m.log.contains(line), "\(name)\n\(m.log)")
            let view = try await readView(scope: "failing", dcs: .local(dcsDir))
            #expect(view.initialize == nil, "\(name): initialize was not given back")
            return m
        }
        func movedAside(_ m: TestMember) -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: m.base)) ?? []).filter { $0.hasPrefix("data_") }.sorted()
        }

        let f1 = try await failing("f1", "method: fails\nfails:\n  command: /bin/sh \(root)/exit1.sh own-arg\n  no_params: true\n  extra: 1",
                                   expect: "bootstrap failed: bootstrap command /bin/sh failed with exit status 1: / restore: backup set 42 is missing")
        #expect((try? String(contentsOfFile: root + "/exit1-args", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                == "own-arg --extra=1")
        #expect(movedAside(f1).isEmpty, "the command left nothing to move aside")

        let f2 = try await failing("f2", "method: broken\nbroken:\n  command: \(root)/broken.sh", expect: "invalid value for parameter \"work_mem\": \"lots\"")
        #expect(movedAside(f2).count == 1)
        try await Task.sleep(for: .seconds(1.1))  // a new time stamp for the second copy
        try f2.start()
        #expect(await f2.waitForExit(timeout: 90) ?? 0 != 0)
        let kept = movedAside(f2)
        #expect(kept.count == 1, "keep_failed_data_dirs defaults to 1: \(kept)\n\(f2.log)")
        #expect(f2.log.contains("an older failed bootstrap's data directory"), "\(f2.log)")
        #expect((try? String(contentsOfFile: f2.base + "/" + (kept.first ?? "") + "/marker", encoding: .utf8)) == "kept\n")
        #expect(!FileManager.default.fileExists(atPath: f2.dataDir))
        // The WAL directory outside (initdb -X) moved with it, its link following; the older one went too.
        let stamp = String((kept.first ?? "").dropFirst("data".count))
        let walDirs = ((try? FileManager.default.contentsOfDirectory(atPath: f2.base)) ?? []).filter { $0.hasPrefix("data-wal") }
        #expect(walDirs == ["data-wal" + stamp], "\(walDirs)")
        let link = try? FileManager.default.destinationOfSymbolicLink(atPath: f2.base + "/" + (kept.first ?? "") + "/pg_wal")
        #expect(link == f2.base + "/data-wal" + stamp)

        let f3 = try await failing("f3", "method: copy\ncopy:\n  command: \(root)/copy.sh\npost_bootstrap: \(root)/post-fails.sh",
                                   expect: "failed with exit status 3: / schema.sql: relation \"x\" already exists")
        #expect(movedAside(f3).count == 1)
        #expect(!f3.log.contains("initialized a new cluster"))

        // Recovery that never ends (a standby waiting for WAL nobody has) against
        // bootstrap.recovery_timeout: a failure like the others.
        try writeScript(root + "/endless.sh", """
            for a in "$@"; do case $a in --datadir=*) d=${a#--datadir=};; esac; done
            \(TestSupport.pgBinDir)/initdb -D "$d" -U postgres >/dev/null
            touch "$d/standby.signal"; echo "restore_command = 'false'" >> "$d/postgresql.auto.conf"
            """)
        let f4 = try await failing("f4", "method: endless\nendless:\n  command: \(root)/endless.sh\n  keep_existing_recovery_conf: true\nrecovery_timeout: 3",
                                   expect: "recovery did not end within 3 s (bootstrap.recovery_timeout)")
        #expect(movedAside(f4).count == 1)

        let good = cluster.addMember("good")
        try good.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { good.log.contains("initialized a new cluster") }, "\(good.log)")
        let view = try await readView(scope: "failing", dcs: .local(dcsDir))
        #expect(view.leader == "good")
    }
}

@Suite("Standby cluster: a leader that follows a remote primary", .serialized)
struct StandbyClusterTests {
    /// The first member copies the remote primary and follows it as the standby leader (rows
    /// written on the remote arrive); the second member clones from the standby leader and
    /// streams from it.
    @Test(.timeLimit(.minutes(3)))
    func standbyLeaderFollowsTheRemotePrimary() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "standby", dcs: .local(dcsDir))
        let remote = try ArchivingServer(root: cluster.root + "/remote")
        defer { cluster.destroy(); remote.stop(); TestSupport.removeTree(dcsDir) }
        try await remote.start()
        // A standby cluster has the remote cluster's roles: the configured passwords are theirs.
        for statement in ["CREATE ROLE replicator REPLICATION LOGIN PASSWORD '\(replicationPassword)'",
                          "ALTER ROLE postgres PASSWORD '\(superuserPassword)'",
                          "SELECT pg_create_physical_replication_slot('standby_cluster')",
                          "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g"] {
            #expect(remote.sql(statement) != nil, "\(statement)")
        }
        let standby = "standby_cluster:\n  host: 127.0.0.1\n  port: \(remote.port)\n  primary_slot_name: standby_cluster\n  create_replica_methods: [basebackup]"
        let pg0 = cluster.addMember("pg0", dcsYAML: standby)
        try pg0.start()
        let leading = await TestSupport.waitUntil(timeout: 60) { await pg0.api("/patroni").1["role"] as? String == "standby_leader" }
        #expect(leading, "\(pg0.log)")
        #expect(pg0.log.contains("initialized a new standby cluster: the standby leader follows the remote primary 127.0.0.1:\(remote.port)"), "\(pg0.log)")
        // The role is published when the server runs; its walreceiver connects a moment later.
        #expect(await TestSupport.waitUntil(timeout: 15) {
            remote.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'standby_cluster'") == "t"
        }, "the standby leader streams through its slot: \(pg0.log.suffix(2000))")
        #expect(remote.sql("INSERT INTO t SELECT g FROM generate_series(101, 150) g") != nil)
        #expect(await TestSupport.waitUntil(timeout: 30) { pg0.sql("SELECT count(*) FROM t") == "150" }, "\(pg0.log)")
        #expect(pg0.sql("SELECT pg_is_in_recovery()") == "t")
        let view = try await readView(scope: "standby", dcs: .local(dcsDir))
        #expect(view.leader == "pg0" && view.initialize == remote.sql("SELECT system_identifier FROM pg_control_system()"))

        let pg1 = cluster.addMember("pg1", dcsYAML: standby)
        try pg1.start()
        let streaming = await TestSupport.waitUntil(timeout: 60) {
            pg0.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg1' AND state = 'streaming'") == "1"
        }
        #expect(streaming, "\(cluster.logs())")
        #expect(remote.sql("INSERT INTO t SELECT g FROM generate_series(151, 160) g") != nil)
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.sql("SELECT count(*) FROM t") == "160" }, "\(pg1.log)")
        #expect(await pg1.api("/patroni").1["role"] as? String == "replica")
    }
}

extension CustomBootstrapTests {
    /// The log of a bootstrap paused at its target tells the operator to stop the agent to
    /// look first; a SIGTERM then once moved the restore aside and, with
    /// `keep_failed_data_dirs: 0`, removed it. A shutdown is no failure: the restore is kept
    /// (moved aside, named in the log), whatever keep_failed_data_dirs says.
    @Test(.timeLimit(.minutes(3)))
    func aShutdownWhileRecoveryIsPausedKeepsTheRestore() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "pitr-stop", dcs: .local(dcsDir))
        let source = try ArchivingServer(root: cluster.root + "/other")
        defer { cluster.destroy(); source.stop(); TestSupport.removeTree(dcsDir) }
        let backup = try await source.startWithBackup()
        #expect(source.sql("INSERT INTO t VALUES ('first')") != nil)
        let last = try #require(source.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) { source.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" })
        let restore = cluster.root + "/restore.sh"
        try writeScript(restore, """
            for a in "$@"; do case $a in --datadir=*) d=${a#--datadir=};; --backup=*) b=${a#--backup=};; esac; done
            cp -a "$b"/. "$d"/
            """)
        let pg0 = cluster.addMember("pg0", bootstrapYAML: """
            method: pitr
            keep_failed_data_dirs: 0
            pitr:
              command: /bin/sh \(restore)
              backup: \(backup)
              recovery_conf:
                restore_command: cp \(source.archive)/%f %p
                recovery_target: immediate
                recovery_target_action: pause
            """)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("recovery is paused") }, "\(pg0.log)")
        pg0.stop()
        let kept = ((try? FileManager.default.contentsOfDirectory(atPath: pg0.base)) ?? []).filter { $0.hasPrefix("data_") }
        #expect(kept.count == 1, "\(kept)\n\(pg0.log)")
        #expect(kept.allSatisfy { FileManager.default.fileExists(atPath: pg0.base + "/" + $0 + "/PG_VERSION") }, "\(pg0.log)")
        #expect(pg0.log.contains("is kept at \(pg0.base)/data_"), "\(pg0.log)")
        #expect(!pg0.log.contains("removed the failed bootstrap"), "\(pg0.log)")
    }
}
