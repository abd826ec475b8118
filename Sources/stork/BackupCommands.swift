import ArgumentParser
import Foundation
import Logging
import StorkArchive
import StorkConfig
import StorkPostgres
#if canImport(Glibc)
import Glibc
import StorkProcess
#endif

/// The configuration, its archive section and the cluster's backup catalog; a configuration
/// without an archive section exits 2.
func backupCatalog(_ configFile: String?, command: String) throws -> (Config, ArchiveSettings, BackupCatalog) {
    let config = try loadConfigOrExit(configFile).config
    guard let settings = config.archive else { fail(command, "the configuration has no archive section", status: 2) }
    do {
        return (config, settings, BackupCatalog(store: try openArchiveStore(settings), scope: config.scope))
    } catch { fail(command, "\(error)") }
}

/// Bytes, files, rate and ETA on one line of a terminal, redrawn at most twice a second;
/// nothing when standard error is not a terminal.
final class ProgressLine: @unchecked Sendable {
    let label: String
    let started = Date()
    let lock = NSLock()
    var drawn = Date.distantPast
    let enabled = isatty(STDERR_FILENO) == 1

    init(_ label: String) { self.label = label }

    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        guard Date().timeIntervalSince(drawn) >= 0.5 || done >= total else { return }
        drawn = Date()
        let elapsed = max(Date().timeIntervalSince(started), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Int(Double(total - done) / rate) : 0
        let percent = total > 0 ? done * 100 / total : 100
        FileHandle.standardError.write(Data(String(format: "\r%@: %3d%% %d/%d MiB, %.0f MiB/s, ETA %d s   ",
                                                   label, percent, done >> 20, total >> 20, rate / 1048576, eta).utf8))
    }

    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Base backups in the archive: take one, list them, delete old ones.",
        subcommands: [BackupTakeCommand.self, BackupListCommand.self, BackupDeleteCommand.self],
        defaultSubcommand: BackupTakeCommand.self)
}

struct BackupTakeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "take",
        abstract: "Take a base backup of this member (the primary) into the archive.",
        discussion: """
            Runs on the primary's host as a user that can read its data directory: pg_backup_start \
            over the local connection, the data directory read into compressed tar parts \
            (archive.concurrency at a time), pg_backup_stop, a wait until the WAL the backup needs is \
            in the archive, then the manifest (stored last: a backup without one is never used).

            Exit status: 0 with the backup's name on standard output; 1 with a one-line reason (the \
            parts already stored are removed); 2 for a bad configuration.
            """)

    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String?

    func run() async throws {
        let (config, settings, catalog) = try backupCatalog(configFile, command: "backup")
        StorkLogging.bootstrap(level: config.log.level, json: config.log.type == "json")
        let logger = Logger(label: "stork")
        let node = PostgresNode(settings: config.postgresql, memberName: config.name, logger: logger)
        let writer = BackupWriter(catalog: catalog, compression: settings.compression, concurrency: settings.concurrency)
        let bar = ProgressLine("backup")
        let started = Date()
        do {
            let manifest = try await writer.take(node: node, logger: logger) { bar.update($0, $1) }
            bar.finish()
            let compressed = manifest.parts.reduce(0) { $0 + $1.size }
            logger.info("backup \(manifest.name) stored: \(manifest.files.count) files, \(manifest.bytes >> 20) MiB (\(compressed >> 20) MiB \(manifest.compression)) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, WAL from \(manifest.startWALFile)")
            print(manifest.name)
        } catch {
            bar.finish()
            fail("backup", "\(error)")
        }
    }
}

struct BackupListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the cluster's finished base backups, oldest first.")

    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String?
    @Flag(help: "Print the manifests' summaries as JSON.")
    var json = false

    func run() async throws {
        let (_, _, catalog) = try backupCatalog(configFile, command: "backup list")
        let backups: [BackupManifest]
        do { backups = try catalog.list() } catch { fail("backup list", "\(error)") }
        if json {
            let rows: [[String: Any]] = backups.map {
                ["name": $0.name, "system_identifier": $0.systemIdentifier, "timeline": $0.timeline, "start_lsn": $0.startLSN,
                 "stop_lsn": $0.stopLSN, "stop_time": DateText.format($0.stopTime, "yyyy-MM-dd'T'HH:mm:ss'Z'"), "bytes": $0.bytes,
                 "stored_bytes": $0.parts.reduce(0) { $0 + $1.size }]
            }
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("name                 | stopped (UTC)       | TL | start LSN   | stop LSN    |    MiB | stored MiB")
        for b in backups {
            print(String(format: "%-20@ | %@ | %2d | %-11@ | %-11@ | %6d | %10d", b.name, DateText.format(b.stopTime), b.timeline,
                         b.startLSN, b.stopLSN, b.bytes >> 20, b.parts.reduce(0) { $0 + $1.size } >> 20))
        }
    }
}

struct BackupDeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Keep the newest N base backups of this cluster; remove its others and the WAL only they needed (another cluster's backups under its prefix are left alone).")

    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String?
    @Option(help: "How many of the newest backups to keep (1 or more).")
    var retain: Int

    func validate() throws {
        guard retain >= 1 else { throw ValidationError("--retain must be 1 or more: the newest backup is always kept") }
    }

    func run() async throws {
        let (_, _, catalog) = try backupCatalog(configFile, command: "backup delete")
        do {
            let (backups, walFiles) = try catalog.delete(retain: retain)
            print(backups.isEmpty ? "nothing to remove: \(retain) or fewer backups" : "removed \(backups.joined(separator: ", ")) and \(walFiles) WAL files")
        } catch { fail("backup delete", "\(error)") }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a base backup from the archive into a directory.",
        discussion: """
            Picks the newest backup, the one named by --backup, or the newest that ended before a \
            recovery target (--target-time, --target-lsn, --target-xid), restores it into an empty \
            directory with every file checked against the manifest, and writes restore_command \
            (stork wal-fetch) with recovery.signal, and the target when one is given, so that the \
            server replays the archive when started; archive_mode is set off, so that the copy does \
            not archive a timeline of its own into the cluster's archive. An interrupted restore into the same directory \
            resumes, keeping the files already restored and verified.

            Exit status: 0 when restored; 1 with a one-line reason (the directory is left as it is, \
            for a later resume); 2 for a bad configuration.
            """)

    @Argument(help: "Patroni YAML configuration file with an archive section (its scope names the cluster).")
    var configFile: String?
    @Option(help: "The directory to restore into (empty, or an interrupted restore of the same backup).")
    var targetDir: String
    @Option(help: "Restore this backup (a name from stork backup list).")
    var backup: String?
    @Option(help: "Recover to this time (PostgreSQL's timestamp syntax, with a time zone).")
    var targetTime: String?
    @Option(help: "Recover to this LSN.")
    var targetLsn: String?
    @Option(help: "Recover to just after this transaction commits.")
    var targetXid: String?
    @Flag(help: "Restore only: write no recovery settings.")
    var noRecovery = false

    func run() async throws {
        let (config, settings, catalog) = try backupCatalog(configFile, command: "restore")
        let target: BackupCatalog.Target
        var recovery: [String: String] = [:]
        if let name = backup {
            target = .named(name)
        } else if let t = targetTime {
            guard let date = RestoredRecovery.parseTime(t) else { fail("restore", "--target-time \(t): expected a time such as '2026-11-27 13:00:00+00'", status: 2) }
            target = .time(date)
            recovery["recovery_target_time"] = t
        } else if let l = targetLsn {
            guard let lsn = LSN.parse(l) else { fail("restore", "--target-lsn \(l): expected an LSN such as 0/3000060", status: 2) }
            target = .lsn(lsn)
            recovery["recovery_target_lsn"] = l
        } else if let x = targetXid {
            guard let xid = UInt64(x) else { fail("restore", "--target-xid \(x): expected a transaction id", status: 2) }
            target = .xid(xid)
            recovery["recovery_target_xid"] = x
        } else {
            target = .newest
        }
        let manifest: BackupManifest
        do { manifest = try catalog.choose(target) } catch { fail("restore", "\(error)") }
        let owner: OSUser? = geteuid() == 0 ? osUser(named: "postgres") : nil
        let restorer = BackupRestorer(catalog: catalog, concurrency: settings.concurrency, owner: owner)
        let bar = ProgressLine("restore \(manifest.name)")
        let started = Date()
        do {
            if !noRecovery {
                // A restored copy that archived into the cluster's archive could put a timeline
                // of its own there, under names the cluster may use later.
                recovery["archive_mode"] = "off"
                recovery["restore_command"] = WALArchiveCommands.restoreCommand(configFile: config.configFile ?? configFile ?? "")
            }
            let summary = try await restorer.restore(manifest, into: targetDir, expectedSystemIdentifier: nil,
                                                     recovery: noRecovery ? nil : recovery) { bar.update($0, $1) }
            bar.finish()
            print("restored backup \(manifest.name) into \(targetDir): \(summary.files) files, \(summary.bytes >> 20) MiB"
                  + (summary.kept > 0 ? " (\(summary.kept) kept from an interrupted restore)" : "")
                  + String(format: " in %.1f s", Date().timeIntervalSince(started)))
        } catch {
            bar.finish()
            fail("restore", "\(error)")
        }
    }
}

func osUser(named name: String) -> OSUser? {
    guard let pw = getpwnam(name) else { return nil }
    return OSUser(name: name, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
}
