import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// The member key: what this member publishes about itself every cycle.
extension Agent {
    func touchMember() async {
        let s = status.snapshot
        var data: [String: JSONValue] = [
            "conn_url": .string(node.connURL),
            "api_url": .string(apiURL),
            "state": .string(s.state),
            "role": .string(s.role),
            "version": .string(storkVersion),
        ]
        if let server = s.server, s.state == "running" {
            data["xlog_location"] = .int(server.walPosition)
            data["timeline"] = .int(server.timeline)
            if server.inRecovery {
                if let r = server.replayLSN { data["replay_lsn"] = .int(r) }
                if let r = server.receiveLSN { data["receive_lsn"] = .int(r) }
                if server.streaming { data["replication_state"] = .string("streaming") }
            }
        }
        if !config.tags.isEmpty { data["tags"] = .object(config.tags) }
        if let proxy = config.postgresql.proxyAddress { data["proxy_url"] = .string("postgres://\(proxy)/postgres") }
        if case .object(var scheduled)? = s.scheduledRestart {
            if let start = scheduledRestart?.postmasterStart { scheduled["postmaster_start_time"] = .string(DateText.isoformat(start, separator: " ")) }
            data["scheduled_restart"] = .object(scheduled)
        }
        if s.paused { data["pause"] = .bool(true) }
        if let reason = s.pendingRestart {
            data["pending_restart"] = .bool(true)
            data["pending_restart_reason"] = .object(reason)
        }
        if let progress = s.replicaCreation { data["replica_creation"] = ProgressJSON.replicaCreation(progress) }
        if let progress = s.recoveryProgress { data["recovery_progress"] = ProgressJSON.recoveryProgress(progress) }
        do {
            try await dcs.touchMember(.object(data), ttl: timing.ttl)
            publishedPause = s.paused
        } catch {
            logger.error("Error communicating with DCS: \(error)")
        }
    }

    /// This member's `api_url` (the REST API is not reloaded: it is fixed for the process).
    static func apiURL(_ restapi: RestAPISettings) -> String {
        "\(restapi.certfile == nil ? "http" : "https")://\(restapi.connectAddress)/patroni"
    }
}

/// The progress of a replica build or a bootstrap's recovery, as the member key and
/// `GET /patroni` show it.
public enum ProgressJSON {
    /// Stork's addition to `GET /patroni` and the member key while a bootstrap recovers:
    /// `{"target", "replayed_lsn", "last_replayed_transaction", "paused", "elapsed" (s)}`.
    public static func recoveryProgress(_ p: RecoveryProgress, now: Date = Date()) -> JSONValue {
        var out: [String: JSONValue] = ["target": .string(p.target), "paused": .bool(p.paused), "elapsed": .int(Int(now.timeIntervalSince(p.started)))]
        if let lsn = p.replayedLSN { out["replayed_lsn"] = .string(lsn) }
        if let time = p.lastTransaction { out["last_replayed_transaction"] = .string(time) }
        return .object(out)
    }

    /// Stork's addition to `GET /patroni` and the member key while a replica is built:
    /// `{"method", "attempt", "attempts", "elapsed" (s), "bytes_done", "bytes_total"}`.
    public static func replicaCreation(_ p: ReplicaProgress, now: Date = Date()) -> JSONValue {
        var out: [String: JSONValue] = [
            "method": .string(p.method), "attempt": .int(p.attempt), "attempts": .int(p.attempts),
            "elapsed": .int(Int(now.timeIntervalSince(p.started))),
        ]
        if let bytes = p.bytesDone { out["bytes_done"] = .int(bytes) }
        if let bytes = p.bytesTotal { out["bytes_total"] = .int(bytes) }
        return .object(out)
    }
}
