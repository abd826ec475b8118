import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A companion process that must outlive this one (the self-fence): started in a session of
/// its own, with one end of a socket pair as its standard input. The other end is close-on-exec,
/// so no other child holds it: the companion sees end-of-file exactly when this process is gone.
public struct Companion: Sendable {
    public let pid: pid_t
    /// This side's end of the socket: write lines with `send`.
    public let socket: Int32

    /// Starts `argv[0]` with `environment` (`NAME=value` words); the error says why it could not.
    public static func start(_ argv: [String], environment: [String]) throws(ProcessError) -> Companion {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ProcessError("cannot start \(argv[0]): socketpair: \(String(cString: strerror(errno)))")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default signal handling and no blocked signals: the agent ignores SIGTERM, SIGHUP
        // and SIGPIPE (it handles them itself), which a child would otherwise inherit.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        // 0x80: POSIX_SPAWN_SETSID, which Swift does not import.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK) | 0x80)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pair[1], 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer { for word in cArgs + cEnv { free(word) } }
        var child: pid_t = 0
        let failure = posix_spawn(&child, argv[0], &actions, &attributes, cArgs, cEnv)
        _ = Glibc.close(pair[1])
        guard failure == 0 else {
            _ = Glibc.close(pair[0])
            throw ProcessError("cannot start \(argv[0]): \(String(cString: strerror(failure)))")
        }
        return Companion(pid: child, socket: pair[0])
    }

    /// Sends one line; false when the companion is gone. MSG_NOSIGNAL: a companion that died
    /// must not take this process with it.
    public func send(_ line: String) -> Bool {
        let bytes = Array(line.utf8)
        return Glibc.send(socket, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count
    }

    /// Closes this side (the companion sees end-of-file) and, when `kill`, ends it and reaps it.
    public func close(kill: Bool = false) {
        _ = Glibc.close(socket)
        if kill {
            _ = Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
    }
}
