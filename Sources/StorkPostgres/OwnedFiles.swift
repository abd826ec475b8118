import Foundation
import Logging
import StorkConfig
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The data directory's state, and files and directories owned by the run-as user:
// created with the right owner and mode, written durably, emptied.
extension PostgresNode {
    public func dataDirectoryState() -> DataDirectoryState {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: settings.dataDir, isDirectory: &isDirectory) else { return .empty }
        guard isDirectory.boolValue else { return .unusable("\(settings.dataDir) is not a directory") }
        guard let entries = try? fm.contentsOfDirectory(atPath: settings.dataDir) else {
            return .unusable("cannot list \(settings.dataDir)")
        }
        // Like Patroni: hidden files and lost+found (a mount point) do not make it a data directory.
        if entries.allSatisfy({ $0.hasPrefix(".") || $0 == "lost+found" }) { return .empty }
        let missing = ["PG_VERSION", "global/pg_control"].filter { !fm.fileExists(atPath: settings.dataDir + "/" + $0) }
        if missing.isEmpty { return .initialized }
        return .unusable("\(settings.dataDir) is not empty but has no \(missing.joined(separator: " and "))")
    }

    /// Removes everything inside the data directory (keeping the directory itself).
    /// Only for the agent's own failed work.
    ///
    /// Symbolic links inside (a `pg_wal` moved elsewhere, tablespaces) are removed as links;
    /// what they point to is left alone.
    public func wipeDataDirectory() throws {
        try wipe(directory: settings.dataDir)
    }

    /// Removes everything inside `dir` (keeping `dir`), symbolic links as links.
    public func wipe(directory dir: String) throws {
        let fm = FileManager.default
        logger.debug("wiping data directory", metadata: ["stork.data_dir": "\(dir)"])
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: dir) } catch {
            if !fm.fileExists(atPath: dir) { return }
            throw PostgresError("cannot list \(dir): \(error.localizedDescription)")
        }
        for entry in entries {
            do { try fm.removeItem(atPath: dir + "/" + entry) } catch {
                throw PostgresError("cannot remove \(dir)/\(entry): \(error.localizedDescription)")
            }
        }
        chmod(dir, 0o700)
    }

    /// Creates the data directory (0700, owned by ``runAs``) when it is missing.
    public func ensureDataDirectory() throws {
        try ensureDirectory(settings.dataDir)
    }

    /// Creates `dir` (0700, owned by ``runAs``) when it is missing.
    public func ensureDirectory(_ dir: String) throws {
        if FileManager.default.fileExists(atPath: dir) { return }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw PostgresError("cannot create directory \(dir): \(error.localizedDescription)")
        }
        chmod(dir, 0o700)
        if let user = runAs, chown(dir, user.uid, user.gid) != 0 {
            throw PostgresError("cannot give \(dir) to \(user.name): \(String(cString: strerror(errno)))")
        }
    }

    /// Writes `path` atomically (a temporary file beside it, then rename), mode 0600, owned by
    /// ``runAs``.
    public func writeOwnedFile(_ path: String, contents: String) throws {
        // A name of its own: two writers of one file must not share a temporary file.
        let temporary = path + ".stork-new-" + UUID().uuidString.prefix(8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PostgresError("cannot write \(path): \(String(cString: strerror(errno)))") }
        var failure: String?
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count, failure == nil {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno != EINTR { failure = String(cString: strerror(errno)) } } else { written += n }
        }
        if failure == nil, fchmod(fd, 0o600) != 0 { failure = String(cString: strerror(errno)) }
        if failure == nil, let user = runAs, fchown(fd, user.uid, user.gid) != 0 { failure = String(cString: strerror(errno)) }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(temporary)
            throw PostgresError("cannot write \(path): \(failure)")
        }
    }

    /// A new file in the temporary directory, 0600, owned by ``runAs``; the caller removes it.
    public func writeTemporaryFile(prefix: String, contents: String) throws -> String {
        var template = Array("\(NSTemporaryDirectory())/\(prefix)-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw PostgresError("cannot create a temporary file: \(String(cString: strerror(errno)))") }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let bytes = Array(contents.utf8)
        let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
            && fchmod(fd, 0o600) == 0
            && (runAs.map { fchown(fd, $0.uid, $0.gid) == 0 } ?? true)
        let reason = String(cString: strerror(errno))
        close(fd)
        if !ok {
            unlink(path)
            throw PostgresError("cannot write a temporary file: \(reason)")
        }
        return path
    }
}
