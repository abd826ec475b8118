import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Bootstrap: a new cluster through its bootstrap method, a standby cluster's first member,
// and a failed bootstrap undone without losing its data directory.
extension Agent {
    /// The winner of the `initialize` race: the bootstrap method (initdb, a custom command, or
    /// a restore from the archive) and, for a copy, its recovery; start, roles, post_bootstrap,
    /// then the system identifier in `initialize`, `config`, and the leader key.
    func bootstrapNewCluster() async {
        let pg = config.postgresql
        let method = bootstrapMethod(config.bootstrap)
        let status = self.status
        let context = BootstrapContext(node: node, scope: config.scope, configFile: config.configFile) { progress in
            status.update { $0.replicaCreation = progress }
        }
        do {
            try node.markWork(.bootstrap)
            status.update { $0.state = method.state }
            switch try await method.run(context) {
            case .initialized:
                try await writeConfig(role: .primary)
                try await node.start(timeout: pg.pgCtlTimeout)
                status.update { $0.postmasterStartTime = Date() }
                try await node.createRoles(users: config.bootstrap.users)
            case .restored(let recoveryConf, let keepExisting):
                try await recoverRestoredCopy(recoveryConf: recoveryConf, keepExisting: keepExisting)
            }
            if let post = config.bootstrap.postBootstrap {
                logger.info("running post_bootstrap")
                try await node.runPostBootstrap(post)
            }
            try await recordNewCluster(role: "primary")
            logger.info("initialized a new cluster")
        } catch {
            await failBootstrap(error)
        }
    }

    /// A bootstrap's last steps: the system identifier in `initialize`, the cluster-wide
    /// configuration in `config`, and the leader key.
    func recordNewCluster(role: String) async throws {
        let sysid = try await node.controlData().systemIdentifier
        try await dcs.setInitialize(sysid)
        // From here the cluster exists: a crash leaves a data directory whose system
        // identifier is in `initialize`, which the agent starts and leads again.
        node.clearWork()
        _ = try await dcs.writeConfig(.object(config.bootstrap.dcs), ifVersion: nil)
        let taken = await takeLeaderKey()
        status.update { $0.state = "running"; $0.role = role }
        // Taken but not fenced, the key stays while the next cycle demotes the server.
        if !taken && !status.snapshot.holdsLeaderKey {
            throw AgentFatalError("could not take the leader key after the bootstrap: another member holds it, or the DCS refused (the error above says which)")
        }
    }

    /// The first member of a standby cluster: a copy of the remote primary through
    /// `standby_cluster.create_replica_methods`, started as its standby, then the system
    /// identifier in `initialize`, `config`, and the leader key (the standby leader).
    func bootstrapStandbyLeader(_ standby: StandbyCluster) async {
        let source = CloneSource(name: standby.upstreamLabel, connURL: standby.connURL, isLeader: true)
        let request = ReplicaBuildRequest(methods: config.postgresql.standbyReplicaMethods ?? [.basebackupDefault], source: source,
                                          conninfo: node.replicationConninfo(toConnURL: standby.connURL), scope: config.scope,
                                          expectedSystemIdentifier: nil, slot: nil)
        let builder = replicaBuilder()
        do {
            switch await builder.build(request) {
            case .built: break
            case .failed(let reason), .tryLater(_, let reason), .nothingCanRun(let reason), .refused(let reason):
                throw PostgresError("the copy of the remote primary \(standby) failed: \(reason)")
            }
            try node.markWork(.bootstrap)
            try await writeConfig(role: standbyLeaderRole())
            try await node.start(timeout: config.postgresql.pgCtlTimeout)
            followedLeader = .some(standby.upstreamLabel)
            status.update { $0.postmasterStartTime = Date() }
            try await recordNewCluster(role: "standby_leader")
            logger.info("initialized a new standby cluster: the standby leader follows the remote primary \(standby)")
        } catch {
            await failBootstrap(error)
        }
    }

    /// A copy a custom bootstrap (or the archive) left: Stork's configuration over it
    /// (recovery from `recoveryConf`, or the tool's own with `keepExisting`), local
    /// connections trusted while the restored cluster's passwords are unknown, the wait for
    /// the end of recovery, then the roles and the real `pg_hba.conf`.
    func recoverRestoredCopy(recoveryConf: [String: JSONValue]?, keepExisting: Bool) async throws {
        let pg = config.postgresql, status = self.status
        let parameters = effectiveParameters(config: config, dynamic: lastView.config)
        try node.prepareRestoredCopy(keepExistingRecovery: keepExisting,
                                     promoteTriggerFile: parameters["promote_trigger_file"]?.scalarText)
        let recovery: [String: JSONValue]? = keepExisting ? nil : (recoveryConf ?? [:])
        do { _ = try await node.controlData() } catch {
            throw PostgresError("the bootstrap command left no readable pg_control in \(pg.dataDir): \(error)")
        }
        let trust = ["local all all trust", "host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
        // An empty recovery_conf: no recovery.signal, the copy starts as it is (crash recovery
        // from its backup_label, if any).
        try await writeConfig(role: recoveryConf == nil && !keepExisting ? .primary : .bootstrapRecovery(recoveryConf: recovery),
                              hba: trust)
        status.update { $0.state = "starting after custom bootstrap" }
        do { try await node.start(timeout: pg.pgCtlTimeout) } catch where node.isRunning() {
            // Recovery may take longer than pg_ctl waits before the server accepts connections.
            logger.info("PostgreSQL is still recovering after \(pg.pgCtlTimeout) s; waiting for recovery to end")
        }
        status.update { $0.postmasterStartTime = Date() }
        do {
            defer { status.update { $0.recoveryProgress = nil } }
            try await node.waitForRecoveryEnd(target: RecoveryTarget(recovery ?? [:]), timeout: config.bootstrap.recoveryTimeout) { progress in
                status.update {
                    $0.recoveryProgress = progress
                    $0.state = progress.paused ? "recovery paused" : "recovering after custom bootstrap"
                }
            }
        }
        try await writeConfig(role: .primary, hba: trust)
        try await node.reload()
        try await node.createRoles(users: config.bootstrap.users)
        try await writeConfig(role: .primary)
        try await node.reload()
        logger.info("the roles are set; pg_hba.conf no longer trusts local connections")
    }

    /// Undo a failed bootstrap without losing anything: stop PostgreSQL, give `initialize`
    /// back (only this member's empty claim) so another member can try, move the data
    /// directory aside (or remove it, `keep_failed_data_dirs: 0`), exit non-zero.
    func failBootstrap(_ error: any Error) async {
        let pg = config.postgresql
        let reason = oneLine("\(error)", limit: 2000)
        logger.error(Task.isCancelled ? "bootstrap cancelled by shutdown: \(reason)" : "bootstrap failed: \(reason)")
        status.update { $0.state = "initdb failed" }
        await stopPostgresUncancelled(announce: false)
        // A pg_ctl start that timed out or was cancelled may leave a postmaster that shows
        // itself later: nothing is moved or removed under it.
        let running = await node.stopServersLeftBehind(within: 5)
        guard running.isEmpty else {
            fatal = AgentFatalError("the bootstrap failed (\(reason)) and PostgreSQL still runs on \(config.postgresql.dataDir) (PID \(running.map(String.init).joined(separator: ", "))): stop it; the data directory is left as it is")
            return
        }
        // Once the system identifier is in `initialize` (the marker goes then too), the
        // cluster exists: its data directory and key stay.
        let initialize = try? await dcs.clusterView().initialize
        guard node.workInProgress() == .bootstrap || initialize == "" else {
            fatal = AgentFatalError("failed to finish the bootstrap of the cluster: \(reason)")
            return
        }
        if initialize == "" {
            do { try await dcs.deleteInitialize() } catch { logger.error("could not remove the initialize key: \(error)") }
        }
        var kept = ""
        // A shutdown is no failure: what was restored (perhaps paused at its target for the
        // operator to look at) is moved aside and kept, whatever keep_failed_data_dirs says.
        let interrupted = Task.isCancelled
        if node.isRunning() {
            logger.error("PostgreSQL still runs in \(pg.dataDir): the data directory stays where it is; stop the server, then move or remove the directory")
        } else if interrupted {
            kept = moveDataDirectoryAside(pruning: false) ?? ""
            if !kept.isEmpty { logger.warning("the interrupted bootstrap's data directory is kept at \(kept), whatever bootstrap.keep_failed_data_dirs says: look at it, then remove it yourself") }
        } else if config.bootstrap.keepFailedDataDirs == 0 {
            do {
                try node.removeFailedBootstrap()
                logger.info("removed the failed bootstrap's data directory \(pg.dataDir) (bootstrap.keep_failed_data_dirs: 0)")
            } catch { logger.error("could not remove the failed bootstrap's data directory: \(error)") }
        } else {
            kept = moveDataDirectoryAside() ?? ""
        }
        node.clearWork()
        fatal = AgentFatalError("failed to bootstrap the cluster: \(reason)" + (kept.isEmpty ? "" : "; its data directory is kept at \(kept)"))
    }

    /// Renames a non-empty data directory (with PostgreSQL stopped) to `<data_dir>_<timestamp>`,
    /// its WAL and tablespace directories outside it too (their links follow), so that a new
    /// bootstrap finds them free; then removes the oldest such directories beyond
    /// `bootstrap.keep_failed_data_dirs` (unless not `pruning`: an interrupted bootstrap is no
    /// failed one). The new path, or nil when there was nothing to move or the rename failed
    /// (logged).
    func moveDataDirectoryAside(pruning: Bool = true) -> String? {
        let dataDir = config.postgresql.dataDir
        guard node.dataDirectoryState() != .empty else { return nil }
        let stamp = DateText.format(Date(), "yyyy-MM-dd'T'HHmmss", timeZone: .current)
        do {
            let target = try node.moveAside(suffix: "_" + stamp)
            logger.info("moved the data directory \(dataDir) aside to \(target)")
            for old in pruning ? Array(node.movedAsideDirectories().dropLast(config.bootstrap.keepFailedDataDirs)) : [] {
                try node.removeMovedAside(old)
                logger.info("removed \(old), an older failed bootstrap's data directory (bootstrap.keep_failed_data_dirs: \(config.bootstrap.keepFailedDataDirs))")
            }
            return target
        } catch {
            logger.error("could not move \(dataDir) aside: \(error)")
            return nil
        }
    }
}
