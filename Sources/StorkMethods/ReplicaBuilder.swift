import Foundation
import Logging
import Synchronization
import StorkArchive
import StorkConfig
import StorkPostgres

/// What to build a replica from and with.
public struct ReplicaBuildRequest: Sendable {
    /// The chain, in order (`postgresql.replicaMethods`).
    public var methods: [ReplicaMethodSpec]
    /// Nil when no member can be copied from: only `no_leader` methods run.
    public var source: CloneSource?
    /// The replication connection string to the source (no password), from the agent.
    public var conninfo: String
    public var scope: String
    /// The cluster's system identifier (`initialize`), which the copy must have.
    public var expectedSystemIdentifier: String?
    /// The slot the replica will stream from, when slots are used.
    public var slot: String?
    /// The `archive` section, for the archive method.
    public var archive: ArchiveSettings?

    public init(methods: [ReplicaMethodSpec], source: CloneSource?, conninfo: String, scope: String,
                expectedSystemIdentifier: String?, slot: String?) {
        self.methods = methods
        self.source = source
        self.conninfo = source == nil ? "" : conninfo
        self.scope = scope
        self.expectedSystemIdentifier = expectedSystemIdentifier
        self.slot = slot
    }

    /// The methods that may run: all of them with a source, only `no_leader` ones without.
    public var runnable: [ReplicaMethodSpec] { source == nil ? methods.filter(\.noLeader) : methods }
}

public enum ReplicaBuildOutcome: Sendable, Equatable {
    /// The data directory holds the new, checked copy.
    case built(method: String)
    /// Every method failed; the text lists why. Try the chain again later.
    case failed(String)
    /// A method asked to be tried again later (exit status 75) after its attempts.
    case tryLater(method: String, reason: String)
    /// No method may run now (no source and no `no_leader` method).
    case nothingCanRun(String)
    /// The source cannot be copied into a server these binaries run (another major): no
    /// method ran.
    case refused(String)
}

/// The running method as `GET /patroni`, `stork list` and the log show it.
public struct ReplicaProgress: Sendable, Equatable {
    public var method: String
    public var attempt: Int
    public var attempts: Int
    public var started: Date
    /// Bytes copied so far, as the method's progress meter tells (pg_basebackup, rsync), else
    /// the size of the directory being built.
    public var bytesDone: Int?
    /// What the method says it will copy (pg_basebackup's estimate, the files an rsync delta
    /// copies), else the source's databases' size when the superuser may ask it.
    public var bytesTotal: Int?

    public init(method: String, attempt: Int, attempts: Int, started: Date, bytesDone: Int? = nil, bytesTotal: Int? = nil) {
        self.method = method
        self.attempt = attempt
        self.attempts = attempts
        self.started = started
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
    }
}

/// Runs the chain: each method in order until one succeeds, each with its own attempts
/// (`retries` + 1, a growing pause between them) and `timeout`. A method that does not keep
/// data builds in the staging directory, and its copy is checked and renamed into place only
/// when complete; one that keeps data works in place under a `clone` work marker.
public final class ReplicaBuilder: Sendable {
    let node: PostgresNode
    let logger: Logger
    let report: @Sendable (ReplicaProgress?) -> Void

    public init(node: PostgresNode, logger: Logger, report: @escaping @Sendable (ReplicaProgress?) -> Void = { _ in }) {
        self.node = node
        self.logger = logger
        self.report = report
    }

    /// Pause before attempt `n + 1`: 1, 2, 4, ... seconds, at most 30.
    static func pause(afterAttempt n: Int) -> Double { Double(min(30, 1 << min(n - 1, 5))) }

    public func build(_ request: ReplicaBuildRequest) async -> ReplicaBuildOutcome {
        defer { report(nil) }
        let methods = request.runnable
        guard !methods.isEmpty else {
            return .nothingCanRun("no member to copy from, and no method in create_replica_methods has no_leader")
        }
        // A source of another major cannot be copied into a server these binaries run: said
        // once, naming both, before any method touches the target. A source that cannot be
        // asked is left to the methods, whose errors tell more.
        if let source = request.source {
            do { try await node.checkSourceMajor(atConnURL: source.connURL, source: source.name) } catch { return .refused("\(error)") }
        }
        let chain = ReplicaChain(methods: methods, logger: logger)
        // In place or staged is decided once per method, before its first attempt.
        return await chain.run(plan: { spec in spec.keepData || node.dataDirectoryStaysInPlace }, attempt: { spec, inPlace, number, attempts in
            let target = inPlace ? node.settings.dataDir : node.stagingDirectory
            return await attempt(spec, number: number, of: attempts, target: target, inPlace: inPlace, request: request)
        })
    }

    /// One attempt: a clean target, the method, the checks, and for a staged copy the swap.
    func attempt(_ spec: ReplicaMethodSpec, number: Int, of attempts: Int, target: String, inPlace: Bool,
                 request: ReplicaBuildRequest) async -> AttemptResult {
        let method = MethodRegistry.method(for: spec)
        var run = MethodAttempt(spec: spec, target: target, source: request.source, conninfo: request.conninfo,
                                scope: request.scope, slot: request.slot, number: number)
        run.archive = request.archive
        run.expectedSystemIdentifier = request.expectedSystemIdentifier
        do {
            // What the method can check before it touches the target (rsync: that the source
            // is a data directory), so a refused source changes nothing here.
            try await method.preflight(run, node: node)
            if inPlace && spec.keepData {
                // Re-synced in place: the old files are the method's base, so a failure keeps
                // them (never started as they are, never wiped), and the next build syncs again.
                try node.markHalfSynced()
                logger.info("Leaving data directory uncleaned")
                try node.ensureDirectory(target)
            } else if inPlace {
                try node.markWork(.clone)
                try node.wipeDataDirectory()
                try node.ensureDirectory(target)
            } else if case .archive = spec.kind, let backup = BackupRestorer.interruptedRestore(in: target) {
                try node.markWork(.staging)
                logger.info("resuming the interrupted restore of backup \(backup) in \(target)")
            } else {
                try node.markWork(.staging)
                try node.removeStagedCopy()
                try node.prepareEmptyDirectory(target)
            }
        } catch {
            return .failed("\(error)")
        }
        let started = Date()
        let from = request.source.map { " from \($0)" } ?? " without a member to copy from"
        logger.info("creating replica using method \(spec.name) (attempt \(number) of \(attempts))\(from)\(inPlace ? " in place" : " in \(target)")")
        let progress = ReplicaProgress(method: spec.name, attempt: number, attempts: attempts, started: started)
        report(progress)
        let meter = Mutex<(done: Int, total: Int?)?>(nil)
        let watcher = Task { [report, logger, node] in
            var databasesSize: Int?
            if let source = request.source, let session = try? await node.superuserConnection(toConnURL: source.connURL) {
                let rows = try? await session.query("SELECT sum(pg_database_size(oid))::bigint FROM pg_database")
                databasesSize = Int((rows?.first?.first ?? nil) ?? "")
                await session.close()
            }
            let pace = ProgressPace()
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                if Task.isCancelled { break }
                var p = progress
                let told = meter.withLock { $0 }
                p.bytesDone = told?.done ?? PostgresNode.treeSize(target)
                p.bytesTotal = told?.total ?? databasesSize
                report(p)
                if pace.due() {
                    let of = p.bytesTotal.map { " of about \($0 >> 20)" } ?? ""
                    logger.info("creating replica using \(spec.name): \((p.bytesDone ?? 0) >> 20)\(of) MiB in \(Int(Date().timeIntervalSince(started))) s")
                }
            }
        }
        run.reportProgress = { done, total in meter.withLock { $0 = (done, total) } }
        var result = await method.run(run, node: node)
        watcher.cancel()
        if case .succeeded = result {
            // What was copied in the end (the watcher reports every 2 s: a quick copy not at all).
            var copied = progress
            copied.bytesDone = meter.withLock { $0?.done } ?? PostgresNode.treeSize(target)
            report(copied)
            do {
                try await node.verifyCopy(target, expectedSystemIdentifier: request.expectedSystemIdentifier)
                try node.removeUpstreamSettings(of: target)
                if !(spec.kind == .basebackup && node.basebackupSyncsItsCopy) { node.syncCopy(target) }
                if !inPlace {
                    try node.markWork(.staged)
                    try node.installStagedCopy()
                }
                node.clearWork()
                node.clearHalfSynced()
                logger.info("the copy made by \(spec.name) is checked and in place (\(PostgresNode.treeSize(node.settings.dataDir) >> 20) MiB, \(Int(Date().timeIntervalSince(started))) s)")
                return .succeeded
            } catch {
                result = .failed("\(error)")
            }
        }
        // A failed attempt leaves nothing behind: the staging directory goes; an in-place copy
        // that keeps data stays for the next attempt (never started: its marker stays).
        if !inPlace {
            try? node.removeStagedCopy()
            node.clearWork()
        } else if !spec.keepData {
            try? node.wipeDataDirectory()
        }
        return result
    }
}
