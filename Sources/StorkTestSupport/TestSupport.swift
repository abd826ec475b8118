import Foundation
import Synchronization
import StorkPostgres
#if canImport(Glibc)
import Glibc
import StorkProcess
#endif

/// Helpers for tests that use real services: ports on loopback, directories owned by the
/// `postgres` OS user (initdb refuses root), and processes stopped by PID.
public enum TestSupport {
    /// A TCP port on 127.0.0.1 that was free a moment ago, never the same twice in one test
    /// process, and below the kernel's ephemeral range (32768-60999 by default): a port bind(0)
    /// hands out there can be taken, before the service binds it, as the source port of any
    /// outgoing connection (an etcd member once failed to start so in a full run).
    /// Two test processes that run side by side (scripts/test runs one per PostgreSQL major)
    /// take ports from separate ranges, `STORK_TEST_PORTS=LOW-HIGH`, so neither hands out a
    /// port the other has handed out and not yet bound.
    public static func freePort() -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: portRange)
            let fresh = handedOutPorts.withLock { $0.insert(port).inserted }
            if fresh && canBind(port) { return port }
        }
        preconditionFailure("no free loopback port in \(portRange)")
    }

    static let portRange: ClosedRange<Int> = {
        guard let text = ProcessInfo.processInfo.environment["STORK_TEST_PORTS"] else { return 20000...32767 }
        let bounds = text.split(separator: "-").compactMap { Int($0) }
        // A range that cannot be read must not fall back to one the other process uses.
        guard bounds.count == 2, 1024 <= bounds[0], bounds[0] < bounds[1], bounds[1] < 32768 else {
            fatalError("STORK_TEST_PORTS=\(text): expected LOW-HIGH within 1024-32767")
        }
        return bounds[0]...bounds[1]
    }()

    /// The PostgreSQL binaries the tests run: `STORK_TEST_PG_BINDIR` (scripts/test runs the
    /// integration suites once with PostgreSQL 15's and once with 18's), else `pg_config --bindir`.
    public static let pgBinDir: String = {
        if let dir = ProcessInfo.processInfo.environment["STORK_TEST_PG_BINDIR"], !dir.isEmpty {
            return dir.hasSuffix("/") && dir.count > 1 ? String(dir.dropLast()) : dir
        }
        return ProcessRunner.captureSynchronously("pg_config", ["--bindir"]) ?? "/usr/lib/postgresql/15/bin"
    }()

    /// The major version of ``pgBinDir``'s `postgres` (15, 18, ...); fails the run when it cannot
    /// be read, so that a missing major is a failure, never a skip.
    public static let pgMajor: Int = {
        let text = ProcessRunner.captureSynchronously(pgBinDir + "/postgres", ["--version"]) ?? ""
        guard let major = PostgresNode.major(ofVersionOutput: text).flatMap({ Int($0) }) else {
            fatalError("cannot read the version of \(pgBinDir)/postgres (\(text)): set STORK_TEST_PG_BINDIR to a PostgreSQL bin directory")
        }
        return major
    }()

    private static let handedOutPorts = Mutex<Set<Int>>([])

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket() failed")
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 } }
    }

    /// The OS user child processes run as when the tests run as root; nil otherwise.
    public static var postgresUser: OSUser? {
        guard geteuid() == 0 else { return nil }
        guard let pw = getpwnam("postgres") else { fatalError("tests run as root need the postgres OS user: apt-get install postgresql") }
        return OSUser(name: "postgres", uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
    }

    /// A new empty directory under /tmp, owned by the postgres user when running as root.
    public static func makeTempDir(_ label: String = "stork") -> String {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buf -> String in
            guard let p = mkdtemp(buf.baseAddress!) else { fatalError("mkdtemp failed") }
            return String(cString: p)
        }
        chmod(path, 0o755)
        if let u = postgresUser { chown(path, u.uid, u.gid) }
        return path
    }

    /// Makes `path` (and missing parents below an existing one) owned by the postgres user.
    public static func chownToPostgres(_ path: String) {
        if let u = postgresUser { chown(path, u.uid, u.gid) }
    }

    /// Removes a directory tree (test clean-up).
    public static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Where a program is: PATH, then PostgreSQL's bin directory.
    public static func which(_ name: String) -> String? {
        ExecutableSearch.find(name, path: (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
            + ":\(pgBinDir):/usr/sbin:/sbin")
    }

    /// Runs a program to its end: its exit status and standard output (standard error is
    /// dropped); `environment` is added to this process's.
    public static func runTool(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Polls `condition` until it is true or `timeout` seconds pass.
    public static func waitUntil(timeout: Double, interval: Double = 0.2, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
        }
        return try await condition()
    }
}
