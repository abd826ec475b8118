import Foundation
import Logging
import Synchronization
import StorkArchive
import StorkConfig
import StorkPostgres

/// `bootstrap.method: archive`: the backup the target needs (an error before anything is
/// restored when the target is older than every backup), restored and checked into the empty
/// data directory; it then recovers with the target, `restore_command` fetching from the
/// source's archive, and `recovery_target_action: promote` unless given.
struct ArchiveBootstrap: BootstrapMethod {
    let source: ArchiveBootstrapSource
    let keepExistingRecoveryConf: Bool
    var state: String { "restoring from the archive" }

    func run(_ context: BootstrapContext) async throws -> BootstrapResult {
        let node = context.node, logger = node.logger
        guard let file = context.configFile else {
            throw PostgresError("bootstrap.method archive needs the configuration in a file: restore_command names it")
        }
        let scope = source.scope ?? context.scope
        let catalog = BackupCatalog(store: try openArchiveStore(source.archive), scope: scope)
        let manifest = try catalog.choose(try backupTarget())
        try node.checkSourceMajor(manifest.postgresqlVersion, source: "backup \(manifest.name)")
        let dataDir = node.settings.dataDir
        logger.info("restoring backup \(manifest.name) of \(scope) (\(manifest.bytes >> 20) MiB, stopped at LSN \(manifest.stopLSN)) into \(dataDir), then recovery to \(source.target)")
        try node.ensureDataDirectory()
        let started = Date()
        let progress = ReplicaProgress(method: "archive", attempt: 1, attempts: 1, started: started)
        let pace = ProgressPace()
        let report = context.reportProgress
        let restorer = BackupRestorer(catalog: catalog, concurrency: source.archive.concurrency, owner: node.runAs)
        _ = try await restorer.restore(manifest, into: dataDir, expectedSystemIdentifier: nil) { done, total in
            var p = progress
            p.bytesDone = done
            p.bytesTotal = total
            report(p)
            if pace.due() { logger.info("restoring backup \(manifest.name): \(done >> 20) of \(total >> 20) MiB in \(Int(Date().timeIntervalSince(started))) s") }
        }
        report(nil)
        var conf = source.recoveryParameters
        conf["restore_command"] = .string(WALArchiveCommands.restoreCommand(configFile: file, bootstrapSource: true))
        if conf["recovery_target_action"] == nil, source.target != .end { conf["recovery_target_action"] = .string("promote") }
        return .restored(recoveryConf: conf, keepExisting: keepExistingRecoveryConf)
    }

    /// The backup the recovery target needs; the target's text checked first.
    private func backupTarget() throws -> BackupCatalog.Target {
        let target: BackupCatalog.Target
        switch source.target {
        case .time(let text):
            guard let time = RestoredRecovery.parseTime(text) else {
                throw PostgresError("bootstrap.archive.recovery_target_time \(text): expected a time with a zone, such as 2026-11-27 13:00:00+00")
            }
            target = .time(time)
        case .lsn(let text):
            guard let lsn = LSN.parse(text) else { throw PostgresError("bootstrap.archive.recovery_target_lsn \(text): expected an LSN such as 0/3000060") }
            target = .lsn(lsn)
        case .xid(let text):
            guard let xid = UInt64(text) else { throw PostgresError("bootstrap.archive.recovery_target_xid \(text): expected a transaction id") }
            target = .xid(xid)
        case .end, .immediate, .name:
            target = .newest
        }
        return source.backup.map { .named($0) } ?? target
    }
}

/// The backup an interrupted archive restore left in `directory` (the staging directory),
/// which the archive method resumes; nil when there is none.
public func interruptedArchiveRestore(in directory: String) -> String? {
    BackupRestorer.interruptedRestore(in: directory)
}
