import Foundation
import Logging
import StorkProcess
import StorkTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Whether `pid` names a live (non-zombie) process.
func processIsAlive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(after: close)...].split(separator: " ").first
    return state != "Z" && state != "X"
}

@Suite("ProcessRunner")
struct ProcessRunnerTests {
    let logger = Logger(label: "test")

    @Test func exitStatusAndOutput() async throws {
        let ok = try await ProcessRunner.run(Command("/bin/sh", ["-c", "echo out; echo err >&2; echo done"]), logger: logger)
        #expect(ok.exitStatus == 0)
        #expect(ok.succeeded)
        #expect(ok.output == "out\nerr\ndone\n")
        #expect(!ok.timedOut)

        let three = try await ProcessRunner.run(Command("sh", ["-c", "exit 3"]), logger: logger)
        #expect(three.exitStatus == 3)
        #expect(!three.succeeded)

        let killed = try await ProcessRunner.run(Command("/bin/sh", ["-c", "kill -9 $$"]), logger: logger)
        #expect(killed.exitStatus == 128 + 9)
    }

    @Test func environmentAndWorkingDirectory() async throws {
        var command = Command("/bin/sh", ["-c", "echo \"$STORK_TEST_VAR\"; pwd"])
        command.environment = ["STORK_TEST_VAR": "a value with spaces"]
        command.workingDirectory = "/usr"
        let result = try await ProcessRunner.run(command, logger: logger)
        #expect(result.output == "a value with spaces\n/usr\n")
    }

    @Test func argumentsAreNotInterpretedByAShell() async throws {
        let result = try await ProcessRunner.run(Command("/bin/echo", ["$HOME", "a b", "'q'", "*"]), logger: logger)
        #expect(result.output == "$HOME a b 'q' *\n")
    }

    @Test func outputIsBoundedToTheLast64KiB() async throws {
        let result = try await ProcessRunner.run(
            Command("/bin/sh", ["-c", "head -c 200000 /dev/zero | tr '\\0' a; echo; echo THE-END"]), logger: logger)
        #expect(result.succeeded)
        #expect(result.output.utf8.count == ProcessRunner.outputLimit)
        #expect(result.output.hasSuffix("a\nTHE-END\n"))
    }

    @Test func aProgramThatCannotStartThrows() async throws {
        do {
            _ = try await ProcessRunner.run(Command("/nonexistent/stork-program", ["x"]), logger: logger)
            Issue.record("expected an error")
        } catch let error as ProcessError {
            #expect(error.message == "cannot run /nonexistent/stork-program: No such file or directory")
        }
        do {
            _ = try await ProcessRunner.run(Command("/etc/hostname"), logger: logger)
            Issue.record("expected an error")
        } catch let error as ProcessError {
            // Not executable: the reason is the system's (EACCES, or ENOEXEC for root).
            #expect(error.message.hasPrefix("cannot run /etc/hostname: "))
            #expect(error.message.count > "cannot run /etc/hostname: ".count)
        }
    }

    @Test func childGetsItsOwnSessionAndProcessGroup() async throws {
        // Fields 5 and 6 of /proc/self/stat are the process group and session ("sh" has no spaces).
        var command = Command("/bin/sh", ["-c", "echo $$; cut -d' ' -f5,6 /proc/$$/stat"])
        if let user = TestSupport.postgresUser { command.runAs = user }
        let result = try await ProcessRunner.run(command, logger: logger)
        let lines = result.output.split(separator: "\n")
        try #require(lines.count == 2)
        let pid = String(lines[0])
        #expect(lines[1] == "\(pid) \(pid)")
        #expect(Int32(pid) != getpgrp())
    }

    @Test(.timeLimit(.minutes(1))) func timeoutKillsTheChildAndItsGrandchild() async throws {
        var command = Command("/bin/sh", ["-c", "sleep 100 & echo $!; sleep 100"])
        command.timeout = 1
        let started = ContinuousClock.now
        let result = try await ProcessRunner.run(command, logger: logger)
        let elapsed = ContinuousClock.now - started
        #expect(result.timedOut)
        #expect(!result.succeeded)
        #expect(result.exitStatus == 128 + SIGTERM)
        #expect(elapsed < .seconds(5))
        let grandchild = try #require(Int32(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!processIsAlive(grandchild))
    }

    @Test(.timeLimit(.minutes(1))) func sigkillFollowsWhenSigtermIsIgnored() async throws {
        var command = Command("/bin/sh", ["-c", "trap '' TERM; sleep 100 & echo $!; sleep 100"])
        command.timeout = 0.5
        if let user = TestSupport.postgresUser { command.runAs = user }
        let started = ContinuousClock.now
        let result = try await ProcessRunner.run(command, logger: logger)
        let elapsed = ContinuousClock.now - started
        #expect(result.timedOut)
        #expect(result.exitStatus == 128 + SIGKILL)
        #expect(elapsed >= .seconds(ProcessRunner.terminationGracePeriod))
        #expect(elapsed < .seconds(ProcessRunner.terminationGracePeriod + 5))
        let grandchild = try #require(Int32(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!processIsAlive(grandchild))
    }

    @Test(.timeLimit(.minutes(1))) func cancellationTearsDownTheGroup() async throws {
        let directory = TestSupport.makeTempDir("stork-cancel")
        defer { TestSupport.removeTree(directory) }
        let pidFile = directory + "/grandchild.pid"
        var command = Command("/bin/sh", ["-c", "sleep 100 & echo $! > \(pidFile); sleep 100"])
        if let user = TestSupport.postgresUser { command.runAs = user }
        let logger = self.logger
        let task = Task { try await ProcessRunner.run(command, logger: logger) }
        let written = await TestSupport.waitUntil(timeout: 10) { FileManager.default.fileExists(atPath: pidFile) }
        try #require(written)
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        task.cancel()
        let result = try await task.value
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(result.exitStatus == 128 + SIGTERM)
        #expect(!result.timedOut)
        let text = try String(contentsOfFile: pidFile, encoding: .utf8)
        let grandchild = try #require(Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(!processIsAlive(grandchild))
    }

    @Test func runAsRunsAsThatUser() async throws {
        let user = try #require(TestSupport.postgresUser, "these tests run as root; runAs needs the postgres OS user")
        var command = Command("/usr/bin/id", [])
        command.runAs = user
        let result = try await ProcessRunner.run(command, logger: logger)
        #expect(result.succeeded)
        #expect(result.output.hasPrefix("uid=\(user.uid)(postgres) gid=\(user.gid)"))
        #expect(!result.output.contains("(root)"))
    }
}

@Suite("ProcessRunner.captureSynchronously")
struct SynchronousCaptureTests {
    @Test func standardOutputTrimmedOnSuccess() {
        #expect(ProcessRunner.captureSynchronously("sh", ["-c", "echo '  hello  '; echo noise >&2"]) == "hello")
    }

    @Test func failureAndSilenceAreNil() {
        #expect(ProcessRunner.captureSynchronously("sh", ["-c", "echo partial; exit 3"]) == nil)
        #expect(ProcessRunner.captureSynchronously("sh", ["-c", "true"]) == nil)
        #expect(ProcessRunner.captureSynchronously("stork-no-such-program", []) == nil)
    }

    @Test func aProgramPastItsTimeoutIsKilled() {
        let started = ContinuousClock.now
        #expect(ProcessRunner.captureSynchronously("sleep", ["30"], timeout: 0.5) == nil)
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
