import Foundation
import Logging
import StorkConfig
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Starting, stopping, reloading and promoting the server, and looking at it: pg_ctl,
// postmaster.pid, the server log.
extension PostgresNode {
    /// `pg_ctl start -w -t timeout -l <log>`, without the agent's `PATRONI_*` variables; throws
    /// when the server does not start.
    public func start(timeout: Int) async throws {
        let log = serverLogPath
        logger.info("starting PostgreSQL", metadata: ["stork.data_dir": "\(settings.dataDir)", "stork.log": "\(log)"])
        var command = Command(binary("pg_ctl"), ["start", "-D", settings.dataDir, "-w", "-t", String(timeout), "-l", log])
        command.timeout = Double(timeout) + 30
        // Like Patroni, the server does not inherit the PATRONI_* variables (passwords among them).
        command.withoutInherited = ["PATRONI_", "PGSERVICEFILE"]
        command.environment["PGSERVICEFILE"] = replicationServiceFile
        // A postmaster.pid a crash left behind names a dead (or another) process: not ours.
        let stale = postmasterStatus()?.pid
        guard let result = try await runPgCtl(command, until: { [self] in
            guard let now = postmasterStatus(), now.pid != stale, kill(now.pid, 0) == 0 else { return false }
            return now.status == "ready" || now.status == "standby"
        }) else { return }
        guard result.succeeded else {
            var error = PostgresNode.failure("pg_ctl start", result)
            let tail = PostgresNode.tail(ofFile: log, lines: 30)
            if !tail.isEmpty { error.message += "\nserver log \(log):\n" + tail }
            throw error
        }
    }

    /// `pg_ctl stop -m mode -w -t timeout`; `fast` by default, escalating to `immediate` on timeout.
    public func stop(mode: String = "fast", timeout: Int) async throws {
        guard isRunning() else { return }
        var command = Command(binary("pg_ctl"), ["stop", "-D", settings.dataDir, "-m", mode, "-w", "-t", String(timeout)])
        command.timeout = Double(timeout) + 30
        guard var result = try await runPgCtl(command, until: { [self] in !isRunning() }) else { return }
        if result.succeeded || !isRunning() { return }
        if mode != "immediate" {
            logger.warning("PostgreSQL did not stop in time; stopping it in immediate mode", metadata: ["stork.data_dir": "\(settings.dataDir)"])
            command.arguments = ["stop", "-D", settings.dataDir, "-m", "immediate", "-w", "-t", String(timeout)]
            result = try await run(command)
            if result.succeeded || !isRunning() { return }
        }
        throw PostgresNode.failure("pg_ctl stop", result)
    }

    /// `pg_ctl reload`: the server rereads its configuration files.
    public func reload() async throws {
        var command = Command(binary("pg_ctl"), ["reload", "-D", settings.dataDir])
        command.timeout = 30
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_ctl reload", result) }
    }

    /// The first row of `sql` over a local superuser connection (empty when none).
    public func localQuery(_ sql: String, statementTimeout: Int = PostgresNode.agentStatementTimeout) async throws -> [String?] {
        let connection = try await localConnection(statementTimeout: statementTimeout)
        defer { Task { await connection.close() } }
        return try await connection.query(sql).first ?? []
    }

    /// `pg_ctl` with `-w`, while `postmaster.pid` is read every 10 ms beside it: pg_ctl looks
    /// only every 100 ms, and a replica's restart paid that twice. nil when `done` came first;
    /// pg_ctl then ends by itself at its next look. Otherwise pg_ctl's own result.
    func runPgCtl(_ command: Command, until done: @escaping @Sendable () -> Bool) async throws -> CommandResult? {
        final class Outcome: Sendable { let result = Mutex<Result<CommandResult, any Error>?>(nil) }
        let outcome = Outcome()
        let pgCtl = Task { [self] in
            let result: Result<CommandResult, any Error>
            do { result = .success(try await run(command)) } catch { result = .failure(error) }
            outcome.result.withLock { $0 = result }
        }
        while true {
            if let result = outcome.result.withLock({ $0 }) { return try result.get() }
            if done() { return nil }
            // Cancelled, the sleep would return at once: wait for pg_ctl instead.
            if Task.isCancelled { await pgCtl.value } else { try? await Task.sleep(for: .milliseconds(10)) }
        }
    }

    /// The postmaster's PID and status (`starting`, `ready`, `standby`, `stopping`) from
    /// `postmaster.pid`; nil without one.
    func postmasterStatus() -> (pid: Int32, status: String)? {
        guard let text = try? String(contentsOfFile: settings.dataDir + "/postmaster.pid", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let pid = lines.first.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }), pid > 0 else { return nil }
        // The status is the eighth line once the postmaster has written it.
        return (pid, lines.count > 7 ? lines[7].trimmingCharacters(in: .whitespaces) : "")
    }

    /// `postmaster.pid` names a live postmaster.
    public func isRunning() -> Bool {
        guard let pid = postmasterStatus()?.pid else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// Connects over the local socket or `listen` address as the superuser and reads
    /// recovery state, WAL positions, timeline, version and receiver status.
    public func serverState() async throws -> ServerState {
        let connection = try await localConnection()
        defer { Task { await connection.close() } }
        let rows = try await connection.query("""
            SELECT pg_catalog.pg_is_in_recovery(),
                   pg_catalog.current_setting('server_version_num'),
                   CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_lsn()::text END,
                   pg_catalog.pg_last_wal_receive_lsn()::text,
                   pg_catalog.pg_last_wal_replay_lsn()::text,
                   (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::text,
                   (SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver)::text,
                   (SELECT status FROM pg_catalog.pg_stat_wal_receiver),
                   CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_get_wal_replay_pause_state() <> 'not paused' END
            """)
        guard let row = rows.first, row.count == 9 else { throw PostgresError("server state query returned no row") }
        let inRecovery = row[0] == "t"
        let receive = row[3].flatMap(LSN.parse)
        let replay = row[4].flatMap(LSN.parse)
        let checkpointTimeline = row[5].flatMap { Int($0) } ?? 0
        let position = inRecovery ? max(receive ?? 0, replay ?? 0) : (row[2].flatMap(LSN.parse) ?? 0)
        let timeline = inRecovery ? (row[6].flatMap { Int($0) } ?? checkpointTimeline) : checkpointTimeline
        var state = ServerState(inRecovery: inRecovery, walPosition: position, replayLSN: replay, receiveLSN: receive,
                                timeline: timeline, serverVersion: row[1].flatMap { Int($0) } ?? 0,
                                streaming: row[7] == "streaming")
        state.replayPaused = row[8] == "t"
        return state
    }

    /// Runs `SELECT pg_promote()` / `pg_ctl promote`.
    public func promote() async throws {
        var command = Command(binary("pg_ctl"), ["promote", "-D", settings.dataDir, "-w", "-t", String(settings.pgCtlTimeout)])
        command.timeout = Double(settings.pgCtlTimeout) + 30
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_ctl promote", result) }
    }

    /// Where `pg_ctl start -l` writes the server's output: `<data_dir>.log` beside the data
    /// directory when the run-as user may write there, else `<data_dir>/postgresql.log`.
    public var serverLogPath: String {
        let dir = settings.dataDir.hasSuffix("/") ? String(settings.dataDir.dropLast()) : settings.dataDir
        let parent = (dir as NSString).deletingLastPathComponent
        let beside = dir + ".log"
        var st = stat()
        guard stat(parent, &st) == 0 else { return dir + "/postgresql.log" }
        let writable: Bool
        if let user = runAs {
            writable = st.st_uid == user.uid && (st.st_mode & S_IWUSR) != 0
        } else {
            writable = access(parent, W_OK) == 0
        }
        return writable ? beside : dir + "/postgresql.log"
    }
}
