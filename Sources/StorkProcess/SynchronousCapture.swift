import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension ProcessRunner {
    /// A quick look-up (`pg_config --bindir`) for callers that cannot await: the program's
    /// standard output, trimmed, when it exits 0 within `timeout` seconds; nil otherwise.
    /// A program still running at the deadline is killed.
    public static func captureSynchronously(_ program: String, _ arguments: [String], timeout: Double = 10) -> String? {
        guard let path = ExecutableSearch.find(program) else { return nil }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return nil }  // Glibc's module has no pipe2
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(ends[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, ends[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for word in argv { free(word) } }
        // As for every child (`Command.withoutInherited`): no `PATRONI_*` variable, they hold passwords.
        let inherited = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PATRONI_") }
        let env = inherited.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for word in env { free(word) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, env)
        close(ends[1])
        guard spawned == 0 else { return nil }

        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .seconds(timeout)
        while true {
            let left = max(0, (deadline - ContinuousClock.now) / .milliseconds(1))
            var reader = pollfd(fd: ends[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&reader, 1, Int32(min(left, Double(Int32.max))))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { kill(pid, SIGKILL); break }
            let count = buffer.withUnsafeMutableBytes { read(ends[0], $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            output.append(contentsOf: buffer[0..<count])
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { return nil }  // exited 0; not signalled, not another status
        let text = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
