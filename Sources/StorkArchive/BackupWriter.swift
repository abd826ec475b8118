import Crypto
import Foundation
import Logging
import StorkConfig
import StorkPostgres
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Takes a base backup of a running primary into the archive: `pg_backup_start` in one
/// session, the data directory read straight from disk into compressed tar parts (several at
/// once), `pg_backup_stop`, a wait until the WAL the backup needs is archived, then the
/// manifest, stored last.
public struct BackupWriter: Sendable {
    public let catalog: BackupCatalog
    public let compression: ArchiveSettings.Compression
    public let concurrency: Int
    /// Bytes of data files per part: parts are compressed, stored and restored in parallel.
    public var partSize = 128 << 20
    /// Seconds to wait for the backup's last WAL segment to reach the archive.
    public var walWaitTimeout: Double = 300

    public init(catalog: BackupCatalog, compression: ArchiveSettings.Compression, concurrency: Int) {
        self.catalog = catalog
        self.compression = compression
        self.concurrency = concurrency
    }

    public func take(node: PostgresNode, logger: Logger, progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }) async throws -> BackupManifest {
        // pg_backup_stop waits for the last segment to be archived: no statement timeout.
        let session = try await node.localConnection(statementTimeout: 0)
        defer { Task { await session.close() } }
        let info = try await session.query("""
            SELECT pg_is_in_recovery()::text, current_setting('archive_mode'), current_setting('server_version_num'),
                   (SELECT system_identifier::text FROM pg_control_system()),
                   (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
                   (SELECT count(*)::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))
            """).first ?? []
        func column(_ i: Int) -> String { (i < info.count ? info[i] : nil) ?? "" }
        guard column(0) == "false" else { throw ArchiveError("\(node.memberName) is a replica: stork backup runs on the primary") }
        guard column(1) != "off" else {
            throw ArchiveError("archive_mode is off on \(node.memberName): a base backup is of no use without its WAL in the archive")
        }
        guard column(5) == "0" else { throw ArchiveError("\(node.memberName) has tablespaces, which stork backup does not copy yet") }
        guard let version = Int(column(2)), let segmentSize = Int(column(4)) else { throw ArchiveError("cannot read the server's settings") }
        let systemIdentifier = column(3)

        let name = try newBackupName()
        let start = try await session.query("""
            SELECT \(OnlineBackupSQL.start(serverVersion: version))::text, (SELECT timeline_id FROM pg_control_checkpoint())::text
            """, params: ["stork backup \(name)"]).first ?? []
        let startTime = Date()
        var stored: [String] = []
        var stopped = false
        do {
            let dataDir = node.settings.dataDir
            let (directories, files) = try Self.walk(dataDir)
            let total = files.reduce(0) { $0 + $1.size }
            let plan = Self.plan(files, partSize: partSize)
            logger.info("backup \(name): \(files.count) files, \(total >> 20) MiB, in \(plan.count) parts")
            let done = Counter()
            let scratchDirectory = try ScratchDirectory()
            defer { scratchDirectory.remove() }
            let scratch = scratchDirectory.path
            let catalog = catalog, compression = compression
            let written: [(part: BackupManifest.Part, files: [BackupManifest.File])] = try await onOwnThread {
                let results = ResultSlots<(BackupManifest.Part, [BackupManifest.File])>(plan.count)
                try inParallel(plan.count, width: concurrency) { index in
                    let partName = String(format: "part-%04d.tar", index + 1) + compression.suffix
                    let key = catalog.partKey(name, partName)
                    let output = catalog.store.uploadPath(for: key, scratch: scratch + "/" + partName)
                    defer { unlink(output) }
                    try Self.ensureParent(of: key, in: catalog.store)
                    let entries = try Self.writePart(plan[index].map { (dataDir + "/" + $0.path, $0.path, $0.mode) }, index: index,
                                                     to: output, compression: compression) { progress(done.add($0), total) }
                    guard try catalog.store.create(key, fromFile: output) else { throw ArchiveError("\(catalog.store.describe(key)) exists already") }
                    results.set(index, (BackupManifest.Part(name: partName, size: fileSize(output), sha256: try sha256(file: output)), entries))
                }
                return results.values.map { (part: $0.0, files: $0.1) }
            }
            stored += written.map { catalog.partKey(name, $0.part.name) }

            let snapshot = try await session.query("SELECT pg_current_snapshot()::text").first?.first ?? nil
            let stop = try await session.query("SELECT labelfile, spcmapfile, lsn::text FROM \(OnlineBackupSQL.stop(serverVersion: version))").first ?? []
            stopped = true
            let stopTime = Date()
            guard let label = stop.first ?? nil, let stopLSN = (stop.count > 2 ? stop[2] : nil) else {
                throw ArchiveError("pg_backup_stop returned no backup_label")
            }
            let startFile = Self.startWALFile(label) ?? ""
            // The label goes in a last part of its own: it exists only now.
            var labelFiles = [("backup_label", label)]
            if let map = stop.count > 1 ? stop[1] : nil, !map.isEmpty { labelFiles.append(("tablespace_map", map)) }
            let labelPart = written.count
            let labelPartName = String(format: "part-%04d.tar", labelPart + 1) + compression.suffix
            let labelKey = catalog.partKey(name, labelPartName)
            let labelOutput = catalog.store.uploadPath(for: labelKey, scratch: scratch + "/label")
            defer { unlink(labelOutput) }
            let labelDirectory = scratch + "/labelfiles"
            try makeDirectory(labelDirectory)
            for (file, text) in labelFiles { try Data(text.utf8).write(to: URL(fileURLWithPath: labelDirectory + "/" + file)) }
            let labelEntries = try Self.writePart(labelFiles.map { (labelDirectory + "/" + $0.0, $0.0, UInt32(0o600)) }, index: labelPart,
                                                  to: labelOutput, compression: compression) { _ in }
            guard try catalog.store.create(labelKey, fromFile: labelOutput) else { throw ArchiveError("\(catalog.store.describe(labelKey)) exists already") }
            stored.append(labelKey)

            try await waitForWAL(from: startFile, through: stopLSN, timeline: Int(start.count > 1 ? start[1] ?? "" : "") ?? 1,
                                 segmentSize: segmentSize, session: session)

            let manifest = BackupManifest(
                name: name, scope: catalog.scope, systemIdentifier: systemIdentifier, postgresqlVersion: version,
                timeline: Int(start.count > 1 ? start[1] ?? "" : "") ?? 1, walSegmentSize: segmentSize,
                startLSN: (start.first ?? nil) ?? "", stopLSN: stopLSN, startWALFile: startFile,
                startTime: startTime, stopTime: stopTime, stopSnapshot: snapshot ?? "", compression: compression.rawValue,
                directories: directories, files: (written.flatMap(\.files) + labelEntries).sorted { $0.path < $1.path },
                parts: written.map(\.part) + [BackupManifest.Part(name: labelPartName, size: fileSize(labelOutput), sha256: try sha256(file: labelOutput))])
            let manifestFile = scratch + "/manifest.json"
            try manifest.encoded().write(to: URL(fileURLWithPath: manifestFile))
            guard try catalog.store.create(catalog.manifestKey(name), fromFile: manifestFile) else {
                throw ArchiveError("\(catalog.store.describe(catalog.manifestKey(name))) exists already")
            }
            return manifest
        } catch {
            if !stopped { _ = try? await session.query("SELECT * FROM \(OnlineBackupSQL.stop(serverVersion: version))") }
            for key in stored { try? catalog.store.delete(key) }
            throw error
        }
    }

    /// `YYYYMMDDTHHMMSSZ`, or with `-2`, `-3`, ... when the archive has that name already.
    func newBackupName() throws -> String {
        let base = DateText.format(Date(), "yyyyMMdd'T'HHmmss'Z'")
        var name = base
        var n = 1
        while try !catalog.store.list(prefix: catalog.directory(name)).isEmpty {
            n += 1
            name = "\(base)-\(n)"
        }
        return name
    }

    /// Waits until every WAL segment from the backup's first through the one holding its
    /// stop LSN is in the archive (pg_backup_stop has switched to a new segment).
    func waitForWAL(from startFile: String, through stopLSN: String, timeline: Int, segmentSize: Int, session: Connection) async throws {
        guard let stop = LSN.parse(stopLSN) else { return }
        // The stop LSN at a segment's very start belongs to the segment before it.
        let names = LSN.segmentFiles(from: startFile, through: stop - 1, segmentSize: segmentSize)
        let wal = WALArchive(store: catalog.store, scope: catalog.scope, compression: compression)
        let deadline = Date().addingTimeInterval(walWaitTimeout)
        for name in names {
            while try wal.find(name) == nil {
                guard Date() < deadline else {
                    let archiver = try? await session.query("SELECT coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver").first
                    let failed = (archiver?.first ?? nil).flatMap { $0.isEmpty ? nil : $0 }.map { "; the archiver last failed on \($0)" } ?? ""
                    throw ArchiveError("WAL segment \(name), which the backup needs, did not reach the archive within \(Int(walWaitTimeout)) s\(failed): is archive_command stork wal-push with this archive?")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    static func startWALFile(_ label: String) -> String? {
        // START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
        guard let line = label.split(separator: "\n").first(where: { $0.hasPrefix("START WAL LOCATION:") }),
              let open = line.range(of: "(file "), let close = line.lastIndex(of: ")") else { return nil }
        return String(line[open.upperBound..<close])
    }

    static func ensureParent(of key: String, in store: any ArchiveStore) throws {
        if let path = store.localPath(key) { try makeDirectory((path as NSString).deletingLastPathComponent) }
    }

    struct PlannedFile: Sendable {
        var path: String
        var size: Int
        var mode: UInt32
    }

    /// The directories and regular files of a data directory, less what a backup leaves out.
    /// A symbolic link is refused, but `pg_wal` (whose contents are left out anyway).
    static func walk(_ dataDir: String) throws -> (directories: [String], files: [PlannedFile]) {
        guard let walker = FileManager.default.enumerator(atPath: dataDir) else { throw ArchiveError("cannot read \(dataDir)") }
        var directories: [String] = [], files: [PlannedFile] = []
        while let relative = walker.nextObject() as? String {
            var st = stat()
            guard lstat(dataDir + "/" + relative, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                if !BackupExclusions.excludes(relative) { directories.append(relative) } else { walker.skipDescendants() }
            case S_IFREG:
                if !BackupExclusions.excludes(relative) { files.append(PlannedFile(path: relative, size: Int(st.st_size), mode: UInt32(st.st_mode) & 0o777)) }
            case S_IFLNK where relative == "pg_wal":
                directories.append(relative)
            case S_IFLNK:
                throw ArchiveError("\(dataDir)/\(relative) is a symbolic link, which stork backup does not follow (tablespaces are not supported yet)")
            default:
                continue
            }
        }
        return (directories.sorted(), files)
    }

    /// Files grouped into parts of about `partSize` bytes, in path order.
    static func plan(_ files: [PlannedFile], partSize: Int) -> [[PlannedFile]] {
        var parts: [[PlannedFile]] = [[]]
        var size = 0
        for file in files.sorted(by: { $0.path < $1.path }) {
            if size > 0, size + file.size > partSize {
                parts.append([])
                size = 0
            }
            parts[parts.count - 1].append(file)
            size += file.size
        }
        return parts
    }

    /// Writes `files` (absolute path, path in the backup, mode) as one compressed tar at
    /// `output`. A file is stored with the size it has when opened: one that shrinks while it
    /// is read is padded with zeros, one that grows is cut there, one that vanished is left
    /// out (a running server does all three; WAL replay from the backup's start repairs them).
    static func writePart(_ files: [(source: String, path: String, mode: UInt32)], index: Int, to output: String,
                          compression: ArchiveSettings.Compression, progress: (Int) -> Void) throws -> [BackupManifest.File] {
        let writer = try ArchiveWriter(path: output, format: .tar, compression: compression)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var out: [BackupManifest.File] = []
        for file in files {
            let fd = open(file.source, O_RDONLY | O_CLOEXEC)
            if fd < 0 && errno == ENOENT { continue }
            guard fd >= 0 else { throw ArchiveError("cannot read \(file.source): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var st = stat()
            fstat(fd, &st)
            let size = Int(st.st_size)
            try writer.beginFile(path: file.path, mode: file.mode, size: size, modified: Int(st.st_mtim.tv_sec))
            var hash = SHA256()
            var remaining = size
            var atEnd = false
            while remaining > 0 {
                let want = min(remaining, buffer.count)
                var n = 0
                if !atEnd {
                    n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, want) }
                    guard n >= 0 else { throw ArchiveError("cannot read \(file.source): \(String(cString: strerror(errno)))") }
                }
                if n == 0 {
                    atEnd = true
                    n = want
                    for i in 0..<n { buffer[i] = 0 }
                }
                try buffer.withUnsafeBytes { raw in
                    let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                    hash.update(bufferPointer: chunk)
                    try writer.write(chunk)
                }
                remaining -= n
                progress(n)
            }
            out.append(BackupManifest.File(path: file.path, size: size, sha256: hex(hash.finalize()), mode: file.mode, part: index))
        }
        try writer.close()
        return out
    }
}

func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    digest.map { String(format: "%02x", $0) }.joined()
}

/// Hex SHA-256 of a file's bytes.
func sha256(file path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var hash = SHA256()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n >= 0 else { throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))") }
        if n == 0 { break }
        buffer.withUnsafeBytes { hash.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }
    return hex(hash.finalize())
}

func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

/// A running total shared by threads.
final class Counter: Sendable {
    let value = Mutex(0)
    /// Adds `n`; returns the new total.
    func add(_ n: Int) -> Int { value.withLock { $0 += n; return $0 } }
}

/// One result per index, filled by threads.
final class ResultSlots<T: Sendable>: Sendable {
    let slots: Mutex<[T?]>
    init(_ count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }
    func set(_ index: Int, _ value: T) { slots.withLock { $0[index] = value } }
    var values: [T] { slots.withLock { $0.compactMap { $0 } } }
}
