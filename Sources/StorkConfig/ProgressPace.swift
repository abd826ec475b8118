import Foundation
import Synchronization

/// When a long task's next progress line is due: at most one every `interval` seconds (10 by
/// default, so a long copy or replay tells its progress without flooding the log). Safe to
/// ask from the callbacks of concurrent work.
public final class ProgressPace: Sendable {
    let interval: Double
    let last: Mutex<Date>

    /// `firstNow`: the first ask is due at once (a wait that should say at once what it waits
    /// for), else one interval after creation.
    public init(every interval: Double = 10, firstNow: Bool = false) {
        self.interval = interval
        self.last = Mutex(firstNow ? .distantPast : Date())
    }

    /// True, and the clock restarts, when `interval` has passed since the last true.
    public func due() -> Bool {
        last.withLock { last in
            guard Date().timeIntervalSince(last) >= interval else { return false }
            last = Date()
            return true
        }
    }
}
