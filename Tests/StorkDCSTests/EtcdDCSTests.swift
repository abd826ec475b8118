import Foundation
import StorkConfig
import StorkDCS
import StorkTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// EtcdDCS against real etcd servers; each test starts (and destroys) its own.
@Suite("EtcdDCS (real etcd)", .serialized)
struct EtcdDCSTests {
    @Test("create-only initialize: exactly one of two racing agents wins, every round")
    func initializeRace() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let prefix = uniquePrefix("race")
        let a = etcdDCS([etcd.clientURL], prefix: prefix, name: "a")
        let b = etcdDCS([etcd.clientURL], prefix: prefix, name: "b")
        for _ in 0..<5 {
            async let ra = a.createInitialize("")
            async let rb = b.createInitialize("")
            let results = try await [ra, rb]
            #expect(results.filter { $0 }.count == 1, "results: \(results)")
            #expect(try await a.clusterView().initialize == "")
            try await b.deleteInitialize()
            #expect(try await a.clusterView().initialize == nil)
        }
    }

    @Test("set and delete initialize; create-only does not overwrite")
    func setDeleteInitialize() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let dcs = etcdDCS([etcd.clientURL], prefix: uniquePrefix("init"), name: "a")
        #expect(try await dcs.clusterView().initialize == nil)
        #expect(try await dcs.createInitialize(""))
        try await dcs.setInitialize("7312345678901234567")
        #expect(try await dcs.createInitialize("") == false)
        #expect(try await dcs.clusterView().initialize == "7312345678901234567")
        try await dcs.deleteInitialize()
        #expect(try await dcs.clusterView().initialize == nil)
        try await dcs.deleteInitialize()  // deleting an absent key is fine
    }

    @Test("leader: create-only acquire, refresh and delete by the owner only")
    func leaderOwnership() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let prefix = uniquePrefix("leader")
        let a = etcdDCS([etcd.clientURL], prefix: prefix, name: "a")
        let b = etcdDCS([etcd.clientURL], prefix: prefix, name: "b")
        #expect(try await b.refreshLeader(ttl: 30) == false)  // nobody holds it
        #expect(try await b.leaderExpiresIn() == nil, "no leader key")
        #expect(try await a.acquireLeader(ttl: 30))
        let left = try await b.leaderExpiresIn() ?? 0
        #expect(left >= 28 && left <= 30, "the leader's lease runs out in \(left) s")
        #expect(try await b.acquireLeader(ttl: 30) == false)
        #expect(try await a.acquireLeader(ttl: 30) == false)  // create-only, even for the holder
        #expect(try await b.refreshLeader(ttl: 30) == false)
        #expect(try await a.refreshLeader(ttl: 30))
        try await b.deleteLeader()
        #expect(try await a.clusterView().leader == "a")
        try await a.deleteLeader()
        #expect(try await a.clusterView().leader == nil)
        #expect(try await a.refreshLeader(ttl: 30) == false)
        #expect(try await b.acquireLeader(ttl: 30))
        #expect(try await a.clusterView().leader == "b")
    }

    @Test("leader and member keys live while refreshed and expire after the TTL; a new lease follows")
    func expiry() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let prefix = uniquePrefix("ttl")
        let a = etcdDCS([etcd.clientURL], prefix: prefix, name: "a")
        let observer = etcdDCS([etcd.clientURL], prefix: prefix, name: "observer")
        try await a.touchMember(memberData("a", port: 5432, role: "primary"), ttl: 2)
        #expect(try await a.acquireLeader(ttl: 2))
        let firstLease = a.leaseID
        #expect(firstLease != nil)

        // Refreshing keeps both alive well past the TTL.
        for _ in 0..<5 {
            try await Task.sleep(nanoseconds: 700_000_000)
            #expect(try await a.refreshLeader(ttl: 2))
        }
        let alive = try await observer.clusterView()
        #expect(alive.leader == "a")
        #expect(alive.member(named: "a") != nil)

        // Then they go away on their own.
        let start = Date()
        let gone = try await TestSupport.waitUntil(timeout: 8, interval: 0.2) {
            let v = try await observer.clusterView()
            return v.leader == nil && v.members.isEmpty
        }
        let elapsed = Date().timeIntervalSince(start)
        #expect(gone, "leader/member still present after 8 s")
        #expect(elapsed >= 1.0, "expired too early: \(elapsed) s")

        // The old lease is gone: refresh fails, acquire succeeds on a newly granted lease.
        #expect(try await a.refreshLeader(ttl: 2) == false)
        #expect(try await a.acquireLeader(ttl: 2))
        #expect(a.leaseID != nil && a.leaseID != firstLease)
        #expect(try await observer.clusterView().leader == "a")
    }

    @Test("clusterView shows initialize, config, leader, members and the leader's optime")
    func clusterViewContents() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let prefix = uniquePrefix("view")
        let a = etcdDCS([etcd.clientURL], prefix: prefix, name: "a")
        let b = etcdDCS([etcd.clientURL], prefix: prefix, name: "b")
        let config: JSONValue = .object(["ttl": .int(30), "loop_wait": .int(10),
                                         "postgresql": .object(["parameters": .object(["max_connections": .int(100)])])])
        #expect(try await a.createInitialize("7312345678901234567"))
        #expect(try await a.writeConfig(config, ifVersion: nil))
        #expect(try await b.writeConfig(.object(["ttl": .int(99)]), ifVersion: nil) == false)
        try await a.touchMember(memberData("a", port: 5432, role: "primary"), ttl: 30)
        try await b.touchMember(memberData("b", port: 5433), ttl: 30)
        #expect(try await a.acquireLeader(ttl: 30))
        try await a.writeLeaderOptime(67_108_864)

        // A key outside the prefix (another scope sharing a name prefix) is not ours.
        let other = etcdDCS([etcd.clientURL], prefix: String(prefix.dropLast()) + "x/", name: "z")
        try await other.touchMember(memberData("z", port: 6000), ttl: 30)

        let view = try await b.clusterView()
        #expect(view.initialize == "7312345678901234567")
        #expect(view.config == config)
        #expect(view.leader == "a")
        #expect(view.members.map(\.name) == ["a", "b"])
        #expect(view.leaderMember?.role == "primary")
        #expect(view.member(named: "b")?.connURL == "postgres://127.0.0.1:5433/postgres")
        #expect(view.member(named: "b")?.xlogLocation == 50_331_648)
        #expect(view.member(named: "b")?.tags["clonefrom"] == .bool(true))
        #expect(view.leaderOptime == 67_108_864)

        // A compare-and-set on the version read: the second writer of the same version loses.
        let stored = try #require(try await a.readConfig())
        #expect(stored.value == config)
        #expect(try await b.writeConfig(.object(["ttl": .int(20)]), ifVersion: stored.version))
        #expect(try await a.writeConfig(.object(["ttl": .int(40)]), ifVersion: stored.version) == false)
        #expect(try await a.clusterView().config == .object(["ttl": .int(20)]))
        try await b.deleteMember()
        #expect(try await a.clusterView().members.map(\.name) == ["a"])
    }

    @Test("raw keys are exactly what Patroni's etcd3 backend writes (read with etcdctl)")
    func payloadFormats() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let prefix = "/service/batman/"
        let a = etcdDCS([etcd.clientURL], prefix: prefix, name: "node1")
        let data = memberData("node1", port: 5432, role: "primary")
        #expect(try await a.createInitialize("7312345678901234567"))
        #expect(try await a.writeConfig(.object(["ttl": .int(25), "loop_wait": .int(5)]), ifVersion: nil))
        try await a.touchMember(data, ttl: 25)
        #expect(try await a.acquireLeader(ttl: 25))
        try await a.writeLeaderOptime(123_456)
        try await etcdDCS([etcd.clientURL], prefix: prefix, name: "x").setInitialize("7312345678901234567")

        let raw = try await etcdctlKeys(etcd.clientURL, prefix: prefix)
        #expect(Set(raw.keys) == ["/service/batman/initialize", "/service/batman/config", "/service/batman/leader",
                                  "/service/batman/members/node1", "/service/batman/status", "/service/batman/optime/leader"])
        #expect(raw["/service/batman/initialize"] == RawKey(value: "7312345678901234567", lease: 0))
        #expect(raw["/service/batman/leader"]?.value == "node1")
        #expect(raw["/service/batman/status"] == RawKey(value: "{\"optime\":123456}", lease: 0))
        #expect(raw["/service/batman/optime/leader"] == RawKey(value: "123456", lease: 0))
        #expect(raw["/service/batman/config"]?.lease == 0)
        #expect(raw["/service/batman/config"].flatMap { parseJSON($0.value) } == .object(["ttl": .int(25), "loop_wait": .int(5)]))
        let member = try #require(raw["/service/batman/members/node1"])
        #expect(parseJSON(member.value) == data)
        #expect(!member.value.contains(" "), "member JSON must be compact: \(member.value)")
        #expect(!member.value.contains("\\/"), "slashes must not be escaped: \(member.value)")

        // One lease per agent: member and leader share it, granted with the TTL.
        let lease = member.lease
        #expect(lease != 0)
        #expect(raw["/service/batman/leader"]?.lease == lease)
        #expect(String(lease) == a.leaseID)
        #expect(try await etcdctlLeaseGrantedTTL(etcd.clientURL, lease: lease) == 25)
    }

    @Test("failover: with one member of a 3-member cluster stopped, requests go to the next endpoint")
    func failover() async throws {
        let members = try await EtcdServer.startCluster(count: 3)
        defer { members.forEach { $0.destroy() } }
        let endpoints = members.map(\.clientURL)
        let prefix = uniquePrefix("failover")
        let a = etcdDCS(endpoints, prefix: prefix, name: "a", timeout: 1.5)
        try await a.touchMember(memberData("a", port: 5432), ttl: 30)
        #expect(try await a.acquireLeader(ttl: 30))
        #expect(a.client.currentEndpoint == endpoints[0])

        members[0].stop()
        let (view, seconds) = try await timed { try await a.clusterView() }
        #expect(view.leader == "a")
        #expect(view.member(named: "a") != nil)
        #expect(seconds < 3, "failover took \(seconds) s")
        #expect(a.client.currentEndpoint != endpoints[0])
        #expect(try await a.refreshLeader(ttl: 30))
        try await a.writeLeaderOptime(42)
        #expect(try await a.clusterView().leaderOptime == 42)

        // Quorum lost: a clear error naming every endpoint, within the per-endpoint bounds.
        members[1].stop()
        let started = Date()
        let error = await #expect(throws: DCSError.self) { try await a.clusterView() }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed < 3 * 1.5 + 1.5, "took \(elapsed) s")
        let message = error?.message ?? ""
        #expect(message.hasPrefix("etcd3: no endpoint answered ("), "\(message)")
        for e in endpoints { #expect(message.contains(e), "\(message)") }
    }

    @Test("unreachable endpoints give a clear DCSError quickly")
    func unreachable() async throws {
        let closed = "http://127.0.0.1:\(TestSupport.freePort())"
        let dcs = etcdDCS(["http://127.0.0.1:1", closed], prefix: uniquePrefix("down"), name: "a")
        let started = Date()
        let error = await #expect(throws: DCSError.self) { try await dcs.clusterView() }
        #expect(Date().timeIntervalSince(started) < 2)
        #expect(error?.message == "etcd3: no endpoint answered (http://127.0.0.1:1: Couldn't connect to server; \(closed): Couldn't connect to server)")
        await #expect(throws: DCSError.self) { try await dcs.acquireLeader(ttl: 10) }
    }

    @Test("an endpoint that accepts but never answers times out after the per-endpoint bound")
    func silentEndpoint() async throws {
        // A listening socket nobody accepts from: the kernel completes the handshake, then silence.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        #expect(listen(fd, 8) == 0)
        let endpoint = "http://127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"

        let dcs = etcdDCS([endpoint], prefix: uniquePrefix("silent"), name: "a", timeout: 0.5)
        let started = Date()
        let error = await #expect(throws: DCSError.self) { try await dcs.clusterView() }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.4 && elapsed < 2, "took \(elapsed) s")
        #expect(error?.message.contains("\(endpoint): Timeout was reached") == true, "\(error?.message ?? "")")
    }

    @Test("auth: wrong password and no credentials fail clearly, the right password works and re-authenticates")
    func auth() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let admin = EtcdClient(options: EtcdClientOptions(endpoints: [etcd.clientURL]))
        _ = try await admin.call("/auth/user/add", .object(["name": .string("root"), "password": .string("s3cret")]))
        _ = try await admin.call("/auth/role/add", .object(["name": .string("root")]))
        _ = try await admin.call("/auth/user/grant", .object(["user": .string("root"), "role": .string("root")]))
        _ = try await admin.call("/auth/enable", .object([:]))

        let prefix = uniquePrefix("auth")
        let wrong = etcdDCS([etcd.clientURL], prefix: prefix, name: "a", username: "root", password: "nope")
        let e1 = await #expect(throws: DCSError.self) { try await wrong.clusterView() }
        #expect(e1?.message.contains("authentication as 'root' failed") == true, "\(e1?.message ?? "")")
        #expect(e1?.message.contains("invalid user ID or password") == true, "\(e1?.message ?? "")")

        let anonymous = etcdDCS([etcd.clientURL], prefix: prefix, name: "a")
        let e2 = await #expect(throws: DCSError.self) { try await anonymous.touchMember(memberData("a", port: 1), ttl: 10) }
        #expect(e2?.message.contains("user name is empty") == true, "\(e2?.message ?? "")")

        let right = etcdDCS([etcd.clientURL], prefix: prefix, name: "a", username: "root", password: "s3cret")
        try await right.touchMember(memberData("a", port: 5432), ttl: 10)
        #expect(try await right.acquireLeader(ttl: 10))
        #expect(try await right.clusterView().leader == "a")
        #expect(right.client.authenticationCount == 1)

        // A password change (to the same password) invalidates etcd's tokens for the user:
        // the next request is refused with "invalid auth token" and the client re-authenticates once.
        let admin2 = EtcdClient(options: EtcdClientOptions(endpoints: [etcd.clientURL], username: "root", password: "s3cret"))
        _ = try await admin2.call("/auth/user/changepw", .object(["name": .string("root"), "password": .string("s3cret")]))
        #expect(try await right.refreshLeader(ttl: 10))
        #expect(try await right.clusterView().member(named: "a") != nil)
        #expect(right.client.authenticationCount == 2)
    }
}
