import Foundation
import StorkConfig

/// PostgreSQL log sequence numbers: `16/B374D848` ↔ an integer.
public enum LSN {
    /// `"16/B374D848"` → `0x16_B374D848`; nil for anything else.
    public static func parse(_ text: String) -> Int? {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16) else { return nil }
        return Int(truncatingIfNeeded: high << 32 | low)
    }

    /// The WAL segment file names from `startFile` (as a `backup_label` names it) up to the one
    /// holding `stopLSN`, on the same timeline; empty when `startFile` is not a segment name.
    public static func segmentFiles(from startFile: String, through stopLSN: Int, segmentSize: Int) -> [String] {
        guard startFile.count == 24, segmentSize > 0, let tli = UInt32(startFile.prefix(8), radix: 16),
              let high = UInt64(startFile.dropFirst(8).prefix(8), radix: 16), let low = UInt64(startFile.suffix(8), radix: 16) else { return [] }
        let perLog = UInt64(0x1_0000_0000) / UInt64(segmentSize)
        let first = high * perLog + low, last = UInt64(stopLSN) / UInt64(segmentSize)
        guard last >= first, last - first < 1 << 20 else { return [] }
        return (first...last).map { String(format: "%08X%08X%08X", tli, UInt32($0 / perLog), UInt32($0 % perLog)) }
    }

    /// `0x16_B374D848` → `"16/B374D848"` (PostgreSQL's spelling: upper case, no padding).
    public static func format(_ lsn: Int) -> String {
        let value = UInt64(truncatingIfNeeded: lsn)
        return String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }
}

/// libpq connection strings (`key=value ...`).
public enum ConnInfo {
    /// A value as libpq wants it: bare when it is plain, otherwise in single quotes with
    /// `\` and `'` escaped by a backslash.
    public static func quote(_ value: String) -> String {
        let plain = !value.isEmpty && value.allSatisfy { !$0.isWhitespace && $0 != "'" && $0 != "\\" && $0 != "=" }
        if plain { return value }
        return "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// `key=value` pairs in order, values quoted when needed.
    public static func format(_ pairs: [(String, String)]) -> String {
        pairs.map { "\($0.0)=\(quote($0.1))" }.joined(separator: " ")
    }

    /// Keys whose values are secrets: they never go on a command line.
    public static let secretKeys: Set<String> = ["password", "sslpassword"]

    /// Makes `conninfo` fit for a command line: its secret keys (``secretKeys``) move to the text
    /// of a libpq service file (https://www.postgresql.org/docs/current/libpq-pgservice.html)
    /// with one section `[service]`, and `service=<service>` takes their place. `serviceFile` is
    /// nil, and the conninfo unchanged, when there is no secret (or the text is not `key=value`).
    /// Throws when a secret cannot be written to a service file (a line break in it, or
    /// whitespace at its end, which libpq would cut).
    public static func movingSecrets(_ conninfo: String, toService service: String) throws -> (conninfo: String, serviceFile: String?) {
        guard let pairs = parse(conninfo), pairs.contains(where: { secretKeys.contains($0.key) }) else { return (conninfo, nil) }
        var kept: [(String, String)] = []
        var section = "[\(service)]\n"
        for (key, value) in pairs {
            guard secretKeys.contains(key) else { kept.append((key, value)); continue }
            if value.contains(where: \.isNewline) || value.last?.isWhitespace == true {
                throw PostgresError("\(key) contains a line break or ends with whitespace: it cannot be handed to a program safely")
            }
            section += "\(key)=\(value)\n"
        }
        kept.append(("service", service))
        return (format(kept), section)
    }

    /// Parses `key=value` text (quotes and backslashes as libpq reads them); nil when malformed.
    public static func parse(_ text: String) -> [(key: String, value: String)]? {
        var result: [(key: String, value: String)] = []
        var chars = Array(text)[...]
        func skipSpace() { while let c = chars.first, c.isWhitespace { chars.removeFirst() } }
        while true {
            skipSpace()
            guard !chars.isEmpty else { break }
            var key = ""
            while let c = chars.first, c != "=", !c.isWhitespace { key.append(c); chars.removeFirst() }
            skipSpace()
            guard chars.popFirst() == "=", !key.isEmpty else { return nil }
            skipSpace()
            var value = ""
            if chars.first == "'" {
                chars.removeFirst()
                var closed = false
                while let c = chars.popFirst() {
                    if c == "'" { closed = true; break }
                    if c == "\\" { guard let n = chars.popFirst() else { return nil }; value.append(n) } else { value.append(c) }
                }
                if !closed { return nil }
            } else {
                while let c = chars.first, !c.isWhitespace {
                    chars.removeFirst()
                    if c == "\\" { guard let n = chars.popFirst() else { return nil }; value.append(n) } else { value.append(c) }
                }
            }
            result.append((key, value))
        }
        return result
    }
}

/// One line of a pgpass file (https://www.postgresql.org/docs/current/libpq-pgpass.html).
public struct PgpassEntry: Sendable, Equatable {
    public var host: String
    public var port: String
    public var database: String
    public var user: String
    public var password: String
    public init(host: String, port: String, database: String = "*", user: String, password: String) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
    }

    /// `host:port:database:user:password` with `\` and `:` escaped.
    public var line: String {
        [host, port, database, user, password]
            .map { $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:") }
            .joined(separator: ":")
    }
}

/// A failure's text on one line: its lines joined by " / ", at most about `limit` characters.
/// A longer one keeps its start (what failed) and its end (a command's and a server log's last
/// lines hold the reason).
public func oneLine(_ text: String, limit: Int = 400) -> String {
    let joined = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        .joined(separator: " / ")
    guard joined.count > limit else { return joined }
    let head = min(150, limit / 3)
    return String(joined.prefix(head)) + " ... " + String(joined.suffix(limit - head))
}

/// A word for a shell command line (PostgreSQL runs `archive_command` through `sh`): bare
/// when it holds only safe characters, otherwise in single quotes.
public func shellQuoted(_ word: String) -> String {
    let safe = word.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "/._-+=:@,".contains($0)) }
    return safe && !word.isEmpty ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
