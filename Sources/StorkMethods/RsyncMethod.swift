import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkProcess
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

    /// Left out of the copy and removed from the target. The copy's `backup_label` is kept
    /// from deletion: from its first byte the copy holds a placeholder there (see `run`).
    static let excluded = BackupExclusions.rsyncPatterns
    static let filters = ["--filter=P /backup_label"] + excluded.map { "--exclude=\($0)" }

    /// The copy's `backup_label` while rsync writes into it: PostgreSQL refuses to start on it,
    /// and the next attempt knows the copy's files and `pg_control` cannot be trusted.
    static let unfinishedLabel = "stork: an rsync copy into this directory did not finish\n"

    /// How many rsync processes copy side by side (`streams`): one rsync stream is bound by
    /// one process's CPU on each side, and a base backup is a few large files.
    static let defaultStreams = 2

    /// rsync's arguments for comparing every file by checksum over a copy of the same cluster
    /// (files removed on the source are removed from the target).
    static func checksumArguments(from: String, target: String, section: [String: JSONValue]) -> [String] {
        // --keep-dirlinks: a pg_wal that is a link to another directory stays a link.
        ["--archive", "--keep-dirlinks", "--delete", "--delete-excluded", progressOption, "--checksum"]
            + filters + sourceOptions(section, from: from) + [from, target + "/"]
    }

    /// One stream's copy of the files listed in `copyList`, each whole, time stamps and sizes
    /// unread. `inPlace` for an empty target: no temporary file and rename per file. No
    /// transfer checksum (`--checksum-choice=none`): the file is sent whole over TCP (or
    /// ssh), and the checksum cost about a fifth of the copy's time here; `options` in the
    /// section come later and may choose one again.
    static func copyArguments(from: String, target: String, copyList: String, inPlace: Bool, section: [String: JSONValue]) -> [String] {
        ["--archive", "--keep-dirlinks", "--whole-file", "--ignore-times", "--checksum-choice=none"] + (inPlace ? ["--inplace"] : [])
            + [progressOption, "--files-from=\(copyList)"] + sourceOptions(section, from: from) + [from, target + "/"]
    }

    /// The files to copy shared among `count` streams by size, largest first to the stream
    /// with the fewest bytes; every stream gets every directory (each creates those its files
    /// need, with the source's attributes).
    static func share(_ files: [SourceFile], among count: Int) -> [[String]] {
        let directories = files.filter(\.isDirectory).map(\.path)
        var shares = Array(repeating: (bytes: 0, paths: [String]()), count: max(1, count))
        for file in files.filter({ !$0.isDirectory }).sorted(by: { $0.size > $1.size }) {
            let least = shares.indices.min { shares[$0].bytes < shares[$1].bytes }!
            shares[least].paths.append(file.path)
            shares[least].bytes += file.size
        }
        // A stream without files is not started; the first always is (it may have only directories).
        return shares.enumerated().filter { $0.offset == 0 || !$0.element.paths.isEmpty }.map { directories + $0.element.paths }
    }

    static let progressOption = "--info=progress2"

    /// What concerns reaching the source: for an rsync daemon, TCP_NODELAY (each connection
    /// otherwise waits out two 40 ms delayed acknowledgements of small writes, measured here);
    /// then the section's `password_file` and `options`.
    static func sourceOptions(_ section: [String: JSONValue], from: String) -> [String] {
        var arguments = from.hasPrefix("rsync://") || from.contains("::") ? ["--sockopts=TCP_NODELAY"] : []
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

    func preflight(_ attempt: MethodAttempt, node: PostgresNode) async throws {
        guard let source = attempt.source else { return }
        try await Self.requireDataDirectory(Self.directory(sourceURL(source, scope: attempt.scope)), section: attempt.spec.section,
                                            node: node, timeout: attempt.spec.timeout)
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
                SELECT \(OnlineBackupSQL.start(serverVersion: session.serverVersion))::text, (SELECT timeline_id FROM pg_control_checkpoint())::text
                """, params: ["stork rsync for \(node.memberName)"])
            backupStarted = true

            let delta = RsyncDelta.choose(
                hasData: hasData, target: control, targetHasBackupLabel: FileManager.default.fileExists(atPath: attempt.target + "/backup_label"),
                sourceTimeline: Int((start.first?[1] ?? nil) ?? ""), backupStart: LSN.parse((start.first?[0] ?? nil) ?? ""),
                section: attempt.spec.section)
            // From here until pg_backup_stop's label replaces it, the copy is an unfinished
            // backup: a failed or killed attempt leaves a copy whose pg_control may already be
            // the source's while other files are old, so the next one must not trust it.
            try node.writeOwnedFile(attempt.target + "/backup_label", contents: Self.unfinishedLabel)
            let section = attempt.spec.section
            let streams = section["streams"]?.intValue ?? Self.defaultStreams
            switch delta {
            case .checksum(let reason):
                node.logger.info("rsync from \(from) (delta: files compared by checksum, \(reason))")
                try await Self.rsync(Self.checksumArguments(from: fromDirectory, target: attempt.target, section: section),
                                     timeout: attempt.spec.timeout, node: node) { done in attempt.reportProgress(done, nil) }
            case .full, .changedSince:
                // After pg_backup_start: every file that exists at the backup's start is listed
                // (later ones come from the WAL), and its checkpoint has written every earlier
                // change to the source's files, so their modification times tell what changed before it.
                let listing = try await Self.list(fromDirectory, section: section, node: node, timeout: attempt.spec.timeout)
                let files = listing.filter { !$0.isDirectory }.count
                let toCopy: [SourceFile]
                if case .changedSince(let cutoff, let checkpoint) = delta {
                    let plan = RsyncDelta.plan(listing, cutoff: cutoff) { PostgresNode.fileSize(attempt.target + "/" + $0) }
                    toCopy = plan.copy
                    let summary = "delta: \(files - plan.unchanged) of \(files) files, written since \(DateText.format(cutoff)) UTC "
                        + "(the copy's latest checkpoint began \(DateText.format(checkpoint)), less max_clock_skew), \(plan.bytesToCopy >> 20) MiB to copy"
                    node.logger.info("rsync from \(from) (\(summary))")
                } else {
                    toCopy = listing
                    node.logger.info("rsync from \(from) (full copy: \(files) files, \(listing.reduce(0) { $0 + $1.size } >> 20) MiB)")
                }
                // What the source does not have goes first (in a full copy: empty files at most).
                for path in RsyncDelta.extraneous(in: attempt.target, listing: listing) {
                    do { try FileManager.default.removeItem(atPath: attempt.target + "/" + path) } catch {
                        throw PostgresError("cannot remove \(attempt.target)/\(path), which the source does not have: \(error.localizedDescription)")
                    }
                }
                try await copy(toCopy, streams: streams, from: fromDirectory, inPlace: delta == .full, attempt: attempt, node: node)
            }
            let stop = try await session.query("SELECT labelfile, spcmapfile, lsn::text FROM \(OnlineBackupSQL.stop(serverVersion: session.serverVersion))")
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
            if backupStarted { _ = try? await session.query("SELECT * FROM \(OnlineBackupSQL.stop(serverVersion: session.serverVersion))") }
            return .failed("\(error)")
        }
    }

    /// `files` copied by `streams` rsyncs side by side; their progress meters are added up.
    func copy(_ files: [SourceFile], streams: Int, from: String, inPlace: Bool, attempt: MethodAttempt, node: PostgresNode) async throws {
        let total = files.reduce(0) { $0 + $1.size }
        attempt.reportProgress(0, total)
        let shares = Self.share(files, among: streams)
        var lists: [String] = []
        defer { for list in lists { unlink(list) } }
        for share in shares {
            lists.append(try node.writeTemporaryFile(prefix: "stork-rsync-files", contents: share.map { $0 + "\n" }.joined()))
        }
        // Each stream's bytes done; a class, so that the streams' tasks share one.
        final class Meters: Sendable { let done: Mutex<[Int]>; init(_ count: Int) { done = Mutex(Array(repeating: 0, count: count)) } }
        let meters = Meters(lists.count)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, list) in lists.enumerated() {
                let arguments = Self.copyArguments(from: from, target: attempt.target, copyList: list, inPlace: inPlace, section: attempt.spec.section)
                group.addTask { [report = attempt.reportProgress, timeout = attempt.spec.timeout] in
                    try await Self.rsync(arguments, timeout: timeout, node: node) { bytes in
                        let sum = meters.done.withLock { $0[index] = bytes; return $0.reduce(0, +) }
                        report(min(sum, total), total)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// One rsync run with the attempt's timeout; `progress` gets the bytes done from its
    /// `--info=progress2` meter. Exit status 24 (files vanished on the source while it was
    /// copied, as a live server does) is a success.
    static func rsync(_ arguments: [String], timeout: Double?, node: PostgresNode,
                      progress: (@Sendable (Int) -> Void)? = nil) async throws {
        var command = Command("rsync", arguments)
        command.timeout = timeout
        if let progress, arguments.contains(progressOption) {
            command.lineHandler = { line in if let done = RsyncDelta.progressBytes(line) { progress(done) } }
        }
        let result = try await node.run(command)
        if result.timedOut { throw PostgresError("rsync did not finish within \(Int(timeout ?? 0)) s and was stopped") }
        guard result.exitStatus == 0 || result.exitStatus == 24 else { throw PostgresNode.failure("rsync", result) }
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
        // A source whose pg_wal is a link (initdb --waldir) lists none: the copy gets its own.
        try node.ensureDirectory(attempt.target + "/pg_wal")
        guard !segments.isEmpty else { return }
        let list = attempt.target + "/pg_wal/.stork-wal-list"
        // Paths relative to the source's root (an rsync daemon reports files listed relative
        // to a subdirectory of a module as vanished).
        try node.writeOwnedFile(list, contents: segments.map { "pg_wal/" + $0 + "\n" }.joined())
        defer { unlink(list) }
        var wal = Command("rsync", ["--archive", "--whole-file", "--checksum-choice=none", "--files-from=\(list)"]
                                   + Self.sourceOptions(attempt.spec.section, from: from) + [from, attempt.target + "/"])
        wal.timeout = attempt.spec.timeout
        let copied = try await node.run(wal)
        if !copied.succeeded {
            node.logger.warning("could not copy the backup's WAL (\(segments.count) segments); it will come by streaming: \(PostgresNode.failure("rsync", copied).message)")
        }
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
            return .checksum("the copy never finished replaying the backup it came from, or an earlier rsync into it did not finish")
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
    static func plan(_ listing: [SourceFile], cutoff: Date, targetSize: (String) -> Int?) -> (copy: [SourceFile], unchanged: Int, bytesToCopy: Int) {
        var copy: [SourceFile] = []
        var unchanged = 0
        var bytes = 0
        for file in listing {
            if !file.isDirectory, file.modified < cutoff, isRelationFile(file.path), targetSize(file.path) == file.size {
                unchanged += 1
            } else {
                copy.append(file)
                if !file.isDirectory { bytes += file.size }
            }
        }
        return (copy, unchanged, bytes)
    }

    /// What the copy holds that the source's `listing` lacks (or has as another type), as
    /// `rsync --delete --delete-excluded` would remove it, found without listing the source a
    /// second time: paths relative to `target`, a directory once for all its contents. Kept:
    /// the copy's `backup_label` (Stork's placeholder) and `pg_wal` itself, a directory or a
    /// link to one (its contents are left out of every copy, so they all go).
    static func extraneous(in target: String, listing: [SourceFile]) -> [String] {
        var sourceKinds: [String: Bool] = [:]
        for file in listing { sourceKinds[file.path] = file.isDirectory }
        var out: [String] = []
        func walk(_ relative: String) {
            let path = relative.isEmpty ? target : target + "/" + relative
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() {
                let child = relative.isEmpty ? name : relative + "/" + name
                var st = stat()
                guard lstat(target + "/" + child, &st) == 0 else { continue }
                let kind = st.st_mode & S_IFMT
                if child == "backup_label" && kind == S_IFREG { continue }
                if child == "pg_wal" && (kind == S_IFDIR || (kind == S_IFLNK && isDirectory(target + "/pg_wal"))) {
                    out += ((try? FileManager.default.contentsOfDirectory(atPath: target + "/pg_wal")) ?? []).sorted().map { "pg_wal/" + $0 }
                    continue
                }
                switch sourceKinds[child] {
                case true? where kind == S_IFDIR: walk(child)
                case false? where kind == S_IFREG: continue
                default: out.append(child)
                }
            }
        }
        walk("")
        return out
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Bytes done from an `--info=progress2` line: `    104857600  48%   95.37MB/s    0:00:01 (xfr#3, to-chk=10/40)`.
    static func progressBytes(_ line: String) -> Int? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, words[1].hasSuffix("%"), let bytes = Int(words[0].filter { $0 != "," }) else { return nil }
        return bytes
    }
}

private extension Character {
    var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
