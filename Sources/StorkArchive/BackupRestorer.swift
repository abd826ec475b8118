import Crypto
import Foundation
import StorkConfig
import StorkPostgres
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Restores a base backup into a directory, trusting nothing it reads: the manifest's paths
/// are checked before any is used, each part's checksum before it is opened, and every tar
/// entry must be a regular file the manifest names, inside the directory, stored once, with
/// the manifest's size and SHA-256. Anything else stops the restore with a one-line reason.
///
/// Files are written only under directories the restore made itself (from the manifest), and
/// opened with `O_NOFOLLOW`: no entry can write through a link. Run as root for another owner,
/// the restore keeps the directory root's own (0700) while it writes, reaches it through the
/// descriptor it opened once (never again by a path its parent's owner could swap), downloads
/// into a private directory inside it, and hands everything to the owner only at the end. An
/// interrupted restore into the same directory resumes: a file that is already there with the
/// manifest's size and checksum is kept.
public struct BackupRestorer: Sendable {
    public let catalog: BackupCatalog
    public let concurrency: Int
    /// Owner of what is restored (the PostgreSQL user when the caller runs as root).
    public let owner: OSUser?

    public init(catalog: BackupCatalog, concurrency: Int, owner: OSUser?) {
        self.catalog = catalog
        self.concurrency = concurrency
        self.owner = owner
    }

    /// The marker a restore in progress keeps in its directory: the backup's name.
    public static let markerName = ".stork-restore"

    /// The backup an interrupted restore in `directory` was restoring, if any.
    public static func interruptedRestore(in directory: String) -> String? {
        (try? String(contentsOfFile: directory + "/" + markerName, encoding: .utf8)).flatMap { $0.isEmpty ? nil : $0 }
    }

    public struct Summary: Sendable, Equatable {
        public var files: Int
        public var bytes: Int
        /// Files found already restored and verified (a resumed restore).
        public var kept: Int
    }

    /// Restores `manifest` into `named` (an empty directory, or one an interrupted restore of
    /// the same backup left), then writes `recovery` (``RestoredRecovery``) when given.
    /// `progress` gets bytes done and the total.
    public func restore(_ manifest: BackupManifest, into named: String, expectedSystemIdentifier: String?, recovery: [String: String]? = nil,
                        progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }) async throws -> Summary {
        try await onOwnThread {
            try restoreBlocking(manifest, into: named, expectedSystemIdentifier: expectedSystemIdentifier, recovery: recovery, progress: progress)
        }
    }

    func restoreBlocking(_ manifest: BackupManifest, into named: String, expectedSystemIdentifier: String?, recovery: [String: String]?,
                         progress: @escaping @Sendable (Int, Int) -> Void) throws -> Summary {
        let byPath = try Self.check(manifest, expectedSystemIdentifier: expectedSystemIdentifier)
        let directoryFD = try openTarget(named, for: manifest)
        defer { close(directoryFD) }
        // The directory opened above, whatever is renamed or linked at `named` meanwhile.
        let target = "/proc/self/fd/\(directoryFD)"
        for directory in manifest.directories { try makeDirectory(in: target, directory, named: named) }
        let done = Counter(), kept = Counter(), seen = Mutex(Set<String>())
        let total = manifest.bytes
        let catalog = catalog
        let scratch = catalog.store.localPath(catalog.manifestKey(manifest.name)) == nil
            ? try ScratchDirectory(in: target, prefix: Self.downloadPrefix) : nil
        defer { scratch?.remove() }
        try inParallel(manifest.parts.count, width: concurrency) { index in
            let part = manifest.parts[index]
            let key = catalog.partKey(manifest.name, part.name)
            let place = "backup \(manifest.name), \(part.name)"
            var path = catalog.store.localPath(key)
            var downloaded: String?
            defer { if let downloaded { unlink(downloaded) } }
            if path == nil, let scratch {
                let temporary = scratch.file(part.name)
                guard try catalog.store.download(key, to: temporary) else { throw ArchiveError("\(place) is missing from the archive") }
                downloaded = temporary
                path = temporary
            }
            guard access(path!, F_OK) == 0 else { throw ArchiveError("\(place) is missing from the archive") }
            guard try sha256(file: path!) == part.sha256 else {
                throw ArchiveError("\(place) does not match its checksum in the manifest: the part is damaged or truncated")
            }
            try Self.extract(path!, part: index, place: place, into: target, named: named, byPath: byPath) { file, restored in
                let first = seen.withLock { $0.insert(file.path).inserted }
                guard first else { throw ArchiveError("\(place): \(file.path) is stored twice") }
                if !restored { _ = kept.add(1) }
                progress(done.add(file.size), total)
            }
        }
        let restored = seen.withLock { $0 }
        if let missing = manifest.files.first(where: { !restored.contains($0.path) }) {
            throw ArchiveError("backup \(manifest.name) lacks \(missing.path), which its manifest lists: the backup is incomplete")
        }
        unlink(target + "/" + Self.markerName)
        scratch?.remove()
        if let recovery { try RestoredRecovery.write(recovery, into: target) }
        try handOver(target, directoryFD, named: named)
        return Summary(files: manifest.files.count, bytes: total, kept: kept.add(0))
    }

    /// Where parts are downloaded to: a private directory inside the target, removed at the end
    /// (and, left by an interrupted restore, when it resumes).
    static let downloadPrefix = ".stork-download"

    /// Gives the restored tree to ``owner`` (nothing to do without one). Nothing in it is a link:
    /// the restore made every entry itself.
    func handOver(_ target: String, _ directoryFD: Int32, named: String) throws {
        guard let owner else { return }
        try Self.giveTree(directoryFD, to: owner, named: named)
        guard fchown(directoryFD, owner.uid, owner.gid) == 0 else {
            throw ArchiveError("cannot give \(named) to \(owner.name): \(String(cString: strerror(errno)))")
        }
    }

    /// Everything below the directory `fd`, walked through descriptors, never through a link.
    static func giveTree(_ fd: Int32, to owner: OSUser, named: String) throws {
        let listing = dup(fd)
        guard listing >= 0, let stream = fdopendir(listing) else {
            throw ArchiveError("cannot read \(named): \(String(cString: strerror(errno)))")
        }
        defer { closedir(stream) }
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            guard fchownat(fd, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw ArchiveError("cannot give \(named)/\(name) to \(owner.name): \(String(cString: strerror(errno)))")
            }
            var isDirectory = Int32(entry.pointee.d_type) == DT_DIR
            if Int32(entry.pointee.d_type) == DT_UNKNOWN {
                // Some file systems (XFS without ftype) do not say: ask, not following links.
                var st = stat()
                isDirectory = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            }
            guard isDirectory else { continue }
            let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard child >= 0 else { throw ArchiveError("cannot open \(named)/\(name): \(String(cString: strerror(errno)))") }
            defer { close(child) }
            try giveTree(child, to: owner, named: named + "/" + name)
        }
    }

    /// The manifest's files by path, after checking that it belongs to the expected system
    /// and that every path in it is a plain relative path inside the directory.
    static func check(_ manifest: BackupManifest, expectedSystemIdentifier: String?) throws -> [String: BackupManifest.File] {
        guard manifest.format == 1 else { throw ArchiveError("backup \(manifest.name) has manifest format \(manifest.format), which this Stork does not read") }
        if let expected = expectedSystemIdentifier, !expected.isEmpty, manifest.systemIdentifier != expected {
            throw ArchiveError("backup \(manifest.name) belongs to another cluster: system identifier \(manifest.systemIdentifier), this cluster's is \(expected)")
        }
        var byPath: [String: BackupManifest.File] = [:]
        for directory in manifest.directories { _ = try checkedPath(directory, place: "backup \(manifest.name)") }
        for file in manifest.files {
            _ = try checkedPath(file.path, place: "backup \(manifest.name)")
            guard file.part >= 0, file.part < manifest.parts.count, file.size >= 0 else {
                throw ArchiveError("backup \(manifest.name): the manifest's entry for \(file.path) is invalid")
            }
            guard byPath.updateValue(file, forKey: file.path) == nil else { throw ArchiveError("backup \(manifest.name): the manifest lists \(file.path) twice") }
        }
        for part in manifest.parts where !BackupCatalog.isPartName(part.name) {
            throw ArchiveError("backup \(manifest.name): the manifest names a part \"\(part.name)\"")
        }
        return byPath
    }

    /// `path` when it is relative, without `.` or `..` parts or empty parts; an error saying
    /// what is wrong otherwise.
    static func checkedPath(_ raw: String, place: String) throws -> String {
        let path = raw.hasPrefix("./") ? String(raw.dropFirst(2)) : raw
        if path.hasPrefix("/") { throw ArchiveError("\(place): \(raw) is an absolute path: refused") }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if path.isEmpty || parts.contains(where: { $0 == ".." }) || path.contains("\0") {
            throw ArchiveError("\(place): \(raw) points outside the data directory: refused")
        }
        if parts.contains(where: { $0.isEmpty || $0 == "." }) { throw ArchiveError("\(place): \(raw) is not a plain path: refused") }
        return path
    }

    /// The target, opened once: an empty directory, or one with this backup's marker (a restore
    /// to resume). PostgreSQL starts only on a data directory no one else may read; run as root,
    /// it is root's own until ``handOver(_:_:named:)``, so its owner cannot plant anything in it
    /// while root writes there.
    func openTarget(_ named: String, for manifest: BackupManifest) throws -> Int32 {
        var st = stat()
        if lstat(named, &st) != 0 {
            guard mkdir(named, 0o700) == 0 else { throw ArchiveError("cannot create \(named): \(String(cString: strerror(errno)))") }
        }
        let fd = Glibc.open(named, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ArchiveError("cannot open \(named): \(String(cString: strerror(errno)))") }
        var before = stat()
        fstat(fd, &before)
        if owner != nil, geteuid() == 0 { fchown(fd, 0, 0) }
        fchmod(fd, 0o700)
        let target = "/proc/self/fd/\(fd)"
        let marker = target + "/" + Self.markerName
        do {
            let contents = try FileManager.default.contentsOfDirectory(atPath: target)
            if let previous = try? String(contentsOfFile: marker, encoding: .utf8) {
                guard previous == manifest.name else {
                    throw ArchiveError("\(named) holds an interrupted restore of backup \(previous), not \(manifest.name): empty it first")
                }
                for leftover in contents where leftover.hasPrefix(Self.downloadPrefix) { try? FileManager.default.removeItem(atPath: target + "/" + leftover) }
                return fd
            }
            guard contents.isEmpty else { throw ArchiveError("\(named) is not empty: a restore goes into an empty directory") }
            let markerFD = Glibc.open(marker, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard markerFD >= 0, write(markerFD, manifest.name, manifest.name.utf8.count) == manifest.name.utf8.count else {
                let reason = String(cString: strerror(errno))
                if markerFD >= 0 { close(markerFD) }
                throw ArchiveError("cannot write \(named)/\(Self.markerName): \(reason)")
            }
            close(markerFD)
            return fd
        } catch {
            // Refused: the directory goes back to how it was found.
            fchown(fd, before.st_uid, before.st_gid)
            fchmod(fd, before.st_mode & 0o7777)
            close(fd)
            throw error
        }
    }

    /// `directory` (from the manifest) under the target, made by this restore or an earlier
    /// attempt of it; an error for anything else there.
    func makeDirectory(in target: String, _ directory: String, named: String) throws {
        let path = target + "/" + directory
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw ArchiveError("\(named)/\(directory) exists and is not a directory: refused") }
            return
        }
        guard mkdir(path, 0o700) == 0 else { throw ArchiveError("cannot create \(named)/\(directory): \(String(cString: strerror(errno)))") }
    }

    /// Reads one part and writes its entries; `restored(file, written)` after each (written
    /// is false when the file was there already, verified).
    static func extract(_ path: String, part: Int, place: String, into target: String, named: String, byPath: [String: BackupManifest.File],
                        restored: (BackupManifest.File, Bool) throws -> Void) throws {
        let reader = try ArchiveReader(path: path, format: .tar, blockSize: 1 << 20, label: place)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while let entry = try reader.next() {
            if !reader.compressedAsNamed { throw ArchiveError("\(place): not compressed as its name says") }
            let raw = entry.path
            let name = try checkedPath(raw, place: place)
            if case .symlink(let to) = entry.kind {
                throw ArchiveError("\(place): \(raw) is a symbolic link (to \(to)): refused")
            }
            guard entry.kind == .regular, !entry.isHardLink else {
                throw ArchiveError("\(place): \(raw) is not a regular file: refused")
            }
            guard let file = byPath[name] else { throw ArchiveError("\(place): \(raw) is not in the manifest: refused") }
            guard file.part == part, entry.size == file.size else {
                throw ArchiveError("\(place): \(raw) does not match the manifest (size or part)")
            }
            let destination = target + "/" + name
            if (try? alreadyRestored(destination, file)) == true {
                try reader.skipData()
                try restored(file, false)
                continue
            }
            let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw ArchiveError("cannot write \(named)/\(name): \(String(cString: strerror(errno)))") }
            var hash = SHA256()
            var written = 0
            var failure: String?
            while failure == nil {
                let n: Int
                do { n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) } } catch {
                    failure = "\(error)"
                    break
                }
                if n == 0 { break }
                buffer.withUnsafeBytes { raw in
                    let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                    hash.update(bufferPointer: chunk)
                    var offset = 0
                    while offset < n {
                        let w = write(fd, chunk.baseAddress! + offset, n - offset)
                        if w <= 0 { failure = "cannot write \(named)/\(name): \(String(cString: strerror(errno)))"; return }
                        offset += w
                    }
                }
                written += n
            }
            fchmod(fd, mode_t(file.mode & 0o700 | 0o600))
            close(fd)
            if let failure { throw ArchiveError(failure) }
            guard written == file.size, hex(hash.finalize()) == file.sha256 else {
                unlink(destination)
                throw ArchiveError("\(place): \(name) does not match its checksum in the manifest: the backup is damaged")
            }
            try restored(file, true)
        }
    }

    /// A file a restore wrote before it was interrupted: the manifest's size and checksum.
    static func alreadyRestored(_ path: String, _ file: BackupManifest.File) throws -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) == file.size else { return false }
        return try sha256(file: path) == file.sha256
    }
}
