import Foundation
import StorkConfig
import StorkDCS
import StorkPostgres

/// What the agent knows about its own node at the start of a cycle.
public struct LocalSnapshot: Sendable, Equatable {
    public var dataDirectory: DataDirectoryState
    /// From pg_controldata when the data directory is initialized.
    public var systemIdentifier: String?
    /// pg_controldata says the server last ran as a primary (no standby.signal, state
    /// `shut down` or `in production`).
    public var wasPrimary: Bool
    public var running: Bool
    /// nil when the server is not running or does not answer.
    public var inRecovery: Bool?
    /// A marker left by this agent's own clone or bootstrap that did not finish: the data
    /// directory holds the agent's own failed work, never a database to start.
    public var incompleteWork: Bool
    /// A re-sync in place (rsync) began and no checked copy replaced the directory since: it
    /// is built again, never started as it is and never wiped.
    public var halfSynced = false
    /// This server was demoted from primary without a leader to compare histories with: the
    /// first leader it follows is checked for a fork first.
    public var divergenceUnchecked = false
    /// This member holds the leader key and its server has been down for longer than
    /// `primary_start_timeout` (Patroni's; 0: at once) while the agent tried to start it.
    public var primaryStartOverdue = false
    /// `server_version_num` of the running server (0 when unknown): 13 and later reread
    /// `primary_conninfo` on reload.
    public var serverVersion: Int
    /// Whom the running replica follows, as the agent configured it or found it configured:
    /// a member's name, `.some(nil)` for nobody, the remote primary's label for a standby
    /// leader; nil when the agent does not know (it then configures it).
    public var followed: String??
    /// Why the running server does not answer the agent's queries (a rotated superuser
    /// password, say), nil when it answers or is not running.
    public var queryError: String?
    /// It has not answered for longer than `retry_timeout`.
    public var unreadableTooLong = false
    /// Why this running replica can never stream from the leader: its replayed WAL went past
    /// the point where the leader's timeline forked off its own. Nil when it can, or when
    /// that cannot be told.
    public var forkedFromLeader: String?

    public init(dataDirectory: DataDirectoryState, systemIdentifier: String? = nil, wasPrimary: Bool = false,
                running: Bool = false, inRecovery: Bool? = nil, incompleteWork: Bool = false,
                serverVersion: Int = 0, followed: String?? = nil) {
        self.serverVersion = serverVersion
        self.followed = followed
        self.dataDirectory = dataDirectory
        self.systemIdentifier = systemIdentifier
        self.wasPrimary = wasPrimary
        self.running = running
        self.inRecovery = inRecovery
        self.incompleteWork = incompleteWork
    }
}

/// Everything one decision depends on.
public struct Snapshot: Sendable, Equatable {
    public var me: String
    public var cluster: ClusterView
    public var local: LocalSnapshot
    /// The configuration has a `bootstrap` section and the node is not tagged `nofailover`.
    public var mayBootstrap: Bool
    /// The node is not tagged `nofailover`: it may hold the leader key.
    public var mayLead: Bool
    /// The description of the long task that is running, if one is.
    public var runningTask: String?
    /// A replica method with `no_leader` is configured: a replica can be built with no member to copy from.
    public var mayCloneWithoutLeader: Bool
    /// A standby cluster's remote primary (`standby_cluster`), as `LocalSnapshot.followed`
    /// names it; nil when the cluster is not a standby cluster.
    public var remotePrimary: String?
    /// The cluster is a standby cluster: its leader follows a remote primary.
    public var standbyCluster: Bool { remotePrimary != nil }
    /// Maintenance mode (`pause` in the cluster's configuration): the agent starts, stops,
    /// promotes and demotes nothing by itself (`decidePaused`).
    public var paused = false
    /// The time of the look, and `loop_wait`: a scheduled switchover is carried out within a
    /// loop_wait of its time, and dropped when it is more than 1.5 loop_wait past (Patroni's rule).
    public var now = Date()
    public var loopWait = 10

    public init(me: String, cluster: ClusterView, local: LocalSnapshot, mayBootstrap: Bool = true, mayLead: Bool = true,
                runningTask: String? = nil, mayCloneWithoutLeader: Bool = false) {
        self.me = me
        self.mayCloneWithoutLeader = mayCloneWithoutLeader
        self.cluster = cluster
        self.local = local
        self.mayBootstrap = mayBootstrap && mayLead
        self.mayLead = mayLead
        self.runningTask = runningTask
    }

    public var iAmLeader: Bool { cluster.leader == me }
}

/// The action for one cycle: a pure function of the snapshot (`decide`), carried out by the agent.
public enum Decision: Sendable, Equatable {
    /// A long task runs: only the member key (and the leader key, if held) are refreshed.
    case waitForTask(String)
    /// Race for `initialize`; the winner bootstraps a new cluster.
    case bootstrap
    /// Build this member from another one with pg_basebackup.
    case clone(from: String?, isLeader: Bool)
    /// `initialize` exists (or a bootstrap runs elsewhere) but nobody can be cloned from.
    case waitForLeader
    /// The data directory belongs to another cluster: fatal.
    case systemIDMismatch(data: String, dcs: String)
    /// The cluster has no `initialize` key but this node has data: record its system identifier.
    case claimInitialize(String)
    /// The data directory holds this agent's own unfinished clone or bootstrap: wipe it.
    case removeIncompleteWork
    /// The data directory is neither empty nor usable: never start it, say why.
    case unusableDataDirectory(String)
    /// PostgreSQL is stopped: start it as primary (this node holds the leader key).
    case startPrimary
    /// The leader's server has not come up within `primary_start_timeout` and another member
    /// may take over: give the key back (the next cycle starts it read-only, as a former primary).
    case giveUpPrimaryStart
    /// PostgreSQL is stopped: start it as a replica of `leader` (nil: no leader known).
    case startReplica(leader: String?)
    /// PostgreSQL is stopped, it last ran as a primary and `leader` holds the key: rejoin as
    /// its replica, rewinding or rebuilding when the histories diverged.
    case rejoin(leader: String)
    /// A running primary holding the leader key.
    case holdLeader
    /// The leader finds a `failover` key it will never act on (it names another member as
    /// the leader, or this one as the candidate): hold the key and delete the stale request,
    /// which would otherwise let its candidate skip the checks of a later race.
    case holdLeaderClearingFailover(reason: String)
    /// A running server that does not answer the agent while this member holds the key, for
    /// less than `retry_timeout` (`primary_start_timeout` in crash recovery): keep the key.
    case holdUnreadablePrimary(error: String)
    /// A running primary that does not answer the agent, past `retry_timeout` or without the
    /// key: the agent cannot prove it healthy, so it must not accept writes. Stop it.
    case stopUnreadablePrimary(error: String)
    /// A running primary and nobody holds the leader key.
    case acquireLeader
    /// A running primary while another member holds the key: step down and follow it.
    case demote(leader: String?)
    /// A running replica demoted from primary earlier, before any leader was known: stop it
    /// and rejoin `leader` as a former primary (rewound or rebuilt if the histories forked).
    case rejoinAfterDemotion(leader: String)
    /// A running replica that can never stream from `leader` (`LocalSnapshot.forkedFromLeader`):
    /// stop it and rejoin as a former primary does (rewound or rebuilt).
    case rejoinForked(leader: String, reason: String)
    /// A running replica and nobody holds the leader key: when this member is the healthiest
    /// (no member that may lead has more WAL), take the key (create-only) and promote.
    case leaderRace
    /// A running replica that holds the leader key (it demoted while the DCS was out of
    /// reach): refresh the key and promote.
    case promoteHoldingKey
    /// A running primary holding the key and a `failover` key that names another member (or
    /// any): stop, give the key back, start as a replica.
    case stepDown(candidate: String?)
    /// A running primary holding the key and a switchover scheduled for later: hold the key.
    case awaitScheduledSwitchover(at: Date)
    /// A running replica that follows `leader` (nil: nobody): nothing to change.
    case follow(leader: String?)
    /// A running replica that follows someone else: write `primary_conninfo` for `leader`,
    /// then reload (`byReload`, PostgreSQL 13 and later) or restart.
    case retarget(leader: String?, byReload: Bool)
    /// Standby cluster, PostgreSQL stopped, this member holds the leader key: start it as a
    /// standby of the remote primary.
    case startStandbyLeader
    /// Standby cluster: a running standby holding the leader key; it follows the remote primary.
    case holdStandbyLeader
    /// Standby cluster: a running standby holding the leader key that does not follow the
    /// remote primary yet: refresh the key, restart it following the remote primary.
    case restartStandbyLeader
    /// Paused: nothing to do but say so.
    case paused(String)
    /// Paused, a running primary holding the key: refresh it; never demote when that fails.
    case pausedHoldLeader
    /// Paused, a running primary and nobody holds the key: take it; never demote.
    case pausedTakeLeader
    /// Paused, this member holds the key but runs no primary: give the key back (`reason`).
    case releaseLeaderKey(reason: String)
}

/// The agent's decision for one cycle. Pure: the table tests in StorkHATests cover it.
public func decide(_ s: Snapshot) -> Decision {
    if let task = s.runningTask { return .waitForTask(task) }
    if s.paused { return decidePaused(s) }
    let cluster = s.cluster
    let local = s.local

    if local.incompleteWork { return .removeIncompleteWork }

    switch local.dataDirectory {
    case .unusable(let reason):
        return .unusableDataDirectory(reason)
    case .empty:
        if cluster.leader == nil && cluster.initialize == nil && s.mayBootstrap { return .bootstrap }
        if let source = cloneSource(me: s.me, cluster: cluster) { return .clone(from: source.name, isLeader: source.name == cluster.leader) }
        // Patroni's "bootstrap (without leader)": a backup tool may build the replica, unless a
        // bootstrap is running right now (`initialize` empty).
        if s.mayCloneWithoutLeader && cluster.initialize != "" { return .clone(from: nil, isLeader: false) }
        return .waitForLeader
    case .initialized:
        if local.halfSynced && !local.running {
            if let source = cloneSource(me: s.me, cluster: cluster) { return .clone(from: source.name, isLeader: source.name == cluster.leader) }
            return .waitForLeader
        }
    }

    if let mine = local.systemIdentifier, let theirs = cluster.initialize, !theirs.isEmpty, mine != theirs {
        return .systemIDMismatch(data: mine, dcs: theirs)
    }
    if let mine = local.systemIdentifier, cluster.initialize == nil, cluster.leader == nil {
        return .claimInitialize(mine)
    }

    if !local.running {
        if s.iAmLeader {
            if s.standbyCluster { return .startStandbyLeader }
            // Patroni's is_failover_possible, roughly: another running member that may lead.
            let successor = cluster.members.contains { $0.name != s.me && $0.state == "running" && $0.tags["nofailover"]?.isTruthy != true }
            return local.primaryStartOverdue && successor ? .giveUpPrimaryStart : .startPrimary
        }
        // Without the key, never straight to primary, even a former one: it starts read-only
        // and races like any replica (it may lack what a newer timeline committed).
        if let leader = cluster.leader, local.wasPrimary { return .rejoin(leader: leader) }
        return .startReplica(leader: cluster.leader)
    }

    // A running server that does not answer: the leader keeps the key only for a while (it
    // cannot prove itself healthy), and a primary without the key stops. Never a promotion or
    // a race on it: it may be a primary in crash recovery.
    if local.inRecovery == nil, let error = local.queryError, !s.standbyCluster, local.wasPrimary || s.iAmLeader {
        if s.iAmLeader && !local.unreadableTooLong { return .holdUnreadablePrimary(error: error) }
        return .stopUnreadablePrimary(error: error)
    }
    if local.inRecovery == false {
        if s.iAmLeader {
            // A switchover or failover asked for through the REST API: hand the key over.
            if let f = cluster.failover {
                if let waiting = scheduledSwitchover(f, s) { return waiting }
                if let named = f.leader, named != s.me {
                    return .holdLeaderClearingFailover(reason: "it names \(named) as the leader, and \(s.me) leads")
                }
                if f.candidate == s.me { return .holdLeaderClearingFailover(reason: "it names \(s.me), the leader, as the candidate") }
                // Patroni's leader checks again (a scheduled one was not checked when asked):
                // never step down with nobody to take over.
                if !successorExists(f.candidate, s) {
                    return .holdLeaderClearingFailover(reason: "no healthy members found, switchover is not possible")
                }
                return .stepDown(candidate: f.candidate)
            }
            return .holdLeader
        }
        if let other = cluster.leader { return .demote(leader: other) }
        return s.mayLead ? .acquireLeader : .demote(leader: nil)
    }
    if s.standbyCluster && s.iAmLeader {
        return local.followed == .some(s.remotePrimary) ? .holdStandbyLeader : .restartStandbyLeader
    }
    // Nobody leads: the healthiest replica takes the key and promotes.
    if (cluster.leader == nil || s.iAmLeader) && s.mayLead && !s.standbyCluster {
        // A manual failover names who takes the key; the leader that stepped down stays out.
        if let f = cluster.failover, !s.iAmLeader {
            if f.leader == s.me { return follow(nil, s) }
            if let candidate = cluster.failoverCandidate, candidate != s.me { return follow(nil, s) }
        }
        return s.iAmLeader ? .promoteHoldingKey : .leaderRace
    }
    if let reason = local.forkedFromLeader, let leader = cluster.leader, leader != s.me, !s.standbyCluster {
        return .rejoinForked(leader: leader, reason: reason)
    }
    if local.divergenceUnchecked, let leader = cluster.leader, leader != s.me, !s.standbyCluster {
        return .rejoinAfterDemotion(leader: leader)
    }
    return follow(cluster.leader == s.me ? nil : cluster.leader, s)
}

/// Maintenance mode, as Patroni's pause: no bootstrap, clone, start, stop, promotion, demotion
/// or rejoin of the agent's own accord. A primary keeps (or takes) the leader key while it
/// runs and gives it back when it stopped; a replica follows a leader that holds the key and
/// is left as it is when there is none. A manual switchover to a named candidate still works.
func decidePaused(_ s: Snapshot) -> Decision {
    let cluster = s.cluster, local = s.local, me = s.me
    guard local.dataDirectory == .initialized, !local.incompleteWork else {
        return .paused(local.dataDirectory == .empty ? "running with empty data directory" : "data directory left as it is")
    }
    if let mine = local.systemIdentifier, let theirs = cluster.initialize, !theirs.isEmpty, mine != theirs {
        return s.iAmLeader ? .releaseLeaderKey(reason: "the system ID mismatch")
            : .paused("system ID has changed while in paused mode: \(mine) != \(theirs); Stork will exit when resuming unless it is reset")
    }
    if !local.running {
        return s.iAmLeader ? .releaseLeaderKey(reason: "postgres is not running") : .paused("postgres is not running")
    }
    if local.inRecovery == nil {
        return s.iAmLeader ? .pausedHoldLeader : .paused("PostgreSQL does not answer: \(local.queryError ?? "no answer")")
    }
    if local.inRecovery == false {
        if s.iAmLeader {
            // Paused, a scheduled switchover waits (Patroni runs no scheduled action while paused).
            if cluster.failover?.scheduledAt != nil { return .pausedHoldLeader }
            if let f = cluster.failover, let candidate = f.candidate, candidate != me, f.leader == nil || f.leader == me,
               successorExists(candidate, s) {
                return .stepDown(candidate: candidate)
            }
            if let f = cluster.failover {
                return .holdLeaderClearingFailover(reason: f.candidate == me ? "it names \(me), the leader, as the candidate"
                                                   : f.candidate == nil ? "it names no candidate, and the cluster is paused"
                                                   : "no healthy members found, switchover is not possible")
            }
            return .pausedHoldLeader
        }
        if cluster.leader == nil && s.mayLead && (cluster.initialize == nil || cluster.initialize == local.systemIdentifier) {
            return .pausedTakeLeader
        }
        return .paused("continue to run as primary without lock")
    }
    if s.standbyCluster && s.iAmLeader {
        return local.followed == .some(s.remotePrimary) ? .holdStandbyLeader : .paused("no action. I am (\(me)), the standby leader with the lock")
    }
    // A manual failover names a candidate: it alone takes the key and promotes.
    if cluster.failoverCandidate == me && (cluster.leader == nil || s.iAmLeader) {
        return s.iAmLeader ? .promoteHoldingKey : .leaderRace
    }
    if s.iAmLeader { return .releaseLeaderKey(reason: "postgres is not running as primary") }
    guard let leader = cluster.leader else { return .paused("no action. I am (\(me))") }
    return follow(leader, s)
}

/// Whether `candidate` (any member when nil) can take over from this leader: a running member
/// other than this one, not tagged `nofailover` (Patroni's `is_failover_possible`, as the
/// member keys tell it).
private func successorExists(_ candidate: String?, _ s: Snapshot) -> Bool {
    s.cluster.members.contains { m in
        m.name != s.me && (candidate == nil || m.name == candidate) && m.state == "running" && m.tags["nofailover"]?.isTruthy != true
    }
}

/// A scheduled switchover the leader does not carry out this cycle: one whose time is more
/// than a loop_wait away (wait), or more than 1.5 loop_wait past (dropped); nil when it is due.
private func scheduledSwitchover(_ f: ManualFailover, _ s: Snapshot) -> Decision? {
    guard let at = f.scheduledAt else { return nil }
    let delta = at.timeIntervalSince(s.now)
    if delta > Double(s.loopWait) { return .awaitScheduledSwitchover(at: at) }
    if delta < -1.5 * Double(s.loopWait) {
        return .holdLeaderClearingFailover(reason: "Found a stale switchover value, cleaning up: \(DateText.isoformat(at))")
    }
    return nil
}

/// A running replica follows `upstream` (nil: nobody): as it is, or after a change of
/// `primary_conninfo` that PostgreSQL 13 and later take on reload.
private func follow(_ upstream: String?, _ s: Snapshot) -> Decision {
    if s.local.followed == .some(upstream) { return .follow(leader: upstream) }
    return .retarget(leader: upstream, byReload: s.local.serverVersion >= 130000)
}

/// The member to clone from: the healthiest running member tagged `clonefrom` (streaming,
/// then the most advanced), else the leader when its member key says where it is.
public func cloneSource(me: String, cluster: ClusterView) -> Member? {
    let others = cluster.members.filter { $0.name != me && $0.connURL != nil }
    let tagged = others.filter { $0.tags["clonefrom"]?.isTruthy == true && $0.state == "running" }
    // The healthiest: streaming before not streaming, then the least lag (the most WAL).
    func health(_ m: Member) -> (Int, Int) { (m.data["replication_state"]?.scalarText == "streaming" ? 1 : 0, m.xlogLocation ?? 0) }
    if let best = tagged.max(by: { health($0) < health($1) }) { return best }
    guard let leader = cluster.leader else { return nil }
    return others.first { $0.name == leader && $0.state == "running" }
}
