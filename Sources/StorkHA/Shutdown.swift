import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Shutdown: the long task cancelled, PostgreSQL stopped, the keys given back.
extension Agent {
    /// Stops PostgreSQL even when the calling task is cancelled (a shutdown during a long
    /// task): the process runner would tear a cancelled pg_ctl down at once.
    /// `announce`: on_stop is called (a bootstrap's clean-up calls none, as in Patroni).
    func stopPostgresUncancelled(mode: String = "fast", announce: Bool = true) async {
        guard node.isRunning() else { return }
        await Task.detached { [self] in
            do { try await stopServer(mode: mode, announce: announce) } catch { logger.error("failed to stop PostgreSQL: \(error)") }
        }.value
    }

    /// Shutdown on SIGTERM/SIGINT: cancel the long task, stop PostgreSQL, release the leader key.
    func shutdown() async {
        await longTasks.cancelAndWait()
        if paused {
            // Maintenance mode: the agent may be stopped to be upgraded; its keys expire by themselves.
            logger.info("Leader key is not deleted and PostgreSQL is not stopped due to paused state")
            watchdog.disable()
            selfFence.stop()
            logger.info("Stork agent stopped")
            return
        }
        if node.isRunning() { logger.info("stopping PostgreSQL") }
        await stopPostgresUncancelled()
        // A primary that would not stop keeps the key until it expires: given back now, another
        // member could promote while this server still accepts writes.
        if releaseFencesOnShutdown() {
            if status.snapshot.holdsLeaderKey { try? await dcs.deleteLeader() }
        } else if status.snapshot.holdsLeaderKey {
            logger.critical("PostgreSQL did not stop and may accept writes: the leader key is not given back (it expires after ttl); stop PostgreSQL before any other member may promote")
        }
        try? await dcs.deleteMember()
        // After the keys: a hanging on_stop must not delay the failover.
        await callbacks.wait(seconds: 5)
        logger.info("Stork agent stopped")
    }
}
