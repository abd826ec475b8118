import Foundation
import Logging
import StorkConfig

/// What a custom bootstrap's recovery aims at, as the log names it.
public struct RecoveryTarget: CustomStringConvertible, Sendable {
    public let parameters: [String: JSONValue]
    public init(_ parameters: [String: JSONValue]) { self.parameters = parameters }

    public var description: String {
        for key in ["recovery_target_time", "recovery_target_lsn", "recovery_target_xid", "recovery_target_name"] {
            if let value = parameters[key]?.scalarText { return "\(key) \(value)" }
        }
        if parameters["recovery_target"]?.scalarText == "immediate" { return "recovery_target immediate (the end of the backup)" }
        return "the end of the WAL"
    }
}

/// How far a restored copy's recovery has come: `GET /patroni`, the member key and `stork list`.
public struct RecoveryProgress: Sendable, Equatable {
    public var target: String
    public var replayedLSN: String?
    public var lastTransaction: String?
    public var paused: Bool
    public var started: Date

    public init(target: String, replayedLSN: String?, lastTransaction: String?, paused: Bool, started: Date) {
        self.target = target
        self.replayedLSN = replayedLSN
        self.lastTransaction = lastTransaction
        self.paused = paused
        self.started = started
    }
}

extension PostgresNode {
    /// Waits until the restored copy leaves recovery, logging the replay position every 10 s
    /// against the target, and reports its progress every second. Paused at the target
    /// (`recovery_target_action: pause`) it says so once, and `stork resume` ends recovery;
    /// the time paused does not count against `timeout` (seconds; nil: no limit). Throws when
    /// PostgreSQL stops or the timeout passes.
    public func waitForRecoveryEnd(target: RecoveryTarget, timeout: Double?,
                                   report: @Sendable (RecoveryProgress) -> Void) async throws {
        var waited: Double = 0
        let pace = ProgressPace(firstNow: true)
        var pausedSaid = false
        let started = Date()
        while true {
            guard isRunning() else {
                let tail = PostgresNode.tail(ofFile: serverLogPath, lines: 20)
                throw PostgresError("PostgreSQL stopped during recovery" + (tail.isEmpty ? "" : "; server log \(serverLogPath):\n" + tail))
            }
            let row = try? await localQuery("""
                SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text,
                       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END
                """)
            if let row, row[0] == "f" {
                logger.info("recovery has ended: the restored cluster is promoted")
                return
            }
            report(RecoveryProgress(target: "\(target)", replayedLSN: row?[1] ?? nil, lastTransaction: row?[2] ?? nil,
                                    paused: (row?[3] ?? nil) == "paused", started: started))
            let replayed = (row?[1] ?? nil).map { "replayed up to \($0)" + ((row?[2] ?? nil).map { " (last transaction \($0))" } ?? "") }
                ?? "not yet consistent"
            if (row?[3] ?? nil) == "paused" {
                if !pausedSaid {
                    logger.warning("recovery is paused, \(replayed), target \(target): run `stork resume` to end recovery and promote, or stop the agent to look first")
                    pausedSaid = true
                }
            } else {
                pausedSaid = false
                if let timeout, waited >= timeout {
                    throw PostgresError("recovery did not end within \(Int(timeout)) s (bootstrap.recovery_timeout); \(replayed), target \(target)")
                }
                if pace.due() { logger.info("waiting for recovery to end: \(replayed), target \(target)") }
                waited += 1
            }
            try await Task.sleep(for: .seconds(1))
        }
    }
}
