import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// The loop: one cycle every loop_wait (sooner when the leader's lease runs out or a long
// task ends): look, decide, act, publish the member key.
extension Agent {
    /// Runs cycles until cancelled (then stops PostgreSQL and gives up the leader key, as
    /// Patroni does on shutdown) or until a fatal condition, which it throws.
    public func run() async throws {
        selfFence.findStaleCompanion()
        // Without a fence of its own, the old deadline would stop a primary nobody asked to fence.
        if !config.watchdog.selfFence { selfFence.endStaleCompanion() }
        for key in config.unimplementedKeys {
            logger.warning("configuration key \(key) is accepted but not implemented by Stork yet; it has no effect")
        }
        while !Task.isCancelled {
            if let message = await cycle() { logger.info("\(message)") }
            await sleepUntilNextCycle()
            // Checked after the pause too: a long task that failed for good (a bootstrap)
            // wakes the loop, which must end rather than start it again.
            if let fatal {
                await longTasks.wait()
                throw fatal
            }
        }
        // The loop's task is cancelled now; stopping PostgreSQL must not be (the process
        // runner would tear pg_ctl down at once), so it runs in a task of its own.
        await Task { await self.shutdown() }.value
    }

    func sleepUntilNextCycle() async {
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
            defer { releaseFencesWhenReadOnly() }
            // Paused, nothing is stopped for want of the DCS (as in Patroni).
            return paused ? "PAUSE: DCS is not accessible" : demoteIfLeaderKeyLapsed()
        }
        lastView = view
        let (newTiming, adjustments) = clusterTiming(config: config, dynamic: view.config)
        if newTiming != timing || adjustments != timingWarnings {
            // Said once per change, not every cycle.
            for warning in adjustments { logger.warning("\(warning)") }
            timingWarnings = adjustments
        }
        timing = newTiming
        if case .object(let dynamic)? = view.config {
            for key in DynamicConfig.withoutEffect(dynamic, prefix: "config.") where !ignoredConfigKeysSaid.contains(key) {
                logger.warning("configuration key \(key) (the DCS config key) is accepted but not implemented by Stork yet; it has no effect")
                ignoredConfigKeysSaid.insert(key)
            }
        }
        let watchdogFailed = watchdogObjection != nil
        let standby = standbyCluster != nil, maximumLag = maximumLagOnFailover
        status.update {
            $0.ttl = timing.ttl
            $0.loopWait = timing.loopWait
            $0.watchdogFailed = watchdogFailed
            $0.standbyCluster = standby
            $0.maximumLagOnFailover = maximumLag
            $0.view = view
        }
        if paused != publishedPause { await touchMember() }

        var local = await localSnapshot()
        announceRunningServerFound(local)
        if longTasks.running == nil, local.running, local.inRecovery == true, followedLeader == nil,
           let leader = view.leader, leader != config.name, await runningUpstreamMatches(leader) {
            // A new agent beside a replica that already follows the leader: nothing to restart.
            followedLeader = .some(leader)
        }
        local.followed = followedLeader
        local.forkedFromLeader = await forkFromLeader(view: view, local: local)
        status.update { $0.cannotFollow = local.forkedFromLeader }
        // The leader's server down (not counting a long task: a start in progress is counted).
        if view.leader == config.name, local.dataDirectory == .initialized, !local.running || longTasks.running != nil,
           local.inRecovery != false {
            primaryDownSince = primaryDownSince ?? Date()
            local.primaryStartOverdue = Date().timeIntervalSince(primaryDownSince!) >= Double(primaryStartTimeout)
        } else {
            primaryDownSince = nil
        }
        var snapshot = Snapshot(me: config.name, cluster: view, local: local,
                                mayBootstrap: true, mayLead: !config.noFailover, runningTask: longTasks.running,
                                mayCloneWithoutLeader: config.postgresql.replicaMethods.contains(where: \.noLeader))
        snapshot.remotePrimary = standbyCluster?.upstreamLabel
        snapshot.paused = paused
        snapshot.loopWait = timing.loopWait
        if longTasks.running == nil {
            logger.info("Lock owner: \(view.leader ?? "None"); I am \(config.name)")
        }
        var message = await execute(decide(snapshot), view: view, local: local)
        await applyChangedSettings(local: local)
        if let restart = await runScheduledRestart(view: view, local: local) { message = restart }
        if paused, let said = message { message = "PAUSE: " + said }
        releaseFencesWhenReadOnly()
        await touchMember()
        status.update { $0.lastCycle = Date() }
        return message
    }
}
