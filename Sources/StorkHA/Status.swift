import Foundation
import Synchronization
import StorkConfig
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
    /// A required watchdog cannot be used: this member does not lead (`watchdog_failed`).
    public var watchdogFailed: Bool = false
    /// Why this replica can never stream from the leader (a forked timeline): `GET /replica`
    /// answers 503 until it rejoins.
    public var cannotFollow: String?
    /// The long task running now, if any.
    public var task: String?
    /// The replica method running now, while a replica is built.
    public var replicaCreation: ReplicaProgress?
    /// A bootstrap's recovery towards its target, while it runs.
    public var recoveryProgress: RecoveryProgress?
    public init() {}
}

/// One place where the agent publishes its status and the REST API reads it.
public final class StatusBoard: Sendable {
    private let current = Mutex(MemberStatus())
    public init() {}
    public var snapshot: MemberStatus { current.withLock { $0 } }
    public func update(_ body: (inout MemberStatus) -> Void) { current.withLock { body(&$0) } }
}
