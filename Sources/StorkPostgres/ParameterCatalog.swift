import Foundation
import StorkConfig
import StorkProcess
import Synchronization

/// The parameters a PostgreSQL server program knows, as `postgres --describe-config` lists
/// them for its major: a name PostgreSQL does not know, or a value it cannot read, keeps the
/// server from starting at all, so they are left out of `postgresql.conf` with a warning, as
/// Patroni's validator does. `wal_keep_segments` (before 13) and `wal_keep_size` (13 and
/// later) are written as the one this major has.
public struct ParameterCatalog: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// `postmaster`, `sighup`, `user`, ...
        public var context: String
        /// `BOOLEAN`, `INTEGER`, `REAL`, `ENUM` or `STRING`.
        public var type: String
        public var min: Double?
        public var max: Double?
    }

    public var entries: [String: Entry]
    public var major: String

    /// From `postgres --describe-config`: tab-separated name, context, group, type, default, min, max, ...
    public init(describeConfig output: String, major: String) {
        var entries: [String: Entry] = [:]
        for line in output.split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 7 else { continue }
            entries[f[0]] = Entry(context: f[1], type: f[3], min: Double(f[5]), max: Double(f[6]))
        }
        self.entries = entries
        self.major = major
    }

    /// The parameters this server takes: unknown names and unreadable values left out, one
    /// warning each (naming the major); `wal_keep_segments`/`wal_keep_size` converted (16 MB
    /// segments). Names with a dot (an extension's, `pg_stat_statements.max`) are kept.
    public func check(_ parameters: [String: JSONValue]) -> (kept: [String: JSONValue], warnings: [String]) {
        var kept = parameters, warnings: [String] = []
        let segment = 16
        if let segments = kept["wal_keep_segments"], entries["wal_keep_segments"] == nil, entries["wal_keep_size"] != nil {
            kept["wal_keep_segments"] = nil
            if kept["wal_keep_size"] == nil, let n = segments.scalarText.flatMap({ Int($0) }) {
                kept["wal_keep_size"] = .string("\(n * segment)MB")
                warnings.append("postgresql.parameters: wal_keep_segments is not a parameter of PostgreSQL \(major); written as wal_keep_size = \(n * segment)MB")
            }
        }
        if let size = kept["wal_keep_size"], entries["wal_keep_size"] == nil, entries["wal_keep_segments"] != nil {
            kept["wal_keep_size"] = nil
            if kept["wal_keep_segments"] == nil, let mb = size.scalarText.flatMap(Self.megabytes) {
                let n = (mb + segment - 1) / segment
                kept["wal_keep_segments"] = .int(n)
                warnings.append("postgresql.parameters: wal_keep_size is not a parameter of PostgreSQL \(major); written as wal_keep_segments = \(n)")
            }
        }
        for (name, value) in kept.sorted(by: { $0.key < $1.key }) where !name.contains(".") {
            guard let entry = entries[name] else {
                kept[name] = nil
                warnings.append("postgresql.parameters: \(name) is not a parameter of PostgreSQL \(major); left out of postgresql.conf")
                continue
            }
            if let problem = Self.problem(value, entry) {
                kept[name] = nil
                warnings.append("postgresql.parameters: \(name) = \(value.scalarText ?? "\(value)"): \(problem); left out of postgresql.conf")
            }
        }
        return (kept, warnings)
    }

    /// Why PostgreSQL would not read `value` for a parameter of this kind; nil when it would.
    static func problem(_ value: JSONValue, _ entry: Entry) -> String? {
        guard let text = value.scalarText else { return "expected a single value" }
        let t = text.trimmingCharacters(in: .whitespaces)
        switch entry.type {
        case "BOOLEAN":
            let words = ["on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"]
            return words.contains(t.lowercased()) ? nil : "expected on or off"
        case "INTEGER", "REAL":
            // A number with one of PostgreSQL's units; the range is checked for a bare number only
            // (a unit's base differs per parameter).
            let units = ["kB", "MB", "GB", "TB", "B", "us", "ms", "s", "min", "h", "d"]
            let unit = units.first { t.hasSuffix($0) && Double(t.dropLast($0.count).trimmingCharacters(in: .whitespaces)) != nil }
            if unit != nil { return nil }
            guard let number = Double(t) else { return "expected a number" }
            if entry.type == "INTEGER" && number != number.rounded() { return "expected an integer" }
            if let min = entry.min, number < min { return "below the minimum \(Self.format(min))" }
            if let max = entry.max, number > max { return "above the maximum \(Self.format(max))" }
            return nil
        default:
            return nil
        }
    }

    static func format(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(d) }

    /// `128MB`, `1GB`, `512` (MB, wal_keep_size's unit) → megabytes.
    static func megabytes(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces)
        for (unit, factor) in [("TB", 1_048_576.0), ("GB", 1024.0), ("MB", 1.0), ("kB", 1.0 / 1024)] where t.hasSuffix(unit) {
            return Double(t.dropLast(unit.count).trimmingCharacters(in: .whitespaces)).map { Int(($0 * factor).rounded(.up)) }
        }
        return Int(t)
    }
}

extension PostgresNode {
    private static let catalogs = Mutex<[String: ParameterCatalog]>([:])

    /// The catalog of this member's `postgres` (`postgres --describe-config`), read once per
    /// program; nil when it cannot be read (the parameters are then written unchecked).
    public func parameterCatalog() -> ParameterCatalog? {
        let postgres = binary("postgres")
        if let known = Self.catalogs.withLock({ $0[postgres] }) { return known }
        guard let major = try? binariesMajor(),
              let output = ProcessRunner.captureSynchronously(postgres, ["--describe-config"]) else { return nil }
        let catalog = ParameterCatalog(describeConfig: output, major: major)
        guard !catalog.entries.isEmpty else { return nil }
        Self.catalogs.withLock { $0[postgres] = catalog }
        return catalog
    }
}
