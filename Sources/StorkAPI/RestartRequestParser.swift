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
            guard case .string(let text) = value, let (date, zoned) = timestamp(text) else {
                return .failure(RefusedRequest(422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"))
            }
            guard zoned else { return .failure(RefusedRequest(400, "Timezone information is mandatory for the scheduled restart")) }
            guard date > now else { return .failure(RefusedRequest(422, "Cannot schedule restart in the past")) }
            request.schedule = date
            request.scheduleText = text
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

    /// An ISO 8601 time (`2030-01-01T00:00:00+00:00`, `2030-01-01 00:00Z`, fractions allowed) and
    /// whether it names its offset; nil for anything else.
    static func timestamp(_ text: String) -> (Date, Bool)? {
        let pattern = #/^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*(Z|[+-]\d{2}:?\d{2})?$/#
        guard let m = text.trimmingCharacters(in: .whitespaces).wholeMatch(of: pattern) else { return nil }
        var parts = DateComponents()
        parts.year = Int(m.1); parts.month = Int(m.2); parts.day = Int(m.3)
        parts.hour = Int(m.4); parts.minute = Int(m.5); parts.second = m.6.flatMap { Int($0) } ?? 0
        if let fraction = m.7 { parts.nanosecond = Int(fraction.padding(toLength: 9, withPad: "0", startingAt: 0)) }
        var zone = TimeZone.current
        if let offset = m.8 {
            if offset == "Z" { zone = TimeZone(secondsFromGMT: 0)! } else {
                let digits = offset.dropFirst().replacingOccurrences(of: ":", with: "")
                let seconds = (Int(digits.prefix(2))! * 60 + Int(digits.suffix(2))!) * 60
                zone = TimeZone(secondsFromGMT: offset.hasPrefix("-") ? -seconds : seconds)!
            }
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        guard let date = calendar.date(from: parts), calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
            == DateComponents(year: parts.year, month: parts.month, day: parts.day, hour: parts.hour, minute: parts.minute) else { return nil }
        return (date, m.8 != nil)
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
