import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkPostgres

/// What `writeConfig` last wrote into PostgreSQL's files: the role, and the configured
/// parameters (before what the role adds) and pg_hba lines.
struct WrittenSettings: Equatable {
    var role: ServerRole
    var parameters: [String: JSONValue]
    var hba: [String]
    var ident: [String]?
}

// A change of the settings PostgreSQL runs with (the cluster's configuration in the DCS, or
// the YAML after a reload) reaches a running server on the next cycle: its files rewritten
// with the role it runs as, a reload, and the parameters that only a restart applies reported
// as `pending_restart`, as Patroni does. A reload asked for (SIGHUP, POST /reload) reloads
// PostgreSQL even when nothing changed, as Patroni's does.
extension Agent {
    /// Rewrites and reloads when the parameters, pg_hba or pg_ident lines wanted now differ from those
    /// written; only between long tasks, on a running server whose role this agent wrote.
    func applyChangedSettings(local: LocalSnapshot) async {
        guard longTasks.running == nil, local.running else { return }
        // An agent started beside a running server has written nothing yet: once it is sure
        // what the server runs as, it writes the files once.
        guard let written = writtenSettings ?? runningRole(local).map({ WrittenSettings(role: $0, parameters: [:], hba: [], ident: nil) }) else { return }
        if case .bootstrapRecovery = written.role { return }
        let parameters = effectiveParameters(config: config, dynamic: lastView.config), hba = effectiveHBA(config: config, dynamic: lastView.config)
        let ident = effectiveIdent(config: config, dynamic: lastView.config)
        let changed = Set(parameters.keys).union(written.parameters.keys).filter { written.parameters[$0] != parameters[$0] }
        let asked = reloadAskedFor
        guard !changed.isEmpty || hba != written.hba || ident != written.ident || asked else { return }
        reloadAskedFor = false
        let first = writtenSettings == nil
        do {
            try await writeConfig(role: written.role)
            try await node.reload()
            if !first { callback("on_reload", role: status.snapshot.role) }
            if first {
                logger.info("wrote the running server's configuration files as this agent would and reloaded PostgreSQL")
            } else if changed.isEmpty && hba == written.hba && ident == written.ident {
                logger.info("reloaded PostgreSQL as asked; none of its settings changed")
            } else {
                var what = changed.sorted()
                if hba != written.hba { what.append("pg_hba") }
                if ident != written.ident { what.append("pg_ident") }
                logger.info("reloaded PostgreSQL with the changed settings: \(what.joined(separator: ", "))")
            }
        } catch {
            logger.warning("could not apply the changed settings to PostgreSQL: \(error)")
            return
        }
        await checkPendingRestart(wanted: parameters)
    }

    /// Patroni's `pending_restart`: the parameters the running server has not taken because
    /// only a restart applies them (`pg_settings.pending_restart`), with the running and the
    /// configured value (`pending_restart_reason`).
    func checkPendingRestart(wanted: [String: JSONValue]) async {
        guard let connection = try? await node.localConnection() else { return }
        defer { Task { await connection.close() } }
        guard let rows = try? await connection.query("SELECT name, setting FROM pg_catalog.pg_settings WHERE pending_restart") else { return }
        var reason: [String: JSONValue] = [:]
        for row in rows {
            guard let name = row.first ?? nil else { continue }
            reason[name] = .object(["old_value": .string(row.count > 1 ? row[1] ?? "" : ""),
                                    "new_value": .string(wanted[name]?.scalarText ?? "")])
        }
        if !reason.isEmpty {
            logger.info("pending restart: \(reason.keys.sorted().joined(separator: ", ")) change only when PostgreSQL restarts")
        }
        reason.merge(recoveryFloor) { fromServer, _ in fromServer }
        status.update { $0.pendingRestart = reason.isEmpty ? nil : reason }
    }

    /// The role the running server has, when this agent knows it for sure: the primary that
    /// holds the leader key, or a replica that follows whom the agent knows it follows.
    func runningRole(_ local: LocalSnapshot) -> ServerRole? {
        switch local.inRecovery {
        case false?:
            return lastView.leader == config.name ? .primary : nil
        case true?:
            if let standby = standbyCluster, lastView.leader == config.name {
                return followedLeader == .some(standby.upstreamLabel) ? standbyLeaderRole() : nil
            }
            return lastView.leader != config.name && followedLeader == .some(lastView.leader) ? replicaRole() : nil
        case nil:
            return nil
        }
    }
}
