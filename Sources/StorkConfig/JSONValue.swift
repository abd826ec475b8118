import Foundation

/// A JSON-shaped value: what YAML scalars, maps and lists become when Stork keeps them
/// as given (PostgreSQL parameters, tags, `bootstrap.dcs`, method sections) and what goes
/// into DCS keys as JSON.
public enum JSONValue: Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONValue {
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// The value as a PostgreSQL parameter or command-line value would spell it:
    /// booleans as `on`/`off`, numbers without a trailing `.0`.
    public var scalarText: String? {
        switch self {
        case .bool(let b): return b ? "on" : "off"
        case .int(let i): return String(i)
        case .double(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .string(let s): return s
        default: return nil
        }
    }

    /// Patroni's lenient truth: `true`, `1`, `yes`, `on` (any case) are true.
    public var isTruthy: Bool {
        switch self {
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return ["true", "1", "yes", "on", "y"].contains(s.lowercased())
        default: return false
        }
    }

    /// Set to something that would change behaviour: not null, false, 0 or empty.
    var isSet: Bool {
        switch self {
        case .null: return false
        case .bool, .int, .double: return isTruthy
        case .string(let s): return !s.isEmpty && !["false", "off", "no", "n", "0"].contains(s.lowercased())
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        }
    }

    public var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d): return Int(exactly: d)  // nil for fractions, infinities and out-of-range values
        case .string(let s): return Int(s.trimmingCharacters(in: .whitespaces))
        default: return nil
        }
    }

    /// A number, or a string holding one (as YAML or an environment variable may give it).
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .string(let s): return Double(s.trimmingCharacters(in: .whitespaces))
        default: return nil
        }
    }

    public func jsonData(sortedKeys: Bool = true) -> Data {
        let e = JSONEncoder()
        e.outputFormatting = sortedKeys ? [.sortedKeys, .withoutEscapingSlashes] : [.withoutEscapingSlashes]
        return (try? e.encode(self)) ?? Data("null".utf8)
    }

    public func jsonString(sortedKeys: Bool = true) -> String {
        String(decoding: jsonData(sortedKeys: sortedKeys), as: UTF8.self)
    }

    public static func parse(json: Data) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: json)
    }
}
