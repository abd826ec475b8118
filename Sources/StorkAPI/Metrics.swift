import Foundation
import StorkConfig
import StorkDCS
import StorkHA
import StorkMethods
import StorkPostgres

/// `GET /metrics`: the member's status in Prometheus's text format, with Patroni's metric
/// names, help texts and labels (`scope`, `name`), so that a dashboard made for Patroni graphs
/// a Stork cluster unchanged. Pure; `DynamicConfigTests.pauseAndResume` reads it with
/// prometheus_client's parser on a running cluster.
public enum Metrics {
    /// Patroni's numbering of the member states (`patroni_postgres_state`).
    static let states = ["initializing new cluster", "initdb failed", "running custom bootstrap script", "custom bootstrap failed",
                         "creating replica", "running", "starting", "starting after custom bootstrap", "start failed",
                         "restarting", "restart failed", "stopping", "stopped", "stop failed", "crashed"]

    /// `archive`: what `stork wal-push` and `wal-fetch` counted for this member
    /// (``ArchiveCounters``), nil when they never ran.
    public static func text(_ s: MemberStatus, config: Config, archive: ArchiveCounters? = nil) -> String {
        let labels = "{scope=\"\(escape(config.scope))\",name=\"\(escape(config.name))\"}"
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ value: String, note: String? = nil) {
            lines.append("# HELP \(name) \(help)")
            if let note { lines.append(note) }
            lines.append("# TYPE \(name) \(type)")
            lines.append("\(name)\(labels) \(value)")
        }
        func flag(_ b: Bool) -> String { b ? "1" : "0" }
        let running = s.state == "running"
        let server = running ? s.server : nil
        let replica = server?.inRecovery == true

        metric("patroni_version", "gauge", "Patroni semver without periods.", version(storkVersion))
        metric("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.", flag(running))
        metric("patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started.",
               s.postmasterStartTime.map { number($0.timeIntervalSince1970) } ?? "0")
        metric("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.", flag(s.role == "primary"))
        metric("patroni_xlog_location", "counter", "Current location of the Postgres transaction log, 0 if this node is not the leader.",
               String(server.map { $0.inRecovery ? 0 : $0.walPosition } ?? 0))
        metric("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise.", flag(s.role == "standby_leader"))
        metric("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.", flag(s.role == "replica"))
        // Synchronous replication is not in Stork yet: no member is a synchronous or quorum standby.
        metric("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise.", "0")
        metric("patroni_quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 otherwise.", "0")
        metric("patroni_xlog_received_location", "counter",
               "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
               String(replica ? (server?.receiveLSN ?? server?.walPosition ?? 0) : 0))
        metric("patroni_xlog_replayed_location", "counter",
               "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
               String(replica ? (server?.replayLSN ?? server?.walPosition ?? 0) : 0))
        metric("patroni_xlog_replayed_timestamp", "gauge", "Current timestamp of the replayed Postgres transaction log, 0 if null.", "0")
        metric("patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise.", flag(replica && server?.replayPaused == true))
        if let server {
            metric("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise.", flag(server.inRecovery && server.streaming))
            metric("patroni_postgres_in_archive_recovery", "gauge", "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
                   flag(server.inRecovery && !server.streaming))
        }
        metric("patroni_postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise.", String(server?.serverVersion ?? 0))
        metric("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked.", flag(s.view?.leader == nil))
        metric("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if inactive.", "0")
        metric("patroni_postgres_timeline", "gauge", "Postgres timeline of this node (if running), 0 otherwise.", String(server?.timeline ?? 0))
        metric("patroni_dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully by Patroni.",
               String(Int(s.dcsLastSeen?.timeIntervalSince1970 ?? 0)))
        metric("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise.", flag(s.pendingRestart != nil))
        metric("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise.", flag(s.paused))
        metric("patroni_postgres_state", "gauge", "Numeric representation of Postgres state.", String(states.firstIndex(of: s.state) ?? -1),
               note: "# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, "
                   + "6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, "
                   + "13=stop_failed, 14=crashed")
        // Stork's own: the archive commands PostgreSQL ran here (since the counting file began),
        // and the replica builds of this agent (since it started).
        if let a = archive {
            metric("stork_wal_pushed", "counter", "WAL files stork wal-push archived.", String(a.pushed))
            metric("stork_wal_pushed_bytes", "counter", "Bytes of the WAL files stork wal-push archived (before compression).", String(a.pushedBytes))
            metric("stork_wal_push_failures", "counter", "stork wal-push runs that failed (PostgreSQL retries them).", String(a.pushFailures))
            metric("stork_wal_fetched", "counter", "WAL files stork wal-fetch restored (those stork-wal-fetch served from the prefetch spool not counted).", String(a.fetched))
            metric("stork_wal_fetched_bytes", "counter", "Bytes of the WAL files stork wal-fetch restored.", String(a.fetchedBytes))
            metric("stork_wal_fetch_failures", "counter", "stork wal-fetch runs that could not read the archive.", String(a.fetchFailures))
        }
        let builds = s.replicaBuilds
        metric("stork_replica_builds", "counter", "Replica builds (clones, reinitializes) of this member that succeeded.", String(builds.succeeded))
        metric("stork_replica_build_failures", "counter", "Replica builds of this member in which every method failed.", String(builds.failed))
        metric("stork_replica_build_in_progress", "gauge", "Value is 1 while a replica is built, 0 otherwise.", flag(s.replicaCreation != nil))
        metric("stork_replica_build_bytes_done", "gauge", "Bytes copied so far by the replica build in progress, 0 when none.",
               String(s.replicaCreation?.bytesDone ?? 0))
        if let method = builds.lastMethod {
            let labels = "{scope=\"\(escape(config.scope))\",name=\"\(escape(config.name))\",method=\"\(escape(method))\"}"
            for (name, help, value) in [("stork_replica_build_last_duration_seconds", "Seconds the last finished replica build took.", number(builds.lastSeconds)),
                                        ("stork_replica_build_last_bytes", "Bytes the latest replica build copied (so far, while one runs).", String(builds.lastBytes))] {
                lines += ["# HELP \(name) \(help)", "# TYPE \(name) gauge", "\(name)\(labels) \(value)"]
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Patroni's `patroni_version`: each part two digits, `4.1.5` → `040105`.
    static func version(_ v: String) -> String {
        v.split(separator: ".").map { String(repeating: "0", count: max(0, 2 - $0.count)) + $0 }.joined()
    }

    static func number(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(d) }

    /// A label value as the text format wants it: backslash, quote and newline escaped.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
