import Foundation
import Logging
import StorkConfig

// SIGHUP: the configuration file read again, as Patroni's `systemctl reload` does. Never an
// end of the agent: a file that no longer loads keeps the running configuration.
extension Agent {
    /// Takes a newly loaded configuration. What this process is built around (the cluster and
    /// member names, the DCS, the REST API, PostgreSQL's data directory, address, binaries,
    /// users, `pg_ctl_timeout` and `basebackup` options, `use_unix_socket`, `log.dir`) keeps its
    /// running value until the agent restarts, and the log says which of those changed; the
    /// rest (tags, `postgresql.parameters`, `pg_hba` and `pg_ident`, callbacks, the replica
    /// methods, bootstrap and archive settings) is used from the next cycle on (a running
    /// server's files rewritten and reloaded: `SettingsChange`), and `log.level` and `log.type`
    /// at once. Returns the changed keys.
    @discardableResult
    public func reload(_ new: Config) -> [String] {
        let old = config
        var kept: [String] = []
        var merged = new
        func keep<T: Equatable>(_ name: String, _ path: WritableKeyPath<Config, T>) {
            if new[keyPath: path] != old[keyPath: path] { kept.append(name) }
            merged[keyPath: path] = old[keyPath: path]
        }
        keep("scope", \.scope)
        keep("namespace", \.namespace)
        keep("name", \.name)
        keep("the DCS section", \.dcs)
        keep("restapi", \.restapi)
        keep("postgresql.listen", \.postgresql.listen)
        keep("postgresql.connect_address", \.postgresql.connectAddress)
        keep("postgresql.data_dir", \.postgresql.dataDir)
        keep("postgresql.bin_dir", \.postgresql.binDir)
        keep("postgresql.pgpass", \.postgresql.pgpass)
        keep("postgresql.authentication.superuser", \.postgresql.superuser)
        keep("postgresql.authentication.replication", \.postgresql.replication)
        keep("postgresql.authentication.rewind", \.postgresql.rewind)
        keep("log.dir", \.log.dir)
        keep("log.file_size", \.log.fileSize)
        keep("log.file_num", \.log.fileNum)
        keep("postgresql.use_unix_socket", \.postgresql.useUnixSocket)
        keep("postgresql.use_unix_socket_repl", \.postgresql.useUnixSocketRepl)
        // The PostgreSQL side reads these from its own settings, made once at start.
        keep("postgresql.pg_ctl_timeout", \.postgresql.pgCtlTimeout)
        keep("postgresql.basebackup", \.postgresql.basebackup)

        var taken: [String] = []
        func note<T: Equatable>(_ name: String, _ path: KeyPath<Config, T>) {
            if merged[keyPath: path] != old[keyPath: path] { taken.append(name) }
        }
        note("tags", \.tags)
        note("postgresql.parameters", \.postgresql.parameters)
        note("postgresql.pg_hba", \.postgresql.pgHBA)
        note("postgresql.create_replica_methods", \.postgresql.replicaMethods)
        note("postgresql.use_pg_rewind", \.postgresql.useRewind)
        note("postgresql.remove_data_directory_on_rewind_failure", \.postgresql.removeOnRewindFailure)
        note("postgresql.remove_data_directory_on_diverged_timelines", \.postgresql.removeOnDivergedTimelines)
        note("bootstrap", \.bootstrap)
        note("archive", \.archive)
        note("log.level", \.log.level)
        note("log.type", \.log.type)
        note("postgresql.pg_ident", \.postgresql.pgIdent)
        note("postgresql.callbacks", \.postgresql.callbacks)
        note("postgresql.pre_promote", \.postgresql.prePromote)
        note("postgresql.before_stop", \.postgresql.beforeStop)
        note("postgresql.proxy_address", \.postgresql.proxyAddress)
        note("ctl", \.ctl)
        note("watchdog", \.watchdog)
        if merged != old && taken.isEmpty { taken.append("other settings") }

        config = merged
        status.update { $0.tags = merged.tags }
        reloadAskedFor = true
        // Logging takes the new level and format at once (the file it writes to stays).
        if merged.log != old.log { StorkLogging.apply(level: merged.log.level, json: merged.log.type == "json") }
        applyWatchdogSettings(merged.watchdog, old: old.watchdog)
        let file = old.configFile ?? "the environment"
        if taken.isEmpty && kept.isEmpty {
            logger.info("reloaded the configuration from \(file): nothing changed")
        } else {
            if !taken.isEmpty {
                logger.info("reloaded the configuration from \(file): \(taken.joined(separator: ", ")) changed and take effect from the next cycle")
            }
            if !kept.isEmpty {
                logger.warning("reloaded the configuration from \(file): \(kept.joined(separator: ", ")) changed, and keep their running values until the agent restarts")
            }
        }
        wakeRequested = true
        return taken + kept
    }
}
