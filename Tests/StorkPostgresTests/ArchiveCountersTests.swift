import Foundation
import Testing
import StorkPostgres

/// The archive commands' counts, shared by processes through one file under a lock.
@Suite("ArchiveCounters: wal-push and wal-fetch counted across processes")
struct ArchiveCountersTests {
    @Test func concurrentAddsAreAllCounted() throws {
        let dir = NSTemporaryDirectory() + "stork-counters-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = ArchiveCounters.path(dataDir: dir + "/data")
        #expect(path.hasSuffix("/.data.stork-archive-counters"), "beside the data directory, not in it: \(path)")
        #expect(ArchiveCounters.read(at: path) == nil)
        // Separate descriptors and flocks, as separate processes would have.
        DispatchQueue.concurrentPerform(iterations: 40) { i in
            ArchiveCounters.add(at: path) { $0.pushed += 1; $0.pushedBytes += 16; if i % 4 == 0 { $0.fetchFailures += 1 } }
        }
        let counters = try #require(ArchiveCounters.read(at: path))
        #expect(counters.pushed == 40 && counters.pushedBytes == 640 && counters.fetchFailures == 10, "\(counters)")
        // A file that is not JSON starts the counts over instead of failing the command.
        try "garbage".write(toFile: path, atomically: true, encoding: .utf8)
        ArchiveCounters.add(at: path) { $0.fetched += 1 }
        #expect(ArchiveCounters.read(at: path)?.fetched == 1)
    }
}
