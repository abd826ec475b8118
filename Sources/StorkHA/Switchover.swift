import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Switchover and manual failover: the REST API's request and the leader's clean step-down.
extension Agent {
    /// A switchover: a clean stop (the replicas receive everything, the shutdown checkpoint
    /// too), the leader key given back, then a start as a replica that will follow the new leader.
    func stepDown() async {
        await stopPostgresUncancelled(announce: false)
        guard !node.isRunning() else {
            logger.error("manual failover: PostgreSQL does not stop; keeping the leader key")
            return
        }
        // Patroni's graceful demotion names the role `demoted` by the time on_stop runs.
        announceRoleChange("demoted", action: "on_stop")
        do { try await dcs.deleteLeader() } catch { logger.error("manual failover: could not give the leader key back: \(error)") }
        status.update { $0.holdsLeaderKey = false }
        lastLeaderRefresh = nil
        await startServer(role: .replica(primaryConninfo: nil))
    }

    /// `POST /switchover` and `POST /failover`, with Patroni's checks, in its order, and its
    /// answers: writes the `failover` key, then waits up to 30 s for another member to lead;
    /// with `schedule` (`scheduled_at`, read by the REST API), answers 202 at once and the
    /// leader steps down at that time. A failover names a candidate and needs no leader.
    public func manualFailover(leader: String?, candidate: String?, switchover: Bool,
                               schedule: Result<(Date, String), RefusedRequest>? = nil) async -> (Int, String) {
        guard let view = try? await dcs.clusterView() else { return (503, "DCS is not accessible") }
        var action = switchover ? "switchover" : "failover"
        let scheduleText = schedule.flatMap { try? $0.get().1 }
        logger.info("received \(action) request with leader=\(leader ?? "None") candidate=\(candidate ?? "None") scheduled_at=\(scheduleText ?? "None")")
        if !switchover && candidate == nil { return (400, "Failover could be performed only to a specific candidate") }
        if switchover && leader == nil { return (400, "Switchover could be performed only from a specific leader") }
        var scheduledAt: Date?
        if let schedule {
            if !switchover { return (400, "Failover can't be scheduled") }
            if view.paused { return (400, "Can't schedule switchover in the paused state") }
            switch schedule {
            case .failure(let refused): return (refused.code, refused.reason)
            case .success(let (date, _)): scheduledAt = date
            }
        }
        if view.paused && candidate == nil { return (400, "Switchover is possible only to a specific candidate in a paused state") }
        if !switchover && leader != nil {
            logger.warning("received failover request with leader specified - performing switchover instead")
            action = "switchover"
        }
        if leader != nil && leader == candidate { return (400, "Switchover target and source are the same") }
        if scheduledAt == nil, let refusal = failoverRefusal(view: view, leader: leader, candidate: candidate, action: action) {
            return (412, refusal)
        }
        do { try await dcs.setFailover(ManualFailover(leader: leader, candidate: candidate, scheduledAt: scheduledAt)) } catch {
            return (503, "DCS is not accessible: \(error)")
        }
        if scheduledAt != nil {
            logger.info("\(action) scheduled: from \(leader ?? "the leader") to \(candidate ?? "the healthiest replica") at \(scheduleText ?? "")")
            return (202, action.capitalized + " scheduled")
        }
        logger.info("\(action) requested: from \(view.leader ?? "no leader") to \(candidate ?? "the healthiest replica")")
        let done = action == "switchover" ? "switched over" : "failed over"
        for _ in 0..<300 {
            try? await Task.sleep(for: .milliseconds(100))
            guard let now = try? await dcs.clusterView() else { continue }
            if let newLeader = now.leader, newLeader != view.leader, now.failover == nil {
                if candidate == nil || candidate == newLeader { return (200, "Successfully \(done) to \"\(newLeader)\"") }
                return (200, "\(done.capitalized) to \"\(newLeader)\" instead of \"\(candidate!)\"")
            }
            if now.failover == nil && now.leader == view.leader { return (503, action.capitalized + " failed") }
        }
        return (503, action.capitalized + " status unknown")
    }

    /// `DELETE /switchover`: removes a scheduled switchover (`patronictl flush CLUSTER switchover`).
    public func cancelScheduledSwitchover() async -> (Int, String) {
        guard let view = try? await dcs.clusterView() else { return (503, "DCS is not accessible") }
        guard let failover = view.failover, failover.scheduledAt != nil else { return (404, "no switchover is scheduled") }
        do { try await dcs.setFailover(nil) } catch { return (503, "DCS is not accessible: \(error)") }
        logger.info("scheduled switchover deleted")
        return (200, "scheduled switchover deleted")
    }

    /// Patroni's `is_failover_possible`: why no member can take over now, or nil.
    func failoverRefusal(view: ClusterView, leader: String?, candidate: String?, action: String) -> String? {
        if let leader, leader != view.leader { return "leader name does not match" }
        if let candidate {
            if candidate == view.leader { return action.capitalized + " target and source are the same" }
            guard let member = view.member(named: candidate) else { return "candidate does not exists" }
            guard member.state == "running" else { return "\(action) is not possible: no good candidates have been found (\(candidate) is \(member.state))" }
            if member.tags["nofailover"]?.isTruthy == true {
                return "\(action) is not possible: no good candidates have been found (\(candidate) is tagged nofailover)"
            }
            return nil
        }
        let others = view.members.filter { $0.name != view.leader && $0.apiURL != nil }
        if others.isEmpty { return "\(action) is not possible: cluster does not have members except leader" }
        if !others.contains(where: { $0.state == "running" && $0.tags["nofailover"]?.isTruthy != true }) {
            return "\(action) is not possible: no good candidates have been found"
        }
        return nil
    }
}
