import Foundation
import Logging
import Synchronization
import StorkConfig
import StorkPostgres
import StorkProcess

// postgresql.callbacks, pre_promote and before_stop, called when and as Patroni calls them.

/// Runs callbacks in the background, one at a time: a newer one ends the one still running
/// (SIGTERM to its process group, SIGKILL 10 s later) and starts when it has ended; one that
/// has not started yet is skipped. `on_reload` has a queue of its own, as in Patroni, so that
/// a reload does not end a role change's callback. The loop never waits for a callback.
final class CallbackRunner: Sendable {
    private let running = Mutex<[Bool: Task<Void, Never>]>([:])
    private let unfinished = Mutex(0)

    func start(_ argv: [String], reload: Bool, node: PostgresNode, logger: Logger) {
        running.withLock { tasks in
            let previous = tasks[reload]
            previous?.cancel()
            unfinished.withLock { $0 += 1 }
            tasks[reload] = Task.detached {
                defer { self.unfinished.withLock { $0 -= 1 } }
                await previous?.value
                guard !Task.isCancelled else { return }
                let line = argv.joined(separator: " ")
                do {
                    let result = try await node.run(Command(argv[0], Array(argv.dropFirst())))
                    if !result.succeeded, !Task.isCancelled {
                        logger.warning("callback \(line) exited with \(result.exitStatus)")
                    }
                } catch {
                    logger.error("callback \(line) failed: \(error)")
                }
            }
        }
    }

    /// Waits up to `seconds` for the callbacks still queued or running (the agent's shutdown:
    /// its on_stop gets its chance to run before the process ends).
    func wait(seconds: Double) async {
        let deadline = Date().addingTimeInterval(seconds)
        while unfinished.withLock({ $0 }) > 0, Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}

extension Agent {
    /// Calls `postgresql.callbacks.<action>` with Patroni's arguments: ACTION ROLE SCOPE.
    func callback(_ action: String, role: String) {
        guard let command = config.postgresql.callbacks[action], let words = UserOptions.shellWords(command), !words.isEmpty else { return }
        logger.info("calling \(action) callback: \(command) \(action) \(role) \(config.scope)")
        callbacks.start(words + [action, role, config.scope], reload: action == "on_reload", node: node, logger: logger)
    }

    /// The server runs in `role` after a start (`restarted`: after a restart): on_role_change
    /// when the callbacks last named another role, else on_start or on_restart.
    func announceRunning(_ role: ServerRole, restarted: Bool) {
        let name: String
        switch role {
        case .primary: name = "primary"
        case .replica: name = remotePrimary(followedBy: role) != nil ? "standby_leader" : "replica"
        case .bootstrapRecovery: return
        }
        if let last = callbackRole, last != name {
            callback("on_role_change", role: name)
        } else {
            callback(restarted ? "on_restart" : "on_start", role: name)
        }
        callbackRole = name
    }

    /// A role change (a promotion: on_role_change; a switchover's stop: on_stop `demoted`).
    func announceRoleChange(_ name: String, action: String = "on_role_change") {
        callback(action, role: name)
        callbackRole = name
    }

    /// A stop that no start follows in the same step (a shutdown, a demotion, a switchover).
    func announceStopped() {
        callback("on_stop", role: callbackRole ?? status.snapshot.role)
    }

    /// Each cycle: a server found running that no callback announced yet (after a bootstrap, a
    /// clone, or an agent started beside a running server) gets on_start, as in Patroni.
    func announceRunningServerFound(_ local: LocalSnapshot) {
        guard callbackRole == nil, local.running, longTasks.running == nil,
              ["primary", "replica", "standby_leader"].contains(status.snapshot.role) else { return }
        callbackRole = status.snapshot.role
        callback("on_start", role: status.snapshot.role)
    }

    /// `postgresql.pre_promote`, waited for: whether the promotion may go on (exit status 0).
    func prePromoteAllows() async -> Bool {
        guard let command = config.postgresql.prePromote else { return true }
        return await runWaited("pre_promote", command) == true
    }

    /// `postgresql.before_stop`, waited for, before a running server is stopped.
    func runBeforeStop() async {
        guard node.isRunning(), let command = config.postgresql.beforeStop else { return }
        _ = await runWaited("before_stop", command)
    }

    /// Runs a script the agent waits for and logs how it ended, as Patroni does; whether it
    /// succeeded (nil when it could not run).
    private func runWaited(_ name: String, _ command: String) async -> Bool? {
        guard let words = UserOptions.shellWords(command), !words.isEmpty else { return nil }
        do {
            let result = try await node.run(Command(words[0], Array(words.dropFirst())))
            logger.info("\(name) script `\(command)` exited with \(result.exitStatus)")
            return result.succeeded
        } catch {
            logger.error("\(name) script `\(command)` could not run: \(error)")
            return nil
        }
    }

    /// Stops PostgreSQL after `before_stop`; `announce`: on_stop follows (no start comes next).
    func stopServer(mode: String = "fast", announce: Bool) async throws {
        await runBeforeStop()
        try await node.stop(mode: mode, timeout: config.postgresql.pgCtlTimeout)
        if announce { announceStopped() }
    }
}
