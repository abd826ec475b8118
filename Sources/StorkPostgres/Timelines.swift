import Foundation
import StorkConfig

/// One line of a timeline history file (`<parent timeline>\t<switchpoint>\t<reason>`): the
/// parent timeline ended at `switchpoint`, where the next one forked off it.
public struct TimelineSwitch: Equatable, Sendable {
    public var parent: Int
    public var switchpoint: Int
    public init(parent: Int, switchpoint: Int) {
        self.parent = parent
        self.switchpoint = switchpoint
    }

    /// A history file's lines; comments, blank and unreadable lines are skipped.
    public static func parse(history text: String) -> [TimelineSwitch] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count >= 2, let parent = Int(fields[0]), let lsn = LSN.parse(String(fields[1])) else { return nil }
            return TimelineSwitch(parent: parent, switchpoint: lsn)
        }
    }

    /// Whether a replica that replayed up to `replayed` on `timeline` went past the history
    /// `switches` of a newer timeline (Patroni's rule for a server in recovery): the switch
    /// where that history left the replica's line, nil when it can still follow. A timeline
    /// missing from the history is no ancestor of it: forked wherever it replayed to, and the
    /// switch named is the last one the two lines shared.
    public static func forkPassed(_ switches: [TimelineSwitch], timeline: Int, replayed: Int) -> TimelineSwitch? {
        guard let first = switches.first else { return nil }
        if let own = switches.first(where: { $0.parent == timeline }) { return replayed > own.switchpoint ? own : nil }
        return switches.last(where: { $0.parent < timeline }) ?? first
    }
}

extension PostgresNode {
    /// The timeline this running server replays or writes, from `IDENTIFY_SYSTEM` over a
    /// replication connection to itself (what Patroni asks: pg_control and the WAL receiver
    /// lag behind a replica's replay).
    public func currentTimeline() async throws -> Int {
        let rows = try await replicationQuery(toConnURL: connURL, "IDENTIFY_SYSTEM")
        guard let text = rows.first?[1], let timeline = Int(text) else { throw PostgresError("IDENTIFY_SYSTEM returned no timeline") }
        return timeline
    }

    /// The history of `timeline` from this data directory's `pg_wal` (a promotion writes it
    /// there), as Patroni reads it; nil when the file cannot be read.
    public func localTimelineHistory(timeline: Int) -> [TimelineSwitch]? {
        let path = settings.dataDir + "/pg_wal/" + String(format: "%08X", timeline) + ".history"
        return (try? String(contentsOfFile: path, encoding: .utf8)).map(TimelineSwitch.parse(history:))
    }

    /// The history of `timeline` on the member at `url` (`TIMELINE_HISTORY`), as the
    /// replication user, who may read it wherever it may stream.
    public func timelineHistory(fromConnURL url: String, timeline: Int) async throws -> [TimelineSwitch] {
        let rows = try await replicationQuery(toConnURL: url, "TIMELINE_HISTORY \(timeline)")
        guard let text = rows.first?[1] else { throw PostgresError("TIMELINE_HISTORY \(timeline) returned no file") }
        return TimelineSwitch.parse(history: text)
    }

    private func replicationQuery(toConnURL url: String, _ command: String) async throws -> [[String?]] {
        let connection = try await replicationConnection(toConnURL: url)
        defer { Task { await connection.close() } }
        return try await connection.query(command)
    }
}
