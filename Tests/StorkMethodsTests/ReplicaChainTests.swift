import Logging
import Synchronization
import Testing
import StorkConfig
@testable import StorkMethods

/// The chain with fake attempts: which method runs when, how often, and what the chain says.
@Suite("The replica-method chain: fallback, retries, exit status 75")
struct ReplicaChainTests {
    func spec(_ name: String, retries: Int = 0) -> ReplicaMethodSpec {
        var s = ReplicaMethodSpec(name: name, kind: .custom(command: ["/bin/true"]))
        s.retries = retries
        return s
    }

    /// Runs the chain where `results[name]` are the attempts' results in turn (the last one
    /// repeats); returns the outcome, the attempts made (`name#n/of`) and the methods given up.
    func run(_ methods: [ReplicaMethodSpec], _ results: [String: [AttemptResult]]) async -> (ReplicaBuildOutcome, [String], [String]) {
        let made = Mutex<[String]>([]), gaveUp = Mutex<[String]>([])
        let chain = ReplicaChain(methods: methods, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), pause: { _ in 0 })
        let outcome = await chain.run(plan: { $0.name }, attempt: { spec, planned, number, attempts in
            made.withLock { $0.append("\(planned)#\(number)/\(attempts)") }
            let list = results[spec.name] ?? [.failed("no result")]
            return list[min(number, list.count) - 1]
        }, gaveUp: { _, planned in gaveUp.withLock { $0.append(planned) } })
        return (outcome, made.withLock { $0 }, gaveUp.withLock { $0 })
    }

    @Test func theFirstMethodThatSucceedsEndsTheChain() async {
        let (outcome, made, gaveUp) = await run([spec("wal_e"), spec("basebackup"), spec("rsync")],
                                                ["wal_e": [.failed("no backup")], "basebackup": [.succeeded], "rsync": [.succeeded]])
        #expect(outcome == .built(method: "basebackup"))
        #expect(made == ["wal_e#1/1", "basebackup#1/1"])
        #expect(gaveUp == ["wal_e"])
    }

    @Test func retriesBeforeMovingOn() async {
        let (outcome, made, gaveUp) = await run([spec("wal_e", retries: 2), spec("basebackup")],
                                                ["wal_e": [.failed("a"), .failed("b"), .failed("c")], "basebackup": [.failed("d")]])
        #expect(outcome == .failed("wal_e: c; basebackup: d"))
        #expect(made == ["wal_e#1/3", "wal_e#2/3", "wal_e#3/3", "basebackup#1/1"])
        #expect(gaveUp == ["wal_e", "basebackup"])
    }

    @Test func aRetryThatSucceeds() async {
        let (outcome, made, gaveUp) = await run([spec("basebackup", retries: 3)], ["basebackup": [.failed("reset"), .succeeded]])
        #expect(outcome == .built(method: "basebackup"))
        #expect(made == ["basebackup#1/4", "basebackup#2/4"])
        #expect(gaveUp.isEmpty)
    }

    @Test func exitStatus75TriesTheSameMethodAgainThenWaits() async {
        // 75 (EX_TEMPFAIL) on every attempt: the chain does not move on to the next method.
        let (outcome, made, gaveUp) = await run([spec("pgbackrest", retries: 1), spec("basebackup")],
                                                ["pgbackrest": [.tryLater("no backup yet")], "basebackup": [.succeeded]])
        #expect(outcome == .tryLater(method: "pgbackrest", reason: "no backup yet"))
        #expect(made == ["pgbackrest#1/2", "pgbackrest#2/2"])
        #expect(gaveUp.isEmpty)
        // 75 on the first attempt, then success on the retry.
        let (retried, _, _) = await run([spec("pgbackrest", retries: 1)], ["pgbackrest": [.tryLater("later"), .succeeded]])
        #expect(retried == .built(method: "pgbackrest"))
    }

    @Test func cancelledBeforeAnyAttempt() async {
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await run([spec("basebackup")], ["basebackup": [.succeeded]])
        }
        let (outcome, made, _) = await task.value
        #expect(outcome == .failed("cancelled"))
        #expect(made.isEmpty)
    }
}
