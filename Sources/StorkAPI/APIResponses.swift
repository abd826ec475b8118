import Foundation
import StorkConfig
import StorkHA
import StorkMethods
import StorkPostgres

/// The REST API's answers as pure functions of the member status, so they are table-tested
/// without a server. Paths, status codes and JSON fields are Patroni's (`api.py`).
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
        if !config.tags.isEmpty { doc["tags"] = .object(config.tags) }
        return .object(doc)
    }

    /// The HTTP status for a health-check path, nil for a path the API does not serve.
    public static func statusCode(path: String, _ s: MemberStatus, config: Config, now: Date = Date()) -> Int? {
        let running = s.state == "running"
        let isPrimary = running && s.role == "primary" && s.holdsLeaderKey
        switch path {
        case "/patroni":
            return 200
        case "/", "/primary", "/master", "/read-write", "/leader":
            return isPrimary ? 200 : 503
        case "/replica":
            let noLoadBalance = config.tags["noloadbalance"]?.isTruthy ?? false
            return running && s.role == "replica" && s.cannotFollow == nil && !noLoadBalance ? 200 : 503
        case "/read-only":
            return running && ((s.role == "replica" && s.cannotFollow == nil) || isPrimary) ? 200 : 503
        case "/health":
            return running ? 200 : 503
        case "/liveness":
            guard let last = s.lastCycle else { return 503 }
            return now.timeIntervalSince(last) <= Double(s.ttl) ? 200 : 503
        case "/readiness":
            return isPrimary || (running && s.role == "replica" && s.cannotFollow == nil) ? 200 : 503
        default:
            return nil
        }
    }

    static func timestamp(_ d: Date) -> String { DateText.isoformat(d, separator: " ") }
}
