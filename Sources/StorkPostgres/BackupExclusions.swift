/// What a base backup leaves out of a data directory: PostgreSQL's list in "Backing Up the
/// Data Directory" (the contents of some directories, temporary files, the files a running
/// server or an earlier backup left), plus the signal files Stork writes itself. One list for
/// the rsync method's filters and Stork's own backups.
public enum BackupExclusions {
    /// Top-level directories copied empty.
    public static let emptiedDirectories = ["pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial",
                                            "pg_snapshots", "pg_stat_tmp", "pg_subtrans"]
    /// Names left out wherever they are: a prefix (`pgsql_tmp*`) and a name.
    public static let temporaryPrefix = "pgsql_tmp"
    public static let relationCacheName = "pg_internal.init"
    /// Top-level files left out.
    public static let topLevelFiles = ["postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old",
                                       "tablespace_map", "backup_manifest", "standby.signal", "recovery.signal"]

    /// The same as rsync filter patterns (`/` anchors at the top of the copy).
    public static var rsyncPatterns: [String] {
        emptiedDirectories.map { "/\($0)/*" } + [temporaryPrefix + "*", relationCacheName] + topLevelFiles.map { "/\($0)" }
    }

    /// Whether `path` (relative to the data directory, no leading `/`) is left out.
    public static func excludes(_ path: String) -> Bool {
        let parts = path.split(separator: "/")
        guard let first = parts.first, let last = parts.last else { return false }
        if parts.count == 1, topLevelFiles.contains(String(first)) { return true }
        if parts.count > 1, emptiedDirectories.contains(String(first)) { return true }
        return last.hasPrefix(temporaryPrefix) || last == relationCacheName
            || parts.dropLast().contains { $0.hasPrefix(temporaryPrefix) }
    }
}
