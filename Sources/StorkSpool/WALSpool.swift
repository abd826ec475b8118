// The spool of prefetched WAL segments that `stork wal-fetch` serves from. Only the C library:
// the lean `stork-wal-fetch` links this and nothing else, to start in a few milliseconds.
#if canImport(Glibc)
import Glibc
#endif

public enum WALSpool {
    /// Inside pg_wal (left out of every backup and copy), relative to the data directory,
    /// where PostgreSQL runs restore_command.
    public static let directory = "pg_wal/stork-spool"
    public static let lockFile = directory + "/.prefetch.lock"
    /// The segment PostgreSQL asked for last, written by every fetch: the prefetcher skips
    /// ahead of it when recovery has overtaken it.
    public static let requestFile = directory + "/.requested"

    /// Records `name` as the segment recovery asked for last (best effort: only a hint).
    public static func noteRequest(_ name: String) {
        guard name.utf8.count == 24 else { return }
        let fd = open(requestFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        _ = name.withCString { write(fd, $0, 24) }
        close(fd)
    }

    /// The segment recovery asked for last, if recorded.
    public static func lastRequest() -> String? {
        guard let bytes = readBytes(requestFile, count: 24) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The timeline and segment number of a segment's name, for a segment size; nil for other
    /// names (history files, `.partial`, `.backup`).
    public static func segment(_ name: String, segmentSize: UInt64) -> (timeline: UInt32, number: UInt64)? {
        guard name.utf8.count == 24, segmentSize > 0, let tli = UInt32(name.prefix(8), radix: 16),
              let high = UInt64(name.dropFirst(8).prefix(8), radix: 16), let low = UInt64(name.suffix(8), radix: 16) else { return nil }
        return (tli, high * (0x1_0000_0000 / segmentSize) + low)
    }

    public static func name(timeline: UInt32, number: UInt64, segmentSize: UInt64) -> String {
        let perLog = 0x1_0000_0000 / segmentSize
        return hex8(UInt64(timeline)) + hex8(number / perLog) + hex8(number % perLog)
    }

    static func hex8(_ value: UInt64) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - text.count)) + text
    }

    /// The segment size a segment file's long page header gives, when the file is the segment
    /// `name` of this data directory's cluster: its header carries the system identifier
    /// (pg_control's first field), the segment size (the file's size) and the segment's start
    /// address. Nil for anything else.
    public static func verifiedSegmentSize(_ path: String, name: String) -> UInt64? {
        guard let header = readBytes(path, count: 40), let control = readBytes("global/pg_control", count: 8) else { return nil }
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let info: UInt16 = little(header, 2)
        let pageAddress: UInt64 = little(header, 8)
        let systemIdentifier: UInt64 = little(header, 24)
        let segmentSize = UInt64(little(header, 32) as UInt32)
        guard info & 0x0002 != 0, segmentSize > 0, UInt64(st.st_size) == segmentSize,
              systemIdentifier == little(control, 0) as UInt64,
              let segment = segment(name, segmentSize: segmentSize), pageAddress == segment.number * segmentSize else { return nil }
        return segmentSize
    }

    /// What every fetch does first: records `name` as the segment asked for, then serves it
    /// from the spool (``take(_:to:)``). The segment size on a hit.
    public static func serve(_ name: String, to target: String) -> UInt64? {
        noteRequest(name)
        return take(name, to: target)
    }

    /// Serves `name` from the spool: renamed to `target` when there and verified (true); a
    /// spool file that fails the check is removed. The segment size on success.
    public static func take(_ name: String, to target: String) -> UInt64? {
        let spooled = directory + "/" + name
        guard access(spooled, F_OK) == 0 else { return nil }
        if let size = verifiedSegmentSize(spooled, name: name), rename(spooled, target) == 0 { return size }
        unlink(spooled)
        return nil
    }

    /// Whether a prefetcher holds the spool's lock.
    public static func prefetcherRunning() -> Bool {
        let fd = open(lockFile, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return true }
        flock(fd, LOCK_UN)
        return false
    }

    /// Starts the prefetcher `argv` names in a session of its own (so the server's signals to
    /// the restore_command's group do not reach it), its standard input from /dev/null, not
    /// waited for. A failure to start costs only the prefetching: it is told on standard
    /// error (the server's log) and the segment already served stands.
    public static func startPrefetcher(_ argv: [String]) {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, posixSpawnSetsid)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for word in cArgs { free(word) } }
        var pid: pid_t = 0
        let failure = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, environ)
        if failure != 0 {
            let message = Array("stork wal-fetch: cannot start the WAL prefetcher \(argv[0]): \(String(cString: strerror(failure)))\n".utf8)
            _ = write(2, message, message.count)
        }
    }

    /// glibc's `POSIX_SPAWN_SETSID` (`<spawn.h>`, 0x80): the module map leaves it out, as it
    /// is declared only under `_GNU_SOURCE`.
    static let posixSpawnSetsid: Int16 = 0x80

    /// The prefetcher's command line: `stork wal-fetch --prefetch-after NAME --segment-size N [flags] CONFIG`.
    public static func prefetchCommand(stork: String, config: String, flags: [String], after name: String, segmentSize: UInt64) -> [String] {
        [stork, "wal-fetch", "--prefetch-after", name, "--segment-size", String(segmentSize)] + flags + [config]
    }

    static func readBytes(_ path: String, count: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, count) }
        return n == count ? bytes : nil
    }

    static func little<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        return value
    }
}
