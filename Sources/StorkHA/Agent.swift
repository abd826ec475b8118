import Foundation
import StorkArchive
import Synchronization
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
public actor Agent {
    let config: Config
    let dcs: any DCS
    let node: PostgresNode
    let logger: Logger
    public nonisolated let status: StatusBoard

    private var longTask: Task<Void, Never>?
    private var longTaskName: String?
    private var fatal: AgentFatalError?
    private var wakeRequested = false
    private var lastView = ClusterView()
    private var timing: Timing
    /// The upstream conninfo this agent last wrote for a running replica.
    private var followedLeader: String??

    public init(config: Config, dcs: any DCS, node: PostgresNode, status: StatusBoard = StatusBoard(), logger: Logger) {
        self.config = config
        self.dcs = dcs
        self.node = node
        self.status = status
        self.logger = logger
        self.timing = Timing(config: config, dynamic: nil)
    }

    // MARK: - The loop

    /// Runs cycles until cancelled (then stops PostgreSQL and gives up the leader key, as
    /// Patroni does on shutdown) or until a fatal condition, which it throws.
    public func run() async throws {
        for key in config.unimplementedKeys {
            logger.warning("configuration key \(key) is accepted but not implemented by Stork yet; it has no effect")
        }
        while !Task.isCancelled {
            if let message = await cycle() { logger.info("\(message)") }
            await sleepUntilNextCycle()
            // Checked after the pause too: a long task that failed for good (a bootstrap)
            // wakes the loop, which must end rather than start it again.
            if let fatal {
                await longTask?.value
                throw fatal
            }
        }
        // The loop's task is cancelled now; stopping PostgreSQL must not be (the process
        // runner would tear pg_ctl down at once), so it runs in a task of its own.
        await Task { await self.shutdown() }.value
    }

    private func sleepUntilNextCycle() async {
        var pause = Double(timing.loopWait)
        // Another member's leader key: wake when its lease runs out, as Patroni's watch does,
        // so that the race starts at the expiry, not up to loop_wait after it.
        if let leader = lastView.leader, leader != config.name {
            do {
                if let left = try await dcs.leaderExpiresIn() {
                    pause = min(pause, max(left, 0.3) + 0.1)
                } else {
                    // Gone since the cycle looked: the race is on now.
                    pause = 0.1
                }
            } catch {}
        }
        let deadline = Date().addingTimeInterval(pause)
        while !wakeRequested && Date() < deadline && !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        wakeRequested = false
    }

    /// One cycle; returns the line Patroni would log for it.
    func cycle() async -> String? {
        let view: ClusterView
        do {
            view = try await dcs.clusterView()
            status.update { $0.dcsLastSeen = Date() }
        } catch {
            logger.error("Error communicating with DCS: \(error)")
            return demoteIfLeaderKeyLapsed()
        }
        lastView = view
        timing = Timing(config: config, dynamic: view.config)
        status.update { $0.ttl = timing.ttl }

        let local = await localSnapshot()
        var snapshot = Snapshot(me: config.name, cluster: view, local: local,
                                mayBootstrap: true, mayLead: !config.noFailover, runningTask: longTaskName,
                                mayCloneWithoutLeader: config.postgresql.replicaMethods.contains(where: \.noLeader))
        snapshot.standbyCluster = standbyCluster != nil
        if longTaskName == nil {
            logger.info("Lock owner: \(view.leader ?? "None"); I am \(config.name)")
        }
        let message = await execute(decide(snapshot), view: view, local: local)
        await touchMember(local: local)
        status.update { $0.lastCycle = Date() }
        return message
    }

    // MARK: - Looking

    func localSnapshot() async -> LocalSnapshot {
        // Work of this agent's own that did not finish (`WorkInProgress`): never started.
        let incomplete = FileManager.default.fileExists(atPath: node.workMarker)
        let dirState = node.dataDirectoryState()
        var local = LocalSnapshot(dataDirectory: dirState, incompleteWork: incomplete)
        guard dirState == .initialized, !incomplete else {
            status.update { $0.systemIdentifier = nil }
            return local
        }
        local.running = node.isRunning()
        // The system identifier of a data directory never changes while its server runs, and
        // `wasPrimary` only matters for a stopped server: pg_controldata runs only when needed.
        if local.running, let known = status.snapshot.systemIdentifier {
            local.systemIdentifier = known
        } else {
            do {
                let control = try await node.controlData()
                local.systemIdentifier = control.systemIdentifier
                let standby = FileManager.default.fileExists(atPath: config.postgresql.dataDir + "/standby.signal")
                local.wasPrimary = !standby && ["shut down", "in production"].contains(control.clusterState)
                status.update { $0.systemIdentifier = control.systemIdentifier }
            } catch {
                local.dataDirectory = .unusable("pg_controldata cannot read it: \(error)")
                local.running = false
                return local
            }
        }
        if local.running, let server = try? await node.serverState() {
            local.inRecovery = server.inRecovery
            status.update {
                $0.server = server
                $0.state = "running"
                $0.role = !server.inRecovery ? "primary" : ($0.holdsLeaderKey && standbyCluster != nil ? "standby_leader" : "replica")
            }
        } else if longTaskName == nil {
            status.update {
                $0.server = nil
                $0.state = local.running ? "starting" : "stopped"
            }
        }
        return local
    }

    // MARK: - Acting

    func execute(_ decision: Decision, view: ClusterView, local: LocalSnapshot) async -> String? {
        let me = config.name
        switch decision {
        case .waitForTask(let name):
            if view.leader == me { _ = await refreshLeaderKey() }
            return "\(name) in progress"

        case .bootstrap:
            do {
                guard try await dcs.createInitialize("") else { return "failed to acquire initialize lock" }
            } catch {
                logger.error("Error communicating with DCS: \(error)")
                return nil
            }
            if let standby = standbyCluster {
                startLongTask("bootstrap standby leader", state: "creating replica") { agent in await agent.bootstrapStandbyLeader(standby) }
                return "trying to bootstrap a new standby leader from the remote primary \(standby)"
            }
            startLongTask("bootstrap", state: "initializing new cluster") { agent in await agent.bootstrapNewCluster() }
            return "trying to bootstrap a new cluster"

        case .clone(let source, let isLeader):
            let what = source.map { "from " + CloneSource.describe($0, isLeader: isLeader) } ?? "(without leader)"
            startLongTask("bootstrap \(what)", state: "creating replica") { agent in
                await agent.buildReplica(from: source)
            }
            return "trying to bootstrap \(what)"

        case .waitForLeader:
            status.update { $0.state = "stopped" }
            return "waiting for leader to bootstrap"

        case .systemIDMismatch(let data, let dcs):
            fatal = AgentFatalError("system ID mismatch, node \(me) belongs to a different cluster: \(data) != \(dcs)")
            logger.critical("\(fatal!.message)")
            return nil

        case .claimInitialize(let sysid):
            do {
                if try await dcs.createInitialize(sysid) { wakeRequested = true }
            } catch { logger.error("Error communicating with DCS: \(error)") }
            return "recorded system identifier \(sysid) of the existing data directory in the initialize key"

        case .removeIncompleteWork:
            await stopPostgresUncancelled()
            if node.isRunning() { return "PostgreSQL does not stop; the unfinished data directory stays" }
            do {
                let message = try await finishOrUndoIncompleteWork(view: view)
                wakeRequested = true
                return message
            } catch {
                logger.error("could not clean up the unfinished work: \(error)")
                return nil
            }

        case .unusableDataDirectory(let reason):
            status.update { $0.state = "stopped" }
            logger.error("data directory \(config.postgresql.dataDir) is not usable: \(reason); Stork will not start or remove it: move it away or repair it")
            return nil

        case .startPrimary:
            startLongTask("starting primary", state: "starting") { agent in await agent.startServer(role: .primary) }
            return "starting primary after failure"

        case .acquireLeaderThenStart:
            if await takeLeaderKey() {
                startLongTask("starting primary", state: "starting") { agent in await agent.startServer(role: .primary) }
                return "acquired session lock as a leader, starting as primary"
            }
            startLongTask("starting replica", state: "starting") { agent in await agent.startServer(role: agent.replicaRole()) }
            return "starting as a secondary"

        case .startReplica(let leader?) where local.wasPrimary && leader != me:
            startLongTask("rejoining", state: "starting") { agent in await agent.rejoin(leader: leader) }
            return "rejoining as a replica of \(leader): this node was a primary"

        case .startReplica:
            startLongTask("starting replica", state: "starting") { agent in await agent.startServer(role: agent.replicaRole()) }
            return "starting as a secondary"

        case .holdLeader:
            if await refreshLeaderKey() {
                if let lsn = status.snapshot.server?.walPosition { try? await dcs.writeLeaderOptime(lsn) }
                await manageReplicationSlots(view: view)
                return "no action. I am (\(me)), the leader with the lock"
            }
            // Another member holds the key now, or the DCS refused: never two primaries.
            startLongTask("demoting", state: "stopping") { agent in await agent.restartAsReplica() }
            return "demoting self because failed to update leader lock"

        case .startStandbyLeader:
            startLongTask("starting standby leader", state: "starting") { agent in await agent.startServer(role: agent.standbyLeaderRole()) }
            return "starting as the standby leader"

        case .holdStandbyLeader:
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            await manageReplicationSlots(view: view)
            let remote = standbyCluster.map { "remote primary \($0)" }
            if followedLeader != .some(remote) {
                startLongTask("following the remote primary", state: "starting") { agent in
                    do { if agent.node.isRunning() { try await agent.node.stop(timeout: agent.config.postgresql.pgCtlTimeout) } } catch {
                        agent.logger.error("failed to stop PostgreSQL: \(error)")
                        return
                    }
                    await agent.startServer(role: agent.standbyLeaderRole())
                }
                return "changing primary_conninfo to the remote primary and restarting in progress"
            }
            return "no action. I am (\(me)), the standby leader with the lock, following the \(remote ?? "remote primary")"

        case .acquireLeader:
            if await takeLeaderKey() { return "acquired session lock as a leader" }
            return "failed to acquire the leader lock"

        case .stepDown(let candidate):
            startLongTask("demoting", state: "stopping") { agent in await agent.stepDown() }
            return "manual failover: demoting myself" + (candidate.map { " in favour of \($0)" } ?? "")

        case .leaderRace where view.leader == me:
            // This replica holds the key (it demoted while the DCS was out of reach): lead again.
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            startLongTask("promoting", state: "promoting") { agent in await agent.promoteToPrimary() }
            return "promoted self to leader because I had the session lock"

        case .leaderRace:
            if view.failoverCandidate != me, let reason = await reasonNotToLead(view: view) { return "following nobody: \(reason)" }
            guard await takeLeaderKey() else { return "failed to acquire the leader lock: another member won the race" }
            startLongTask("promoting", state: "promoting") { agent in await agent.promoteToPrimary() }
            return "promoted self to leader by acquiring session lock"

        case .demote(let leader):
            startLongTask("demoting", state: "stopping") { agent in
                await agent.restartAsReplica()
            }
            return "demoting self because \(leader.map { "\($0) holds the leader lock" } ?? "this node may not be the leader")"

        case .follow(let leader):
            if followedLeader == nil, await runningUpstreamMatches(leader) {
                // A new agent beside a replica that already follows the leader: nothing to restart.
                followedLeader = .some(leader)
            }
            if followedLeader != .some(leader) {
                // PostgreSQL 13 and later reread primary_conninfo and primary_slot_name on reload.
                if (status.snapshot.server?.serverVersion ?? 0) >= 130000 {
                    startLongTask("following a new leader", state: "running") { agent in await agent.followByReload(leader) }
                    return "changing primary_conninfo and reloading in progress"
                }
                startLongTask("following a new leader", state: "starting") { agent in await agent.restartAsReplica() }
                return "changing primary_conninfo and restarting in progress"
            }
            if let leader { return "no action. I am (\(me)), a secondary, and following a leader (\(leader))" }
            return "no action. I am (\(me)), a secondary, and there is no leader"
        }
    }

    /// When the leader key was last refreshed: a primary that cannot reach the DCS for
    /// `retry_timeout` past it demotes.
    private var lastLeaderRefresh: Date?

    /// With the DCS out of reach: a primary whose key was last refreshed more than
    /// `retry_timeout` ago may have lost it to another member by now, so it stops accepting
    /// writes (restarts read-only, following nobody) rather than risk two primaries.
    private func demoteIfLeaderKeyLapsed() -> String? {
        guard status.snapshot.holdsLeaderKey, longTaskName == nil, let last = lastLeaderRefresh,
              Date().timeIntervalSince(last) > Double(timing.retryTimeout) else { return nil }
        status.update { $0.holdsLeaderKey = false }
        lastLeaderRefresh = nil
        startLongTask("demoting", state: "stopping") { agent in await agent.restartAsReplica() }
        return "demoting self because DCS is not accessible and I was a leader"
    }

    /// Why this member must not take the leader key now, or nil when it is the healthiest:
    /// PostgreSQL answers, it is no more than `maximum_lag_on_failover` bytes behind the last
    /// leader's position, no member (that may lead) still runs as a primary, and none has more
    /// WAL, or the same WAL and a replay that is not paused where this one's is, or more of it
    /// replayed. Members whose API does not answer are left out, as Patroni does.
    func reasonNotToLead(view: ClusterView) async -> String? {
        guard let mine = try? await node.serverState() else { return "PostgreSQL does not answer" }
        func key(wal: Int, paused: Bool, replayed: Int) -> (Int, Int, Int) { (wal, paused ? 0 : 1, replayed) }
        let myKey = key(wal: mine.walPosition, paused: mine.replayPaused, replayed: mine.replayLSN ?? mine.walPosition)
        let maxLag = clusterConfig(config, view.config)["maximum_lag_on_failover"]?.intValue ?? 1_048_576
        if let optime = view.leaderOptime, optime - mine.walPosition > maxLag {
            return "my WAL position \(LSN.format(mine.walPosition)) is \(optime - mine.walPosition) bytes behind the last leader's \(LSN.format(optime)) (maximum_lag_on_failover \(maxLag))"
        }
        let client = MemberAPIClient(config: config, timeout: 2)
        for member in view.members where member.name != config.name && member.tags["nofailover"]?.isTruthy != true {
            guard let api = member.apiURL else { continue }
            // The member key's api_url is Patroni's: http://host:port/patroni.
            let url = api.hasSuffix("/patroni") ? api : (api.hasSuffix("/") ? api + "patroni" : api + "/patroni")
            guard let response = try? await client.request("GET", url: url),
                  response.status == 200, let doc = JSONValue.parse(json: Data(response.text.utf8)) else {
                logger.warning("Request failed to \(member.name): GET \(url); leaving it out of the race")
                continue
            }
            let xlog = doc["xlog"]
            if doc["role"]?.scalarText == "primary" || doc["role"]?.scalarText == "master", xlog?["location"] != nil {
                return "\(member.name) still runs as a primary"
            }
            guard let received = xlog?["received_location"]?.intValue ?? xlog?["replayed_location"]?.intValue else { continue }
            let replayed = xlog?["replayed_location"]?.intValue ?? received
            let theirs = key(wal: max(received, replayed), paused: xlog?["paused"] == .bool(true), replayed: replayed)
            if theirs > myKey {
                return "\(member.name) is ahead (WAL \(LSN.format(theirs.0)), replayed \(LSN.format(theirs.2))\(theirs.1 == 1 && myKey.1 == 0 ? ", not paused" : "")) of me (\(LSN.format(myKey.0)), replayed \(LSN.format(myKey.2))\(myKey.1 == 0 ? ", paused" : ""))"
            }
        }
        return nil
    }

    /// The race's winner: promote, publish the new timeline's start in `history` as Patroni
    /// does, and lead. A promotion that fails gives the key back.
    func promoteToPrimary() async {
        let before = status.snapshot.server
        do {
            // The server removes standby.signal itself when it promotes; the primary's
            // configuration (no upstream) is written after.
            try await node.promote()
            try await writeConfig(role: .primary)
            try await node.reload()
            // pg_control names the new timeline only after a checkpoint; a former primary's
            // pg_rewind reads it there.
            _ = try? await node.localQuery("CHECKPOINT")
            followedLeader = nil
            let after = try? await node.serverState()
            logger.info("promoted: timeline \(after?.timeline ?? 0), at \(LSN.format(before?.walPosition ?? 0))")
            if lastView.failover != nil { try? await dcs.setFailover(nil) }
            if let before, let after {
                do { try await dcs.appendHistory(timeline: before.timeline, lsn: before.walPosition, reason: "no recovery target specified",
                                                 newLeader: config.name) } catch { logger.warning("could not update history: \(error)") }
                try? await dcs.writeLeaderOptime(after.walPosition)
            }
        } catch {
            logger.error("promotion failed: \(error); giving the leader key back")
            try? await dcs.deleteLeader()
            status.update { $0.holdsLeaderKey = false }
        }
    }

    private func takeLeaderKey() async -> Bool {
        do {
            let ok = try await dcs.acquireLeader(ttl: timing.ttl)
            status.update { $0.holdsLeaderKey = ok }
            if ok { lastLeaderRefresh = Date() }
            return ok
        } catch {
            logger.error("Error communicating with DCS: \(error)")
            return false
        }
    }

    private func refreshLeaderKey() async -> Bool {
        do {
            let ok = try await dcs.refreshLeader(ttl: timing.ttl)
            status.update { $0.holdsLeaderKey = ok }
            if ok { lastLeaderRefresh = Date() }
            return ok
        } catch {
            logger.error("Error communicating with DCS: \(error)")
            return false
        }
    }

    func touchMember(local: LocalSnapshot) async {
        let s = status.snapshot
        var data: [String: JSONValue] = [
            "conn_url": .string(node.connURL),
            "api_url": .string(apiURL),
            "state": .string(s.state),
            "role": .string(s.role),
            "version": .string(storkVersion),
        ]
        if let server = s.server, s.state == "running" {
            data["xlog_location"] = .int(server.walPosition)
            data["timeline"] = .int(server.timeline)
            if server.inRecovery {
                if let r = server.replayLSN { data["replay_lsn"] = .int(r) }
                if let r = server.receiveLSN { data["receive_lsn"] = .int(r) }
                if server.streaming { data["replication_state"] = .string("streaming") }
            }
        }
        if !config.tags.isEmpty { data["tags"] = .object(config.tags) }
        if let progress = s.replicaCreation { data["replica_creation"] = APIResponses.replicaCreation(progress) }
        if let progress = s.recoveryProgress { data["recovery_progress"] = APIResponses.recoveryProgress(progress) }
        do { try await dcs.touchMember(.object(data), ttl: timing.ttl) } catch {
            logger.error("Error communicating with DCS: \(error)")
        }
    }

    nonisolated var apiURL: String {
        let scheme = config.restapi.certfile == nil ? "http" : "https"
        return "\(scheme)://\(config.restapi.connectAddress)/patroni"
    }

    // MARK: - Long tasks

    @discardableResult
    private func startLongTask(_ name: String, state: String, _ body: @escaping @Sendable (Agent) async -> Void) -> Bool {
        guard longTask == nil else { return false }
        longTaskName = name
        status.update { $0.state = state; $0.task = name }
        longTask = Task { [self] in
            await body(self)
            self.finishLongTask()
        }
        return true
    }

    private func finishLongTask() {
        longTask = nil
        longTaskName = nil
        status.update { $0.task = nil }
        // The loop runs at once, not after loop_wait; but a chain that failed waits a cycle
        // (as Patroni's does), or a method that keeps failing at once would run in a tight loop.
        wakeRequested = !waitBeforeNextCycle
        waitBeforeNextCycle = false
    }

    /// Set by a long task that failed in a way only time can cure.
    private var waitBeforeNextCycle = false

    /// The running server's `primary_conninfo` already points at `leader`'s host and port.
    private func runningUpstreamMatches(_ leader: String?) async -> Bool {
        guard let leader, let url = lastView.member(named: leader)?.connURL,
              let connection = try? await node.localConnection() else { return false }
        defer { Task { await connection.close() } }
        guard let rows = try? await connection.query("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'"),
              let running = rows.first?.first ?? nil, let pairs = ConnInfo.parse(running) else { return false }
        let want = ConnInfo.parse(node.replicationConninfo(toConnURL: url)) ?? []
        func value(_ key: String, _ list: [(key: String, value: String)]) -> String? { list.first { $0.key == key }?.value }
        return ["host", "port", "user"].allSatisfy { value($0, pairs) == value($0, want) }
    }

    /// `standby_cluster` of the cluster's configuration, when this is a standby cluster.
    var standbyCluster: StandbyCluster? { StandbyCluster(config: config, dynamic: lastView.config) }

    /// The standby leader's role: a standby of the remote primary.
    func standbyLeaderRole() -> ServerRole {
        guard let standby = standbyCluster else { return replicaRole() }
        return .replica(primaryConninfo: node.replicationConninfo(toConnURL: standby.connURL))
    }

    func replicaRole() -> ServerRole {
        guard let leader = lastView.leaderMember, leader.name != config.name, let url = leader.connURL else {
            return .replica(primaryConninfo: nil)
        }
        return .replica(primaryConninfo: node.replicationConninfo(toConnURL: url))
    }

    /// The standby cluster whose remote primary `role` follows, when it is the standby leader's.
    private func remotePrimary(followedBy role: ServerRole) -> StandbyCluster? {
        guard case .replica(let upstream?) = role, let standby = standbyCluster,
              upstream == node.replicationConninfo(toConnURL: standby.connURL) else { return nil }
        return standby
    }

    private func writeConfig(role: ServerRole, hba: [String]? = nil) async throws {
        var parameters = effectiveParameters(config: config, dynamic: lastView.config)
        if case .replica(let upstream?) = role, !upstream.isEmpty, useSlots(config: config, dynamic: lastView.config) {
            parameters["primary_slot_name"] = .string(slotName(forMember: config.name))
        }
        if let standby = remotePrimary(followedBy: role) {
            // The standby leader: the remote primary's slot (if any), restore_command, delay.
            parameters["primary_slot_name"] = standby.primarySlotName.map { .string($0) }
            parameters.merge(standby.recoveryParameters) { _, new in new }
        }
        switch role {
        case .replica, .bootstrapRecovery:
            // Recovery refuses to run with less than the primary had for these; as Patroni
            // does, the server starts with the larger of the configured value and pg_control's.
            if let control = try? await node.controlData() {
                let floor = recoveryParameterFloor(configured: parameters, control: control)
                for (name, value) in floor.sorted(by: { $0.key < $1.key }) {
                    logger.info("starting with \(name) = \(value.scalarText ?? ""), the primary's value from pg_control (configured lower)")
                }
                parameters.merge(floor) { _, new in new }
            }
        case .primary:
            break
        }
        try node.writeConfiguration(parameters: parameters, hba: hba ?? effectiveHBA(config: config), role: role)
    }

    /// Slot names of members this agent has seen; only these are ever dropped, never a slot
    /// the user or another tool made (Patroni drops every slot it does not know).
    private var memberSlots: Set<String> = []

    /// On the leader: a physical slot for every other member (WAL reserved at once), and the
    /// slots of members that left the cluster dropped once inactive.
    func manageReplicationSlots(view: ClusterView) async {
        guard useSlots(config: config, dynamic: view.config) else { return }
        let wanted = Set(view.members.map(\.name).filter { $0 != config.name }.map(slotName(forMember:)))
        memberSlots.formUnion(wanted)
        do {
            let connection = try await node.localConnection()
            defer { Task { await connection.close() } }
            let rows = try await connection.query("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'")
            let existing = Dictionary(rows.compactMap { r in r[0].map { ($0, r[1] == "t") } }, uniquingKeysWith: { a, _ in a })
            for slot in wanted.subtracting(existing.keys).sorted() {
                try await connection.query("SELECT pg_create_physical_replication_slot($1, true)", params: [slot])
                logger.info("created physical replication slot \(slot)")
            }
            for (slot, active) in existing where !active && !wanted.contains(slot) && memberSlots.contains(slot) {
                try await connection.query("SELECT pg_drop_replication_slot($1)", params: [slot])
                memberSlots.remove(slot)
                logger.info("dropped replication slot \(slot) of a member that left the cluster")
            }
        } catch {
            logger.warning("could not manage replication slots: \(error)")
        }
    }

    func startServer(role: ServerRole) async {
        do {
            try await writeConfig(role: role)
            try await node.start(timeout: config.postgresql.pgCtlTimeout)
            status.update { $0.postmasterStartTime = Date() }
            if let standby = remotePrimary(followedBy: role) {
                followedLeader = .some("remote primary \(standby)")
            } else if case .replica = role {
                followedLeader = .some(lastView.leader == config.name ? nil : lastView.leader)
            }
        } catch {
            status.update { $0.state = "start failed" }
            logger.error("failed to start PostgreSQL: \(error)")
        }
    }

    /// A former primary joins `leader`'s cluster: after crash recovery in single-user mode
    /// (for one that crashed), `pg_rewind --dry-run` tells whether its history diverged from
    /// the leader's. Not diverged, it starts as a replica; diverged, it is rewound
    /// (`use_pg_rewind`) or rebuilt through `create_replica_methods` (the old directory stays
    /// until the new copy is in place). A rewind that fails is also rebuilt.
    func rejoin(leader: String) async {
        guard let url = lastView.member(named: leader)?.connURL else {
            await startServer(role: replicaRole())
            return
        }
        let useRewind = config.postgresql.useRewind || clusterConfig(config, lastView.config)["postgresql"]?["use_pg_rewind"]?.isTruthy == true
        do {
            if (try? await node.controlData())?.clusterState == "in production" {
                logger.info("running crash recovery in single-user mode: pg_rewind needs a cleanly shut down data directory")
                try await node.singleUserCrashRecovery()
            }
            switch try await node.rewind(fromConnURL: url, dryRun: true) {
            case .notNeeded:
                logger.info("this former primary's history has not diverged from \(leader)'s: starting as its replica")
                await startServer(role: replicaRole())
                return
            case .sameTimeline:
                logger.info("waiting for \(leader) to checkpoint after its promotion: pg_rewind cannot compare the histories before")
                return
            case .needed:
                break
            }
            if useRewind {
                logger.info("this former primary's history diverged from \(leader)'s: rewinding it with pg_rewind (use_pg_rewind)")
                _ = try await node.rewind(fromConnURL: url, dryRun: false)
                logger.info("pg_rewind done: starting as a replica of \(leader)")
                await startServer(role: replicaRole())
                return
            }
            logger.warning("this former primary's history diverged from \(leader)'s and use_pg_rewind is off: rebuilding it through create_replica_methods")
        } catch {
            logger.error("cannot rejoin by rewind: \(oneLine(String(describing: error))); rebuilding through create_replica_methods")
        }
        await rebuild(from: leader, description: CloneSource.describe(leader, isLeader: true))
    }

    /// A switchover: a clean stop (the replicas receive everything, the shutdown checkpoint
    /// too), the leader key given back, then a start as a replica that will follow the new leader.
    func stepDown() async {
        await stopPostgresUncancelled()
        guard !node.isRunning() else {
            logger.error("manual failover: PostgreSQL does not stop; keeping the leader key")
            return
        }
        do { try await dcs.deleteLeader() } catch { logger.error("manual failover: could not give the leader key back: \(error)") }
        status.update { $0.holdsLeaderKey = false }
        lastLeaderRefresh = nil
        await startServer(role: .replica(primaryConninfo: nil))
    }

    /// `POST /switchover` and `POST /failover`, with Patroni's checks and answers: writes the
    /// `failover` key and waits up to 30 s for another member to lead. The status code and text.
    public func manualFailover(leader: String?, candidate: String?, switchover: Bool) async -> (Int, String) {
        guard let view = try? await dcs.clusterView() else { return (503, "DCS is not accessible") }
        let what = switchover ? "Switchover" : "Failover"
        if switchover && leader == nil { return (400, "Switchover could be performed only from a specific leader") }
        if !switchover && candidate == nil { return (400, "Failover could be performed only to a specific candidate") }
        guard let current = view.leader else { return (412, "Cluster has no leader, can not \(what.lowercased())") }
        if let leader, leader != current { return (412, "leader name does not match") }
        if let candidate {
            if candidate == current { return (412, "\(what) target and source are the same") }
            guard let member = view.member(named: candidate) else { return (412, "candidate name does not match with any member") }
            guard member.state == "running" else { return (412, "candidate \(candidate) is not running") }
            if member.tags["nofailover"]?.isTruthy == true { return (412, "candidate \(candidate) is tagged nofailover") }
        } else if !view.members.contains(where: { $0.name != current && $0.state == "running" && $0.tags["nofailover"]?.isTruthy != true }) {
            return (412, "No candidates found to \(what.lowercased()) to")
        }
        do { try await dcs.setFailover(ManualFailover(leader: leader ?? current, candidate: candidate)) } catch {
            return (503, "DCS is not accessible: \(error)")
        }
        logger.info("\(what.lowercased()) requested: from \(current) to \(candidate ?? "the healthiest replica")")
        for _ in 0..<300 {
            try? await Task.sleep(for: .milliseconds(100))
            if let now = try? await dcs.clusterView(), let newLeader = now.leader, newLeader != current, now.failover == nil {
                return (200, "Successfully \(switchover ? "switched over" : "failed over") to \"\(newLeader)\"")
            }
        }
        return (503, "\(what) status unknown")
    }

    /// A running replica follows `leader` from now on: new `primary_conninfo`, then a reload;
    /// a restart when the reload fails.
    func followByReload(_ leader: String?) async {
        do {
            try await writeConfig(role: replicaRole())
            try await node.reload()
            followedLeader = .some(leader)
            logger.info("following \(leader ?? "nobody") without a restart (primary_conninfo reloaded)")
        } catch {
            logger.warning("reloading primary_conninfo failed (\(error)); restarting")
            await restartAsReplica()
        }
    }

    func restartAsReplica() async {
        do {
            if node.isRunning() { try await node.stop(timeout: config.postgresql.pgCtlTimeout) }
        } catch {
            logger.error("failed to stop PostgreSQL: \(error)")
            return
        }
        await startServer(role: replicaRole())
    }

    /// The winner of the `initialize` race: initdb (or the custom method and its recovery),
    /// start, roles, post_bootstrap, then the system identifier in `initialize`, `config`,
    /// and the leader key.
    func bootstrapNewCluster() async {
        let pg = config.postgresql
        do {
            try node.markWork(.bootstrap)
            if let custom = config.bootstrap.custom {
                try await bootstrapFromCustomMethod(custom)
            } else {
                try await node.initdb(options: config.bootstrap.initdb)
                try await writeConfig(role: .primary)
                try await node.start(timeout: pg.pgCtlTimeout)
                status.update { $0.postmasterStartTime = Date() }
                try await node.createRoles(users: config.bootstrap.users)
            }
            if let post = config.bootstrap.postBootstrap {
                logger.info("running post_bootstrap")
                try await node.runPostBootstrap(post)
            }
            try await recordNewCluster(role: "primary")
            logger.info("initialized a new cluster")
        } catch {
            await failBootstrap(error)
        }
    }

    /// A bootstrap's last steps: the system identifier in `initialize`, the cluster-wide
    /// configuration in `config`, and the leader key.
    private func recordNewCluster(role: String) async throws {
        let sysid = try await node.controlData().systemIdentifier
        try await dcs.setInitialize(sysid)
        // From here the cluster exists: a crash leaves a data directory whose system
        // identifier is in `initialize`, which the agent starts and leads again.
        node.clearWork()
        _ = try await dcs.writeConfig(.object(config.bootstrap.dcs), createOnly: true)
        guard try await dcs.acquireLeader(ttl: timing.ttl) else {
            throw AgentFatalError("another member took the leader key during bootstrap")
        }
        status.update { $0.holdsLeaderKey = true; $0.state = "running"; $0.role = role }
    }

    /// The first member of a standby cluster: a copy of the remote primary through
    /// `standby_cluster.create_replica_methods`, started as its standby, then the system
    /// identifier in `initialize`, `config`, and the leader key (the standby leader).
    func bootstrapStandbyLeader(_ standby: StandbyCluster) async {
        let source = CloneSource(name: "remote primary \(standby)", connURL: standby.connURL, isLeader: true)
        let request = ReplicaBuildRequest(methods: config.postgresql.standbyReplicaMethods ?? [.basebackupDefault], source: source,
                                          conninfo: node.replicationConninfo(toConnURL: standby.connURL), scope: config.scope,
                                          expectedSystemIdentifier: nil, slot: nil)
        let status = self.status
        let builder = ReplicaBuilder(node: node, logger: logger) { progress in status.update { $0.replicaCreation = progress } }
        do {
            switch await builder.build(request) {
            case .built: break
            case .failed(let reason), .tryLater(_, let reason), .nothingCanRun(let reason):
                throw PostgresError("the copy of the remote primary \(standby) failed: \(reason)")
            }
            try node.markWork(.bootstrap)
            try await writeConfig(role: standbyLeaderRole())
            try await node.start(timeout: config.postgresql.pgCtlTimeout)
            followedLeader = .some("remote primary \(standby)")
            status.update { $0.postmasterStartTime = Date() }
            try await recordNewCluster(role: "standby_leader")
            logger.info("initialized a new standby cluster: the standby leader follows the remote primary \(standby)")
        } catch {
            await failBootstrap(error)
        }
    }

    /// A custom bootstrap: the command, Stork's configuration over what it left (recovery from
    /// `recovery_conf`, or the tool's own with `keep_existing_recovery_conf`), local
    /// connections trusted while the restored cluster's passwords are unknown, the wait for
    /// the end of recovery, then the roles and the real `pg_hba.conf`.
    func bootstrapFromCustomMethod(_ custom: BootstrapMethodSpec) async throws {
        let pg = config.postgresql
        var recoveryConf = custom.recoveryConf
        if let source = custom.archive {
            status.update { $0.state = "restoring from the archive" }
            recoveryConf = try await restoreForBootstrap(source)
        } else {
            status.update { $0.state = "running custom bootstrap script" }
            try await CustomBootstrap.run(custom, scope: config.scope, node: node)
        }
        let parameters = effectiveParameters(config: config, dynamic: lastView.config)
        try node.prepareRestoredCopy(keepExistingRecovery: custom.keepExistingRecoveryConf,
                                     promoteTriggerFile: parameters["promote_trigger_file"]?.scalarText)
        let recovery: [String: JSONValue]? = custom.keepExistingRecoveryConf ? nil : (recoveryConf ?? [:])
        do { _ = try await node.controlData() } catch {
            throw PostgresError("the bootstrap command left no readable pg_control in \(pg.dataDir): \(error)")
        }
        let trust = ["local all all trust", "host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
        // An empty recovery_conf: no recovery.signal, the copy starts as it is (crash recovery
        // from its backup_label, if any).
        try await writeConfig(role: recoveryConf == nil && !custom.keepExistingRecoveryConf ? .primary : .bootstrapRecovery(recoveryConf: recovery),
                              hba: trust)
        status.update { $0.state = "starting after custom bootstrap" }
        do { try await node.start(timeout: pg.pgCtlTimeout) } catch where node.isRunning() {
            // Recovery may take longer than pg_ctl waits before the server accepts connections.
            logger.info("PostgreSQL is still recovering after \(pg.pgCtlTimeout) s; waiting for recovery to end")
        }
        status.update { $0.postmasterStartTime = Date() }
        try await waitForRecoveryEnd(target: RecoveryTarget(recovery ?? [:]), timeout: config.bootstrap.recoveryTimeout)
        try await writeConfig(role: .primary, hba: trust)
        try await node.reload()
        try await node.createRoles(users: config.bootstrap.users)
        try await writeConfig(role: .primary)
        try await node.reload()
        logger.info("the roles are set; pg_hba.conf no longer trusts local connections")
    }

    /// `bootstrap.method: archive`: the backup the target needs (an error before anything is
    /// restored when the target is older than every backup), restored and checked into the
    /// empty data directory; returns the recovery parameters: the target, `restore_command`
    /// fetching from the source's archive, and `recovery_target_action: promote` unless given.
    func restoreForBootstrap(_ source: ArchiveBootstrapSource) async throws -> [String: JSONValue] {
        guard let file = config.configFile else {
            throw PostgresError("bootstrap.method archive needs the configuration in a file: restore_command names it")
        }
        let scope = source.scope ?? config.scope
        let catalog = BackupCatalog(store: try openArchiveStore(source.archive), scope: scope)
        var target: BackupCatalog.Target = .newest
        switch source.target {
        case .time(let text):
            guard let time = RestoredRecovery.parseTime(text) else {
                throw PostgresError("bootstrap.archive.recovery_target_time \(text): expected a time with a zone, such as 2026-11-27 13:00:00+00")
            }
            target = .time(time)
        case .lsn(let text):
            guard let lsn = LSN.parse(text) else { throw PostgresError("bootstrap.archive.recovery_target_lsn \(text): expected an LSN such as 0/3000060") }
            target = .lsn(lsn)
        case .xid(let text):
            guard let xid = UInt64(text) else { throw PostgresError("bootstrap.archive.recovery_target_xid \(text): expected a transaction id") }
            target = .xid(xid)
        case .end, .immediate, .name: break
        }
        if let name = source.backup { target = .named(name) }
        let manifest = try catalog.choose(target)
        logger.info("restoring backup \(manifest.name) of \(scope) (\(manifest.bytes >> 20) MiB, stopped at LSN \(manifest.stopLSN)) into \(config.postgresql.dataDir), then recovery to \(source.target)")
        try node.ensureDataDirectory()
        let started = Date()
        let progress = ReplicaProgress(method: "archive", attempt: 1, attempts: 1, started: started)
        let status = self.status, logger = self.logger
        let lastLog = Mutex(Date())
        let restorer = BackupRestorer(catalog: catalog, concurrency: source.archive.concurrency, owner: node.runAs)
        _ = try await restorer.restore(manifest, into: config.postgresql.dataDir, expectedSystemIdentifier: nil) { done, total in
            var p = progress
            p.bytesDone = done
            p.bytesTotal = total
            status.update { $0.replicaCreation = p }
            let due = lastLog.withLock { last in
                guard Date().timeIntervalSince(last) >= 10 else { return false }
                last = Date()
                return true
            }
            if due { logger.info("restoring backup \(manifest.name): \(done >> 20) of \(total >> 20) MiB in \(Int(Date().timeIntervalSince(started))) s") }
        }
        status.update { $0.replicaCreation = nil }
        var conf = source.recoveryParameters
        conf["restore_command"] = .string(WALArchiveCommands.restoreCommand(configFile: file, bootstrapSource: true))
        if conf["recovery_target_action"] == nil, source.target != .end { conf["recovery_target_action"] = .string("promote") }
        return conf
    }

    /// Waits until the restored copy leaves recovery, logging the replay position every 10 s
    /// against the target. Paused at the target (`recovery_target_action: pause`) the member
    /// state says so, and `stork resume` ends recovery; the time paused does not count against
    /// `timeout`. Throws when PostgreSQL stops or the timeout passes.
    func waitForRecoveryEnd(target: RecoveryTarget, timeout: Double?) async throws {
        var waited: Double = 0
        var lastLog = Date.distantPast
        var pausedSaid = false
        let started = Date()
        defer { status.update { $0.recoveryProgress = nil } }
        while true {
            guard node.isRunning() else {
                let tail = PostgresNode.tail(ofFile: node.serverLogPath, lines: 20)
                throw PostgresError("PostgreSQL stopped during recovery" + (tail.isEmpty ? "" : "; server log \(node.serverLogPath):\n" + tail))
            }
            let row = try? await node.localQuery("""
                SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text,
                       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END
                """)
            if let row, row[0] == "f" {
                logger.info("recovery has ended: the restored cluster is promoted")
                return
            }
            status.update {
                $0.recoveryProgress = RecoveryProgress(target: "\(target)", replayedLSN: row?[1] ?? nil, lastTransaction: row?[2] ?? nil,
                                                       paused: (row?[3] ?? nil) == "paused", started: started)
            }
            let replayed = (row?[1] ?? nil).map { "replayed up to \($0)" + ((row?[2] ?? nil).map { " (last transaction \($0))" } ?? "") }
                ?? "not yet consistent"
            if (row?[3] ?? nil) == "paused" {
                status.update { $0.state = "recovery paused" }
                if !pausedSaid {
                    logger.warning("recovery is paused, \(replayed), target \(target): run `stork resume` to end recovery and promote, or stop the agent to look first")
                    pausedSaid = true
                }
            } else {
                pausedSaid = false
                status.update { $0.state = "recovering after custom bootstrap" }
                if let timeout, waited >= timeout {
                    throw PostgresError("recovery did not end within \(Int(timeout)) s (bootstrap.recovery_timeout); \(replayed), target \(target)")
                }
                if Date().timeIntervalSince(lastLog) >= 10 {
                    logger.info("waiting for recovery to end: \(replayed), target \(target)")
                    lastLog = Date()
                }
                waited += 1
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    /// Undo a failed bootstrap without losing anything: stop PostgreSQL, give `initialize`
    /// back (only this member's empty claim) so another member can try, move the data
    /// directory aside (or remove it, `keep_failed_data_dirs: 0`), exit non-zero.
    private func failBootstrap(_ error: any Error) async {
        let pg = config.postgresql
        let reason = oneLine("\(error)", limit: 2000)
        logger.error(Task.isCancelled ? "bootstrap cancelled by shutdown: \(reason)" : "bootstrap failed: \(reason)")
        status.update { $0.state = "initdb failed" }
        await stopPostgresUncancelled()
        // Once the system identifier is in `initialize` (the marker goes then too), the
        // cluster exists: its data directory and key stay.
        let initialize = try? await dcs.clusterView().initialize
        guard node.workInProgress() == .bootstrap || initialize == "" else {
            fatal = AgentFatalError("failed to finish the bootstrap of the cluster: \(reason)")
            return
        }
        if initialize == "" {
            do { try await dcs.deleteInitialize() } catch { logger.error("could not remove the initialize key: \(error)") }
        }
        var kept = ""
        if node.isRunning() {
            logger.error("PostgreSQL still runs in \(pg.dataDir): the data directory stays where it is; stop the server, then move or remove the directory")
        } else if config.bootstrap.keepFailedDataDirs == 0 {
            do {
                try node.removeFailedBootstrap()
                logger.info("removed the failed bootstrap's data directory \(pg.dataDir) (bootstrap.keep_failed_data_dirs: 0)")
            } catch { logger.error("could not remove the failed bootstrap's data directory: \(error)") }
        } else {
            kept = moveDataDirectoryAside() ?? ""
        }
        node.clearWork()
        fatal = AgentFatalError("failed to bootstrap the cluster: \(reason)" + (kept.isEmpty ? "" : "; its data directory is kept at \(kept)"))
    }

    /// Renames a non-empty data directory (with PostgreSQL stopped) to `<data_dir>_<timestamp>`,
    /// its WAL and tablespace directories outside it too (their links follow), so that a new
    /// bootstrap finds them free; then removes the oldest such directories beyond
    /// `bootstrap.keep_failed_data_dirs`. The new path, or nil when there was nothing to move
    /// or the rename failed (logged).
    private func moveDataDirectoryAside() -> String? {
        let dataDir = config.postgresql.dataDir
        guard node.dataDirectoryState() != .empty else { return nil }
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .current,
                                                formatOptions: [.withFullDate, .withTime, .withDashSeparatorInDate])
            .replacingOccurrences(of: ":", with: "")
        do {
            let target = try node.moveAside(suffix: "_" + stamp)
            logger.info("moved the data directory \(dataDir) aside to \(target)")
            for old in node.movedAsideDirectories().dropLast(config.bootstrap.keepFailedDataDirs) {
                try node.removeMovedAside(old)
                logger.info("removed \(old), an older failed bootstrap's data directory (bootstrap.keep_failed_data_dirs: \(config.bootstrap.keepFailedDataDirs))")
            }
            return target
        } catch {
            logger.error("could not move \(dataDir) aside: \(error)")
            return nil
        }
    }

    /// Undoes or finishes what a crashed agent left (`WorkInProgress`): an unfinished clone in
    /// place is wiped (a copy of another member), an unfinished staging directory removed (the
    /// data directory was never touched), a checked staged copy put in place, and an unfinished
    /// bootstrap moved aside with the empty `initialize` it held given back.
    func finishOrUndoIncompleteWork(view: ClusterView) async throws -> String {
        let work = node.workInProgress() ?? .clone
        await node.stopOrphanedCopies()
        let dataDir = config.postgresql.dataDir
        switch work {
        case .staged:
            logger.warning("a checked copy waits in \(node.stagingDirectory): putting it in place of \(dataDir)")
            try node.installStagedCopy()
        case .staging:
            if let backup = BackupRestorer.interruptedRestore(in: node.stagingDirectory) {
                // The archive method resumes it, keeping the files already restored and verified.
                logger.warning("\(node.stagingDirectory) holds an interrupted restore of backup \(backup): kept for the archive method to resume (\(dataDir) was not touched)")
                node.clearWork()
                return "kept the interrupted restore of backup \(backup)"
            }
            logger.warning("\(node.stagingDirectory) holds an unfinished copy of this agent: removing it (\(dataDir) was not touched)")
            try node.removeStagedCopy()
        case .clone:
            logger.warning("the data directory \(dataDir) holds an unfinished clone of this agent: removing it")
            try node.wipeDataDirectory()
        case .bootstrap:
            logger.warning("the data directory \(dataDir) holds an unfinished bootstrap of this agent: moving it aside")
            guard moveDataDirectoryAside() != nil || node.dataDirectoryState() == .empty else {
                throw AgentFatalError("could not move the unfinished bootstrap aside")
            }
            if view.initialize == "" { try await dcs.deleteInitialize() }
        }
        node.clearWork()
        return work == .staged ? "put the checked copy in place" : "removed the data directory left by an unfinished \(work.rawValue)"
    }

    /// Builds this member through the replica-method chain from member `name` (nil: without
    /// one, `no_leader` methods only); on success starts it as a replica. Whether it was built.
    @discardableResult
    func buildReplica(from name: String?) async -> Bool {
        if let name, lastView.member(named: name)?.connURL == nil {
            logger.error("cannot clone from '\(name)': its member key has no conn_url")
            return false
        }
        let request = replicaBuildRequest(config: config, view: lastView, node: node, source: name)
        let source = request.source
        let status = self.status
        let builder = ReplicaBuilder(node: node, logger: logger) { progress in status.update { $0.replicaCreation = progress } }
        let outcome = await builder.build(request)
        let what = source.map { "from \($0)" } ?? "(without leader)"
        switch outcome {
        case .built:
            logger.info("bootstrapped \(what)")
            await startServer(role: replicaRole())
            return true
        case .failed(let reasons):
            waitBeforeNextCycle = true
            status.update { $0.state = "creating replica failed" }
            logger.error("failed to bootstrap \(what): every replica method failed (\(reasons)); the chain runs again on the next cycle")
        case .tryLater(let method, let reason):
            waitBeforeNextCycle = true
            status.update { $0.state = "creating replica failed" }
            logger.warning("failed to bootstrap \(what): \(method) asks to be tried again later (\(reason)); the chain runs again on the next cycle")
        case .nothingCanRun(let reason):
            waitBeforeNextCycle = true
            status.update { $0.state = "stopped" }
            logger.info("cannot create a replica now: \(reason)")
        }
        return false
    }

    // MARK: - Reinitialize

    /// `POST /reinitialize`: nil when the rebuild has started, else why not (Patroni's texts).
    /// `force` cancels a long task that runs; `fromLeader` clones from the leader even when a
    /// member is tagged `clonefrom`.
    public func reinitialize(force: Bool, fromLeader: Bool) async -> String? {
        if let view = try? await dcs.clusterView() { lastView = view }
        guard let leader = lastView.leader else { return "Cluster has no leader, can not reinitialize" }
        if leader == config.name { return "I am the leader, can not reinitialize" }
        if let running = longTaskName {
            guard force else { return "\(running) already in progress" }
            logger.info("reinitialize: cancelling \(running)")
            longTask?.cancel()
            await longTask?.value
        }
        let source = fromLeader ? lastView.leaderMember : cloneSource(me: config.name, cluster: lastView)
        guard let source, source.connURL != nil else { return "no member to clone from: the leader's member key has no conn_url" }
        let what = CloneSource.describe(source.name, isLeader: source.name == leader)
        guard startLongTask("reinitialize", state: "creating replica", { agent in
            await agent.rebuild(from: source.name, description: what)
        }) else { return "\(longTaskName ?? "another task") already in progress" }
        logger.info("reinitialize requested: rebuilding this member from \(what)")
        return nil
    }

    /// Stops PostgreSQL and builds the member again through the chain. The old data directory
    /// stays in place until the new copy is checked and renamed over it, when the disk has room
    /// for both; otherwise it is removed first (and the log says so). A method that keeps data
    /// (rsync) re-syncs it in place.
    func rebuild(from name: String, description: String) async {
        // Immediate, as Patroni does: the directory is about to be replaced or re-synced, and
        // a shutdown checkpoint would only write what is thrown away. Kept, it recovers as after a crash.
        await stopPostgresUncancelled(mode: "immediate")
        guard !node.isRunning() else {
            logger.error("reinitialize: PostgreSQL does not stop; nothing was changed")
            return
        }
        status.update { $0.server = nil; $0.role = "uninitialized" }
        do {
            if node.workInProgress() != nil { _ = try await finishOrUndoIncompleteWork(view: lastView) }
            let dataDir = config.postgresql.dataDir
            let staged = !(config.postgresql.replicaMethods.first?.keepData ?? false) && !node.dataDirectoryIsMountPoint
            if staged && node.dataDirectoryState() != .empty {
                let size = PostgresNode.treeSize(dataDir), free = PostgresNode.freeBytes(near: dataDir)
                if free < size + size / 10 {
                    logger.warning("reinitialize: \(free >> 20) MiB free, the copy needs about \(size >> 20) MiB: removing the old data directory \(dataDir) first")
                    try node.wipeDataDirectory()
                } else {
                    logger.info("reinitialize: the old data directory stays until the new copy is complete (\(size >> 20) MiB, \(free >> 20) MiB free)")
                }
            }
        } catch {
            logger.error("reinitialize: \(error)")
            status.update { $0.state = "stopped" }
            return
        }
        if await buildReplica(from: name) {
            logger.info("reinitialize: rebuilt from \(description)")
        } else if node.dataDirectoryState() == .initialized {
            logger.warning("reinitialize did not complete; the old data directory is unchanged and starts again")
        }
    }

    /// Stops PostgreSQL even when the calling task is cancelled (a shutdown during a long
    /// task): the process runner would tear a cancelled pg_ctl down at once.
    private func stopPostgresUncancelled(mode: String = "fast") async {
        guard node.isRunning() else { return }
        let node = self.node, timeout = config.postgresql.pgCtlTimeout, logger = self.logger
        await Task.detached {
            do { try await node.stop(mode: mode, timeout: timeout) } catch { logger.error("failed to stop PostgreSQL: \(error)") }
        }.value
    }

    /// Shutdown on SIGTERM/SIGINT: cancel the long task, stop PostgreSQL, release the leader key.
    func shutdown() async {
        longTask?.cancel()
        await longTask?.value
        if node.isRunning() { logger.info("stopping PostgreSQL") }
        await stopPostgresUncancelled()
        if status.snapshot.holdsLeaderKey { try? await dcs.deleteLeader() }
        try? await dcs.deleteMember()
        logger.info("Stork agent stopped")
    }
}
