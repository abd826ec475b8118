import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// The leader race: asking the other members how far they are, and promotion.
extension Agent {
    /// Why this member must not take the leader key now, or nil when it is the healthiest
    /// (`lagObjection` and `peerObjection` in Healthiest.swift decide; this asks): PostgreSQL answers, and
    /// every other member that may lead reports through its REST API, one at a time, so the
    /// first objection ends the asking. A member named by a manual failover does not ask, but
    /// even it never leads from behind the cluster's timeline.
    func reasonNotToLead(view: ClusterView) async -> String? {
        if let watchdog = watchdogObjection { return watchdog }
        if let failed = prePromoteFailedAt, Date().timeIntervalSince(failed) < Double(timing.ttl) {
            return "backoff: skip leader race after pre_promote script failure and releasing the lock voluntarily"
        }
        guard let server = try? await node.serverState() else { return "PostgreSQL does not answer" }
        let mine = WALStanding(wal: server.walPosition, replayed: server.replayLSN ?? server.walPosition, paused: server.replayPaused)
        // A replica's timeline as its replay stands (IDENTIFY_SYSTEM to itself, as Patroni asks):
        // with its upstream gone, the WAL receiver's row is gone too, and pg_control may still
        // name the timeline before the last switchover until the next restartpoint.
        let replayed = server.inRecovery ? ((try? await node.currentTimeline()) ?? 0) : 0
        if let behind = timelineObjection(mine: max(server.timeline, highestTimeline ?? 0, replayed), cluster: view.timeline) { return behind }
        if view.failoverCandidate == config.name { return nil }
        if let lag = lagObjection(mine: mine, leaderOptime: view.leaderOptime, maxLag: maximumLagOnFailover) { return lag }
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
            // Patroni: a member whose required watchdog fails cannot lead, so it is no rival.
            if doc["watchdog_failed"]?.isTruthy == true { continue }
            if let objection = peerObjection(member.name, PeerReport(status: doc), mine: mine) { return objection }
        }
        return nil
    }

    /// The race's winner: promote, publish the new timeline's start in `history` as Patroni
    /// does, and lead. A promotion that fails gives the key back.
    func promoteToPrimary() async {
        let before = status.snapshot.server
        if config.postgresql.prePromote != nil {
            guard await prePromoteAllows() else {
                logger.warning("Releasing the leader key voluntarily because the pre-promote script failed")
                prePromoteFailedAt = Date()
                await releaseLeaderKey()
                return
            }
            // The script may have run past the ttl, or the DCS gone meanwhile: promote only
            // while the key is still this member's (Patroni: "lost leader before promote").
            guard !Task.isCancelled, await refreshLeaderKey() else {
                logger.warning("not promoting: the leader key was lost while pre_promote ran")
                return
            }
        }
        do {
            // The server removes standby.signal itself when it promotes; the primary's
            // configuration (no upstream) is written after.
            try await node.promote()
            announceRoleChange("primary")
            try await writeConfig(role: .primary)
            try await node.reload()
            // pg_control names the new timeline only after a checkpoint; a former primary's
            // pg_rewind reads it there.
            _ = try? await node.localQuery("CHECKPOINT", statementTimeout: 0)
            followedLeader = nil
            divergenceUnchecked = false  // its history is the cluster's now
            let after = try? await node.serverState()
            logger.info("promoted: timeline \(after?.timeline ?? 0), at \(LSN.format(before?.walPosition ?? 0))")
            if lastView.failover != nil { try? await dcs.setFailover(nil) }
            if let before, let after {
                // The new timeline's history file says where it forked off which one, as
                // Patroni reads it; a replica's own report of its timeline can lag (an idle
                // WAL receiver still names the timeline it started on).
                let fork = node.localTimelineHistory(timeline: after.timeline)?.last
                do {
                    try await dcs.appendHistory(timeline: fork?.parent ?? before.timeline, lsn: fork?.switchpoint ?? before.walPosition,
                                                reason: "no recovery target specified", newLeader: config.name, keep: maxTimelinesHistory)
                } catch { logger.warning("could not update history: \(error)") }
                try? await dcs.writeLeaderOptime(after.walPosition)
            }
        } catch {
            logger.error("promotion failed: \(error); giving the leader key back")
            await releaseLeaderKey()
            if lastView.failover?.candidate == config.name {
                // This candidacy failed: left in place, the request would let this member skip
                // the checks of every later race.
                do { try await dcs.setFailover(nil) } catch { logger.error("could not remove the failover key naming me: \(error)") }
            }
        }
    }
}
