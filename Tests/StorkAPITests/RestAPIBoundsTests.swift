import Foundation
import Logging
import Testing
import StorkAPI
import StorkConfig
import StorkDCS
import StorkTestSupport

/// What the API's clients may take from the agent: descriptors (idle connections, a cap) and
/// body sizes.
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
}
