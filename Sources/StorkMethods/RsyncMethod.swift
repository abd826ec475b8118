import Foundation
import Logging
import StorkConfig
import StorkPostgres
import Synchronization

/// Built in: a backup-mode rsync from a running member (`postgresql.rsync`).
///
/// On the source, over one superuser session: the replica's slot (so the source keeps the WAL
/// from the backup's start), `pg_backup_start`, then rsync from `source` (a template:
/// `rsync://{host}/pgdata` for an rsync daemon, `{host}:/path` over ssh), then `pg_backup_stop`,
/// whose `backup_label` (and `tablespace_map`) go into the copy. The files PostgreSQL's
/// documentation leaves out of a base backup are left out and removed from the target.
///
/// The delta (an existing data directory of the same cluster): see ``RsyncDelta``. What changes
/// while rsync runs is repaired by replaying the WAL from the backup's start, as for any base
/// backup (full-page writes are forced while a backup runs).
struct RsyncMethod: ReplicaMethod {
    let sourceTemplate: String

    /// Left out of the copy and removed from the target.
    static let excluded = BackupExclusions.rsyncPatterns

    /// rsync's arguments for a whole-tree copy: into an empty directory (in place: there is
    /// nothing to keep, and no temporary file and rename per file), or `byChecksum` over a
    /// copy of the same cluster (files removed on the source are removed from the target).
    static func arguments(from: String, target: String, byChecksum: Bool, section: [String: JSONValue]) -> [String] {
        // --keep-dirlinks: a pg_wal that is a link to another directory stays a link.
        ["--archive", "--keep-dirlinks", "--delete", "--delete-excluded", progressOption]
            + (byChecksum ? ["--checksum"] : ["--whole-file", "--inplace"])
            + excluded.map { "--exclude=\($0)" } + sourceOptions(section) + [from, target + "/"]
    }

    /// A `changedSince` delta in two passes: the first only removes what the source does not
    /// have (or leaves out), the second copies the listed files whole, time stamps unread.
    static func deltaArguments(from: String, target: String, copyList: String, section: [String: JSONValue]) -> (remove: [String], copy: [String]) {
        let remove = ["--recursive", "--keep-dirlinks", "--delete", "--delete-excluded", "--existing", "--ignore-existing"]
            + excluded.map { "--exclude=\($0)" } + sourceOptions(section) + [from, target + "/"]
        let copy = ["--archive", "--keep-dirlinks", "--whole-file", "--ignore-times", progressOption, "--files-from=\(copyList)"]
            + sourceOptions(section) + [from, target + "/"]
        return (remove, copy)
    }

    static let progressOption = "--info=progress2"

    /// The section's keys that concern reaching the source: `password_file` and `options`.
    static func sourceOptions(_ section: [String: JSONValue]) -> [String] {
        var arguments: [String] = []
        if let file = section["password_file"]?.scalarText { arguments.append("--password-file=\(file)") }
        if case .array(let extra)? = section["options"] { arguments += extra.compactMap(\.scalarText) }
        return arguments
    }

    /// An rsync source as a directory (a trailing `/`): its contents, not itself, are copied.
    static func directory(_ url: String) -> String { url.hasSuffix("/") ? url : url + "/" }

    /// The source for `source` member: the template filled in.
    func sourceURL(_ source: CloneSource, scope: String) -> String {
        let (host, port) = PostgresNode.hostAndPort(fromConnURL: source.connURL)
        return ReplicaMethodSpec.fill(sourceTemplate, ["host": host, "port": port, "name": source.name, "scope": scope])
    }

    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult {
        guard let source = attempt.source else { return .failed("rsync needs a running member to copy from") }
        let from = sourceURL(source, scope: attempt.scope)
        let fromDirectory = Self.directory(from)
        let session: Connection
        do { session = try await node.superuserConnection(toConnURL: source.connURL) } catch {
            return .failed("cannot connect to \(source.name) as the superuser for pg_backup_start: \(error)")
        }
        defer { Task { await session.close() } }
        var backupStarted = false
        do {
            let tablespaces = try await session.query("SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")
            if tablespaces.first?.first ?? "0" != "0" {
                return .failed("\(source.name) has tablespaces, which the rsync method does not copy yet; use basebackup")
            }
            if let slot = attempt.slot {
                try await session.query("""
                    SELECT pg_create_physical_replication_slot($1, true)
                    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
                    """, params: [slot])
            }
            // An existing copy of another cluster is of no use to a delta: start empty.
            let control = try? await node.controlData(of: attempt.target)
            let sysid = try await session.query("SELECT system_identifier::text FROM pg_control_system()").first?.first ?? nil
            if let control, control.systemIdentifier != sysid {
                node.logger.info("the data directory belongs to another cluster (\(control.systemIdentifier)); rsync copies everything")
                try node.wipe(directory: attempt.target)
            }
            let hasData = PostgresNode.holdsData(attempt.target)
            let start = try await session.query("""
                SELECT pg_backup_start($1, true)::text, (SELECT timeline_id FROM pg_control_checkpoint())::text
                """, params: ["stork rsync for \(node.memberName)"])
            backupStarted = true

            let delta = RsyncDelta.choose(
                hasData: hasData, target: control, targetHasBackupLabel: FileManager.default.fileExists(atPath: attempt.target + "/backup_label"),
                sourceTimeline: Int((start.first?[1] ?? nil) ?? ""), backupStart: LSN.parse((start.first?[0] ?? nil) ?? ""),
                section: attempt.spec.section)
            var toCopy: Int?
            let commands: [[String]]
            var copyList: String?
            defer { if let copyList { unlink(copyList) } }
            var summary: String
            switch delta {
            case .full, .checksum:
                commands = [Self.arguments(from: fromDirectory, target: attempt.target, byChecksum: delta != .full, section: attempt.spec.section)]
                summary = if case .checksum(let reason) = delta { "delta: files compared by checksum, \(reason)" } else { "full copy" }
            case .changedSince(let cutoff, let checkpoint):
                // After pg_backup_start: its checkpoint has written every earlier change to the
                // source's files, so their modification times tell what changed before it.
                let listing = try await Self.list(fromDirectory, section: attempt.spec.section, node: node, timeout: attempt.spec.timeout)
                let plan = RsyncDelta.plan(listing, cutoff: cutoff) { PostgresNode.fileSize(attempt.target + "/" + $0) }
                toCopy = plan.bytesToCopy
                attempt.reportProgress(0, plan.bytesToCopy)
                copyList = try node.writeTemporaryFile(prefix: "stork-rsync-files", contents: plan.copy.map { $0 + "\n" }.joined())
                let (remove, copy) = Self.deltaArguments(from: fromDirectory, target: attempt.target, copyList: copyList!,
                                                         section: attempt.spec.section)
                commands = [remove, copy]
                let files = listing.filter { !$0.isDirectory }.count
                summary = "delta: \(files - plan.unchanged) of \(files) files, written since \(RsyncDelta.utc(cutoff)) UTC "
                    + "(the copy's latest checkpoint began \(RsyncDelta.utc(checkpoint)), less max_clock_skew), \(plan.bytesToCopy >> 20) MiB to copy"
            }
            node.logger.info("rsync from \(from) (\(summary))")
            for arguments in commands {
                var command = Command("rsync", arguments)
                command.timeout = attempt.spec.timeout
                if arguments.contains(Self.progressOption) {
                    command.lineHandler = { [report = attempt.reportProgress, toCopy] line in
                        // Without a listing (a full copy, checksums) the total is the source's databases' size.
                        if let done = RsyncDelta.progressBytes(line) { report(toCopy.map { min(done, $0) } ?? done, toCopy) }
                    }
                }
                let result = try await node.run(command)
                // 24: files vanished on the source while it was copied, as a live server does.
                guard result.exitStatus == 0 || result.exitStatus == 24, !result.timedOut else {
                    if result.timedOut { return .failed("rsync did not finish within \(Int(attempt.spec.timeout ?? 0)) s and was stopped") }
                    return .failed(PostgresNode.failure("rsync", result).message)
                }
            }
            let stop = try await session.query("SELECT labelfile, spcmapfile, lsn::text FROM pg_backup_stop(false)")
            backupStarted = false
            guard let label = stop.first?[0] ?? nil else { return .failed("pg_backup_stop returned no backup_label") }
            try node.writeOwnedFile(attempt.target + "/backup_label", contents: label)
            if let map = stop.first?[1] ?? nil, !map.isEmpty {
                try node.writeOwnedFile(attempt.target + "/tablespace_map", contents: map)
            }
            try await copyBackupWAL(label: label, stopLSN: (stop.first?[2] ?? nil) ?? "", from: fromDirectory,
                                    attempt: attempt, session: session, node: node)
            return .succeeded
        } catch {
            if backupStarted { _ = try? await session.query("SELECT pg_backup_stop(false)") }
            return .failed("\(error)")
        }
    }

    /// The source's regular files that the copy takes (the exclusions applied), from
    /// `rsync --list-only`, read as it streams (a large cluster lists more than a kept tail).
    static func list(_ from: String, section: [String: JSONValue], node: PostgresNode, timeout: Double?) async throws -> [SourceFile] {
        let files = Mutex<[SourceFile]>([])
        var command = Command("rsync", ["--list-only", "--recursive", "--no-human-readable"] + excluded.map { "--exclude=\($0)" }
                                       + sourceOptions(section) + [from])
        // rsync prints modification times in the local zone.
        command.environment = ["TZ": "UTC"]
        command.timeout = timeout
        command.lineHandler = { line in
            if let file = SourceFile(listing: line) { files.withLock { $0.append(file) } }
        }
        let result = try await node.run(command)
        guard result.exitStatus == 0 || result.exitStatus == 24 else { throw PostgresNode.failure("rsync --list-only", result) }
        return files.withLock { $0 }
    }

    /// The WAL from the backup's start to its end, as pg_basebackup -X does: the copy becomes
    /// consistent without waiting for streaming to start. A failure only delays the replica.
    func copyBackupWAL(label: String, stopLSN: String, from: String, attempt: MethodAttempt, session: Connection,
                       node: PostgresNode) async throws {
        let size = try await session.query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
        let startFile = label.split(separator: "\n").first { $0.hasPrefix("START WAL LOCATION:") }
            .flatMap { line in line.split(separator: " ").last.map { String($0.dropLast()) } } ?? ""
        let segments = LSN.segmentFiles(from: startFile, through: LSN.parse(stopLSN) ?? 0,
                                        segmentSize: Int((size.first?.first ?? nil) ?? "") ?? 0)
        guard !segments.isEmpty else { return }
        let list = attempt.target + "/pg_wal/.stork-wal-list"
        // Paths relative to the source's root (an rsync daemon reports files listed relative
        // to a subdirectory of a module as vanished).
        try node.writeOwnedFile(list, contents: segments.map { "pg_wal/" + $0 + "\n" }.joined())
        defer { unlink(list) }
        var wal = Command("rsync", ["--archive", "--files-from=\(list)"] + Self.sourceOptions(attempt.spec.section) + [from, attempt.target + "/"])
        wal.timeout = attempt.spec.timeout
        let copied = try await node.run(wal)
        if !copied.succeeded {
            node.logger.warning("could not copy the backup's WAL (\(segments.count) segments); it will come by streaming: \(PostgresNode.failure("rsync", copied).message)")
        }
    }
}

/// A regular file or a directory of the source as `rsync --list-only` shows it.
struct SourceFile: Sendable, Equatable {
    var path: String
    var size: Int
    /// Whole seconds, UTC.
    var modified: Date
    var isDirectory = false

    init(path: String, size: Int, modified: Date, isDirectory: Bool = false) {
        self.path = path
        self.size = size
        self.modified = modified
        self.isDirectory = isDirectory
    }

    /// `-rw-------          8192 2026/11/27 19:40:00 base/5/16384` (TZ=UTC); nil for the
    /// top directory (`.`), links and anything else.
    init?(listing line: String) {
        let words = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: true)
        guard words.count == 5, let type = words[0].first, type == "-" || type == "d", words[4] != ".",
              let size = Int(words[1].filter { $0 != "," }) else { return nil }
        // Read by hand: a listing has a line per file, and a DateFormatter per line costs more
        // than the listing itself.
        let day = words[2].split(separator: "/").compactMap { Int($0) }, time = words[3].split(separator: ":").compactMap { Int($0) }
        guard day.count == 3, time.count == 3 else { return nil }
        var fields = tm()
        (fields.tm_year, fields.tm_mon, fields.tm_mday) = (Int32(day[0] - 1900), Int32(day[1] - 1), Int32(day[2]))
        (fields.tm_hour, fields.tm_min, fields.tm_sec) = (Int32(time[0]), Int32(time[1]), Int32(time[2]))
        let modified = Date(timeIntervalSince1970: TimeInterval(timegm(&fields)))
        self.init(path: String(words[4]), size: size, modified: modified, isDirectory: type == "d")
    }
}

/// How an rsync into a directory that holds data decides which files to copy.
///
/// `changedSince(cutoff)`, the default for a copy of the same cluster: the copy's `pg_control`
/// says that every change before its latest checkpoint is in its files; the source's
/// `pg_backup_start` has just written every change before the backup's start to the source's
/// files, and writing a file moves its modification time forward. So a relation file that the
/// source last wrote before the copy's checkpoint began holds, on both sides, the same bytes
/// (up to changes after the backup's start, which WAL replay repairs), and is skipped; every
/// other file is copied whole, without a look at its time stamps or size. The cutoff is the
/// checkpoint's time less `max_clock_skew` (default 10 s): the checkpoint's time comes from the
/// clock of the primary that wrote it, the files' times from the source's.
///
/// `checksum`: every file of equal size is compared by a whole-file checksum, read on both
/// sides. Used when the copy's checkpoint cannot vouch for its files (a copy from another
/// timeline, one that never finished replaying its backup, one ahead of the source) and with
/// `delta: checksum`.
enum RsyncDelta: Equatable {
    case full
    case checksum(String)
    /// Relation files the source wrote before `cutoff` (the copy's `checkpoint` time less the
    /// clock skew allowed) are left alone.
    case changedSince(cutoff: Date, checkpoint: Date)

    static let defaultClockSkew: Double = 10

    static func choose(hasData: Bool, target: ControlData?, targetHasBackupLabel: Bool, sourceTimeline: Int?,
                       backupStart: Int?, section: [String: JSONValue]) -> RsyncDelta {
        guard hasData else { return .full }
        if section["delta"]?.scalarText == "checksum" { return .checksum("as postgresql.rsync.delta asks") }
        guard let target, let checkpointTime = target.checkpointTime, let redo = target.redoLSN else {
            return .checksum("the copy's pg_control cannot be read")
        }
        if targetHasBackupLabel || target.backupUnfinished {
            return .checksum("the copy never finished replaying the backup it came from")
        }
        guard let sourceTimeline, target.timeline == sourceTimeline else {
            return .checksum("the copy's checkpoint is on timeline \(target.timeline), the source's on \(sourceTimeline.map(String.init) ?? "?")")
        }
        guard let backupStart, redo <= backupStart else {
            return .checksum("the copy's checkpoint (\(LSN.format(redo))) is ahead of the source")
        }
        let skew = section["max_clock_skew"]?.doubleValue ?? defaultClockSkew
        return .changedSince(cutoff: checkpointTime.addingTimeInterval(-skew), checkpoint: checkpointTime)
    }

    /// Whether a path is a relation file: `base/<db>/<n>[_vm|_init][.<segment>]` or
    /// `global/<n>...`. Only those are ever skipped; the free-space maps (not WAL-logged) and
    /// every other file are copied.
    static func isRelationFile(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        let name: Substring
        switch parts.count {
        case 3 where parts[0] == "base" && !parts[1].isEmpty && parts[1].allSatisfy(\.isASCIIDigitCharacter): name = parts[2]
        case 2 where parts[0] == "global": name = parts[1]
        default: return false
        }
        var stem = name
        if let dot = stem.firstIndex(of: ".") {
            let segment = stem[stem.index(after: dot)...]
            guard !segment.isEmpty, segment.allSatisfy(\.isASCIIDigitCharacter) else { return false }
            stem = stem[..<dot]
        }
        for fork in ["_vm", "_init"] where stem.hasSuffix(fork) { stem = stem.dropLast(fork.count) }
        return !stem.isEmpty && stem.allSatisfy(\.isASCIIDigitCharacter)
    }

    /// What a `changedSince(cutoff)` delta copies: every directory and file except the relation
    /// files the source last wrote before `cutoff` that have the same size in the copy; how many
    /// files it leaves alone, and the bytes it copies.
    static func plan(_ listing: [SourceFile], cutoff: Date, targetSize: (String) -> Int?) -> (copy: [String], unchanged: Int, bytesToCopy: Int) {
        var copy: [String] = []
        var unchanged = 0
        var bytes = 0
        for file in listing {
            if !file.isDirectory, file.modified < cutoff, isRelationFile(file.path), targetSize(file.path) == file.size {
                unchanged += 1
            } else {
                copy.append(file.path)
                if !file.isDirectory { bytes += file.size }
            }
        }
        return (copy, unchanged, bytes)
    }

    /// Bytes done from an `--info=progress2` line: `    104857600  48%   95.37MB/s    0:00:01 (xfr#3, to-chk=10/40)`.
    static func progressBytes(_ line: String) -> Int? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, words[1].hasSuffix("%"), let bytes = Int(words[0].filter { $0 != "," }) else { return nil }
        return bytes
    }

    static func utc(_ date: Date) -> String { UTCText.format(date) }
}

private extension Character {
    var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
