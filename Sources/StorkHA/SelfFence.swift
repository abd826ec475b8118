import Foundation
import Logging
import StorkPostgres
import StorkProcess
#if canImport(Glibc)
import Glibc
#endif

/// The agent's end of `stork-fence` (`watchdog.self_fence`): the companion starts on first
/// use, in a session of its own so that it outlives the agent, and gets a deadline on every
/// leader key refresh. Past the deadline it stops a primary PostgreSQL in immediate mode.
final class SelfFence {
    private let dataDir: String
    private let logger: Logger
    private var companion: Companion?
    private(set) var armed = false

    init(dataDir: String, logger: Logger) {
        self.dataDir = dataDir
        self.logger = logger
    }

    static var program: String { WALArchiveCommands.beside("stork-fence") }

    /// The running companion's PID, beside the agent lock: an agent started again after a
    /// crash finds the one its predecessor left.
    private var pidFile: String { PostgresNode.agentFile(beside: dataDir, suffix: "stork-fence.pid") }

    /// The companion an earlier agent of this data directory left running (it crashed), found
    /// at start: its deadline would stop a primary this agent keeps healthy, so it is ended
    /// once this agent's own fence is armed, or once the server accepts no writes. Until
    /// then its deadline stands (this agent may not reach the DCS at all).
    private var stale: pid_t?

    /// Looks for that companion; called once, with the agent lock held.
    func findStaleCompanion() {
        let file = pidFile
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, isCompanion(pid) else { return }
        stale = pid
        logger.info("found the self-fence companion (pid \(pid)) of an earlier agent of this data directory: it is ended once this agent's own fence is armed or the server accepts no writes")
    }

    /// Ends the earlier agent's companion, if it still is one (the PID may belong to anything by now).
    func endStaleCompanion() {
        guard let pid = stale else { return }
        stale = nil
        // SIGKILL: it has nothing to clean up, and one started before its signals were reset
        // at spawn ignores SIGTERM as the agent does.
        if isCompanion(pid), kill(pid, SIGKILL) == 0 {
            logger.info("ended the self-fence companion (pid \(pid)) of an earlier agent of this data directory")
        }
    }

    /// Whether `pid` runs stork-fence for this data directory (however its path is written).
    private func isCompanion(_ pid: pid_t) -> Bool {
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let argv = cmdline.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard argv.count >= 2, (argv[0] as NSString).lastPathComponent == "stork-fence" else { return false }
        return argv[1] == dataDir || (PostgresNode.resolvedPath(argv[1]).map { $0 == PostgresNode.resolvedPath(dataDir) } ?? false)
    }

    /// The primary must be stopped unless the agent arms again before `deadline`.
    func arm(until deadline: Date) {
        let left = deadline.timeIntervalSinceNow
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let due = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000 + Int64(left * 1000)
        let wasArmed = armed
        armed = send("arm \(due)\n")
        if armed && !wasArmed {
            logger.info("self-fence armed: PostgreSQL is stopped if the leader key is not refreshed within \(String(format: "%.1f", left)) s")
        }
        if armed { endStaleCompanion() }
    }

    func disarm() {
        guard armed else { return }
        if send("disarm\n") { logger.info("self-fence disarmed: this server no longer accepts writes") }
        armed = false
    }

    /// Disarms and lets the companion go (it exits when the socket closes while disarmed).
    func stop() {
        disarm()
        guard let running = companion else { return }
        running.close()
        companion = nil
        unlink(pidFile)
    }

    /// Sends one line, starting the companion when it is not running (or died); false, logged,
    /// when it cannot be started.
    private func send(_ line: String) -> Bool {
        for _ in 0..<2 {
            guard let running = companion ?? start() else { return false }
            if running.send(line) { return true }
            logger.error("self-fence companion (pid \(running.pid)) does not answer: \(String(cString: strerror(errno))); starting it again")
            running.close(kill: true)
            companion = nil
        }
        return false
    }

    private func start() -> Companion? {
        let program = Self.program
        guard access(program, X_OK) == 0 else {
            logger.critical("watchdog.self_fence is on but \(program) is missing: build it beside stork (swift build --product stork-fence); until then a primary whose agent dies is not fenced")
            return nil
        }
        // No secrets in its environment: it needs the time zone for its log lines, nothing else.
        let timeZone = ProcessInfo.processInfo.environment["TZ"].map { ["TZ=" + $0] } ?? []
        do {
            let started = try Companion.start([program, dataDir], environment: timeZone)
            logger.info("self-fence companion started (pid \(started.pid))")
            companion = started
            let pid = Array("\(started.pid)\n".utf8)
            if !FileManager.default.createFile(atPath: pidFile, contents: Data(pid), attributes: [.posixPermissions: 0o600]) {
                logger.warning("could not write \(pidFile): an agent started after a crash of this one will not find this companion")
            }
            return started
        } catch {
            logger.critical("self-fence: \(error); a primary whose agent dies is not fenced")
            return nil
        }
    }
}
