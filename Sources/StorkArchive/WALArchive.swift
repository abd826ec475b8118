import CArchive
import Foundation
import StorkConfig
#if canImport(Glibc)
import Glibc
#endif

/// The WAL archive of one cluster: `<scope>/wal/<name><suffix>` in the store, each object the
/// file compressed as a whole (libarchive's raw format and a filter; the suffix names it).
///
/// A second push of the same bytes succeeds; of other bytes under the same name, it fails and
/// the archive keeps what it had (the store's `create` never replaces an object).
public struct WALArchive: Sendable {
    public let store: any ArchiveStore
    public let scope: String
    public let compression: ArchiveSettings.Compression

    public init(store: any ArchiveStore, scope: String, compression: ArchiveSettings.Compression) {
        self.store = store
        self.scope = scope
        self.compression = compression
    }

    public init(settings: ArchiveSettings, scope: String) throws {
        self.init(store: try openArchiveStore(settings), scope: scope, compression: settings.compression)
    }

    func key(_ name: String, suffix: String) -> String { scope + "/wal/" + name + suffix }

    public enum PushResult: Equatable, Sendable { case stored, alreadyArchived }

    /// Archives the file at `path` (a WAL segment or history file) under its base name.
    public func push(_ path: String) throws -> PushResult {
        let name = (path as NSString).lastPathComponent
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if let existing = try find(name) {
            if try read(existing) == data { return .alreadyArchived }
            throw ArchiveError("the archive already holds a different \(name) (\(store.describe(existing))); not overwritten: another cluster or timeline may be archiving into the same place")
        }
        let key = key(name, suffix: compression.suffix)
        let temporary = store.uploadPath(for: key, scratch: NSTemporaryDirectory() + "/stork-push-\(getpid())-\(name)")
        defer { unlink(temporary) }
        if let directory = store.localPath(key).map({ ($0 as NSString).deletingLastPathComponent }) { try makeDirectory(directory) }
        try Self.compress(data, to: temporary, with: compression)
        if try store.create(key, fromFile: temporary) { return .stored }
        // Another push of the same name won the race: the same bytes are fine.
        if try read(key) == data { return .alreadyArchived }
        throw ArchiveError("the archive already holds a different \(name) (\(store.describe(key))); not overwritten")
    }

    /// Restores `name` to `target`: false when the archive does not hold it (nothing is left
    /// at `target` then, nor on any failure).
    public func fetch(_ name: String, to target: String) throws -> Bool {
        guard let key = try find(name) else { return false }
        let data = try read(key)
        let temporary = target + ".stork-fetch"
        defer { unlink(temporary) }
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw ArchiveError("cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        guard rename(temporary, target) == 0 else {
            throw ArchiveError("cannot rename \(temporary) to \(target): \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// The stored object's key for `name`, whatever compression it was pushed with.
    func find(_ name: String) throws -> String? {
        guard !name.contains("/"), !name.isEmpty else { throw ArchiveError("\"\(name)\" is not a WAL file name") }
        return try store.firstExisting([".zst", ".lz4", ".gz", ""].map { key(name, suffix: $0) })
    }

    /// The decompressed bytes of the object `key`.
    func read(_ key: String) throws -> Data {
        if let local = store.localPath(key) { return try Self.decompress(local) }
        let temporary = NSTemporaryDirectory() + "/stork-fetch-\(getpid())-" + (key as NSString).lastPathComponent
        defer { unlink(temporary) }
        guard try store.download(key, to: temporary) else { throw ArchiveError("\(store.describe(key)) disappeared while it was read") }
        return try Self.decompress(temporary)
    }

    static func compress(_ data: Data, to path: String, with compression: ArchiveSettings.Compression) throws {
        guard let a = archive_write_new() else { throw ArchiveError("libarchive: out of memory") }
        defer { archive_write_free(a) }
        let filter: Int32 = switch compression {
        case .zstd: archive_write_add_filter_zstd(a)
        case .lz4: archive_write_add_filter_lz4(a)
        case .gzip: archive_write_add_filter_gzip(a)
        case .none: archive_write_add_filter_none(a)
        }
        guard filter == ARCHIVE_OK, archive_write_set_format_raw(a) == ARCHIVE_OK,
              archive_write_open_filename(a, path) == ARCHIVE_OK else { throw libarchiveError(a, path) }
        guard let entry = archive_entry_new() else { throw ArchiveError("libarchive: out of memory") }
        defer { archive_entry_free(entry) }
        archive_entry_set_filetype(entry, stork_AE_IFREG)
        archive_entry_set_size(entry, la_int64_t(data.count))
        guard archive_write_header(a, entry) == ARCHIVE_OK else { throw libarchiveError(a, path) }
        let written = data.withUnsafeBytes { archive_write_data(a, $0.baseAddress, data.count) }
        guard written == data.count, archive_write_close(a) == ARCHIVE_OK else { throw libarchiveError(a, path) }
    }

    static func decompress(_ path: String) throws -> Data {
        guard let a = archive_read_new() else { throw ArchiveError("libarchive: out of memory") }
        defer { archive_read_free(a) }
        // Only the filter the name promises: libarchive reads anything else as raw bytes.
        let expected: Int32 = switch (path as NSString).pathExtension {
        case "zst": ARCHIVE_FILTER_ZSTD
        case "lz4": ARCHIVE_FILTER_LZ4
        case "gz": ARCHIVE_FILTER_GZIP
        default: ARCHIVE_FILTER_NONE
        }
        archive_read_support_filter_all(a)
        archive_read_support_format_raw(a)
        guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK else { throw libarchiveError(a, path) }
        var entry: OpaquePointer?
        guard archive_read_next_header(a, &entry) == ARCHIVE_OK else { throw libarchiveError(a, path) }
        guard archive_filter_code(a, 0) == expected else {
            throw ArchiveError("\(path): not a \((path as NSString).pathExtension) object (damaged or written by something else)")
        }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw libarchiveError(a, path) }
            out.append(contentsOf: buffer[0..<n])
        }
        return out
    }

    static func libarchiveError(_ a: OpaquePointer, _ path: String) -> ArchiveError {
        ArchiveError("\(path): \(archive_error_string(a).map { String(cString: $0) } ?? "libarchive error \(archive_errno(a))")")
    }
}
