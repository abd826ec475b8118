import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// The leader key: taken, refreshed, given back, and let go when the DCS is out of reach.
extension Agent {
    /// With the DCS out of reach: a primary whose key was last refreshed more than
    /// `retry_timeout` ago may have lost it to another member by now, so it stops accepting
    /// writes (restarts read-only, following nobody) rather than risk two primaries. So does
    /// a primary this agent found running and could never refresh a key for (Patroni demotes
    /// any running primary without the DCS), `retry_timeout` after the agent started.
    func demoteIfLeaderKeyLapsed() -> String? {
        guard longTasks.running == nil, status.snapshot.holdsLeaderKey || serverMayAcceptWrites,
              Date().timeIntervalSince(lastLeaderRefresh ?? startedAt) > Double(timing.retryTimeout) else { return nil }
        status.update { $0.holdsLeaderKey = false }
        lastLeaderRefresh = nil
        if let running = startLongTask("demoting", state: "stopping", { agent in await agent.restartAsReplica(demoted: true) }) {
            return "\(running) in progress"  // not reached: the guard above wants no long task
        }
        return "demoting self because DCS is not accessible and I was a leader"
    }

    /// A primary the agent cannot query: stopped (pg_ctl needs no connection), and the key
    /// given back so a member that can prove itself healthy may lead; kept while the server
    /// did not stop (the next cycle tries again).
    func stopUnreadablePrimary() async {
        do {
            try await stopServer(announce: true)
        } catch {
            logger.error("failed to stop PostgreSQL: \(error); stopping it immediately")
            do {
                try await node.stop(mode: "immediate", timeout: config.postgresql.pgCtlTimeout)
                announceStopped()
            } catch {
                logger.critical("failed to stop PostgreSQL in immediate mode: \(error); it may still accept writes")
            }
        }
        if status.snapshot.holdsLeaderKey && !serverMayAcceptWrites { await releaseLeaderKey() }
    }

    /// Takes the leader key (create-only): whether this member holds it now.
    func takeLeaderKey() async -> Bool {
        await writeLeaderKey(unfenced: "Not promoting self because watchdog could not be activated") { dcs, ttl in
            try await dcs.acquireLeader(ttl: ttl)
        }
    }

    /// Refreshes the leader key this member holds: whether it still does.
    func refreshLeaderKey() async -> Bool {
        await writeLeaderKey(unfenced: "Demoting self because watchdog could not be activated") { dcs, ttl in
            try await dcs.refreshLeader(ttl: ttl)
        }
    }

    /// A write that succeeds re-arms the fences from when it was sent (the lease may have
    /// started then). When they cannot be armed the member must not lead: false. A read-only
    /// server gives the key back at once; a writable one keeps it (Patroni's order: demoted
    /// first, released after) so no other member promotes while it accepts writes; the caller
    /// demotes it, and the first write once it is read-only gives the key back.
    private func writeLeaderKey(unfenced: String, _ write: (any DCS, Int) async throws -> Bool) async -> Bool {
        let sent = Date()
        do {
            let ok = try await write(dcs, timing.ttl)
            status.update { $0.holdsLeaderKey = ok }
            guard ok else { return false }
            lastLeaderRefresh = sent
            if !armFences(refreshedAt: sent) {
                if serverMayAcceptWrites {
                    logger.error("\(unfenced); keeping the leader key until PostgreSQL accepts no writes")
                } else {
                    logger.error("\(unfenced)")
                    await releaseLeaderKey()
                }
                return false
            }
            return true
        } catch {
            logger.error("Error communicating with DCS: \(error)")
            return false
        }
    }

    /// Gives the leader key back (a promotion that failed or was not started).
    func releaseLeaderKey() async {
        do { try await dcs.deleteLeader() } catch { logger.error("could not give the leader key back: \(error)") }
        status.update { $0.holdsLeaderKey = false }
        lastLeaderRefresh = nil
    }
}
