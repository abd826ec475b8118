import Foundation
import Testing
import StorkConfig
import StorkHA

@Suite("The leader race: the healthiest member")
struct HealthiestTests {
    let mine = WALStanding(wal: 0x3000000, replayed: 0x3000000, paused: false)

    @Test func lagAgainstTheLastLeader() {
        #expect(lagObjection(mine: mine, leaderOptime: nil, maxLag: 0) == nil)
        #expect(lagObjection(mine: mine, leaderOptime: 0x3000000 + 1_048_576, maxLag: 1_048_576) == nil)
        let far = lagObjection(mine: mine, leaderOptime: 0x3000000 + 1_048_577, maxLag: 1_048_576)
        #expect(far == "my WAL position 0/3000000 is 1048577 bytes behind the last leader's 0/3100001 (maximum_lag_on_failover 1048576)")
    }

    @Test(arguments: [
        // (their wal, replayed, paused; my paused; objects)
        (0x3000001, 0x3000000, false, false, true),   // more WAL
        (0x2FFFFFF, 0x2FFFFFF, false, false, false),  // less WAL
        (0x3000000, 0x3000000, false, false, false),  // a tie: nobody is ahead, both may race
        (0x3000000, 0x3000000, false, true, true),    // same WAL, mine paused, theirs not
        (0x3000000, 0x3000000, true, false, false),   // same WAL, theirs paused
        (0x3000000, 0x3000000, true, true, false),    // both paused, same replay
    ])
    func peerAhead(_ c: (Int, Int, Bool, Bool, Bool)) {
        let me = WALStanding(wal: mine.wal, replayed: mine.replayed, paused: c.3)
        let theirs = WALStanding(wal: c.0, replayed: c.1, paused: c.2)
        #expect((peerObjection("pg2", .replica(theirs), mine: me) != nil) == c.4)
    }

    @Test func moreReplayedWins() {
        let me = WALStanding(wal: 0x3000000, replayed: 0x2000000, paused: true)
        let theirs = WALStanding(wal: 0x3000000, replayed: 0x2800000, paused: true)
        #expect(peerObjection("pg2", .replica(theirs), mine: me)
                == "pg2 is ahead (WAL 0/3000000, replayed 0/2800000) of me (0/3000000, replayed 0/2000000, paused)")
        #expect(peerObjection("pg2", .replica(me), mine: theirs) == nil)
    }

    @Test func aPrimaryOrAMemberWithoutPosition() {
        #expect(peerObjection("pg0", .primary, mine: mine) == "pg0 still runs as a primary")
        #expect(peerObjection("pg3", .noPosition, mine: mine) == nil)
    }

    @Test func readsPatronisStatus() throws {
        func report(_ json: String) throws -> PeerReport { PeerReport(status: try #require(JSONValue.parse(json: Data(json.utf8)))) }
        #expect(try report(#"{"role":"primary","xlog":{"location":50331648}}"#) == .primary)
        #expect(try report(#"{"role":"master","xlog":{"location":1}}"#) == .primary)
        // A primary without a location (stopping) is not counted as one.
        #expect(try report(#"{"role":"primary","xlog":{}}"#) == .noPosition)
        #expect(try report(#"{"role":"replica","xlog":{"received_location":200,"replayed_location":150,"paused":true}}"#)
                == .replica(WALStanding(wal: 200, replayed: 150, paused: true)))
        #expect(try report(#"{"role":"replica","xlog":{"replayed_location":150}}"#)
                == .replica(WALStanding(wal: 150, replayed: 150, paused: false)))
        // Replay ahead of what was received (restored from the archive): the most WAL counts.
        #expect(try report(#"{"role":"replica","xlog":{"received_location":100,"replayed_location":150}}"#)
                == .replica(WALStanding(wal: 150, replayed: 150, paused: false)))
        #expect(try report(#"{"role":"replica","state":"starting"}"#) == .noPosition)
    }
}

@Suite("The leader race: a member behind the cluster's timeline never leads")
struct TimelineObjectionTests {
    @Test func behindObjectsAtOrAheadDoesNot() {
        #expect(timelineObjection(mine: 1, cluster: 2) == "my timeline 1 is behind the cluster's timeline 2: leading would lose the transactions of timeline 2")
        #expect(timelineObjection(mine: 2, cluster: 2) == nil)
        #expect(timelineObjection(mine: 3, cluster: 2) == nil)
        #expect(timelineObjection(mine: nil, cluster: 2) == nil)
        #expect(timelineObjection(mine: 1, cluster: nil) == nil)
    }
}
