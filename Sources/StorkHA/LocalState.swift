import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Looking at the local PostgreSQL: the data directory, pg_controldata, the running server.
extension Agent {
    func localSnapshot() async -> LocalSnapshot {
        // Work of this agent's own that did not finish (`WorkInProgress`): never started.
        let incomplete = FileManager.default.fileExists(atPath: node.workMarker)
        let dirState = node.dataDirectoryState()
        var local = LocalSnapshot(dataDirectory: dirState, incompleteWork: incomplete)
        local.halfSynced = node.isHalfSynced
        local.divergenceUnchecked = divergenceUnchecked
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
                local.wasPrimary = ranAsPrimary(control, states: ["shut down", "in production"])
                status.update { $0.systemIdentifier = control.systemIdentifier }
                if controlDataWarning != nil { logger.info("pg_controldata works again") }
                controlDataWarning = nil
            } catch where local.running {
                // The server runs, so the directory serves: going hands-off here would stop
                // refreshing the leader key while the primary keeps accepting writes.
                let failure = oneLine(String(describing: error))
                if failure != controlDataWarning {
                    logger.warning("pg_controldata fails while PostgreSQL runs (\(failure)); going on with what the running server tells")
                    controlDataWarning = failure
                }
            } catch {
                local.dataDirectory = .unusable("pg_controldata cannot read it: \(error)")
                return local
            }
        }
        var server: ServerState?
        if !local.running { unreadableSince = nil }
        if local.running {
            do {
                server = try await node.serverState()
                unreadableSince = nil
            } catch {
                await noteUnreadable(error, in: &local)
            }
        }
        if let server {
            local.inRecovery = server.inRecovery
            local.serverVersion = server.serverVersion
            highestTimeline = max(highestTimeline ?? 0, server.timeline)
            status.update {
                $0.server = server
                $0.state = "running"
                $0.role = !server.inRecovery ? "primary" : ($0.holdsLeaderKey && standbyCluster != nil ? "standby_leader" : "replica")
            }
        } else if longTasks.running == nil {
            status.update {
                $0.server = nil
                $0.state = local.running ? "starting" : "stopped"
            }
        }
        return local
    }

    /// pg_control in one of `states`, and no standby.signal: the server runs (or last ran) as a primary.
    private func ranAsPrimary(_ control: ControlData, states: Set<String>) -> Bool {
        states.contains(control.clusterState) && !FileManager.default.fileExists(atPath: config.postgresql.dataDir + "/standby.signal")
    }

    /// A running server that does not answer: since when, and whether pg_control (which needs
    /// no connection) says it is a primary, so the decision can keep it or stop it on purpose.
    private func noteUnreadable(_ error: any Error, in local: inout LocalSnapshot) async {
        let since = unreadableSince ?? Date()
        unreadableSince = since
        local.queryError = "\(error)".split(whereSeparator: \.isNewline).joined(separator: "; ")
        var limit = Double(timing.retryTimeout)
        if let control = try? await node.controlData() {
            local.wasPrimary = ranAsPrimary(control, states: ["in production", "in crash recovery"])
            // A primary replaying its WAL after a crash does not answer yet: Patroni gives it
            // primary_start_timeout.
            if local.wasPrimary && control.clusterState == "in crash recovery" { limit = max(limit, Double(primaryStartTimeout)) }
        } else {
            local.wasPrimary = status.snapshot.role == "primary"
        }
        local.unreadableTooLong = Date().timeIntervalSince(since) > limit
    }
}
