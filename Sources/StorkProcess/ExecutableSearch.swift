import Foundation

/// Where a program is, as `execvp` would find it: the name itself when it holds a slash,
/// else the first executable file of that name on a `PATH`.
public enum ExecutableSearch {
    /// The executable `program` names on `path` (this process's `PATH` when nil); nil when
    /// there is none. Directories and files without execute permission do not count.
    public static func find(_ program: String, path: String? = nil) -> String? {
        if program.contains("/") { return isExecutableFile(program) ? program : nil }
        let search = path ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in search.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    static func isExecutableFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return access(path, X_OK) == 0
            && FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    /// Why `program` cannot be run, in the system's words: "No such file or directory",
    /// "Permission denied", "Is a directory".
    public static func whyNot(_ program: String) -> String {
        guard program.contains("/") else { return String(cString: strerror(ENOENT)) }
        if access(program, X_OK) != 0 { return String(cString: strerror(errno)) }
        return String(cString: strerror(isExecutableFile(program) ? ENOEXEC : EISDIR))
    }
}
