import Foundation
import StorkConfig
import StorkHA

/// What the REST API needs of the agent: its status to answer from, and the requests that
/// change the cluster (with Patroni's answers). The agent implements it; the API knows no more.
public protocol ClusterOperations: Sendable {
    var status: StatusBoard { get }
    /// `POST /reinitialize`: nil when the rebuild has started, else why not.
    func reinitialize(force: Bool, fromLeader: Bool) async -> String?
    /// `POST /switchover` and `POST /failover` (`schedule`: `scheduled_at`, read), `DELETE
    /// /switchover`: the status code and text.
    func manualFailover(leader: String?, candidate: String?, switchover: Bool, schedule: Result<(Date, String), RefusedRequest>?) async -> (Int, String)
    func cancelScheduledSwitchover() async -> (Int, String)
    /// `PATCH /config` (`replace` false) and `PUT /config` (`replace` true).
    func changeConfig(_ body: [String: JSONValue], replace: Bool) async -> Result<JSONValue, RefusedRequest>
    /// `POST /restart`, `DELETE /restart`: the status code and text.
    func restart(_ request: RestartRequest) async -> (Int, String)
    func cancelScheduledRestart() async -> (Int, String)
    /// `POST /reload`: the configuration file is loaded again, as on SIGHUP.
    func requestReload(from source: String)
}

extension Agent: ClusterOperations {}
