import Foundation
import Yams

/// A configuration that loaded without issues, and what the loader adjusted on the way
/// (for example `loop_wait` lowered to fit `ttl`), to be logged once at start-up.
public struct LoadedConfig: Sendable, Equatable {
    public var config: Config
    /// Adjustments and notes, one line each, for the log (WARNING).
    public var warnings: [String]
    public init(config: Config, warnings: [String]) {
        self.config = config
        self.warnings = warnings
    }
}

/// Loads Patroni's YAML configuration the way Patroni 3.3 does (`patroni/config.py`):
///
/// 1. the file at `path` when it exists (a directory: every `*.yml`/`*.yaml` in it, in name order,
///    merged); otherwise the YAML text of `PATRONI_CONFIGURATION`; otherwise nothing but the
///    environment;
/// 2. then the `PATRONI_*` environment overrides, which win over the file
///    (`_build_environment_configuration`);
/// 3. then Patroni's defaults and validation: every problem is collected and thrown together as
///    one `ConfigError`, one line per problem naming its key path.
///
/// Keys that Patroni knows but Stork does not implement yet, and unknown keys, are accepted and
/// listed in `Config.unimplementedKeys`.
public enum ConfigLoader {
    /// Patroni's variable holding the whole configuration as YAML text.
    public static let configurationVariable = "PATRONI_CONFIGURATION"

    /// Loads, overrides, fills defaults and validates.
    /// - Parameters:
    ///   - path: the configuration file or directory; nil to use `PATRONI_CONFIGURATION` or the
    ///     environment alone.
    ///   - environment: the variables to read `PATRONI_*` from.
    /// - Throws: `ConfigError` with every issue found; a missing or unreadable file and a YAML
    ///   syntax error are reported alone (nothing else can be checked).
    ///   - checkFiles: check the TLS files the configuration names (`TLSFileCheck`); tests of the
    ///     key mapping alone turn it off.
    public static func load(path: String?,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            checkFiles: Bool = true) throws(ConfigError) -> LoadedConfig {
        let tree: [String: JSONValue]
        if let path, FileManager.default.fileExists(atPath: path) {
            tree = try readPath(path)
        } else if let text = environment[configurationVariable], !text.isEmpty {
            tree = try document(yaml: text, source: configurationVariable)
        } else if let path {
            throw ConfigError(path, "cannot read the configuration file: No such file or directory")
        } else {
            tree = [:]
        }
        var loaded = try resolve(tree, environment: environment, checkFiles: checkFiles)
        if let path, FileManager.default.fileExists(atPath: path) {
            loaded.config.configFile = URL(fileURLWithPath: path).standardizedFileURL.path
        }
        return loaded
    }

    /// Like `load`, from YAML text already in memory (`source` names it in messages).
    public static func parse(yaml: String, source: String = "<config>",
                             environment: [String: String] = [:], checkFiles: Bool = true) throws(ConfigError) -> LoadedConfig {
        try resolve(try document(yaml: yaml, source: source), environment: environment, checkFiles: checkFiles)
    }

    /// Applies the environment overrides to a parsed document, fills defaults and validates.
    /// The TLS files are checked only once everything else is valid.
    public static func resolve(_ tree: [String: JSONValue], environment: [String: String],
                               checkFiles: Bool = true) throws(ConfigError) -> LoadedConfig {
        let merged = merge(tree, environmentOverrides(environment))
        var reader = ConfigReader(environment: environment)
        let config = reader.read(merged)
        if !reader.issues.isEmpty { throw ConfigError(issues: reader.issues) }
        if checkFiles {
            let fileIssues = TLSFileCheck.issues(config!) + MethodCommandCheck.issues(config!)
            if !fileIssues.isEmpty { throw ConfigError(issues: fileIssues) }
        }
        return LoadedConfig(config: config!, warnings: reader.warnings)
    }

    // MARK: - Files and YAML

    static func readPath(_ path: String) throws(ConfigError) -> [String: JSONValue] {
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
        guard isDir.boolValue else { return try document(yaml: try readText(path), source: path) }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw ConfigError(path, "cannot read the configuration directory: \(posixReason(error))")
        }
        let files = names.filter { $0.hasSuffix(".yml") || $0.hasSuffix(".yaml") }.sorted()
        if files.isEmpty { throw ConfigError(path, "no .yml or .yaml files in the configuration directory") }
        var tree: [String: JSONValue] = [:]
        for name in files {
            let file = (path as NSString).appendingPathComponent(name)
            tree = merge(tree, try document(yaml: try readText(file), source: file))
        }
        return tree
    }

    static func readText(_ path: String) throws(ConfigError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw ConfigError(path, "cannot read the configuration file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw ConfigError(path, "cannot read the configuration file: \(String(cString: strerror(errno)))")
            }
            bytes.append(contentsOf: buffer[0..<n])
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigError(path, "cannot read the configuration file: not UTF-8 text")
        }
        return text
    }

    private static func posixReason(_ error: any Error) -> String {
        if let e = error as? CocoaError, let u = e.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(u.code)))
        }
        return "\(error)"
    }

    /// Parses one YAML document that must be a map (an empty document is an empty map).
    /// - Throws: `ConfigError` with one line: `SOURCE:LINE:COLUMN: YAML syntax error: <problem>`,
    ///   or `SOURCE: ...` when the document is not a map.
    public static func document(yaml: String, source: String) throws(ConfigError) -> [String: JSONValue] {
        let value: JSONValue?
        do {
            value = try yamlValue(yaml)
        } catch let error as YamlError {
            throw syntaxError(error, source: source)
        } catch {
            throw ConfigError(source, "YAML syntax error: \(error)")
        }
        switch value {
        case nil, .null?: return [:]
        case .object(let map)?: return map
        case let other?:
            throw ConfigError(source, "the configuration must be a YAML map of settings (key: value), but the document is \(kindName(other))")
        }
    }

    /// YAML text to a value, with YAML 1.1 scalars as PyYAML reads them (`on`/`yes` are true,
    /// `0755` is octal). Merge keys (`<<: *anchor`) are applied. Nil for an empty document.
    public static func yamlValue(_ yaml: String) throws -> JSONValue? {
        guard let node = try Yams.compose(yaml: yaml) else { return nil }
        return jsonValue(node)
    }

    static func jsonValue(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.rawValue) {
            case .null: return .null
            case .bool: return Bool.construct(from: scalar).map(JSONValue.bool) ?? .string(scalar.string)
            case .int: return Int.construct(from: scalar).map(JSONValue.int) ?? .string(scalar.string)
            case .float: return Double.construct(from: scalar).map(JSONValue.double) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .sequence(let seq):
            return .array(seq.map(jsonValue))
        case .mapping(let mapping):
            var out: [String: JSONValue] = [:]
            var merged: [[String: JSONValue]] = []
            for (key, value) in mapping {
                if case .scalar = key, key.tag.rawValue == Tag.Name.merge.rawValue {
                    switch jsonValue(value) {
                    case .object(let m): merged.append(m)
                    case .array(let items): for case .object(let m) in items { merged.append(m) }
                    default: break
                    }
                    continue
                }
                let name: String
                switch key {
                case .scalar(let k): name = k.string
                default: name = jsonValue(key).jsonString()
                }
                out[name] = jsonValue(value)
            }
            for m in merged { for (k, v) in m where out[k] == nil { out[k] = v } }
            return .object(out)
        case .alias:
            return .null
        }
    }

    static func syntaxError(_ error: YamlError, source: String) -> ConfigError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return ConfigError("\(source):\(mark.line):\(mark.column)", "YAML syntax error: \(problem)")
        case .reader(let problem, _, _, _):
            return ConfigError(source, "YAML syntax error: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            return ConfigError("\(source):\(context.mark.line):\(context.mark.column)", "YAML syntax error: duplicated key \(keys)")
        default:
            return ConfigError(source, "YAML syntax error: \(error)")
        }
    }

    static func kindName(_ v: JSONValue) -> String {
        switch v {
        case .null: return "empty"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "a map"
        }
    }

    /// Patroni's `patch_config`: maps merge key by key, anything else in `overlay` replaces.
    public static func merge(_ base: [String: JSONValue], _ overlay: [String: JSONValue]) -> [String: JSONValue] {
        var out = base
        for (k, v) in overlay {
            if case .object(let o)? = out[k], case .object(let n) = v {
                out[k] = .object(merge(o, n))
            } else {
                out[k] = v
            }
        }
        return out
    }

    // MARK: - Environment

    /// Suffixes that make `PATRONI_<SECTION>_<SUFFIX>` a DCS setting (Patroni's list).
    static let dcsSuffixes: Set<String> = [
        "HOST", "HOSTS", "PORT", "USE_PROXIES", "PROTOCOL", "SRV", "SRV_SUFFIX", "URL", "PROXY",
        "CACERT", "CERT", "KEY", "VERIFY", "TOKEN", "CHECKS", "DC", "CONSISTENCY",
        "REGISTER_SERVICE", "SERVICE_CHECK_INTERVAL", "SERVICE_CHECK_TLS_SERVER_NAME",
        "SERVICE_TAGS", "NAMESPACE", "CONTEXT", "USE_ENDPOINTS", "SCOPE_LABEL", "ROLE_LABEL",
        "POD_IP", "PORTS", "LABELS", "BYPASS_API_SERVICE", "RETRIABLE_HTTP_CODES", "KEY_PASSWORD",
        "USE_SSL", "SET_ACLS", "GROUP", "DATABASE", "LEADER_LABEL_VALUE", "FOLLOWER_LABEL_VALUE",
        "STANDBY_LEADER_LABEL_VALUE", "TMP_ROLE_LABEL", "AUTH_DATA",
    ]

    /// Connection keys of `postgresql.authentication.<user>` (Patroni's `_AUTH_ALLOWED_PARAMETERS`).
    public static let authenticationKeys = [
        "username", "password", "sslmode", "sslcert", "sslkey", "sslpassword", "sslrootcert",
        "sslcrl", "sslcrldir", "gssencmode", "channel_binding",
    ]

    /// The configuration that the `PATRONI_*` variables describe, following Patroni's
    /// `_build_environment_configuration`: a variable is used once (the first rule that reads it),
    /// empty values are ignored, and any `PATRONI_<NAME>_PASSWORD` left over becomes a
    /// `bootstrap.users` entry (with `PATRONI_<NAME>_OPTIONS` as its options).
    ///
    /// One difference: `PATRONI_ETCD3_USERNAME`/`_PASSWORD` (and `ETCD_`) always apply; Patroni
    /// reads them only when another `PATRONI_ETCD3_*` variable is set.
    public static func environmentOverrides(_ env: [String: String]) -> [String: JSONValue] {
        var root: [String: JSONValue] = [:]
        var used: Set<String> = []
        let prefix = "PATRONI_"

        func take(_ name: String) -> String? {
            let key = prefix + name
            used.insert(key)
            guard let v = env[key], !v.isEmpty else { return nil }
            return v
        }
        func set(_ path: [String], _ value: JSONValue) {
            root = setting(root, path[...], value)
        }

        for param in ["name", "namespace", "scope"] {
            if let v = take(param.uppercased()) { set([param], .string(v)) }
        }
        // Older names of the log variables, used when the new name is not set.
        var logOld: [String: String] = [:]
        for (new, old) in [("LEVEL", "LOGLEVEL"), ("FORMAT", "LOGFORMAT"), ("DATEFORMAT", "LOG_DATEFMT")] {
            if let v = take(old), (env[prefix + "LOG_" + new] ?? "").isEmpty { logOld[new] = v }
        }
        func section(_ name: String, _ params: [String]) {
            for p in params {
                let key = name.uppercased() + "_" + p.uppercased()
                if let v = take(key) ?? (name == "log" ? logOld[p.uppercased()] : nil) { set([name, p], .string(v)) }
            }
        }
        section("restapi", ["listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile", "ciphers",
                            "verify_client", "http_extra_headers", "https_extra_headers", "allowlist",
                            "allowlist_include_members", "request_queue_size"])
        section("ctl", ["insecure", "cacert", "certfile", "keyfile", "keyfile_password"])
        section("postgresql", ["listen", "connect_address", "proxy_address", "config_dir", "data_dir", "pgpass", "bin_dir"])
        section("log", ["type", "level", "traceback_level", "format", "dateformat", "static_fields", "max_queue_size",
                        "dir", "file_size", "file_num", "loggers"])
        section("raft", ["data_dir", "self_addr", "partner_addrs", "password", "bind_addr"])
        for binary in ["pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind"] {
            if let v = take("POSTGRESQL_BIN_" + binary.uppercased()) { set(["postgresql", "bin_name", binary], .string(v)) }
        }
        for name in ["ctl", "restapi"] {
            for p in ["username", "password"] {
                if let v = take(name.uppercased() + "_" + p.uppercased()) { set([name, "authentication", p], .string(v)) }
            }
        }
        for user in ["replication", "superuser", "rewind"] {
            for p in authenticationKeys {
                if let v = take(user.uppercased() + "_" + p.uppercased()) {
                    set(["postgresql", "authentication", user, p], .string(v))
                }
            }
        }
        for key in env.keys.sorted() where key.hasPrefix(prefix) && !used.contains(key) {
            let rest = key.dropFirst(prefix.count)
            guard let underscore = rest.firstIndex(of: "_") else { continue }
            let name = String(rest[..<underscore]), suffix = String(rest[rest.index(after: underscore)...])
            guard !name.isEmpty, dcsSuffixes.contains(suffix) else { continue }
            used.insert(key)
            guard let raw = env[key], !raw.isEmpty else { continue }
            var value: JSONValue = .string(raw)
            if name == "CITUS" {
                if suffix == "GROUP" { value = Int(raw).map(JSONValue.int) ?? .string(raw) }
                else if suffix != "DATABASE" { continue }
            } else if suffix == "PORT" {
                value = Int(raw).map(JSONValue.int) ?? .string(raw)
            } else if ["HOSTS", "PORTS", "CHECKS", "SERVICE_TAGS", "RETRIABLE_HTTP_CODES"].contains(suffix) {
                value = parseList(raw).map(JSONValue.array) ?? .string(raw)
            }
            set([name.lowercased(), suffix.lowercased()], value)
        }
        for dcs in ["etcd", "etcd3"] {
            for p in ["username", "password"] {
                if let v = take(dcs.uppercased() + "_" + p.uppercased()) { set([dcs, p], .string(v)) }
            }
        }
        // PATRONI_<name>_PASSWORD=<password>, PATRONI_<name>_OPTIONS=<option1,option2,...>
        for key in env.keys.sorted() where key.hasPrefix(prefix) && key.hasSuffix("_PASSWORD") && !used.contains(key) {
            let name = String(key.dropFirst(prefix.count).dropLast("_PASSWORD".count))
            guard !name.isEmpty else { continue }
            used.insert(key)
            guard let password = env[key], !password.isEmpty else { continue }
            var user: [String: JSONValue] = ["password": .string(password)]
            if let options = take(name + "_OPTIONS"), let list = parseList(options), !list.isEmpty {
                user["options"] = .array(list)
            }
            set(["bootstrap", "users", name], .object(user))
        }
        return root
    }

    /// Patroni's `_parse_list`: `a,b` and `[a, b]` and a YAML block list all give a list.
    static func parseList(_ text: String) -> [JSONValue]? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let yaml = trimmed.hasPrefix("-") || text.contains("[") ? text : "[\(text)]"
        guard case .array(let items)? = try? yamlValue(yaml) else { return nil }
        return items
    }

    private static func setting(_ map: [String: JSONValue], _ path: ArraySlice<String>, _ value: JSONValue) -> [String: JSONValue] {
        var out = map
        guard let first = path.first else { return out }
        if path.count == 1 {
            out[first] = value
        } else {
            var inner: [String: JSONValue] = [:]
            if case .object(let o)? = out[first] { inner = o }
            out[first] = .object(setting(inner, path.dropFirst(), value))
        }
        return out
    }
}
