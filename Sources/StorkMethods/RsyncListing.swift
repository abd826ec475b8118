import Foundation
import StorkConfig
import StorkPostgres
import StorkProcess
import Synchronization

// What an rsync source holds: its listing, and the check that it is a data directory at all.
extension RsyncMethod {
    /// The source's regular files that the copy takes (the exclusions applied), from
    /// `rsync --list-only`, read as it streams (a large cluster lists more than a kept tail).
    static func list(_ from: String, section: [String: JSONValue], node: PostgresNode, timeout: Double?) async throws -> [SourceFile] {
        let files = Mutex<[SourceFile]>([])
        var command = Command("rsync", ["--list-only", "--recursive", "--no-human-readable"] + excluded.map { "--exclude=\($0)" }
                                       + sourceOptions(section, from: from) + [from])
        // rsync prints modification times in the local zone.
        command.environment = ["TZ": "UTC"]
        command.timeout = timeout
        command.lineHandler = { line in
            if let file = SourceFile(listing: line) { files.withLock { $0.append(file) } }
        }
        let result = try await node.run(command)
        guard result.exitStatus == 0 || result.exitStatus == 24 else { throw PostgresNode.failure("rsync --list-only", result) }
        return files.withLock { $0 }
    }

    /// Refuses a source that is no data directory (an empty module, a wrong path) before
    /// anything touches the target: a re-sync from it would delete every local file.
    static func requireDataDirectory(_ from: String, section: [String: JSONValue], node: PostgresNode, timeout: Double?) async throws {
        let only = ["--include=/PG_VERSION", "--include=/global/", "--include=/global/pg_control", "--exclude=*"]
        var command = Command("rsync", ["--list-only", "--recursive", "--no-human-readable"] + only + sourceOptions(section, from: from) + [from])
        command.timeout = timeout
        let result = try await node.run(command)
        guard result.exitStatus == 0 else { throw PostgresNode.failure("rsync --list-only", result) }
        let listed = Set(result.output.split(whereSeparator: \.isNewline).compactMap { SourceFile(listing: String($0)) }
                             .filter { !$0.isDirectory }.map(\.path))
        guard listed.isSuperset(of: ["PG_VERSION", "global/pg_control"]) else {
            throw PostgresError("rsync source \(from) has no PG_VERSION and global/pg_control: not a PostgreSQL data directory; "
                + "check postgresql.rsync.source (its module or path). Nothing was copied or deleted")
        }
    }
}

/// A regular file or a directory of the source as `rsync --list-only` shows it.
struct SourceFile: Sendable, Equatable {
    var path: String
    var size: Int
    /// Whole seconds, UTC.
    var modified: Date
    var isDirectory = false

    init(path: String, size: Int, modified: Date, isDirectory: Bool = false) {
        self.path = path
        self.size = size
        self.modified = modified
        self.isDirectory = isDirectory
    }

    /// `-rw-------          8192 2026/11/27 19:40:00 base/5/16384` (TZ=UTC); nil for the
    /// top directory (`.`), links and anything else.
    init?(listing line: String) {
        let words = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: true)
        guard words.count == 5, let type = words[0].first, type == "-" || type == "d", words[4] != ".",
              let size = Int(words[1].filter { $0 != "," }) else { return nil }
        // Read by hand: a listing has a line per file, and a DateFormatter per line costs more
        // than the listing itself.
        let day = words[2].split(separator: "/").compactMap { Int($0) }, time = words[3].split(separator: ":").compactMap { Int($0) }
        guard day.count == 3, time.count == 3 else { return nil }
        var fields = tm()
        (fields.tm_year, fields.tm_mon, fields.tm_mday) = (Int32(day[0] - 1900), Int32(day[1] - 1), Int32(day[2]))
        (fields.tm_hour, fields.tm_min, fields.tm_sec) = (Int32(time[0]), Int32(time[1]), Int32(time[2]))
        let modified = Date(timeIntervalSince1970: TimeInterval(timegm(&fields)))
        self.init(path: String(words[4]), size: size, modified: modified, isDirectory: type == "d")
    }
}
