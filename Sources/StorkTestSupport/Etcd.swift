import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking  // String(contentsOf: http URL) needs it on Linux
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The TLS files of an etcd started in TLS mode: the CA that signed the server certificate and
/// that etcd trusts for client certificates, the server's pair, and one client pair it accepts.
public struct EtcdTLSFiles: Sendable {
    public var caCert: String
    public var serverCert: String
    public var serverKey: String
    public var clientCert: String
    public var clientKey: String
}

/// A real etcd member (Debian's `etcd-server`) on free loopback ports with its own data
/// directory; `stop()` ends it by PID and removes the directory.
///
/// With `tls`, the member serves its clients over HTTPS only (`--cert-file`/`--key-file`, a
/// server certificate for 127.0.0.1) and requires a client certificate signed by that CA
/// (`--client-cert-auth --trusted-ca-file`); `tlsFiles` holds the paths a client needs.
public final class EtcdServer: @unchecked Sendable {
    // @unchecked: `process` is set once in init and only read afterwards.
    public let clientURL: String
    public let tlsFiles: EtcdTLSFiles?
    /// In TLS mode: whether etcd requires client certificates (`--client-cert-auth`). etcd 3.4's
    /// JSON gateway refuses every request with a client certificate once authentication is
    /// enabled, so tests of etcd users over TLS turn it off.
    public let clientCertAuth: Bool
    public let peerURL: String
    public let name: String
    public let dataDir: String
    private var process: Process?

    /// Starts one member. For a cluster, pass every member's `name=peerURL` in `initialCluster`
    /// and start all of them before waiting (`waitReady`).
    public init(name: String = "etcd0", clientPort: Int = TestSupport.freePort(), peerPort: Int = TestSupport.freePort(),
                initialCluster: String? = nil, tls certificates: TestCertificates? = nil, clientCertAuth: Bool = true,
                start: Bool = true) throws {
        self.name = name
        self.clientCertAuth = clientCertAuth
        if let certificates {
            let server = try certificates.issue("etcd-server-\(name)-\(clientPort)", cn: "127.0.0.1")
            let client = try certificates.issue("etcd-client-\(name)-\(clientPort)", cn: "stork")
            tlsFiles = EtcdTLSFiles(caCert: certificates.caCert, serverCert: server.cert, serverKey: server.key,
                                    clientCert: client.cert, clientKey: client.key)
            self.clientURL = "https://127.0.0.1:\(clientPort)"
        } else {
            tlsFiles = nil
            self.clientURL = "http://127.0.0.1:\(clientPort)"
        }
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
        if let tls = tlsFiles {
            p.arguments! += ["--cert-file", tls.serverCert, "--key-file", tls.serverKey]
            if clientCertAuth { p.arguments! += ["--client-cert-auth", "--trusted-ca-file", tls.caCert] }
        }
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
    /// In TLS mode it asks with the `curl` command and the client pair.
    public func waitReady(timeout: Double = 30) async throws {
        let healthy: () -> Bool
        if let tls = tlsFiles {
            guard let curl = TestSupport.which("curl") else { throw EtcdTestError("curl is not installed: apt-get install curl") }
            let url = clientURL + "/health"
            healthy = {
                Self.output(curl, ["-s", "--max-time", "2", "--cacert", tls.caCert, "--cert", tls.clientCert,
                                   "--key", tls.clientKey, url]).contains("true")
            }
        } else {
            let url = URL(string: clientURL + "/health")!
            healthy = { (try? String(contentsOf: url, encoding: .utf8))?.contains("true") ?? false }
        }
        let ok = await TestSupport.waitUntil(timeout: timeout) { !isRunning || healthy() }
        if !isRunning { throw EtcdTestError("etcd \(name) at \(clientURL) exited at start: \(logTail)") }
        if !ok { throw EtcdTestError("etcd \(name) at \(clientURL) did not become healthy in \(timeout) s: \(logTail)") }
    }

    /// The end of the member's log: it goes with the data directory when the test ends.
    var logTail: String {
        let text = (try? String(contentsOfFile: dataDir + ".log", encoding: .utf8)) ?? ""
        return String(text.suffix(600))
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

    /// A program's standard output ("" when it cannot run).
    static func output(_ path: String, _ arguments: [String]) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        guard (try? p.run()) != nil else { return "" }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// A ready single-member etcd; with `tls`, serving HTTPS and requiring client certificates.
    public static func startSingle(tls certificates: TestCertificates? = nil, clientCertAuth: Bool = true) async throws -> EtcdServer {
        try await withFreshPorts {
            let e = try EtcdServer(tls: certificates, clientCertAuth: clientCertAuth)
            try await e.waitReady()
            return e
        }
    }

    /// A ready cluster of `count` members on loopback.
    public static func startCluster(count: Int) async throws -> [EtcdServer] {
        try await withFreshPorts {
            let members = try (0..<count).map { try EtcdServer(name: "etcd\($0)", start: false) }
            let initial = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
            for m in members { try m.start(initialCluster: initial) }
            for m in members { try await m.waitReady() }
            return members
        }
    }

    /// `start` again on new ports (its members are destroyed as they go) when a member exits
    /// at start: another process took a port between `freePort` and etcd's bind.
    static func withFreshPorts<T>(_ start: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do { return try await start() } catch let error as EtcdTestError where attempt < 3 && error.description.contains("exited at start") {
                print("etcd: \(error); trying new ports")
                attempt += 1
            }
        }
    }
}

public struct EtcdTestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
