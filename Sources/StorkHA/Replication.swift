import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// Following: the role a replica starts with, its configuration, a new upstream; the
// leader's physical slots for its members.
extension Agent {
    /// The running server's `primary_conninfo` already points at `leader`'s host and port.
    func runningUpstreamMatches(_ leader: String?) async -> Bool {
        guard let leader, let url = lastView.member(named: leader)?.connURL,
              let connection = try? await node.localConnection() else { return false }
        defer { Task { await connection.close() } }
        guard let rows = try? await connection.query("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'"),
              let running = rows.first?.first ?? nil, let pairs = ConnInfo.parse(running) else { return false }
        let want = ConnInfo.parse(node.replicationConninfo(toConnURL: url)) ?? []
        func value(_ key: String, _ list: [(key: String, value: String)]) -> String? { list.first { $0.key == key }?.value }
        return ["host", "port", "user"].allSatisfy { value($0, pairs) == value($0, want) }
    }

    /// `standby_cluster` of the cluster's configuration, when this is a standby cluster.
    var standbyCluster: StandbyCluster? { StandbyCluster(config: config, dynamic: lastView.config) }

    /// The standby leader's role: a standby of the remote primary.
    func standbyLeaderRole() -> ServerRole {
        guard let standby = standbyCluster else { return replicaRole() }
        return .replica(primaryConninfo: node.replicationConninfo(toConnURL: standby.connURL))
    }

    func replicaRole() -> ServerRole {
        guard let leader = lastView.leaderMember, leader.name != config.name, let url = leader.connURL else {
            return .replica(primaryConninfo: nil)
        }
        return .replica(primaryConninfo: node.replicationConninfo(toConnURL: url))
    }

    /// The standby cluster whose remote primary `role` follows, when it is the standby leader's.
    func remotePrimary(followedBy role: ServerRole) -> StandbyCluster? {
        guard case .replica(let upstream?) = role, let standby = standbyCluster,
              upstream == node.replicationConninfo(toConnURL: standby.connURL) else { return nil }
        return standby
    }

    func writeConfig(role: ServerRole, hba: [String]? = nil) async throws {
        let configured = effectiveParameters(config: config, dynamic: lastView.config)
        var parameters = configured
        if case .replica(let upstream?) = role, !upstream.isEmpty, useSlots(config: config, dynamic: lastView.config) {
            parameters["primary_slot_name"] = .string(slotName(forMember: config.name))
        }
        if let standby = remotePrimary(followedBy: role) {
            // The standby leader: the remote primary's slot (if any), restore_command, delay.
            parameters["primary_slot_name"] = standby.primarySlotName.map { .string($0) }
            parameters.merge(standby.recoveryParameters) { _, new in new }
        }
        recoveryFloor = [:]
        switch role {
        case .replica, .bootstrapRecovery:
            // Recovery refuses to run with less than the primary had for these; as Patroni
            // does, the server starts with the larger of the configured value and pg_control's,
            // and reports a pending restart until the two agree.
            if let control = try? await node.controlData() {
                let floor = recoveryParameterFloor(configured: parameters, control: control)
                for (name, value) in floor.sorted(by: { $0.key < $1.key }) {
                    let configuredText = parameters[name]?.scalarText ?? "the default"
                    logger.info("\(name) value in pg_controldata: \(value.scalarText ?? ""), in the global configuration: \(configuredText). pg_controldata value will be used. Setting 'Pending restart' flag")
                    recoveryFloor[name] = .object(["old_value": .string(value.scalarText ?? ""), "new_value": .string(parameters[name]?.scalarText ?? "")])
                }
                parameters.merge(floor) { _, new in new }
            }
        case .primary:
            break
        }
        // What this major does not know, or cannot read, would keep the server from starting.
        if let catalog = node.parameterCatalog() {
            let (kept, warnings) = catalog.check(parameters)
            parameters = kept
            for warning in warnings where parameterWarningsSaid.insert(warning).inserted { logger.warning("\(warning)") }
        }
        let lines = hba ?? effectiveHBA(config: config, dynamic: lastView.config)
        // Once written, a pg_ident no longer configured leaves an empty file, not the old map.
        let ident = effectiveIdent(config: config, dynamic: lastView.config) ?? (writtenSettings?.ident != nil ? [] : nil)
        try node.writeConfiguration(parameters: parameters, hba: lines, ident: ident, role: role)
        writtenSettings = WrittenSettings(role: role, parameters: configured, hba: lines, ident: ident)
    }

    /// On the leader: a physical slot for every other member (WAL reserved at once), and the
    /// slots of members that left the cluster dropped once inactive.
    func manageReplicationSlots(view: ClusterView) async {
        guard useSlots(config: config, dynamic: view.config) else { return }
        let wanted = Set(view.members.map(\.name).filter { $0 != config.name }.map(slotName(forMember:)))
        memberSlots.formUnion(wanted)
        do {
            let connection = try await node.localConnection()
            defer { Task { await connection.close() } }
            let rows = try await connection.query("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'")
            let existing = Dictionary(rows.compactMap { r in r[0].map { ($0, r[1] == "t") } }, uniquingKeysWith: { a, _ in a })
            for slot in wanted.subtracting(existing.keys).sorted() {
                try await connection.query("SELECT pg_create_physical_replication_slot($1, true)", params: [slot])
                logger.info("created physical replication slot \(slot)")
            }
            for (slot, active) in existing where !active && !wanted.contains(slot) && memberSlots.contains(slot) {
                try await connection.query("SELECT pg_drop_replication_slot($1)", params: [slot])
                memberSlots.remove(slot)
                logger.info("dropped replication slot \(slot) of a member that left the cluster")
            }
        } catch {
            logger.warning("could not manage replication slots: \(error)")
        }
    }

    /// Starts PostgreSQL in `role`; `restarted`: it was stopped for this start (on_restart).
    func startServer(role: ServerRole, timeout: Int? = nil, restarted: Bool = false) async {
        do {
            try await writeConfig(role: role)
            try await node.start(timeout: timeout ?? config.postgresql.pgCtlTimeout)
            let floor = recoveryFloor
            status.update { $0.postmasterStartTime = Date(); $0.pendingRestart = floor.isEmpty ? nil : floor }
            announceRunning(role, restarted: restarted)
            if let standby = remotePrimary(followedBy: role) {
                followedLeader = .some(standby.upstreamLabel)
            } else if case .replica = role {
                followedLeader = .some(lastView.leader == config.name ? nil : lastView.leader)
            }
        } catch {
            status.update { $0.state = "start failed" }
            logger.error("failed to start PostgreSQL: \(error)")
        }
    }

    /// A running replica follows `leader` from now on: new `primary_conninfo`, then a reload;
    /// a restart when the reload fails.
    func followByReload(_ leader: String?) async {
        do {
            try await writeConfig(role: replicaRole())
            try await node.reload()
            callback("on_reload", role: status.snapshot.role)
            followedLeader = .some(leader)
            logger.info("following \(leader ?? "nobody") without a restart (primary_conninfo reloaded)")
        } catch {
            logger.warning("reloading primary_conninfo failed (\(error)); restarting")
            await restartAsReplica()
        }
    }

    /// Stops PostgreSQL and starts it as a replica of the leader (the standby leader: of the
    /// remote primary), the role chosen after the stop from what the agent knows then.
    /// `demoted`: it ran as a primary, so the first leader it follows is checked for a fork.
    func restartAsReplica(standbyLeader: Bool = false, demoted: Bool = false) async {
        if demoted { divergenceUnchecked = true }
        do {
            if node.isRunning() { try await stopServer(announce: demoted) }
        } catch {
            logger.error("failed to stop PostgreSQL: \(error)")
            return
        }
        await startServer(role: standbyLeader ? standbyLeaderRole() : replicaRole(), restarted: !demoted)
    }
}
