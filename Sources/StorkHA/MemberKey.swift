import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// The member key: what this member publishes about itself every cycle.
extension Agent {
    func touchMember(local: LocalSnapshot) async {
        let s = status.snapshot
        var data: [String: JSONValue] = [
            "conn_url": .string(node.connURL),
            "api_url": .string(apiURL),
            "state": .string(s.state),
            "role": .string(s.role),
            "version": .string(storkVersion),
        ]
        if let server = s.server, s.state == "running" {
            data["xlog_location"] = .int(server.walPosition)
            data["timeline"] = .int(server.timeline)
            if server.inRecovery {
                if let r = server.replayLSN { data["replay_lsn"] = .int(r) }
                if let r = server.receiveLSN { data["receive_lsn"] = .int(r) }
                if server.streaming { data["replication_state"] = .string("streaming") }
            }
        }
        if !config.tags.isEmpty { data["tags"] = .object(config.tags) }
        if let progress = s.replicaCreation { data["replica_creation"] = APIResponses.replicaCreation(progress) }
        if let progress = s.recoveryProgress { data["recovery_progress"] = APIResponses.recoveryProgress(progress) }
        do { try await dcs.touchMember(.object(data), ttl: timing.ttl) } catch {
            logger.error("Error communicating with DCS: \(error)")
        }
    }

    nonisolated var apiURL: String {
        let scheme = config.restapi.certfile == nil ? "http" : "https"
        return "\(scheme)://\(config.restapi.connectAddress)/patroni"
    }
}

