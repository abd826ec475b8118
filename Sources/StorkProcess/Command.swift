// What one external program run is: the command, the user it runs as, and its result.
import Foundation

/// An OS user that child processes run as when Stork itself runs as root
/// (tests do; initdb and postgres refuse root).
public struct OSUser: Sendable, Equatable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public init(name: String, uid: UInt32, gid: UInt32) { self.name = name; self.uid = uid; self.gid = gid }
}

/// One external command: run without a shell, in its own session so that a timeout or a
/// cancellation tears down the whole process group (pg_basebackup's WAL-streaming child too).
public struct Command: Sendable {
    public var executable: String
    public var arguments: [String]
    /// Added to (or replacing in) the inherited environment.
    public var environment: [String: String] = [:]
    /// Inherited variables whose names start with one of these are left out (`environment`
    /// still applies). By default the agent's `PATRONI_*` variables, which hold passwords: no
    /// child (a replica method, pg_basebackup, rsync, post_bootstrap) gets them; the operator's
    /// other variables pass.
    public var withoutInherited: [String] = ["PATRONI_"]
    public var workingDirectory: String? = nil
    /// Seconds; nil means no limit. On expiry: SIGTERM to the group, 10 s, then SIGKILL.
    public var timeout: Double? = nil
    public var runAs: OSUser? = nil
    /// Called with each line of output (standard output and error, split at `\n` and `\r`,
    /// as progress meters end their lines), as it arrives: for progress and for listings
    /// longer than the kept tail.
    public var lineHandler: (@Sendable (String) -> Void)? = nil
    /// Called with the child's PID (the leader of its own process group) once it runs.
    public var started: (@Sendable (pid_t) -> Void)? = nil
    public init(_ executable: String, _ arguments: [String] = []) {
        self.executable = executable
        self.arguments = arguments
    }
}

public struct CommandResult: Sendable {
    /// The exit status; for a process ended by a signal, 128 + the signal number.
    public var exitStatus: Int32
    /// The last lines (at most 64 KiB) of standard output and standard error, interleaved.
    public var output: String
    public var timedOut: Bool
    public var succeeded: Bool { exitStatus == 0 && !timedOut }
    public init(exitStatus: Int32, output: String, timedOut: Bool) {
        self.exitStatus = exitStatus
        self.output = output
        self.timedOut = timedOut
    }
}

/// A program that could not be started (`cannot run /x/y: No such file or directory`).
/// A non-zero exit status is a ``CommandResult``, not this.
public struct ProcessError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
