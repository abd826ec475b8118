import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// A former primary's return: as a replica, rewound or rebuilt when its history diverged.
extension Agent {
    /// A former primary joins `leader`'s cluster: after crash recovery in single-user mode
    /// (for one that crashed), `pg_rewind --dry-run` tells whether its history diverged from
    /// the leader's. Not diverged, it starts as a replica; diverged, it is rewound
    /// (`use_pg_rewind`) or rebuilt through `create_replica_methods` (the old directory stays
    /// until the new copy is in place). A rewind that fails is also rebuilt.
    /// A primary that finds another member holding the key: it wrote while that one led, so
    /// its history may have forked from the leader's. Stopped cleanly, it rejoins as a former
    /// primary does (a restart as a replica on the old timeline could never stream).
    func demoteAndRejoin(leader: String) async {
        do {
            if node.isRunning() { try await stopServer(announce: true) }
        } catch {
            logger.error("failed to stop PostgreSQL: \(error)")
            return
        }
        await rejoin(leader: leader)
    }

    /// Why this running replica can never stream from the leader (Patroni's divergence check
    /// for a replica): it does not stream, it replays a timeline older than the leader's, and
    /// its replayed WAL went past the point where the leader's timeline forked off that one.
    /// Nil when it can follow, or when it cannot be told (asked again next cycle).
    func forkFromLeader(view: ClusterView, local: LocalSnapshot) async -> String? {
        guard longTasks.running == nil, local.running, local.inRecovery == true, standbyCluster == nil,
              let name = view.leader, name != config.name, local.followed == .some(name),
              let leader = view.member(named: name), let url = leader.connURL, let leaderTimeline = leader.timeline,
              let server = status.snapshot.server, !server.streaming, server.timeline < leaderTimeline,
              let replayed = server.replayLSN else { return nil }
        let question = "\(name) \(leaderTimeline) \(replayed)"
        if let last = lastForkCheck, last.question == question { return last.answer }
        do {
            let timeline = try await node.currentTimeline()
            var answer: String?
            if timeline < leaderTimeline {
                let history = try await node.timelineHistory(fromConnURL: url, timeline: leaderTimeline)
                if let fork = TimelineSwitch.forkPassed(history, timeline: timeline, replayed: replayed) {
                    answer = "it replayed timeline \(timeline) up to \(LSN.format(replayed)), and \(name)'s timeline \(leaderTimeline) left timeline \(fork.parent) at \(LSN.format(fork.switchpoint))"
                    logger.warning("this replica cannot follow \(name): \(answer!)")
                }
            }
            lastForkCheck = (question, answer)
            return answer
        } catch {
            logger.info("cannot compare this replica's timeline with \(name)'s yet: \(oneLine(String(describing: error)))")
            return nil
        }
    }

    func rejoin(leader: String) async {
        guard let url = lastView.member(named: leader)?.connURL else {
            logger.warning("cannot compare histories with \(leader): its member key has no conn_url; staying stopped until it has one")
            return
        }
        let useRewind = postgresqlSetting("use_pg_rewind", local: config.postgresql.useRewind)
        let removeOnDiverged = postgresqlSetting("remove_data_directory_on_diverged_timelines", local: config.postgresql.removeOnDivergedTimelines)
        let removeOnRewindFailure = removeOnDiverged
            || postgresqlSetting("remove_data_directory_on_rewind_failure", local: config.postgresql.removeOnRewindFailure)
        do {
            if (try? await node.controlData())?.clusterState == "in production" {
                logger.info("running crash recovery in single-user mode: pg_rewind needs a cleanly shut down data directory")
                try await node.singleUserCrashRecovery()
            }
            let verdict: PostgresNode.RewindCheck
            do { verdict = try await node.rewind(fromConnURL: url, dryRun: true) } catch {
                // Nothing is known yet: the data stays as it is (it may be the best copy), and the
                // next cycle asks again.
                logger.error("cannot compare this former primary's history with \(leader)'s: \(oneLine(String(describing: error))); keeping the data directory as it is and trying again")
                waitBeforeNextCycle = true
                return
            }
            switch verdict {
            case .notNeeded:
                logger.info("this former primary's history has not diverged from \(leader)'s: starting as its replica")
                divergenceUnchecked = false
                await startServer(role: replicaRole())
                return
            case .sameTimeline:
                logger.info("waiting for \(leader) to checkpoint after its promotion: pg_rewind cannot compare the histories before")
                return
            case .needed:
                break
            case .neededButImpossible(let why):
                logger.warning("this former primary's history diverged from \(leader)'s and pg_rewind cannot rewind it (\(why)): rebuilding it through create_replica_methods")
                await rebuildDiverged(from: leader, removalAllowed: useRewind ? removeOnRewindFailure : removeOnDiverged,
                                      setting: useRewind ? "remove_data_directory_on_rewind_failure" : "remove_data_directory_on_diverged_timelines")
                return
            }
            if useRewind {
                logger.info("this former primary's history diverged from \(leader)'s: rewinding it with pg_rewind (use_pg_rewind)")
                _ = try await node.rewind(fromConnURL: url, dryRun: false)
                logger.info("pg_rewind done: starting as a replica of \(leader)")
                divergenceUnchecked = false
                await startServer(role: replicaRole())
                return
            }
            logger.warning("this former primary's history diverged from \(leader)'s and use_pg_rewind is off: rebuilding it through create_replica_methods")
            await rebuildDiverged(from: leader, removalAllowed: removeOnDiverged, setting: "remove_data_directory_on_diverged_timelines")
            return
        } catch {
            logger.error("cannot rejoin by rewind: \(oneLine(String(describing: error))); rebuilding through create_replica_methods")
        }
        await rebuildDiverged(from: leader, removalAllowed: removeOnRewindFailure, setting: "remove_data_directory_on_rewind_failure")
    }

    /// A diverged former primary rebuilt from `leader`; its directory is removed before the
    /// new copy is in place only when `setting` (Patroni's) allows it: it may hold the only
    /// copy of what this member wrote after the fork.
    private func rebuildDiverged(from leader: String, removalAllowed: Bool, setting: String) async {
        let refusal = removalAllowed ? nil : "postgresql.\(setting) is off"
        if await rebuild(from: leader, description: CloneSource.describe(leader, isLeader: true), removalRefusal: refusal) {
            divergenceUnchecked = false
        }
    }

    /// A `postgresql` setting that the local file or the dynamic configuration turns on.
    private func postgresqlSetting(_ key: String, local: Bool) -> Bool {
        local || clusterConfig(config, lastView.config)["postgresql"]?[key]?.isTruthy == true
    }
}
