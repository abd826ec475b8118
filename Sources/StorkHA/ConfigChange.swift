import Foundation
import Logging
import StorkConfig
import StorkDCS

/// The answer to `PATCH /config` or `PUT /config`: the configuration now in the DCS, or why
/// nothing was written (a status code and one line).
public enum ConfigChangeAnswer: Sendable, Equatable {
    case written(JSONValue)
    case refused(Int, String)
}

// Changing the cluster's configuration (the DCS `config` key) through the REST API; every
// member applies it on its next cycle.
extension Agent {
    /// `PATCH /config` (Patroni's merge: null removes a key) or `PUT /config` (`replace`):
    /// checked as a whole, then written with a compare-and-set on the version read, so that a
    /// change made meanwhile (`patronictl edit-config`, another request) is never overwritten.
    public func changeConfig(_ body: [String: JSONValue], replace: Bool) async -> ConfigChangeAnswer {
        let stored: StoredConfig?
        do { stored = try await dcs.readConfig() } catch {
            return .refused(503, "the DCS could not be read (\(error)); nothing was changed")
        }
        let current: [String: JSONValue]?
        if case .object(let m)? = stored?.value { current = m } else { current = nil }
        if !replace && current == nil {
            return .refused(503, "there is no configuration in the DCS to patch yet; PUT /config writes a whole one")
        }
        let new = replace ? body : DynamicConfig.patched(current ?? [:], with: body)
        let problems = DynamicConfig.problems(new, given: body.keys)
        if !problems.isEmpty { return .refused(422, problems.joined(separator: "; ")) }
        guard new != current else { return .written(.object(new)) }
        do {
            guard try await dcs.writeConfig(.object(new), ifVersion: stored?.version) else {
                return .refused(409, "the configuration changed while this request was checked; read it again and retry")
            }
        } catch {
            return .refused(503, "the DCS could not be written (\(error)); nothing was changed")
        }
        logger.info("cluster configuration \(replace ? "replaced" : "changed") through the REST API: \(body.keys.sorted().joined(separator: ", "))")
        wakeRequested = true
        return .written(.object(new))
    }
}
