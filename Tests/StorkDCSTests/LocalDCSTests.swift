import Foundation
import StorkConfig
import StorkDCS
import StorkTestSupport
import Testing

@Suite("LocalDCS (one machine, flock'd JSON file)")
struct LocalDCSTests {
    private func pair(_ dir: String, prefix: String = "/service/batman/") -> (LocalDCS, LocalDCS) {
        (LocalDCS(path: dir, keyPrefix: prefix, memberName: "a", logger: testLogger),
         LocalDCS(path: dir, keyPrefix: prefix, memberName: "b", logger: testLogger))
    }

    @Test("two instances on one directory race for initialize and leader: exactly one wins each round")
    func race() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        let (a, b) = pair(dir + "/dcs")  // the store creates its directory
        for _ in 0..<10 {
            async let ia = a.createInitialize("")
            async let ib = b.createInitialize("")
            async let la = a.acquireLeader(ttl: 30)
            async let lb = b.acquireLeader(ttl: 30)
            let inits = try await [ia, ib], leaders = try await [la, lb]
            #expect(inits.filter { $0 }.count == 1, "\(inits)")
            #expect(leaders.filter { $0 }.count == 1, "\(leaders)")
            let winner = leaders[0] ? "a" : "b"
            #expect(try await a.clusterView().leader == winner)
            try await a.deleteInitialize()
            try await a.deleteLeader()
            try await b.deleteLeader()
            let v = try await b.clusterView()
            #expect(v.initialize == nil && v.leader == nil)
        }
    }

    @Test("initialize: create-only, set, delete")
    func initialize() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        let (a, _) = pair(dir)
        #expect(try await a.createInitialize(""))
        #expect(try await a.createInitialize("x") == false)
        #expect(try await a.clusterView().initialize == "")
        try await a.setInitialize("7312345678901234567")
        #expect(try await a.clusterView().initialize == "7312345678901234567")
        try await a.deleteInitialize()
        #expect(try await a.clusterView().initialize == nil)
    }

    @Test("leader: acquire, refresh and delete by the owner only")
    func leaderOwnership() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        let (a, b) = pair(dir)
        #expect(try await b.leaderExpiresIn() == nil, "no leader key")
        #expect(try await b.refreshLeader(ttl: 30) == false)
        #expect(try await a.acquireLeader(ttl: 30))
        let left = try await b.leaderExpiresIn() ?? 0
        #expect(left > 28 && left <= 30, "the leader's lease runs out in \(left) s")
        #expect(try await b.acquireLeader(ttl: 30) == false)
        #expect(try await b.refreshLeader(ttl: 30) == false)
        #expect(try await a.refreshLeader(ttl: 30))
        try await b.deleteLeader()
        #expect(try await a.clusterView().leader == "a")
        try await a.deleteLeader()
        #expect(try await a.clusterView().leader == nil)
        #expect(try await b.acquireLeader(ttl: 30))
        #expect(try await a.clusterView().leader == "b")
    }

    @Test("TTL: keys survive a restart, live while refreshed, then expire; a new lease follows")
    func expiryAndRestart() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        do {
            let a = LocalDCS(path: dir, keyPrefix: "/service/batman/", memberName: "a", logger: testLogger)
            try await a.touchMember(memberData("a", port: 5432, role: "primary"), ttl: 2)
            #expect(try await a.acquireLeader(ttl: 2))
            for _ in 0..<4 {
                try await Task.sleep(nanoseconds: 700_000_000)
                #expect(try await a.refreshLeader(ttl: 2))
            }
        }
        // A new process (instance) reads what the old one wrote.
        let observer = LocalDCS(path: dir, keyPrefix: "/service/batman/", memberName: "observer", logger: testLogger)
        let v = try await observer.clusterView()
        #expect(v.leader == "a")
        #expect(v.member(named: "a")?.role == "primary")

        let start = Date()
        let gone = try await TestSupport.waitUntil(timeout: 5, interval: 0.1) {
            let v = try await observer.clusterView()
            return v.leader == nil && v.members.isEmpty
        }
        #expect(gone)
        #expect(Date().timeIntervalSince(start) >= 0.5)

        // The restarted agent "a": refresh fails (the key is gone), acquire works.
        let a2 = LocalDCS(path: dir, keyPrefix: "/service/batman/", memberName: "a", logger: testLogger)
        #expect(try await a2.refreshLeader(ttl: 2) == false)
        #expect(try await a2.acquireLeader(ttl: 2))
        #expect(try await observer.clusterView().leader == "a")
        try await a2.revokeLease()
        #expect(try await observer.clusterView().leader == nil)
    }

    @Test("clusterView contents and the stored values in Patroni's formats")
    func contentsAndFormats() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        let (a, b) = pair(dir)
        let config: JSONValue = .object(["ttl": .int(30), "loop_wait": .int(10)])
        #expect(try await a.createInitialize("7312345678901234567"))
        #expect(try await a.writeConfig(config, ifVersion: nil))
        #expect(try await b.writeConfig(.object([:]), ifVersion: nil) == false)
        let stored = try #require(try await b.readConfig())
        #expect(try await b.writeConfig(.object(["ttl": .int(20)]), ifVersion: stored.version))
        #expect(try await a.writeConfig(.object(["ttl": .int(40)]), ifVersion: stored.version) == false)
        #expect(try await a.readConfig()?.value == .object(["ttl": .int(20)]))
        #expect(try await a.writeConfig(config, ifVersion: try await a.readConfig()?.version))
        try await a.touchMember(memberData("a", port: 5432, role: "primary"), ttl: 30)
        try await b.touchMember(memberData("b", port: 5433), ttl: 30)
        #expect(try await a.acquireLeader(ttl: 30))
        try await a.writeLeaderOptime(123_456)
        let other = LocalDCS(path: dir, keyPrefix: "/service/batmanx/", memberName: "z", logger: testLogger)
        try await other.touchMember(memberData("z", port: 6000), ttl: 30)

        let view = try await b.clusterView()
        #expect(view.initialize == "7312345678901234567")
        #expect(view.config == config)
        #expect(view.leader == "a")
        #expect(view.members.map(\.name) == ["a", "b"])
        #expect(view.leaderOptime == 123_456)
        #expect(view.member(named: "b")?.apiURL == "http://127.0.0.1:6433/patroni")

        // The file on disk: JSON with full keys, leases with absolute expiry times.
        let raw = try #require(FileManager.default.contents(atPath: a.storeFile))
        let json = try #require(try JSONSerialization.jsonObject(with: raw) as? [String: Any])
        let keys = try #require(json["keys"] as? [String: [String: Any]])
        #expect(keys["/service/batman/leader"]?["value"] as? String == "a")
        #expect(keys["/service/batman/status"]?["value"] as? String == "{\"optime\":123456}")
        #expect(keys["/service/batman/optime/leader"]?["value"] as? String == "123456")
        #expect(keys["/service/batman/initialize"]?["lease"] == nil)
        let memberValue = try #require(keys["/service/batman/members/a"]?["value"] as? String)
        #expect(parseJSON(memberValue) == memberData("a", port: 5432, role: "primary"))
        #expect(!memberValue.contains(" "))
        let lease = try #require(keys["/service/batman/members/a"]?["lease"] as? String)
        #expect(keys["/service/batman/leader"]?["lease"] as? String == lease)
        let leases = try #require(json["leases"] as? [String: [String: Any]])
        let expires = try #require(leases[lease]?["expires"] as? Double)
        #expect(abs(expires - Date().timeIntervalSince1970 - 30) < 5)
        // No temporary files are left behind.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(files == ["lock", "store.json"])

        try await b.deleteMember()
        #expect(try await a.clusterView().members.map(\.name) == ["a"])
    }

    @Test("a path that is not a directory, or a corrupt store, gives a clear DCSError")
    func errors() async throws {
        let dir = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(dir) }
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8))
        let bad = LocalDCS(path: dir + "/file", keyPrefix: "/service/x/", memberName: "a", logger: testLogger)
        let e1 = await #expect(throws: DCSError.self) { try await bad.clusterView() }
        #expect(e1?.message.contains("is not a directory") == true)

        _ = FileManager.default.createFile(atPath: dir + "/store.json", contents: Data("{oops".utf8))
        let corrupt = LocalDCS(path: dir, keyPrefix: "/service/x/", memberName: "a", logger: testLogger)
        let e2 = await #expect(throws: DCSError.self) { try await corrupt.createInitialize("") }
        #expect(e2?.message.contains("is not a Stork store") == true)
    }

    /// Run as root (`stork list` by an operator) on a store its agents' user owns: that user
    /// can plant links. Before, root followed `lock` and the temp file `store.json.tmp.<pid>`
    /// and gave their targets to the store's owner (and truncated the temp file's target).
    @Test("as root, links planted in the store are not followed, and a store others can write is refused")
    func rootFollowsNoPlantedLink() async throws {
        try #require(geteuid() == 0, "this test needs root, as CI runs it")
        let base = TestSupport.makeTempDir("localdcs")
        defer { TestSupport.removeTree(base) }
        let dir = base + "/store", victim = base + "/victim"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(chown(dir, 65534, 65534) == 0)
        let owner = { () -> uid_t in var st = stat(); _ = lstat(victim, &st); return st.st_uid }
        _ = FileManager.default.createFile(atPath: victim, contents: Data("root's".utf8), attributes: [.posixPermissions: 0o600])
        let dcs = LocalDCS(path: dir, keyPrefix: "/service/x/", memberName: "a", logger: testLogger)

        try FileManager.default.createSymbolicLink(atPath: dir + "/lock", withDestinationPath: victim)
        let linked = await #expect(throws: DCSError.self) { try await dcs.clusterView() }
        #expect(linked?.message.contains("\(dir)/lock is a symbolic link") == true, "\(linked?.message ?? "")")
        #expect(owner() == 0, "the lock's target was given to the store's owner")
        try FileManager.default.removeItem(atPath: dir + "/lock")

        try FileManager.default.createSymbolicLink(atPath: dir + "/store.json.tmp.\(getpid())", withDestinationPath: victim)
        #expect(try await dcs.createInitialize("7"))
        #expect(owner() == 0, "the temp file's target was given to the store's owner")
        #expect(FileManager.default.contents(atPath: victim) == Data("root's".utf8), "the temp file's target was overwritten")
        var st = stat()
        #expect(lstat(dir + "/lock", &st) == 0 && st.st_uid == 65534, "what root creates in the store goes to its owner")
        #expect(lstat(dir + "/store.json", &st) == 0 && st.st_uid == 65534 && (st.st_mode & S_IFMT) == S_IFREG)

        try FileManager.default.removeItem(atPath: dir + "/store.json")
        try FileManager.default.createSymbolicLink(atPath: dir + "/store.json", withDestinationPath: victim)
        let store = await #expect(throws: DCSError.self) { try await dcs.clusterView() }
        #expect(store?.message.contains("\(dir)/store.json is a symbolic link") == true, "\(store?.message ?? "")")
        try FileManager.default.removeItem(atPath: dir + "/store.json")

        #expect(chmod(dir, 0o777) == 0)
        let open = await #expect(throws: DCSError.self) { try await dcs.clusterView() }
        #expect(open?.message.contains("writable by others") == true, "\(open?.message ?? "")")
    }

    @Test("makeDCS picks the backend from config.dcs")
    func makeDCSChoosesBackend() throws {
        let pg = PostgresSettings(listen: "127.0.0.1:5432", connectAddress: "127.0.0.1:5432", dataDir: "/tmp/x",
                                  pgpass: "/tmp/pgpass", superuser: PostgresUser(username: "postgres", password: nil),
                                  replication: PostgresUser(username: "replicator", password: nil))
        var config = Config(scope: "batman", name: "node1", dcs: .local(path: "/tmp/stork-dcs"), postgresql: pg)
        config.namespace = "/service"
        let local = try #require(makeDCS(config: config, logger: testLogger) as? LocalDCS)
        #expect(local.directory == "/tmp/stork-dcs")
        #expect(local.keys.leader == "/service/batman/leader")
        #expect(local.keys.member == "/service/batman/members/node1")

        config.dcs = .etcd3(Etcd3Settings(endpoints: ["http://127.0.0.1:2379"]))
        let etcd = try #require(makeDCS(config: config, logger: testLogger) as? EtcdDCS)
        #expect(etcd.client.options.settings.endpoints == ["http://127.0.0.1:2379"])
        #expect(etcd.keys.prefix == "/service/batman/")
    }
}
