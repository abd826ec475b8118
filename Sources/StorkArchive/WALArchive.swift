import CArchive
import Foundation
import StorkConfig
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the archive, with the one-line reason.
public struct ArchiveError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The WAL archive on a local (or mounted) file system: `<directory>/<scope>/wal/<name><suffix>`,
/// each object the file compressed as a whole (libarchive's raw format and a filter).
///
/// A push writes a temporary file beside its final name, fsyncs it, and links it to the final
/// name, which fails when that name exists: no partial object is ever visible, and nothing is
/// ever overwritten. The directory is fsynced after. A second push of the same bytes succeeds;
/// of other bytes under the same name, it fails and the archive keeps what it had.
public struct FileWALArchive: Sendable {
    public let walDirectory: String
    public let compression: ArchiveSettings.Compression

    public init(settings: ArchiveSettings, scope: String) {
        walDirectory = settings.directory + "/" + scope + "/wal"
        compression = settings.compression
    }

    public enum PushResult: Equatable, Sendable { case stored, alreadyArchived }

    /// Archives the file at `path` (a WAL segment or history file) under its base name.
    public func push(_ path: String) throws -> PushResult {
        let name = (path as NSString).lastPathComponent
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        try FileManager.default.createDirectory(atPath: walDirectory, withIntermediateDirectories: true)
        if let existing = try find(name) {
            let stored = try Self.decompress(existing)
            if stored == data { return .alreadyArchived }
            throw ArchiveError("the archive already holds a different \(name) (\(existing)); not overwritten: another cluster or timeline may be archiving into the same place")
        }
        let final = walDirectory + "/" + name + compression.suffix
        let temporary = final + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(temporary) }
        try Self.compress(data, to: temporary, with: compression)
        try Self.fsync(path: temporary)
        guard link(temporary, final) == 0 else {
            let reason = String(cString: strerror(errno))
            // Another push of the same name won the race: the same bytes are fine.
            if errno == EEXIST, (try? Self.decompress(final)) == data { return .alreadyArchived }
            throw ArchiveError("cannot store \(final): \(reason)")
        }
        try Self.fsync(path: walDirectory)
        return .stored
    }

    /// Restores `name` to `target`: false when the archive does not hold it (nothing is left
    /// at `target` then, nor on any failure).
    public func fetch(_ name: String, to target: String) throws -> Bool {
        guard let object = try find(name) else { return false }
        let data = try Self.decompress(object)
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

    /// The stored object for `name`, whatever compression it was pushed with.
    func find(_ name: String) throws -> String? {
        guard !name.contains("/"), !name.isEmpty else { throw ArchiveError("\"\(name)\" is not a WAL file name") }
        for suffix in [".zst", ".lz4", ".gz", ""] {
            let path = walDirectory + "/" + name + suffix
            if access(path, F_OK) == 0 { return path }
        }
        return nil
    }

    static func fsync(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ArchiveError("cannot open \(path) to sync it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Glibc.fsync(fd) == 0 else { throw ArchiveError("cannot sync \(path): \(String(cString: strerror(errno)))") }
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
