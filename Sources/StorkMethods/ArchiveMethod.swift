import Foundation
import Logging
import StorkArchive
import StorkConfig
import StorkPostgres

/// Built in: restores the newest base backup of the cluster's own archive (or the one named by
/// `postgresql.archive.backup`), every file checked against its manifest. It needs no running
/// member; the replica then replays the archive through `restore_command` (`stork wal-fetch`)
/// and streams from the leader once there is one.
struct ArchiveMethod: ReplicaMethod {
    let backup: String?

    func run(_ attempt: MethodAttempt, node: PostgresNode) async -> AttemptResult {
        guard let settings = attempt.archive else { return .failed("the archive method needs an archive section") }
        do {
            let catalog = BackupCatalog(store: try openArchiveStore(settings), scope: attempt.scope)
            let manifest = try catalog.choose(backup.map { .named($0) } ?? .newest)
            try node.checkSourceMajor(manifest.postgresqlVersion, source: "backup \(manifest.name)")
            node.logger.info("restoring backup \(manifest.name) of \(attempt.scope) from the archive: \(manifest.files.count) files, \(manifest.bytes >> 20) MiB, WAL from \(manifest.startWALFile)")
            let restorer = BackupRestorer(catalog: catalog, concurrency: settings.concurrency, owner: node.runAs)
            let summary = try await restorer.restore(manifest, into: attempt.target, expectedSystemIdentifier: attempt.expectedSystemIdentifier) {
                attempt.reportProgress($0, $1)
            }
            if summary.kept > 0 { node.logger.info("kept \(summary.kept) files an interrupted restore had written and verified") }
            return .succeeded
        } catch {
            return .failed("\(error)")
        }
    }
}
