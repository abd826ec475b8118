import Foundation
import Logging
import StorkConfig
import StorkPostgres

/// Built in: a backup-mode rsync from a running member (`postgresql.rsync`).
///
/// On the source, over one superuser session: the replica's slot (so the source keeps the WAL
/// from the backup's start), `pg_backup_start`, then rsync from `source` (a template:
/// `rsync://{host}/pgdata` for an rsync daemon, `{host}:/path` over ssh), then `pg_backup_stop`,
/// whose `backup_label` (and `tablespace_map`) go into the copy. The files PostgreSQL's
/// documentation leaves out of a base backup are left out and removed from the target.
///
/// The delta: an existing data directory of the same cluster is kept, and rsync compares every
/// file of equal size by a whole-file checksum (`--checksum`), never by size and modification
/// time alone: a file whose content changed is copied whatever its time stamps say. What
/// changes while rsync runs is repaired by replaying the WAL from the backup's start, as for
/// any base backup (full-page writes are forced while a backup runs). Into an empty directory
/// it copies whole files without checksums.
struct RsyncMethod: ReplicaMethod {
    let sourceTemplate: String

    /// Left out of the copy and removed from the target (PostgreSQL's "Backing Up the Data
    /// Directory" list, plus the signal files Stork writes itself).
    static let excluded = [
        "/pg_wal/*", "/pg_replslot/*", "/pg_dynshmem/*", "/pg_notify/*", "/pg_serial/*", "/pg_snapshots/*",
        "/pg_stat_tmp/*", "/pg_subtrans/*", "pgsql_tmp*", "pg_internal.init", "/postmaster.pid", "/postmaster.opts",
        "/backup_label", "/backup_label.old", "/tablespace_map", "/backup_manifest", "/standby.signal", "/recovery.signal",
    ]

    /// rsync's arguments; `delta`: the target holds a copy of the same cluster already.
    static func arguments(from: String, target: String, delta: Bool, section: [String: JSONValue]) -> [String] {
        // --keep-dirlinks: a pg_wal that is a link to another directory stays a link.
        var arguments = ["--archive", "--keep-dirlinks", "--delete", "--delete-excluded", delta ? "--checksum" : "--whole-file"]
        arguments += excluded.map { "--exclude=\($0)" }
        if let file = section["password_file"]?.scalarText { arguments.append("--password-file=\(file)") }
        if case .array(let extra)? = section["options"] { arguments += extra.compactMap(\.scalarText) }
        return arguments + [from.hasSuffix("/") ? from : from + "/", target + "/"]
    }

    /// The source for `source` member: the template filled in.
    func sourceURL(_ source: CloneSource, scope: String) -> String {
        let (host, port) = PostgresNode.hostAndPort(fromConnURL: source.connURL)
        return ReplicaMethodSpec.fill(sourceTemplate, ["host": host, "port": port, "name": source.name, "scope": scope])
    }

    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult {
        guard let source = attempt.source else { return .failed("rsync needs a running member to copy from") }
        let from = sourceURL(source, scope: attempt.scope)
        let session: Connection
        do { session = try await node.superuserConnection(toConnURL: source.connURL) } catch {
            return .failed("cannot connect to \(source.name) as the superuser for pg_backup_start: \(error)")
        }
        defer { Task { await session.close() } }
        var backupStarted = false
        do {
            let tablespaces = try await session.query("SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")
            if tablespaces.first?.first ?? "0" != "0" {
                return .failed("\(source.name) has tablespaces, which the rsync method does not copy yet; use basebackup")
            }
            if let slot = attempt.slot {
                try await session.query("""
                    SELECT pg_create_physical_replication_slot($1, true)
                    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
                    """, params: [slot])
            }
            // An existing copy of another cluster is of no use to a delta: start empty.
            let control = try? await node.controlData(of: attempt.target)
            let sysid = try await session.query("SELECT system_identifier::text FROM pg_control_system()").first?.first ?? nil
            if let control, control.systemIdentifier != sysid {
                node.logger.info("the data directory belongs to another cluster (\(control.systemIdentifier)); rsync copies everything")
                try node.wipe(directory: attempt.target)
            }
            let delta = PostgresNode.holdsData(attempt.target)
            try await session.query("SELECT pg_backup_start($1, true)", params: ["stork rsync for \(node.memberName)"])
            backupStarted = true

            var command = Command("rsync", Self.arguments(from: from, target: attempt.target, delta: delta, section: attempt.spec.section))
            command.timeout = attempt.spec.timeout
            node.logger.info("rsync from \(from) (\(delta ? "delta: files compared by checksum" : "full copy"))")
            let result = try await node.run(command)
            // 24: files vanished on the source while it was copied, as a live server does.
            guard result.exitStatus == 0 || result.exitStatus == 24, !result.timedOut else {
                if result.timedOut { return .failed("rsync did not finish within \(Int(attempt.spec.timeout ?? 0)) s and was stopped") }
                return .failed(PostgresNode.failure("rsync", result).message)
            }
            let stop = try await session.query("SELECT labelfile, spcmapfile, lsn::text FROM pg_backup_stop(false)")
            backupStarted = false
            guard let label = stop.first?[0] ?? nil else { return .failed("pg_backup_stop returned no backup_label") }
            try node.writeOwnedFile(attempt.target + "/backup_label", contents: label)
            if let map = stop.first?[1] ?? nil, !map.isEmpty {
                try node.writeOwnedFile(attempt.target + "/tablespace_map", contents: map)
            }
            // The WAL from the backup's start to its end, as pg_basebackup -X does: the copy
            // becomes consistent without waiting for streaming to start.
            let size = try await session.query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
            let startFile = label.split(separator: "\n").first { $0.hasPrefix("START WAL LOCATION:") }
                .flatMap { line in line.split(separator: " ").last.map { String($0.dropLast()) } } ?? ""
            let segments = LSN.segmentFiles(from: startFile, through: LSN.parse((stop.first?[2] ?? nil) ?? "") ?? 0,
                                            segmentSize: Int((size.first?.first ?? nil) ?? "") ?? 0)
            if !segments.isEmpty {
                let list = attempt.target + "/pg_wal/.stork-wal-list"
                // Paths relative to the source's root (an rsync daemon reports files listed relative
                // to a subdirectory of a module as vanished).
                try node.writeOwnedFile(list, contents: segments.map { "pg_wal/" + $0 + "\n" }.joined())
                defer { unlink(list) }
                var wal = Command("rsync", ["--archive", "--files-from=\(list)", from.hasSuffix("/") ? from : from + "/",
                                            attempt.target + "/"])
                wal.timeout = attempt.spec.timeout
                let copied = try await node.run(wal)
                if !copied.succeeded { node.logger.warning("could not copy the backup's WAL (\(segments.count) segments); it will come by streaming: \(PostgresNode.failure("rsync", copied).message)") }
            }
            return .succeeded
        } catch {
            if backupStarted { _ = try? await session.query("SELECT pg_backup_stop(false)") }
            return .failed("\(error)")
        }
    }
}
