import Foundation

/// Dates as text in the C locale: UTC by default, as archive names, messages and
/// pg_controldata write them; the local zone where Patroni writes local times.
public enum DateText {
    public static let utc = TimeZone(identifier: "UTC")!

    static func formatter(_ pattern: String, _ timeZone: TimeZone) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = timeZone
        f.dateFormat = pattern
        return f
    }

    public static func format(_ date: Date, _ pattern: String = "yyyy-MM-dd HH:mm:ss", timeZone: TimeZone = utc) -> String {
        formatter(pattern, timeZone).string(from: date)
    }

    /// The first of `patterns` that reads `text`.
    public static func parse(_ text: String, _ patterns: [String], timeZone: TimeZone = utc) -> Date? {
        for pattern in patterns { if let date = formatter(pattern, timeZone).date(from: text) { return date } }
        return nil
    }

    /// An ISO 8601 time (`2030-01-01T00:00:00+00:00`, `2030-01-01 00:00Z`, fractions allowed) and
    /// whether it names its offset (without, it is local time); nil for anything else.
    public static func timestamp(_ text: String) -> (Date, zoned: Bool)? {
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

    /// Python's `datetime.isoformat()` of a local time, as Patroni writes times into the DCS
    /// and its REST answers: microseconds and the zone's offset (`2026-12-02 13:35:35.123456+00:00`
    /// with `separator: " "`, `T` otherwise).
    public static func isoformat(_ date: Date, separator: String = "T") -> String {
        format(date, "yyyy-MM-dd'\(separator)'HH:mm:ss.SSSSSSxxx", timeZone: .current)
    }
}
