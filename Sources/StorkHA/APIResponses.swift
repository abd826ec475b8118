import Foundation
import StorkConfig
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
        if let progress = s.replicaCreation { doc["replica_creation"] = replicaCreation(progress, now: now) }
        if let progress = s.recoveryProgress { doc["recovery_progress"] = recoveryProgress(progress, now: now) }
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
            return running && s.role == "replica" && !noLoadBalance ? 200 : 503
        case "/read-only":
            return running && (s.role == "replica" || isPrimary) ? 200 : 503
        case "/health":
            return running ? 200 : 503
        case "/liveness":
            guard let last = s.lastCycle else { return 503 }
            return now.timeIntervalSince(last) <= Double(s.ttl) ? 200 : 503
        case "/readiness":
            return isPrimary || (running && s.role == "replica") ? 200 : 503
        default:
            return nil
        }
    }

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

    static func timestamp(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss.SSSSSSxxx"
        return f.string(from: d)
    }
}

/// Who may send a request that changes something (`POST /reinitialize`, ...), Patroni's
/// order of checks: the source address against `restapi.allowlist` (403), a client
/// certificate when `verify_client` asks for one (403), then basic authentication when
/// `restapi.authentication` is set (401). Reading requests are open to anyone.
public struct APIAccess: Sendable {
    public let allowlist: [IPNetwork]
    public let certificateExpected: Bool
    /// `Basic base64(username:password)`, nil when no authentication is configured.
    let expectedAuthorization: String?

    public init(settings: RestAPISettings, allowlist: [IPNetwork]) {
        self.allowlist = allowlist
        certificateExpected = settings.usesTLS && settings.verifyClient != "none"
        expectedAuthorization = basicAuthorization(username: settings.username, password: settings.password)
    }

    /// Why a changing request is refused (status code and text), nil when it may proceed.
    public func refusal(remoteAddress: String?, hasClientCertificate: Bool, authorization: String?) -> (code: Int, text: String)? {
        if !allowlist.isEmpty {
            guard let remoteAddress, allowlist.contains(where: { $0.contains(remoteAddress) }) else {
                return (403, "Access is denied")
            }
        }
        if certificateExpected && !hasClientCertificate { return (403, "client certificate required") }
        guard let expected = expectedAuthorization else { return nil }
        guard let authorization, !authorization.isEmpty else { return (401, "no auth header received") }
        return Self.constantTimeEqual(authorization, expected) ? nil : (401, "not authenticated")
    }

    /// Compares without an early exit, so the time taken does not tell how much of a guess was right.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }
}
