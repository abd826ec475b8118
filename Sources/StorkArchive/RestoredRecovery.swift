import Foundation
import StorkConfig
import StorkPostgres
import StorkProcess
#if canImport(Glibc)
import Glibc
#endif

/// Recovery settings for a directory restored by hand (`stork restore`).
public enum RestoredRecovery {
    /// `2026-11-27 13:00:00+00`, with or without seconds' fractions and `T`; nil otherwise.
    public static func parseTime(_ text: String) -> Date? {
        let normalized = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "T", with: " ")
        return DateText.parse(normalized, ["yyyy-MM-dd HH:mm:ss.SSSSSSxxx", "yyyy-MM-dd HH:mm:ss.SSSxxx", "yyyy-MM-dd HH:mm:ssxxx",
                                          "yyyy-MM-dd HH:mm:ssx", "yyyy-MM-dd HH:mm:ss.SSSSSSx", "yyyy-MM-dd HH:mm:ss xxx",
                                          "yyyy-MM-dd HH:mm:ss 'UTC'"])
    }

    /// Appends `parameters` to `postgresql.auto.conf` and creates `recovery.signal` (through
    /// ``BackupRestorer/restore(_:into:expectedSystemIdentifier:recovery:progress:)``, before
    /// the directory is handed to its owner). Neither is written through a link.
    static func write(_ parameters: [String: String], into directory: String) throws {
        let auto = directory + "/postgresql.auto.conf"
        var text = try readPlainFile(auto) ?? ""
        text += "# Written by stork restore\n"
        for key in parameters.keys.sorted() {
            text += "\(key) = '\(parameters[key]!.replacingOccurrences(of: "'", with: "''"))'\n"
        }
        for (path, contents) in [(auto, text), (directory + "/recovery.signal", "")] {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            let bytes = Array(contents.utf8)
            let ok = fd >= 0 && bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
            let reason = String(cString: strerror(errno))
            if fd >= 0 { close(fd) }
            guard ok else { throw ArchiveError("cannot write \((path as NSString).lastPathComponent) into the restored directory: \(reason)") }
        }
    }

    /// A regular file's text, nil when there is none; never read through a link.
    private static func readPlainFile(_ path: String) throws -> String? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw ArchiveError("cannot read \((path as NSString).lastPathComponent) of the restored directory: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        return String(decoding: FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile(), as: UTF8.self)
    }
}
