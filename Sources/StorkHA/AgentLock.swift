import Foundation
import StorkPostgres
#if canImport(Glibc)
import Glibc
#endif

/// One agent per data directory: an exclusive `flock` on `.<data dir name>.stork-agent.lock`
/// beside the data directory (not inside it: a clone swaps the directory by rename), held for
/// the life of the process. The kernel drops it when the process ends, however it ends; the
/// descriptor is close-on-exec, so a PostgreSQL the agent started never holds it.
public final class AgentLock: Sendable {
    public let path: String
    let descriptor: Int32

    /// Takes the lock, creating the data directory's parent when it is missing.
    /// - Throws: ``AgentLockError`` naming the agent that holds it, or why the file cannot be used.
    public init(dataDir: String) throws {
        let parent = (dataDir as NSString).deletingLastPathComponent
        if !parent.isEmpty && !FileManager.default.fileExists(atPath: parent) {
            do {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw AgentLockError("cannot create \(parent), the parent of postgresql.data_dir: \(error.localizedDescription)")
            }
        }
        path = PostgresNode.agentFile(beside: dataDir, suffix: "stork-agent.lock")
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw AgentLockError("cannot open the agent lock \(path): \(String(cString: strerror(errno))); the agent needs write access to \(parent)")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            guard reason == EWOULDBLOCK else {
                throw AgentLockError("cannot lock \(path): \(String(cString: strerror(reason)))")
            }
            let holder = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            throw AgentLockError("another stork agent (PID \(holder)) runs for \(dataDir): it holds \(path); stop it first, or give this one another data_dir")
        }
        descriptor = fd
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
    }

    deinit { close(descriptor) }
}

public struct AgentLockError: Error, CustomStringConvertible, Sendable {
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
