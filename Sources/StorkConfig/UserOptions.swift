/// Turns the user's `bootstrap.initdb` and `postgresql.basebackup` options into long-form
/// command-line arguments, the way Patroni's `Bootstrap.process_user_options` does.
///
/// Two spellings are accepted:
/// - a list: a string item is a switch (`data-checksums` → `--data-checksums`), a map item
///   with exactly one key is an option with a value (`{encoding: UTF8}` → `--encoding=UTF8`);
/// - a map: each key is an option (`{max-rate: 100M}` → `--max-rate=100M`), in key order.
///
/// Values are spelled through `JSONValue.scalarText` and unquoted like Patroni does (a value that
/// a shell would read as exactly one word loses its quotes: `'"bar baz"'` → `bar baz`).
/// A value of `true` gives a bare switch; `false`, null and the empty string leave the option out
/// (Patroni skips false-like values in the map form).
///
/// Options that Stork sets itself are refused, in both spellings (Patroni checks only the list form).
public enum UserOptions {
    /// Options that Stork passes to initdb itself (Patroni's list).
    public static let refusedInitdbOptions: Set<String> = ["pgdata", "nosync", "pwfile", "sync-only", "version"]
    /// Options that Stork passes to pg_basebackup itself (Patroni's list in `Bootstrap.basebackup`).
    public static let refusedBasebackupOptions: Set<String> = [
        "pgdata", "format", "wal-method", "xlog-method", "gzip", "version", "compress",
        "dbname", "host", "port", "username", "password",
    ]

    /// Arguments for initdb from `bootstrap.initdb` (nil gives none).
    /// - Throws: `ConfigError` listing every bad item, each naming `path`.
    public static func initdbArguments(_ value: JSONValue?, path: String = "bootstrap.initdb") throws(ConfigError) -> [String] {
        try arguments(value, refused: refusedInitdbOptions, path: path)
    }

    /// Arguments for pg_basebackup from `postgresql.basebackup` (nil gives none).
    /// - Throws: `ConfigError` listing every bad item, each naming `path`.
    public static func basebackupArguments(_ value: JSONValue?, path: String = "postgresql.basebackup") throws(ConfigError) -> [String] {
        try arguments(value, refused: refusedBasebackupOptions, path: path)
    }

    /// The general form: `refused` names options the caller sets itself.
    public static func arguments(_ value: JSONValue?, refused: Set<String>, path: String) throws(ConfigError) -> [String] {
        var issues: [ConfigIssue] = []
        let args = process(value, refused: refused, path: path, issues: &issues)
        if !issues.isEmpty { throw ConfigError(issues: issues) }
        return args
    }

    static func process(_ value: JSONValue?, refused: Set<String>, path: String, issues: inout [ConfigIssue]) -> [String] {
        var out: [String] = []

        func allowed(_ name: String) -> Bool {
            var bare = Substring(name)
            while bare.first == "-" { bare = bare.dropFirst() }
            if refused.contains(String(bare)) {
                issues.append(ConfigIssue(path: path, message: "option \"\(bare)\" is set by Stork and cannot be given"))
                return false
            }
            return true
        }

        func option(_ name: String, _ value: JSONValue, item: String?) {
            let whereText = item.map { " (\($0))" } ?? ""
            if name.isEmpty {
                issues.append(ConfigIssue(path: path, message: "empty option name\(whereText)"))
                return
            }
            guard allowed(name) else { return }
            switch value {
            case .null, .bool(false): return
            case .bool(true): out.append("--\(name)")
            case .string(let s) where s.isEmpty: return
            case .array, .object:
                issues.append(ConfigIssue(path: path, message: "option \"\(name)\": expected a single value\(whereText)"))
            default:
                out.append("--\(name)=\(unquote(value.scalarText ?? ""))")
            }
        }

        switch value {
        case nil, .null?:
            break
        case .object(let map)?:
            for key in map.keys.sorted() { option(key, map[key]!, item: nil) }
        case .array(let items)?:
            for (i, item) in items.enumerated() {
                switch item {
                case .string(let s):
                    if s.isEmpty { issues.append(ConfigIssue(path: path, message: "item \(i + 1): empty option name")) }
                    else if allowed(s) { out.append("--\(s)") }
                case .object(let map) where map.count == 1:
                    let (k, v) = map.first!
                    option(k, v, item: "item \(i + 1)")
                case .object(let map):
                    issues.append(ConfigIssue(path: path, message: "item \(i + 1): a map item must have exactly one key, found \(map.count) (\(map.keys.sorted().joined(separator: ", ")))"))
                default:
                    issues.append(ConfigIssue(path: path, message: "item \(i + 1): expected an option name or a single-key map"))
                }
            }
        case .some:
            issues.append(ConfigIssue(path: path, message: "expected a list or a map of options"))
        }
        return out
    }

    /// Patroni's `unquote`: when a POSIX shell would read `text` as exactly one word, that word;
    /// otherwise `text` unchanged (several words, unbalanced quotes).
    public static func unquote(_ text: String) -> String {
        guard let words = shellWords(text), words.count == 1 else { return text }
        return words[0]
    }

    /// POSIX shell word splitting without expansions: single quotes keep everything, double
    /// quotes honour `\"`, `\\`, `\$` and `` \` ``, a backslash outside quotes escapes the next
    /// character. Nil when a quote is unbalanced or the text ends in a lone backslash.
    public static func shellWords(_ text: String) -> [String]? {
        var words: [String] = []
        var current = ""
        var inWord = false
        var it = Array(text).makeIterator()
        while let c = it.next() {
            switch c {
            case " ", "\t", "\n", "\r":
                if inWord { words.append(current); current = ""; inWord = false }
            case "'":
                inWord = true
                var closed = false
                while let d = it.next() { if d == "'" { closed = true; break }; current.append(d) }
                if !closed { return nil }
            case "\"":
                inWord = true
                var closed = false
                while let d = it.next() {
                    if d == "\"" { closed = true; break }
                    if d == "\\" {
                        guard let e = it.next() else { return nil }
                        if e == "\"" || e == "\\" || e == "$" || e == "`" { current.append(e) }
                        else if e != "\n" { current.append("\\"); current.append(e) }
                    } else {
                        current.append(d)
                    }
                }
                if !closed { return nil }
            case "\\":
                inWord = true
                guard let e = it.next() else { return nil }
                if e != "\n" { current.append(e) }
            default:
                inWord = true
                current.append(c)
            }
        }
        if inWord { words.append(current) }
        return words
    }
}
