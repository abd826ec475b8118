import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

/// Ends the agent with a non-zero exit status (Patroni does the same): a data directory from
/// another cluster, a failed bootstrap.
public struct AgentFatalError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The HA agent of one member: every `loop_wait` seconds it reads the DCS and the local
/// PostgreSQL, decides (`decide`, pure) and acts. Bootstrap, clone and (re)start run as one
/// long task at a time while the loop keeps refreshing the member and leader keys.
///
/// One job per file: the loop (`HALoop`), looking at the local server (`LocalState`),
/// carrying a decision out (`Execute`), the long task (`LongTasks`), the leader key
/// (`LeaderLock`), the member key (`MemberKey`), the leader race and promotion (`Failover`,
/// with the healthiest-member choice in `Healthiest`), following and slots (`Replication`),
/// a former primary's return (`Rejoin`), switchover (`Switchover`), bootstrap (`Bootstrap`),
/// a dead agent's leftovers (`IncompleteWork`), clone and reinitialize (`Reinitialize`),
/// the watchdog and self-fence (`Fencing`), and shutdown (`Shutdown`).
public actor Agent {
    /// Replaced by a reload (`Reload`), except what the process is built around.
    var config: Config
    nonisolated let apiURL: String
    let dcs: any DCS
    let node: PostgresNode
    let logger: Logger
    public nonisolated let status: StatusBoard

    /// The one long task (bootstrap, clone, start, demotion, ...) and what it is.
    var longTasks = LongTasks()
    var fatal: AgentFatalError?
    /// The loop runs its next cycle at once instead of after loop_wait.
    var wakeRequested = false
    /// Set by a long task that failed in a way only time can cure: the next cycle waits loop_wait.
    var waitBeforeNextCycle = false
    var lastView = ClusterView()
    var timing: ClusterTiming
    /// The adjustments of the DCS's timing last logged.
    var timingWarnings: [String] = []
    /// The pg_controldata failure last logged while the server runs (said once, not every cycle).
    var controlDataWarning: String?
    /// Whom the running replica follows, as this agent last configured it (a member name, nil
    /// for nobody, `remote primary host:port` for a standby leader); nil when it does not know.
    var followedLeader: String??
    /// The highest timeline this member's server has been seen on (a replica's WAL receiver
    /// tells it while it streams; pg_control lags until a restartpoint): the race compares it
    /// with the cluster's, as Patroni's `replica_cached_timeline` does.
    var highestTimeline: Int?
    /// Demoted from primary before a leader was known: see `LocalSnapshot.divergenceUnchecked`.
    var divergenceUnchecked = false
    /// The last fork check of this replica against the leader's history: what it was asked
    /// about (leader, its timeline, the replay position) and its answer.
    var lastForkCheck: (question: String, answer: String?)?
    /// Since when this leader's server has been down (for `primary_start_timeout`).
    var primaryDownSince: Date?
    /// Since when the running server has not answered the agent's queries.
    var unreadableSince: Date?
    /// When the leader key was last refreshed: a primary that cannot reach the DCS for
    /// `retry_timeout` past it (or past the agent's start, when it never did) demotes.
    var lastLeaderRefresh: Date?
    let startedAt = Date()
    /// Slot names of members this agent has seen; only these are ever dropped, never a slot
    /// the user or another tool made (Patroni drops every slot it does not know).
    var memberSlots: Set<String> = []
    /// What PostgreSQL's files say now, as this agent last wrote them (`SettingsChange`).
    var writtenSettings: WrittenSettings?
    /// The parameter warnings already logged (`ParameterCatalog.check`): each said once.
    var parameterWarningsSaid: Set<String> = []
    /// Keys of the DCS `config` key without effect in Stork, already logged (each once).
    var ignoredConfigKeysSaid: Set<String> = []
    /// `POST /restart` with a schedule, and the postmaster start it was asked against
    /// (a restart before the time cancels it, as in Patroni). In memory only, as Patroni's.
    var scheduledRestart: (request: RestartRequest, postmasterStart: Date?)?
    /// A reload asked for (SIGHUP, `POST /reload`): PostgreSQL reloads on the next cycle even
    /// when its settings did not change, as Patroni's always does.
    var reloadAskedFor = false
    /// The pause state the member key last showed: a change is published as soon as a cycle
    /// reads it, because `patronictl pause/resume --wait` gives members only loop_wait + 1 s.
    var publishedPause: Bool?
    /// The parameters a replica starts with above their configured value because its primary
    /// runs with more (pg_control): `pending_restart_reason` entries until that changes.
    var recoveryFloor: [String: JSONValue] = [:]
    /// `postgresql.callbacks`, run in the background (`Callbacks.swift`), and the role they
    /// last announced (nil: none yet; Patroni's `cb_called`).
    let callbacks = CallbackRunner()
    var callbackRole: String?
    /// When a failed pre_promote made this member give the leader key back: it stays out of
    /// the races for a ttl, as Patroni's does.
    var prePromoteFailedAt: Date?
    /// Patroni's watchdog device, and Stork's self-fence (`Fencing`).
    let watchdog: Watchdog
    let selfFence: SelfFence
    /// Reloads asked for (SIGHUP, `POST /reload`), each naming where it came from; the
    /// command that loads the configuration file takes them (`ReloadOnRequest`).
    public nonisolated let reloadRequests: AsyncStream<String>
    private nonisolated let reloadContinuation: AsyncStream<String>.Continuation

    public init(config: Config, dcs: any DCS, node: PostgresNode, status: StatusBoard = StatusBoard(), logger: Logger) {
        self.config = config
        self.apiURL = Self.apiURL(config.restapi)
        self.dcs = dcs
        self.node = node
        self.status = status
        status.update { $0.tags = config.tags }
        self.logger = logger
        self.timing = clusterTiming(config: config, dynamic: nil).timing
        self.watchdog = Watchdog(settings: config.watchdog, logger: logger)
        self.selfFence = SelfFence(dataDir: config.postgresql.dataDir, logger: logger)
        (reloadRequests, reloadContinuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for the configuration file to be loaded again (`from`: SIGHUP, POST /reload).
    public nonisolated func requestReload(from source: String) { reloadContinuation.yield(source) }
}
