import Foundation
import Logging
import StorkConfig
#if canImport(Glibc)
import Glibc
import StorkProcess
#endif

// Where a new copy of the data directory is built and how it takes the data directory's place:
// a half-built replica is never at `data_dir`. A copy is built in a staging directory beside
// it (same file system, so the swap is two renames), checked, and only then renamed into place.
extension PostgresNode {
    /// Appended to the path of a copy being built, and of each directory outside it.
    public static let stagingSuffix = ".stork-staging"
    /// Appended to the path of what a new copy replaces, until it is removed.
    public static let replacedSuffix = ".stork-old"

    /// The staging directory: `<data_dir>.stork-staging`.
    public var stagingDirectory: String { settings.dataDir + Self.stagingSuffix }
    /// Where the data directory being replaced waits during the swap: `<data_dir>.stork-old`.
    public var replacedDirectory: String { settings.dataDir + Self.replacedSuffix }

    /// `.<data dir name>.<suffix>` beside the directory the data directory resolves to (a link
    /// and its target are one directory): the agent's own files (its lock, the fence's PID, the
    /// children it runs), which must outlive a swap and are no copy of the data.
    public static func agentFile(beside dataDir: String, suffix: String) -> String {
        let parent = (dataDir as NSString).deletingLastPathComponent
        let real = resolvedPath(dataDir) ?? resolvedPath(parent.isEmpty ? "." : parent).map { $0 + "/" + (dataDir as NSString).lastPathComponent } ?? dataDir
        return (real as NSString).deletingLastPathComponent + "/." + (real as NSString).lastPathComponent + "." + suffix
    }

    /// `path` with every link resolved; nil when it does not exist.
    public static func resolvedPath(_ path: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        return String(cString: pointer)
    }

    /// `--waldir=PATH` or `--tablespace-mapping=OLD=PATH` split into the part before PATH and
    /// PATH itself (no trailing slash); nil for any other argument.
    static func outsideDirectory(in argument: String) -> (prefix: String, path: String)? {
        func trimmed(_ p: Substring) -> String { p.count > 1 && p.hasSuffix("/") ? String(p.dropLast()) : String(p) }
        if argument.hasPrefix("--waldir=") {
            return ("--waldir=", trimmed(argument.dropFirst("--waldir=".count)))
        }
        let mapping = "--tablespace-mapping="
        guard argument.hasPrefix(mapping) else { return nil }
        // OLD=NEW, where a `=` inside a path is written `\=`.
        var index = argument.index(argument.startIndex, offsetBy: mapping.count)
        while index < argument.endIndex {
            if argument[index] == "\\" { index = argument.index(index, offsetBy: 2, limitedBy: argument.endIndex) ?? argument.endIndex; continue }
            if argument[index] == "=" {
                let next = argument.index(after: index)
                return (String(argument[..<next]), trimmed(argument[next...]))
            }
            index = argument.index(after: index)
        }
        return nil
    }

    /// The directories outside the data directory that `postgresql.basebackup` names
    /// (`waldir`, the new side of each `tablespace-mapping`).
    public var outsideDirectories: [String] {
        userBasebackupArguments.compactMap { Self.outsideDirectory(in: $0)?.path }
    }

    /// Whether pg_basebackup fsyncs its copy itself (it does unless told `no-sync`).
    public var basebackupSyncsItsCopy: Bool { !userBasebackupArguments.contains("--no-sync") }

    /// The user's `postgresql.basebackup` options as pg_basebackup arguments (none when they do not parse).
    var userBasebackupArguments: [String] {
        (try? UserOptions.basebackupArguments(ReplicaMethodSpec.pgBasebackupOptions(settings.basebackup))) ?? []
    }

    /// Symbolic links of a data directory that lead outside it: `pg_wal` and the tablespaces.
    func outsideLinks(of directory: String) -> [(link: String, target: String)] {
        let tablespaces = ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/pg_tblspc")) ?? []).map { "pg_tblspc/" + $0 }
        return (["pg_wal"] + tablespaces).compactMap { name in
            let link = directory + "/" + name
            return (try? FileManager.default.destinationOfSymbolicLink(atPath: link)).map { (link, $0) }
        }
    }

    /// Moves the data directory to `<data_dir><suffix>`, and each WAL or tablespace directory
    /// it links to outside itself to `<dir><suffix>` (the link follows), so that a new data
    /// directory finds every path free. The new path.
    public func moveAside(suffix: String) throws -> String {
        let data = settings.dataDir
        for (link, directory) in outsideLinks(of: data) where FileManager.default.fileExists(atPath: directory) {
            try renameOrThrow(directory, directory + suffix)
            unlink(link)
            guard symlink(directory + suffix, link) == 0 else {
                throw PostgresError("cannot link \(link) to \(directory + suffix): \(String(cString: strerror(errno)))")
            }
        }
        try renameOrThrow(data, data + suffix)
        syncDirectory((data as NSString).deletingLastPathComponent)
        return data + suffix
    }

    /// The data directories failed bootstraps were moved aside to
    /// (`<data_dir>_YYYY-MM-DDTHHMMSS`), oldest first.
    public func movedAsideDirectories() -> [String] {
        let parent = (settings.dataDir as NSString).deletingLastPathComponent
        let prefix = (settings.dataDir as NSString).lastPathComponent + "_"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        return names.filter { name in
            guard name.hasPrefix(prefix) else { return false }
            let stamp = Array(name.dropFirst(prefix.count))
            return stamp.count == 17 && stamp.enumerated().allSatisfy { i, c in
                switch i { case 4, 7: c == "-"; case 10: c == "T"; default: c.isASCII && c.isNumber }
            }
        }.sorted().map { parent + "/" + $0 }
    }

    /// Removes a data directory moved aside by ``moveAside(suffix:)``, with the outside
    /// directories moved with it.
    public func removeMovedAside(_ path: String) throws {
        let suffix = String(path.dropFirst(settings.dataDir.count))
        for (_, directory) in outsideLinks(of: path) where directory.hasSuffix(suffix) { try removeTree(directory) }
        try removeTree(path)
    }

    /// Empties the data directory and the WAL and tablespace directories it links to: what a
    /// failed bootstrap made, when none is to be kept.
    public func removeFailedBootstrap() throws {
        for (_, directory) in outsideLinks(of: settings.dataDir) { try wipe(directory: directory) }
        try wipeDataDirectory()
    }

    /// Removes the staging directory and the outside directories built for it.
    public func removeStagedCopy() throws {
        for (_, target) in outsideLinks(of: stagingDirectory) where target.hasSuffix(Self.stagingSuffix) { try removeTree(target) }
        for path in outsideDirectories { try removeTree(path + Self.stagingSuffix) }
        try removeTree(stagingDirectory)
    }

    /// Whether copies must be built in place in `data_dir`: a mount point cannot be renamed
    /// onto, and a symbolic link renamed away would orphan the directory it points to (the
    /// link, the operator's layout, stays).
    public var dataDirectoryStaysInPlace: Bool {
        var link = stat(), own = stat(), parent = stat()
        let dir = settings.dataDir
        if lstat(dir, &link) == 0, (link.st_mode & S_IFMT) == S_IFLNK { return true }
        guard stat(dir, &own) == 0, stat((dir as NSString).deletingLastPathComponent, &parent) == 0 else { return false }
        return own.st_dev != parent.st_dev
    }

    /// An empty directory at `path` (0700, owned by ``runAs``): what was there is removed.
    public func prepareEmptyDirectory(_ path: String) throws {
        try removeTree(path)
        try ensureDirectory(path)
    }

    /// Removes `path` and everything in it (symbolic links as links); nothing when absent.
    public func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        do { try FileManager.default.removeItem(atPath: path) } catch {
            throw PostgresError("cannot remove \(path): \(error.localizedDescription)")
        }
    }

    /// Checks a new copy before it may become the data directory: `pg_controldata` reads its
    /// `pg_control`, its system identifier is `expectedSystemIdentifier` (when known), and
    /// `pg_verifybackup` accepts it when it holds a backup manifest. Throws saying what is wrong.
    public func verifyCopy(_ directory: String, expectedSystemIdentifier: String?) async throws {
        let control: ControlData
        do { control = try await controlData(of: directory) } catch {
            throw PostgresError("the copy in \(directory) has no readable pg_control: \(error)")
        }
        if let expected = expectedSystemIdentifier, !expected.isEmpty, control.systemIdentifier != expected {
            throw PostgresError("the copy in \(directory) belongs to another cluster: system identifier \(control.systemIdentifier), the cluster's is \(expected)")
        }
        guard FileManager.default.fileExists(atPath: directory + "/backup_manifest") else { return }
        // WAL is checked too when the copy brought its own (pg_basebackup -X stream).
        let wal = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/pg_wal"))?.contains { $0.count == 24 } ?? false
        var command = Command(binary("pg_verifybackup"), ["--quiet"] + (wal ? [] : ["--no-parse-wal"]) + [directory])
        command.timeout = 3600
        let result = try await run(command)
        guard result.succeeded else { throw PostgresNode.failure("pg_verifybackup \(directory)", result) }
    }

    /// Puts the checked copy in the staging directory at `data_dir`: the old data directory (if
    /// any) is renamed out of the way, the copy renamed into place, the old one removed.
    /// Idempotent: after a crash at any point it finishes the same swap.
    public func installStagedCopy() throws {
        let fm = FileManager.default
        let data = settings.dataDir, staged = stagingDirectory, old = replacedDirectory
        if fm.fileExists(atPath: staged) {
            // The copy's WAL and tablespace directories take their final names first, the
            // directories the old data directory uses moving out of the way.
            for (link, target) in outsideLinks(of: staged) where target.hasSuffix(Self.stagingSuffix) {
                let final = String(target.dropLast(Self.stagingSuffix.count))
                if fm.fileExists(atPath: target) {
                    if fm.fileExists(atPath: final) {
                        try removeTree(final + Self.replacedSuffix)
                        try renameOrThrow(final, final + Self.replacedSuffix)
                    }
                    try renameOrThrow(target, final)
                }
                unlink(link)
                guard symlink(final, link) == 0 else {
                    throw PostgresError("cannot link \(link) to \(final): \(String(cString: strerror(errno)))")
                }
            }
            if fm.fileExists(atPath: data) {
                if dataDirectoryState() == .empty {
                    // An empty data directory (or one holding only lost+found and dot files).
                    try removeTree(data)
                } else {
                    try removeTree(old)
                    try renameOrThrow(data, old)
                }
            }
            try renameOrThrow(staged, data)
            syncDirectory((data as NSString).deletingLastPathComponent)
        }
        try removeTree(old)
        for (_, target) in outsideLinks(of: data) { try removeTree(target + Self.replacedSuffix) }
    }

    func renameOrThrow(_ from: String, _ to: String) throws {
        guard rename(from, to) == 0 else {
            throw PostgresError("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    /// fsyncs every file and directory of a copy, with its WAL and tablespace directories
    /// (what `initdb --sync-only` does), so that a copy is durable before it is marked complete
    /// or renamed into place: a machine that crashes afterwards must not find a checked copy
    /// half on disk. Methods other than pg_basebackup (rsync, custom commands) do not sync.
    public func syncCopy(_ path: String) {
        var roots = [path]
        roots += outsideLinks(of: path).map(\.target)
        for root in roots {
            guard let walker = FileManager.default.enumerator(atPath: root) else { continue }
            var directories = [root]
            for case let relative as String in walker {
                let file = root + "/" + relative
                var st = stat()
                guard lstat(file, &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFREG: fsyncPath(file)
                case S_IFDIR: directories.append(file)
                default: break
                }
            }
            // Directories last, deepest first: their entries are in place by then.
            for directory in directories.reversed() { fsyncPath(directory) }
        }
    }

    func fsyncPath(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    /// fsync of a directory, so that renames in it survive a power loss.
    func syncDirectory(_ path: String) { fsyncPath(path) }

    /// Whether any regular file under `path` holds a byte (stops at the first).
    public static func holdsData(_ path: String) -> Bool {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return false }
        for case let relative as String in walker {
            var st = stat()
            if lstat(path + "/" + relative, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0 { return true }
        }
        return false
    }

    /// Bytes in regular files under `path` (symbolic links not followed).
    public static func treeSize(_ path: String) -> Int {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total = 0
        for case let relative as String in walker { total += fileSize(path + "/" + relative) ?? 0 }
        return total
    }

    /// The size of a regular file; nil for anything else or nothing.
    public static func fileSize(_ path: String) -> Int? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int(st.st_size)
    }

    /// Free bytes for an unprivileged user on the file system that holds `path`'s parent.
    public static func freeBytes(near path: String) -> Int {
        var fs = statvfs()
        guard statvfs((path as NSString).deletingLastPathComponent, &fs) == 0 else { return 0 }
        return Int(fs.f_bavail) * Int(fs.f_frsize)
    }
}

/// What this agent is doing to its data directory, recorded in `<data_dir>.stork-incomplete`
/// (beside it: pg_basebackup wants an empty directory) so that a crash at any moment is
/// undone or finished at the next start. While it exists the data directory is never started.
public enum WorkInProgress: String, Sendable {
    /// initdb and the steps after it, in place.
    case bootstrap
    /// A copy built in place (`keep_data`, or a data directory that is a mount point or a link).
    case clone
    /// A copy being built in the staging directory; the data directory is untouched.
    case staging
    /// A checked copy in the staging directory, about to take the data directory's place.
    case staged
}

extension PostgresNode {
    public var workMarker: String { settings.dataDir + ".stork-incomplete" }

    /// Records `work` (atomically, durably).
    public func markWork(_ work: WorkInProgress) throws {
        do { try writeOwnedFile(workMarker, contents: work.rawValue + "\n") } catch {
            throw PostgresError("cannot write \(workMarker): the directory above the data directory must be writable by Stork (\(error))")
        }
        syncDirectory((workMarker as NSString).deletingLastPathComponent)
    }

    /// The recorded work; `clone` for a marker this version does not know.
    public func workInProgress() -> WorkInProgress? {
        guard let text = try? String(contentsOfFile: workMarker, encoding: .utf8) else {
            return FileManager.default.fileExists(atPath: workMarker) ? .clone : nil
        }
        return WorkInProgress(rawValue: text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .clone
    }

    public func clearWork() {
        unlink(workMarker)
        syncDirectory((workMarker as NSString).deletingLastPathComponent)
    }

    /// `<data_dir>.stork-resync`: a method that keeps data (rsync) has begun re-syncing the
    /// data directory in place and no checked copy has replaced it since. Such a directory is
    /// never started as it is, and never wiped: the next build syncs it again (or a staged copy
    /// replaces it). Kept apart from the work marker, which the chain's next method rewrites.
    public var resyncMarker: String { settings.dataDir + ".stork-resync" }

    public var isHalfSynced: Bool { FileManager.default.fileExists(atPath: resyncMarker) }

    public func markHalfSynced() throws {
        do { try writeOwnedFile(resyncMarker, contents: "re-sync in progress\n") } catch {
            throw PostgresError("cannot write \(resyncMarker): the directory above the data directory must be writable by Stork (\(error))")
        }
        syncDirectory((resyncMarker as NSString).deletingLastPathComponent)
    }

    public func clearHalfSynced() {
        guard isHalfSynced else { return }
        unlink(resyncMarker)
        syncDirectory((resyncMarker as NSString).deletingLastPathComponent)
    }
}

extension PostgresNode {
    /// What this agent runs for its data directory, while it runs.
    var childRecords: ChildRecords { ChildRecords(directory: Self.agentFile(beside: settings.dataDir, suffix: "stork-children"), logger: logger) }

    /// Stops what a killed agent left running on its copy: the programs it recorded starting
    /// (``ChildRecords``) that still run get SIGTERM to their process group, then SIGKILL. Run
    /// before the agent removes or rebuilds that copy, so that two writers never share it.
    public func stopOrphanedCopies() async {
        let records = childRecords
        let children = records.leftovers().filter { getpgid($0.pid) == $0.pid && $0.pid != getpgrp() }
        guard !children.isEmpty else { return }
        let names = children.map { "\($0.program) (PID \($0.pid), started by agent \($0.agent))" }.joined(separator: ", ")
        logger.warning("stopping what an earlier agent left running on its copy: \(names)")
        let groups = children.map(\.pid)
        for group in groups { kill(-group, SIGTERM) }
        defer { for group in groups { records.remove(group) } }
        for _ in 0..<50 {
            if groups.allSatisfy({ kill(-$0, 0) != 0 }) { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        for group in groups { kill(-group, SIGKILL) }
    }

    /// The processes running PostgreSQL on this data directory, whether or not postmaster.pid
    /// says so yet: a program given it with `-D` (pg_ctl and the child it forks, postgres), or a
    /// postgres process whose working directory it is. A pg_ctl stopped an instant after it
    /// forked leaves a postmaster that writes postmaster.pid only later.
    public func serverProcesses() -> [pid_t] {
        let dir = settings.dataDir, resolved = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path
        let names: Set<String> = [dir, resolved]
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard pid != getpid(), let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let args = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let named = zip(args, args.dropFirst()).contains { $0 == "-D" && names.contains($1) } || args.contains { arg in
                (arg.hasPrefix("-D") && names.contains(String(arg.dropFirst(2))))
                    || (arg.hasPrefix("--pgdata=") && names.contains(String(arg.dropFirst(9))))
            }
            if named { return true }
            // A backend's title replaces its arguments ("postgres: checkpointer").
            guard let first = args.first, (first as NSString).lastPathComponent == "postgres" || first.hasPrefix("postgres:"),
                  let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd") else { return false }
            return names.contains(cwd)
        }
    }

    /// After ``stopOrphanedCopies()``: waits up to `seconds` until nothing runs PostgreSQL on
    /// the data directory, stopping (immediate) a postmaster that shows itself meanwhile.
    /// Returns what still runs: while anything does, the directory must not be moved or removed.
    public func stopServersLeftBehind(within seconds: Double) async -> [pid_t] {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let running = serverProcesses()
            if running.isEmpty || Date() >= deadline { return running }
            if isRunning() {
                logger.warning("a PostgreSQL server an earlier agent started runs on \(settings.dataDir): stopping it")
                do { try await stop(mode: "immediate", timeout: settings.pgCtlTimeout) } catch {
                    logger.error("could not stop it: \(error)")
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
