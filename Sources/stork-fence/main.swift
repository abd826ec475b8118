// stork-fence DATA_DIR: the self-fence, for machines without a watchdog device. The agent
// starts it in a session of its own with a socket on standard input and sends one line per
// leader-key refresh: `arm MS` (stop a primary PostgreSQL unless told again before MS, in
// CLOCK_MONOTONIC milliseconds) or `disarm`. When the deadline passes (the agent hangs, or
// died: the socket is closed while armed), it stops the primary in immediate mode (SIGQUIT to
// the postmaster, what `pg_ctl stop -m immediate` sends) before the leader key can expire, so
// no other member promotes while it still accepts writes. It never stops a replica (a
// standby.signal or recovery.signal in the data directory) nor a process that is not the
// data directory's postmaster. It fires once per deadline: a server started after it fired
// (by the agent once it answers again, which arms first, or by the operator) is left alone
// until the next `arm`. With the agent gone it keeps looking for `gracePeriod` past the
// deadline (a promotion under way completes late), then exits. It links nothing but the C
// library: it must keep working when the agent does not.
#if canImport(Glibc)
import Glibc
#endif

func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// One line in the agent's log format (`2026-01-18 13:29:06,714 LEVEL: message`) on standard error.
func log(_ level: String, _ message: String) {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var seconds = now.tv_sec
    var parts = tm()
    localtime_r(&seconds, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S", &parts)
    let millis = Int(now.tv_nsec / 1_000_000)
    let stamp = String(cString: buffer) + "," + String(repeating: "0", count: millis < 10 ? 2 : millis < 100 ? 1 : 0) + String(millis)
    let line = Array("\(stamp) \(level): stork-fence: \(message)\n".utf8)
    _ = write(2, line, line.count)
}

func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// The data directory's postmaster: the first line of postmaster.pid, when that process runs
/// in the data directory (a stale file's PID may belong to anything by now).
func postmaster(_ dataDir: String) -> pid_t? {
    guard let file = fopen(dataDir + "/postmaster.pid", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 64)
    guard fgets(&line, Int32(line.count), file) != nil, let pid = pid_t(String(cString: line).filter(\.isNumber)), pid > 0 else {
        return nil
    }
    guard let cwd = realPath("/proc/\(pid)/cwd"), cwd == realPath(dataDir) else { return nil }
    return pid
}

let arguments = CommandLine.arguments
guard arguments.count == 2 else {
    log("ERROR", "usage: stork-fence DATA_DIR (the agent starts it with watchdog.self_fence: on)")
    exit(2)
}
let dataDir = arguments[1]
// A log line to a standard error that is gone (journald restarted) must not end the fence.
signal(SIGPIPE, SIG_IGN)
// Nothing of the agent's but the socket and standard error: an inherited descriptor (the
// agent's lock, a client socket) would outlive the agent.
for fd in 3..<Int32(1024) { close(fd) }

var deadline: Int64?
var agentGone = false
var pending: [UInt8] = []
/// How long past the deadline it keeps looking once the agent is gone.
let gracePeriod: Int64 = 30_000

/// Stops the data directory's PostgreSQL when it runs as a primary: whether it did.
@MainActor func fence() -> Bool {
    guard let pid = postmaster(dataDir) else { return false }
    if exists(dataDir + "/standby.signal") || exists(dataDir + "/recovery.signal") { return false }
    guard kill(pid, SIGQUIT) == 0 else {
        log("ERROR", "could not stop PostgreSQL (postmaster \(pid)): \(String(cString: strerror(errno)))")
        return false
    }
    log("CRITICAL", "the agent did not refresh the leader key in time (\(agentGone ? "it is gone" : "it does not answer")): stopped PostgreSQL (postmaster \(pid)) in immediate mode so that it accepts no writes when another member takes over")
    return true
}

while true {
    let now = monotonicMilliseconds()
    if let due = deadline, now >= due {
        if fence() {
            if agentGone { exit(0) }
            deadline = nil
        } else if agentGone && now >= due + gracePeriod {
            log("WARNING", "the agent is gone and no primary PostgreSQL ran in \(dataDir) within \(gracePeriod / 1000) s of the deadline; exiting")
            exit(0)
        }
    }
    // Past the deadline, it looks again every 100 ms (a promotion already under way, say).
    let wait: Int32 = deadline.map { $0 <= now ? 100 : Int32(min($0 - now, 60_000)) } ?? -1
    if agentGone {
        usleep(UInt32(max(wait, 0)) * 1000)
        continue
    }
    var socket = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
    let ready = poll(&socket, 1, wait)
    if ready < 0 && errno != EINTR { log("ERROR", "poll: \(String(cString: strerror(errno)))"); exit(1) }
    guard ready > 0 else { continue }
    var buffer = [UInt8](repeating: 0, count: 512)
    let n = read(0, &buffer, buffer.count)
    if n <= 0 {
        if n < 0 && errno == EINTR { continue }
        // The agent is gone: armed, the deadline it set still holds; disarmed, nothing to guard.
        guard deadline != nil else { exit(0) }
        agentGone = true
        continue
    }
    pending += buffer[0..<n]
    while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
        let line = String(decoding: pending[..<end], as: UTF8.self)
        pending.removeSubrange(...end)
        if line == "disarm" {
            deadline = nil
        } else if line.hasPrefix("arm "), let due = Int64(line.dropFirst(4)) {
            deadline = due
        } else {
            log("ERROR", "ignored a line it does not understand: \(line)")
        }
    }
}
