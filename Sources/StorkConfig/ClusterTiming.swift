/// `ttl`, `loop_wait` and `retry_timeout` held to Patroni's rule, wherever they come from
/// (`bootstrap.dcs` or the DCS `config` key that `patronictl edit-config` writes): minimums
/// loop_wait 1, retry_timeout 3, ttl 20; then `loop_wait + 2 * retry_timeout <= ttl`, lowering
/// loop_wait first and retry_timeout only when loop_wait is already 1. Without it a primary
/// cut off from the DCS could keep writing for longer than its key lives: two primaries.
public struct ClusterTiming: Sendable, Equatable {
    public var ttl: Int
    public var loopWait: Int
    public var retryTimeout: Int

    /// Patroni's defaults: ttl 30, loop_wait 10, retry_timeout 10.
    public init(ttl: Int = 30, loopWait: Int = 10, retryTimeout: Int = 10) {
        self.ttl = ttl
        self.loopWait = loopWait
        self.retryTimeout = retryTimeout
    }

    /// The values the rule allows, and one warning per adjustment, each naming `source`.
    public func adjusted(source: String) -> (timing: ClusterTiming, warnings: [String]) {
        var out = self
        var warnings: [String] = []
        func atLeast(_ key: String, _ value: inout Int, _ minimum: Int) {
            guard value < minimum else { return }
            warnings.append("\(source).\(key): \(value) is below the minimum \(minimum); using \(minimum)")
            value = minimum
        }
        atLeast("loop_wait", &out.loopWait, 1)
        atLeast("retry_timeout", &out.retryTimeout, 3)
        atLeast("ttl", &out.ttl, 20)
        if 1 + 2 * out.retryTimeout > out.ttl {
            let retry = (out.ttl - 1) / 2
            let loop = out.loopWait == 1 ? "" : "loop_wait adjusted from \(out.loopWait) to 1 and "
            warnings.append("\(source): loop_wait + 2*retry_timeout must not exceed ttl (\(out.ttl)); "
                + "\(loop)retry_timeout \(out.loopWait == 1 ? "adjusted " : "")from \(out.retryTimeout) to \(retry)")
            out.loopWait = 1
            out.retryTimeout = retry
        } else if out.loopWait + 2 * out.retryTimeout > out.ttl {
            let loop = out.ttl - 2 * out.retryTimeout
            warnings.append("\(source): loop_wait + 2*retry_timeout must not exceed ttl (\(out.ttl), retry_timeout \(out.retryTimeout)); "
                + "loop_wait adjusted from \(out.loopWait) to \(loop)")
            out.loopWait = loop
        }
        return (out, warnings)
    }
}
