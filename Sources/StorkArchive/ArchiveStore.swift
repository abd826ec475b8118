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

/// One stored object, as a listing shows it.
public struct StoredObject: Sendable, Equatable {
    /// Relative to the archive's root: `<scope>/wal/<name>.zst`.
    public var key: String
    public var size: Int
    public init(key: String, size: Int) {
        self.key = key
        self.size = size
    }
}

/// Where the archive's objects live: a directory, an S3 bucket, a read-only web server. Keys
/// are relative paths with `/` between parts (`main/wal/000000010000000000000001.zst`).
///
/// Every backend keeps the two promises the WAL archive and the backups rely on: an object is
/// visible whole or not at all, and `create` never replaces an object that exists.
public protocol ArchiveStore: Sendable {
    /// For messages: where `key` is (`/srv/archive/main/wal/...`, `s3://bucket/...`).
    func describe(_ key: String) -> String
    /// A path for a file that is about to become `key` through `create(_:fromFile:)`: beside
    /// it for a directory (so creating it is a link, not a copy), in `scratch` otherwise.
    func uploadPath(for key: String, scratch: String) -> String
    /// Stores the file at `path` as `key` unless an object is stored there already: false
    /// then, and nothing is written. Durable when it returns. The file at `path` stays.
    func create(_ key: String, fromFile path: String) throws -> Bool
    /// The object's bytes at `path` (made or replaced atomically); false when there is no such
    /// object, and nothing is left at `path` then or on any failure.
    func download(_ key: String, to path: String) throws -> Bool
    /// A local path from which `key` can be read in place (a directory backend), else nil.
    func localPath(_ key: String) -> String?
    /// The objects whose keys start with `prefix`, sorted by key.
    func list(prefix: String) throws -> [StoredObject]
    /// Removes `key`; no error when it is missing.
    func delete(_ key: String) throws
    /// The first of `keys` that is stored, or nil. By default one listing of their common
    /// prefix; a store that cannot list (HTTPS) or has a cheaper way asks for each key.
    func firstExisting(_ keys: [String]) throws -> String?
}

extension ArchiveStore {
    public func firstExisting(_ keys: [String]) throws -> String? {
        guard var common = keys.first else { return nil }
        for key in keys.dropFirst() { common = String(zip(common, key).prefix { $0 == $1 }.map(\.0)) }
        let found = Set(try list(prefix: common).map(\.key))
        return keys.first { found.contains($0) }
    }

    public func exists(_ key: String) throws -> Bool { try firstExisting([key]) != nil }
}

/// Opens the store an `archive` section names.
public func openArchiveStore(_ settings: ArchiveSettings, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> any ArchiveStore {
    switch settings.location {
    case .directory(let path): return DirectoryStore(root: path)
    case .s3(let location): return try S3Store(location, environment: environment)
    case .https(let url): return try HTTPSStore(baseURL: url)
    }
}

/// The archive on a local or mounted file system. An object is written to a temporary name
/// beside its own, fsynced, and linked to its name (link fails when the name exists, so nothing
/// is replaced, and no half-written object is ever visible under its name); then the directory
/// is fsynced.
public struct DirectoryStore: ArchiveStore {
    public let root: String
    public init(root: String) { self.root = root }

    func path(_ key: String) -> String { root + "/" + key }

    public func describe(_ key: String) -> String { path(key) }

    public func uploadPath(for key: String, scratch: String) -> String {
        path(key) + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    public func create(_ key: String, fromFile file: String) throws -> Bool {
        let final = path(key)
        let directory = (final as NSString).deletingLastPathComponent
        try makeDirectory(directory)
        var source = file
        var copied: String?
        defer { if let copied { unlink(copied) } }
        if (file as NSString).deletingLastPathComponent != directory {
            // From elsewhere: copy beside the final name first, so the link below is atomic.
            let temporary = uploadPath(for: key, scratch: "")
            try copyFile(file, to: temporary)
            copied = temporary
            source = temporary
        }
        try syncFile(source)
        guard link(source, final) == 0 else {
            if errno == EEXIST { return false }
            throw ArchiveError("cannot store \(final): \(String(cString: strerror(errno)))")
        }
        try syncFile(directory)
        return true
    }

    public func download(_ key: String, to target: String) throws -> Bool {
        let source = path(key)
        guard access(source, F_OK) == 0 else { return false }
        let temporary = target + ".stork-part"
        defer { unlink(temporary) }
        try copyFile(source, to: temporary)
        guard rename(temporary, target) == 0 else {
            throw ArchiveError("cannot rename \(temporary) to \(target): \(String(cString: strerror(errno)))")
        }
        return true
    }

    public func localPath(_ key: String) -> String? { path(key) }

    /// A few access() calls are cheaper than a listing.
    public func firstExisting(_ keys: [String]) throws -> String? {
        keys.first { access(path($0), F_OK) == 0 }
    }

    public func list(prefix: String) throws -> [StoredObject] {
        // The directory part of the prefix, then the names in it that start with the rest.
        let slash = prefix.lastIndex(of: "/")
        let directoryKey = slash.map { String(prefix[..<$0]) } ?? ""
        let namePrefix = slash.map { String(prefix[prefix.index(after: $0)...]) } ?? prefix
        let base = directoryKey.isEmpty ? root : path(directoryKey)
        guard let enumerator = FileManager.default.enumerator(atPath: base) else { return [] }
        var out: [StoredObject] = []
        while let relative = enumerator.nextObject() as? String {
            guard relative.hasPrefix(namePrefix), !relative.contains(".tmp-") else { continue }
            let full = base + "/" + relative
            var st = stat()
            guard lstat(full, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            out.append(StoredObject(key: (directoryKey.isEmpty ? "" : directoryKey + "/") + relative, size: Int(st.st_size)))
        }
        return out.sorted { $0.key < $1.key }
    }

    public func delete(_ key: String) throws {
        guard unlink(path(key)) == 0 || errno == ENOENT else {
            throw ArchiveError("cannot remove \(path(key)): \(String(cString: strerror(errno)))")
        }
    }
}

func makeDirectory(_ path: String) throws {
    do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
        throw ArchiveError("cannot create \(path): \(error.localizedDescription)")
    }
}

func syncFile(_ path: String) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ArchiveError("cannot open \(path) to sync it: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw ArchiveError("cannot sync \(path): \(String(cString: strerror(errno)))") }
}

/// Copies `source` to `target` (created or truncated), in 1 MiB reads.
func copyFile(_ source: String, to target: String) throws {
    let input = open(source, O_RDONLY)
    guard input >= 0 else { throw ArchiveError("cannot read \(source): \(String(cString: strerror(errno)))") }
    defer { close(input) }
    let output = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard output >= 0 else { throw ArchiveError("cannot write \(target): \(String(cString: strerror(errno)))") }
    defer { close(output) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
        if n == 0 { return }
        guard n > 0 else { throw ArchiveError("cannot read \(source): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < n {
            let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + written, n - written) }
            guard w > 0 else { throw ArchiveError("cannot write \(target): \(String(cString: strerror(errno)))") }
            written += w
        }
    }
}
