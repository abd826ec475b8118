import Logging
import StorkConfig
import StorkPostgres

/// The chain's order apart from what an attempt does: each method in turn until one
/// succeeds, each with `retries` + 1 attempts and a pause between them; exit status 75 ends
/// the chain for now (try the same method later). `ReplicaBuilder` gives it real attempts;
/// the unit tests give it fake ones.
struct ReplicaChain {
    var methods: [ReplicaMethodSpec]
    var logger: Logger
    /// Seconds to wait before attempt `n + 1` of a method.
    var pause: @Sendable (Int) -> Double = ReplicaBuilder.pause(afterAttempt:)

    /// `plan(spec)` is worked out once per method, before its first attempt (where it builds);
    /// `attempt(spec, plan, number, attempts)` runs one attempt; `gaveUp(spec, plan)` is told
    /// when a method failed its last attempt and the chain moves on.
    func run<Plan>(plan: (ReplicaMethodSpec) -> Plan, attempt: (ReplicaMethodSpec, Plan, Int, Int) async -> AttemptResult,
                   gaveUp: (ReplicaMethodSpec, Plan) -> Void = { _, _ in }) async -> ReplicaBuildOutcome {
        var failures: [String] = []
        for spec in methods {
            if Task.isCancelled { break }
            let planned = plan(spec)
            let attempts = spec.retries + 1
            for number in 1...attempts {
                if Task.isCancelled { break }
                switch await attempt(spec, planned, number, attempts) {
                case .succeeded:
                    logger.info("replica has been created using \(spec.name)")
                    return .built(method: spec.name)
                case .failed(let reason):
                    logger.error("Error creating replica using method \(spec.name) (attempt \(number) of \(attempts)): \(reason)")
                    if number == attempts {
                        failures.append("\(spec.name): \(oneLine(reason))")
                        gaveUp(spec, planned)
                    }
                case .tryLater(let reason):
                    logger.warning("method \(spec.name) asks to be tried again later (exit status 75, attempt \(number) of \(attempts)): \(reason)")
                    if number == attempts { return .tryLater(method: spec.name, reason: oneLine(reason)) }
                }
                if number < attempts && !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(pause(number)))
                }
            }
        }
        return .failed(failures.isEmpty ? "cancelled" : failures.joined(separator: "; "))
    }
}
