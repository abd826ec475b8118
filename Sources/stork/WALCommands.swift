// PostgreSQL's archive_command and restore_command: wal-push and wal-fetch.
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import StorkAPI
import StorkArchive
import StorkConfig
import StorkDCS
import StorkHA
import StorkMethods
import StorkPostgres
import StorkSpool

/// The archive of the configuration's cluster (or, with `bootstrapSource`, the archive and
/// scope `bootstrap.archive` restores from); a missing or bad configuration exits `status`.
func walArchive(_ configFile: String, command: String, failureStatus: Int32, bootstrapSource: Bool = false) -> (WALArchive, ArchiveSettings, counters: String) {
    let config: Config
    do { config = try ConfigLoader.load(path: configFile).config } catch {
        fail(command, error.issues.map { "\($0)" }.joined(separator: "; "), status: failureStatus)
    }
    var settings = config.archive
    var scope = config.scope
    if bootstrapSource {
        guard let source = config.bootstrap.custom?.archive else { fail(command, "\(configFile) has no bootstrap.archive to restore from", status: failureStatus) }
        settings = source.archive
        scope = source.scope ?? config.scope
    }
    guard let settings else { fail(command, "\(configFile) has no archive section", status: failureStatus) }
    do {
        return (try WALArchive(settings: settings, scope: scope), settings, ArchiveCounters.path(dataDir: config.postgresql.dataDir))
    } catch { fail(command, "\(error)", status: failureStatus) }
}

/// The size of the file at `path` in bytes, 0 when it cannot be read (for the counters only).
func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

struct WALPushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive a WAL file (for archive_command: stork wal-push CONFIG %p).",
        discussion: """
            Stores the file, compressed, under the cluster's scope in the archive section's place, \
            durably (fsync) and atomically (no partial object is ever visible). The same file pushed \
            again succeeds; a different file under a name the archive holds fails and the archive \
            keeps what it had.

            Exit status: 0 when archived (or archived already); 1 with a one-line reason otherwise.
            """)

    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String
    @Argument(help: "The WAL file (%p, relative to the data directory where PostgreSQL runs it).")
    var path: String

    func run() throws {
        let (archive, _, counters) = walArchive(configFile, command: "wal-push", failureStatus: 1)
        do {
            if try archive.push(path) == .alreadyArchived {
                complain("wal-push", "\((path as NSString).lastPathComponent) is archived already, with the same content")
            }
        } catch {
            ArchiveCounters.add(at: counters) { $0.pushFailures += 1 }
            fail("wal-push", "\(error)")
        }
        let bytes = fileSize(path)
        ArchiveCounters.add(at: counters) { $0.pushed += 1; $0.pushedBytes += bytes }
    }
}

struct WALFetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Restore a WAL file from the archive (for restore_command: stork wal-fetch CONFIG %f %p).",
        discussion: """
            Exit status: 0 when restored; 1, quietly, when the archive does not hold the file (what \
            PostgreSQL expects at the end of the archive); 255 with a one-line reason when the \
            archive cannot be read or the configuration is wrong: PostgreSQL then stops recovery \
            instead of taking the error for the end of the archive and promoting early. Nothing is \
            left at the target path when it fails.
            """)

    @Flag(help: "Fetch from the archive and scope that bootstrap.archive restores the new cluster from.")
    var bootstrapSource = false
    @Option(help: .hidden) var prefetchAfter: String?
    @Option(help: .hidden) var segmentSize: UInt64 = 16 << 20
    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String
    @Argument(help: "The WAL file's name (%f).")
    var name: String?
    @Argument(help: "Where to put it (%p).")
    var target: String?

    func validate() throws {
        if prefetchAfter == nil && target == nil { throw ValidationError("expected CONFIG NAME TARGET (%f %p)") }
    }

    func run() throws {
        let (archive, settings, counters) = walArchive(configFile, command: "wal-fetch", failureStatus: 255, bootstrapSource: bootstrapSource)
        if let after = prefetchAfter {
            // In the background, started by a fetch: nobody reads what it prints.
            _ = try? WALPrefetcher(archive: archive, depth: settings.prefetch, width: settings.concurrency).run(after: after, segmentSize: segmentSize)
            return
        }
        guard let name, let target else { return }
        if WALSpool.serve(name, to: target) != nil {
            let bytes = fileSize(target)
            ArchiveCounters.add(at: counters) { $0.fetched += 1; $0.fetchedBytes += bytes }
            return
        }
        do {
            guard try archive.fetch(name, to: target) else { throw ExitCode(1) }
        } catch let error as ArchiveError {
            ArchiveCounters.add(at: counters) { $0.fetchFailures += 1 }
            fail("wal-fetch", "\(error)", status: 255)
        }
        ArchiveCounters.add(at: counters) { $0.fetched += 1; $0.fetchedBytes += fileSize(target) }
        // A segment from the archive: recovery will want the next ones.
        var st = stat()
        if settings.prefetch > 0, name.count == 24, stat(target, &st) == 0, !WALSpool.prefetcherRunning() {
            WALSpool.startPrefetcher(WALSpool.prefetchCommand(stork: WALArchiveCommands.executable, config: configFile,
                                                            flags: bootstrapSource ? ["--bootstrap-source"] : [], after: name,
                                                            segmentSize: UInt64(st.st_size)))
        }
    }
}
