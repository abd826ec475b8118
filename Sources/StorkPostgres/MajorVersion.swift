import Foundation
import StorkConfig
import StorkProcess

// Which PostgreSQL major the binaries are, and which one a data directory was made by. A
// server refuses a data directory of another major, and pg_basebackup a source of another
// major, each with a message that is easy to take for a broken copy: the agent tells the
// mismatch in one line, naming both, before anything is started, copied or removed.
extension PostgresNode {
    /// The major of a version as PostgreSQL writes it in `PG_VERSION` and `postgres --version`:
    /// "15" for 15.18, "18" for 18beta1 or 18devel, "9.6" for 9.6.24; nil when it is none.
    public static func major(ofVersion text: String) -> String? {
        let parts = text.split(separator: ".", maxSplits: 2).map { String($0.prefix(while: \.isNumber)) }
        guard let first = parts.first, let number = Int(first), number > 0 else { return nil }
        if number >= 10 { return String(number) }
        guard parts.count > 1, let minor = Int(parts[1]) else { return nil }
        return "\(number).\(minor)"
    }

    /// The major `postgres --version` tells: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
    public static func major(ofVersionOutput text: String) -> String? {
        guard let range = text.range(of: "(PostgreSQL) "),
              let version = text[range.upperBound...].split(whereSeparator: \.isWhitespace).first else { return nil }
        return major(ofVersion: String(version))
    }

    /// The major of a server's `server_version_num` (150018 → "15", 90624 → "9.6").
    public static func major(ofVersionNumber number: Int) -> String {
        number >= 100_000 ? String(number / 10_000) : "\(number / 10_000).\(number / 100 % 100)"
    }

    /// The major of the `postgres` program this member runs (`postgres --version`).
    /// - Throws: ``PostgresError`` in one line when there is no such program or it does not run.
    public func binariesMajor() throws -> String {
        // binary() is bin_dir's, else pg_config's, else the bare name found on PATH.
        let named = binary("postgres")
        guard let postgres = ExecutableSearch.find(named) else {
            let whereFrom = !settings.binDir.isEmpty ? "postgresql.bin_dir is \(settings.binDir)"
                : named.hasPrefix("/") ? "from pg_config --bindir" : "no bin_dir, no pg_config, none on PATH"
            throw PostgresError("no PostgreSQL server program at \(named) (\(whereFrom)): point postgresql.bin_dir at the bin directory of a PostgreSQL installation")
        }
        let said = ProcessRunner.captureSynchronously(postgres, ["--version"]) ?? ""
        guard let major = Self.major(ofVersionOutput: said) else {
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

    /// Before a copy from the member at `url`: throws in one line naming both majors when
    /// these binaries could not run it. A member that cannot be reached is left to the copy,
    /// whose own error tells more.
    public func checkSourceMajor(atConnURL url: String, source: String) async throws {
        guard let number = try? await serverVersionNumber(atConnURL: url), number > 0 else { return }
        try checkSourceMajor(number, source: source)
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
