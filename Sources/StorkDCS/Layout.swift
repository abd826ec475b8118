import Foundation
import StorkConfig

/// Patroni's key names under `<namespace>/<scope>/` (patroni/dcs/__init__.py, AbstractDCS).
public struct DCSKeys: Sendable, Equatable {
    /// `<namespace>/<scope>/`, ending with `/`.
    public let prefix: String
    public let memberName: String

    public init(prefix: String, memberName: String) {
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.memberName = memberName
    }

    public var initialize: String { prefix + "initialize" }
    public var config: String { prefix + "config" }
    public var leader: String { prefix + "leader" }
    public var history: String { prefix + "history" }
    public var failover: String { prefix + "failover" }
    /// Patroni 3's `status`: `{"optime": <lsn>}` (later versions add `slots`, `retain_slots`).
    public var status: String { prefix + "status" }
    /// The legacy `optime/leader`: the LSN as a decimal string.
    public var leaderOptime: String { prefix + "optime/leader" }
    public var membersPrefix: String { prefix + "members/" }
    public var member: String { membersPrefix + memberName }

    /// `status` as Patroni writes it: compact JSON.
    static func statusValue(_ lsn: Int) -> String { "{\"optime\":\(lsn)}" }

    /// A member key's value as Patroni writes it: compact JSON (`separators=(',', ':')`).
    static func memberValue(_ data: JSONValue) -> String { data.jsonString(sortedKeys: true) }

    /// `config` as Patroni writes it: compact JSON.
    static func configValue(_ config: JSONValue) -> String { config.jsonString(sortedKeys: true) }

    /// Builds the view from the keys under `prefix` (full key → value), reading them the way
    /// Patroni's `_cluster_from_nodes` does.
    func clusterView(from nodes: [String: String]) -> ClusterView {
        var view = ClusterView()
        var relative: [String: String] = [:]
        for (key, value) in nodes where key.hasPrefix(prefix) { relative[String(key.dropFirst(prefix.count))] = value }

        view.initialize = relative["initialize"]
        if let c = relative["config"] {
            if let parsed = JSONValue.parse(json: Data(c.utf8)), case .object = parsed { view.config = parsed }
            else { view.config = .object([:]) }
        }
        if let l = relative["leader"], !l.isEmpty { view.leader = l }
        if let f = relative["failover"], case .object(let m)? = JSONValue.parse(json: Data(f.utf8)) {
            view.failover = ManualFailover(leader: m["leader"]?.scalarText, candidate: m["member"]?.scalarText,
                                           // Unreadable: long past, so the leader drops it as stale (Patroni drops it).
                                           scheduledAt: m["scheduled_at"].flatMap { $0 == .null ? nil : ($0.scalarText.flatMap { DateText.timestamp($0)?.0 } ?? .distantPast) })
        }
        view.leaderOptime = Self.optime(status: relative["status"]) ?? Self.optime(status: relative["optime/leader"])
        if let h = relative["history"], case .array(let entries)? = JSONValue.parse(json: Data(h.utf8)) {
            view.history = entries
            if case .array(let last)? = entries.last, let left = last.first?.intValue { view.timeline = left + 1 }
        }
        view.members = relative
            .filter { $0.key.hasPrefix("members/") && $0.key.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
            .map { Member(name: String($0.key.dropFirst("members/".count)), data: Self.memberData($0.value)) }
            .filter { !$0.name.isEmpty }
            .sorted { $0.name < $1.name }
        return view
    }

    /// Patroni's `Status.from_node`: a JSON object with `optime`, or a bare number (legacy).
    static func optime(status value: String?) -> Int? {
        guard let value, let json = JSONValue.parse(json: Data(value.utf8)) else { return nil }
        switch json {
        case .int(let i): return i
        case .object(let o): return o["optime"]?.intValue
        default: return nil
        }
    }

    /// Patroni's `Member.from_node`: JSON, or the old `postgres://...?application_name=<api_url>`.
    static func memberData(_ value: String) -> JSONValue {
        if value.hasPrefix("postgres") {
            var conn = URLComponents(string: value)
            let api = conn?.queryItems?.first { $0.name == "application_name" }?.value
            conn?.query = nil
            var o: [String: JSONValue] = ["conn_url": .string(conn?.string ?? value)]
            o["api_url"] = api.map { .string($0) } ?? .null
            return .object(o)
        }
        if let parsed = JSONValue.parse(json: Data(value.utf8)), case .object = parsed { return parsed }
        return .object([:])
    }
}
