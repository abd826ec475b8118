import Foundation
import StorkConfig

/// Patroni's calling convention for external methods (DESIGN.md contract 3), in one place for
/// replica and bootstrap methods alike: the command's own words after the program, then the
/// fixed parameters as `--name=value` (none with `no_params`), then every other key of the
/// method's section, sorted, as `--key=value`, values as Python's `str()` prints them.
enum CallingConvention {
    /// `notPassed`: section keys that are settings, not arguments. A fixed parameter wins over
    /// a section key of the same name.
    static func arguments(command: [String], section: [String: JSONValue], notPassed: Set<String>,
                          fixed: [(name: String, value: String)]?) -> [String] {
        var out = Array(command.dropFirst())
        var extra = section
        for key in notPassed { extra[key] = nil }
        for (name, value) in fixed ?? [] {
            out.append("--\(name)=\(value)")
            extra[name] = nil
        }
        for key in extra.keys.sorted() { out.append("--\(key)=\(pythonText(extra[key]!))") }
        return out
    }

    /// A value as Python's `str()` prints it, which is what Patroni passes.
    static func pythonText(_ value: JSONValue) -> String {
        switch value {
        case .bool(let b): return b ? "True" : "False"
        case .null: return "None"
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .array(let items): return "[" + items.map { pythonRepr($0) }.joined(separator: ", ") + "]"
        case .object(let map): return "{" + map.keys.sorted().map { "'\($0)': \(pythonRepr(map[$0]!))" }.joined(separator: ", ") + "}"
        }
    }

    static func pythonRepr(_ value: JSONValue) -> String {
        if case .string(let s) = value { return "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'" }
        return pythonText(value)
    }
}
