import Foundation
import Logging
import Subprocess
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The one way Stork runs an external program: no shell, its own session (so its process
/// group holds everything it forks, pg_basebackup's WAL streamer included), output captured
/// with a limit and logged line by line, and a teardown that reaches the whole group.
public enum ProcessRunner {
    /// How much output a result keeps: the last 64 KiB.
    public static let outputLimit = 64 * 1024
    /// Seconds between SIGTERM and SIGKILL when a command times out or is cancelled
    /// (Patroni's `cancellable.py` waits 10 s too).
    public static let terminationGracePeriod: Double = 10

    /// Runs `command` to completion.
    ///
    /// On timeout (``Command/timeout``) or cancellation of the calling task, the whole process
    /// group gets SIGTERM, then SIGKILL once ``terminationGracePeriod`` has passed with any
    /// member still alive. A timed-out result has `timedOut == true`; a cancelled one reports
    /// the exit status the signal gave (`128 + 15` usually) with `timedOut == false`.
    ///
    /// - Returns: the exit status (128 + signal for a signalled process) and the last
    ///   ``outputLimit`` bytes of standard output and standard error, interleaved.
    /// - Throws: ``ProcessError`` only when the program cannot be started
    ///   (`cannot run /x/y: No such file or directory`). A non-zero exit status is a result,
    ///   not an error.
    public static func run(_ command: Command, logger: Logger) async throws -> CommandResult {
        let program = (command.executable as NSString).lastPathComponent
        var logger = logger
        logger[metadataKey: "stork.program"] = "\(program)"

        var options = PlatformOptions()
        options.createSession = true
        // Cancellation: the library's own teardown, aimed at the group, ending with SIGKILL
        // to the group. Timeouts and grandchildren are handled below as well.
        options.teardownSequence = [
            .gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .seconds(terminationGracePeriod)),
        ]
        // Fail like a spawn would when the program is not there, before any helper runs.
        guard let resolved = ExecutableSearch.find(command.executable, path: command.environment["PATH"]) else {
            throw ProcessError("cannot run \(command.executable): \(ExecutableSearch.whyNot(command.executable))")
        }
        var executablePath = resolved
        var arguments = command.arguments
        if let user = command.runAs, user.uid != geteuid() || user.gid != getegid() {
            // Not `PlatformOptions.userID`/`groupID`/`supplementaryGroups`: the library applies
            // them in the forked child of a multi-threaded process, where glibc's
            // setgroups/setuid (which signal every thread the parent had) can hang for good;
            // seen here. `setpriv` drops privileges after exec, single-threaded, in the same
            // process (same PID, same session and process group).
            executablePath = setprivPath
            arguments = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--", resolved] + arguments
        }

        var overrides: [Environment.Key: String?] = [:]
        if !command.withoutInherited.isEmpty {
            for key in ProcessInfo.processInfo.environment.keys where command.withoutInherited.contains(where: { key.hasPrefix($0) }) {
                overrides.updateValue(nil, forKey: Environment.Key(stringLiteral: key))
            }
        }
        for (key, value) in command.environment { overrides[Environment.Key(stringLiteral: key)] = value }
        if let user = command.runAs, geteuid() == 0, user.uid != 0 {
            // Tools that look at HOME or USER should see the user they run as, not root.
            if let pw = getpwuid(user.uid), command.environment["HOME"] == nil {
                overrides["HOME"] = String(cString: pw.pointee.pw_dir)
            }
            if command.environment["USER"] == nil { overrides["USER"] = user.name }
            if command.environment["LOGNAME"] == nil { overrides["LOGNAME"] = user.name }
        }

        let executable: Executable = .path(FilePath(executablePath))
        let timeout = command.timeout
        let outcome: ExecutionResult<(output: String, timedOut: Bool), SequenceOutput, CombinedErrorOutput>
        do {
            outcome = try await Subprocess.run(
                executable,
                arguments: Arguments(arguments),
                environment: .inherit.updating(overrides),
                workingDirectory: command.workingDirectory.map { FilePath($0) },
                platformOptions: options,
                input: .none,
                output: .sequence,
                error: .combinedWithOutput
            ) { execution in
                let pid = execution.processIdentifier.value
                logger.debug("process started", metadata: ["stork.pid": "\(pid)"])
                command.started?(pid)
                return await supervise(execution.standardOutput, processGroup: pid, timeout: timeout, lineHandler: command.lineHandler,
                                       logger: logger)
            }
        } catch let error as SubprocessError {
            let reason: String
            if let errno = error.underlyingError {
                reason = String(cString: strerror(errno.rawValue))
            } else if error.code == .executableNotFound {
                reason = String(cString: strerror(ENOENT))
            } else {
                reason = "\(error)"
            }
            throw ProcessError("cannot run \(command.executable): \(reason)")
        }

        let status: Int32
        switch outcome.terminationStatus {
        case .exited(let code): status = code
        case .signaled(let signal): status = 128 + signal
        }
        let value = outcome.closureResult
        logger.debug("process ended", metadata: [
            "stork.pid": "\(outcome.processIdentifier.value)",
            "stork.exit_status": "\(status)",
            "stork.timed_out": "\(value.timedOut)",
        ])
        return CommandResult(exitStatus: status, output: value.output, timedOut: value.timedOut)
    }

    // MARK: - Supervision

    private enum Event: Sendable {
        case outputClosed(String)
        case deadline(cancelled: Bool)
    }

    /// Reads the output until it closes while racing it against the timeout (or task
    /// cancellation); on expiry the process group is terminated and the output drained.
    private static func supervise(
        _ output: SubprocessOutputSequence, processGroup: pid_t, timeout: Double?,
        lineHandler: (@Sendable (String) -> Void)?, logger: Logger
    ) async -> (output: String, timedOut: Bool) {
        await withTaskGroup(of: Event.self) { group in
            group.addTask {
                .outputClosed(await collect(output, lineHandler: lineHandler, logger: logger))
            }
            group.addTask {
                if let timeout {
                    try? await Task.sleep(for: .seconds(timeout))
                } else {
                    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                }
                return .deadline(cancelled: Task.isCancelled)
            }
            var collected: String?
            var timedOut = false
            var terminating = false
            while let event = await group.next() {
                switch event {
                case .outputClosed(let text):
                    collected = text
                    group.cancelAll()
                case .deadline(let cancelled):
                    guard collected == nil, !terminating else { continue }
                    terminating = true
                    timedOut = !cancelled
                    logger.debug(cancelled ? "process cancelled" : "process timed out",
                                 metadata: ["stork.pid": "\(processGroup)"])
                    // An unstructured task: the teardown must run to its end even when the
                    // calling task is cancelled.
                    await Task { await terminate(processGroup: processGroup, logger: logger) }.value
                }
            }
            if Task.isCancelled && !terminating {
                // The reads ended with the cancellation; the library's teardown has signalled
                // the group. Return only once the group is gone, grandchildren included.
                await Task { await terminate(processGroup: processGroup, logger: logger) }.value
            }
            return (collected ?? "", timedOut)
        }
    }

    /// Reads everything, logging each line at debug (and handing it to `lineHandler`) and
    /// keeping the last ``outputLimit`` bytes.
    private static func collect(_ output: SubprocessOutputSequence, lineHandler: (@Sendable (String) -> Void)?,
                                logger: Logger) async -> String {
        var tail: [UInt8] = []
        var line: [UInt8] = []
        func emit() {
            let text = String(decoding: line, as: UTF8.self)
            logger.debug("process output", metadata: ["stork.line": "\(text)"])
            lineHandler?(text)
            line.removeAll(keepingCapacity: true)
        }
        do {
            for try await buffer in output {
                buffer.withUnsafeBytes { raw in
                    tail.append(contentsOf: raw)
                    for byte in raw {
                        if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                            if !line.isEmpty { emit() }
                        } else if line.count < 16 * 1024 { line.append(byte) }
                    }
                }
                if tail.count > 2 * outputLimit { tail.removeFirst(tail.count - outputLimit) }
            }
        } catch {
            // The library cancels reads once the direct child has exited while a grandchild
            // still holds the pipe; what was read so far is the result.
            logger.debug("output reading ended", metadata: ["stork.error": "\(error)"])
        }
        if !line.isEmpty { emit() }
        if tail.count > outputLimit { tail.removeFirst(tail.count - outputLimit) }
        return String(decoding: tail, as: UTF8.self)
    }

    /// SIGTERM to the group, up to ``terminationGracePeriod`` for every member to exit,
    /// then SIGKILL to the group.
    static func terminate(processGroup: pid_t, logger: Logger) async {
        kill(-processGroup, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(terminationGracePeriod)
        while ContinuousClock.now < deadline {
            if !hasLiveMembers(processGroup: processGroup) { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
        logger.debug("process group still alive after SIGTERM; sending SIGKILL", metadata: ["stork.pid": "\(processGroup)"])
        kill(-processGroup, SIGKILL)
        // SIGKILL is delivered when each process next runs: under load a member can still
        // show as alive for a moment. Return once the group is gone (a second at most).
        let killDeadline = ContinuousClock.now + .seconds(1)
        while hasLiveMembers(processGroup: processGroup) && ContinuousClock.now < killDeadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The process's start time (clock ticks since boot, `/proc/PID/stat`'s 22nd field): with
    /// the PID, it names one process for good, whatever PID reuse does later.
    public static func startTime(of pid: pid_t) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        // After "(comm)": field 3 (state) onwards.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether any process in the group is alive and not a zombie (Linux `/proc`).
    static func hasLiveMembers(processGroup: pid_t) -> Bool {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else {
            return kill(-processGroup, 0) == 0
        }
        for entry in entries where entry.first?.isNumber == true {
            guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // After "(comm)": state ppid pgrp ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, let pgrp = Int32(fields[2]) else { continue }
            if pgrp == processGroup && fields[0] != "Z" && fields[0] != "X" { return true }
        }
        return false
    }

    /// util-linux `setpriv`, which switches user, group and supplementary groups, then execs.
    static let setprivPath: String = ["/usr/bin/setpriv", "/bin/setpriv"]
        .first { FileManager.default.isExecutableFile(atPath: $0) } ?? "setpriv"
}
