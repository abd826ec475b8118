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
                                  "bootstrap", "postgresql", "tags", "archive"], prefix: "")

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
        let archive = readArchive(root["archive"])

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
        config.unimplementedKeys = unimplemented.sorted()
        return config
    }

    mutating func readLog(_ value: JSONValue?) -> LogSettings {
        var log = LogSettings()
        guard let m = map(value, "log") else { return log }
        unknownKeys(m, known: ["level", "type"], prefix: "log")
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
                               "cafile", "verify_client", "allowlist"], prefix: "restapi")
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

    // MARK: - DCS

    mutating func readDCS(_ root: [String: JSONValue]) -> DCSSettings? {
        if root["etcd"] != nil {
            issue("etcd", "Stork speaks the etcd v3 API only; rename the section to etcd3")
        }
        let given = ["etcd3", "local"].filter { root[$0] != nil }
        if given.count > 1 {
            issue(given.joined(separator: ", "), "only one DCS may be configured; keep etcd3 or local, not both")
            return nil
        }
        if given.isEmpty {
            if root["etcd"] == nil { issue("etcd3", "required (or local for the embedded single-host store)") }
            return nil
        }
        if given[0] == "local" {
            guard let m = map(root["local"], "local") else {
                if root["local"] == .null { issue("local.path", "required") }
                return nil
            }
            unknownKeys(m, known: ["path"], prefix: "local")
            guard let path = required(m["path"], "local.path") else { return nil }
            return .local(path: path)
        }
        guard let m = map(root["etcd3"], "etcd3") else {
            if root["etcd3"] == .null { issue("etcd3", "host, hosts or url required") }
            return nil
        }
        return readEtcd3(m).map(DCSSettings.etcd3)
    }

    mutating func readEtcd3(_ m: [String: JSONValue]) -> Etcd3Settings? {
        unknownKeys(m, known: ["host", "hosts", "port", "url", "protocol", "username", "password", "cacert", "cert", "key"],
                    prefix: "etcd3")
        let before = issues.count
        // Patroni: https when protocol is not given but TLS files are (cacert or cert).
        let tlsGiven = [m["cacert"], m["cert"]].contains { if case .string(let s)? = $0 { return !s.isEmpty } else { return false } }
        var proto = tlsGiven ? "https" : "http"
        if let p = string(m["protocol"], "etcd3.protocol") {
            if p == "http" || p == "https" { proto = p } else { issue("etcd3.protocol", "\"\(p)\": expected http or https") }
        }
        let defaultPort = int(m["port"], "etcd3.port") ?? 2379
        var endpoints: [String] = []
        if let url = string(m["url"], "etcd3.url") {
            if let u = URLComponents(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https",
               let host = u.host, !host.isEmpty {
                let port = u.port ?? 2379
                let h = host.hasPrefix("[") ? host : Self.urlHost(host)
                endpoints = ["\(scheme)://\(h):\(port)"]
            } else {
                issue("etcd3.url", "\"\(url)\": expected a URL like http://host:2379")
            }
        } else if let hostsValue = m["hosts"], hostsValue != .null {
            var items: [String] = []
            switch hostsValue {
            case .string(let s): items = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            case .array: items = stringList(hostsValue, "etcd3.hosts") ?? []
            default: issue("etcd3.hosts", "expected a list of host:port or a comma-separated string")
            }
            for item in items where !item.isEmpty {
                if let hp = hostPort(item, "etcd3.hosts", defaultPort: defaultPort) {
                    endpoints.append("\(proto)://\(Self.urlHost(hp.host)):\(hp.port)")
                }
            }
            if endpoints.isEmpty && issues.count == before { issue("etcd3.hosts", "expected at least one host:port") }
        } else if let host = string(m["host"], "etcd3.host") {
            if let hp = hostPort(host, "etcd3.host", defaultPort: defaultPort) {
                endpoints = ["\(proto)://\(Self.urlHost(hp.host)):\(hp.port)"]
            }
        } else if issues.count == before {
            issue("etcd3", "host, hosts or url required")
        }
        var etcd = Etcd3Settings(endpoints: endpoints)
        etcd.username = string(m["username"], "etcd3.username")
        etcd.password = string(m["password"], "etcd3.password")
        etcd.cacert = string(m["cacert"], "etcd3.cacert")
        etcd.cert = string(m["cert"], "etcd3.cert")
        etcd.key = string(m["key"], "etcd3.key")
        return issues.count == before ? etcd : nil
    }

    // MARK: - archive

    /// Stork's `archive` section. Only `file://` is implemented so far.
    mutating func readArchive(_ value: JSONValue?) -> ArchiveSettings? {
        guard let m = map(value, "archive") else { return nil }
        guard let url = required(m["url"], "archive.url") else { return nil }
        let s3Keys: Set<String> = ["endpoint", "region", "access_key_id", "secret_access_key", "session_token"]
        unknownKeys(m, known: Set(["url", "compression", "prefetch", "concurrency"]).union(s3Keys), prefix: "archive")
        var settings: ArchiveSettings
        if url.hasPrefix("file:///") {
            settings = ArchiveSettings(directory: String(url.dropFirst("file://".count)))
        } else if url.hasPrefix("s3://") {
            let rest = url.dropFirst("s3://".count)
            let bucket = String(rest.prefix { $0 != "/" })
            guard !bucket.isEmpty else { issue("archive.url", "\"\(url)\": no bucket (s3://bucket/prefix)"); return nil }
            let prefix = rest.dropFirst(bucket.count).split(separator: "/").joined(separator: "/")
            var s3 = ArchiveSettings.S3Location(bucket: bucket, prefix: prefix)
            s3.endpoint = string(m["endpoint"], "archive.endpoint")
            if let e = s3.endpoint, !(e.hasPrefix("https://") || e.hasPrefix("http://")) {
                issue("archive.endpoint", "\"\(e)\": expected https://host[:port]")
            }
            s3.region = string(m["region"], "archive.region")
            s3.accessKeyID = string(m["access_key_id"], "archive.access_key_id")
            s3.secretAccessKey = string(m["secret_access_key"], "archive.secret_access_key")
            s3.sessionToken = string(m["session_token"], "archive.session_token")
            settings = ArchiveSettings(location: .s3(s3))
        } else if url.hasPrefix("https://") {
            settings = ArchiveSettings(location: .https(url))
        } else {
            issue("archive.url", "\"\(url)\": expected file:///path, s3://bucket/prefix or https://host/path")
            return nil
        }
        if case .s3 = settings.location {} else {
            for key in s3Keys.sorted() where m[key] != nil { issue("archive.\(key)", "only for an s3:// archive") }
        }
        if let c = string(m["compression"], "archive.compression") {
            guard let compression = ArchiveSettings.Compression(rawValue: c) else {
                issue("archive.compression", "\"\(c)\": expected zstd (the default), lz4, gzip or none")
                return nil
            }
            settings.compression = compression
        }
        if let n = int(m["prefetch"], "archive.prefetch") {
            if n < 0 || n > 64 { issue("archive.prefetch", "\(n): expected 0 (off) to 64 segments") } else { settings.prefetch = n }
        }
        if let n = int(m["concurrency"], "archive.concurrency") {
            if n < 1 || n > 32 { issue("archive.concurrency", "\(n): expected 1 to 32") } else { settings.concurrency = n }
        }
        return settings
    }

    // MARK: - bootstrap

    mutating func readBootstrap(_ value: JSONValue?, archiveSection: JSONValue?) -> BootstrapSettings {
        var b = BootstrapSettings()
        guard let m = map(value, "bootstrap") else { return b }
        if let dcs = map(m["dcs"], "bootstrap.dcs") { b.dcs = readBootstrapDCS(dcs) }
        if let method = string(m["method"], "bootstrap.method"), !method.isEmpty { b.method = method }
        if let initdb = m["initdb"], initdb != .null {
            _ = UserOptions.process(initdb, refused: UserOptions.refusedInitdbOptions, path: "bootstrap.initdb", issues: &issues)
            b.initdb = initdb
        }
        b.pgHBA = stringList(m["pg_hba"], "bootstrap.pg_hba")
        if let users = map(m["users"], "bootstrap.users") {
            for name in users.keys.sorted() {
                let path = "bootstrap.users.\(name)"
                guard let u = map(users[name], path) else { b.users[name] = BootstrapUser(password: nil, options: []); continue }
                unknownKeys(u, known: ["password", "options"], prefix: path)
                let password = string(u["password"], "\(path).password")
                let options = stringList(u["options"], "\(path).options") ?? []
                b.users[name] = BootstrapUser(password: password, options: options)
            }
        }
        let postInit = string(m["post_init"], "bootstrap.post_init")
        let postBootstrap = string(m["post_bootstrap"], "bootstrap.post_bootstrap")
        b.postBootstrap = postBootstrap ?? postInit

        if let v = m["recovery_timeout"], v != .null {
            if let seconds = v.doubleValue, seconds > 0 { b.recoveryTimeout = seconds } else {
                issue("bootstrap.recovery_timeout", "\(v.scalarText ?? "\(v)"): expected seconds, more than 0")
            }
        }
        if let v = m["keep_failed_data_dirs"], v != .null {
            if let n = v.intValue, n >= 0 { b.keepFailedDataDirs = n } else {
                issue("bootstrap.keep_failed_data_dirs", "\(v.scalarText ?? "\(v)"): expected 0 or more")
            }
        }

        var known: Set<String> = ["dcs", "method", "initdb", "pg_hba", "users", "post_init", "post_bootstrap",
                                  "recovery_timeout", "keep_failed_data_dirs"]
        for (key, section) in m where !known.contains(key) {
            if key == b.method {
                if let s = map(section, "bootstrap.\(key)") { b.methodSections[key] = .object(s) }
                known.insert(key)
            } else if case .object(let s) = section, s["command"] != nil {
                b.methodSections[key] = section
                known.insert(key)
            }
        }
        unknownKeys(m, known: known, prefix: "bootstrap")
        if b.method != "initdb" { b.custom = readBootstrapMethod(b.method, b.methodSections[b.method], archiveSection: archiveSection) }
        return b
    }

    /// `bootstrap.archive` without a command: the source archive (the section's `url` and S3
    /// keys, else the `archive` section), its scope, a backup name, and at most one recovery
    /// target; `recovery_target_name` needs `backup` (Stork cannot tell when a restore point was made).
    mutating func readArchiveBootstrap(_ section: [String: JSONValue], archiveSection: JSONValue?) -> ArchiveBootstrapSource? {
        let path = "bootstrap.archive"
        let targetKeys = ["recovery_target_time", "recovery_target_lsn", "recovery_target_xid", "recovery_target_name", "recovery_target"]
        let recoveryKeys: Set<String> = ["recovery_target_timeline", "recovery_target_inclusive", "recovery_target_action"]
        let archiveKeys: Set<String> = ["url", "endpoint", "region", "access_key_id", "secret_access_key", "session_token"]
        unknownKeys(section, known: Set(targetKeys).union(recoveryKeys).union(archiveKeys).union(["scope", "backup"]), prefix: path)
        var archiveMap: [String: JSONValue] = [:]
        if case .object(let top)? = archiveSection, section["url"] == nil { archiveMap = top }
        for key in archiveKeys where section[key] != nil { archiveMap[key] = section[key] }
        guard !archiveMap.isEmpty else {
            issue("\(path).url", "required without an archive section (the archive to restore from)")
            return nil
        }
        let before = issues.count
        guard let settings = readArchive(.object(archiveMap)) else {
            // The same problems again under this section's name.
            for i in before..<issues.count where issues[i].path.hasPrefix("archive.") && section["url"] != nil {
                issues[i] = ConfigIssue(path: path + "." + issues[i].path.dropFirst("archive.".count), message: issues[i].message)
            }
            return nil
        }
        var source = ArchiveBootstrapSource(archive: settings)
        source.scope = string(section["scope"], "\(path).scope")
        source.backup = string(section["backup"], "\(path).backup")
        let given = targetKeys.filter { section[$0] != nil && section[$0] != .null }
        if given.count > 1 { issue(path, "\(given.joined(separator: " and ")): give one recovery target") }
        if let key = given.first, let value = string(section[key], "\(path).\(key)") {
            switch key {
            case "recovery_target_time": source.target = .time(value)
            case "recovery_target_lsn": source.target = .lsn(value)
            case "recovery_target_xid": source.target = .xid(value)
            case "recovery_target_name": source.target = .name(value)
            default:
                guard value == "immediate" else { issue("\(path).recovery_target", "\"\(value)\": expected immediate"); break }
                source.target = .immediate
            }
        }
        if case .name = source.target, source.backup == nil {
            issue("\(path).backup", "required with recovery_target_name: name the backup taken before the restore point (stork backup list)")
        }
        if let action = section["recovery_target_action"]?.scalarText, !["pause", "promote", "shutdown"].contains(action) {
            issue("\(path).recovery_target_action", "\"\(action)\": expected pause, promote or shutdown")
        }
        source.recoveryParameters = section.filter { (targetKeys.contains($0.key) || recoveryKeys.contains($0.key)) && $0.value != .null }
        return source
    }

    /// The custom bootstrap method `name`: a section with a `command` (Patroni falls back to
    /// initdb without one, which would make a new empty cluster where a copy was meant: an
    /// error here), `recovery_conf` a map with a known `recovery_target_action`.
    mutating func readBootstrapMethod(_ name: String, _ value: JSONValue?, archiveSection: JSONValue?) -> BootstrapMethodSpec? {
        let path = "bootstrap.\(name)"
        if name == "archive", value == nil || value?["command"] == nil {
            var section: [String: JSONValue] = [:]
            if case .object(let m)? = value { section = m }
            guard let source = readArchiveBootstrap(section, archiveSection: archiveSection) else { return nil }
            var spec = BootstrapMethodSpec(name: name, command: [])
            spec.archive = source
            spec.section = section
            return spec
        }
        guard case .object(let section)? = value else {
            issue("bootstrap.method", "\"\(name)\": no section \(path) with a command (or use initdb)")
            return nil
        }
        guard let text = string(section["command"], "\(path).command") else {
            issue("\(path).command", "required (the program that makes the new cluster's data directory)")
            return nil
        }
        guard let words = UserOptions.shellWords(text), !words.isEmpty else {
            issue("\(path).command", "\"\(text)\": empty, an unbalanced quote or a trailing backslash")
            return nil
        }
        var spec = BootstrapMethodSpec(name: name, command: words)
        spec.section = section
        spec.noParams = section["no_params"]?.isTruthy ?? false
        spec.keepExistingRecoveryConf = section["keep_existing_recovery_conf"]?.isTruthy ?? false
        if let conf = section["recovery_conf"], conf != .null {
            guard case .object(let m) = conf else {
                issue("\(path).recovery_conf", "expected a map of recovery parameters (restore_command, recovery_target_time, ...)")
                return spec
            }
            if let action = m["recovery_target_action"]?.scalarText, !["pause", "promote", "shutdown"].contains(action) {
                issue("\(path).recovery_conf.recovery_target_action", "\"\(action)\": expected pause, promote or shutdown")
            }
            spec.recoveryConf = m
        }
        return spec
    }

    /// Checks the timing values and adjusts them as Patroni's `_validate_and_adjust_timeouts` does:
    /// minimums loop_wait 1, retry_timeout 3, ttl 20; then `loop_wait + 2*retry_timeout <= ttl`,
    /// lowering loop_wait first and retry_timeout only when loop_wait is already 1.
    mutating func readBootstrapDCS(_ dcs: [String: JSONValue]) -> [String: JSONValue] {
        var out = dcs
        let ttlValue = int(dcs["ttl"], "bootstrap.dcs.ttl")
        let loopValue = int(dcs["loop_wait"], "bootstrap.dcs.loop_wait")
        let retryValue = int(dcs["retry_timeout"], "bootstrap.dcs.retry_timeout")
        for key in ["maximum_lag_on_failover", "maximum_lag_on_syncnode", "primary_start_timeout",
                    "primary_stop_timeout", "synchronous_node_count"] {
            _ = int(dcs[key], "bootstrap.dcs.\(key)")
        }
        if let standby = dcs["standby_cluster"], standby != .null, let sc = map(standby, "bootstrap.dcs.standby_cluster") {
            let path = "bootstrap.dcs.standby_cluster"
            _ = required(sc["host"], "\(path).host")
            _ = int(sc["port"], "\(path).port")
            _ = string(sc["primary_slot_name"], "\(path).primary_slot_name")
            _ = string(sc["restore_command"], "\(path).restore_command")
            if let delay = sc["recovery_min_apply_delay"], delay.scalarText == nil {
                issue("\(path).recovery_min_apply_delay", "expected a number of milliseconds or a time (\"5min\")")
            }
            standbyMethodNames = stringList(sc["create_replica_methods"], "\(path).create_replica_methods") ?? ["basebackup"]
        }
        if let pg = map(dcs["postgresql"], "bootstrap.dcs.postgresql") {
            _ = map(pg["parameters"], "bootstrap.dcs.postgresql.parameters")
            _ = stringList(pg["pg_hba"], "bootstrap.dcs.postgresql.pg_hba")
        }
        // Only adjust when all three read as integers (or are absent).
        let bad = (dcs["ttl"] != nil && ttlValue == nil) || (dcs["loop_wait"] != nil && loopValue == nil)
            || (dcs["retry_timeout"] != nil && retryValue == nil)
        if bad { return out }

        func atLeast(_ key: String, _ value: Int, _ minimum: Int) -> Int {
            if value < minimum {
                warnings.append("bootstrap.dcs.\(key): \(value) is below the minimum \(minimum); using \(minimum)")
                out[key] = .int(minimum)
                return minimum
            }
            return value
        }
        let loopWait = atLeast("loop_wait", loopValue ?? 10, 1)
        let retryTimeout = atLeast("retry_timeout", retryValue ?? 10, 3)
        let ttl = atLeast("ttl", ttlValue ?? 30, 20)
        if 1 + 2 * retryTimeout > ttl {
            let newRetry = (ttl - 1) / 2
            out["loop_wait"] = .int(1)
            out["retry_timeout"] = .int(newRetry)
            warnings.append("bootstrap.dcs: loop_wait + 2*retry_timeout must not exceed ttl (\(ttl)); "
                + "loop_wait adjusted from \(loopWait) to 1 and retry_timeout from \(retryTimeout) to \(newRetry)")
        } else if loopWait + 2 * retryTimeout > ttl {
            let newLoop = ttl - 2 * retryTimeout
            out["loop_wait"] = .int(newLoop)
            warnings.append("bootstrap.dcs: loop_wait + 2*retry_timeout must not exceed ttl (\(ttl), retry_timeout \(retryTimeout)); "
                + "loop_wait adjusted from \(loopWait) to \(newLoop)")
        }
        return out
    }

    // MARK: - postgresql

    mutating func readPostgres(_ value: JSONValue?) -> PostgresSettings? {
        let before = issues.count
        let m = map(value, "postgresql") ?? [:]
        if value != nil && value != .null && issues.count > before { return nil }

        var listen = ""
        var listenHosts: [String] = []
        if let l = required(m["listen"], "postgresql.listen") {
            if let colon = l.lastIndex(of: ":") {
                let hosts = l[..<colon].split(separator: ",", omittingEmptySubsequences: false)
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                let portText = l[l.index(after: colon)...]
                if let p = Int(portText) {
                    if !(1...65535).contains(p) { issue("postgresql.listen", "\"\(l)\": port must be between 1 and 65535") }
                    else if hosts.count > 1 && hosts.contains(where: { $0.isEmpty || $0 == "*" }) {
                        issue("postgresql.listen", "\"\(l)\": expected host[,host...]:port")
                    } else {
                        listen = l
                        listenHosts = hosts
                    }
                } else {
                    issue("postgresql.listen", portText.isEmpty ? "\"\(l)\": expected host[,host...]:port" : "\"\(l)\": port is not a number")
                }
            } else {
                issue("postgresql.listen", "\"\(l)\": expected host[,host...]:port")
            }
        }
        var connect = ""
        if let c = string(m["connect_address"], "postgresql.connect_address"), !c.isEmpty {
            if hostPort(c, "postgresql.connect_address") != nil { connect = c }
        } else if !listen.isEmpty {
            if listenHosts.count == 1 && !Self.wildcard(listenHosts[0]) {
                connect = listen
            } else {
                issue("postgresql.connect_address", "required when postgresql.listen (\"\(listen)\") has no single specific host")
            }
        }
        let dataDir = required(m["data_dir"], "postgresql.data_dir")
        let binDir = string(m["bin_dir"], "postgresql.bin_dir") ?? ""
        var pgpass = string(m["pgpass"], "postgresql.pgpass") ?? ""
        if pgpass.isEmpty {
            // Patroni: os.path.join(os.path.expanduser('~'), 'pgpass')
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            pgpass = (home as NSString).appendingPathComponent("pgpass")
        } else if !pgpass.hasPrefix("/") {
            pgpass = (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(pgpass)
        }

        let auth = map(m["authentication"], "postgresql.authentication") ?? [:]
        unknownKeys(auth, known: ["superuser", "replication", "rewind"], prefix: "postgresql.authentication")
        let superuser = readUser(auth["superuser"], "postgresql.authentication.superuser", required: true)
        let replication = readUser(auth["replication"], "postgresql.authentication.replication", required: true)
        let rewind = readUser(auth["rewind"], "postgresql.authentication.rewind", required: false)

        let parameters = map(m["parameters"], "postgresql.parameters") ?? [:]
        let pgHBA = stringList(m["pg_hba"], "postgresql.pg_hba")
        var methods: [String] = []
        switch m["create_replica_methods"] {
        case nil, .null?: break
        case .string(let s)?:
            methods = s.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
        case let v?:
            methods = stringList(v, "postgresql.create_replica_methods") ?? []
        }
        var basebackup: JSONValue?
        if let bb = m["basebackup"], bb != .null {
            _ = UserOptions.process(ReplicaMethodSpec.pgBasebackupOptions(bb) ?? bb, refused: UserOptions.refusedBasebackupOptions, path: "postgresql.basebackup", issues: &issues)
            basebackup = bb
        }
        let timeout = int(m["pg_ctl_timeout"], "postgresql.pg_ctl_timeout")
        let useRewind = m["use_pg_rewind"].map(\.isTruthy)
        if let timeout, timeout < 0 { issue("postgresql.pg_ctl_timeout", "\(timeout): must not be negative") }

        var known: Set<String> = ["listen", "connect_address", "data_dir", "bin_dir", "pgpass", "authentication",
                                  "parameters", "pg_hba", "create_replica_methods", "basebackup", "pg_ctl_timeout", "use_pg_rewind"]
        var sections: [String: JSONValue] = [:]
        for (key, section) in m where !known.contains(key) {
            if methods.contains(key) || standbyMethodNames?.contains(key) == true {
                if let s = map(section, "postgresql.\(key)") { sections[key] = .object(s) }
                known.insert(key)
            } else if case .object(let s) = section, s["command"] != nil {
                sections[key] = section
                known.insert(key)
            }
        }
        unknownKeys(m, known: known, prefix: "postgresql")
        let chain = readReplicaMethods(methods, sections: sections, basebackup: basebackup)
        let standbyChain = standbyMethodNames.map { readReplicaMethods($0, sections: sections, basebackup: basebackup) }

        guard issues.count == before, let dataDir, let superuser, let replication else { return nil }
        var pg = PostgresSettings(listen: listen, connectAddress: connect, dataDir: dataDir, pgpass: pgpass,
                                  superuser: superuser, replication: replication)
        pg.binDir = binDir
        pg.rewind = rewind
        pg.parameters = parameters
        pg.pgHBA = pgHBA
        pg.createReplicaMethods = methods
        pg.basebackup = basebackup
        pg.methodSections = sections
        pg.replicaMethods = chain
        pg.standbyReplicaMethods = standbyChain
        if let timeout { pg.pgCtlTimeout = timeout }
        if let useRewind { pg.useRewind = useRewind }
        return pg
    }

    mutating func readUser(_ value: JSONValue?, _ path: String, required isRequired: Bool) -> PostgresUser? {
        guard let m = map(value, path) else {
            if isRequired && (value == nil || value == .null) { issue("\(path).username", "required") }
            return nil
        }
        unknownKeys(m, known: Set(ConfigLoader.authenticationKeys), prefix: path)
        guard let username = required(m["username"], "\(path).username") else { return nil }
        var user = PostgresUser(username: username, password: string(m["password"], "\(path).password"))
        for key in ConfigLoader.authenticationKeys where key != "username" && key != "password" {
            if let v = string(m[key], "\(path).\(key)") { user.sslOptions[key] = v }
        }
        return user
    }
}
