import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkProcess

/// The member a replica is copied from.
public struct CloneSource: Sendable, Equatable {
    public var name: String
    /// Its member key's `conn_url`.
    public var connURL: String
    public var isLeader: Bool
    public init(name: String, connURL: String, isLeader: Bool) {
        self.name = name
        self.connURL = connURL
        self.isLeader = isLeader
    }
}

extension CloneSource: CustomStringConvertible {
    /// `leader 'pg0'` or `replica 'pg1'`, as Patroni's log lines name a clone source.
    public static func describe(_ name: String, isLeader: Bool) -> String { "\(isLeader ? "leader" : "replica") '\(name)'" }
    public var description: String { Self.describe(name, isLeader: isLeader) }
}

/// What one attempt of one method gets.
public struct MethodAttempt: Sendable {
    public var spec: ReplicaMethodSpec
    /// The directory to build in: the staging directory, or the data directory itself for a
    /// method that keeps data.
    public var target: String
    public var source: CloneSource?
    /// The replication connection string to the source, no password; empty without a source.
    public var conninfo: String
    public var scope: String
    /// The physical slot the new replica will stream from (created by the copy when missing).
    public var slot: String?
    public var number: Int
    /// The `archive` section, for the archive method.
    public var archive: ArchiveSettings?
    /// The cluster's system identifier (`initialize`), when known.
    public var expectedSystemIdentifier: String?
    /// For a method that can tell how far it is (pg_basebackup's and rsync's progress meters):
    /// bytes done and, when known, the total. Without it, the progress is the target's size.
    public var reportProgress: @Sendable (_ done: Int, _ total: Int?) -> Void = { _, _ in }
}

/// How an attempt ended.
public enum AttemptResult: Sendable, Equatable {
    case succeeded
    /// Move on (after this method's retries) to the next method; the text says why.
    case failed(String)
    /// Exit status 75 (EX_TEMPFAIL): try this method again later, do not move on.
    case tryLater(String)
}

/// A way to build a replica: `basebackup`, `rsync`, or a user's command.
protocol ReplicaMethod: Sendable {
    /// Checks that need no change to the target; a throw fails the attempt before the target
    /// is marked, wiped or written.
    func preflight(_ attempt: MethodAttempt, node: PostgresNode) async throws
    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult
}

extension ReplicaMethod {
    func preflight(_ attempt: MethodAttempt, node: PostgresNode) async throws {}
}

enum MethodRegistry {
    static func method(for spec: ReplicaMethodSpec) -> any ReplicaMethod {
        switch spec.kind {
        case .basebackup: return BasebackupMethod()
        case .rsync(let source): return RsyncMethod(sourceTemplate: source)
        case .archive(let backup): return ArchiveMethod(backup: backup)
        case .custom(let command): return CustomMethod(command: command)
        }
    }
}

/// EX_TEMPFAIL from sysexits.h.
let exitTryLater: Int32 = 75

/// Built in: `pg_basebackup -X stream` with the `postgresql.basebackup` options.
struct BasebackupMethod: ReplicaMethod {
    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult {
        guard !attempt.conninfo.isEmpty else { return .failed("basebackup needs a member to copy from") }
        let options = ReplicaMethodSpec.pgBasebackupOptions(node.settings.basebackup)
        do {
            do {
                try await node.basebackup(into: attempt.target, from: attempt.conninfo, options: options, slot: attempt.slot,
                                          createSlot: true, timeout: attempt.spec.timeout, progress: attempt.reportProgress)
            } catch where attempt.slot != nil && "\(error)".contains("already exists") {
                // The slot is there already (made by the leader, or by an earlier attempt): use it.
                // Emptied, not replaced: an in-place target may be a mount point or a link.
                if attempt.target == node.stagingDirectory {
                    try node.removeStagedCopy()
                    try node.prepareEmptyDirectory(attempt.target)
                } else {
                    try node.wipe(directory: attempt.target)
                }
                try await node.basebackup(into: attempt.target, from: attempt.conninfo, options: options, slot: attempt.slot,
                                          timeout: attempt.spec.timeout, progress: attempt.reportProgress)
            }
            return .succeeded
        } catch {
            // Patroni's line, for operators' grep patterns.
            if let status = (error as? PostgresError)?.exitStatus {
                node.logger.error("Error when fetching backup: pg_basebackup exited with code=\(status)")
            }
            return .failed("pg_basebackup failed: \(error)")
        }
    }
}

/// A user's command, called as Patroni calls it (DESIGN.md contract 3): the words of
/// `command`, then `--scope= --role=replica --datadir= --connstring=` unless `no_params`, then
/// every other key of the section as `--key=value`; the password through `PGPASSFILE`.
struct CustomMethod: ReplicaMethod {
    let command: [String]

    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult {
        do {
            if !attempt.conninfo.isEmpty {
                node.rememberUpstream(conninfo: attempt.conninfo)
            }
            try node.writePgpass()
            let result = try await node.withCommandLineConninfo(attempt.conninfo) { conninfo, environment in
                var cmd = Command(command[0], Self.arguments(command: command, spec: attempt.spec, scope: attempt.scope,
                                                              datadir: attempt.target, connstring: conninfo))
                cmd.environment = environment.merging(["PGPASSFILE": node.settings.pgpass]) { _, new in new }
                cmd.timeout = attempt.spec.timeout
                return try await node.run(cmd)
            }
            if result.succeeded { return .succeeded }
            let failure = PostgresNode.failure(command[0], result)
            if result.exitStatus == exitTryLater && !result.timedOut { return .tryLater(failure.message) }
            if result.timedOut { return .failed("\(command[0]) did not finish within \(Int(attempt.spec.timeout ?? 0)) s and was stopped") }
            return .failed(failure.message)
        } catch {
            return .failed("\(error)")
        }
    }

    /// The arguments after the command's own words (Patroni's: `--scope= --role=replica
    /// --datadir= --connstring=` unless `no_params`, then the section's other keys).
    static func arguments(command: [String], spec: ReplicaMethodSpec, scope: String, datadir: String, connstring: String) -> [String] {
        CallingConvention.arguments(command: command, section: spec.section,
                                    notPassed: spec.noParams ? ReplicaMethodSpec.specialKeys.union(["command"]) : ["command"],
                                    fixed: spec.noParams ? nil : [("scope", scope), ("role", "replica"), ("datadir", datadir), ("connstring", connstring)])
    }

    /// A value as Python's `str()` prints it, which is what Patroni passes.
    static func pythonText(_ value: JSONValue) -> String { CallingConvention.pythonText(value) }
}
