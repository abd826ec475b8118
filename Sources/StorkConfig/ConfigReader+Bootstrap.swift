// The bootstrap section: methods, the archive source, bootstrap.dcs.
import Foundation

extension ConfigReader {
    mutating func readBootstrap(_ value: JSONValue?, archiveSection: JSONValue?) -> BootstrapSettings {
        var b = BootstrapSettings()
        guard let m = map(value, "bootstrap") else { return b }
        if let dcs = map(m["dcs"], "bootstrap.dcs") {
            b.dcs = readBootstrapDCS(dcs)
            unimplemented += DynamicConfig.withoutEffect(dcs, prefix: "bootstrap.dcs.")
        }
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
        let postInit = command(m["post_init"], "bootstrap.post_init")
        let postBootstrap = command(m["post_bootstrap"], "bootstrap.post_bootstrap")
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
    mutating func readBootstrapDCS(_ dcs: [String: JSONValue], path dcsPath: String = "bootstrap.dcs") -> [String: JSONValue] {
        var out = dcs
        let ttlValue = int(dcs["ttl"], "\(dcsPath).ttl")
        let loopValue = int(dcs["loop_wait"], "\(dcsPath).loop_wait")
        let retryValue = int(dcs["retry_timeout"], "\(dcsPath).retry_timeout")
        for key in ["maximum_lag_on_failover", "maximum_lag_on_syncnode", "primary_start_timeout",
                    "primary_stop_timeout", "synchronous_node_count"] {
            _ = int(dcs[key], "\(dcsPath).\(key)")
        }
        if let standby = dcs["standby_cluster"], standby != .null, let sc = map(standby, "\(dcsPath).standby_cluster") {
            let path = "\(dcsPath).standby_cluster"
            _ = required(sc["host"], "\(path).host")
            _ = int(sc["port"], "\(path).port")
            _ = string(sc["primary_slot_name"], "\(path).primary_slot_name")
            _ = string(sc["restore_command"], "\(path).restore_command")
            if let delay = sc["recovery_min_apply_delay"], delay.scalarText == nil {
                issue("\(path).recovery_min_apply_delay", "expected a number of milliseconds or a time (\"5min\")")
            }
            standbyMethodNames = stringList(sc["create_replica_methods"], "\(path).create_replica_methods") ?? ["basebackup"]
        }
        if let pg = map(dcs["postgresql"], "\(dcsPath).postgresql") {
            _ = map(pg["parameters"], "\(dcsPath).postgresql.parameters")
            _ = stringList(pg["pg_hba"], "\(dcsPath).postgresql.pg_hba")
            _ = stringList(pg["pg_ident"], "\(dcsPath).postgresql.pg_ident")
        }
        // Only adjust when all three read as integers (or are absent).
        let bad = (dcs["ttl"] != nil && ttlValue == nil) || (dcs["loop_wait"] != nil && loopValue == nil)
            || (dcs["retry_timeout"] != nil && retryValue == nil)
        if bad { return out }

        let given = ClusterTiming(ttl: ttlValue ?? 30, loopWait: loopValue ?? 10, retryTimeout: retryValue ?? 10)
        let (timing, adjustments) = given.adjusted(source: dcsPath)
        warnings += adjustments
        if timing.ttl != given.ttl { out["ttl"] = .int(timing.ttl) }
        if timing.loopWait != given.loopWait { out["loop_wait"] = .int(timing.loopWait) }
        if timing.retryTimeout != given.retryTimeout { out["retry_timeout"] = .int(timing.retryTimeout) }
        return out
    }
}
