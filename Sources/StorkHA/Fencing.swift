import Foundation
import Logging
import StorkConfig
import StorkPostgres

// Fencing: a primary whose agent hangs or dies must stop accepting writes before its leader
// key can expire. Every leader key write that succeeds re-arms the watchdog device and the
// self-fence for `ttl - safety_margin` from when the write was sent; they are let go only once
// the server accepts no writes.
extension Agent {
    /// Re-arms the fences after a leader key write sent at `sent` succeeded. False when the
    /// watchdog is required and cannot be activated, or the self-fence is on and cannot work:
    /// this member must not lead.
    func armFences(refreshedAt sent: Date) -> Bool {
        // Paused, as Patroni's watchdog: an agent stopped for maintenance leaves its primary running.
        if paused {
            watchdog.disable()
            selfFence.disarm()
            return true
        }
        if watchdog.isRunning {
            watchdog.keepalive(ttl: timing.ttl)
        } else if !watchdog.activate(ttl: timing.ttl, loopWait: timing.loopWait) {
            return false
        }
        if config.watchdog.selfFence {
            if let objection = selfFenceObjection {
                logger.error("\(objection)")
                return false
            }
            selfFence.arm(until: sent.addingTimeInterval(Double(config.watchdog.fenceTimeout(ttl: timing.ttl))))
        }
        return true
    }

    /// A self-fence whose deadline comes before the next refresh would stop a healthy primary.
    private var selfFenceObjection: String? {
        let timeout = config.watchdog.fenceTimeout(ttl: timing.ttl)
        guard config.watchdog.selfFence, timeout < timing.loopWait else { return nil }
        return "watchdog.self_fence is on but ttl - safety_margin (\(timeout) s) is below loop_wait (\(timing.loopWait) s): the fence would stop a healthy primary between two refreshes; lower watchdog.safety_margin or loop_wait"
    }

    /// A server that is stopped or read-only needs no fence; a writable one keeps it while the
    /// agent demotes it (the last deadline stands).
    func releaseFencesWhenReadOnly() {
        guard !status.snapshot.holdsLeaderKey, !serverMayAcceptWrites else { return }
        watchdog.disable()
        selfFence.disarm()
        selfFence.endStaleCompanion()
    }

    /// On shutdown, once PostgreSQL is stopped: a primary that did not stop keeps its fences,
    /// which stop it (or reset the machine) at the last deadline. False then.
    func releaseFencesOnShutdown() -> Bool {
        if serverMayAcceptWrites {
            logger.warning("PostgreSQL still runs as a primary: the watchdog and the self-fence stay armed")
            return false
        }
        watchdog.disable()
        selfFence.stop()
        return true
    }

    /// Running and not told to recover (the signal files the fence also looks at).
    var serverMayAcceptWrites: Bool {
        let dir = config.postgresql.dataDir
        return node.isRunning() && !["standby.signal", "recovery.signal"].contains { FileManager.default.fileExists(atPath: dir + "/" + $0) }
    }

    /// A reload's watchdog section: a device turned off or replaced is closed now (the next
    /// leader key refresh opens the new one); a new timeout takes effect at the next refresh.
    func applyWatchdogSettings(_ new: WatchdogSettings, old: WatchdogSettings) {
        if new.mode == .off || new.device != old.device || new.driver != old.driver { watchdog.disable() }
        watchdog.settings = new
        if !new.selfFence { selfFence.stop() }
    }

    /// Why this member may not lead because of its watchdog (Patroni: "Watchdog device is not usable").
    var watchdogObjection: String? {
        watchdog.unusableReason(ttl: timing.ttl, loopWait: timing.loopWait) ?? selfFenceObjection
    }
}
