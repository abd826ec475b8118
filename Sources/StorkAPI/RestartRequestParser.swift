import Foundation
import StorkConfig
import StorkHA

/// `POST /restart`'s body read as Patroni reads it, with its refusals (code and text); pure,
/// so `RestartRequestTests` is its table.
public enum RestartRequestParser {
    public static func parse(_ body: [String: JSONValue], now: Date = Date()) -> Result<RestartRequest, RefusedRequest> {
        var request = RestartRequest()
        for key in body.keys.sorted() where !["schedule", "role", "postgres_version", "timeout", "restart_pending"].contains(key) {
            return .failure(RefusedRequest(400, "Unknown filter for the scheduled restart: \(key)"))
        }
        if let value = body["schedule"] {
            switch parseSchedule(value, action: "restart", now: now) {
            case .failure(let refused): return .failure(refused)
            case .success(let (date, text)): request.schedule = date; request.scheduleText = text
            }
        }
        if let value = body["role"] {
            guard case .string(let role) = value, ["primary", "standby_leader", "replica"].contains(role) else {
                return .failure(RefusedRequest(400, "PostgreSQL role should be either primary, standby_leader, or replica"))
            }
            request.role = role
        }
        if let value = body["postgres_version"] {
            let text = value.scalarText ?? ""
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
                return .failure(RefusedRequest(400, "Invalid PostgreSQL version: \(text)"))
            }
            guard RestartRequest.serverVersion(text) != nil else {
                return .failure(RefusedRequest(400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: \(text)"))
            }
            request.postgresVersion = text
        }
        if let value = body["timeout"] {
            guard let seconds = value.scalarText.flatMap(Self.seconds), seconds > 0 else {
                return .failure(RefusedRequest(400, "Timeout should be a positive number of seconds"))
            }
            request.timeout = seconds
        }
        // Patroni filters on the key's presence, whatever its value.
        request.restartPending = body["restart_pending"] != nil
        return .success(request)
    }

    /// A time a request schedules something at (`POST /restart`'s `schedule`, `POST
    /// /switchover`'s `scheduled_at`), checked as Patroni's `parse_schedule` checks it.
    static func parseSchedule(_ value: JSONValue, action: String, now: Date) -> Result<(Date, String), RefusedRequest> {
        guard case .string(let text) = value, let (date, zoned) = DateText.timestamp(text) else {
            return .failure(RefusedRequest(422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"))
        }
        guard zoned else { return .failure(RefusedRequest(400, "Timezone information is mandatory for the scheduled \(action)")) }
        guard date > now else { return .failure(RefusedRequest(422, "Cannot schedule \(action) in the past")) }
        return .success((date, text))
    }

    /// Patroni's time with units (base unit seconds): `300`, `5min`, `2h`, `1d`, `1500ms`.
    static func seconds(_ text: String) -> Int? {
        let units: [(String, Double)] = [("min", 60), ("ms", 0.001), ("us", 0.000_001), ("s", 1), ("h", 3600), ("d", 86400)]
        let t = text.trimmingCharacters(in: .whitespaces)
        for (unit, factor) in units where t.hasSuffix(unit) {
            guard let n = Double(t.dropLast(unit.count).trimmingCharacters(in: .whitespaces)) else { return nil }
            return Int((n * factor).rounded(.down))
        }
        return Int(t)
    }
}
