import Foundation
import StorkPostgres

/// The `archive_command` and `restore_command` lines that run Stork's own `wal-push` and
/// `wal-fetch` with a configuration file.
public enum WALArchiveCommands {
    /// This program's absolute path (what the commands run).
    public static let executable: String = {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }()

    // PostgreSQL replaces %-sequences before the shell sees the line: a literal % is %%.
    static func escaped(_ word: String) -> String { shellQuoted(word).replacingOccurrences(of: "%", with: "%%") }

    public static func archiveCommand(configFile: String) -> String {
        "\(escaped(executable)) wal-push \(escaped(configFile)) %p"
    }

    /// `stork-wal-fetch` beside `stork` when it is there: it starts in a few milliseconds, which
    /// counts for a command run once per segment. With `bootstrapSource`, from the archive and
    /// scope `bootstrap.archive` names.
    public static func restoreCommand(configFile: String, bootstrapSource: Bool = false) -> String {
        let lean = (executable as NSString).deletingLastPathComponent + "/stork-wal-fetch"
        let program = access(lean, X_OK) == 0 ? escaped(lean) : escaped(executable) + " wal-fetch"
        return "\(program) \(bootstrapSource ? "--bootstrap-source " : "")\(escaped(configFile)) %f %p"
    }
}

/// Recovery settings for a directory restored by hand (`stork restore`).
public enum RestoredRecovery {
    /// `2026-11-27 13:00:00+00`, with or without seconds' fractions and `T`; nil otherwise.
    public static func parseTime(_ text: String) -> Date? {
        let normalized = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "T", with: " ")
        return UTCText.parse(normalized, ["yyyy-MM-dd HH:mm:ss.SSSSSSxxx", "yyyy-MM-dd HH:mm:ss.SSSxxx", "yyyy-MM-dd HH:mm:ssxxx",
                                          "yyyy-MM-dd HH:mm:ssx", "yyyy-MM-dd HH:mm:ss.SSSSSSx", "yyyy-MM-dd HH:mm:ss xxx",
                                          "yyyy-MM-dd HH:mm:ss 'UTC'"])
    }

    /// Appends `parameters` to `postgresql.auto.conf` and creates `recovery.signal`.
    public static func write(_ parameters: [String: String], into directory: String, owner: OSUser?) throws {
        let auto = directory + "/postgresql.auto.conf"
        var text = (try? String(contentsOfFile: auto, encoding: .utf8)) ?? ""
        text += "# Written by stork restore\n"
        for key in parameters.keys.sorted() {
            text += "\(key) = '\(parameters[key]!.replacingOccurrences(of: "'", with: "''"))'\n"
        }
        for (path, contents) in [(auto, text), (directory + "/recovery.signal", "")] {
            guard FileManager.default.createFile(atPath: path, contents: Data(contents.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ArchiveError("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            if let owner { chown(path, owner.uid, owner.gid) }
        }
    }
}
