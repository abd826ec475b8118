import Foundation
import StorkConfig
import StorkProcess

// Which PostgreSQL major the binaries are, and which one a data directory was made by. A
// server refuses a data directory of another major, and pg_basebackup a source of another
// major, each with a message that is easy to take for a broken copy: the agent tells the
// mismatch in one line, naming both, before anything is started, copied or removed.
extension PostgresNode {
    /// The major of a version string as PostgreSQL writes it in `PG_VERSION` and
    /// `postgres --version`: "15" for 15.18, "9.6" for 9.6.24; nil when it is none.
    public static func major(ofVersion text: String) -> String? {
        let parts = text.split(separator: ".").map(String.init)
        guard let first = parts.first, let number = Int(first), number > 0 else { return nil }
        if number >= 10 { return first }
        guard parts.count > 1, Int(parts[1]) != nil else { return nil }
        return first + "." + parts[1]
    }

    /// The major of a server's `server_version_num` (150018 → "15", 90624 → "9.6").
    public static func major(ofVersionNumber number: Int) -> String {
        number >= 100_000 ? String(number / 10_000) : "\(number / 10_000).\(number / 100 % 100)"
    }

    /// The major of the `postgres` program this member runs (`postgres --version`).
    /// - Throws: ``PostgresError`` in one line when there is no such program or it does not run.
    public func binariesMajor() throws -> String {
        let postgres = binary("postgres")
        let whereFrom = settings.binDir.isEmpty ? "pg_config --bindir found none; set postgresql.bin_dir" : "postgresql.bin_dir is \(settings.binDir)"
        guard postgres.hasPrefix("/") else {
            throw PostgresError("no PostgreSQL binaries: \(whereFrom) to the bin directory of a PostgreSQL installation")
        }
        guard FileManager.default.isExecutableFile(atPath: postgres) else {
            throw PostgresError("no PostgreSQL server program at \(postgres) (\(whereFrom)): point postgresql.bin_dir at the bin directory of a PostgreSQL installation")
        }
        let said = ProcessRunner.captureSynchronously(postgres, ["--version"]) ?? ""
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        guard let range = said.range(of: "(PostgreSQL) "),
              let version = said[range.upperBound...].split(separator: " ").first,
              let major = Self.major(ofVersion: String(version)) else {
            throw PostgresError("\(postgres) --version did not tell a PostgreSQL version (\(said.isEmpty ? "no output" : said)): point postgresql.bin_dir at the bin directory of a PostgreSQL installation")
        }
        return major
    }

    /// The major that made the data directory at `directory` (its `PG_VERSION`), nil when it
    /// has none.
    public static func dataDirectoryMajor(_ directory: String) -> String? {
        guard let text = try? String(contentsOfFile: directory + "/PG_VERSION", encoding: .utf8) else { return nil }
        return major(ofVersion: text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The binaries' major, checked against the data directory's when it has one.
    /// - Throws: ``PostgresError`` in one line naming both majors when they differ, or why the
    ///   binaries cannot be used.
    @discardableResult
    public func checkBinariesFitDataDirectory() throws -> String {
        let binaries = try binariesMajor()
        if let data = Self.dataDirectoryMajor(settings.dataDir), data != binaries {
            throw PostgresError("postgresql.data_dir \(settings.dataDir) holds a PostgreSQL \(data) cluster and the binaries at \(binary("postgres")) are PostgreSQL \(binaries): point postgresql.bin_dir at PostgreSQL \(data)'s (a major upgrade is pg_upgrade's work, not the agent's)")
        }
        return binaries
    }

    /// The `server_version_num` of the member at `url`, as a replication connection tells it
    /// (the replication user may connect wherever it may stream).
    public func serverVersionNumber(atConnURL url: String) async throws -> Int {
        let connection = try await replicationConnection(toConnURL: url)
        await connection.close()
        return connection.serverVersion
    }

    /// Before a copy from a server of `sourceVersionNumber` (`server_version_num`) is made:
    /// throws in one line naming both majors when the local binaries could not run it.
    public func checkSourceMajor(_ sourceVersionNumber: Int, source: String) throws {
        let local = try binariesMajor()
        let theirs = Self.major(ofVersionNumber: sourceVersionNumber)
        guard local == theirs else {
            throw PostgresError("\(source) runs PostgreSQL \(theirs) and this member's binaries (\(binary("postgres"))) are PostgreSQL \(local): a copy of one major cannot run on another; point postgresql.bin_dir at PostgreSQL \(theirs)'s")
        }
    }
}

/// The SQL of a non-exclusive online backup on a server of `serverVersion`: PostgreSQL 15
/// renamed pg_start_backup/pg_stop_backup to pg_backup_start/pg_backup_stop (and dropped the
/// exclusive mode their third and first arguments chose).
public enum OnlineBackupSQL {
    /// Starts the backup with a fast checkpoint; `$1` is the label. Yields the start LSN.
    public static func start(serverVersion: Int) -> String {
        serverVersion >= 150_000 ? "pg_backup_start($1, true)" : "pg_start_backup($1, true, false)"
    }

    /// Ends it without waiting for the archive; a row source of `labelfile`, `spcmapfile`, `lsn`.
    public static func stop(serverVersion: Int) -> String {
        serverVersion >= 150_000 ? "pg_backup_stop(false)" : "pg_stop_backup(false, false)"
    }
}
