import Foundation
import Testing
import StorkProcess
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
        // The pipe's reader polls every 20 ms: on a loaded machine the last byte may come after stop() returned.
        #expect(await TestSupport.waitUntil(timeout: 5) { pipe.text.hasSuffix("V") }, "watchdog saw: \(pipe.text)")
        #expect(!FileManager.default.fileExists(atPath: pg0.dataDir + "/postmaster.pid"))
        try await Task.sleep(for: .seconds(5))
        #expect(await pg1.api("/primary").0 == 503)
        #expect(pg1.log.contains("following nobody: watchdog.mode is required but \(cluster.root)/no-such-watchdog cannot be opened"), "\(pg1.log)")
    }
}

extension FencingTests {
    /// stork-fence on its own against a real primary whose agent is gone: it fires once (a
    /// server started after it fired is left alone until the agent arms it again), and with its
    /// socket closed it keeps looking past the deadline, so a promotion that completes after the
    /// deadline is still fenced.
    @Test(.timeLimit(.minutes(3)))
    func theFenceFiresOnceAndKeepsLookingOnceTheAgentIsGone() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence4", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        pg0.crash()
        defer { pg0.stopPostgresIfRunning() }
        let startServer = {
            try await pg0.startPostgresByHand()
            return await TestSupport.waitUntil(timeout: 20) { Self.writable(pg0) }
        }

        // The agent hangs (its socket stays open): fenced at the deadline, then not again.
        let hung = try FenceProcess(dataDir: pg0.dataDir, log: pg0.base + "/fence-hung.log")
        defer { hung.end() }
        hung.send("arm \(FenceProcess.monotonicMilliseconds() + 300)")
        #expect(await TestSupport.waitUntil(timeout: 5) { !Self.writable(pg0) }, "not fenced: \(hung.log)")
        #expect(try await startServer(), "\(pg0.base)/manual.log")
        try await Task.sleep(for: .seconds(2))
        #expect(Self.writable(pg0), "a server started after the fence fired was stopped again: \(hung.log)")
        #expect(hung.log.components(separatedBy: "in immediate mode").count == 2, "\(hung.log)")
        // Armed again, it fences again.
        hung.send("arm \(FenceProcess.monotonicMilliseconds() + 300)")
        #expect(await TestSupport.waitUntil(timeout: 5) { !Self.writable(pg0) }, "not fenced after a new arm: \(hung.log)")
        hung.end()

        // The agent dies while a promotion is under way (standby.signal still there at the
        // deadline): the fence waits, and stops the server once the promotion completes.
        #expect(try await startServer(), "\(pg0.base)/manual.log")
        let signal = pg0.dataDir + "/standby.signal"
        FileManager.default.createFile(atPath: signal, contents: nil)
        let gone = try FenceProcess(dataDir: pg0.dataDir, log: pg0.base + "/fence-gone.log")
        defer { gone.end() }
        gone.send("arm \(FenceProcess.monotonicMilliseconds() + 300)")
        gone.closeInput()
        try await Task.sleep(for: .seconds(2))
        #expect(Self.writable(pg0), "the fence stopped a server whose data directory says standby")
        #expect(gone.isRunning, "the fence left before the promotion completed: \(gone.log)")
        try FileManager.default.removeItem(atPath: signal)
        #expect(await TestSupport.waitUntil(timeout: 5) { !Self.writable(pg0) }, "a promotion completed after the deadline was not fenced: \(gone.log)")
        #expect(await TestSupport.waitUntil(timeout: 5) { !gone.isRunning }, "the fence did not exit once it had fenced: \(gone.log)")
    }

    /// An agent killed and started again before its fence's deadline keeps its primary: the
    /// new agent ends the companion it finds (it guards the server itself from its first
    /// leader key refresh), so the old deadline does not stop a healthy primary.
    @Test(.timeLimit(.minutes(3)))
    func anAgentStartedAgainBeforeTheDeadlineKeepsItsPrimary() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence5", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", extraYAML: "watchdog:\n  mode: off\n  self_fence: true\n")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.contains("self-fence armed") }, "\(pg0.log)")
        let before = SafetyTests.postmasterIdentity(pg0)
        pg0.crash()
        try pg0.start()
        // Past the old companion's deadline (ttl 20 - safety_margin 5 from the last refresh).
        try await Task.sleep(for: .seconds(18))
        #expect(SafetyTests.postmasterIdentity(pg0) == before, "the primary was restarted: \(pg0.log)")
        #expect(Self.writable(pg0))
        #expect(!pg0.log.contains("did not refresh the leader key in time"), "\(pg0.log)")
        #expect(pg0.log.contains("ended the self-fence companion"), "\(pg0.log)")
    }

    /// An agent started beside a running primary while the DCS is out of reach could never
    /// refresh a key, so it once left the server accepting writes for as long as the DCS was
    /// gone (a replica may have the key by then). Patroni demotes any running primary without
    /// the DCS; Stork does so `retry_timeout` (4 s) after the agent started.
    @Test(.timeLimit(.minutes(3)))
    func aPrimaryWhoseAgentStartsWithoutTheDCSStopsAcceptingWrites() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence9", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        pg0.crash()
        etcd.stop()
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 20) { !Self.writable(pg0) }, "the primary kept accepting writes: \(pg0.log)")
        #expect(pg0.log.contains("demoting self because DCS is not accessible"), "\(pg0.log)")
        try await Task.sleep(for: .seconds(3))
        #expect(!Self.writable(pg0), "\(pg0.log)")
    }
}

extension FencingTests {
    /// A self-fence whose deadline (ttl - safety_margin) comes before the next refresh would
    /// stop a healthy primary after every refresh: the member neither bootstraps nor leads,
    /// and says why.
    @Test(.timeLimit(.minutes(2)))
    func aSelfFenceShorterThanLoopWaitKeepsTheMemberFromLeading() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence6", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", extraYAML: "watchdog:\n  mode: off\n  self_fence: true\n  safety_margin: 20\n")
        try pg0.start()
        let refused = "not bootstrapping: watchdog.self_fence is on but ttl - safety_margin (0 s) is below loop_wait (1 s)"
        #expect(await TestSupport.waitUntil(timeout: 15) { pg0.log.contains(refused) }, "\(pg0.log)")
        try await Task.sleep(for: .seconds(3))
        #expect(!pg0.log.contains("stork-fence:"), "\(pg0.log)")
        #expect(!FileManager.default.fileExists(atPath: pg0.dataDir + "/PG_VERSION"), "bootstrapped: \(pg0.log)")
        #expect(await pg0.api("/patroni").1["watchdog_failed"] as? Bool == true)
    }

    /// SIGTERM to an agent whose primary will not stop (its postmaster is stopped with
    /// SIGSTOP, so pg_ctl times out): the leader key is not given back, so no replica promotes
    /// while the server may still accept writes; once it stops, the key expires and a replica
    /// takes over.
    @Test(.timeLimit(.minutes(3)))
    func anAgentWhosePrimaryWillNotStopKeepsTheKeyOnShutdown() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence7", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = cluster.addMember("pg0", postgresqlYAML: "pg_ctl_timeout: 3")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        let postmaster = try #require(FailoverTests.postmasterPID(pg0))
        kill(postmaster, SIGSTOP)
        let stopping = Date()
        pg0.stop(timeout: 40)
        #expect(!pg0.isAgentRunning)
        // How the agent ended, for a run where it logged nothing after SIGTERM (seen once under load).
        let ended = "agent ended after \(Int(Date().timeIntervalSince(stopping))) s, \(pg0.process.map { "\($0.terminationReason == .exit ? "exit" : "signal") \($0.terminationStatus)" } ?? "-")"
        #expect(try runEtcdctl(etcd, ["get", "--print-value-only", "/service/fence7/leader"]) == "pg0", "\(ended)\n\(pg0.log)")
        #expect(pg0.log.contains("the leader key is not given back"), "\(pg0.log)")
        #expect(!Self.writable(pg1))
        kill(postmaster, SIGCONT)
        #expect(await TestSupport.waitUntil(timeout: 60) { Self.writable(pg1) }, "\(cluster.logs())")
        #expect(!Self.writable(pg0))
    }

    /// A primary whose required watchdog cannot be activated (its agent came back after a
    /// crash, and the device is gone) keeps the leader key until it accepts no writes,
    /// Patroni's order (demoted first, released after). Its postmaster is stopped with SIGSTOP
    /// here, so the stop hangs: the key stays pg0's throughout, and once the server has
    /// stopped, pg1 takes over.
    @Test(.timeLimit(.minutes(4)))
    func aPrimaryThatCannotBeFencedKeepsTheKeyUntilItAcceptsNoWrites() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "fence8", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let device = cluster.root + "/watchdog"
        #expect(mkfifo(device, 0o600) == 0)
        TestSupport.chownToPostgres(device)
        let pipe = WatchdogPipe(device)
        let pg0 = cluster.addMember("pg0", extraYAML: "watchdog:\n  mode: required\n  driver: testing\n  device: \(device)\n",
                                    postgresqlYAML: "pg_ctl_timeout: 3")
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")

        // The device has no reader now: opening it fails (ENXIO), as a missing driver would.
        pg0.crash()
        pipe.close()
        let postmaster = try #require(FailoverTests.postmasterPID(pg0))
        kill(postmaster, SIGSTOP)
        try pg0.start()
        var samples = 0, notPg0: [String] = []
        let start = Date()
        while Date().timeIntervalSince(start) < 12 {
            let leader = (try? runEtcdctl(etcd, ["get", "--print-value-only", "/service/fence8/leader"])) ?? "?"
            samples += 1
            if leader != "pg0" { notPg0.append(String(format: "%.1f s: %@", Date().timeIntervalSince(start), leader.isEmpty ? "none" : leader)) }
            try await Task.sleep(for: .milliseconds(200))
        }
        kill(postmaster, SIGCONT)
        #expect(notPg0.isEmpty, "the leader key left pg0 while its server could accept writes: \(notPg0.prefix(5)) of \(samples) samples\n\(pg0.log)")
        #expect(pg0.log.contains("watchdog could not be activated; keeping the leader key until PostgreSQL accepts no writes"), "\(pg0.log)")
        var bothWritable = 0
        let took = await TestSupport.waitUntil(timeout: 90, interval: 0.3) {
            let a = Self.writable(pg0), b = Self.writable(pg1)
            if a && b { bothWritable += 1 }
            return b && !a
        }
        #expect(took, "pg1 did not take over: \(cluster.logs())")
        #expect(bothWritable == 0)
    }
}

/// `stork-fence DATA_DIR` run by the test as the agent runs it (StorkProcess.Companion), its
/// log in a file. Not through Foundation's Process: its child monitor takes the companion
/// closing every inherited descriptor for an exit and blocks in waitpid, hanging every
/// later Process of the test.
final class FenceProcess: @unchecked Sendable {
    private let companion: Companion
    private let logPath: String
    private let lock = NSLock()
    private var exited = false
    private var closed = false

    init(dataDir: String, log: String) throws {
        logPath = log
        FileManager.default.createFile(atPath: log, contents: nil)
        let program = (storkBinary as NSString).deletingLastPathComponent + "/stork-fence"
        companion = try Companion.start(["/bin/sh", "-c", "exec \"$0\" \"$1\" 2>>\"$2\"", program, dataDir, log], environment: [])
    }

    static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func send(_ line: String) { _ = companion.send(line + "\n") }
    func closeInput() { _ = Glibc.shutdown(companion.socket, Int32(SHUT_WR)) }

    /// Reaps it once it has exited (a zombie still answers kill 0).
    var isRunning: Bool {
        lock.withLock {
            guard !exited else { return false }
            var status: Int32 = 0
            if waitpid(companion.pid, &status, WNOHANG) == companion.pid { exited = true }
            return !exited
        }
    }

    /// Kills it when it still runs and closes the socket; once.
    func end() {
        guard lock.withLock({ () -> Bool in defer { closed = true }; return !closed }) else { return }
        if isRunning {
            kill(companion.pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(companion.pid, &status, 0)
        }
        _ = Glibc.close(companion.socket)
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
