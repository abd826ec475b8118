import Foundation

/// Reads a merged configuration tree into `Config`, collecting every issue with its key path,
/// the adjustments made (warnings) and the keys Stork does not implement.
struct ConfigReader {
    let environment: [String: String]
    var issues: [ConfigIssue] = []
    var warnings: [String] = []
    var unimplemented: [String] = []
    /// `bootstrap.dcs.standby_cluster.create_replica_methods`, read with the postgresql sections.
    var standbyMethodNames: [String]?

    init(environment: [String: String]) { self.environment = environment }

    // MARK: - Helpers

    mutating func issue(_ path: String, _ message: String) {
        issues.append(ConfigIssue(path: path, message: message))
    }

    /// Lists the keys of `map` that are not in `known` as unimplemented (`prefix.key`).
    mutating func unknownKeys(_ map: [String: JSONValue], known: Set<String>, prefix: String) {
        for key in map.keys where !known.contains(key) {
            unimplemented.append(prefix.isEmpty ? key : "\(prefix).\(key)")
        }
    }

    /// A map, or nil when absent or null; an issue when present with another type.
    mutating func map(_ value: JSONValue?, _ path: String) -> [String: JSONValue]? {
        switch value {
        case nil, .null?: return nil
        case .object(let m)?: return m
        case .some: issue(path, "expected a map"); return nil
        }
    }

    /// A string; numbers are taken as their text. Nil when absent or null.
    mutating func string(_ value: JSONValue?, _ path: String) -> String? {
        switch value {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case .int?, .double?: return value!.scalarText
        case .bool(let b)?: issue(path, "\(b): expected a string (quote the value)"); return nil
        case .array?, .object?: issue(path, "expected a string, found \(ConfigLoader.kindName(value!))"); return nil
        }
    }

    /// A required non-empty string.
    mutating func required(_ value: JSONValue?, _ path: String) -> String? {
        guard let s = string(value, path) else {
            if value == nil || value == .null { issue(path, "required") }
            return nil
        }
        if s.isEmpty { issue(path, "required"); return nil }
        return s
    }

    mutating func int(_ value: JSONValue?, _ path: String) -> Int? {
        guard let value, value != .null else { return nil }
        if let i = value.intValue { return i }
        issue(path, "\(quoted(value)): expected an integer")
        return nil
    }

    mutating func stringList(_ value: JSONValue?, _ path: String) -> [String]? {
        switch value {
        case nil, .null?: return nil
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                switch item {
                case .string(let s): out.append(s)
                case .int, .double: out.append(item.scalarText!)
                default: issue(path, "expected a list of strings"); return nil
                }
            }
            return out
        case .some: issue(path, "expected a list of strings"); return nil
        }
    }

    func quoted(_ value: JSONValue) -> String {
        if case .string(let s) = value { return "\"\(s)\"" }
        return value.scalarText.map { "\"\($0)\"" } ?? value.jsonString()
    }

    // MARK: - Addresses

    /// `host:port` (IPv6 as `[addr]:port`). `defaultPort` allows a bare host; `allowEmptyHost`
    /// allows `:port` (listen on every address).
    mutating func hostPort(_ text: String, _ path: String, defaultPort: Int? = nil,
                           allowEmptyHost: Bool = false) -> (host: String, port: Int)? {
        let t = text.trimmingCharacters(in: .whitespaces)
        var host: Substring
        var portText: Substring?
        if t.hasPrefix("[") && !t.contains("]") {
            issue(path, "\"\(text)\": expected host:port")
            return nil
        } else if t.hasPrefix("["), let close = t.firstIndex(of: "]") {
            host = t[t.index(after: t.startIndex)..<close]
            let rest = t[t.index(after: close)...]
            if rest.isEmpty { portText = nil }
            else if rest.first == ":" { portText = rest.dropFirst() }
            else { issue(path, "\"\(text)\": expected host:port"); return nil }
        } else if let colon = t.lastIndex(of: ":") {
            host = t[..<colon]
            portText = t[t.index(after: colon)...]
        } else {
            host = t[...]
            portText = nil
        }
        let port: Int
        if let portText {
            guard let p = Int(portText) else {
                issue(path, portText.isEmpty ? "\"\(text)\": expected host:port" : "\"\(text)\": port is not a number")
                return nil
            }
            guard (1...65535).contains(p) else { issue(path, "\"\(text)\": port must be between 1 and 65535"); return nil }
            port = p
        } else if let defaultPort {
            port = defaultPort
        } else {
            issue(path, "\"\(text)\": expected host:port")
            return nil
        }
        if host.isEmpty && !allowEmptyHost { issue(path, "\"\(text)\": expected host:port"); return nil }
        return (String(host), port)
    }

    static func wildcard(_ host: String) -> Bool {
        ["", "*", "0.0.0.0", "::", "[::]"].contains(host)
    }

    static func urlHost(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    // MARK: - The whole configuration

    mutating func read(_ root: [String: JSONValue]) -> Config? {
        unknownKeys(root, known: ["scope", "namespace", "name", "log", "restapi", "ctl", "etcd3", "etcd", "local",
                                  "bootstrap", "postgresql", "tags", "archive", "watchdog"], prefix: "")

        let scope = required(root["scope"], "scope")
        let name = required(root["name"], "name")
        let namespace = string(root["namespace"], "namespace")
        let log = readLog(root["log"])
        let restapi = readRestAPI(root["restapi"])
        let ctl = readCtl(root["ctl"])
        let dcs = readDCS(root)
        let bootstrap = readBootstrap(root["bootstrap"], archiveSection: root["archive"])
        let postgresql = readPostgres(root["postgresql"])
        var tags: [String: JSONValue] = [:]
        if let t = map(root["tags"], "tags") { tags = t }
        // Patroni's topology tags that Stork does not act on yet (issue 19); other tags are the
        // operator's own and pass as they are.
        for key in ["replicatefrom", "nosync", "sync_priority", "nostream"] where tags[key]?.isSet == true {
            unimplemented.append("tags.\(key)")
        }
        // 1 is Patroni's default; 0 would keep the member from leading, as nofailover does.
        if let priority = tags["failover_priority"], priority.intValue != 1 { unimplemented.append("tags.failover_priority") }
        let archive = readArchive(root["archive"])
        let watchdog = readWatchdog(root["watchdog"])

        if archive == nil, let methods = postgresql?.replicaMethods, methods.contains(where: { if case .archive = $0.kind { true } else { false } }) {
            issue("postgresql.create_replica_methods", "\"archive\" restores from Stork's archive: add an archive section (url: file:///path or s3://bucket/prefix)")
        }
        guard issues.isEmpty, let scope, let name, let dcs, let postgresql else { return nil }
        var config = Config(scope: scope, name: name, dcs: dcs, postgresql: postgresql)
        if let namespace, !namespace.isEmpty { config.namespace = namespace }
        config.log = log
        config.restapi = restapi
        config.ctl = ctl
        config.bootstrap = bootstrap
        config.tags = tags
        config.archive = archive
        config.watchdog = watchdog
        config.unimplementedKeys = unimplemented.sorted()
        return config
    }

    mutating func readLog(_ value: JSONValue?) -> LogSettings {
        var log = LogSettings()
        guard let m = map(value, "log") else { return log }
        unknownKeys(m, known: ["level", "type", "dir", "file_size", "file_num"], prefix: "log")
        if let dir = string(m["dir"], "log.dir"), !dir.isEmpty { log.dir = dir }
        if let size = int(m["file_size"], "log.file_size") {
            if size > 0 { log.fileSize = size } else { issue("log.file_size", "\(size): must be a positive number of bytes") }
        }
        if let count = int(m["file_num"], "log.file_num") {
            if count >= 0 { log.fileNum = count } else { issue("log.file_num", "\(count): must not be negative") }
        }
        if let level = string(m["level"], "log.level") {
            switch level.uppercased() {
            case "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL": log.level = level.uppercased()
            case "WARN": log.level = "WARNING"
            case "FATAL": log.level = "CRITICAL"
            default: issue("log.level", "\"\(level)\": expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
            }
        }
        if let type = string(m["type"], "log.type") {
            if type == "plain" || type == "json" { log.type = type }
            else { issue("log.type", "\"\(type)\": expected plain or json") }
        }
        return log
    }

    mutating func readRestAPI(_ value: JSONValue?) -> RestAPISettings {
        var api = RestAPISettings()
        let m = map(value, "restapi") ?? [:]
        unknownKeys(m, known: ["listen", "connect_address", "authentication", "certfile", "keyfile", "keyfile_password",
                               "cafile", "verify_client", "allowlist", "request_queue_size"], prefix: "restapi")
        var listenHost: String?
        if let listen = required(m["listen"], "restapi.listen"),
           let hp = hostPort(listen, "restapi.listen", allowEmptyHost: true) {
            api.listen = listen
            listenHost = hp.host
        }
        if let connect = string(m["connect_address"], "restapi.connect_address"), !connect.isEmpty {
            if hostPort(connect, "restapi.connect_address") != nil { api.connectAddress = connect }
        } else if let listenHost {
            // Patroni falls back to `listen`; an address that binds everywhere cannot be connected to.
            if Self.wildcard(listenHost) {
                issue("restapi.connect_address", "required when restapi.listen (\"\(api.listen)\") has no specific host")
            } else {
                api.connectAddress = api.listen
            }
        }
        if let auth = map(m["authentication"], "restapi.authentication") {
            unknownKeys(auth, known: ["username", "password"], prefix: "restapi.authentication")
            api.username = string(auth["username"], "restapi.authentication.username")
            api.password = string(auth["password"], "restapi.authentication.password")
            // Half of the pair turns authentication off without a word (Patroni checks only a full one).
            if (api.username ?? "").isEmpty != (api.password ?? "").isEmpty {
                let given = (api.username ?? "").isEmpty ? "a password and no username" : "a username and no password"
                issue("restapi.authentication", "\(given): the REST API would change the cluster for anyone; set both username and password (or PATRONI_RESTAPI_USERNAME and PATRONI_RESTAPI_PASSWORD), or neither")
            }
        }
        api.certfile = string(m["certfile"], "restapi.certfile")
        api.keyfile = string(m["keyfile"], "restapi.keyfile")
        api.keyfilePassword = string(m["keyfile_password"], "restapi.keyfile_password")
        api.cafile = string(m["cafile"], "restapi.cafile")
        if let v = string(m["verify_client"], "restapi.verify_client") {
            if ["none", "optional", "required"].contains(v) { api.verifyClient = v }
            else { issue("restapi.verify_client", "\"\(v)\": expected none, optional or required") }
        }
        if api.verifyClient != "none" && !api.usesTLS {
            issue("restapi.verify_client", "\(api.verifyClient) needs HTTPS: set restapi.certfile (and restapi.cafile)")
        }
        if api.verifyClient != "none" && (api.cafile ?? "").isEmpty {
            issue("restapi.cafile", "required when restapi.verify_client is \(api.verifyClient): the CA that client certificates are checked against")
        }
        if let list = m["allowlist"], list != .null {
            if case .string(let text) = list, let items = ConfigLoader.parseList(text) {
                api.allowlist = items.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
            } else if case .array(let items) = list {
                for item in items {
                    if case .string(let s) = item, !s.isEmpty { api.allowlist.append(s) }
                    else { issue("restapi.allowlist", "\(item): expected an address, a network (a.b.c.d/n) or a host name") }
                }
            } else {
                issue("restapi.allowlist", "expected a list of addresses, networks or host names")
            }
            for entry in api.allowlist where entry.contains("/") && IPNetwork(entry) == nil {
                issue("restapi.allowlist", "\"\(entry)\": not a network (expected e.g. 10.0.0.0/8 or fd00::/8)")
            }
        }
        if let size = int(m["request_queue_size"], "restapi.request_queue_size") {
            if (0...4096).contains(size) { api.requestQueueSize = size }
            else { issue("restapi.request_queue_size", "\(size): expected 0 to 4096") }
        }
        return api
    }

    mutating func readCtl(_ value: JSONValue?) -> CtlSettings {
        var ctl = CtlSettings()
        guard let m = map(value, "ctl") else { return ctl }
        unknownKeys(m, known: ["insecure", "cacert", "certfile", "keyfile", "keyfile_password", "authentication"], prefix: "ctl")
        if let v = m["insecure"], v != .null {
            ctl.insecure = v.isTruthy
        }
        ctl.cacert = string(m["cacert"], "ctl.cacert")
        ctl.certfile = string(m["certfile"], "ctl.certfile")
        ctl.keyfile = string(m["keyfile"], "ctl.keyfile")
        ctl.keyfilePassword = string(m["keyfile_password"], "ctl.keyfile_password")
        if let auth = map(m["authentication"], "ctl.authentication") {
            unknownKeys(auth, known: ["username", "password"], prefix: "ctl.authentication")
            ctl.username = string(auth["username"], "ctl.authentication.username")
            ctl.password = string(auth["password"], "ctl.authentication.password")
        }
        return ctl
    }
}
