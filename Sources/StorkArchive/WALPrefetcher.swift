import Foundation
import StorkSpool
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the spool `depth` segments ahead of recovery: fetches the segments after the one
/// PostgreSQL asked for, `width` at a time, each decompressed to a temporary name, checked (the
/// segment its name says, of this cluster) and renamed into the spool. One prefetcher per data
/// directory (a lock); it ends at the end of the archive, or when recovery has taken nothing
/// for `idleTimeout` seconds (then it empties the spool: the server streams, or stopped).
public struct WALPrefetcher: Sendable {
    public let archive: WALArchive
    public let depth: Int
    public let width: Int
    public var idleTimeout: Double = 30

    public init(archive: WALArchive, depth: Int, width: Int) {
        self.archive = archive
        self.depth = depth
        self.width = width
    }

    public enum Ending: Equatable, Sendable { case alreadyRunning, endOfArchive, idle }

    /// Runs in the data directory (PostgreSQL's working directory for restore_command).
    public func run(after name: String, segmentSize: UInt64) throws -> Ending {
        guard let start = WALSpool.segment(name, segmentSize: segmentSize) else { throw ArchiveError("\(name) is not a WAL segment name") }
        try makeDirectory(WALSpool.directory)
        let lock = open(WALSpool.lockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw ArchiveError("cannot open \(WALSpool.lockFile): \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else { return .alreadyRunning }
        // Segments before the one asked for are of no more use.
        for spooled in spooledSegments() where (WALSpool.segment(spooled, segmentSize: segmentSize)?.number ?? 0) <= start.number {
            unlink(WALSpool.directory + "/" + spooled)
        }
        var next = start.number + 1
        var fetchedCount = 0
        // What it did, a line per run in the lock file, for whoever looks (tests, an operator).
        defer {
            let note = "prefetched \(fetchedCount) segments after \(name)\n"
            lseek(lock, 0, SEEK_END)
            _ = note.withCString { write(lock, $0, strlen($0)) }
        }
        var lastCount = -1
        var lastChange = Date()
        while true {
            // Recovery overtook the prefetcher (it fetched what it needed itself): what is
            // behind it is of no use, and prefetching goes on from after it.
            if let asked = WALSpool.lastRequest().flatMap({ WALSpool.segment($0, segmentSize: segmentSize) }),
               asked.timeline == start.timeline, asked.number >= next {
                for spooled in spooledSegments() where (WALSpool.segment(spooled, segmentSize: segmentSize)?.number ?? 0) <= asked.number {
                    unlink(WALSpool.directory + "/" + spooled)
                }
                next = asked.number + 1
            }
            let spooled = spooledSegments().count
            if spooled != lastCount {
                lastCount = spooled
                lastChange = Date()
            }
            if spooled < depth {
                let batch = (0..<UInt64(min(width, depth - spooled))).map {
                    WALSpool.name(timeline: start.timeline, number: next + $0, segmentSize: segmentSize)
                }
                let found = ResultSlots<Bool>(batch.count)
                let archive = archive
                try inParallel(batch.count, width: width) { index in
                    found.set(index, try Self.fetchIntoSpool(batch[index], from: archive))
                }
                let fetched = found.values.prefix { $0 }.count
                next += UInt64(fetched)
                fetchedCount += fetched
                if fetched < batch.count { return .endOfArchive }
                continue
            }
            if Date().timeIntervalSince(lastChange) > idleTimeout {
                for spooled in spooledSegments() { unlink(WALSpool.directory + "/" + spooled) }
                return .idle
            }
            usleep(20_000)
        }
    }

    func spooledSegments() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: WALSpool.directory)) ?? []).filter { $0.count == 24 }
    }

    /// False when the archive does not hold `name`.
    static func fetchIntoSpool(_ name: String, from archive: WALArchive) throws -> Bool {
        let temporary = WALSpool.directory + "/.fetching-" + name
        defer { unlink(temporary) }
        guard try archive.fetch(name, to: temporary) else { return false }
        guard WALSpool.verifiedSegmentSize(temporary, name: name) != nil else {
            throw ArchiveError("the archive's \(name) is not that segment of this cluster (its page header says otherwise)")
        }
        guard rename(temporary, WALSpool.directory + "/" + name) == 0 else {
            throw ArchiveError("cannot move \(name) into \(WALSpool.directory): \(String(cString: strerror(errno)))")
        }
        return true
    }
}
