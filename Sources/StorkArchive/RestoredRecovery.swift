import Foundation
import StorkConfig
import StorkPostgres
import StorkProcess

/// Recovery settings for a directory restored by hand (`stork restore`).
public enum RestoredRecovery {
    /// `2026-11-27 13:00:00+00`, with or without seconds' fractions and `T`; nil otherwise.
    public static func parseTime(_ text: String) -> Date? {
        let normalized = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "T", with: " ")
        return DateText.parse(normalized, ["yyyy-MM-dd HH:mm:ss.SSSSSSxxx", "yyyy-MM-dd HH:mm:ss.SSSxxx", "yyyy-MM-dd HH:mm:ssxxx",
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
