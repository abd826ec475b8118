import Foundation
import Logging
import StorkProcess
import Testing
import StorkConfig
import StorkPostgres
import StorkTestSupport

@Suite("Base backups in the archive: stork backup, the archive replica method, hostile archives", .serialized)
struct ArchiveBackupTests {
    static func archiveYAML(_ root: String, methods: String = "[archive, basebackup]", backup: String? = nil) -> (extra: String, postgresql: String) {
        ("archive:\n  url: file://\(root)/archive\n  concurrency: 2",
         "create_replica_methods: \(methods)" + (backup.map { "\narchive:\n  backup: \($0)" } ?? ""))
    }

    /// `stork backup` of a running primary; with the primary's agent stopped (no leader), a new
    /// member is built by the archive method alone, replays the archive up to its last segment;
    /// when the primary comes back the replica streams from it. On a directory and on S3.
    @Test(.timeLimit(.minutes(4)), arguments: ["file", "s3"])
    func replicaFromTheArchiveWithoutPrimary(_ backend: String) async throws {
        let archived = try ArchivedCluster(scope: "arch")
        defer { archived.destroy() }
        let cluster = archived.cluster
        var yaml = Self.archiveYAML(cluster.root)
        var s3: S3TestServer?
        defer { s3?.stop() }
        if backend == "s3" {
            let server = try await S3TestServer()
            s3 = server
            yaml.extra = """
                archive:
                  url: s3://\(server.bucket)/clusters
                  endpoint: \(server.endpoint)
                  region: \(server.region)
                  access_key_id: \(server.credentials.accessKeyID)
                  secret_access_key: \(server.credentials.secretAccessKey)
                """
        }
        let pg0 = try await archived.startPrimary("pg0", yaml)
        #expect(pg0.sql("CREATE TABLE t AS SELECT generate_series(1, 50000) AS i") != nil)

        let (name, output) = try archived.backup(pg0)
        #expect(output.contains("INFO: backup \(name) stored:"), "\(output)")
        let list = try runAsPostgres(storkBinary, ["backup", "list", pg0.configPath])
        #expect(list.status == 0 && list.output.contains(name), "\(list.output)")
        if backend == "file" {
            let manifest = try BackupManifestFile.read(cluster.root + "/archive/arch/backups/\(name)/manifest.json")
            #expect(manifest["system_identifier"] as? String == pg0.sql("SELECT system_identifier FROM pg_control_system()"))
            #expect((manifest["files"] as? [[String: Any]])?.contains { $0["path"] as? String == "backup_label" } == true)
        }

        // After the backup: rows that only the archived WAL carries.
        #expect(pg0.sql("INSERT INTO t SELECT generate_series(50001, 60000)") != nil)
        let last = try #require(pg0.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) {
            pg0.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t"
        }, "\(pg0.sql("SELECT * FROM pg_stat_archiver") ?? "")")
        pg0.stop()

        // Tagged nofailover: it must follow the primary when it returns, not win the leader race meanwhile.
        let pg1 = cluster.addMember("pg1", extraYAML: yaml.extra + "\ntags:\n  nofailover: true", postgresqlYAML: yaml.postgresql)
        try pg1.start()
        #expect(await TestSupport.waitUntil(timeout: 90) { pg1.sql("SELECT count(*) FROM t") == "60000" }, "\(pg1.log)")
        #expect(pg1.log.contains("replica has been created using archive"), "\(pg1.log)")
        #expect(pg1.log.contains("restoring backup \(name) of arch from the archive"), "\(pg1.log)")
        #expect(pg1.sql("SELECT pg_is_in_recovery()") == "t")

        // The primary returns: the replica streams from it.
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(pg0.log)")
        #expect(pg0.sql("INSERT INTO t VALUES (-1)") != nil)
        #expect(await TestSupport.waitUntil(timeout: 60) {
            pg1.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" && pg1.sql("SELECT count(*) FROM t WHERE i = -1") == "1"
        }, "\(pg1.log)")
    }

    /// `bootstrap.method: archive` clones cluster `src` to a time between two inserts: the new
    /// cluster has the first row and not the second, runs on a timeline of its own, and archives
    /// under its own scope. A target older than every backup fails before anything is restored.
    @Test(.timeLimit(.minutes(4)))
    func pointInTimeClone() async throws {
        let source = try ArchivedCluster(scope: "src")
        defer { source.destroy() }
        let yaml = Self.archiveYAML(source.root)
        let pg0 = try await source.startPrimary("pg0", yaml)
        _ = try source.backup(pg0)
        #expect(pg0.sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('first')") != nil)
        try await Task.sleep(for: .seconds(1))
        let between = try #require(pg0.sql("SELECT clock_timestamp()"))
        try await Task.sleep(for: .seconds(1))
        #expect(pg0.sql("INSERT INTO t VALUES ('second')") != nil)
        let last = try #require(pg0.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) { pg0.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" })

        let cloneDCS = TestSupport.makeTempDir("stork-dcs")
        let clone = TestCluster(scope: "clone", dcs: .local(cloneDCS))
        defer { clone.destroy(); TestSupport.removeTree(cloneDCS) }
        let c0 = clone.addMember("c0", extraYAML: yaml.extra, bootstrapYAML: """
            method: archive
            archive:
              scope: src
              recovery_target_time: '\(between)'
            """)
        try c0.start()
        #expect(await TestSupport.waitUntil(timeout: 120) { c0.log.contains("initialized a new cluster") }, "\(c0.log)")
        #expect(c0.sql("SELECT string_agg(v, ',') FROM t") == "first", "\(c0.log)")
        #expect(c0.sql("SELECT timeline_id > 1 FROM pg_control_checkpoint()") == "t")
        #expect(c0.sql("SELECT system_identifier FROM pg_control_system()") == pg0.sql("SELECT system_identifier FROM pg_control_system()"))
        let segment = try #require(c0.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) {
            FileManager.default.fileExists(atPath: source.root + "/archive/clone/wal/" + segment + ".zst")
        }, "\(c0.sql("SELECT * FROM pg_stat_archiver") ?? "")")

        // A target before the only backup: refused before anything is restored.
        let earlyDCS = TestSupport.makeTempDir("stork-dcs")
        let early = TestCluster(scope: "early", dcs: .local(earlyDCS))
        defer { early.destroy(); TestSupport.removeTree(earlyDCS) }
        let e0 = early.addMember("e0", extraYAML: yaml.extra, bootstrapYAML: """
            method: archive
            archive:
              scope: src
              recovery_target_time: '2001-01-01 00:00:00+00'
            """)
        try e0.start()
        let status = await e0.waitForExit(timeout: 60)
        #expect(status != nil && status != 0, "\(e0.log)")
        #expect(e0.log.contains("the recovery target is older than every backup of src: the oldest,"), "\(e0.log)")

        // Another cluster's backup copied under this scope's prefix: refused before anything is
        // restored (it was restored, then failed at start and the foreign copy moved aside).
        let backups = source.root + "/archive/src/backups"
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: backups).first)
        try runAsPostgres("/bin/mkdir", ["-p", source.root + "/archive/foreign/backups"])
        try runAsPostgres("/bin/cp", ["-a", backups + "/" + name, source.root + "/archive/foreign/backups/"])
        let foreignDCS = TestSupport.makeTempDir("stork-dcs")
        let foreign = TestCluster(scope: "foreign", dcs: .local(foreignDCS))
        defer { foreign.destroy(); TestSupport.removeTree(foreignDCS) }
        let f0 = foreign.addMember("f0", extraYAML: yaml.extra, bootstrapYAML: "method: archive\narchive:\n  scope: foreign\n")
        try f0.start()
        let refused = await f0.waitForExit(timeout: 60)
        #expect(refused != nil && refused != 0, "\(f0.log)")
        #expect(f0.log.contains("backup \(name) under foreign/backups/ was taken of cluster src"), "\(f0.log)")
        let aside = ((try? FileManager.default.contentsOfDirectory(atPath: f0.base)) ?? []).filter { $0.hasPrefix("data_") }
        #expect(aside.isEmpty && !FileManager.default.fileExists(atPath: f0.dataDir + "/PG_VERSION"), "restored anyway: \(aside)")
    }

    /// `stork restore` by hand: into a non-empty directory it refuses; an interrupted restore
    /// (files missing, one cut short) resumes and keeps the verified files; the copy recovers
    /// from the archive. `stork backup delete --retain 1` keeps the newest backup and the WAL
    /// from its start on.
    @Test(.timeLimit(.minutes(4)))
    func restoreByHandAndRetention() async throws {
        let archived = try ArchivedCluster(scope: "hand")
        defer { archived.destroy() }
        let cluster = archived.cluster
        let pg0 = try await archived.startPrimary("pg0", Self.archiveYAML(cluster.root))
        _ = try archived.backup(pg0)
        #expect(pg0.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i") != nil)
        #expect(pg0.sql("SELECT pg_switch_wal()") != nil)
        let newest = try archived.backup(pg0).name
        #expect(pg0.sql("INSERT INTO t VALUES (1001)") != nil)
        let last = try #require(pg0.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) { pg0.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" })

        let target = cluster.root + "/restored"
        try runAsPostgres("/bin/mkdir", ["-p", target])
        try runAsPostgres("/bin/sh", ["-c", "echo x > \(target)/stray"])
        let refused = try runStork(["restore", pg0.configPath, "--target-dir", target])
        #expect(refused.status == 1 && refused.err.contains("is not empty"), "\(refused.err)")
        try runAsPostgres("/bin/rm", [target + "/stray"])
        let restored = try runStork(["restore", pg0.configPath, "--target-dir", target])
        #expect(restored.status == 0 && restored.out.contains("restored backup \(newest)"), "\(restored.out) \(restored.err)")
        // As if interrupted: the marker back, some files gone, one cut short.
        try runAsPostgres("/bin/sh", ["-c", """
            printf %s \(newest) > \(target)/.stork-restore && rm -rf \(target)/base/1 && head -c 100 \(target)/global/pg_control > \(target)/x \
            && mv \(target)/x \(target)/global/pg_control
            """])
        let resumed = try runStork(["restore", pg0.configPath, "--target-dir", target])
        #expect(resumed.status == 0 && resumed.out.contains("kept from an interrupted restore"), "\(resumed.out) \(resumed.err)")
        #expect(!FileManager.default.fileExists(atPath: target + "/.stork-restore"))
        let auto = (try? String(contentsOfFile: target + "/postgresql.auto.conf", encoding: .utf8)) ?? ""
        #expect(auto.components(separatedBy: "restore_command").count == 2 && FileManager.default.fileExists(atPath: target + "/recovery.signal"), "\(auto)")
        let owner = try FileManager.default.attributesOfItem(atPath: target + "/global/pg_control")[.ownerAccountName] as? String
        #expect(owner == "postgres")

        // The copy recovers from the archive to its end.
        let port = TestSupport.freePort()
        let bin = try #require(pg0.sql("SELECT setting FROM pg_config WHERE name = 'BINDIR'"))
        // Through ProcessRunner: the postmaster keeps a Foundation pipe open, and reading it would hang.
        var start = Command(bin + "/pg_ctl", ["start", "-w", "-t", "60", "-D", target, "-l", cluster.root + "/restored.log", "-o",
                                              "-p \(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories=\(cluster.root)"])
        start.runAs = TestSupport.postgresUser
        start.timeout = 90
        let started = try await ProcessRunner.run(start, logger: Logger(label: "test"))
        #expect(started.succeeded, "\(started.output)")
        defer { _ = try? runAsPostgres(bin + "/pg_ctl", ["stop", "-D", target, "-m", "immediate", "-w"]) }
        func restoredSQL(_ q: String) -> String? {
            let r = try? runAsPostgres(bin + "/psql", ["-h", cluster.root, "-p", String(port), "-U", "postgres", "-d", "postgres", "-Atc", q])
            return r?.status == 0 ? r?.output.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }
        #expect(await TestSupport.waitUntil(timeout: 60) { restoredSQL("SELECT pg_is_in_recovery()") == "f" },
                "\(String(((try? String(contentsOfFile: cluster.root + "/restored.log", encoding: .utf8)) ?? "").suffix(2000)))")
        #expect(restoredSQL("SELECT count(*) FROM t") == "1001")
        #expect(restoredSQL("SHOW archive_mode") == "off")

        // Retention: the older backup goes, with the WAL only it needed.
        let manifest = try BackupManifestFile.read(cluster.root + "/archive/hand/backups/\(newest)/manifest.json")
        let startFile = try #require(manifest["start_wal_file"] as? String)
        let deleted = try runStork(["backup", "delete", pg0.configPath, "--retain", "1"])
        #expect(deleted.status == 0 && deleted.out.contains("removed "), "\(deleted.out) \(deleted.err)")
        let list = try runStork(["backup", "list", pg0.configPath, "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [[String: Any]] ?? []
        #expect(rows.map { $0["name"] as? String } == [newest], "\(list.out)")
        let wal = (try FileManager.default.contentsOfDirectory(atPath: cluster.root + "/archive/hand/wal")).sorted()
        #expect(wal.allSatisfy { $0.hasSuffix(".history.zst") || String($0.prefix(24)).dropFirst(8) >= startFile.dropFirst(8) }, "\(wal) \(startFile)")
        #expect(wal.contains(startFile + ".zst"), "\(wal)")
        let bad = try runStork(["backup", "delete", pg0.configPath, "--retain", "0"])
        #expect(bad.status != 0 && bad.err.contains("--retain must be 1 or more"), "\(bad.err)")
    }

    /// An agent killed in the middle of an archive restore leaves the staging directory with
    /// the restore's marker and the `staging` work marker (made here by `stork restore`, then
    /// files removed and one cut short): the next agent keeps it, and the archive method resumes
    /// it, keeping the files already restored and verified.
    @Test(.timeLimit(.minutes(3)))
    func anInterruptedRestoreResumes() async throws {
        let archived = try ArchivedCluster(scope: "resume")
        defer { archived.destroy() }
        let yaml = Self.archiveYAML(archived.root, methods: "[archive]")
        let pg0 = try await archived.startPrimary("pg0", yaml)
        #expect(pg0.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i") != nil)
        let name = try archived.backup(pg0).name
        let pg1 = archived.cluster.addMember("pg1", extraYAML: yaml.extra, postgresqlYAML: yaml.postgresql)
        let staging = pg1.dataDir + ".stork-staging"
        let restored = try runAsPostgres(storkBinary, ["restore", pg1.configPath, "--target-dir", staging, "--no-recovery"])
        try #require(restored.status == 0, "\(restored.output)")
        try runAsPostgres("/bin/sh", ["-c", """
            printf %s \(name) > \(staging)/.stork-restore && rm -rf \(staging)/base/1 && head -c 100 \(staging)/global/pg_control > \(staging)/x \
            && mv \(staging)/x \(staging)/global/pg_control && echo staging > \(pg1.dataDir).stork-incomplete
            """])
        try pg1.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg1.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" }, "\(pg1.log)")
        #expect(pg1.log.contains("holds an interrupted restore of backup \(name): kept for the archive method to resume"), "\(pg1.log)")
        #expect(pg1.log.contains("resuming the interrupted restore of backup \(name)"), "\(pg1.log)")
        let kept = pg1.log.split(separator: "\n").first { $0.contains("files an interrupted restore had written and verified") } ?? ""
        let count = Int(kept.split(separator: " ").drop { $0 != "kept" }.dropFirst().first ?? "") ?? 0
        #expect(count > 500, "\(kept)")
        #expect(pg1.sql("SELECT count(*) FROM t") == "1000")
    }

    /// Six damaged or hostile backups, each named by a member's `postgresql.archive.backup`:
    /// each is refused with a one-line reason, nothing lands outside the data directory, and
    /// the next method (basebackup) builds the replica.
    @Test(.timeLimit(.minutes(6)))
    func hostileArchivesAreRefused() async throws {
        let archived = try ArchivedCluster(scope: "host")
        defer { archived.destroy() }
        let cluster = archived.cluster
        let pg0 = try await archived.startPrimary("pg0", Self.archiveYAML(cluster.root))
        let good = try archived.backup(pg0).name
        let backups = cluster.root + "/archive/host/backups"
        let escapeMark = cluster.root + "/escape"
        let cases: [(name: String, tamper: String, reason: String)] = [
            ("truncated", "truncate", "Truncated"),
            ("checksum", "checksum", "does not match its checksum in the manifest"),
            ("dotdot", "entry:../escape", "../escape points outside the data directory: refused"),
            ("absolute", "entry:\(escapeMark)", "\(escapeMark) is an absolute path: refused"),
            ("symlink", "symlink:/etc", "lnk is a symbolic link (to /etc): refused"),
            ("othersystem", "sysid", "belongs to another cluster: system identifier 1234567890"),
        ]
        for c in cases {
            let made = try runAsPostgres("/usr/bin/env", ["python3", "-c", Self.tamperScript, backups, good, c.name, c.tamper])
            try #require(made.status == 0, "\(c.name): \(made.output)")
        }
        for (index, c) in cases.enumerated() {
            let yaml = Self.archiveYAML(cluster.root, backup: c.name)
            let member = cluster.addMember("r\(index)", extraYAML: yaml.extra, postgresqlYAML: yaml.postgresql)
            try member.start()
            let streaming = await TestSupport.waitUntil(timeout: 60) { member.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming" }
            #expect(streaming, "\(c.name): \(member.log)")
            let failure = member.log.split(separator: "\n").first { $0.contains("Error creating replica using method archive") }.map(String.init) ?? ""
            #expect(failure.contains(c.reason), "\(c.name): \(failure)\n\(member.log)")
            #expect(member.log.contains("replica has been created using basebackup"), "\(c.name)")
            #expect(!FileManager.default.fileExists(atPath: escapeMark) && !FileManager.default.fileExists(atPath: cluster.root + "/r\(index)/escape"))
            member.stop()
        }
    }

    /// Copies backup `good` to `name` and damages it one way (argv: backups dir, good, name, how).
    static let tamperScript = #"""
    import hashlib, io, json, os, shutil, sys, tarfile
    backups, good, name, how = sys.argv[1:5]
    src, dst = os.path.join(backups, good), os.path.join(backups, name)
    shutil.copytree(src, dst)
    mpath = os.path.join(dst, "manifest.json")
    m = json.load(open(mpath))
    def sha(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()
    if how == "truncate":
        # A part cut short whose checksum in the manifest is updated: only the tar shows it.
        part = max(m["parts"], key=lambda p: p["size"])
        path = os.path.join(dst, part["name"])
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        part["size"], part["sha256"] = len(data) // 2, sha(path)
    elif how == "checksum":
        f = next(f for f in m["files"] if f["path"] == "PG_VERSION")
        f["sha256"] = "0" * 64
    elif how == "sysid":
        m["system_identifier"] = "1234567890"
    else:
        kind, target = how.split(":", 1)
        partname = "part-0099.tar"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            if kind == "entry":
                info = tarfile.TarInfo(target)
                info.size = 4
                t.addfile(info, io.BytesIO(b"evil"))
            else:
                info = tarfile.TarInfo("lnk")
                info.type = tarfile.SYMTYPE
                info.linkname = target
                t.addfile(info)
        open(os.path.join(dst, partname), "wb").write(buf.getvalue())
        m["parts"].append({"name": partname, "size": len(buf.getvalue()), "sha256": sha(os.path.join(dst, partname))})
    m["name"] = name
    json.dump(m, open(mpath, "w"))
    """#
}

/// A cluster on the embedded store with an archive directory in its root, torn down by `destroy()`.
final class ArchivedCluster: @unchecked Sendable {
    let dcsDir = TestSupport.makeTempDir("stork-dcs")
    let cluster: TestCluster
    var root: String { cluster.root }

    init(scope: String) throws {
        cluster = TestCluster(scope: scope, dcs: .local(dcsDir))
        try runAsPostgres("/bin/mkdir", ["-p", cluster.root + "/archive"])
    }

    func destroy() {
        cluster.destroy()
        TestSupport.removeTree(dcsDir)
    }

    /// Member `name`, started, once its PostgreSQL accepts writes.
    func startPrimary(_ name: String, _ yaml: (extra: String, postgresql: String)) async throws -> TestMember {
        let member = cluster.addMember(name, extraYAML: yaml.extra, postgresqlYAML: yaml.postgresql)
        try member.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { member.sql("SELECT NOT pg_is_in_recovery()") == "t" }, "\(member.log)")
        return member
    }

    /// `stork backup` of `member`: the backup's name, and everything it printed.
    func backup(_ member: TestMember) throws -> (name: String, output: String) {
        let taken = try runAsPostgres(storkBinary, ["backup", member.configPath])
        try #require(taken.status == 0, "\(taken.output)")
        return (try #require(taken.output.split(separator: "\n").last.map(String.init)), taken.output)
    }
}

enum BackupManifestFile {
    static func read(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}
