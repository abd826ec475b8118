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

/// A recipe's whole `stork.yml`.
func recipeConfig(_ name: String) throws -> [String: JSONValue] {
    let text = try String(contentsOfFile: recipeDirectory(name) + "/stork.yml", encoding: .utf8)
    guard case .object(let root) = try ConfigLoader.yamlValue(text) else { throw TestFailure("Recipes/\(name)/stork.yml is not a map") }
    return root
}

/// One YAML line per key, each value as JSON (JSON is YAML).
func yamlLines(_ map: [String: JSONValue]) -> String {
    map.keys.sorted().map { "\($0): \(map[$0]!.jsonString())" }.joined(separator: "\n")
}

/// The recipe's cluster-wide `bootstrap.dcs.postgresql`, as `dcsYAML` for the test harness.
func recipeDCSPostgresql(_ name: String) throws -> String {
    guard let postgresql = try recipeConfig(name)["bootstrap"]?["dcs"]?["postgresql"] else {
        throw TestFailure("Recipes/\(name)/stork.yml has no bootstrap.dcs.postgresql")
    }
    return yamlLines(["postgresql": postgresql])
}

/// The recipe's `postgresql.create_replica_methods` and each method's section, with `change`
/// applied to the sections, as `postgresqlYAML` for the test harness.
func recipeReplicaMethods(_ name: String, change: (String, inout [String: JSONValue]) -> Void = { _, _ in }) throws -> String {
    guard case .object(let postgresql)? = try recipeConfig(name)["postgresql"],
          case .array(let methods)? = postgresql["create_replica_methods"] else {
        throw TestFailure("Recipes/\(name)/stork.yml has no postgresql.create_replica_methods")
    }
    var out: [String: JSONValue] = ["create_replica_methods": .array(methods)]
    for method in methods.compactMap(\.scalarText) {
        guard case .object(var section)? = postgresql[method] else { continue }
        change(method, &section)
        out[method] = .object(section)
    }
    return yamlLines(out)
}

/// The text of a file, empty when it cannot be read.
func fileText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

/// Writes a file readable by the postgres user (mode 0600 when `secret`).
func writeOwned(_ path: String, _ text: String, secret: Bool = false) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    chmod(path, secret ? 0o600 : 0o644)
    TestSupport.chownToPostgres(path)
}

/// pgBackRest as one host of the pgBackRest recipe has it: the recipe's `pgbackrest.conf` with
/// this machine's repository, data directory and port (what its README lists as yours), plus
/// the test's own log and lock directories and the member's socket directory.
struct PgBackRestHost {
    let config: String

    init(member: TestMember, repository: String, root: String) throws {
        config = member.base + "/pgbackrest.conf"
        var text = try String(contentsOfFile: recipeDirectory("replicas-from-pgbackrest") + "/pgbackrest.conf", encoding: .utf8)
        text = text.replacingOccurrences(of: "repo1-path=/mnt/pgbackrest", with: "repo1-path=\(repository)")
            .replacingOccurrences(of: "pg1-path=/var/lib/postgresql/15/main", with: "pg1-path=\(member.dataDir)")
            .replacingOccurrences(of: "pg1-port=5432", with: "pg1-port=\(member.pgPort)")
            .replacingOccurrences(of: "[global]\n", with: "[global]\nlog-path=\(root)/pgbackrest-log\nlock-path=\(root)/pgbackrest-lock\n")
        text += "pg1-socket-path=\(member.base)\n"
        try #require(text.contains(member.dataDir) && text.contains(repository), "the recipe's pgbackrest.conf changed: \(text)")
        try writeOwned(config, text)
        // This member's pgBackRest reads this file, as a host's reads /etc/pgbackrest/pgbackrest.conf:
        // the agent, the method, archive_command and restore_command all inherit the variable.
        member.environment["PGBACKREST_CONFIG"] = config
    }

    /// `pgbackrest --stanza=main ARGS` as the postgres user; fails the test unless it exits 0.
    func run(_ args: [String]) throws {
        let r = try runAsPostgres("/usr/bin/pgbackrest", ["--stanza=main"] + args, env: ["PGBACKREST_CONFIG": config])
        try #require(r.status == 0, "pgbackrest \(args): \(r.output)")
    }
}

/// A Barman installation of the test's own (configuration, home, log) serving one server.
struct BarmanHost {
    let config: String
    let home: String
    let server: String
    var incoming: String { home + "/" + server + "/incoming" }
    /// `archive_command` that hands WAL to Barman on this host, as Barman's manual shows it.
    var archiveCommand: String { "test ! -f \(incoming)/%f && cp %p \(incoming)/%f" }

    /// The directories (Barman's incoming one, for `archiveCommand`) before the server it
    /// serves exists; `configure` writes the configuration once its address is known.
    init(root: String, server: String) throws {
        self.server = server
        config = root + "/barman.conf"
        home = root + "/barman"
        try runAsPostgres("/bin/mkdir", ["-p", home + "/" + server + "/incoming"])
    }

    func configure(conninfo: String, streamingConninfo: String) throws {
        let user = TestSupport.postgresUser?.name ?? (ProcessInfo.processInfo.environment["USER"] ?? "postgres")
        try writeOwned(config, """
            [barman]
            barman_user = \(user)
            barman_home = \(home)
            log_file = \(home)/barman.log
            log_level = INFO

            [\(server)]
            description = "Stork test server"
            conninfo = \(conninfo)
            streaming_conninfo = \(streamingConninfo)
            backup_method = postgres
            archiver = on
            streaming_archiver = off

            """)
    }

    /// `barman -c CONFIG ARGS` as the postgres user; its status and output.
    @discardableResult
    func run(_ args: [String], env: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try runAsPostgres("/usr/bin/barman", ["-c", config] + args, env: env)
    }

    /// A first WAL through archive_command (Barman will not back up before it has one), then a backup.
    func backup(env: [String: String] = [:]) throws {
        let switched = try run(["switch-wal", "--force", "--archive", "--archive-timeout", "60", server], env: env)
        try #require(switched.status == 0, "barman switch-wal: \(switched.output)")
        let backup = try run(["backup", server, "--wait", "--wait-timeout", "60"], env: env)
        try #require(backup.status == 0, "barman backup: \(backup.output)")
    }
}

/// Waits until `server`'s archiver has archived the segment that `pg_switch_wal()` closed.
func switchAndArchive(_ sql: (String) -> String?) async throws -> Bool {
    let last = try #require(sql("SELECT pg_walfile_name(pg_switch_wal())"))
    return await TestSupport.waitUntil(timeout: 30) { sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" }
}

@Suite("Methods/pgbackrest-restore and Methods/barman-recover with the real tools, and their recipes", .serialized)
struct ArchiveToolMethodTests {
    /// Recipes/replicas-from-pgbackrest: the primary archives through pgBackRest and is backed
    /// up; with its agent stopped (no leader) a new member is restored from the repository in
    /// place and replays the archive up to the last segment (a row written before the stop is
    /// there); when the primary is back the replica streams from it; a reinitialize is a delta
    /// restore over the data directory.
    @Test(.timeLimit(.minutes(3)))
    func replicasFromPgBackRest() async throws {
        let recipe = "replicas-from-pgbackrest"
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "main", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let repository = cluster.root + "/repo"
        try runAsPostgres("/bin/mkdir", ["-p", repository])
        let dcs = try recipeDCSPostgresql(recipe)
        let methods = try recipeReplicaMethods(recipe) { name, section in
            if name == "pgbackrest" { section["command"] = .string(repositoryRoot + "/Methods/pgbackrest-restore") }
        }
        let pg0 = cluster.addMember("pg0", postgresqlYAML: methods, dcsYAML: dcs)
        let host0 = try PgBackRestHost(member: pg0, repository: repository, root: cluster.root)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg0.sql("SHOW archive_command") == "pgbackrest --stanza=main archive-push %p")
        try host0.run(["stanza-create"])
        #expect(pg0.sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('in the backup')") != nil)
        try host0.run(["backup", "--type=full"])
        #expect(pg0.sql("INSERT INTO t VALUES ('archived')") != nil)
        #expect(try await switchAndArchive(pg0.sql), "\(pg0.sql("SELECT * FROM pg_stat_archiver") ?? "")")
        pg0.stop()
        #expect(try await readView(scope: "main", dcs: .local(dcsDir)).leader == nil)

        // No leader: only the no_leader method runs, in place (keep_data). Tagged nofailover: it
        // must follow the primary when it returns, not win the leader race while it is away.
        let pg1 = cluster.addMember("pg1", extraYAML: "tags:\n  nofailover: true", postgresqlYAML: methods, dcsYAML: dcs)
        _ = try PgBackRestHost(member: pg1, repository: repository, root: cluster.root)
        try pg1.start()
        let running = await TestSupport.waitUntil(timeout: 60) { await pg1.api("/patroni").1["state"] as? String == "running" }
        #expect(running, "\(cluster.logs())")
        #expect(pg1.log.contains("trying to bootstrap (without leader)"), "\(pg1.log)")
        #expect(pg1.log.contains("creating replica using method pgbackrest (attempt 1 of 1) without a member to copy from in place"), "\(pg1.log)")
        #expect(pg1.log.contains("replica has been created using pgbackrest"), "\(pg1.log)")
        #expect(!pg1.log.contains("using method basebackup"))
        #expect(pg1.sql("SELECT string_agg(v, ',' ORDER BY v) FROM t") == "archived,in the backup", "\(cluster.logs())")
        #expect(pg1.sql("SELECT pg_is_in_recovery()") == "t")
        // pgBackRest's restore_command is what the replica replays the archive with.
        let auto = fileText(pg1.dataDir + "/postgresql.auto.conf")
        #expect(auto.contains("restore_command = 'pgbackrest --pg1-path=\(pg1.dataDir) --stanza=main archive-get %f \"%p\"'"), "\(auto)")
        #expect(fileText(pg1.dataDir + ".log").contains("restored log file"), "the replica replayed nothing from the archive")

        // The primary is back: the replica streams from it.
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg0.sql("INSERT INTO t VALUES ('streamed')") != nil)
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.sql("SELECT count(*) FROM t WHERE v = 'streamed'") == "1" })

        // A rebuild is a delta restore over the existing data directory.
        let answer = try await reinitialize(pg1)
        #expect(answer.status == 200, "\(answer)")
        let rebuilt = await TestSupport.waitUntil(timeout: 60) { pg1.log.contains("reinitialize: rebuilt from leader 'pg0'") }
        #expect(rebuilt, "\(pg1.log)")
        #expect(pg1.log.contains("Leaving data directory uncleaned"), "\(pg1.log)")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg1.sql("SELECT string_agg(v, ',' ORDER BY v) FROM t") == "archived,in the backup,streamed")
    }

    /// Methods/pgbackrest-restore without keep_data (a staging directory): exit 75 while the
    /// stanza has no backup (no fallback to basebackup), then a replica restored once the backup
    /// exists, whose restore_command names the data directory it runs in, not the staging one;
    /// a wrong stanza fails with one line saying so, and basebackup builds that member.
    @Test(.timeLimit(.minutes(3)))
    func pgBackRestStagedNoBackupYetAndFailure() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "main", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let repository = cluster.root + "/repo"
        try runAsPostgres("/bin/mkdir", ["-p", repository])
        let dcs = try recipeDCSPostgresql("replicas-from-pgbackrest")
        let method = repositoryRoot + "/Methods/pgbackrest-restore"
        let pg0 = cluster.addMember("pg0", dcsYAML: dcs)
        let host0 = try PgBackRestHost(member: pg0, repository: repository, root: cluster.root)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        try host0.run(["stanza-create"])
        #expect(pg0.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT 1") != nil)

        let pg1 = cluster.addMember("pg1", postgresqlYAML: """
            create_replica_methods: [pgbackrest, basebackup]
            pgbackrest: {command: \(method), stanza: main}
            """)
        _ = try PgBackRestHost(member: pg1, repository: repository, root: cluster.root)
        let pg2 = cluster.addMember("pg2", postgresqlYAML: """
            create_replica_methods: [pgbackrest, basebackup]
            pgbackrest: {command: \(method), stanza: other, process_max: 2}
            """)
        _ = try PgBackRestHost(member: pg2, repository: repository, root: cluster.root)
        try pg1.start()
        try pg2.start()
        let waits = await TestSupport.waitUntil(timeout: 30) { pg1.log.contains("asks to be tried again later (exit status 75") }
        #expect(waits, "\(pg1.log)")
        #expect(pg1.log.contains("pgbackrest-restore: stanza main has no backup yet; trying again later"), "\(pg1.log)")
        #expect(!pg1.log.contains("using method basebackup"), "exit status 75 moved on to basebackup")
        let fellBack = await TestSupport.waitUntil(timeout: 60) { pg2.log.contains("replica has been created using basebackup") }
        #expect(fellBack, "\(pg2.log)")
        let failure = pg2.log.split(separator: "\n").first { $0.contains("Error creating replica using method pgbackrest (attempt 1 of 1)") } ?? ""
        #expect(failure.contains("exit status 1"), "\(pg2.log)")
        #expect(pg2.log.contains("pgbackrest-restore: stanza other is not in the repository"), "\(pg2.log)")

        try host0.run(["backup", "--type=full"])
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg1.log.contains("replica has been created using pgbackrest"), "\(pg1.log)")
        #expect(pg1.log.contains("creating replica using method pgbackrest (attempt 1 of 1) from leader 'pg0' in \(pg1.dataDir).stork-staging"), "\(pg1.log)")
        #expect(pg1.sql("SELECT count(*) FROM t") == "1000")
        let auto = fileText(pg1.dataDir + "/postgresql.auto.conf")
        #expect(auto.contains("restore_command = 'pgbackrest --pg1-path=\(pg1.dataDir) --stanza=main archive-get %f \"%p\"'"), "\(auto)")
        #expect(!auto.contains("stork-staging"), "\(auto)")
        #expect(fileText(pg1.dataDir + ".log").contains("restored log file"), "the replica replayed nothing from the archive")
    }

    /// Methods/pgbackrest-restore as a custom bootstrap method: a new cluster restored from
    /// another cluster's repository to a time between two inserts (`type: time`), pgBackRest's
    /// recovery settings kept: it has the first row only, on a new timeline.
    @Test(.timeLimit(.minutes(3)))
    func pgBackRestBootstrapToPointInTime() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "audit", dcs: .local(dcsDir))
        let root = cluster.root + "/main"
        let conf = cluster.root + "/pgbackrest.conf"
        let source = try ArchivingServer(root: root, archiveCommand: "pgbackrest --config=\(conf) --stanza=main archive-push %p")
        // The source first: its data directory is inside the cluster's, which destroy() removes.
        defer { source.stop(); cluster.destroy(); TestSupport.removeTree(dcsDir) }
        try writeOwned(conf, """
            [global]
            repo1-path=\(root)/repo
            log-path=\(root)/pgbackrest-log
            lock-path=\(root)/pgbackrest-lock
            start-fast=y

            [main]
            pg1-path=\(source.dataDir)
            pg1-port=\(source.port)
            pg1-socket-path=\(root)
            """)
        try await source.start()
        func pgbackrest(_ args: [String]) throws {
            let r = try runAsPostgres("/usr/bin/pgbackrest", ["--config=\(conf)", "--stanza=main"] + args)
            try #require(r.status == 0, "pgbackrest \(args): \(r.output)")
        }
        try pgbackrest(["stanza-create"])
        #expect(source.sql("CREATE TABLE t (v text)") != nil)
        try pgbackrest(["backup", "--type=full"])
        #expect(source.sql("INSERT INTO t VALUES ('first')") != nil)
        try await Task.sleep(for: .seconds(1.1))
        let target = try #require(source.sql("SELECT now()"))
        try await Task.sleep(for: .seconds(1.1))
        #expect(source.sql("INSERT INTO t VALUES ('second')") != nil)
        #expect(try await switchAndArchive(source.sql))

        let pg0 = cluster.addMember("pg0", bootstrapYAML: """
            method: pgbackrest
            pgbackrest:
              command: \(repositoryRoot)/Methods/pgbackrest-restore
              stanza: main
              config: \(conf)
              type: time
              target: '\(target)'
              target_action: promote
              keep_existing_recovery_conf: true
            """)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 90) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        #expect(pg0.sql("SELECT string_agg(v, ',') FROM t") == "first")
        let walFile = pg0.sql("SELECT pg_walfile_name(pg_current_wal_lsn())") ?? ""
        #expect(walFile.count == 24 && !walFile.hasPrefix("00000001"), "still on timeline 1: \(walFile)")
        let auto = fileText(pg0.dataDir + "/postgresql.auto.conf")
        #expect(auto.contains("recovery_target_time = '\(target)'") && auto.contains("--pg1-path=\(pg0.dataDir) "), "\(auto)")
    }

    /// Methods/barman-recover as a no_leader replica method: Barman backs up the primary and
    /// receives its WAL through archive_command; with the primary's agent stopped, a new member
    /// is recovered by Barman and replays, through `barman get-wal`, a row written after the
    /// backup; when the primary is back it streams from it.
    @Test(.timeLimit(.minutes(3)))
    func barmanReplicaWithoutLeader() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "main", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let barman = try BarmanHost(root: cluster.root, server: "main")
        let dcs = yamlLines(["postgresql": .object(["parameters": .object([
            "archive_mode": .string("on"), "archive_command": .string(barman.archiveCommand)])])])
        let primary = cluster.addMember("pg0", dcsYAML: dcs)
        // Barman takes its backup over a replication connection as the replication user.
        let pgpass = cluster.root + "/barman.pgpass"
        try writeOwned(pgpass, "127.0.0.1:\(primary.pgPort):*:replicator:\(replicationPassword)\n", secret: true)
        try barman.configure(conninfo: "host=\(primary.base) port=\(primary.pgPort) user=postgres dbname=postgres",
                             streamingConninfo: "host=127.0.0.1 port=\(primary.pgPort) user=replicator dbname=postgres")
        try primary.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(primary.sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('in the backup')") != nil)
        let env = ["PGPASSFILE": pgpass]
        try barman.backup(env: env)
        #expect(primary.sql("INSERT INTO t VALUES ('archived')") != nil)
        #expect(try await switchAndArchive(primary.sql))
        let archived = try barman.run(["archive-wal", "main"])  // what `barman cron` does every minute
        #expect(archived.status == 0, "\(archived.output)")
        primary.stop()

        // Tagged nofailover: it must follow the primary when it returns, not take over meanwhile.
        let pg1 = cluster.addMember("pg1", extraYAML: "tags:\n  nofailover: true", postgresqlYAML: """
            create_replica_methods: [barman, basebackup]
            barman:
              command: \(repositoryRoot)/Methods/barman-recover
              config: \(barman.config)
              server: main
              no_leader: true
            """, dcsYAML: dcs)
        try pg1.start()
        let running = await TestSupport.waitUntil(timeout: 60) { await pg1.api("/patroni").1["state"] as? String == "running" }
        #expect(running, "\(cluster.logs())")
        #expect(pg1.log.contains("replica has been created using barman"), "\(pg1.log)")
        #expect(pg1.sql("SELECT string_agg(v, ',' ORDER BY v) FROM t") == "archived,in the backup", "\(cluster.logs())")
        #expect(pg1.sql("SELECT pg_is_in_recovery()") == "t")
        let auto = fileText(pg1.dataDir + "/postgresql.auto.conf")
        #expect(auto.contains("restore_command = 'barman --config=\(barman.config) get-wal main %f > %p'"), "\(auto)")
        #expect(!auto.contains("archive_command = false"), "Barman's archive_command = false stayed: \(auto)")
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + "/postgresql.auto.conf.origin"))
        #expect(fileText(pg1.dataDir + ".log").contains("restored log file"), "the replica replayed nothing from Barman")

        try primary.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(primary.sql("INSERT INTO t VALUES ('streamed')") != nil)
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.sql("SELECT count(*) FROM t WHERE v = 'streamed'") == "1" })
        #expect(pg1.sql("SHOW archive_command") == barman.archiveCommand)
    }

    /// Recipes/pitr-from-barman: a new cluster restored by Barman from another cluster's
    /// backup to a time between two inserts: it has the first row, not the second, is on a new
    /// timeline, and keeps the `archive_command = false` Barman put in place of the source's.
    @Test(.timeLimit(.minutes(3)))
    func pointInTimeFromBarman() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "audit", dcs: .local(dcsDir))
        let root = cluster.root + "/main"
        try runAsPostgres("/bin/mkdir", ["-p", root])
        let barman = try BarmanHost(root: cluster.root, server: "main")
        let source = try ArchivingServer(root: root, archiveCommand: barman.archiveCommand)
        try barman.configure(conninfo: "host=\(root) port=\(source.port) user=postgres dbname=postgres",
                             streamingConninfo: "host=\(root) port=\(source.port) user=postgres")
        // The source first: its data directory is inside the cluster's, which destroy() removes.
        defer { source.stop(); cluster.destroy(); TestSupport.removeTree(dcsDir) }
        try await source.start()
        #expect(source.sql("CREATE TABLE t (v text)") != nil)
        // The archive_command of the source's files (here ALTER SYSTEM's), which a copy must not keep.
        #expect(source.sql("ALTER SYSTEM SET archive_command = '\(barman.archiveCommand)'") != nil)
        try barman.backup()
        #expect(source.sql("INSERT INTO t VALUES ('first')") != nil)
        try await Task.sleep(for: .seconds(1.1))
        let target = try #require(source.sql("SELECT now()"))
        try await Task.sleep(for: .seconds(1.1))
        #expect(source.sql("INSERT INTO t VALUES ('second')") != nil)
        #expect(try await switchAndArchive(source.sql))
        #expect(try barman.run(["archive-wal", "main"]).status == 0)

        let bootstrap = try recipeBootstrap("pitr-from-barman") { section in
            section["command"] = .string(repositoryRoot + "/Methods/barman-recover")
            section["config"] = .string(barman.config)  // README: for a configuration other than /etc/barman.conf
            section["target_time"] = .string(target)
        }
        let pg0 = cluster.addMember("pg0", bootstrapYAML: bootstrap)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 90) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        #expect(pg0.log.contains("running custom bootstrap script: \(repositoryRoot)/Methods/barman-recover --scope=audit --datadir=\(pg0.dataDir)"), "\(pg0.log)")
        #expect(pg0.sql("SELECT string_agg(v, ',') FROM t") == "first")
        #expect(pg0.sql("SELECT pg_is_in_recovery()") == "f")
        let walFile = pg0.sql("SELECT pg_walfile_name(pg_current_wal_lsn())") ?? ""
        #expect(walFile.count == 24 && !walFile.hasPrefix("00000001"), "still on timeline 1: \(walFile)")
        #expect(pg0.log.contains("recovery has ended"), "\(pg0.log)")
        let auto = fileText(pg0.dataDir + "/postgresql.auto.conf")
        let archiveLines = auto.split(separator: "\n").filter { $0.hasPrefix("archive_command") }
        #expect(archiveLines == ["archive_command = false"], "\(auto)")
        #expect(auto.contains("recovery_target_time = '\(target)'"), "\(auto)")
        #expect(!FileManager.default.fileExists(atPath: pg0.dataDir + "/barman_wal"), "recovery_end_command did not run")
    }
}
