import Foundation
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

/// PostgreSQL parameters every member runs with, as Patroni 3.3 sets them when the user
/// does not: replication needs them on every member alike.
let defaultParameters: [String: JSONValue] = [
    "wal_level": .string("replica"),
    "hot_standby": .bool(true),
    "max_connections": .int(100),
    "max_wal_senders": .int(10),
    "max_replication_slots": .int(10),
    "max_prepared_transactions": .int(0),
    "max_locks_per_transaction": .int(64),
    "max_worker_processes": .int(8),
    "track_commit_timestamp": .bool(false),
    "wal_log_hints": .bool(true),
]

/// The parameters written to `postgresql.conf`: Patroni's defaults, then the cluster-wide
/// `postgresql.parameters` of the DCS `config` key (or `bootstrap.dcs` before it exists),
/// then the member's own `postgresql.parameters`, then what Stork must control.
public func effectiveParameters(config: Config, dynamic: JSONValue?) -> [String: JSONValue] {
    var p = defaultParameters
    if case .object(let params)? = clusterConfig(config, dynamic)["postgresql"]?["parameters"] {
        p.merge(params) { _, new in new }
    }
    p.merge(config.postgresql.parameters) { _, new in new }
    // With an archive, Stork's own commands unless the user set others.
    if config.archive != nil, let file = config.configFile {
        if p["archive_mode"] == nil { p["archive_mode"] = .string("on") }
        if p["archive_command"] == nil { p["archive_command"] = .string(WALArchiveCommands.archiveCommand(configFile: file)) }
        if p["restore_command"] == nil { p["restore_command"] = .string(WALArchiveCommands.restoreCommand(configFile: file)) }
    }
    p["listen_addresses"] = .string(config.postgresql.listenAddresses)
    p["port"] = .int(config.postgresql.port)
    p["cluster_name"] = .string(config.scope)
    return p
}

/// `pg_hba.conf` lines: the member's `postgresql.pg_hba`, else the cluster's (the DCS `config`
/// key's `postgresql.pg_hba`), else `bootstrap.pg_hba`, else a default that lets the
/// replication user and every user in with a password from loopback and trusts local sockets.
public func effectiveHBA(config: Config, dynamic: JSONValue?) -> [String] {
    if let lines = config.postgresql.pgHBA { return lines }
    if case .array(let items)? = clusterConfig(config, dynamic)["postgresql"]?["pg_hba"] {
        let lines = items.compactMap(\.scalarText)
        if lines.count == items.count { return lines }
    }
    if let lines = config.bootstrap.pgHBA { return lines }
    let repl = config.postgresql.replication.username
    return [
        "local all all trust",
        "host replication \(repl) 127.0.0.1/32 scram-sha-256",
        "host replication \(repl) ::1/128 scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
    ]
}

/// The lines of pg_ident.conf: the member's `postgresql.pg_ident`, else the cluster's; nil
/// when neither names any (the file is left as it is).
public func effectiveIdent(config: Config, dynamic: JSONValue?) -> [String]? {
    if let lines = config.postgresql.pgIdent { return lines }
    if case .array(let items)? = clusterConfig(config, dynamic)["postgresql"]?["pg_ident"] {
        let lines = items.compactMap(\.scalarText)
        if lines.count == items.count { return lines }
    }
    return nil
}

/// Cluster timing: the DCS `config` key wins over `bootstrap.dcs` (already held to the rule
/// at load), each value held to Patroni's rule (``ClusterTiming``) as the key may say anything.
func clusterTiming(config: Config, dynamic: JSONValue?) -> (timing: ClusterTiming, warnings: [String]) {
    let given = ClusterTiming(ttl: dynamic?["ttl"]?.intValue ?? config.bootstrap.ttl,
                              loopWait: dynamic?["loop_wait"]?.intValue ?? config.bootstrap.loopWait,
                              retryTimeout: dynamic?["retry_timeout"]?.intValue ?? config.bootstrap.retryTimeout)
    return given.adjusted(source: "the DCS config key")
}

extension Agent {
    /// `max_timelines_history` of the cluster-wide configuration: how many entries the
    /// `history` key keeps (Patroni's default 0: all).
    var maxTimelinesHistory: Int {
        max(0, clusterConfig(config, lastView.config)["max_timelines_history"]?.intValue ?? 0)
    }

    /// `primary_start_timeout` (Patroni's alias `master_start_timeout`), seconds, default 300.
    var primaryStartTimeout: Int {
        let cluster = clusterConfig(config, lastView.config)
        return cluster["primary_start_timeout"]?.intValue ?? cluster["master_start_timeout"]?.intValue ?? 300
    }
}

extension Agent {
    /// Maintenance mode, as the last look at the DCS says (`ClusterView.paused`).
    var paused: Bool { lastView.paused }

    /// `maximum_lag_on_failover` (bytes, default 1 MiB): how far behind the leader's last
    /// position a replica may be and still lead, or count as ready.
    var maximumLagOnFailover: Int {
        clusterConfig(config, lastView.config)["maximum_lag_on_failover"]?.intValue ?? 1_048_576
    }
}

/// `postgresql.use_slots` of the cluster-wide configuration (Patroni's default: true): each
/// replica streams through a physical slot named after it, which the primary keeps.
public func useSlots(config: Config, dynamic: JSONValue?) -> Bool {
    clusterConfig(config, dynamic)["postgresql"]?["use_slots"]?.isTruthy ?? true
}

/// The cluster-wide configuration: the DCS `config` key, or `bootstrap.dcs` before it exists.
func clusterConfig(_ config: Config, _ dynamic: JSONValue?) -> JSONValue {
    dynamic ?? .object(config.bootstrap.dcs)
}

/// Patroni's slot name for a member: lower case, anything but `[a-z0-9_]` becomes `_`, at most 63 bytes.
public func slotName(forMember name: String) -> String {
    let mapped = name.lowercased().unicodeScalars.map { c -> Character in
        (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "_" ? Character(c) : "_"
    }
    return String(String(mapped).prefix(63))
}

/// What the replica-method chain needs to build this member from member `name` (nil: with no
/// member to copy from): the agent's clone and `stork explain` both use it.
public func replicaBuildRequest(config: Config, view: ClusterView, node: PostgresNode, source name: String?) -> ReplicaBuildRequest {
    var source: CloneSource?
    if let name, let url = view.member(named: name)?.connURL {
        source = CloneSource(name: name, connURL: url, isLeader: name == view.leader)
    }
    let conninfo = source.map { node.replicationConninfo(toConnURL: $0.connURL, applicationName: .some(nil)) } ?? ""
    var request = ReplicaBuildRequest(methods: config.postgresql.replicaMethods, source: source, conninfo: conninfo, scope: config.scope,
                                      expectedSystemIdentifier: view.initialize,
                                      slot: useSlots(config: config, dynamic: view.config) ? slotName(forMember: config.name) : nil)
    request.archive = config.archive
    return request
}

/// Parameters a server in recovery must have at least as high as the primary that wrote the
/// WAL had (pg_controldata's "... setting" lines), with PostgreSQL's defaults; the ones the
/// configuration sets lower, raised to pg_control's value.
public func recoveryParameterFloor(configured: [String: JSONValue], control: ControlData) -> [String: JSONValue] {
    let checked: [(name: String, field: String, fallback: Int)] = [
        ("max_connections", "max_connections setting", 100), ("max_worker_processes", "max_worker_processes setting", 8),
        ("max_wal_senders", "max_wal_senders setting", 10), ("max_prepared_transactions", "max_prepared_xacts setting", 0),
        ("max_locks_per_transaction", "max_locks_per_xact setting", 64),
    ]
    var out: [String: JSONValue] = [:]
    for (name, field, fallback) in checked {
        guard let needed = control.fields[field].flatMap({ Int($0) }) else { continue }
        let have = configured[name]?.intValue ?? fallback
        if needed > have { out[name] = .int(needed) }
    }
    return out
}

/// `standby_cluster` of the cluster-wide configuration: this cluster replicates a remote
/// primary; its leader (the standby leader) follows that primary, the other members it.
public struct StandbyCluster: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var primarySlotName: String?
    /// Recovery parameters for the standby leader (`restore_command`, `recovery_min_apply_delay`).
    public var recoveryParameters: [String: JSONValue]

    /// The remote primary as a member key's `conn_url` would name it.
    public var connURL: String { "postgres://\(host.contains(":") ? "[\(host)]" : host):\(port)/postgres" }
    public var description: String { "\(host):\(port)" }
    /// How the agent names this upstream when it remembers whom a standby follows.
    public var upstreamLabel: String { "remote primary \(self)" }

    public init?(config: Config, dynamic: JSONValue?) {
        guard case .object(let m)? = clusterConfig(config, dynamic)["standby_cluster"], let host = m["host"]?.scalarText else { return nil }
        self.host = host
        self.port = m["port"]?.intValue ?? 5432
        self.primarySlotName = m["primary_slot_name"]?.scalarText
        self.recoveryParameters = m.filter { ["restore_command", "recovery_min_apply_delay"].contains($0.key) && $0.value != .null }
    }
}
