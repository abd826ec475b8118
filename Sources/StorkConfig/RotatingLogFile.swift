import Foundation
import Synchronization

/// `log.dir`: the agent's log lines in `<dir>/patroni.log`, rotated as Patroni's
/// RotatingFileHandler rotates it: before a line would take the file to `file_size` bytes, it
/// becomes `patroni.log.1` (`.1` becomes `.2`, ...; the oldest of `file_num` goes); with
/// `file_num` 0 it is never rotated (Python's handler does not roll over without backups).
public final class RotatingLogFile: Sendable {
    public let path: String
    let maxBytes: Int
    let backups: Int
    private let state = Mutex<(fd: Int32, size: Int)>((-1, 0))

    /// Creates `dir` (0700) when missing and opens the file for appending.
    /// - Throws: a one-line reason when the directory or the file cannot be used.
    public init(dir: String, maxBytes: Int, backups: Int) throws {
        path = (dir as NSString).appendingPathComponent("patroni.log")
        self.maxBytes = maxBytes
        self.backups = backups
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw ConfigError("log.dir", "cannot create \(dir): \(error.localizedDescription)")
        }
        let fd = Self.open(path)
        guard fd >= 0 else { throw ConfigError("log.dir", "cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
        state.withLock { $0 = (fd, size) }
    }

    private static func open(_ path: String) -> Int32 {
        Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
    }

    /// Appends `line` and a newline, rotating first when the file would reach `maxBytes`.
    public func write(_ line: String) {
        state.withLock { s in
            let length = line.utf8.count + 1
            if backups > 0 && s.size > 0 && s.size + length >= maxBytes {
                close(s.fd)
                rotate()
                s = (-1, 0)
            }
            // Opened again after a rotation, or after an open that failed (a full disk, say).
            if s.fd < 0 { s = (Self.open(path), 0) }
            guard s.fd >= 0 else { return }
            PatroniLogHandler.writeLine(line, to: s.fd)
            s.size += length
        }
    }

    private func rotate() {
        for n in stride(from: backups - 1, through: 1, by: -1) {
            rename("\(path).\(n)", "\(path).\(n + 1)")
        }
        rename(path, "\(path).1")
    }
}
