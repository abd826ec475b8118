import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkAPI
import StorkHA
import StorkPostgres

/// Patroni's health checks (rest_api.rst), each path against each kind of member.
@Suite("REST API health checks: every path, every role, lag and tag filters")
struct HealthCheckTests {
    let primary = status(state: "running", role: "primary", leader: true)
    let replica = status(state: "running", role: "replica", leader: false, inRecovery: true)
    let cloning = status(state: "creating replica", role: "uninitialized", leader: false)
    var standbyLeader: MemberStatus {
        var s = status(state: "running", role: "standby_leader", leader: true, inRecovery: true)
        s.standbyCluster = true
        return s
    }
    var standbyReplica: MemberStatus {
        var s = replica
        s.standbyCluster = true
        return s
    }
    /// A primary whose PostgreSQL stopped while it still holds the key.
    var keyHolderStopped: MemberStatus { status(state: "stopped", role: "primary", leader: true) }

    /// The member runs with `tags` (the agent publishes them in the status; a reload changes them).
    func code(_ path: String, _ s: MemberStatus, query: String? = nil, tags: [String: JSONValue] = [:]) -> Int? {
        var s = s
        s.tags = tags
        return HealthChecks.statusCode(path: path, query: HealthQuery(query), s, config: config(tags: [:]))
    }

    @Test func everyPathOnEveryRole() {
        // Columns: primary, replica, cloning, standby leader, a standby cluster's replica, a key holder whose server stopped.
        let table: [(paths: [String], codes: [Int])] = [
            (["/", "/primary", "/master", "/read-write"], [200, 503, 503, 503, 503, 503]),
            (["/leader"], [200, 503, 503, 200, 503, 200]),
            (["/standby-leader", "/standby_leader"], [503, 503, 503, 200, 503, 503]),
            (["/replica", "/async", "/asynchronous"], [503, 200, 503, 503, 200, 503]),
            (["/read-only"], [200, 200, 503, 200, 200, 503]),
            (["/read-only-sync", "/read-only-synchronous", "/read-only-quorum"], [200, 503, 503, 200, 503, 503]),
            (["/sync", "/synchronous", "/quorum"], [503, 503, 503, 503, 503, 503]),
            (["/health"], [200, 200, 503, 200, 200, 503]),
            (["/liveness"], [200, 200, 200, 200, 200, 200]),
            (["/readiness"], [200, 200, 503, 200, 200, 200]),
        ]
        let members = [("primary", primary), ("replica", replica), ("cloning", cloning), ("standby leader", standbyLeader),
                       ("standby replica", standbyReplica), ("stopped key holder", keyHolderStopped)]
        var covered = Set<String>()
        for (paths, codes) in table {
            for path in paths {
                covered.insert(path)
                for ((name, s), expected) in zip(members, codes) {
                    #expect(code(path, s) == expected, "\(path) on a \(name)")
                }
            }
        }
        #expect(covered == Set(HealthChecks.paths), "every path in the table")
        #expect(code("/patroni", primary) == nil && code("/nope", primary) == nil)
        // A primary that lost its key must not take writes through a load balancer.
        #expect(code("/primary", status(state: "running", role: "primary", leader: false)) == 503)
        #expect(code("/replica", replica, tags: ["noloadbalance": .bool(true)]) == 503)
        #expect(code("/read-only", replica, tags: ["noloadbalance": .bool(true)]) == 503)
        // A replica forked off the leader's timeline never catches up: not offered for reads.
        var forked = replica
        forked.cannotFollow = "it replayed timeline 1 past the fork"
        for path in ["/replica", "/read-only", "/readiness"] { #expect(code(path, forked) == 503, "\(path)") }
        #expect(code("/health", forked) == 200)
    }

    @Test func liveness() {
        var s = primary
        s.ttl = 30
        s.loopWait = 10
        let now = Date()
        s.lastCycle = now.addingTimeInterval(-39)
        #expect(HealthChecks.statusCode(path: "/liveness", s, config: config(), now: now) == 200)
        s.lastCycle = now.addingTimeInterval(-41)
        #expect(HealthChecks.statusCode(path: "/liveness", s, config: config(), now: now) == 503)
        // A replica is given twice the ttl.
        var r = replica
        r.ttl = 30
        r.loopWait = 10
        r.lastCycle = now.addingTimeInterval(-69)
        #expect(HealthChecks.statusCode(path: "/liveness", r, config: config(), now: now) == 200)
        r.lastCycle = nil
        #expect(HealthChecks.statusCode(path: "/liveness", r, config: config(), now: now) == 503)
    }

    @Test func lagLimits() {
        // Replayed 50,331,000; received 50,331,648; the leader published 60,331,000 (10,000,000 ahead of replay).
        var s = replica
        s.view = ClusterView(leaderOptime: 60_331_000)
        #expect(code("/replica", s) == 200)
        #expect(code("/replica", s, query: "lag=10000000") == 200)
        #expect(code("/replica", s, query: "lag=9999999") == 503)
        #expect(code("/replica", s, query: "lag=1MB") == 503)
        #expect(code("/replica", s, query: "lag=16MB") == 200)
        #expect(code("/async", s, query: "lag=1024kB") == 503)
        #expect(code("/read-only", s, query: "lag=1GB") == 200)
        // Unreadable: no limit (units are case-sensitive, as Patroni's).
        #expect(code("/replica", s, query: "lag=10mb") == 200)
        // Readiness: maximum_lag_on_failover unless lag= says otherwise; mode=write measures what was received.
        s.maximumLagOnFailover = 1_048_576
        #expect(code("/readiness", s) == 503)
        #expect(code("/readiness", s, query: "lag=20MB") == 200)
        s.view = ClusterView(leaderOptime: 50_331_648 + 100)
        #expect(code("/readiness", s) == 200)
        s.maximumLagOnFailover = 200
        #expect(code("/readiness", s) == 503, "648 bytes behind at replay")
        #expect(code("/readiness", s, query: "mode=write") == 200, "100 bytes behind at receipt")
        // Not streaming: not ready.
        var archive = replica
        archive.server?.streaming = false
        #expect(code("/readiness", archive) == 503)
    }

    @Test func tagFilters() {
        let tags: [String: JSONValue] = ["zone": .string("a"), "nofailover": .bool(true), "nosync": .bool(false), "weight": .int(3)]
        #expect(code("/replica", replica, query: "tag_zone=a", tags: tags) == 200)
        #expect(code("/replica", replica, query: "tag_zone=b", tags: tags) == 503)
        #expect(code("/replica", replica, query: "tag_rack=1", tags: tags) == 503)
        #expect(code("/replica", replica, query: "tag_nofailover=true", tags: tags) == 200)
        #expect(code("/replica", replica, query: "tag_nofailover=True", tags: tags) == 503)
        // A built-in tag that is false counts as not set.
        #expect(code("/replica", replica, query: "tag_nosync=false", tags: tags) == 503)
        #expect(code("/health", replica, query: "tag_weight=3&tag_zone=a", tags: tags) == 200)
        #expect(code("/health", replica, query: "tag_weight=3&tag_zone=c", tags: tags) == 503)
        // An empty value does not count; the first of a repeated key does.
        #expect(code("/replica", replica, query: "tag_rack=&tag_zone=a&tag_zone=b", tags: tags) == 200)
        // The leader's checks take no filters.
        #expect(code("/primary", primary, query: "tag_rack=1", tags: tags) == 200)
    }

    @Test(arguments: [("1048576", 1_048_576), ("16kB", 16_384), ("1.5MB", 1_572_864), (" 2 GB ", 2_147_483_648), ("0", 0), ("7B", 7)])
    func lagUnits(text: String, bytes: Int) {
        #expect(HealthQuery.bytes(text) == bytes)
    }

    @Test(arguments: ["", "abc", "10mb", "1 XB", "-5", "1e3", "MB", "1..2"])
    func unreadableLags(text: String) {
        #expect(HealthQuery.bytes(text) == nil)
    }
}
