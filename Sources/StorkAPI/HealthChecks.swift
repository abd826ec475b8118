import Foundation
import StorkConfig
import StorkHA
import StorkPostgres

/// Patroni's health checks (rest_api: "Health check endpoints"): the status code of each path
/// for this member, pure, so that `HealthCheckTests` is their table. `GET` answers it with the
/// `GET /patroni` document, `HEAD` and `OPTIONS` (HAProxy's `option httpchk OPTIONS /primary`)
/// with the code alone.
public enum HealthChecks {
    /// Every path a health check answers. Patroni also answers any other GET path with 503
    /// and its status; Stork answers 404, so that a mistyped check is told, not taken for a
    /// member that is down.
    public static let paths = ["/", "/primary", "/master", "/read-write", "/leader", "/standby-leader", "/standby_leader",
                               "/replica", "/read-only", "/read-only-sync", "/read-only-synchronous", "/read-only-quorum",
                               "/sync", "/synchronous", "/quorum", "/async", "/asynchronous", "/health", "/liveness", "/readiness"]

    /// The status code of `path` for a member in status `s`; nil for a path that is no health check.
    public static func statusCode(path: String, query: HealthQuery = HealthQuery(), _ s: MemberStatus, config: Config,
                                  now: Date = Date()) -> Int? {
        let running = s.state == "running"
        let primary = running && s.role == "primary" && s.holdsLeaderKey && !s.standbyCluster
        let standbyLeader = running && s.role == "standby_leader" && s.holdsLeaderKey && s.standbyCluster
        let replica = running && s.role == "replica" && s.cannotFollow == nil && !(s.tags["noloadbalance"]?.isTruthy ?? false)
            && !lagging(s, limit: query.lag)
        // Synchronous replication is not in Stork yet: no member is a synchronous or quorum standby.
        let syncStandby = false
        let code: Bool
        switch path {
        case "/", "/primary", "/master", "/read-write":
            return primary ? 200 : 503
        case "/leader":
            // The leader key alone, whatever PostgreSQL runs as (a standby leader too).
            return s.holdsLeaderKey ? 200 : 503
        case "/standby-leader", "/standby_leader":
            return standbyLeader ? 200 : 503
        case "/liveness":
            return alive(s, now: now) ? 200 : 503
        case "/readiness":
            return ready(s, query: query) ? 200 : 503
        case "/replica", "/async", "/asynchronous":
            code = replica && !syncStandby
        case "/read-only":
            code = primary || standbyLeader || replica
        case "/read-only-sync", "/read-only-synchronous", "/read-only-quorum":
            code = primary || standbyLeader || (replica && syncStandby)
        case "/sync", "/synchronous", "/quorum":
            code = replica && syncStandby
        case "/health":
            code = running
        default:
            return nil
        }
        return code && tagsMatch(query.tags, s.tags) ? 200 : 503
    }

    /// The replica replayed less than the leader's last published position minus `limit` bytes
    /// (none given: never lagging).
    static func lagging(_ s: MemberStatus, limit: Int?, mode: String? = nil) -> Bool {
        guard let limit, let server = s.server else { return false }
        let leader = max(s.leaderOptime ?? 0, server.receiveLSN ?? 0)
        let position = mode == "write" ? (server.receiveLSN ?? server.walPosition) : (server.replayLSN ?? server.walPosition)
        return leader > 0 && leader - position > limit
    }

    /// `GET /liveness`: the HA loop ran within `ttl` of its next cycle (twice that on a
    /// member that is not a running primary); always while paused, when a stopped agent is
    /// maintenance, not a failure.
    static func alive(_ s: MemberStatus, now: Date) -> Bool {
        if s.paused { return true }
        guard let last = s.lastCycle else { return false }
        let primary = s.state == "running" && s.role == "primary"
        let allowed = Double(s.loopWait) + Double(primary ? s.ttl : 2 * s.ttl)
        return now.timeIntervalSince(last) < allowed
    }

    /// `GET /readiness`: the leader; or a running replica streaming within `lag` (default
    /// `maximum_lag_on_failover`) of the leader, measured at replay (`mode=apply`, the default)
    /// or at receipt (`mode=write`).
    static func ready(_ s: MemberStatus, query: HealthQuery) -> Bool {
        if s.holdsLeaderKey { return true }
        guard s.state == "running", let server = s.server, server.inRecovery, server.streaming, s.cannotFollow == nil else { return false }
        return !lagging(s, limit: query.lag ?? s.maximumLagOnFailover, mode: query.mode)
    }

    /// `tag_<name>=<value>`: every tag named is set to that value (booleans as `true`/`false`).
    /// Patroni's built-in boolean tags count only when true.
    static func tagsMatch(_ wanted: [String: String], _ tags: [String: JSONValue]) -> Bool {
        let builtIn: Set = ["clonefrom", "nofailover", "noloadbalance", "nosync", "nostream"]
        return wanted.allSatisfy { name, value in
            guard let tag = tags[name], !(builtIn.contains(name) && !tag.isTruthy) else { return false }
            switch tag {
            case .bool(let b): return value == (b ? "true" : "false")
            default: return tag.scalarText == value
            }
        }
    }
}

/// A health check's query string as Patroni reads it: `lag` (bytes, or a number with `B`, `kB`,
/// `MB`, `GB` or `TB`, 1024-based), `mode` (`/readiness`: `write` or `apply`), and
/// `tag_<name>=<value>` filters. A key given twice counts once, the first time; an empty
/// value does not count.
public struct HealthQuery: Sendable, Equatable {
    /// Bytes; nil when not given or unreadable (then there is no limit, or readiness's default).
    public var lag: Int?
    public var mode: String?
    public var tags: [String: String] = [:]

    public init() {}

    public init(_ query: String?) {
        var seen: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let key = Self.decode(parts[0]), let value = Self.decode(parts[1]), !value.isEmpty,
                  seen[key] == nil else { continue }
            seen[key] = value
        }
        lag = seen["lag"].flatMap(Self.bytes)
        mode = seen["mode"]
        for (key, value) in seen where key.hasPrefix("tag_") && key.count > 4 { tags[String(key.dropFirst(4))] = value }
    }

    static func decode(_ s: Substring) -> String? {
        String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// `1048576`, `16kB`, `1.5 MB`: bytes, nil for anything else (units are case-sensitive).
    public static func bytes(_ text: String) -> Int? {
        let units: [(String, Double)] = [("TB", 1_099_511_627_776), ("GB", 1_073_741_824), ("MB", 1_048_576), ("kB", 1024), ("B", 1)]
        var number = text.trimmingCharacters(in: .whitespaces)
        var multiplier = 1.0
        if let (unit, factor) = units.first(where: { number.hasSuffix($0.0) }) {
            number = String(number.dropLast(unit.count)).trimmingCharacters(in: .whitespaces)
            multiplier = factor
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              let value = Double(number), value * multiplier < Double(Int.max) else { return nil }
        return Int((value * multiplier).rounded())
    }
}
