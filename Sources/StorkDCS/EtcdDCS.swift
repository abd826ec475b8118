import Foundation
import Logging
import StorkConfig
import Synchronization

/// The etcd v3 backend, with Patroni's etcd3 layout and lease scheme (patroni/dcs/etcd3.py):
/// - one lease per agent, granted with the TTL; `members/<name>` and `leader` are attached
///   to it, and keeping the lease alive keeps both alive (like Patroni, a member that touches
///   its key also keeps its leader key);
/// - `leader` = the member name, created only if absent (txn `create_revision == 0`),
///   refreshed and deleted only through a txn that compares the value with our name;
/// - `initialize` (create-only through the same txn), `config`, `status` (`{"optime":N}`)
///   `optime/leader`, `history` (a promotion appended) and `failover` carry no lease;
/// - a lease that etcd no longer knows (keepalive answers without a TTL, or a put says
///   "requested lease not found") is granted anew.
public final class EtcdDCS: DCS {
    public let client: EtcdClient
    public let keys: DCSKeys
    private let logger: Logger
    private let lease = Mutex<LeaseState>(LeaseState())

    private struct LeaseState {
        var id: String?
        var ttl = 0
    }

    public init(settings: Etcd3Settings, keyPrefix: String, memberName: String, logger: Logger) {
        self.client = EtcdClient(options: EtcdClientOptions(settings: settings))
        self.keys = DCSKeys(prefix: keyPrefix, memberName: memberName)
        self.logger = logger
    }

    /// With explicit client options (per-endpoint timeout, ...).
    public init(options: EtcdClientOptions, keyPrefix: String, memberName: String, logger: Logger) {
        self.client = EtcdClient(options: options)
        self.keys = DCSKeys(prefix: keyPrefix, memberName: memberName)
        self.logger = logger
    }

    /// The lease this agent holds now (etcd's decimal ID), nil before the first TTL write.
    public var leaseID: String? { lease.withLock { $0.id } }

    // MARK: DCS

    public func clusterView() async throws -> ClusterView {
        let keys = self.keys
        return try await client.run { conn throws(EtcdFailure) in
            let answer = try conn.call("/kv/range", .object([
                "key": .string(EtcdClient.base64(keys.prefix)),
                "range_end": .string(EtcdClient.prefixRangeEndBase64(keys.prefix)),
            ]))
            var nodes: [String: String] = [:]
            if case .array(let kvs)? = answer["kvs"] {
                for kv in kvs {
                    guard let k = EtcdClient.text(base64: kv["key"]) else { continue }
                    nodes[k] = EtcdClient.text(base64: kv["value"]) ?? ""
                }
            }
            return keys.clusterView(from: nodes)
        }
    }

    public func createInitialize(_ value: String) async throws -> Bool {
        try await createOnly(keys.initialize, value, withLease: false, ttl: 0)
    }

    public func setInitialize(_ value: String) async throws {
        try await put(keys.initialize, value)
    }

    public func deleteInitialize() async throws {
        try await delete(keys.initialize)
    }

    public func acquireLeader(ttl: Int) async throws -> Bool {
        let ok = try await createOnly(keys.leader, keys.memberName, withLease: true, ttl: ttl)
        if !ok { logger.info("could not take the leader key: another member holds it") }
        return ok
    }

    public func refreshLeader(ttl: Int) async throws -> Bool {
        let keys = self.keys
        return try await withLease(ttl: ttl) { conn, leaseID throws(EtcdFailure) in
            let name = JSONValue.string(EtcdClient.base64(keys.memberName))
            let answer = try conn.call("/kv/txn", .object([
                "compare": .array([.object(["key": .string(EtcdClient.base64(keys.leader)), "target": .string("VALUE"), "value": name])]),
                "success": .array([.object(["request_put": Self.putFields(keys.leader, keys.memberName, lease: leaseID)])]),
            ]))
            return answer["succeeded"] == .bool(true)
        }
    }

    public func deleteLeader() async throws {
        let keys = self.keys
        _ = try await client.run { conn throws(EtcdFailure) in
            let key = JSONValue.string(EtcdClient.base64(keys.leader))
            _ = try conn.call("/kv/txn", .object([
                "compare": .array([.object(["key": key, "target": .string("VALUE"), "value": .string(EtcdClient.base64(keys.memberName))])]),
                "success": .array([.object(["request_delete_range": .object(["key": key])])]),
            ]))
        }
    }

    public func touchMember(_ data: JSONValue, ttl: Int) async throws {
        let keys = self.keys
        let value = DCSKeys.memberValue(data)
        _ = try await withLease(ttl: ttl) { conn, leaseID throws(EtcdFailure) in
            _ = try conn.call("/kv/put", Self.putFields(keys.member, value, lease: leaseID))
        }
    }

    public func deleteMember() async throws {
        try await delete(keys.member)
    }

    public func readConfig() async throws -> StoredConfig? {
        let key = keys.config
        return try await client.run { conn throws(EtcdFailure) -> StoredConfig? in
            let answer = try conn.call("/kv/range", .object(["key": .string(EtcdClient.base64(key))]))
            guard case .array(let kvs)? = answer["kvs"], let kv = kvs.first, let revision = kv["mod_revision"]?.scalarText else { return nil }
            return StoredConfig(text: EtcdClient.text(base64: kv["value"]) ?? "", version: revision)
        }
    }

    public func writeConfig(_ config: JSONValue, ifVersion version: String?) async throws -> Bool {
        let key = keys.config, value = DCSKeys.configValue(config)
        guard let version else { return try await createOnly(key, value, withLease: false, ttl: 0) }
        return try await client.run { conn throws(EtcdFailure) in
            let answer = try conn.call("/kv/txn", .object([
                "compare": .array([.object(["key": .string(EtcdClient.base64(key)), "target": .string("MOD"), "mod_revision": .string(version)])]),
                "success": .array([.object(["request_put": Self.putFields(key, value, lease: nil)])]),
            ]))
            return answer["succeeded"] == .bool(true)
        }
    }

    public func writeLeaderOptime(_ lsn: Int) async throws {
        let keys = self.keys
        _ = try await client.run { conn throws(EtcdFailure) in
            _ = try conn.call("/kv/txn", .object([
                "success": .array([
                    .object(["request_put": Self.putFields(keys.status, DCSKeys.statusValue(lsn), lease: nil)]),
                    .object(["request_put": Self.putFields(keys.leaderOptime, String(lsn), lease: nil)]),
                ]),
            ]))
        }
    }

    public func appendHistory(timeline: Int, lsn: Int, reason: String, newLeader: String, keep: Int) async throws {
        let keys = self.keys
        _ = try await client.run { conn throws(EtcdFailure) in
            let answer = try conn.call("/kv/range", .object(["key": .string(EtcdClient.base64(keys.history))]))
            var current: String?
            if case .array(let kvs)? = answer["kvs"], let kv = kvs.first { current = EtcdClient.text(base64: kv["value"]) }
            let value = DCSKeys.historyValue(appending: (timeline, lsn, reason, newLeader), to: current, keep: keep)
            _ = try conn.call("/kv/put", Self.putFields(keys.history, value, lease: nil))
        }
    }

    public func leaderExpiresIn() async throws -> Double? {
        let keys = self.keys
        return try await client.run { conn throws(EtcdFailure) -> Double? in
            let answer = try conn.call("/kv/range", .object(["key": .string(EtcdClient.base64(keys.leader))]))
            guard case .array(let kvs)? = answer["kvs"], let lease = kvs.first?["lease"]?.scalarText, lease != "0" else { return nil }
            let ttl = try conn.call("/lease/timetolive", .object(["ID": .string(lease)]))
            return ttl["TTL"]?.scalarText.flatMap(Double.init)
        }
    }

    public func setFailover(_ failover: ManualFailover?) async throws {
        if let failover { try await put(keys.failover, failover.value) } else { try await delete(keys.failover) }
    }

    /// Revokes this agent's lease: etcd drops `members/<name>` and (if ours) `leader` at once.
    public func revokeLease() async throws {
        guard let id = lease.withLock({ s -> String? in let id = s.id; s.id = nil; return id }) else { return }
        _ = try await client.call("/lease/revoke", .object(["ID": .string(id)]))
    }

    // MARK: pieces

    static func putFields(_ key: String, _ value: String, lease: String?) -> JSONValue {
        var o: [String: JSONValue] = ["key": .string(EtcdClient.base64(key)), "value": .string(EtcdClient.base64(value))]
        if let lease { o["lease"] = .string(lease) }
        return .object(o)
    }

    private func put(_ key: String, _ value: String) async throws {
        _ = try await client.call("/kv/put", Self.putFields(key, value, lease: nil))
    }

    private func delete(_ key: String) async throws {
        _ = try await client.call("/kv/deleterange", .object(["key": .string(EtcdClient.base64(key))]))
    }

    /// Puts `key` only if it does not exist (txn on `create_revision == 0`), with our lease if asked.
    private func createOnly(_ key: String, _ value: String, withLease: Bool, ttl: Int) async throws -> Bool {
        let body: @Sendable (EtcdConnection, String?) throws(EtcdFailure) -> Bool = { conn, leaseID throws(EtcdFailure) in
            let answer = try conn.call("/kv/txn", .object([
                "compare": .array([.object(["key": .string(EtcdClient.base64(key)), "target": .string("CREATE"), "create_revision": .string("0")])]),
                "success": .array([.object(["request_put": Self.putFields(key, value, lease: leaseID)])]),
            ]))
            return answer["succeeded"] == .bool(true)
        }
        if withLease { return try await self.withLease(ttl: ttl, body) }
        return try await client.run { conn throws(EtcdFailure) in try body(conn, nil) }
    }

    /// Keeps the lease alive (or grants it) and runs `body` with its ID, all on the client's
    /// queue; if etcd says the lease is gone, grants a new one and runs `body` once more.
    private func withLease<T: Sendable>(ttl: Int, _ body: @escaping @Sendable (EtcdConnection, String) throws(EtcdFailure) -> T) async throws -> T {
        let ttl = max(ttl, 1)
        return try await client.run { conn throws(EtcdFailure) in
            let id = try self.ensureLease(conn, ttl: ttl)
            do throws(EtcdFailure) {
                return try body(conn, id)
            } catch where error.isLeaseNotFound {
                self.logger.warning("etcd3: our lease \(id) disappeared; granting a new one")
                self.lease.withLock { $0.id = nil }
                return try body(conn, try self.ensureLease(conn, ttl: ttl))
            }
        }
    }

    private func ensureLease(_ conn: EtcdConnection, ttl: Int) throws(EtcdFailure) -> String {
        let current = lease.withLock { $0 }
        if let id = current.id, current.ttl == ttl {
            let answer = try conn.call("/lease/keepalive", .object(["ID": .string(id)]))
            let left = (answer["result"] ?? answer)["TTL"]?.intValue ?? 0
            if left > 0 { return id }
            logger.info("etcd3: lease \(id) expired; granting a new one")
        }
        let granted = try conn.call("/lease/grant", .object(["TTL": .int(ttl)]))
        guard let id = granted["ID"]?.scalarText, !id.isEmpty else {
            throw .badResponse("/lease/grant answered without an ID")
        }
        lease.withLock { $0 = LeaseState(id: id, ttl: ttl) }
        return id
    }
}
