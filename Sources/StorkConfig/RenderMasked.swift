import Foundation

extension Config {
    /// The text that replaces every password in `renderMasked()`.
    public static let passwordMask = "******"

    /// The effective configuration as YAML (what `stork check` prints): Patroni's key names,
    /// sections in a fixed order, map keys sorted, defaults filled in. Every password
    /// (superuser, replication, rewind, bootstrap users, restapi, ctl, etcd3, and any key named
    /// `password` or ending in `_password`/`password` inside kept-as-given maps) shows as `******`.
    public func renderMasked() -> String {
        var w = YAMLWriter()
        w.scalar("scope", .string(scope))
        w.scalar("namespace", .string(namespace))
        w.scalar("name", .string(name))

        w.section("log")
        w.scalar("level", .string(log.level), depth: 1)
        w.scalar("type", .string(log.type), depth: 1)
        if let dir = log.dir {
            w.scalar("dir", .string(dir), depth: 1)
            w.scalar("file_size", .int(log.fileSize), depth: 1)
            w.scalar("file_num", .int(log.fileNum), depth: 1)
        }

        w.section("restapi")
        w.scalar("listen", .string(restapi.listen), depth: 1)
        w.scalar("connect_address", .string(restapi.connectAddress), depth: 1)
        if restapi.username != nil || restapi.password != nil {
            w.section("authentication", depth: 1)
            w.optional("username", restapi.username, depth: 2)
            w.password(restapi.password, depth: 2)
        }
        w.optional("certfile", restapi.certfile, depth: 1)
        w.optional("keyfile", restapi.keyfile, depth: 1)
        if restapi.keyfilePassword != nil { w.scalar("keyfile_password", .string(Config.passwordMask), depth: 1) }
        w.optional("cafile", restapi.cafile, depth: 1)
        w.scalar("verify_client", .string(restapi.verifyClient), depth: 1)
        if !restapi.allowlist.isEmpty { w.value("allowlist", .array(restapi.allowlist.map(JSONValue.string)), depth: 1) }
        if restapi.requestQueueSize != RestAPISettings().requestQueueSize {
            w.scalar("request_queue_size", .int(restapi.requestQueueSize), depth: 1)
        }

        if ctl != CtlSettings() {
            w.section("ctl")
            if ctl.insecure { w.scalar("insecure", .bool(true), depth: 1) }
            w.optional("cacert", ctl.cacert, depth: 1)
            w.optional("certfile", ctl.certfile, depth: 1)
            w.optional("keyfile", ctl.keyfile, depth: 1)
            if ctl.keyfilePassword != nil { w.scalar("keyfile_password", .string(Config.passwordMask), depth: 1) }
            if ctl.username != nil || ctl.password != nil {
                w.section("authentication", depth: 1)
                w.optional("username", ctl.username, depth: 2)
                w.password(ctl.password, depth: 2)
            }
        }

        switch dcs {
        case .etcd3(let etcd):
            w.section("etcd3")
            w.value("hosts", .array(etcd.endpoints.map(JSONValue.string)), depth: 1)
            w.optional("username", etcd.username, depth: 1)
            w.password(etcd.password, depth: 1)
            w.optional("cacert", etcd.cacert, depth: 1)
            w.optional("cert", etcd.cert, depth: 1)
            w.optional("key", etcd.key, depth: 1)
        case .local(let path):
            w.section("local")
            w.scalar("path", .string(path), depth: 1)
        }

        w.section("bootstrap")
        w.value("dcs", Self.masked(.object(bootstrap.dcs)), depth: 1)
        w.lines.append("  # in effect: ttl \(bootstrap.ttl), loop_wait \(bootstrap.loopWait), retry_timeout \(bootstrap.retryTimeout)")
        w.scalar("method", .string(bootstrap.method), depth: 1)
        if let initdb = bootstrap.initdb { w.value("initdb", Self.masked(initdb), depth: 1) }
        if let hba = bootstrap.pgHBA { w.value("pg_hba", .array(hba.map(JSONValue.string)), depth: 1) }
        if !bootstrap.users.isEmpty {
            w.section("users", depth: 1)
            for name in bootstrap.users.keys.sorted() {
                let user = bootstrap.users[name]!
                w.section(name, depth: 2)
                w.password(user.password, depth: 3)
                w.value("options", .array(user.options.map(JSONValue.string)), depth: 3)
            }
        }
        w.optional("post_bootstrap", bootstrap.postBootstrap, depth: 1)
        for name in bootstrap.methodSections.keys.sorted() {
            w.value(name, Self.masked(bootstrap.methodSections[name]!), depth: 1)
        }

        let pg = postgresql
        w.section("postgresql")
        w.scalar("listen", .string(pg.listen), depth: 1)
        w.scalar("connect_address", .string(pg.connectAddress), depth: 1)
        w.scalar("data_dir", .string(pg.dataDir), depth: 1)
        w.scalar("bin_dir", .string(pg.binDir), depth: 1)
        w.scalar("pgpass", .string(pg.pgpass), depth: 1)
        w.scalar("pg_ctl_timeout", .int(pg.pgCtlTimeout), depth: 1)
        w.scalar("use_pg_rewind", .bool(pg.useRewind), depth: 1)
        w.scalar("remove_data_directory_on_rewind_failure", .bool(pg.removeOnRewindFailure), depth: 1)
        w.scalar("remove_data_directory_on_diverged_timelines", .bool(pg.removeOnDivergedTimelines), depth: 1)
        w.section("authentication", depth: 1)
        for (role, user) in [("superuser", pg.superuser), ("replication", pg.replication), ("rewind", pg.rewind)] {
            guard let user else { continue }
            w.section(role, depth: 2)
            w.scalar("username", .string(user.username), depth: 3)
            w.password(user.password, depth: 3)
            for key in user.sslOptions.keys.sorted() {
                let v = user.sslOptions[key]!
                w.scalar(key, .string(Self.isSecretKey(key, value: v) ? Self.passwordMask : v), depth: 3)
            }
        }
        w.value("parameters", Self.masked(.object(pg.parameters)), depth: 1)
        if let hba = pg.pgHBA { w.value("pg_hba", .array(hba.map(JSONValue.string)), depth: 1) }
        let methods = pg.createReplicaMethods.isEmpty ? ["basebackup"] : pg.createReplicaMethods
        w.value("create_replica_methods", .array(methods.map(JSONValue.string)), depth: 1)
        if let bb = pg.basebackup { w.value("basebackup", Self.masked(bb), depth: 1) }
        for name in pg.methodSections.keys.sorted() {
            w.value(name, Self.masked(pg.methodSections[name]!), depth: 1)
        }

        w.section("watchdog")
        w.scalar("mode", .string(watchdog.mode.rawValue), depth: 1)
        w.scalar("device", .string(watchdog.device), depth: 1)
        w.scalar("safety_margin", .int(watchdog.safetyMargin), depth: 1)
        if watchdog.driver != "default" { w.scalar("driver", .string(watchdog.driver), depth: 1) }
        w.scalar("self_fence", .bool(watchdog.selfFence), depth: 1)

        w.value("tags", Self.masked(.object(tags)), depth: 0)
        if !unimplementedKeys.isEmpty {
            w.lines.append("# accepted but not implemented by Stork yet: \(unimplementedKeys.joined(separator: ", "))")
        }
        return w.lines.joined(separator: "\n") + "\n"
    }

    /// Whether a key's value is a secret, by the key's look alone, so that keys nobody listed
    /// (a tool's `secret_access_key`, `session_token`) are masked too: `*password*`,
    /// `*secret*`, `*token*`, `*pass`, and `*_key` unless `value` is a file path.
    public static func isSecretKey(_ key: String, value: String? = nil) -> Bool {
        let k = key.lowercased()
        if ["password", "secret", "token"].contains(where: { k.contains($0) }) || k.hasSuffix("pass") { return true }
        guard k.hasSuffix("_key") else { return false }
        let path = value.map { $0.hasPrefix("/") || $0.hasPrefix("./") || $0.hasPrefix("../") || $0.hasPrefix("~/") } ?? false
        return !path
    }

    /// `value` with every secret-looking key's value replaced by the mask.
    static func masked(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let map):
            var out: [String: JSONValue] = [:]
            for (k, v) in map { out[k] = isSecretKey(k, value: v.scalarText) && v != .null ? .string(passwordMask) : masked(v) }
            return .object(out)
        case .array(let items):
            return .array(items.map(masked))
        default:
            return value
        }
    }
}

/// A small YAML emitter for `renderMasked`: block maps and lists, flow lists of scalars,
/// plain scalars where YAML would read them back unchanged, double quotes otherwise.
struct YAMLWriter {
    var lines: [String] = []

    func indent(_ depth: Int) -> String { String(repeating: "  ", count: depth) }

    mutating func section(_ key: String, depth: Int = 0) {
        lines.append("\(indent(depth))\(Self.key(key)):")
    }

    mutating func scalar(_ key: String, _ value: JSONValue, depth: Int = 0) {
        lines.append("\(indent(depth))\(Self.key(key)): \(Self.scalarText(value))")
    }

    mutating func optional(_ key: String, _ value: String?, depth: Int) {
        if let value { scalar(key, .string(value), depth: depth) }
    }

    mutating func password(_ value: String?, depth: Int) {
        if value != nil { scalar("password", .string(Config.passwordMask), depth: depth) }
    }

    mutating func value(_ key: String, _ value: JSONValue, depth: Int) {
        switch value {
        case .object(let map) where map.isEmpty:
            lines.append("\(indent(depth))\(Self.key(key)): {}")
        case .object(let map):
            section(key, depth: depth)
            for k in map.keys.sorted() { self.value(k, map[k]!, depth: depth + 1) }
        case .array(let items) where items.allSatisfy(Self.isScalar):
            lines.append("\(indent(depth))\(Self.key(key)): [\(items.map(Self.scalarText).joined(separator: ", "))]")
        case .array(let items):
            section(key, depth: depth)
            for item in items { listItem(item, depth: depth + 1) }
        default:
            scalar(key, value, depth: depth)
        }
    }

    mutating func listItem(_ item: JSONValue, depth: Int) {
        switch item {
        case .object(let map) where !map.isEmpty:
            let keys = map.keys.sorted()
            var first = true
            for k in keys {
                let start = lines.count
                value(k, map[k]!, depth: depth + 1)
                if first {
                    // Turn the first line of the item into "- key: ...".
                    let line = lines[start]
                    lines[start] = indent(depth) + "- " + line.dropFirst((depth + 1) * 2)
                    first = false
                }
            }
        case .array(let inner) where !inner.isEmpty && !inner.allSatisfy(Self.isScalar):
            lines.append("\(indent(depth))-")
            for i in inner { listItem(i, depth: depth + 1) }
        default:
            let text: String
            if case .array(let inner) = item { text = "[\(inner.map(Self.scalarText).joined(separator: ", "))]" }
            else if case .object = item { text = "{}" }
            else { text = Self.scalarText(item) }
            lines.append("\(indent(depth))- \(text)")
        }
    }

    static func isScalar(_ v: JSONValue) -> Bool {
        switch v {
        case .array, .object: return false
        default: return true
        }
    }

    static func key(_ k: String) -> String { plainOK(k) ? k : quote(k) }

    static func scalarText(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(d) : (d.isNaN ? ".nan" : (d > 0 ? ".inf" : "-.inf"))
        case .string(let s): return plainOK(s) ? s : quote(s)
        case .array, .object: return v.jsonString()
        }
    }

    /// Whether `s` can be written without quotes and read back as the same string: no control
    /// characters, quotes or backslashes, no flow indicators (lists are written in flow style),
    /// and a YAML 1.1 reader takes `key: s` as that string (not a boolean, number, null, comment...).
    static func plainOK(_ s: String) -> Bool {
        guard let first = s.first, let last = s.last, first != " ", last != " " else { return false }
        if s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) { return false }
        if s.contains(where: { "\"'\\[]{},".contains($0) }) { return false }
        guard let v = try? ConfigLoader.yamlValue("k: \(s)") else { return false }
        return v == .object(["k": .string(s)])
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value) }
                else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
