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
        if candidate == nil && view.paused {
            return (400, "Switchover is possible only to a specific candidate in a paused state")
        }
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
}
