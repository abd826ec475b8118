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
    /// No WAL file is larger (PostgreSQL's largest `wal_segment_size`): an object that
    /// decompresses to more is damaged or no WAL, and is refused rather than filling the disk.
    var maximumFileSize = 1 << 30

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
        // A directory store links the file beside its object; the others upload it from scratch.
        let scratch = store.localPath(key) == nil ? try ScratchDirectory() : nil
        defer { scratch?.remove() }
        let temporary = store.uploadPath(for: key, scratch: scratch?.file(name) ?? "")
        defer { unlink(temporary) }
        if let directory = store.localPath(key).map({ ($0 as NSString).deletingLastPathComponent }) { try makeDirectory(directory) }
        try Self.compress(data, to: temporary, with: compression)
        if try store.create(key, fromFile: temporary) { return .stored }
        // Another push of the same name won the race: the same bytes are fine.
        if try read(key) == data { return .alreadyArchived }
        throw ArchiveError("the archive already holds a different \(name) (\(store.describe(key))); not overwritten")
    }

    /// Restores `name` to `target`: false when the archive does not hold it (nothing is left
    /// at `target` then, nor on any failure). Decompressed as it is read, never whole in memory.
    public func fetch(_ name: String, to target: String) throws -> Bool {
        guard let key = try find(name) else { return false }
        let temporary = target + ".stork-fetch"
        defer { unlink(temporary) }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ArchiveError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try withLocalCopy(key) { path in
            try decompress(path) { chunk in
                var offset = 0
                while offset < chunk.count {
                    let n = write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                    guard n > 0 else { throw ArchiveError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
                    offset += n
                }
            }
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
        var out = Data()
        try withLocalCopy(key) { path in try decompress(path) { out.append(contentsOf: $0) } }
        return out
    }

    /// `body` with a local path holding the object `key`: the store's own, or a download into a
    /// private scratch directory.
    func withLocalCopy(_ key: String, _ body: (String) throws -> Void) throws {
        if let local = store.localPath(key) { return try body(local) }
        let scratch = try ScratchDirectory()
        defer { scratch.remove() }
        let temporary = scratch.file((key as NSString).lastPathComponent)
        guard try store.download(key, to: temporary) else { throw ArchiveError("\(store.describe(key)) disappeared while it was read") }
        try body(temporary)
    }

    static func compress(_ data: Data, to path: String, with compression: ArchiveSettings.Compression) throws {
        let writer = try ArchiveWriter(path: path, format: .raw, compression: compression)
        try writer.beginFile(path: nil, size: data.count)
        try data.withUnsafeBytes { try writer.write($0) }
        try writer.close()
    }

    /// The object at `path` decompressed, in chunks of 64 KiB, to `each`.
    func decompress(_ path: String, each: (UnsafeRawBufferPointer) throws -> Void) throws {
        let reader = try ArchiveReader(path: path, format: .raw, blockSize: 1 << 16, label: path)
        guard try reader.next() != nil else { throw ArchiveError("\(path): empty archive") }
        guard reader.compressedAsNamed else {
            throw ArchiveError("\(path): not a \((path as NSString).pathExtension) object (damaged or written by something else)")
        }
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
            if n == 0 { return }
            total += n
            guard total <= maximumFileSize else {
                throw ArchiveError("\(path): decompresses to more than \(maximumFileSize >> 20) MiB, more than any WAL file: damaged or not WAL; refused")
            }
            try buffer.withUnsafeBytes { try each(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }
}
