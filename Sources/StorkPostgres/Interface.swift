// The public surface of StorkPostgres that the agent uses. Bodies are filled in by the
// module's implementation files; signatures here are the contract.
import Foundation
import Logging
import StorkConfig

/// What `pg_controldata` says about a data directory.
public struct ControlData: Sendable, Equatable {
    public var systemIdentifier: String
    /// "in production", "shut down", "shut down in recovery", "in archive recovery", ...
    public var clusterState: String
    public var timeline: Int
    /// Latest checkpoint location as an integer LSN.
    public var checkpointLSN: Int
    public var fields: [String: String]
    public init(systemIdentifier: String, clusterState: String, timeline: Int, checkpointLSN: Int, fields: [String: String]) {
        self.systemIdentifier = systemIdentifier
        self.clusterState = clusterState
        self.timeline = timeline
        self.checkpointLSN = checkpointLSN
        self.fields = fields
    }

    /// "Time of latest checkpoint": when the checkpoint began, by the clock of the primary that
    /// wrote it (pg_controldata runs in UTC and the C locale: `Fri Nov  7 19:40:00 2026`).
    public var checkpointTime: Date? {
        guard let text = fields["Time of latest checkpoint"] else { return nil }
        return DateText.parse(text.split(separator: " ").joined(separator: " "), ["EEE MMM d HH:mm:ss yyyy"])
    }

    /// The latest checkpoint's REDO location: every change before it is in the data files.
    public var redoLSN: Int? { fields["Latest checkpoint's REDO location"].flatMap(LSN.parse) }

    /// A copy that has not yet replayed to the end of the backup it came from: its files may
    /// be older than its `pg_control` says.
    public var backupUnfinished: Bool {
        let start = fields["Backup start location"].flatMap(LSN.parse) ?? 0
        let end = fields["Backup end location"].flatMap(LSN.parse) ?? 0
        return start != 0 || end != 0 || fields["End-of-backup record required"] == "yes"
    }
}

/// The running server's state as libpq reads it.
public struct ServerState: Sendable, Equatable {
    public var inRecovery: Bool
    /// Primary: pg_current_wal_lsn(); replica: the larger of receive and replay LSN.
    public var walPosition: Int
    public var replayLSN: Int?
    public var receiveLSN: Int?
    public var timeline: Int
    /// server_version_num, e.g. 150018.
    public var serverVersion: Int
    /// A replica's WAL receiver is streaming (pg_stat_wal_receiver.status = 'streaming').
    public var streaming: Bool
    /// A replica's replay is paused (pg_wal_replay_pause).
    public var replayPaused = false
    public init(inRecovery: Bool, walPosition: Int, replayLSN: Int?, receiveLSN: Int?, timeline: Int, serverVersion: Int, streaming: Bool) {
        self.inRecovery = inRecovery
        self.walPosition = walPosition
        self.replayLSN = replayLSN
        self.receiveLSN = receiveLSN
        self.timeline = timeline
        self.serverVersion = serverVersion
        self.streaming = streaming
    }
}

public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The server's SQLSTATE (`PQresultErrorField(PG_DIAG_SQLSTATE)`) for a failed statement.
    public var sqlState: String? = nil
    /// The server's DETAIL and HINT for a failed statement.
    public var detail: String? = nil
    public var hint: String? = nil
    /// For a failed external command (initdb, pg_basebackup, post_bootstrap, ...): its exit
    /// status (128 + signal when signalled) and the tail of its output.
    public var exitStatus: Int32? = nil
    public var outputTail: String? = nil
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
