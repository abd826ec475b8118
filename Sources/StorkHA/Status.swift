import Foundation
import Synchronization
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

/// The member's state as the REST API and the member key show it.
public struct MemberStatus: Sendable, Equatable {
    /// Patroni's states: `stopped`, `starting`, `running`, `creating replica`,
    /// `initializing new cluster`, `initdb failed`, `stopping`, `crashed`, ...
    public var state: String = "stopped"
    /// `primary`, `replica` or `uninitialized`.
    public var role: String = "uninitialized"
    public var server: ServerState?
    public var systemIdentifier: String?
    public var holdsLeaderKey: Bool = false
    public var postmasterStartTime: Date?
    /// When the DCS last answered.
    public var dcsLastSeen: Date?
    /// When the HA loop last completed a cycle (liveness).
    public var lastCycle: Date?
    public var ttl: Int = 30
    public var loopWait: Int = 10
    /// `maximum_lag_on_failover` of the cluster's configuration (bytes): `GET /readiness`'s default limit.
    public var maximumLagOnFailover: Int = 1_048_576
    /// This member's tags as the agent runs with them now (a reload changes them): the REST API's
    /// answers (`GET /patroni`, `noloadbalance` and `?tag_` filters) follow them.
    public var tags: [String: JSONValue] = [:]
    /// The cluster's configuration has a `standby_cluster`: its leader is a standby leader.
    public var standbyCluster: Bool = false
    /// The cluster as the last cycle read it from the DCS (`GET /cluster`, `/history`, `/config`).
    public var view: ClusterView?
    /// Maintenance mode (`pause` in the cluster's configuration).
    public var paused: Bool { view?.paused ?? false }
    /// The leader's last published WAL position (the DCS `status` key), which replicas' lag is measured against.
    public var leaderOptime: Int? { view?.leaderOptime }
    /// A required watchdog cannot be used: this member does not lead (`watchdog_failed`).
    public var watchdogFailed: Bool = false
    /// Why this replica can never stream from the leader (a forked timeline): `GET /replica`
    /// answers 503 until it rejoins.
    public var cannotFollow: String?
    /// Parameters changed in the configuration that the running server takes only at a restart:
    /// `{name: {"old_value", "new_value"}}` (Patroni's `pending_restart_reason`); nil when none.
    public var pendingRestart: [String: JSONValue]?
    /// A restart scheduled through `POST /restart`, as `GET /patroni` shows it.
    public var scheduledRestart: JSONValue?
    /// The long task running now, if any.
    public var task: String?
    /// The replica method running now, while a replica is built.
    public var replicaCreation: ReplicaProgress?
    /// A bootstrap's recovery towards its target, while it runs.
    public var recoveryProgress: RecoveryProgress?
    /// The replica builds of this agent (clones and reinitializes), for `GET /metrics`.
    public var replicaBuilds = ReplicaBuildTally()
    public init() {}
}

/// How this agent's replica builds ended, and what the last that finished was.
public struct ReplicaBuildTally: Sendable, Equatable {
    public var succeeded = 0
    public var failed = 0
    /// The latest build: its (latest) method and bytes copied, and the seconds it took once it
    /// finished (the method and bytes follow a build in progress).
    public var lastMethod: String?
    public var lastSeconds: Double = 0
    public var lastBytes = 0
    public init() {}
}

/// One place where the agent publishes its status and the REST API reads it.
public final class StatusBoard: Sendable {
    private let current = Mutex(MemberStatus())
    public init() {}
    public var snapshot: MemberStatus { current.withLock { $0 } }
    public func update(_ body: (inout MemberStatus) -> Void) { current.withLock { body(&$0) } }
}
