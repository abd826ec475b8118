import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Carrying a decision out. Choices belong in `decide`; this file only acts on them.
extension Agent {
    /// Carries one decision out; every choice was made by `decide`. Returns the line Patroni
    /// would log for the cycle.
    func execute(_ decision: Decision, view: ClusterView, local: LocalSnapshot) async -> String? {
        let me = config.name
        switch decision {
        case .waitForTask(let name):
            if view.leader == me { _ = await refreshLeaderKey() }
            return "\(name) in progress"

        case .bootstrap:
            if let watchdog = watchdogObjection { return "not bootstrapping: \(watchdog)" }
            do {
                guard try await dcs.createInitialize("") else { return "failed to acquire initialize lock" }
            } catch {
                logger.error("Error communicating with DCS: \(error)")
                return nil
            }
            let standby = standbyCluster
            let name = standby == nil ? "bootstrap" : "bootstrap standby leader"
            let refused = startLongTask(name, state: standby == nil ? "initializing new cluster" : "creating replica") { agent in
                if let standby { await agent.bootstrapStandbyLeader(standby) } else { await agent.bootstrapNewCluster() }
            }
            if let refused {
                // Give the empty claim back, so that this or another member can bootstrap later.
                logger.warning("\(name) not started: \(refused) is in progress; giving the initialize key back")
                do { try await dcs.deleteInitialize() } catch { logger.error("could not remove the initialize key: \(error)") }
                return "\(refused) in progress"
            }
            if let standby { return "trying to bootstrap a new standby leader from the remote primary \(standby)" }
            return "trying to bootstrap a new cluster"

        case .clone(let source, let isLeader):
            let what = source.map { "from " + CloneSource.describe($0, isLeader: isLeader) } ?? "(without leader)"
            return launch("bootstrap \(what)", state: "creating replica", "trying to bootstrap \(what)") { agent in
                await agent.buildReplica(from: source)
            }

        case .waitForLeader:
            status.update { $0.state = "stopped" }
            return "waiting for leader to bootstrap"

        case .systemIDMismatch(let data, let dcs):
            let fatal = AgentFatalError("system ID mismatch, node \(me) belongs to a different cluster: \(data) != \(dcs)")
            self.fatal = fatal
            logger.critical("\(fatal.message)")
            return nil

        case .claimInitialize(let sysid):
            do {
                if try await dcs.createInitialize(sysid) { wakeRequested = true }
            } catch { logger.error("Error communicating with DCS: \(error)") }
            return "recorded system identifier \(sysid) of the existing data directory in the initialize key"

        case .removeIncompleteWork:
            await stopPostgresUncancelled(announce: false)
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
            // Refreshed (and the fences armed) before the start: a self-fence that fired while
            // the agent did not answer would stop the new server at the old deadline.
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            return launch("starting primary", state: "starting", "starting primary after failure") { agent in
                await agent.startServer(role: .primary)
            }

        case .rejoin(let leader):
            return launch("rejoining", state: "starting", "rejoining as a replica of \(leader): this node was a primary") { agent in
                await agent.rejoin(leader: leader)
            }

        case .startReplica:
            // A former primary started read-only: the first leader it follows is checked for a fork.
            if local.wasPrimary { divergenceUnchecked = true }
            return launch("starting replica", state: "starting", "starting as a secondary") { agent in
                await agent.startServer(role: agent.replicaRole())
            }

        case .awaitScheduledSwitchover(let at):
            logger.info("Awaiting switchover at \(DateText.isoformat(at)) (in \(Int(at.timeIntervalSinceNow.rounded())) seconds)")
            fallthrough
        case .holdLeader:
            if await refreshLeaderKey() {
                if let lsn = status.snapshot.server?.walPosition { try? await dcs.writeLeaderOptime(lsn) }
                await manageReplicationSlots(view: view)
                return "no action. I am (\(me)), the leader with the lock"
            }
            // Another member holds the key now, or the DCS refused: never two primaries.
            return launch("demoting", state: "stopping", "demoting self because failed to update leader lock") { agent in
                await agent.restartAsReplica(demoted: true)
            }

        case .giveUpPrimaryStart:
            primaryDownSince = nil
            await releaseLeaderKey()
            return "giving the leader key back: PostgreSQL has not started as primary within primary_start_timeout (\(primaryStartTimeout) s) and another member can take over"

        case .holdLeaderClearingFailover(let reason):
            if await refreshLeaderKey() {
                do {
                    try await dcs.setFailover(nil)
                    logger.warning("removed the failover key: \(reason)")
                } catch { logger.error("could not remove the stale failover key (\(reason)): \(error)") }
                return "no action. I am (\(me)), the leader with the lock"
            }
            return launch("demoting", state: "stopping", "demoting self because failed to update leader lock") { agent in
                await agent.restartAsReplica(demoted: true)
            }

        case .holdUnreadablePrimary(let error):
            guard await refreshLeaderKey() else {
                return launch("stopping", state: "stopping", "stopping PostgreSQL: it runs as a primary that does not answer (\(error)) and the leader key could not be kept") { agent in
                    await agent.stopUnreadablePrimary()
                }
            }
            return "PostgreSQL runs as the primary but does not answer: \(error); keeping the leader key for up to retry_timeout (\(timing.retryTimeout) s), then stopping it"

        case .stopUnreadablePrimary(let error):
            return launch("stopping", state: "stopping", "stopping PostgreSQL: it runs as a primary the agent cannot check (\(error)), and such a primary must not accept writes; fix what the error names (for a password: postgresql.authentication.superuser, then restart the agent, as a reload keeps the users): it then starts read-only and races like any replica") { agent in
                await agent.stopUnreadablePrimary()
            }

        case .startStandbyLeader:
            return launch("starting standby leader", state: "starting", "starting as the standby leader") { agent in
                await agent.startServer(role: agent.standbyLeaderRole())
            }

        case .holdStandbyLeader:
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            await manageReplicationSlots(view: view)
            return "no action. I am (\(me)), the standby leader with the lock, following the \(standbyCluster?.upstreamLabel ?? "remote primary")"

        case .restartStandbyLeader:
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            await manageReplicationSlots(view: view)
            return launch("following the remote primary", state: "starting",
                          "changing primary_conninfo to the remote primary and restarting in progress") { agent in
                await agent.restartAsReplica(standbyLeader: true)
            }

        case .acquireLeader:
            // A primary without the key races like a replica: another member may have led on a
            // newer timeline while this one's agent was away.
            if let reason = await reasonNotToLead(view: view) {
                return launch("demoting", state: "stopping", "demoting self: not the healthiest to lead (\(reason))") { agent in
                    await agent.restartAsReplica(demoted: true)
                }
            }
            if await takeLeaderKey() { return "acquired session lock as a leader" }
            // Taken but not fenced: kept while the server is demoted (writeLeaderKey).
            if status.snapshot.holdsLeaderKey {
                return launch("demoting", state: "stopping", "demoting self because watchdog could not be activated") { agent in
                    await agent.restartAsReplica(demoted: true)
                }
            }
            return "failed to acquire the leader lock"

        case .stepDown(let candidate):
            if let at = view.failover?.scheduledAt {
                // Due within a loop_wait: to the second, as Patroni's, the key (and the fences)
                // refreshed first so that the wait does not eat into the ttl.
                guard await refreshLeaderKey() else { return "failed to update leader lock" }
                if at > Date() { try? await Task.sleep(for: .seconds(at.timeIntervalSinceNow)) }
                if Task.isCancelled { return nil }
                logger.info("Manual scheduled switchover at \(DateText.isoformat(at))")
            }
            return launch("demoting", state: "stopping", "manual failover: demoting myself" + (candidate.map { " in favour of \($0)" } ?? "")) { agent in
                await agent.stepDown()
            }

        case .promoteHoldingKey:
            guard await refreshLeaderKey() else { return "failed to update leader lock" }
            return await promote("promoted self to leader because I had the session lock")

        case .leaderRace:
            if let reason = await reasonNotToLead(view: view) { return "following nobody: \(reason)" }
            guard await takeLeaderKey() else { return "failed to acquire the leader lock: another member won the race" }
            return await promote("promoted self to leader by acquiring session lock")

        case .demote(let leader):
            let why = leader.map { "\($0) holds the leader lock" } ?? "this node may not be the leader"
            return launch("demoting", state: "stopping", "demoting self because \(why)") { agent in
                if let leader { await agent.demoteAndRejoin(leader: leader) } else { await agent.restartAsReplica(demoted: true) }
            }

        case .rejoinAfterDemotion(let leader):
            return launch("rejoining", state: "starting", "rejoining \(leader): this node was demoted from primary and may have written past the fork") { agent in
                await agent.demoteAndRejoin(leader: leader)
            }

        case .rejoinForked(let leader, let reason):
            return launch("rejoining", state: "starting", "rejoining \(leader): this replica cannot follow it (\(reason))") { agent in
                await agent.demoteAndRejoin(leader: leader)
            }

        case .retarget(let leader, let byReload):
            if byReload {
                return launch("following a new leader", state: "running", "changing primary_conninfo and reloading in progress") { agent in
                    await agent.followByReload(leader)
                }
            }
            return launch("following a new leader", state: "starting", "changing primary_conninfo and restarting in progress") { agent in
                await agent.restartAsReplica()
            }

        case .paused(let message):
            return message

        case .pausedHoldLeader:
            guard await refreshLeaderKey() else { return "continue to run as primary after failing to update leader lock in DCS" }
            if let lsn = status.snapshot.server?.walPosition { try? await dcs.writeLeaderOptime(lsn) }
            await manageReplicationSlots(view: view)
            return "no action. I am (\(me)), the leader with the lock"

        case .pausedTakeLeader:
            return await takeLeaderKey() ? "acquired session lock as a leader" : "continue to run as primary without lock"

        case .releaseLeaderKey(let reason):
            await releaseLeaderKey()
            return "removed leader lock because \(reason)"

        case .follow(let leader):
            if let leader { return "no action. I am (\(me)), a secondary, and following a leader (\(leader))" }
            return "no action. I am (\(me)), a secondary, and there is no leader"
        }
    }

    /// Starts a long task and returns `message`; when another task runs, says so instead.
    private func launch(_ name: String, state: String, _ message: String, _ body: @escaping @Sendable (Agent) async -> Void) -> String {
        guard let running = startLongTask(name, state: state, body) else { return message }
        logger.warning("\(name) not started: \(running) is in progress")
        return "\(running) in progress"
    }

    /// The promotion of a member that holds the leader key now; when another long task runs
    /// (a reinitialize started meanwhile), the key is given back instead.
    private func promote(_ message: String) async -> String {
        guard let running = startLongTask("promoting", state: "promoting", { agent in await agent.promoteToPrimary() }) else { return message }
        logger.warning("not promoting: \(running) is in progress; giving the leader key back")
        await releaseLeaderKey()
        return "\(running) in progress"
    }
}
