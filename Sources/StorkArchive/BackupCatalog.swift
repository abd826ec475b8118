import Foundation
import StorkConfig
import StorkPostgres

/// What `<scope>/backups/<name>/manifest.json` says of one base backup. The manifest is stored
/// last: a backup without one is unfinished and is never listed or restored.
public struct BackupManifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        /// Relative to the data directory.
        public var path: String
        public var size: Int
        /// Hex SHA-256 of the bytes stored.
        public var sha256: String
        /// Permission bits.
        public var mode: UInt32
        /// Index into `parts`.
        public var part: Int
    }
    public struct Part: Codable, Sendable, Equatable {
        /// The object's name in the backup's directory (`part-0001.tar.zst`).
        public var name: String
        /// Compressed bytes, and their hex SHA-256.
        public var size: Int
        public var sha256: String
    }

    public var format = 1
    public var name: String
    public var scope: String
    public var systemIdentifier: String
    /// `server_version_num`.
    public var postgresqlVersion: Int
    public var timeline: Int
    public var walSegmentSize: Int
    public var startLSN: String
    public var stopLSN: String
    /// The first WAL segment the backup needs (from `backup_label`).
    public var startWALFile: String
    public var startTime: Date
    public var stopTime: Date
    /// `pg_current_snapshot()` just before the stop: a transaction the backup may end after
    /// is one at or above its xmax, or one listed as in progress (for `recovery_target_xid`).
    public var stopSnapshot: String
    public var compression: String
    public var directories: [String]
    public var files: [File]
    public var parts: [Part]

    enum CodingKeys: String, CodingKey {
        case format, name, scope, timeline, compression, directories, files, parts
        case systemIdentifier = "system_identifier", postgresqlVersion = "postgresql_version", walSegmentSize = "wal_segment_size"
        case startLSN = "start_lsn", stopLSN = "stop_lsn", startWALFile = "start_wal_file", startTime = "start_time"
        case stopTime = "stop_time", stopSnapshot = "stop_snapshot"
    }

    /// Bytes of the data directory the backup holds.
    public var bytes: Int { files.reduce(0) { $0 + $1.size } }

    /// Whether recovery from this backup can stop before transaction `xid` commits: the
    /// transaction was not yet committed when the backup stopped.
    public func endsBefore(xid: UInt64) -> Bool {
        let parts = stopSnapshot.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let xmax = UInt64(parts[1]) else { return false }
        let inProgress = parts[2].split(separator: ",").compactMap { UInt64($0) }
        return xid >= xmax || inProgress.contains(xid)
    }

    /// ISO 8601 with milliseconds, UTC.
    nonisolated(unsafe) static let timestamp: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(BackupManifest.timestamp.string(from: date))
        }
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = BackupManifest.timestamp.date(from: text) ?? ISO8601DateFormatter().date(from: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 time: \(text)"))
            }
            return date
        }
        return d
    }()

    public func encoded() throws -> Data { try Self.encoder.encode(self) }

    public static func decode(_ data: Data, from place: String) throws -> BackupManifest {
        do { return try decoder.decode(BackupManifest.self, from: data) } catch let error as DecodingError {
            let reason: String
            switch error {
            case .keyNotFound(let key, _): reason = "no \(key.stringValue)"
            case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
                reason = c.codingPath.isEmpty ? "not JSON" : "bad \(c.codingPath.map(\.stringValue).joined(separator: "."))"
            @unknown default: reason = "\(error)"
            }
            throw ArchiveError("\(place) is not a Stork backup manifest (\(reason))")
        }
    }
}

/// The base backups of one cluster in the archive: `<scope>/backups/<name>/part-NNNN.tar<suffix>`
/// and `<scope>/backups/<name>/manifest.json`, beside the WAL in `<scope>/wal/`.
public struct BackupCatalog: Sendable {
    public let store: any ArchiveStore
    public let scope: String

    public init(store: any ArchiveStore, scope: String) {
        self.store = store
        self.scope = scope
    }

    func directory(_ name: String) -> String { scope + "/backups/" + name + "/" }
    func manifestKey(_ name: String) -> String { directory(name) + "manifest.json" }
    func partKey(_ backup: String, _ part: String) -> String { directory(backup) + part }

    /// The finished backups, oldest first: by stop time, then stop LSN (two backups may stop
    /// in the same millisecond).
    public func list() throws -> [BackupManifest] {
        let keys = try store.list(prefix: scope + "/backups/").map(\.key).filter { backupName(ofManifestKey: $0) != nil }
        return try keys.map { try manifest(key: $0) }.sorted {
            ($0.stopTime, LSN.parse($0.stopLSN) ?? 0, $0.name) < ($1.stopTime, LSN.parse($1.stopLSN) ?? 0, $1.name)
        }
    }

    public func manifest(named name: String) throws -> BackupManifest {
        guard Self.isPlainName(name) else { throw ArchiveError("\"\(name)\" is not a backup name") }
        guard try store.exists(manifestKey(name)) else {
            throw ArchiveError("the archive holds no finished backup \(name) of \(scope) (stork backup list shows the ones there are)")
        }
        return try manifest(key: manifestKey(name))
    }

    /// The one place a manifest is read. Its name must be the directory it was listed in, and
    /// each part a plain name in that directory: every path the catalog builds (to restore or
    /// delete) comes from the store's own listing, never from what a manifest says.
    func manifest(key: String) throws -> BackupManifest {
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let temporary = scratch.file("manifest.json")
        guard try store.download(key, to: temporary), let data = FileManager.default.contents(atPath: temporary) else {
            throw ArchiveError("\(store.describe(key)) disappeared while it was read")
        }
        let manifest = try BackupManifest.decode(data, from: store.describe(key))
        let refuse = { (what: String) in
            ArchiveError("\(store.describe(key)) \(what): refused; remove it (stork did not write it)")
        }
        guard manifest.name == backupName(ofManifestKey: key) else { throw refuse("names backup \"\(manifest.name)\", not its directory") }
        if let part = manifest.parts.first(where: { !Self.isPartName($0.name) }) {
            throw refuse("names a part \"\(part.name)\"")
        }
        return manifest
    }

    /// `<name>` of `<scope>/backups/<name>/manifest.json`; nil for any other key.
    func backupName(ofManifestKey key: String) -> String? {
        let prefix = scope + "/backups/", suffix = "/manifest.json"
        guard key.hasPrefix(prefix), key.hasSuffix(suffix), key.count > prefix.count + suffix.count else { return nil }
        let name = String(key.dropFirst(prefix.count).dropLast(suffix.count))
        return Self.isPlainName(name) ? name : nil
    }

    /// `part-…`, one path component.
    static func isPartName(_ name: String) -> Bool { isPlainName(name) && name.hasPrefix("part-") }

    /// One path component: no `/`, not empty, not `.` or `..`.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("/") && name != "." && name != ".." && !name.contains("\0")
    }

    /// Keeps the newest `retain` backups and removes the others, then the WAL no kept backup
    /// needs (segments before the oldest kept backup's first one; history files stay). Each
    /// backup's manifest goes first, so a backup half removed is never listed. Returns the
    /// names of the removed backups and the number of WAL files removed.
    public func delete(retain: Int) throws -> (backups: [String], walFiles: Int) {
        precondition(retain >= 1)
        // Another cluster's backups under this prefix are neither counted nor removed.
        let all = try list().filter { $0.scope == scope }
        guard all.count > retain else { return ([], 0) }
        let removed = all.dropLast(retain)
        for backup in removed {
            try store.delete(manifestKey(backup.name))
            for part in backup.parts { try store.delete(partKey(backup.name, part.name)) }
        }
        let oldestKept = all[all.count - retain]
        guard let keepFrom = Self.segmentNumber(oldestKept.startWALFile) else { return (removed.map(\.name), 0) }
        var walFiles = 0
        for object in try store.list(prefix: scope + "/wal/") {
            let name = (object.key as NSString).lastPathComponent
            guard let number = Self.segmentNumber(name), number < keepFrom else { continue }
            try store.delete(object.key)
            walFiles += 1
        }
        return (removed.map(\.name), walFiles)
    }

    /// The log and segment number of a WAL segment's (or `.partial`, `.backup` file's) name,
    /// ignoring the timeline; nil for history files and other names.
    static func segmentNumber(_ name: String) -> UInt64? {
        let hex = name.prefix(24)
        guard hex.count == 24, hex.allSatisfy(\.isHexDigit), !name.dropFirst(24).hasPrefix(".history") else { return nil }
        return UInt64(hex.dropFirst(8), radix: 16)
    }

    /// What a recovery target needs: the newest backup that ended before it.
    public enum Target: Sendable, Equatable {
        case newest
        case named(String)
        case time(Date)
        case lsn(Int)
        case xid(UInt64)
    }

    /// The backup to restore for `target`; an error naming the oldest backup when the target
    /// is older than every backup. Never one of another cluster, even under this scope's
    /// prefix (copied there by hand): its WAL is not in this archive.
    public func choose(_ target: Target) throws -> BackupManifest {
        if case .named(let name) = target {
            let named = try manifest(named: name)
            guard named.scope == scope else { throw foreign(named) }
            return named
        }
        // Another cluster's backup copied under this prefix is passed over, not chosen.
        let all = try list()
        let own = all.filter { $0.scope == scope }
        if own.isEmpty, let other = all.last { throw foreign(other) }
        return try choose(target, from: own)
    }

    private func foreign(_ backup: BackupManifest) -> ArchiveError {
        ArchiveError("backup \(backup.name) under \(scope)/backups/ was taken of cluster \(backup.scope) (system identifier \(backup.systemIdentifier)), not \(scope): refusing to restore it; name \(backup.scope) as the scope to restore from if that cluster is the one wanted")
    }

    private func choose(_ target: Target, from all: [BackupManifest]) throws -> BackupManifest {
        guard let newest = all.last else {
            throw ArchiveError("the archive holds no finished backup of \(scope) (take one with stork backup)")
        }
        let fitting: BackupManifest?
        switch target {
        case .newest, .named: fitting = newest
        case .time(let time): fitting = all.last { $0.stopTime < time }
        case .lsn(let lsn): fitting = all.last { (LSN.parse($0.stopLSN) ?? .max) <= lsn }
        case .xid(let xid): fitting = all.last { $0.endsBefore(xid: xid) }
        }
        guard let fitting else {
            let oldest = all[0]
            throw ArchiveError("the recovery target is older than every backup of \(scope): the oldest, \(oldest.name), ended at \(DateText.format(oldest.stopTime, "yyyy-MM-dd HH:mm:ss 'UTC'")) (LSN \(oldest.stopLSN))")
        }
        return fitting
    }
}
