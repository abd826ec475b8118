import StorkConfig
import StorkPostgres

/// How far a member's WAL has come, as the leader race compares members.
public struct WALStanding: Sendable, Equatable {
    /// The most WAL it has (received or replayed).
    public var wal: Int
    public var replayed: Int
    public var paused: Bool

    public init(wal: Int, replayed: Int, paused: Bool) {
        self.wal = wal
        self.replayed = replayed
        self.paused = paused
    }

    /// More WAL first; then a replay that is not paused; then more of it replayed.
    var rank: (Int, Int, Int) { (wal, paused ? 0 : 1, replayed) }
}

/// What another member's `GET /patroni` says about it for the leader race.
public enum PeerReport: Sendable, Equatable {
    /// It runs as a primary (role primary or master, with a WAL location).
    case primary
    case replica(WALStanding)
    /// It answered without a position to compare (still starting, say): left out of the race.
    case noPosition

    /// Reads Patroni's status document (`role`, `xlog.received_location`,
    /// `xlog.replayed_location`, `xlog.paused`, `xlog.location`).
    public init(status doc: JSONValue) {
        let xlog = doc["xlog"]
        if doc["role"]?.scalarText == "primary" || doc["role"]?.scalarText == "master", xlog?["location"] != nil {
            self = .primary
            return
        }
        guard let received = xlog?["received_location"]?.intValue ?? xlog?["replayed_location"]?.intValue else {
            self = .noPosition
            return
        }
        let replayed = xlog?["replayed_location"]?.intValue ?? received
        self = .replica(WALStanding(wal: max(received, replayed), replayed: replayed, paused: xlog?["paused"] == .bool(true)))
    }
}

/// Why a member whose own WAL stands at `mine` must not lead because it is more than
/// `maxLag` bytes (`maximum_lag_on_failover`) behind the last leader's position, or nil.
public func lagObjection(mine: WALStanding, leaderOptime: Int?, maxLag: Int) -> String? {
    guard let optime = leaderOptime, optime - mine.wal > maxLag else { return nil }
    return "my WAL position \(LSN.format(mine.wal)) is \(optime - mine.wal) bytes behind the last leader's \(LSN.format(optime)) (maximum_lag_on_failover \(maxLag))"
}

/// Why a member on timeline `mine` must not lead a cluster whose history has reached
/// `cluster`: the newer timeline's transactions are not on this member, and leading would lose
/// them (Patroni's `check_timeline`; Stork always checks). Nil when it is not behind or either
/// is unknown.
public func timelineObjection(mine: Int?, cluster: Int?) -> String? {
    guard let mine, let cluster, mine < cluster else { return nil }
    return "my timeline \(mine) is behind the cluster's timeline \(cluster): leading would lose the transactions of timeline \(cluster)"
}

/// Why member `peer`'s report keeps a member whose WAL stands at `mine` from leading, or nil:
/// the peer still runs as a primary, or it is ahead (more WAL; the same WAL and a replay
/// that is not paused where this one's is; or more of it replayed).
public func peerObjection(_ peer: String, _ report: PeerReport, mine: WALStanding) -> String? {
    switch report {
    case .primary:
        return "\(peer) still runs as a primary"
    case .noPosition:
        return nil
    case .replica(let theirs):
        guard theirs.rank > mine.rank else { return nil }
        let notPaused = !theirs.paused && mine.paused ? ", not paused" : ""
        return "\(peer) is ahead (WAL \(LSN.format(theirs.wal)), replayed \(LSN.format(theirs.replayed))\(notPaused)) of me (\(LSN.format(mine.wal)), replayed \(LSN.format(mine.replayed))\(mine.paused ? ", paused" : ""))"
    }
}
