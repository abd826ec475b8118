import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking  // String(contentsOf: http URL) needs it on Linux
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A real etcd member (Debian's `etcd-server`) on free loopback ports with its own data
/// directory; `stop()` ends it by PID and removes the directory.
public final class EtcdServer: @unchecked Sendable {
    // @unchecked: `process` is set once in init and only read afterwards.
    public let clientURL: String
    public let peerURL: String
    public let name: String
    public let dataDir: String
    private var process: Process?

    /// Starts one member. For a cluster, pass every member's `name=peerURL` in `initialCluster`
    /// and start all of them before waiting (`waitReady`).
    public init(name: String = "etcd0", clientPort: Int = TestSupport.freePort(), peerPort: Int = TestSupport.freePort(),
                initialCluster: String? = nil, start: Bool = true) throws {
        self.name = name
        self.clientURL = "http://127.0.0.1:\(clientPort)"
        self.peerURL = "http://127.0.0.1:\(peerPort)"
        self.dataDir = TestSupport.makeTempDir("etcd-\(name)")
        if start { try self.start(initialCluster: initialCluster ?? "\(name)=\(peerURL)") }
    }

    public func start(initialCluster: String) throws {
        guard let etcd = TestSupport.which("etcd") else {
            throw EtcdTestError("etcd is not installed: run scripts/test (apt-get install etcd-server)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: etcd)
        p.arguments = [
            "--name", name, "--data-dir", dataDir,
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
            "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "stork-test-\(getpid())",
            "--log-level", "error",
        ]
        var env = ProcessInfo.processInfo.environment
        env["ETCD_UNSUPPORTED_ARCH"] = "amd64"
        p.environment = env
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        _ = FileManager.default.createFile(atPath: dataDir + ".log", contents: nil)
        p.standardError = FileHandle(forWritingAtPath: dataDir + ".log")
        try p.run()
        process = p
    }

    /// Waits until `/health` answers (a cluster answers once a quorum is up).
    public func waitReady(timeout: Double = 30) async throws {
        let url = URL(string: clientURL + "/health")!
        let ok = await TestSupport.waitUntil(timeout: timeout) {
            guard let out = try? String(contentsOf: url, encoding: .utf8) else { return false }
            return out.contains("true")
        }
        if !ok { throw EtcdTestError("etcd \(name) at \(clientURL) did not become healthy in \(timeout) s; see \(dataDir).log") }
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// Stops the member (SIGTERM by PID, then SIGKILL) and keeps its data for a restart.
    public func stop() {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGTERM)
        for _ in 0..<50 where p.isRunning { usleep(100_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }

    /// Stops the member and removes its data directory.
    public func destroy() {
        stop()
        TestSupport.removeTree(dataDir)
        try? FileManager.default.removeItem(atPath: dataDir + ".log")
    }

    deinit { destroy() }

    /// A ready single-member etcd.
    public static func startSingle() async throws -> EtcdServer {
        let e = try EtcdServer()
        try await e.waitReady()
        return e
    }

    /// A ready cluster of `count` members on loopback.
    public static func startCluster(count: Int) async throws -> [EtcdServer] {
        let members = try (0..<count).map { try EtcdServer(name: "etcd\($0)", start: false) }
        let initial = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        for m in members { try m.start(initialCluster: initial) }
        for m in members { try await m.waitReady() }
        return members
    }
}

public struct EtcdTestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
