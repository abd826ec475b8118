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

    /// Python's `datetime.isoformat()` of a local time, as Patroni writes times into the DCS
    /// and its REST answers: microseconds and the zone's offset (`2026-12-02 13:35:35.123456+00:00`
    /// with `separator: " "`, `T` otherwise).
    public static func isoformat(_ date: Date, separator: String = "T") -> String {
        format(date, "yyyy-MM-dd'\(separator)'HH:mm:ss.SSSSSSxxx", timeZone: .current)
    }
}
