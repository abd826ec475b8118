import Foundation
import Testing
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Fencing on real PostgreSQL and etcd (ttl 20, loop_wait 1, retry_timeout 4): the self-fence
/// stops a primary whose agent died or hangs before any replica promotes; without it, Patroni's
/// behaviour (the old primary keeps accepting writes); Patroni's watchdog, through its
/// `testing` driver on a named pipe the test reads.
@Suite("Fencing: the self-fence and the watchdog", .serialized)
struct FencingTests {
    static func writable(_ m: TestMember) -> Bool { m.sql("SELECT NOT pg_is_in_recovery()") == "t" }

    /// What sampling both members every 100 ms saw, until `until` holds or `timeout` passes.
    struct Samples {
        var count = 0
        var bothWritable = 0
        /// Seconds from the start until each first stopped / started being writable.
        var firstStopped: Double?
        var secondWritable: Double?
        var firstWritableWhenSecondPromoted = false
    }

    static func sample(first: TestMember, second: TestMember, timeout: Double, extra: Double = 0) async -> Samples {
        var s = Samples()
        let start = Date()
        var end: Date?
        while Date().timeIntervalSince(start) < timeout, end.map({ Date() < $0 }) ?? true {
            let a = writable(first), b = writable(second)
            let t = Date().timeIntervalSince(start)
            s.count += 1
            if a && b { s.bothWritable += 1 }
            if !a && s.firstStopped == nil { s.firstStopped = t }
            if b && s.secondWritable == nil {
                s.secondWritable = t
                s.firstWritableWhenSecondPromoted = a
                end = Date().addingTimeInterval(extra)
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return s
    }

    /// kill -9 of a primary's agent, then SIGSTOP of the next primary's agent: each time the
    /// self-fence stops the old primary before the replica promotes, and at no sample are
    /// both writable; the stopped agent, continued, rejoins as a replica.
    @Test(.timeLimit(.minutes(4)))
    func theSelfFenceStopsAPrimaryWhoseAgentIsGoneBeforeAReplicaPromotes() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence1", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let fence = "watchdog:\n  mode: off\n  self_fence: true\n"
        let pg0 = cluster.addMember("pg0", extraYAML: fence)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1", extraYAML: fence)
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(pg0.log.contains("self-fence armed"), "\(pg0.log)")
        #expect(!pg1.log.contains("self-fence armed"), "a replica's fence was armed: \(pg1.log)")

        pg0.crash()
        let died = await Self.sample(first: pg0, second: pg1, timeout: 45, extra: 3)
        #expect(died.bothWritable == 0, "two writable primaries in \(died.bothWritable) of \(died.count) samples")
        let stopped = try #require(died.firstStopped, "the old primary kept accepting writes: \(cluster.logs())")
        let promoted = try #require(died.secondWritable, "pg1 never promoted: \(cluster.logs())")
        #expect(stopped < promoted, "stopped at \(stopped) s, pg1 writable at \(promoted) s")
        #expect(pg0.log.contains("stork-fence: the agent did not refresh the leader key in time (it is gone)"), "\(pg0.log)")

        // pg0 back as a replica of pg1, then pg1's agent hangs (SIGSTOP for longer than ttl).
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        let hung = try #require(pg1.process?.processIdentifier)
        kill(hung, SIGSTOP)
        let stalled = await Self.sample(first: pg1, second: pg0, timeout: 45, extra: 3)
        kill(hung, SIGCONT)
        #expect(stalled.bothWritable == 0, "two writable primaries in \(stalled.bothWritable) of \(stalled.count) samples")
        let fenced = try #require(stalled.firstStopped, "the hung agent's primary kept accepting writes: \(cluster.logs())")
        let took = try #require(stalled.secondWritable, "pg0 never promoted: \(cluster.logs())")
        #expect(fenced < took, "stopped at \(fenced) s, pg0 writable at \(took) s")
        #expect(pg1.log.contains("stork-fence: the agent did not refresh the leader key in time (it does not answer)"), "\(pg1.log)")
        // Continued, the agent finds pg0 leading and follows it; never a second primary.
        var writableAfter = 0
        let streaming = await TestSupport.waitUntil(timeout: 90, interval: 0.5) {
            if Self.writable(pg1) { writableAfter += 1 }
            return await cluster.waitAllStreaming(timeout: 0.1)
        }
        #expect(streaming, "\(cluster.logs())")
        #expect(writableAfter == 0, "the continued agent's server accepted writes")
        print("self-fence: kill -9 \(died.count) samples, fenced \(String(format: "%.1f", stopped)) s, promoted \(String(format: "%.1f", promoted)) s; SIGSTOP \(stalled.count) samples, fenced \(String(format: "%.1f", fenced)) s, promoted \(String(format: "%.1f", took)) s")
    }

    /// Without a fence, Patroni's documented behaviour (no watchdog): the old primary keeps
    /// accepting writes until something stops it, also after a replica promoted.
    @Test(.timeLimit(.minutes(3)))
    func withoutAFenceTheOldPrimaryKeepsAcceptingWrites() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence2", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        try cluster.addMember("pg1").start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        let pg1 = cluster.members[1]
        pg0.crash()
        let s = await Self.sample(first: pg0, second: pg1, timeout: 45)
        #expect(s.secondWritable != nil, "pg1 never promoted: \(cluster.logs())")
        #expect(s.firstStopped == nil && s.firstWritableWhenSecondPromoted, "without a fence, pg0 stopped at \(s.firstStopped ?? -1) s")
        #expect(!pg0.log.contains("stork-fence"), "\(pg0.log)")
    }

    /// Patroni's watchdog through its `testing` driver: the timeout on activation, a keepalive
    /// on every leader key refresh (none while the agent is stopped, so a real device would
    /// reset the machine), the magic close only once PostgreSQL is stopped; a member whose
    /// required watchdog cannot be opened never leads and says why.
    @Test(.timeLimit(.minutes(3)))
    func theWatchdogIsKeptAliveByTheLeaderAndRequiredMeansRequired() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence3", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let device = cluster.root + "/watchdog"
        #expect(mkfifo(device, 0o600) == 0)
        TestSupport.chownToPostgres(device)
        let pipe = WatchdogPipe(device)
        defer { pipe.close() }

        let pg0 = cluster.addMember("pg0", extraYAML: "watchdog:\n  mode: required\n  driver: testing\n  device: \(device)\n")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg0.log.contains("Watchdog test harness at \(device) activated with 15 second timeout, timing slack 14 seconds"), "\(pg0.log)")
        #expect(await TestSupport.waitUntil(timeout: 10) { pipe.text.hasPrefix("Ctimeout=15\n") && pipe.text.filter { $0 == "1" }.count >= 3 },
                "watchdog saw: \(pipe.text)")

        // A member that requires a watchdog it cannot open follows, and never leads.
        let pg1 = cluster.addMember("pg1", extraYAML: "watchdog:\n  mode: required\n  device: \(cluster.root)/no-such-watchdog\n")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(await pg1.api("/patroni").1["watchdog_failed"] as? Bool == true)
        #expect(await pg0.api("/patroni").1["watchdog_failed"] == nil)

        // A hung agent sends no keepalive: a real device fires after its 15 s.
        let agent = try #require(pg0.process?.processIdentifier)
        let before = pipe.text.count
        kill(agent, SIGSTOP)
        try await Task.sleep(for: .seconds(3))
        let whileStopped = pipe.text.count
        kill(agent, SIGCONT)
        #expect(whileStopped - before <= 1, "keepalives while the agent was stopped: \(pipe.text)")
        #expect(await TestSupport.waitUntil(timeout: 5) { pipe.text.count > whileStopped + 1 }, "no keepalive after SIGCONT: \(pipe.text)")

        // A clean stop: PostgreSQL stopped, then the magic close; pg1 may not take over.
        pg0.stop()
        #expect(pipe.text.hasSuffix("V"), "watchdog saw: \(pipe.text)")
        #expect(!FileManager.default.fileExists(atPath: pg0.dataDir + "/postmaster.pid"))
        try await Task.sleep(for: .seconds(5))
        #expect(await pg1.api("/primary").0 == 503)
        #expect(pg1.log.contains("following nobody: watchdog.mode is required but \(cluster.root)/no-such-watchdog cannot be opened"), "\(pg1.log)")
    }
}

/// The read end of a named pipe standing in for a watchdog device: what the agent wrote.
final class WatchdogPipe: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private var open = true

    init(_ path: String) {
        fd = Glibc.open(path, O_RDONLY | O_NONBLOCK)
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 256)
            while lock.withLock({ open }) {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 { lock.withLock { bytes += buffer[0..<n] } } else { usleep(20_000) }
            }
        }
    }

    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }

    func close() {
        lock.withLock { open = false }
        usleep(50_000)
        _ = Glibc.close(fd)
    }
}
