import Foundation
import Logging
import StorkConfig
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What is at `postgresql.data_dir`.
public enum DataDirectoryState: Sendable, Equatable {
    /// Absent, or an empty directory: a new member.
    case empty
    /// Has `PG_VERSION` and `global/pg_control`.
    case initialized
    /// Not empty but not a data directory either (a half-copied clone, stray files):
    /// the agent never starts it; the reason says what is missing.
    case unusable(String)
}

/// The role a started server should have.
public enum ServerRole: Sendable, Equatable {
    case primary
    /// A standby following `primaryConninfo` (nil: no upstream known yet).
    case replica(primaryConninfo: String?)
    /// A custom bootstrap's restored copy recovering before it becomes the new cluster's
    /// primary: `recoveryConf` in postgresql.conf and `recovery.signal`; nil keeps the
    /// recovery settings and signal files the restore tool wrote (`keep_existing_recovery_conf`).
    case bootstrapRecovery(recoveryConf: [String: JSONValue]?)
}

/// The local PostgreSQL instance of one member: its data directory, its binaries, its
/// configuration files, and the server process.
public final class PostgresNode: Sendable {
    public let settings: PostgresSettings
    public let memberName: String
    /// When set (Stork runs as root), child processes run as this user.
    public let runAs: OSUser?
    public let logger: Logger

    public init(settings: PostgresSettings, memberName: String, runAs: OSUser? = nil, logger: Logger) {
        self.settings = settings
        self.memberName = memberName
        self.runAs = runAs
        self.logger = logger
    }

    /// Replication credentials for upstreams this node reads from (basebackup,
    /// `primary_conninfo`); every pgpass write keeps them beside the local superuser's.
    let upstreamPgpass = Mutex<[PgpassEntry]>([])
    /// Held while the pgpass file is written.
    let pgpassWriter = Mutex<Void>(())

    /// Full path of a PostgreSQL program (`initdb`, `pg_ctl`, ...): `bin_dir`, else
    /// `pg_config --bindir`, else the name itself (PATH).
    public func binary(_ name: String) -> String {
        if !settings.binDir.isEmpty { return (settings.binDir as NSString).appendingPathComponent(name) }
        if let dir = PostgresNode.pgConfigBindir { return (dir as NSString).appendingPathComponent(name) }
        return name
    }

    /// `pg_config --bindir`, asked once per process.
    static let pgConfigBindir: String? = ProcessRunner.captureSynchronously("pg_config", ["--bindir"])

    public func dataDirectoryState() -> DataDirectoryState {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: settings.dataDir, isDirectory: &isDirectory) else { return .empty }
        guard isDirectory.boolValue else { return .unusable("\(settings.dataDir) is not a directory") }
        guard let entries = try? fm.contentsOfDirectory(atPath: settings.dataDir) else {
            return .unusable("cannot list \(settings.dataDir)")
        }
        // Like Patroni: hidden files and lost+found (a mount point) do not make it a data directory.
        if entries.allSatisfy({ $0.hasPrefix(".") || $0 == "lost+found" }) { return .empty }
        let missing = ["PG_VERSION", "global/pg_control"].filter { !fm.fileExists(atPath: settings.dataDir + "/" + $0) }
        if missing.isEmpty { return .initialized }
        return .unusable("\(settings.dataDir) is not empty but has no \(missing.joined(separator: " and "))")
    }

    /// Runs `pg_controldata` on the data directory (or on `directory`, a staged copy).
    public func controlData(of directory: String? = nil) async throws -> ControlData {
        var command = Command(binary("pg_controldata"), [directory ?? settings.dataDir])
        // UTC: the times it prints are in the local zone (see ControlData.checkpointTime).
        command.environment = ["LANG": "C", "LC_ALL": "C", "TZ": "UTC"]
        command.timeout = 30
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_controldata", result) }
        return try PostgresNode.parseControlData(result.output)
    }

    /// `initdb` with `bootstrap.initdb` options (both Patroni forms; `pgdata`, `nosync`,
    /// `pwfile`, `sync-only`, `version` refused), `--username` = the superuser, and its
    /// password through a temporary 0600 file removed afterwards.
    public func initdb(options: JSONValue?) async throws {
        let userArguments: [String]
        do { userArguments = try UserOptions.initdbArguments(options) } catch {
            throw PostgresError("bootstrap.initdb: \(error)")
        }
        try ensureDataDirectory()
        var arguments = ["-D", settings.dataDir] + userArguments + ["--username=\(settings.superuser.username)"]
        var passwordFile: String?
        defer { if let passwordFile { unlink(passwordFile) } }
        if let password = settings.superuser.password {
            passwordFile = try writeTemporaryFile(prefix: "stork-pwfile", contents: password + "\n")
            arguments.append("--pwfile=\(passwordFile!)")
        }
        logger.debug("running initdb", metadata: ["stork.data_dir": "\(settings.dataDir)"])
        let result = try await run(Command(binary("initdb"), arguments))
        guard result.succeeded else { throw PostgresNode.failure("initdb", result) }
    }

    /// `pg_basebackup -D data_dir -X stream -c fast` from `conninfo` (no password in it: the
    /// replication password goes through the pgpass file), with `postgresql.basebackup`
    /// options in both forms (Patroni's refused options refused).
    ///
    /// With `slot`, pg_basebackup streams WAL through that physical replication slot and, with
    /// `createSlot`, creates it first: the slot stays after the backup, so the primary keeps the
    /// WAL the new replica needs until it streams (unless the user's options name a slot).
    public func basebackup(into directory: String? = nil, from conninfo: String, options: JSONValue?, slot: String? = nil,
                           createSlot: Bool = false, timeout: Double? = nil,
                           progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil) async throws {
        let staged = directory == stagingDirectory
        let target = directory ?? settings.dataDir
        rememberUpstream(conninfo: conninfo)
        try writePgpass()
        try ensureDirectory(target)
        let result = try await withCommandLineConninfo(conninfo) { dbname, environment in
            var arguments = try PostgresNode.basebackupArguments(
                target: target, dbname: dbname, options: options, slot: slot, createSlot: createSlot, staged: staged)
            if progress != nil, !arguments.contains(where: { $0 == "-P" || $0 == "--progress" }) { arguments.append("--progress") }
            var command = Command(binary("pg_basebackup"), arguments)
            if let progress {
                command.lineHandler = { line in
                    if let (done, total) = PostgresNode.basebackupProgress(line) { progress(done, total) }
                }
            }
            command.environment = environment.merging(["PGPASSFILE": settings.pgpass]) { _, new in new }
            command.timeout = timeout
            logger.debug("running pg_basebackup", metadata: ["stork.data_dir": "\(target)"])
            return try await run(command)
        }
        guard result.succeeded else { throw PostgresNode.failure("pg_basebackup", result) }
    }

    /// Bytes done and the estimated total from a `pg_basebackup --progress` line,
    /// `  51234/1079301 kB (4%), 0/1 tablespace` (a file name may follow with `--verbose`).
    public static func basebackupProgress(_ line: String) -> (done: Int, total: Int)? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, words[1] == "kB" else { return nil }
        let parts = words[0].split(separator: "/")
        guard parts.count == 2, let done = Int(parts[0]), let total = Int(parts[1]) else { return nil }
        return (done * 1024, total * 1024)
    }

    /// pg_basebackup's arguments: Stork's (`-X stream`, a fast checkpoint, the slot unless the
    /// user's options name one) and the user's `postgresql.basebackup` options.
    /// With `staged`, the directories outside the copy (`--waldir`, the new side of each
    /// `--tablespace-mapping`) get the staging suffix too, so that a copy built beside a data
    /// directory never writes into the directories that one uses.
    public static func basebackupArguments(target: String, dbname: String, options: JSONValue?, slot: String?,
                                           createSlot: Bool, staged: Bool = false) throws -> [String] {
        var userArguments: [String]
        do { userArguments = try UserOptions.basebackupArguments(options) } catch {
            throw PostgresError("postgresql.basebackup: \(error)")
        }
        if staged {
            userArguments = userArguments.map { arg in
                guard let (prefix, path) = outsideDirectory(in: arg) else { return arg }
                return prefix + path + PostgresNode.stagingSuffix
            }
        }
        if let slot, !userArguments.contains(where: { $0.hasPrefix("--slot") || $0 == "-S" }) {
            userArguments += ["--slot=\(slot)"] + (createSlot ? ["--create-slot"] : [])
        }
        return ["--pgdata=\(target)", "-X", "stream", "--checkpoint=fast", "--dbname=\(dbname)"] + userArguments
    }

    /// Writes the managed configuration: `postgresql.conf` (the original kept once as
    /// `postgresql.base.conf` and included), `pg_hba.conf` from `hba`, and for a replica
    /// `standby.signal` and `primary_conninfo`; for a primary removes `standby.signal`.
    public func writeConfiguration(parameters: [String: JSONValue], hba: [String], role: ServerRole) throws {
        let fm = FileManager.default
        let conf = settings.dataDir + "/postgresql.conf"
        let base = settings.dataDir + "/postgresql.base.conf"
        if !fm.fileExists(atPath: base) {
            if fm.fileExists(atPath: conf) {
                guard rename(conf, base) == 0 else { throw PostgresError("cannot rename \(conf) to \(base): \(String(cString: strerror(errno)))") }
                chmod(base, 0o600)
                if let user = runAs { chown(base, user.uid, user.gid) }
            } else {
                try writeOwnedFile(base, contents: "")
            }
        }
        var conninfo: String?
        if case .replica(let upstream) = role, let upstream {
            // postgresql.conf is copied by every base backup and shown by pg_settings: the
            // passphrase of an encrypted replication key goes to a 0600 service file instead,
            // which the server finds through PGSERVICEFILE (set by `start`).
            let split = try ConnInfo.movingSecrets(upstream, toService: "stork-replication")
            if let section = split.serviceFile { try writeOwnedFile(replicationServiceFile, contents: section) }
            conninfo = split.conninfo + " passfile=" + ConnInfo.quote(settings.pgpass)
            rememberUpstream(conninfo: upstream)
            try writePgpass()
        }
        var parameters = parameters
        if case .bootstrapRecovery(let recovery?) = role {
            parameters.merge(recovery) { _, new in new }
            // A standby cluster's leader follows the remote primary from the start.
            if conninfo == nil { conninfo = recovery["primary_conninfo"]?.scalarText }
        }
        try writeOwnedFile(conf, contents: PostgresNode.renderPostgresqlConf(
            parameters: parameters, listen: settings.listen, primaryConninfo: conninfo))
        if !hba.isEmpty {
            let path = parameters["hba_file"]?.scalarText ?? settings.dataDir + "/pg_hba.conf"
            try writeOwnedFile(path, contents: PostgresNode.managedHeader + "\n" + hba.map { $0 + "\n" }.joined())
        }
        switch role {
        case .replica:
            try writeOwnedFile(settings.dataDir + "/standby.signal", contents: "")
        case .primary:
            try removeFiles(["standby.signal", "recovery.signal"])
        case .bootstrapRecovery(let recovery):
            if recovery != nil {
                try removeFiles(["standby.signal"])
                try writeOwnedFile(settings.dataDir + "/recovery.signal", contents: "")
            }
        }
    }

    /// Removes files of the data directory that may be missing.
    func removeFiles(_ names: [String]) throws {
        for name in names {
            let path = name.hasPrefix("/") ? name : settings.dataDir + "/" + name
            if unlink(path) != 0 && errno != ENOENT {
                throw PostgresError("cannot remove \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// What a custom bootstrap's command left, made ready for Stork's configuration: a leftover
    /// promote trigger file removed (it would end recovery at once), and unless
    /// `keepExistingRecovery`, every recovery setting the tool wrote (signal files,
    /// `recovery.conf`, recovery parameters in `postgresql.auto.conf`) removed.
    public func prepareRestoredCopy(keepExistingRecovery: Bool, promoteTriggerFile: String?) throws {
        try removeFiles(["promote"] + (promoteTriggerFile.map { [$0] } ?? []))
        guard !keepExistingRecovery else { return }
        try removeFiles(["recovery.signal", "standby.signal", "recovery.conf"])
        let auto = settings.dataDir + "/postgresql.auto.conf"
        guard let text = try? String(contentsOfFile: auto, encoding: .utf8) else { return }
        let kept = PostgresNode.withoutRecoveryParameters(text)
        if kept != text {
            logger.info("removing the recovery settings the bootstrap command wrote to \(auto)")
            try writeOwnedFile(auto, contents: kept)
        }
    }

    /// Recovery parameters (PostgreSQL 12 and later, plus the older `standby_mode` and
    /// `trigger_file`).
    public static let recoveryParameters: Set<String> = [
        "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_target", "recovery_target_lsn",
        "recovery_target_name", "recovery_target_time", "recovery_target_xid", "recovery_target_inclusive",
        "recovery_target_timeline", "recovery_target_action", "primary_conninfo", "primary_slot_name",
        "promote_trigger_file", "recovery_min_apply_delay", "standby_mode", "trigger_file",
    ]

    /// The recovery parameters that say whom a replica follows and where its recovery stops.
    public static let upstreamParameters: Set<String> = recoveryParameters.subtracting(
        ["restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_min_apply_delay"])

    /// A configuration file's text without the lines that set one of `names`.
    public static func withoutRecoveryParameters(_ text: String, names: Set<String> = recoveryParameters) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let name = line.split(whereSeparator: { $0 == "=" || $0 == " " || $0 == "\t" }).first.map { $0.lowercased() } ?? ""
            return !names.contains(name)
        }.joined(separator: "\n")
    }

    /// A new replica's copy without the upstream settings its method's tool wrote into
    /// `postgresql.auto.conf` (`pg_basebackup -R`, a restore tool): they would override
    /// Stork's `primary_conninfo` and slot, and keep following a former leader after a
    /// failover. A tool's `restore_command` stays: it is how the copy reads that tool's archive.
    public func removeUpstreamSettings(of directory: String) throws {
        let auto = directory + "/postgresql.auto.conf"
        guard let text = try? String(contentsOfFile: auto, encoding: .utf8) else { return }
        let kept = PostgresNode.withoutRecoveryParameters(text, names: PostgresNode.upstreamParameters)
        guard kept != text else { return }
        logger.info("removing the upstream settings the replica method wrote to postgresql.auto.conf (\(PostgresNode.upstreamParameters.filter { text.contains($0) }.sorted().joined(separator: ", "))): Stork sets whom the replica follows")
        try writeOwnedFile(auto, contents: kept)
    }

    /// `recovery.conf` for PostgreSQL 11 and earlier: one `name = 'value'` line per parameter,
    /// quoted as postgresql.conf values are, `standby_mode = 'on'` for a standby.
    public static func renderRecoveryConf(_ parameters: [String: JSONValue], standby: Bool) -> String {
        var values = parameters.compactMapValues(\.scalarText)
        if standby { values["standby_mode"] = "on" }
        return managedHeader + "\n" + values.keys.sorted().map { "\($0) = \(quoteParameter(values[$0]!))\n" }.joined()
    }

    /// The libpq service file (0600) with the secrets of `primary_conninfo` that have no file
    /// of their own (an `sslpassword`), beside the pgpass file.
    public var replicationServiceFile: String { settings.pgpass + ".service" }

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
    public func localQuery(_ sql: String) async throws -> [String?] {
        let connection = try await localConnection()
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

    /// Creates or updates the replication role and `bootstrap.users`, and sets the
    /// superuser's password, on a freshly bootstrapped primary.
    public func createRoles(users: [String: BootstrapUser]) async throws {
        let connection = try await localConnection()
        defer { Task { await connection.close() } }
        // Keep passwords out of the server log, as Patroni does.
        for statement in ["SET log_statement TO none", "SET log_min_duration_statement TO -1",
                          "SET log_min_error_statement TO panic", "SET synchronous_commit TO local"] {
            try await connection.query(statement)
        }
        if let password = settings.superuser.password {
            try await createOrUpdateRole(connection, name: settings.superuser.username, password: password, options: ["SUPERUSER"])
        }
        try await createOrUpdateRole(connection, name: settings.replication.username,
                                     password: settings.replication.password, options: ["REPLICATION"])
        for name in users.keys.sorted() {
            let user = users[name]!
            try await createOrUpdateRole(connection, name: name, password: user.password, options: user.options)
        }
    }

    /// Runs `post_bootstrap` with the new primary's connection string as its one argument
    /// (the superuser's `ssl*` options in it; an `sslpassword` through a service file in
    /// `PGSERVICEFILE`), a pgpass file in `PGPASSFILE`; throws with its exit status and output tail on failure.
    public func runPostBootstrap(_ command: String) async throws {
        guard let words = UserOptions.shellWords(command), let executable = words.first else {
            throw PostgresError("post_bootstrap: cannot split the command: \(command)")
        }
        try writePgpass()
        let result = try await withCommandLineConninfo(localConninfo(passfile: false)) { conninfo, environment in
            var cmd = Command(executable, Array(words.dropFirst()) + [conninfo])
            cmd.environment = environment.merging([
                "PGPASSFILE": settings.pgpass, "PGOPTIONS": "-c synchronous_commit=local -c statement_timeout=0",
            ]) { _, new in new }
            return try await run(cmd)
        }
        guard result.succeeded else { throw PostgresNode.failure("post_bootstrap \(executable)", result) }
    }

    /// Removes everything inside the data directory (keeping the directory itself).
    /// Only for the agent's own failed work.
    ///
    /// Symbolic links inside (a `pg_wal` moved elsewhere, tablespaces) are removed as links;
    /// what they point to is left alone.
    public func wipeDataDirectory() throws {
        try wipe(directory: settings.dataDir)
    }

    /// Removes everything inside `dir` (keeping `dir`), symbolic links as links.
    public func wipe(directory dir: String) throws {
        let fm = FileManager.default
        logger.debug("wiping data directory", metadata: ["stork.data_dir": "\(dir)"])
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: dir) } catch {
            if !fm.fileExists(atPath: dir) { return }
            throw PostgresError("cannot list \(dir): \(error.localizedDescription)")
        }
        for entry in entries {
            do { try fm.removeItem(atPath: dir + "/" + entry) } catch {
                throw PostgresError("cannot remove \(dir)/\(entry): \(error.localizedDescription)")
            }
        }
        chmod(dir, 0o700)
    }

    /// A crashed primary's data directory (`in production` in pg_control) made cleanly shut
    /// down, as pg_rewind needs: crash recovery in single-user mode, which ends at EOF on stdin.
    public func singleUserCrashRecovery() async throws {
        var command = Command(binary("postgres"), ["--single", "-D", settings.dataDir, "-c", "archive_mode=off", "template1"])
        command.timeout = 3600
        command.withoutInherited = ["PATRONI_"]
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("postgres --single (crash recovery)", result) }
    }

    /// What `pg_rewind --dry-run` found.
    public enum RewindCheck: Sendable, Equatable {
        case notNeeded
        case needed
        /// The source's pg_control still names the target's timeline: it has not checkpointed
        /// since it promoted, and pg_rewind cannot tell yet.
        case sameTimeline
    }

    /// pg_rewind from the member at `url` as `user` (the rewind user, else the superuser):
    /// with `dryRun`, only whether the histories diverged.
    public func rewind(fromConnURL url: String, dryRun: Bool) async throws -> RewindCheck {
        let source = try conninfo(toConnURL: url, as: settings.rewind ?? settings.superuser, applicationName: "stork-rewind")
        var command = Command(binary("pg_rewind"), ["--target-pgdata=" + settings.dataDir, "--source-server=" + source]
                              + (dryRun ? ["--dry-run"] : ["--progress"]))
        command.timeout = 3600
        command.withoutInherited = ["PATRONI_"]
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_rewind" + (dryRun ? " --dry-run" : ""), result) }
        if result.output.contains("on the same timeline") { return .sameTimeline }
        return result.output.contains("no rewind required") ? .notNeeded : .needed
    }

    /// Runs `SELECT pg_promote()` / `pg_ctl promote`.
    public func promote() async throws {
        var command = Command(binary("pg_ctl"), ["promote", "-D", settings.dataDir, "-w", "-t", String(settings.pgCtlTimeout)])
        command.timeout = Double(settings.pgCtlTimeout) + 30
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_ctl promote", result) }
    }

    /// `postgres://host:port/postgres` for the member key's `conn_url`.
    public var connURL: String { "postgres://\(settings.connectAddress)/postgres" }

    /// The conninfo (no password) to reach a member from its `conn_url` as the replication user.
    /// `primary_conninfo` carries `application_name` = this member's name (what
    /// pg_stat_replication and synchronous_standby_names show); a clone passes nil, so that
    /// pg_basebackup's WAL stream shows as `pg_basebackup`, never as a streaming replica.
    public func replicationConninfo(toConnURL url: String, applicationName: String?? = .none) -> String {
        let (host, port) = PostgresNode.hostAndPort(fromConnURL: url)
        var pairs: [(String, String)] = [("host", host), ("port", port),
                                         ("user", settings.replication.username), ("dbname", "postgres")]
        if let name = applicationName ?? memberName { pairs.append(("application_name", name)) }
        for key in settings.replication.sslOptions.keys.sorted() {
            pairs.append((key, settings.replication.sslOptions[key]!))
        }
        return ConnInfo.format(pairs)
    }
}
