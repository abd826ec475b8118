import Foundation
import Logging
import StorkConfig
import StorkDCS

/// A request the REST API refuses: the status code and the one line that says why (a body
/// that does not parse, or a change the agent will not make).
public struct RefusedRequest: Error, Equatable, Sendable {
    public var code: Int
    public var reason: String
    public init(_ code: Int, _ reason: String) { self.code = code; self.reason = reason }
}

// Changing the cluster's configuration (the DCS `config` key) through the REST API; every
// member applies it on its next cycle.
extension Agent {
    /// `PATCH /config` (Patroni's merge: null removes a key) or `PUT /config` (`replace`):
    /// checked as a whole, then written with a compare-and-set on the version read, so that a
    /// change made meanwhile (`patronictl edit-config`, another request) is never overwritten.
    public func changeConfig(_ body: [String: JSONValue], replace: Bool) async -> Result<JSONValue, RefusedRequest> {
        let stored: StoredConfig?
        do { stored = try await dcs.readConfig() } catch {
            return .failure(RefusedRequest(503, "the DCS could not be read (\(error)); nothing was changed"))
        }
        let current: [String: JSONValue]?
        if case .object(let m)? = stored?.value { current = m } else { current = nil }
        if !replace && current == nil {
            return .failure(RefusedRequest(503, "there is no configuration in the DCS to patch yet; PUT /config writes a whole one"))
        }
        let new = replace ? body : DynamicConfig.patched(current ?? [:], with: body)
        let problems = DynamicConfig.problems(new, given: body.keys)
        if !problems.isEmpty { return .failure(RefusedRequest(422, problems.joined(separator: "; "))) }
        guard new != current else { return .success(.object(new)) }
        do {
            guard try await dcs.writeConfig(.object(new), ifVersion: stored?.version) else {
                return .failure(RefusedRequest(409, "the configuration changed while this request was checked; read it again and retry"))
            }
        } catch {
            return .failure(RefusedRequest(503, "the DCS could not be written (\(error)); nothing was changed"))
        }
        logger.info("cluster configuration \(replace ? "replaced" : "changed") through the REST API: \(body.keys.sorted().joined(separator: ", "))")
        wakeRequested = true
        return .success(.object(new))
    }
}
