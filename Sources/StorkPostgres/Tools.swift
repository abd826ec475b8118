import Foundation
import Logging
import StorkConfig
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// PostgreSQL's programs run for this node: initdb, pg_basebackup, pg_controldata,
// pg_rewind and single-user crash recovery, post_bootstrap; how a failed run is told.
extension PostgresNode {
    /// Runs a command as ``runAs``, recorded in ``childRecords`` while it runs.
    public func run(_ command: Command) async throws -> CommandResult {
        var command = command
        command.runAs = command.runAs ?? runAs
        let records = childRecords, started = Mutex<pid_t?>(nil), program = (command.executable as NSString).lastPathComponent
        let caller = command.started
        command.started = { pid in
            started.withLock { $0 = pid }
            records.record(pid, program: program)
            caller?(pid)
        }
        defer { if let pid = started.withLock({ $0 }) { records.remove(pid) } }
        do {
            return try await ProcessRunner.run(command, logger: logger)
        } catch let error as ProcessError {
            throw PostgresError(error.message)
        }
    }

    /// A failed command as an error: what ran, its exit status and its output's tail.
    public static func failure(_ what: String, _ result: CommandResult) -> PostgresError {
        let tail = lastLines(result.output, 20)
        var message = result.timedOut
            ? "\(what) timed out (exit status \(result.exitStatus))"
            : "\(what) failed with exit status \(result.exitStatus)"
        if !tail.isEmpty { message += ":\n" + tail }
        var error = PostgresError(message)
        error.exitStatus = result.exitStatus
        error.outputTail = tail
        return error
    }

    static func lastLines(_ text: String, _ count: Int) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(count + 1).joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func tail(ofFile path: String, lines: Int) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > 32_768 ? size - 32_768 : 0)
        let data = (try? handle.readToEnd()) ?? Data()
        return lastLines(String(decoding: data, as: UTF8.self), lines)
    }


    /// Parses `pg_controldata` output (run with `LC_ALL=C`): every `name: value` line goes
    /// into `fields`; the system identifier, cluster state, checkpoint timeline and location
    /// are required.
    public static func parseControlData(_ text: String) throws -> ControlData {
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if !key.isEmpty { fields[key] = value }
        }
        func field(_ name: String) throws -> String {
            guard let value = fields[name] else { throw PostgresError("pg_controldata output has no \"\(name)\"") }
            return value
        }
        let identifier = try field("Database system identifier")
        let state = try field("Database cluster state")
        guard let timeline = Int(try field("Latest checkpoint's TimeLineID")) else {
            throw PostgresError("pg_controldata: bad TimeLineID \(fields["Latest checkpoint's TimeLineID"] ?? "")")
        }
        guard let location = LSN.parse(try field("Latest checkpoint location")) else {
            throw PostgresError("pg_controldata: bad checkpoint location \(fields["Latest checkpoint location"] ?? "")")
        }
        return ControlData(systemIdentifier: identifier, clusterState: state, timeline: timeline,
                           checkpointLSN: location, fields: fields)
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

    /// A crashed primary's data directory (`in production` in pg_control) made cleanly shut
    /// down, as pg_rewind needs: crash recovery in single-user mode, which ends at EOF on stdin.
    public func singleUserCrashRecovery() async throws {
        var command = Command(binary("postgres"), ["--single", "-D", settings.dataDir, "-c", "archive_mode=off", "template1"])
        command.timeout = 3600
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
        /// The histories diverged and pg_rewind cannot rewind this one (the WAL it needs is
        /// gone, say): its last error line.
        case neededButImpossible(String)
    }

    /// pg_rewind from the member at `url` as `user` (the rewind user, else the superuser):
    /// with `dryRun`, only whether the histories diverged.
    public func rewind(fromConnURL url: String, dryRun: Bool) async throws -> RewindCheck {
        let source = try conninfo(toConnURL: url, as: settings.rewind ?? settings.superuser, applicationName: "stork-rewind")
        // An `sslpassword` goes through a service file, never into argv.
        let result = try await withCommandLineConninfo(source) { source, environment in
            var command = Command(binary("pg_rewind"), ["--target-pgdata=" + settings.dataDir, "--source-server=" + source]
                                  + (dryRun ? ["--dry-run"] : ["--progress"]))
            command.environment = environment
            command.timeout = 3600
            return try await run(command)
        }
        if dryRun, !result.succeeded, result.output.contains("servers diverged at WAL location") {
            let error = result.output.split(separator: "\n").last { $0.contains("error:") } ?? "exit status \(result.exitStatus)"
            return .neededButImpossible(String(error).trimmingCharacters(in: .whitespaces))
        }
        guard result.succeeded else { throw PostgresNode.failure("pg_rewind" + (dryRun ? " --dry-run" : ""), result) }
        if result.output.contains("on the same timeline") { return .sameTimeline }
        return result.output.contains("no rewind required") ? .notNeeded : .needed
    }
}
