import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkTestSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Every log record a test's loggers wrote, to check that no password ever reaches a log.
final class LogRecorder: Sendable {
    private let lines = Mutex<[String]>([])
    var all: String { lines.withLock { $0.joined(separator: "\n") } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func logger() -> Logger {
        var logger = Logger(label: "stork.test") { _ in RecordingHandler(recorder: self) }
        logger.logLevel = .trace
        return logger
    }
}

struct RecordingHandler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        recorder.append("\(event.level) \(event.message) \(all.map { "\($0)=\($1)" }.sorted().joined(separator: " "))")
    }
}

enum Secrets {
    static let superuser = "su'per pw\\x"
    static let replication = "rep:pass 1"
    static let app = "app'pw"
}

/// A node in its own temporary directory on a free port; `cleanUp()` stops it and removes it all.
struct TestNode {
    let directory: String
    let node: PostgresNode

    init(name: String, recorder: LogRecorder, replicationPassword: String = Secrets.replication, binDir: String = "") {
        directory = TestSupport.makeTempDir("stork-\(name)")
        let port = TestSupport.freePort()
        var settings = PostgresSettings(
            listen: "127.0.0.1:\(port)", connectAddress: "127.0.0.1:\(port)",
            dataDir: directory + "/data", pgpass: directory + "/pgpass",
            superuser: PostgresUser(username: "postgres", password: Secrets.superuser),
            replication: PostgresUser(username: "replicator", password: replicationPassword))
        settings.binDir = binDir
        settings.pgCtlTimeout = 30
        node = PostgresNode(settings: settings, memberName: name, runAs: TestSupport.postgresUser, logger: recorder.logger())
    }

    var parameters: [String: JSONValue] {
        [
            "wal_level": .string("replica"), "max_wal_senders": .int(5), "hot_standby": .bool(true),
            "unix_socket_directories": .string(directory), "password_encryption": .string("scram-sha-256"),
            "cluster_name": .string("stork-test"), "shared_buffers": .string("16MB"), "max_connections": .int(20),
            "fsync": .bool(false),
        ]
    }

    static let hba = [
        "local all all trust",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]

    func cleanUp() async {
        if node.isRunning() { try? await node.stop(mode: "immediate", timeout: 20) }
        TestSupport.removeTree(directory)
    }
}

/// Owner name and octal mode of a file.
func ownerAndMode(_ path: String) -> (owner: String, mode: Int)? {
    var st = stat()
    guard stat(path, &st) == 0, let pw = getpwuid(st.st_uid) else { return nil }
    return (String(cString: pw.pointee.pw_name), Int(st.st_mode & 0o777))
}

/// Writes an executable script owned by the postgres user.
func writeScript(_ path: String, _ text: String) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    chmod(path, 0o755)
    TestSupport.chownToPostgres(path)
}
