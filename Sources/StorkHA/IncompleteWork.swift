import Foundation
import Logging
import StorkConfig
import StorkDCS
import StorkMethods
import StorkPostgres

// What a dead agent left: an unfinished clone, staging directory or bootstrap.
extension Agent {
    /// Undoes or finishes what a crashed agent left (`WorkInProgress`): an unfinished clone in
    /// place is wiped (a copy of another member), an unfinished staging directory removed (the
    /// data directory was never touched), a checked staged copy put in place, and an unfinished
    /// bootstrap moved aside with the empty `initialize` it held given back.
    func finishOrUndoIncompleteWork(view: ClusterView) async throws -> String {
        let work = node.workInProgress() ?? .clone
        await node.stopOrphanedCopies()
        let dataDir = config.postgresql.dataDir
        // A pg_ctl stopped above may have forked its postmaster already: nothing is moved or
        // removed under a running server.
        let running = await node.stopServersLeftBehind(within: 5)
        guard running.isEmpty else {
            throw PostgresError("PostgreSQL still runs on \(dataDir) (PID \(running.map(String.init).joined(separator: ", "))): the unfinished \(work.rawValue) stays until it has stopped")
        }
        switch work {
        case .staged:
            logger.warning("a checked copy waits in \(node.stagingDirectory): putting it in place of \(dataDir)")
            try node.installStagedCopy()
        case .staging:
            if let backup = interruptedArchiveRestore(in: node.stagingDirectory) {
                // The archive method resumes it, keeping the files already restored and verified.
                logger.warning("\(node.stagingDirectory) holds an interrupted restore of backup \(backup): kept for the archive method to resume (\(dataDir) was not touched)")
                node.clearWork()
                return "kept the interrupted restore of backup \(backup)"
            }
            logger.warning("\(node.stagingDirectory) holds an unfinished copy of this agent: removing it (\(dataDir) was not touched)")
            try node.removeStagedCopy()
        case .clone:
            logger.warning("the data directory \(dataDir) holds an unfinished clone of this agent: removing it")
            try node.wipeDataDirectory()
        case .bootstrap:
            logger.warning("the data directory \(dataDir) holds an unfinished bootstrap of this agent: moving it aside (kept, whatever bootstrap.keep_failed_data_dirs says)")
            guard moveDataDirectoryAside(pruning: false) != nil || node.dataDirectoryState() == .empty else {
                throw AgentFatalError("could not move the unfinished bootstrap aside")
            }
            if view.initialize == "" { try await dcs.deleteInitialize() }
        }
        node.clearWork()
        return work == .staged ? "put the checked copy in place" : "removed the data directory left by an unfinished \(work.rawValue)"
    }
}
