import Foundation
import StorkConfig
import StorkDCS
import StorkHA
import StorkMethods
import StorkPostgres

/// The REST API's documents as pure functions of the member status, so they are table-tested
/// without a server; JSON fields are Patroni's. The health checks' codes: `HealthChecks`.
public enum APIResponses {
    /// `GET /patroni`: always 200 with the status document.
    public static func patroniDocument(_ s: MemberStatus, config: Config, now: Date = Date()) -> JSONValue {
        var doc: [String: JSONValue] = [
            "state": .string(s.state),
            "role": .string(s.role),
            "patroni": .object(["version": .string(storkVersion), "scope": .string(config.scope), "name": .string(config.name)]),
        ]
        if let start = s.postmasterStartTime {
            doc["postmaster_start_time"] = .string(timestamp(start))
        }
        if let server = s.server, s.state == "running" {
            doc["server_version"] = .int(server.serverVersion)
            doc["timeline"] = .int(server.timeline)
            if server.inRecovery {
                doc["xlog"] = .object([
                    "received_location": .int(server.receiveLSN ?? server.walPosition),
                    "replayed_location": .int(server.replayLSN ?? server.walPosition),
                    "replayed_timestamp": .null,
                    "paused": .bool(server.replayPaused),
                ])
                if server.streaming { doc["replication_state"] = .string("streaming") }
            } else {
                doc["xlog"] = .object(["location": .int(server.walPosition)])
            }
        }
        if let sysid = s.systemIdentifier { doc["database_system_identifier"] = .string(sysid) }
        if let seen = s.dcsLastSeen { doc["dcs_last_seen"] = .int(Int(seen.timeIntervalSince1970)) }
        if let task = s.task { doc["task"] = .string(task) }
        if s.watchdogFailed { doc["watchdog_failed"] = .bool(true) }
        if let progress = s.replicaCreation { doc["replica_creation"] = ProgressJSON.replicaCreation(progress, now: now) }
        if let progress = s.recoveryProgress { doc["recovery_progress"] = ProgressJSON.recoveryProgress(progress, now: now) }
        if !s.tags.isEmpty { doc["tags"] = .object(s.tags) }
        if let reason = s.pendingRestart {
            doc["pending_restart"] = .bool(true)
            doc["pending_restart_reason"] = .object(reason)
        }
        if let scheduled = s.scheduledRestart { doc["scheduled_restart"] = scheduled }
        if s.paused { doc["pause"] = .bool(true) }
        return .object(doc)
    }

    /// `GET /cluster`: every member as its key tells it, sorted by name, with its lag behind the
    /// leader's last published position; and `scope`.
    public static func clusterDocument(_ view: ClusterView, standbyCluster: Bool, config: Config) -> JSONValue {
        let optime = view.leaderOptime ?? 0
        let members = view.members.sorted { $0.name < $1.name }.map { m -> JSONValue in
            var o: [String: JSONValue] = ["name": .string(m.name)]
            let leads = m.name == view.leader
            o["role"] = .string(leads ? (standbyCluster ? "standby_leader" : "leader") : "replica")
            o["state"] = .string((leads ? nil : m.data["replication_state"]?.scalarText) ?? m.state ?? "")
            o["api_url"] = m.apiURL.map { .string($0) } ?? .null
            if let url = m.connURL.flatMap({ URLComponents(string: $0) }), let host = url.host, !host.isEmpty {
                o["host"] = .string(host)
                if let port = url.port { o["port"] = .int(port) }
            }
            for key in ["timeline", "pending_restart", "pending_restart_reason", "scheduled_restart"] where m.data[key] != nil {
                o[key] = m.data[key]
            }
            if !m.tags.isEmpty { o["tags"] = .object(m.tags) }
            if !leads {
                for (lag, lsn, field) in [("receive_lag", "receive_lsn", "receive_lsn"), ("replay_lag", "replay_lsn", "replay_lsn"),
                                          ("lag", "lsn", "xlog_location")] {
                    if let position = m.data[field]?.intValue, position > 0 {
                        o[lsn] = .string(LSN.format(position))
                        o[lag] = .int(max(optime - position, 0))
                    } else {
                        o[lsn] = .string("unknown")
                        o[lag] = .string("unknown")
                    }
                }
            }
            return .object(o)
        }
        var doc: [String: JSONValue] = ["members": .array(members), "scope": .string(config.scope)]
        if view.paused { doc["pause"] = .bool(true) }
        if let failover = view.failover, let at = failover.scheduledAt {
            var scheduled: [String: JSONValue] = ["at": .string(DateText.isoformat(at))]
            if let leader = failover.leader { scheduled["from"] = .string(leader) }
            if let candidate = failover.candidate { scheduled["to"] = .string(candidate) }
            doc["scheduled_switchover"] = .object(scheduled)
        }
        return .object(doc)
    }

    static func timestamp(_ d: Date) -> String { DateText.isoformat(d, separator: " ") }
}
