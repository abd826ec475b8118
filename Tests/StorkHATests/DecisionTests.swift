import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkHA
import StorkPostgres

private func member(_ name: String, state: String = "running", role: String = "replica", xlog: Int = 0,
                    tags: [String: JSONValue] = [:], connURL: String? = nil, streaming: Bool = false) -> Member {
    var data: [String: JSONValue] = ["state": .string(state), "role": .string(role), "xlog_location": .int(xlog),
                                     "conn_url": .string(connURL ?? "postgres://127.0.0.1:5432/postgres")]
    if streaming { data["replication_state"] = .string("streaming") }
    if connURL == "" { data["conn_url"] = nil }
    if !tags.isEmpty { data["tags"] = .object(tags) }
    return Member(name: name, data: .object(data))
}

private let empty = LocalSnapshot(dataDirectory: .empty)
private let stoppedReplica = LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001")
private let stoppedPrimary = LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001", wasPrimary: true)
private let runningPrimary = LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001", wasPrimary: true,
                                           running: true, inRecovery: false)
private let runningReplica = LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001", running: true, inRecovery: true)
/// A running replica that follows `upstream` already (nil: nobody).
private func replica(following upstream: String?, version: Int = 150000) -> LocalSnapshot {
    var local = runningReplica
    local.followed = .some(upstream)
    local.serverVersion = version
    return local
}
/// A running server that does not answer; pg_control says primary (`wasPrimary`) or not.
private func unreadable(primary: Bool, tooLong: Bool = false) -> LocalSnapshot {
    var local = LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001", wasPrimary: primary, running: true)
    local.queryError = "password authentication failed"
    local.unreadableTooLong = tooLong
    return local
}
private let leaderView = ClusterView(initialize: "7001", leader: "pg0", members: [member("pg0", role: "primary")])

struct DecisionCase: CustomTestStringConvertible, Sendable {
    var label: String
    var snapshot: Snapshot
    var expected: Decision
    var testDescription: String { label }
}

private func standby(_ s: Snapshot) -> Snapshot {
    var s = s
    s.remotePrimary = "remote primary 10.0.0.9:5432"
    return s
}

private let halfSynced: LocalSnapshot = {
    var local = stoppedReplica
    local.halfSynced = true
    return local
}()

private let demotedReplica: LocalSnapshot = {
    var local = replica(following: nil)
    local.divergenceUnchecked = true
    return local
}()

private let forkedReplica: LocalSnapshot = {
    var local = replica(following: "pg0")
    local.forkedFromLeader = "forked"
    return local
}()

private let overdueLeader: LocalSnapshot = {
    var local = stoppedPrimary
    local.primaryStartOverdue = true
    return local
}()
private let leaderAndReplica = ClusterView(initialize: "7001", leader: "pg0", members: [member("pg0", role: "primary"), member("pg1")])

private let cases: [DecisionCase] = [
    .init(label: "the leader's server has not started within primary_start_timeout, a replica runs: give the key back",
          snapshot: Snapshot(me: "pg0", cluster: leaderAndReplica, local: overdueLeader), expected: .giveUpPrimaryStart),
    .init(label: "the leader's server overdue, nobody else to take over: keep trying",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: overdueLeader), expected: .startPrimary),
    .init(label: "the leader, a failover key naming another member as the leader: clear it, keep leading",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001", leader: "pg0", members: [member("pg0", role: "primary")],
                                                             failover: ManualFailover(leader: "pg9", candidate: "pg2")), local: runningPrimary),
          expected: .holdLeaderClearingFailover(reason: "it names pg9 as the leader, and pg0 leads")),
    .init(label: "a replica demoted from primary before any leader was known: rejoin the leader, checking for a fork",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: demotedReplica), expected: .rejoinAfterDemotion(leader: "pg0")),
    .init(label: "a replica that replayed past where the leader's timeline forked off its own: rejoin, never just follow",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: forkedReplica), expected: .rejoinForked(leader: "pg0", reason: "forked")),
    .init(label: "a data directory half re-synced in place: sync it again from the leader, never start it",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: halfSynced), expected: .clone(from: "pg0", isLeader: true)),
    .init(label: "a data directory half re-synced, no leader: wait, never start it",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: halfSynced), expected: .waitForLeader),
    .init(label: "a primary that does not answer, holding the key: keep it for retry_timeout",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: unreadable(primary: true)),
          expected: .holdUnreadablePrimary(error: "password authentication failed")),
    .init(label: "a primary that has not answered for retry_timeout: stop it",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: unreadable(primary: true, tooLong: true)),
          expected: .stopUnreadablePrimary(error: "password authentication failed")),
    .init(label: "a primary that does not answer, without the key: stop it at once (never race, never promote)",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: unreadable(primary: true)),
          expected: .stopUnreadablePrimary(error: "password authentication failed")),
    .init(label: "a replica that does not answer, nobody leads: the race (which it cannot win without an answer)",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: unreadable(primary: false)),
          expected: .leaderRace),
    .init(label: "standby cluster, stopped, holding the leader key: start as the standby leader",
          snapshot: standby(Snapshot(me: "pg0", cluster: leaderView, local: stoppedReplica)), expected: .startStandbyLeader),
    .init(label: "standby cluster, a running standby holding the leader key: the standby leader",
          snapshot: standby(Snapshot(me: "pg0", cluster: leaderView, local: replica(following: "remote primary 10.0.0.9:5432"))),
          expected: .holdStandbyLeader),
    .init(label: "standby cluster, the standby leader not following the remote primary yet: restart it so",
          snapshot: standby(Snapshot(me: "pg0", cluster: leaderView, local: replica(following: "pg1"))), expected: .restartStandbyLeader),
    .init(label: "standby cluster, a new agent beside the standby leader: restart it following the remote primary",
          snapshot: standby(Snapshot(me: "pg0", cluster: leaderView, local: runningReplica)), expected: .restartStandbyLeader),
    .init(label: "standby cluster, a running standby, another member leads: follow it",
          snapshot: standby(Snapshot(me: "pg1", cluster: leaderView, local: replica(following: "pg0"))), expected: .follow(leader: "pg0")),
    .init(label: "standby cluster, empty dir, empty DCS: race to bootstrap (from the remote primary)",
          snapshot: standby(Snapshot(me: "pg0", cluster: ClusterView(), local: empty)), expected: .bootstrap),
    .init(label: "a long task runs: wait for it",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: empty, runningTask: "bootstrap from leader 'pg0'"),
          expected: .waitForTask("bootstrap from leader 'pg0'")),
    .init(label: "empty dir, empty DCS: race to bootstrap",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(), local: empty), expected: .bootstrap),
    .init(label: "empty dir, empty DCS, nofailover: never bootstrap",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(), local: empty, mayLead: false), expected: .waitForLeader),
    .init(label: "empty dir, empty DCS, no bootstrap section: wait",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(), local: empty, mayBootstrap: false), expected: .waitForLeader),
    .init(label: "empty dir, bootstrap running elsewhere (initialize is empty): wait",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: ""), local: empty), expected: .waitForLeader),
    .init(label: "empty dir, initialize set, no leader: wait",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: empty), expected: .waitForLeader),
    .init(label: "empty dir, initialize set, no leader, a no_leader method: clone without a leader",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: empty, mayCloneWithoutLeader: true),
          expected: .clone(from: nil, isLeader: false)),
    .init(label: "empty dir, no initialize, may not bootstrap, a no_leader method: clone without a leader",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(), local: empty, mayBootstrap: false, mayCloneWithoutLeader: true),
          expected: .clone(from: nil, isLeader: false)),
    .init(label: "empty dir, bootstrap running elsewhere, a no_leader method: wait for it",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: ""), local: empty, mayCloneWithoutLeader: true),
          expected: .waitForLeader),
    .init(label: "empty dir, leader running: clone from the leader",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: empty), expected: .clone(from: "pg0", isLeader: true)),
    .init(label: "empty dir, leader's member key has no conn_url: wait",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001", leader: "pg0",
                                                             members: [member("pg0", role: "primary", connURL: "")]), local: empty),
          expected: .waitForLeader),
    .init(label: "empty dir, leader not running yet: wait",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001", leader: "pg0",
                                                             members: [member("pg0", state: "starting", role: "primary")]), local: empty),
          expected: .waitForLeader),
    .init(label: "empty dir, a running clonefrom replica: clone from the most advanced one",
          snapshot: Snapshot(me: "pg3", cluster: ClusterView(initialize: "7001", leader: "pg0", members: [
              member("pg0", role: "primary", xlog: 900),
              member("pg1", xlog: 100, tags: ["clonefrom": .bool(true)]),
              member("pg2", xlog: 500, tags: ["clonefrom": .bool(true)]),
              member("pg4", xlog: 800),
          ]), local: empty),
          expected: .clone(from: "pg2", isLeader: false)),
    .init(label: "empty dir, clonefrom replicas: a streaming one before a more advanced one that is not",
          snapshot: Snapshot(me: "pg3", cluster: ClusterView(initialize: "7001", leader: "pg0", members: [
              member("pg0", role: "primary", xlog: 900),
              member("pg1", xlog: 100, tags: ["clonefrom": .bool(true)], streaming: true),
              member("pg2", xlog: 500, tags: ["clonefrom": .bool(true)]),
          ]), local: empty),
          expected: .clone(from: "pg1", isLeader: false)),
    .init(label: "empty dir, clonefrom member not running: the leader",
          snapshot: Snapshot(me: "pg3", cluster: ClusterView(initialize: "7001", leader: "pg0", members: [
              member("pg0", role: "primary"), member("pg1", state: "stopped", tags: ["clonefrom": .bool(true)]),
          ]), local: empty),
          expected: .clone(from: "pg0", isLeader: true)),
    .init(label: "our own unfinished clone: remove it first, whatever the DCS says",
          snapshot: Snapshot(me: "pg1", cluster: leaderView,
                             local: LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "7001", incompleteWork: true)),
          expected: .removeIncompleteWork),
    .init(label: "unusable data directory: never start or remove it",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: LocalSnapshot(dataDirectory: .unusable("no PG_VERSION"))),
          expected: .unusableDataDirectory("no PG_VERSION")),
    .init(label: "data from another cluster: mismatch",
          snapshot: Snapshot(me: "pg1", cluster: leaderView,
                             local: LocalSnapshot(dataDirectory: .initialized, systemIdentifier: "6999")),
          expected: .systemIDMismatch(data: "6999", dcs: "7001")),
    .init(label: "data, but no initialize key and no leader: record ours",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(), local: stoppedPrimary), expected: .claimInitialize("7001")),
    .init(label: "stopped, I hold the leader key: start as primary",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: stoppedPrimary), expected: .startPrimary),
    .init(label: "stopped former primary, nobody holds the key: start read-only, then race",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: stoppedPrimary),
          expected: .startReplica(leader: nil)),
    .init(label: "stopped former primary, nofailover: start as a replica",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: stoppedPrimary, mayLead: false),
          expected: .startReplica(leader: nil)),
    .init(label: "stopped former primary, another leader: rejoin as its replica (rewound or rebuilt if diverged)",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: stoppedPrimary), expected: .rejoin(leader: "pg0")),
    .init(label: "stopped replica: start following the leader",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: stoppedReplica), expected: .startReplica(leader: "pg0")),
    .init(label: "running primary with the key: hold it",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: runningPrimary), expected: .holdLeader),
    .init(label: "running primary, no key: take it",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: runningPrimary), expected: .acquireLeader),
    .init(label: "running primary, nofailover, no key: step down",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: runningPrimary, mayLead: false),
          expected: .demote(leader: nil)),
    .init(label: "running primary while another holds the key: step down",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: runningPrimary), expected: .demote(leader: "pg0")),
    .init(label: "running replica: follow the leader",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: replica(following: "pg0")), expected: .follow(leader: "pg0")),
    .init(label: "running replica following another member, PostgreSQL 13+: retarget by reload",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: replica(following: "pg2")), expected: .retarget(leader: "pg0", byReload: true)),
    .init(label: "running replica following nobody, PostgreSQL 12: retarget by restart",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: replica(following: nil, version: 120000)),
          expected: .retarget(leader: "pg0", byReload: false)),
    .init(label: "running replica, the agent does not know whom it follows: retarget",
          snapshot: Snapshot(me: "pg1", cluster: leaderView, local: { var l = runningReplica; l.serverVersion = 150000; return l }()),
          expected: .retarget(leader: "pg0", byReload: true)),
    .init(label: "running replica, no leader: the leader race",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: runningReplica), expected: .leaderRace),
    .init(label: "running replica holding the key (demoted while the DCS was away): lead again",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: runningReplica), expected: .promoteHoldingKey),
    .init(label: "running replica holding the key, nofailover: follow nobody, never promote",
          snapshot: Snapshot(me: "pg0", cluster: leaderView, local: replica(following: nil), mayLead: false), expected: .follow(leader: nil)),
    .init(label: "the leader and a switchover to pg1: step down",
          snapshot: Snapshot(me: "pg0", cluster: { var v = leaderView; v.members.append(member("pg1")); v.failover = ManualFailover(leader: "pg0", candidate: "pg1"); return v }(),
                             local: runningPrimary), expected: .stepDown(candidate: "pg1")),
    .init(label: "the leader and a switchover to a stopped pg1: the request is dropped",
          snapshot: Snapshot(me: "pg0", cluster: { var v = leaderView; v.members.append(member("pg1", state: "stopped")); v.failover = ManualFailover(leader: "pg0", candidate: "pg1"); return v }(),
                             local: runningPrimary), expected: .holdLeaderClearingFailover(reason: "no healthy members found, switchover is not possible")),
    .init(label: "the leader and a switchover to anyone, the only replica nofailover: the request is dropped",
          snapshot: Snapshot(me: "pg0", cluster: { var v = leaderView; v.members.append(member("pg1", tags: ["nofailover": .bool(true)])); v.failover = ManualFailover(leader: "pg0", candidate: nil); return v }(),
                             local: runningPrimary), expected: .holdLeaderClearingFailover(reason: "no healthy members found, switchover is not possible")),
    .init(label: "the leader and a switchover scheduled in 11 s (loop_wait 10): hold the key, wait",
          snapshot: scheduled(in: 11), expected: .awaitScheduledSwitchover(at: Date(timeIntervalSince1970: 1_000_011))),
    .init(label: "the leader and a switchover due within loop_wait: step down",
          snapshot: scheduled(in: 9), expected: .stepDown(candidate: "pg1")),
    .init(label: "the leader and a switchover 14 s past: still carried out",
          snapshot: scheduled(in: -14), expected: .stepDown(candidate: "pg1")),
    .init(label: "the leader and a switchover more than 1.5 loop_wait past: dropped",
          snapshot: scheduled(in: -16),
          expected: .holdLeaderClearingFailover(reason: "Found a stale switchover value, cleaning up: \(DateText.isoformat(Date(timeIntervalSince1970: 999_984)))")),
    .init(label: "paused, the leader and a switchover due now: nothing scheduled runs while paused",
          snapshot: paused(scheduled(in: 0)), expected: .pausedHoldLeader),
    .init(label: "no leader, a failover to another running member: wait for it",
          snapshot: Snapshot(me: "pg2", cluster: ClusterView(initialize: "7001", members: [Member(name: "pg1", data: .object(["state": .string("running")]))],
                                                             failover: ManualFailover(leader: "pg0", candidate: "pg1")),
                             local: replica(following: nil)), expected: .follow(leader: nil)),
    .init(label: "no leader, the leader that stepped down stays out of the race",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001", failover: ManualFailover(leader: "pg0", candidate: nil)),
                             local: replica(following: nil)), expected: .follow(leader: nil)),
    .init(label: "the leader that stepped down, still following the old leader: follow nobody",
          snapshot: Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001", failover: ManualFailover(leader: "pg0", candidate: nil)),
                             local: replica(following: "pg1")), expected: .retarget(leader: nil, byReload: true)),
    .init(label: "running replica, nofailover, no leader: no upstream, no race",
          snapshot: Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: replica(following: nil), mayLead: false),
          expected: .follow(leader: nil)),
]

private func paused(_ s: Snapshot) -> Snapshot {
    var s = s
    s.paused = true
    return s
}

/// Maintenance mode: nothing started, stopped, promoted or demoted by the agent itself.
private let pausedCases: [DecisionCase] = [
    .init(label: "paused, empty data directory, no cluster: no bootstrap",
          snapshot: paused(Snapshot(me: "pg0", cluster: ClusterView(), local: empty)), expected: .paused("running with empty data directory")),
    .init(label: "paused, empty data directory, a leader: no clone",
          snapshot: paused(Snapshot(me: "pg1", cluster: leaderView, local: empty)), expected: .paused("running with empty data directory")),
    .init(label: "paused, the leader's server stopped: the key goes back, the server stays stopped",
          snapshot: paused(Snapshot(me: "pg0", cluster: leaderView, local: stoppedPrimary)),
          expected: .releaseLeaderKey(reason: "postgres is not running")),
    .init(label: "paused, a replica's server stopped: not started",
          snapshot: paused(Snapshot(me: "pg1", cluster: leaderView, local: stoppedReplica)), expected: .paused("postgres is not running")),
    .init(label: "paused, the running primary with the key: kept, never demoted",
          snapshot: paused(Snapshot(me: "pg0", cluster: leaderView, local: runningPrimary)), expected: .pausedHoldLeader),
    .init(label: "paused, a running primary while another holds the key: left running",
          snapshot: paused(Snapshot(me: "pg1", cluster: leaderView, local: runningPrimary)),
          expected: .paused("continue to run as primary without lock")),
    .init(label: "paused, a running primary and no key: takes it, no race",
          snapshot: paused(Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001"), local: runningPrimary)), expected: .pausedTakeLeader),
    .init(label: "paused, a running replica and no leader: no race, left as it is",
          snapshot: paused(Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001"), local: replica(following: "pg0"))),
          expected: .paused("no action. I am (pg1)")),
    .init(label: "paused, a replica that follows the leader: still follows",
          snapshot: paused(Snapshot(me: "pg1", cluster: leaderView, local: replica(following: "pg0"))), expected: .follow(leader: "pg0")),
    .init(label: "paused, a replica of another member: retargets to the leader",
          snapshot: paused(Snapshot(me: "pg1", cluster: leaderView, local: replica(following: "pg2"))),
          expected: .retarget(leader: "pg0", byReload: true)),
    .init(label: "paused, a manual switchover to pg1: the leader steps down",
          snapshot: paused(Snapshot(me: "pg0", cluster: ClusterView(initialize: "7001", leader: "pg0", members: [member("pg0", role: "primary"), member("pg1")],
                                                                    failover: ManualFailover(leader: "pg0", candidate: "pg1")), local: runningPrimary)),
          expected: .stepDown(candidate: "pg1")),
    .init(label: "paused, the named candidate with no leader: races",
          snapshot: paused(Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001", members: [member("pg1")],
                                                                    failover: ManualFailover(leader: "pg0", candidate: "pg1")), local: replica(following: nil))),
          expected: .leaderRace),
    .init(label: "paused, a replica holding the key: gives it back, no promotion",
          snapshot: paused(Snapshot(me: "pg1", cluster: ClusterView(initialize: "7001", leader: "pg1"), local: replica(following: nil))),
          expected: .releaseLeaderKey(reason: "postgres is not running as primary")),
    .init(label: "paused, a data directory of another cluster: not fatal",
          snapshot: paused(Snapshot(me: "pg1", cluster: ClusterView(initialize: "7999", leader: "pg0"), local: stoppedReplica)),
          expected: .paused("system ID has changed while in paused mode: 7001 != 7999; Stork will exit when resuming unless it is reset")),
    .init(label: "paused, a long task runs: it is waited for",
          snapshot: paused(Snapshot(me: "pg0", cluster: leaderView, local: runningPrimary, runningTask: "restart")), expected: .waitForTask("restart")),
]

/// pg0 leads and a switchover to pg1 is scheduled `seconds` from the snapshot's time.
private func scheduled(in seconds: Double) -> Snapshot {
    var view = leaderView
    view.members.append(member("pg1"))
    view.failover = ManualFailover(leader: "pg0", candidate: "pg1", scheduledAt: Date(timeIntervalSince1970: 1_000_000 + seconds))
    var s = Snapshot(me: "pg0", cluster: view, local: runningPrimary)
    s.now = Date(timeIntervalSince1970: 1_000_000)
    return s
}

@Suite("The agent's decision table")
struct DecisionTests {
    @Test(arguments: cases)
    func decision(_ c: DecisionCase) {
        #expect(decide(c.snapshot) == c.expected)
    }

    @Test(arguments: pausedCases)
    func pausedDecision(_ c: DecisionCase) {
        #expect(decide(c.snapshot) == c.expected)
    }
}

@Suite("Recovery starts with pg_control's settings when configured lower")
struct RecoveryParameterFloorTests {
    @Test func floor() {
        let control = ControlData(systemIdentifier: "1", clusterState: "in archive recovery", timeline: 1, checkpointLSN: 0, fields: [
            "max_connections setting": "100", "max_worker_processes setting": "8", "max_wal_senders setting": "10",
            "max_prepared_xacts setting": "5", "max_locks_per_xact setting": "64",
        ])
        let raised = recoveryParameterFloor(configured: ["max_connections": .int(30), "max_wal_senders": .string("20")], control: control)
        #expect(raised == ["max_connections": .int(100), "max_prepared_transactions": .int(5)])
        #expect(recoveryParameterFloor(configured: ["max_connections": .int(200), "max_prepared_transactions": .int(10)], control: control) == [:])
    }
}
