import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkPostgres

/// `POST /restart` as Patroni takes it: at once, or at `schedule`; only when the server runs
/// as `role`, runs a major lower than `postgresVersion`, or has a pending restart
/// (`restartPending`), when these are given; waiting `timeout` seconds for the start.
public struct RestartRequest: Sendable, Equatable {
    public var schedule: Date?
    /// `schedule` as the request spelled it (ISO 8601 with its offset), shown back as given.
    public var scheduleText: String?
    public var role: String?
    public var postgresVersion: String?
    public var restartPending = false
    public var timeout: Int?
    public init() {}

    /// Patroni's `version_to_int`: `15.4` → 150004, `9.6.24` → 90624.
    public static func serverVersion(_ text: String) -> Int? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.allSatisfy({ $0 != nil && $0! >= 0 }) else { return nil }
        let n = parts.map { $0! }
        switch n.count {
        case 2 where n[0] >= 10: return n[0] * 10000 + n[1]
        case 3: return n[0] >= 10 ? n[0] * 10000 + n[2] : n[0] * 10000 + n[1] * 100 + n[2]
        default: return nil
        }
    }

    /// Why the restart must not happen for a member in `status`; nil when it may.
    func unmetCondition(_ status: MemberStatus) -> String? {
        if let role, role != status.role { return "host role mismatch" }
        if let wanted = postgresVersion.flatMap(Self.serverVersion), let running = status.server?.serverVersion, wanted <= running {
            return "postgres version mismatch"
        }
        if restartPending && status.pendingRestart == nil { return "pending restart flag is not set" }
        return nil
    }

    /// The request as `GET /patroni` shows it (the member key adds `postmaster_start_time`).
    public var json: JSONValue {
        var o: [String: JSONValue] = [:]
        if let scheduleText { o["schedule"] = .string(scheduleText) }
        if let role { o["role"] = .string(role) }
        if let postgresVersion { o["postgres_version"] = .string(postgresVersion) }
        if restartPending { o["restart_pending"] = .bool(true) }
        if let timeout { o["timeout"] = .int(timeout) }
        return .object(o)
    }
}

// Restarting PostgreSQL on request (`POST /restart`), at once or at a time.
extension Agent {
    /// `POST /restart`: a scheduled one is kept for the cycle that reaches its time (202), an
    /// immediate one runs as the long task while the request waits (200 when the server runs
    /// again). Patroni's texts and codes.
    public func restart(_ request: RestartRequest) async -> (Int, String) {
        if request.schedule != nil {
            if paused { return (500, "Can't schedule restart in the paused state") }
            if scheduledRestart != nil { return (409, "Another restart is already scheduled") }
            scheduledRestart = (request, status.snapshot.postmasterStartTime)
            status.update { $0.scheduledRestart = request.json }
            logger.info("restart scheduled at \(request.scheduleText ?? "")")
            // Published at once, as Patroni does: patronictl reads it from the member key.
            await touchMember()
            return (202, "Restart scheduled")
        }
        if let unmet = request.unmetCondition(status.snapshot) {
            logger.info("not proceeding with the restart: \(unmet)")
            return (503, "restart conditions are not satisfied")
        }
        guard let role = writtenSettings?.role else { return (503, "PostgreSQL's role is not settled yet; try again after the next cycle") }
        if let running = startLongTask("restart", state: "restarting", { agent in await agent.restartServer(role: role, timeout: request.timeout) }) {
            return (503, "\(running) already in progress")
        }
        await longTasks.wait()
        return node.isRunning() && status.snapshot.state == "running" ? (200, "restarted successfully") : (503, "restart failed")
    }

    /// `DELETE /restart`.
    public func cancelScheduledRestart() async -> (Int, String) {
        guard scheduledRestart != nil else { return (404, "no restarts are scheduled") }
        scheduledRestart = nil
        status.update { $0.scheduledRestart = nil }
        logger.info("scheduled restart deleted")
        await touchMember()
        return (200, "scheduled restart deleted")
    }

    /// Stops the server (fast) and starts it again in the role it ran in. A primary starts
    /// again only while this member still holds the leader key, else as a replica that checks
    /// its leader for a fork first.
    func restartServer(role: ServerRole, timeout: Int?) async {
        logger.info("restarting PostgreSQL")
        do {
            try await stopServer(announce: false)
        } catch {
            logger.error("restart failed: PostgreSQL did not stop: \(error)")
            status.update { $0.state = "restart failed" }
            return
        }
        let startTimeout = timeout ?? config.postgresql.pgCtlTimeout
        if role == .primary, !(await refreshLeaderKey()) {
            logger.warning("lost the leader key during the restart: starting as a replica")
            divergenceUnchecked = true
            await startServer(role: replicaRole(), timeout: startTimeout, restarted: true)
        } else {
            await startServer(role: role, timeout: startTimeout, restarted: true)
        }
        if node.isRunning() {
            status.update { $0.state = "running" }
            logger.info("PostgreSQL restarted")
        } else {
            status.update { $0.state = "restart failed" }
        }
    }

    /// Each cycle with a healthy cluster and a running server: a scheduled restart whose time
    /// has come runs (one that is stale, or whose server restarted meanwhile, is dropped).
    func runScheduledRestart(view: ClusterView, local: LocalSnapshot) async -> String? {
        guard let (request, startTime) = scheduledRestart, let at = request.schedule, view.leader != nil, local.running,
              longTasks.running == nil, !paused else { return nil }
        if status.snapshot.postmasterStartTime != startTime {
            logger.info("Cancelling scheduled restart: postgres restart has already happened")
            _ = await cancelScheduledRestart()
            return nil
        }
        let delta = at.timeIntervalSinceNow
        if delta > Double(timing.loopWait) {
            logger.info("Awaiting restart at \(request.scheduleText ?? "") (in \(Int(delta.rounded())) seconds)")
            return nil
        }
        _ = await cancelScheduledRestart()
        if delta < -1.5 * Double(timing.loopWait) {
            logger.warning("Found a stale restart value, cleaning up: \(request.scheduleText ?? "")")
            return nil
        }
        if delta > 0 { try? await Task.sleep(for: .seconds(delta)) }
        logger.info("Manual scheduled restart at \(request.scheduleText ?? "")")
        if let unmet = request.unmetCondition(status.snapshot) {
            logger.warning("Scheduled restart: restart conditions are not satisfied (\(unmet))")
            return nil
        }
        guard let role = writtenSettings?.role else { return nil }
        _ = startLongTask("restart", state: "restarting") { agent in await agent.restartServer(role: role, timeout: request.timeout) }
        return "restart initiated"
    }
}
