/// One problem found in a configuration: the dotted key path it concerns and what is wrong.
/// `description` is the one line shown to the user, `path: message`.
public struct ConfigIssue: Sendable, Equatable, CustomStringConvertible {
    /// Dotted key path (`postgresql.authentication.replication.username`), or a file name
    /// (with `:line:column` for YAML syntax errors), or an environment variable name.
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// Every problem found while loading a configuration, one line each.
///
/// Loading collects all issues before throwing, so a user fixes a file in one pass.
/// The description never contains a password: issues quote only the values of keys
/// that cannot hold one (addresses, numbers, option names).
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var issues: [ConfigIssue]

    public init(issues: [ConfigIssue]) { self.issues = issues }
    public init(_ path: String, _ message: String) { self.issues = [ConfigIssue(path: path, message: message)] }

    /// The issues one per line, in the order they were found.
    public var description: String { issues.map(\.description).joined(separator: "\n") }
    /// The issues as lines (`path: message`).
    public var lines: [String] { issues.map(\.description) }
}

extension ConfigIssue: Error {}
