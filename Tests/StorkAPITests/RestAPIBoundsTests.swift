import Foundation
import Logging
import Synchronization
import Testing
import StorkAPI
import StorkConfig
import StorkDCS
import StorkTestSupport

/// What the API's clients may take from the agent: descriptors (idle connections, a cap), body
/// sizes, and the DCS calls of changing requests, which share the etcd client's one queue with
/// the HA loop's leader key refresh.
extension RestAPIServerTests {
    static func port(of base: String) -> Int { Int(base.split(separator: ":").last!)! }

    /// 300 idle connections: the server holds at most its cap (the rest wait in the listen
    /// backlog, holding none of its descriptors), closes the idle ones after the idle time,
    /// and a request on a new connection is answered once they are gone. The backlog is made
    /// long enough for all of them (`restapi.request_queue_size`), so none waits for a SYN retry.
    @Test func idleConnectionsAreCappedAndClosed() async throws {
        var limits = RestAPI.Limits()
        limits.idleTimeout = .seconds(2)
        try await withServer({ $0.requestQueueSize = 512 }, limits: limits) { base, _ in
            let port = Self.port(of: base)
            let idle = (0..<300).map { _ in LoopbackTCP.connect(port, blocking: false) }
            defer { for fd in idle where fd >= 0 { close(fd) } }
            #expect(idle.allSatisfy { $0 >= 0 })
            var most = 0
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .milliseconds(1500) {
                most = max(most, LoopbackTCP.acceptedSockets(onPort: port))
                try await Task.sleep(for: .milliseconds(50))
            }
            print("server held at most \(most) of 300 idle connections (cap \(limits.maxConnections))")
            #expect(most >= limits.maxConnections * 9 / 10, "the server took too few connections to tell: \(most)")
            #expect(most <= limits.maxConnections + 3, "the server held \(most) connections")
            // Past the idle time, the server has closed those it took.
            var closed = 0
            _ = await TestSupport.waitUntil(timeout: 5) {
                closed = idle.filter { LoopbackTCP.peerClosed($0) }.count
                return closed >= limits.maxConnections
            }
            print("closed by the server \(ContinuousClock.now - start) after the first connect: \(closed)")
            #expect(closed >= limits.maxConnections, "idle connections closed by the server: \(closed)")
            // A request on a new connection is answered.
            let asked = ContinuousClock.now
            let status = await Task.detached { LoopbackTCP.request(port, "GET", "/patroni") }.value
            let waited = ContinuousClock.now - asked
            print("GET /patroni behind the idle connections answered \(status.map(String.init) ?? "nothing") after \(waited)")
            #expect(status == 200)
            #expect(waited > .seconds(1), "answered before the idle connections ahead of it were closed")
        }
    }

    /// A changing request's body over 64 KiB is answered 413 (it was a silent 400, and
    /// `POST /reinitialize` went on without its options).
    @Test func aBodyOverTheLimitIsAnswered413() async throws {
        try await withServer({ _ in }) { base in
            let big = JSONValue.object(["leader": .string("pg0"), "candidate": .string(String(repeating: "x", count: 100 * 1024))])
            for path in ["/switchover", "/failover", "/reinitialize"] {
                let r = try await MemberAPIClient().request("POST", url: base + path, json: big)
                #expect(r.status == 413 && r.text.hasPrefix("Request body too large"), "\(path): \(r)")
            }
            let small = try await MemberAPIClient().request("POST", url: base + "/reinitialize", json: .object(["force": .bool(true)]))
            #expect(small.status == 503 && small.text == noLeader, "\(small)")
        }
    }

    /// etcd a 50 ms round trip away, and 32 clients sending authorized `POST /switchover` with
    /// a candidate that does not exist, back to back: the agent's leader key refresh (on the
    /// same etcd client) waits behind at most one of them, not behind every one in flight.
    @Test func aFloodOfSwitchoversDoesNotDelayTheLeaderRefresh() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let proxy = try DelayProxy(to: Self.port(of: etcd.clientURL), delay: .milliseconds(25))
        defer { proxy.stop() }
        try await withServer({ $0.username = "admin"; $0.password = "api-Secret" }, limits: RestAPI.Limits(), dcs: { config, logger in
            let dcs = EtcdDCS(options: EtcdClientOptions(endpoints: ["http://127.0.0.1:\(proxy.port)"]),
                              keyPrefix: config.keyPrefix, memberName: config.name, logger: logger)
            return dcs
        }) { base, dcs in
            let port = Self.port(of: base)
            #expect(try await dcs.acquireLeader(ttl: 30))
            var alone = Duration.zero
            for _ in 0..<5 {
                let t = ContinuousClock.now
                #expect(try await dcs.refreshLeader(ttl: 30))
                alone = max(alone, ContinuousClock.now - t)
            }
            let authorization = "Authorization: Basic " + Data("admin:api-Secret".utf8).base64EncodedString()
            let body = #"{"leader": "pg0", "candidate": "nobody"}"#
            let stop = Shared(false), answers = Shared<[Int: Int]>([:]), running = Shared(32)
            for _ in 0..<32 {
                Thread.detachNewThread {
                    while !stop.value.withLock({ $0 }) {
                        let code = LoopbackTCP.request(port, "POST", "/switchover", body: body, headers: [authorization]) ?? 0
                        answers.value.withLock { $0[code, default: 0] += 1 }
                    }
                    running.value.withLock { $0 -= 1 }
                }
            }
            try await Task.sleep(for: .seconds(1))
            var flooded = Duration.zero
            for _ in 0..<10 {
                let t = ContinuousClock.now
                #expect(try await dcs.refreshLeader(ttl: 30))
                flooded = max(flooded, ContinuousClock.now - t)
                try await Task.sleep(for: .milliseconds(200))
            }
            stop.value.withLock { $0 = true }
            _ = await TestSupport.waitUntil(timeout: 30) { running.value.withLock { $0 } == 0 }
            let counts = answers.value.withLock { $0 }
            print("leader refresh: \(alone) at most alone, \(flooded) at most under the flood; answers: \(counts)")
            #expect(flooded < .milliseconds(600), "the leader refresh waited \(flooded) behind the flood (\(alone) alone)")
            #expect(counts[412, default: 0] > 0 && counts.keys.allSatisfy { [412, 503].contains($0) }, "\(counts)")
        }
    }
}
