import Foundation

/// The `archive_command` and `restore_command` lines that run Stork's own `wal-push` and
/// `wal-fetch` with a configuration file.
public enum WALArchiveCommands {
    /// This program's absolute path (what the commands run).
    public static let executable: String = {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }()

    /// A program installed beside this one (`stork-wal-fetch`, `stork-fence`).
    public static func beside(_ name: String) -> String {
        (executable as NSString).deletingLastPathComponent + "/" + name
    }

    // PostgreSQL replaces %-sequences before the shell sees the line: a literal % is %%.
    static func escaped(_ word: String) -> String { shellQuoted(word).replacingOccurrences(of: "%", with: "%%") }

    public static func archiveCommand(configFile: String) -> String {
        "\(escaped(executable)) wal-push \(escaped(configFile)) %p"
    }

    /// `stork-wal-fetch` beside `stork` when it is there: it starts in a few milliseconds, which
    /// counts for a command run once per segment. With `bootstrapSource`, from the archive and
    /// scope `bootstrap.archive` names.
    public static func restoreCommand(configFile: String, bootstrapSource: Bool = false) -> String {
        let lean = beside("stork-wal-fetch")
        let program = access(lean, X_OK) == 0 ? escaped(lean) : escaped(executable) + " wal-fetch"
        return "\(program) \(bootstrapSource ? "--bootstrap-source " : "")\(escaped(configFile)) %f %p"
    }
}

