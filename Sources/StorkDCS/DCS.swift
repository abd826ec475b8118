import Foundation
import StorkConfig

/// One member as its key `members/<name>` shows it.
public struct Member: Sendable, Equatable {
    public var name: String
    /// The member key's JSON as written (Patroni 3.3 fields: conn_url, api_url, state, role,
    /// xlog_location, timeline, tags, version, ...).
    public var data: JSONValue
    public init(name: String, data: JSONValue) { self.name = name; self.data = data }

    public var role: String? { data["role"]?.scalarText }
    public var state: String? { data["state"]?.scalarText }
    public var connURL: String? { data["conn_url"]?.scalarText }
    public var apiURL: String? { data["api_url"]?.scalarText }
    public var xlogLocation: Int? { data["xlog_location"]?.intValue }
    public var timeline: Int? { data["timeline"]?.intValue }
    public var tags: [String: JSONValue] {
        if case .object(let o)? = data["tags"] { return o }
        return [:]
    }
}

/// Everything the agent reads from the DCS in one cycle.
public struct ClusterView: Sendable, Equatable {
    /// `initialize`: nil when absent, "" while a bootstrap runs, else the system identifier.
    public var initialize: String?
    /// `config`: the cluster-wide dynamic configuration (JSON object), nil when absent.
    public var config: JSONValue?
    /// `leader`: the member name holding the leader lock, nil when nobody holds it.
    public var leader: String?
    public var members: [Member]
    /// `optime/leader` (or `status.optime`): the last WAL position the leader published.
    public var leaderOptime: Int?
    /// `failover`: a switchover or failover asked for through the REST API.
    public var failover: ManualFailover?
    /// The cluster's timeline as `history` tells it (Patroni's `cluster.timeline`): one past
    /// the timeline its last entry left; nil without a history.
    public var timeline: Int?
    /// `history`: Patroni's list of promotions (`[timeline, lsn, reason, time, new leader]`).
    public var history: [JSONValue] = []
    public init(initialize: String? = nil, config: JSONValue? = nil, leader: String? = nil,
                members: [Member] = [], leaderOptime: Int? = nil, failover: ManualFailover? = nil, timeline: Int? = nil) {
        self.timeline = timeline
        self.initialize = initialize
        self.config = config
        self.leader = leader
        self.members = members
        self.leaderOptime = leaderOptime
        self.failover = failover
    }

    public func member(named name: String) -> Member? { members.first { $0.name == name } }

    /// Maintenance mode: `pause` in the `config` key (`patronictl pause`). Only the DCS says so, as in Patroni.
    public var paused: Bool { config?["pause"]?.isTruthy ?? false }

    /// The member a manual failover hands the leader key to, while it is a running member.
    public var failoverCandidate: String? {
        guard let candidate = failover?.candidate, member(named: candidate)?.state == "running" else { return nil }
        return candidate
    }
    public var leaderMember: Member? { leader.flatMap { member(named: $0) } }
}

/// A DCS backend: Patroni's key layout under `<namespace>/<scope>/`.
/// Every call either does what it says or throws `DCSError`; a `false` result means the
/// DCS answered and the condition (create-only, owner) did not hold.
public protocol DCS: Sendable {
    /// Reads `initialize`, `config`, `leader`, `members/*` and `optime/leader` in one go.
    func clusterView() async throws -> ClusterView
    /// Creates `initialize` with `value` only if it does not exist (the bootstrap race).
    func createInitialize(_ value: String) async throws -> Bool
    /// Sets `initialize` to `value` (the system identifier once bootstrapped).
    func setInitialize(_ value: String) async throws
    /// Deletes `initialize` (a failed bootstrap).
    func deleteInitialize() async throws
    /// Creates `leader` = this member's name with a TTL, only if it does not exist.
    func acquireLeader(ttl: Int) async throws -> Bool
    /// Extends `leader` if this member still holds it; false if another holds it or it is gone.
    func refreshLeader(ttl: Int) async throws -> Bool
    /// Deletes `leader` if this member holds it.
    func deleteLeader() async throws
    /// Writes `members/<name>` with a TTL.
    func touchMember(_ data: JSONValue, ttl: Int) async throws
    /// Removes `members/<name>` (a clean shutdown).
    func deleteMember() async throws
    /// Reads `config` as stored, with the version a compare-and-set names; nil when absent.
    func readConfig() async throws -> StoredConfig?
    /// Writes `config` (JSON) only while it is still at `version` (nil: only if absent);
    /// false when another writer came first.
    func writeConfig(_ config: JSONValue, ifVersion version: String?) async throws -> Bool
    /// Writes `optime/leader` (and Patroni 3's `status`) with the leader's WAL position.
    func writeLeaderOptime(_ lsn: Int) async throws
    /// Appends a promotion to `history`, as Patroni records it: `[timeline, lsn, reason,
    /// time, new leader]`, `timeline` being the one that ended at `lsn`.
    /// `keep`: at most that many entries stay, the newest (`max_timelines_history`; 0: all).
    func appendHistory(timeline: Int, lsn: Int, reason: String, newLeader: String, keep: Int) async throws
    /// Writes `failover` (`{"leader": ..., "member": ...}`, Patroni's), or deletes it (nil).
    func setFailover(_ failover: ManualFailover?) async throws
    /// Seconds until the leader key's lease runs out (nil: no leader key, or no lease), so that
    /// a replica wakes when it expires instead of up to `loop_wait` later.
    func leaderExpiresIn() async throws -> Double?
}

/// The `config` key as stored: its text, and its version for a compare-and-set (etcd's
/// `mod_revision`; the embedded store compares the text itself).
public struct StoredConfig: Sendable, Equatable {
    public var text: String
    public var version: String
    public init(text: String, version: String) { self.text = text; self.version = version }
    /// The configuration, when the text is a JSON object (Patroni reads anything else as none).
    public var value: JSONValue? {
        guard let parsed = JSONValue.parse(json: Data(text.utf8)), case .object = parsed else { return nil }
        return parsed
    }
}

/// Patroni's `failover` key: the leader that steps down (nil: whoever leads) and the member
/// that takes over (nil: the healthiest).
public struct ManualFailover: Sendable, Equatable {
    public var leader: String?
    public var candidate: String?
    /// `scheduled_at`: a switchover the leader carries out at that time, not at once.
    public var scheduledAt: Date?
    public init(leader: String?, candidate: String?, scheduledAt: Date? = nil) {
        self.leader = leader
        self.candidate = candidate
        self.scheduledAt = scheduledAt
    }

    public var value: String {
        var m: [String: JSONValue] = [:]
        if let leader { m["leader"] = .string(leader) }
        if let candidate { m["member"] = .string(candidate) }
        if let scheduledAt { m["scheduled_at"] = .string(DateText.isoformat(scheduledAt)) }
        return JSONValue.object(m).jsonString(sortedKeys: true)
    }
}

extension DCSKeys {
    /// `history` with one more entry.
    public static func historyValue(appending entry: (timeline: Int, lsn: Int, reason: String, newLeader: String), to current: String?, keep: Int = 0) -> String {
        var items: [JSONValue] = []
        if let current, case .array(let old)? = JSONValue.parse(json: Data(current.utf8)) { items = old }
        items.append(.array([.int(entry.timeline), .int(entry.lsn), .string(entry.reason), .string(DateText.isoformat(Date())),
                             .string(entry.newLeader)]))
        if keep > 0 && items.count > keep { items.removeFirst(items.count - keep) }
        return String(decoding: JSONValue.array(items).jsonData(sortedKeys: true), as: UTF8.self)
    }
}

public struct DCSError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The configuration key whose value the DCS refused (`etcd3.password` for a wrong password,
    /// `etcd3.cert`, `etcd3.key` or `etcd3.cacert` for a TLS problem), so that a caller can stop
    /// at start with `key: message` and exit status 2; nil for a failure that may pass
    /// (unreachable, timeout).
    public var configurationKey: String?
    public init(_ message: String, configurationKey: String? = nil) {
        self.message = message
        self.configurationKey = configurationKey
    }
    public var description: String { message }
}
