// The postgresql section and its users.
import Foundation

extension ConfigReader {
    /// `path` without repeated slashes, `.` components and a trailing slash (`/` stays `/`).
    static func normalizedPath(_ path: String) -> String {
        let parts = path.split(separator: "/").filter { $0 != "." }
        let joined = parts.joined(separator: "/")
        return path.hasPrefix("/") ? "/" + joined : (joined.isEmpty ? "." : joined)
    }

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
        // `/srv/pg/` and `/srv//pg` name `/srv/pg`: the staging directory, the work marker and
        // `.stork-old` are siblings made by appending to this path, never children.
        let dataDir = required(m["data_dir"], "postgresql.data_dir").map(Self.normalizedPath)
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
        let pgIdent = stringList(m["pg_ident"], "postgresql.pg_ident")
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
        let removeOnRewindFailure = m["remove_data_directory_on_rewind_failure"].map(\.isTruthy)
        let removeOnDivergedTimelines = m["remove_data_directory_on_diverged_timelines"].map(\.isTruthy)
        if let timeout, timeout < 0 { issue("postgresql.pg_ctl_timeout", "\(timeout): must not be negative") }
        var proxy: String?
        if let p = string(m["proxy_address"], "postgresql.proxy_address"), !p.isEmpty, hostPort(p, "postgresql.proxy_address") != nil { proxy = p }
        let callbacks = readCallbacks(m["callbacks"])
        let prePromote = command(m["pre_promote"], "postgresql.pre_promote")
        let beforeStop = command(m["before_stop"], "postgresql.before_stop")

        var known: Set<String> = ["listen", "connect_address", "data_dir", "bin_dir", "pgpass", "authentication",
                                  "parameters", "pg_hba", "pg_ident", "create_replica_methods", "basebackup", "pg_ctl_timeout", "use_pg_rewind",
                                  "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines",
                                  "callbacks", "pre_promote", "before_stop", "proxy_address", "use_unix_socket", "use_unix_socket_repl"]
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
        pg.pgIdent = pgIdent
        pg.createReplicaMethods = methods
        pg.basebackup = basebackup
        pg.methodSections = sections
        pg.replicaMethods = chain
        pg.standbyReplicaMethods = standbyChain
        if let timeout { pg.pgCtlTimeout = timeout }
        if let useRewind { pg.useRewind = useRewind }
        if let removeOnRewindFailure { pg.removeOnRewindFailure = removeOnRewindFailure }
        if let removeOnDivergedTimelines { pg.removeOnDivergedTimelines = removeOnDivergedTimelines }
        pg.callbacks = callbacks
        pg.proxyAddress = proxy
        pg.useUnixSocket = m["use_unix_socket"]?.isTruthy ?? false
        pg.useUnixSocketRepl = m["use_unix_socket_repl"]?.isTruthy ?? false
        pg.prePromote = prePromote
        pg.beforeStop = beforeStop
        return pg
    }

    /// `postgresql.callbacks`: a command for each of Patroni's actions; another key is listed
    /// as not implemented.
    mutating func readCallbacks(_ value: JSONValue?) -> [String: String] {
        guard let m = map(value, "postgresql.callbacks") else { return [:] }
        unknownKeys(m, known: Set(PostgresSettings.callbackActions), prefix: "postgresql.callbacks")
        var out: [String: String] = [:]
        for action in PostgresSettings.callbackActions {
            if let text = command(m[action], "postgresql.callbacks.\(action)") { out[action] = text }
        }
        return out
    }

    /// A command line run without a shell (split as a shell would split its words); nil when
    /// absent or empty.
    mutating func command(_ value: JSONValue?, _ path: String) -> String? {
        guard let text = string(value, path), !text.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        guard let words = UserOptions.shellWords(text), !words.isEmpty else {
            issue(path, "\"\(text)\": an unbalanced quote or a trailing backslash")
            return nil
        }
        return text
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
