import Foundation
import StorkProcess

/// One entry of `postgresql.create_replica_methods`, read and checked at load time.
public struct ReplicaMethodSpec: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Built in: `pg_basebackup -X stream`, options from `postgresql.basebackup`.
        case basebackup
        /// Built in: a backup-mode rsync from a running member (`postgresql.rsync`).
        case rsync(source: String)
        /// Built in: the newest (or the named) base backup of Stork's own archive (the `archive`
        /// section), restored and checked, then the WAL after it from the archive.
        case archive(backup: String?)
        /// A user's command (`postgresql.<name>.command`), already split into words.
        case custom(command: [String])
    }

    public var name: String
    public var kind: Kind
    /// `no_leader` (or `no_master`): may run when no member can be cloned from.
    public var noLeader = false
    /// `keep_data`: the method works on the data directory in place and keeps what it finds.
    public var keepData = false
    /// `no_params`: the command gets none of Stork's `--scope= --role= --datadir= --connstring=`.
    public var noParams = false
    /// Stork's `retries`: extra attempts of this method (basebackup: 1, as Patroni's two tries).
    public var retries = 0
    /// Stork's `timeout`: seconds one attempt may take; nil is no limit.
    public var timeout: Double?
    /// The section as given (custom methods pass its keys as `--key=value`).
    public var section: [String: JSONValue] = [:]

    /// `[basebackup]`, the chain when none is configured.
    public static var basebackupDefault: ReplicaMethodSpec {
        var spec = ReplicaMethodSpec(name: "basebackup", kind: .basebackup)
        spec.retries = 1
        return spec
    }

    public init(name: String, kind: Kind) {
        self.name = name
        self.kind = kind
    }

    /// Keys with a meaning to Stork; `no_params` strips them from a command's arguments.
    public static let specialKeys: Set<String> = ["command", "no_params", "no_leader", "no_master", "keep_data", "retries", "timeout"]

    /// The placeholders an rsync `source` template may use.
    public static let rsyncPlaceholders: Set<String> = ["host", "port", "name", "scope"]
    /// Where built-in rsync copies from when `postgresql.rsync.source` is not given: an rsync
    /// daemon on the source host exporting its data directory as module `pgdata`.
    public static let defaultRsyncSource = "rsync://{host}/pgdata"

    /// Stork's keys in `postgresql.basebackup` (either form): not pg_basebackup options.
    static let basebackupStorkKeys: Set<String> = ["retries", "timeout"]

    static func storkKeys(inBasebackupOptions options: JSONValue?) -> [String: JSONValue] {
        switch options {
        case .object(let m)?: return m.filter { basebackupStorkKeys.contains($0.key) }
        case .array(let items)?:
            var out: [String: JSONValue] = [:]
            for case .object(let m) in items { for (k, v) in m where basebackupStorkKeys.contains(k) { out[k] = v } }
            return out
        default: return [:]
        }
    }

    /// `postgresql.basebackup` without Stork's keys: what goes to pg_basebackup.
    public static func pgBasebackupOptions(_ options: JSONValue?) -> JSONValue? {
        switch options {
        case .object(let m)?: return .object(m.filter { !basebackupStorkKeys.contains($0.key) })
        case .array(let items)?:
            return .array(items.filter { item in
                if case .object(let m) = item, m.count == 1, basebackupStorkKeys.contains(m.keys.first!) { return false }
                return true
            })
        default: return options
        }
    }

    /// Placeholders in `template` (`{name}`) that are not in `allowed`.
    public static func unknownPlaceholders(_ template: String, allowed: Set<String>) -> [String] {
        var out: [String] = []
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else { out.append(String(rest[open...])); break }
            let name = String(rest[rest.index(after: open)..<close])
            if !allowed.contains(name) { out.append("{\(name)}") }
            rest = rest[rest.index(after: close)...]
        }
        return out
    }

    /// `template` with each `{key}` replaced by `values[key]`.
    public static func fill(_ template: String, _ values: [String: String]) -> String {
        var out = template
        for (key, value) in values { out = out.replacingOccurrences(of: "{\(key)}", with: value) }
        return out
    }
}

extension ConfigReader {
    /// The method chain from `create_replica_methods` and the sections, with one issue per
    /// problem: a name without a section that has a `command`, a command that does not split,
    /// a negative `retries`, a `timeout` that is not a positive number, an rsync source
    /// template with an unknown placeholder.
    mutating func readReplicaMethods(_ names: [String], sections: [String: JSONValue], basebackup: JSONValue?) -> [ReplicaMethodSpec] {
        var out: [ReplicaMethodSpec] = []
        for name in names.isEmpty ? ["basebackup"] : names {
            let path = "postgresql.\(name)"
            var section: [String: JSONValue] = [:]
            if name == "basebackup" {
                // The section holds pg_basebackup's options; Stork's own keys are taken out of it.
                section = ReplicaMethodSpec.storkKeys(inBasebackupOptions: basebackup)
            } else if case .object(let m)? = sections[name] {
                section = m
            }
            var spec: ReplicaMethodSpec
            switch name {
            case "basebackup":
                spec = .basebackupDefault
            case "rsync" where section["command"] == nil:
                let source = string(section["source"], "\(path).source") ?? ReplicaMethodSpec.defaultRsyncSource
                for bad in ReplicaMethodSpec.unknownPlaceholders(source, allowed: ReplicaMethodSpec.rsyncPlaceholders) {
                    issue("\(path).source", "\"\(source)\": unknown placeholder \(bad) (known: {host}, {port}, {name}, {scope})")
                }
                spec = ReplicaMethodSpec(name: name, kind: .rsync(source: source))
                spec.keepData = true
                if let v = section["delta"], v != .null, !["checkpoint", "checksum"].contains(v.scalarText ?? "") {
                    issue("\(path).delta", "\(v.scalarText ?? "\(v)"): expected checkpoint (the default) or checksum")
                }
                if let v = section["max_clock_skew"], v != .null, (v.doubleValue ?? -1) < 0 {
                    issue("\(path).max_clock_skew", "\(v.scalarText ?? "\(v)"): expected seconds, 0 or more")
                }
                if let v = section["streams"], v != .null, !(1...16).contains(v.intValue ?? 0) {
                    issue("\(path).streams", "\(v.scalarText ?? "\(v)"): expected how many rsyncs copy side by side, 1 to 16")
                }
            case "archive" where section["command"] == nil:
                spec = ReplicaMethodSpec(name: name, kind: .archive(backup: string(section["backup"], "\(path).backup")))
                // It needs no running member: only the archive.
                spec.noLeader = true
            default:
                guard sections[name] != nil else {
                    issue("postgresql.create_replica_methods", "\"\(name)\": no section \(path) with a command (built in: basebackup, rsync, archive)")
                    continue
                }
                guard let text = string(section["command"], "\(path).command") else {
                    issue("\(path).command", "required (the program that builds the replica)")
                    continue
                }
                guard let words = UserOptions.shellWords(text) else {
                    issue("\(path).command", "\"\(text)\": an unbalanced quote or a trailing backslash")
                    continue
                }
                guard !words.isEmpty else { issue("\(path).command", "empty"); continue }
                spec = ReplicaMethodSpec(name: name, kind: .custom(command: words))
            }
            spec.section = section
            spec.noLeader = (section["no_leader"] ?? section["no_master"])?.isTruthy ?? spec.noLeader
            if case .archive = spec.kind {} else if spec.noLeader, case .custom = spec.kind {} else if spec.noLeader {
                issue("\(path).no_leader", "\(name) copies from a running member; only a custom method can work without one")
            }
            if let v = section["keep_data"], v != .null { spec.keepData = v.isTruthy }
            spec.noParams = section["no_params"]?.isTruthy ?? false
            if let v = section["retries"], v != .null {
                if let n = v.intValue, n >= 0 { spec.retries = n } else { issue("\(path).retries", "\(v.scalarText ?? "\(v)"): expected 0 or more") }
            }
            if let v = section["timeout"], v != .null {
                if let seconds = v.doubleValue, seconds > 0 { spec.timeout = seconds } else { issue("\(path).timeout", "\(v.scalarText ?? "\(v)"): expected seconds, more than 0") }
            }
            out.append(spec)
        }
        return out
    }
}

/// Load-time check that each custom method's program exists and may be run (a path, or a
/// name found on PATH), so a typo stops the agent at start rather than at the first clone.
public enum MethodCommandCheck {
    public static func issues(_ config: Config, path: String = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") -> [ConfigIssue] {
        var out: [ConfigIssue] = []
        for spec in config.postgresql.replicaMethods {
            guard case .custom(let words) = spec.kind, let program = words.first else { continue }
            if ExecutableSearch.find(program, path: path) == nil {
                out.append(ConfigIssue(path: "postgresql.\(spec.name).command",
                                       message: "\"\(program)\": \(program.contains("/") ? "no such executable file" : "not found on PATH")"))
            }
        }
        return out
    }
}
