import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Building this member from another: the clone of an empty member and `POST /reinitialize`.
extension Agent {
    /// Builds this member through the replica-method chain from member `name` (nil: without
    /// one, `no_leader` methods only); on success starts it as a replica. Whether it was built.
    @discardableResult
    func buildReplica(from name: String?) async -> Bool {
        if let name, lastView.member(named: name)?.connURL == nil {
            logger.error("cannot clone from '\(name)': its member key has no conn_url")
            return false
        }
        let request = replicaBuildRequest(config: config, view: lastView, node: node, source: name)
        let source = request.source
        let builder = replicaBuilder()
        let started = Date()
        let outcome = await builder.build(request)
        switch outcome {
        case .built: recordReplicaBuild(built: true, started: started)
        case .failed, .tryLater: recordReplicaBuild(built: false, started: started)
        default: break  // nothing ran
        }
        let what = source.map { "from \($0)" } ?? "(without leader)"
        switch outcome {
        case .built:
            logger.info("bootstrapped \(what)")
            await startServer(role: replicaRole())
            return true
        case .failed(let reasons):
            waitBeforeNextCycle = true
            status.update { $0.state = "creating replica failed" }
            logger.error("failed to bootstrap \(what): every replica method failed (\(reasons)); the chain runs again on the next cycle")
        case .tryLater(let method, let reason):
            waitBeforeNextCycle = true
            status.update { $0.state = "creating replica failed" }
            logger.warning("failed to bootstrap \(what): \(method) asks to be tried again later (\(reason)); the chain runs again on the next cycle")
        case .refused(let reason):
            waitBeforeNextCycle = true
            status.update { $0.state = "creating replica failed" }
            logger.error("cannot bootstrap \(what): \(reason)")
        case .nothingCanRun(let reason):
            waitBeforeNextCycle = true
            status.update { $0.state = "stopped" }
            logger.info("cannot create a replica now: \(reason)")
        }
        return false
    }

    /// A builder whose progress reaches the status: the build in progress (`replica_creation`)
    /// and the tally's latest method and bytes, which outlive it.
    func replicaBuilder() -> ReplicaBuilder {
        let status = self.status
        status.update { $0.replicaBuilds.lastBytes = 0 }
        return ReplicaBuilder(node: node, logger: logger) { progress in
            status.update { s in
                s.replicaCreation = progress
                if let progress {
                    s.replicaBuilds.lastMethod = progress.method
                    // A report without bytes (a method starting, a check) keeps the count.
                    if let bytes = progress.bytesDone { s.replicaBuilds.lastBytes = bytes }
                }
            }
        }
    }

    /// A finished replica build in the tally `GET /metrics` shows.
    private func recordReplicaBuild(built: Bool, started: Date) {
        status.update { s in
            if built { s.replicaBuilds.succeeded += 1 } else { s.replicaBuilds.failed += 1 }
            s.replicaBuilds.lastSeconds = Date().timeIntervalSince(started)
        }
    }

    /// `POST /reinitialize`: nil when the rebuild has started, else why not (Patroni's texts).
    /// `force` cancels a long task that runs; `fromLeader` clones from the leader even when a
    /// member is tagged `clonefrom`.
    public func reinitialize(force: Bool, fromLeader: Bool) async -> String? {
        // Patroni's request waits for the cycle that runs (its executor's lock): a task of the
        // cycle that ends in moments, such as a rejoin tried again every cycle, is waited for
        // briefly before it is called in progress. The cluster is read after the wait: the
        // task may have made this member the leader meanwhile.
        for _ in 0..<250 where !force && longTasks.running != nil {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if let view = try? await dcs.clusterView() { lastView = view }
        guard let leader = lastView.leader else { return "Cluster has no leader, can not reinitialize" }
        if leader == config.name { return "I am the leader, can not reinitialize" }
        if let running = longTasks.running {
            guard force else { return "\(running) already in progress" }
            logger.info("reinitialize: cancelling \(running)")
            await longTasks.cancelAndWait()
        }
        let source = fromLeader ? lastView.leaderMember : cloneSource(me: config.name, cluster: lastView)
        guard let source, source.connURL != nil else { return "no member to clone from: the leader's member key has no conn_url" }
        let what = CloneSource.describe(source.name, isLeader: source.name == leader)
        if let running = startLongTask("reinitialize", state: "creating replica", { agent in
            await agent.rebuild(from: source.name, description: what)
        }) { return "\(running) already in progress" }
        logger.info("reinitialize requested: rebuilding this member from \(what)")
        return nil
    }

    /// Stops PostgreSQL and builds the member again through the chain. The old data directory
    /// stays in place until the new copy is checked and renamed over it, when the disk has room
    /// for both; otherwise (or on a mount point, built in place) it is removed first and the
    /// log says so, unless `removalRefusal` says why not: then nothing changes. A method that
    /// keeps data (rsync) re-syncs it in place.
    @discardableResult
    func rebuild(from name: String, description: String, removalRefusal: String? = nil) async -> Bool {
        // Before anything stops or goes: a source of another major could never replace it.
        if let url = lastView.member(named: name)?.connURL {
            do { try await node.checkSourceMajor(atConnURL: url, source: name) } catch {
                logger.error("reinitialize: \(error); nothing was changed")
                waitBeforeNextCycle = true
                return false
            }
        }
        // Immediate, as Patroni does: the directory is about to be replaced or re-synced, and
        // a shutdown checkpoint would only write what is thrown away. Kept, it recovers as after a crash.
        await stopPostgresUncancelled(mode: "immediate")
        // A start the reinitialize cancelled may leave a postmaster that shows itself later.
        guard !node.isRunning(), await node.stopServersLeftBehind(within: 5).isEmpty else {
            logger.error("reinitialize: PostgreSQL does not stop; nothing was changed")
            return false
        }
        status.update { $0.server = nil; $0.role = "uninitialized" }
        do {
            if node.workInProgress() != nil { _ = try await finishOrUndoIncompleteWork(view: lastView) }
            let dataDir = config.postgresql.dataDir
            let keepsData = config.postgresql.replicaMethods.first?.keepData ?? false
            if !keepsData && node.dataDirectoryState() != .empty {
                let size = PostgresNode.treeSize(dataDir), free = PostgresNode.freeBytes(near: dataDir)
                let inPlace = node.dataDirectoryStaysInPlace
                let removedFirst = inPlace ? "it is a mount point or a symbolic link, so the copy is built in its place"
                    : free < size + size / 10 ? "\(free >> 20) MiB free, the copy needs about \(size >> 20) MiB" : nil
                if let removedFirst, let removalRefusal {
                    logger.error("reinitialize: keeping the data directory \(dataDir) as it is: the rebuild would remove it before the new copy is complete (\(removedFirst)) and \(removalRefusal); turn it on, free space, or POST /reinitialize to rebuild anyway")
                    waitBeforeNextCycle = true
                    status.update { $0.state = "stopped" }
                    return false
                }
                if let removedFirst {
                    logger.warning("reinitialize: \(removedFirst): removing the old data directory \(dataDir) first")
                    if !inPlace { try node.wipeDataDirectory() }
                } else {
                    logger.info("reinitialize: the old data directory stays until the new copy is complete (\(size >> 20) MiB, \(free >> 20) MiB free)")
                }
            }
        } catch {
            logger.error("reinitialize: \(error)")
            status.update { $0.state = "stopped" }
            return false
        }
        if await buildReplica(from: name) {
            logger.info("reinitialize: rebuilt from \(description)")
            return true
        }
        if node.isHalfSynced {
            logger.warning("reinitialize did not complete; the data directory is kept, marked half re-synced (\(node.resyncMarker)): it is synced again on the next cycle, never started as it is")
        } else if node.dataDirectoryState() == .initialized {
            logger.warning("reinitialize did not complete; the old data directory is unchanged and starts again")
        }
        return false
    }
}
