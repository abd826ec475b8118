import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `stork wal-push` and `wal-fetch` did for one data directory, counted across their
/// processes in a file beside it (a base backup does not copy it), for the agent's
/// `GET /metrics`. Counting never fails an archive command: a file that cannot be used is
/// left as it is.
public struct ArchiveCounters: Codable, Sendable, Equatable {
    public var pushed = 0
    public var pushedBytes = 0
    public var pushFailures = 0
    public var fetched = 0
    public var fetchedBytes = 0
    public var fetchFailures = 0
    public init() {}

    public static func path(dataDir: String) -> String { PostgresNode.agentFile(beside: dataDir, suffix: "stork-archive-counters") }

    /// Adds to the counts under an exclusive `flock` (PostgreSQL runs fetches side by side).
    public static func add(at path: String, _ change: (inout ArchiveCounters) -> Void) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { return }
        var counters = decode(FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile()) ?? ArchiveCounters()
        change(&counters)
        guard let out = try? JSONEncoder().encode(counters) else { return }
        _ = ftruncate(fd, 0)
        _ = out.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The counts, or nil when nothing was counted yet.
    public static func read(at path: String) -> ArchiveCounters? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // Shared: an add truncates before it writes.
        guard flock(fd, LOCK_SH) == 0 else { return nil }
        return decode(FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile())
    }

    private static func decode(_ data: Data) -> ArchiveCounters? { try? JSONDecoder().decode(ArchiveCounters.self, from: data) }
}
