import Foundation
import Logging
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The programs an agent runs for its data directory (pg_basebackup, rsync, a replica method,
/// pg_rewind, ...), one file per running child in `.<data dir name>.stork-children/<pid>` beside
/// the data directory (``PostgresNode/agentFile(beside:suffix:)``), holding
/// its start time, the agent's PID and the program. An agent started after a crash stops what
/// the dead one left running from these records alone, never by guessing from command lines
/// (an operator's `tar` or `pgbackrest` naming the data directory is none of its business).
struct ChildRecords: Sendable {
    let directory: String
    let logger: Logger

    struct Child: Equatable {
        var pid: pid_t
        var startTime: UInt64
        var agent: pid_t
        var program: String
    }

    func record(_ pid: pid_t, program: String) {
        guard let start = ProcessRunner.startTime(of: pid) else { return }
        mkdir(directory, 0o700)
        let line = Array("\(start) \(getpid()) \(program)\n".utf8)
        let fd = open(directory + "/\(pid)", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        let ok = fd >= 0 && line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == line.count
        if fd >= 0 { close(fd) }
        if !ok, Self.warned.withLock({ let first = !$0; $0 = true; return first }) {
            logger.warning("cannot record \(program) (PID \(pid)) in \(directory): \(String(cString: strerror(errno))); an agent started after a crash of this one will not stop it")
        }
    }

    /// Said once per process: the directory above the data directory stays unwritable.
    private static let warned = Mutex(false)

    func remove(_ pid: pid_t) { unlink(directory + "/\(pid)") }

    /// The recorded children of other agents that still run (same PID, same start time), and
    /// the records of those gone removed.
    func leftovers() -> [Child] {
        var out: [Child] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let pid = pid_t(name), let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8) else { continue }
            let fields = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 2)
            guard fields.count == 3, let start = UInt64(fields[0]), let agent = pid_t(fields[1]) else { remove(pid); continue }
            let child = Child(pid: pid, startTime: start, agent: agent, program: String(fields[2]))
            if child.agent == getpid() { continue }
            if ProcessRunner.startTime(of: pid) == start { out.append(child) } else { remove(pid) }
        }
        return out.sorted { $0.pid < $1.pid }
    }
}
