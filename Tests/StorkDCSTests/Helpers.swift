import Foundation
#if canImport(FoundationNetworking)
// EtcdServer.waitReady reads /health with String(contentsOf:), which needs FoundationNetworking linked.
import FoundationNetworking
#endif
import Logging
import StorkConfig
import StorkDCS
import StorkTestSupport

let testLogger: Logger = {
    var l = Logger(label: "stork.dcs.tests")
    l.logLevel = .warning
    return l
}()

/// A key prefix no other test uses.
func uniquePrefix(_ label: String) -> String {
    "/service/\(label)-\(UUID().uuidString.prefix(8).lowercased())/"
}

func etcdDCS(_ endpoints: [String], prefix: String, name: String, username: String? = nil,
             password: String? = nil, timeout: Double = 3) -> EtcdDCS {
    EtcdDCS(options: EtcdClientOptions(endpoints: endpoints, username: username, password: password, requestTimeout: timeout),
            keyPrefix: prefix, memberName: name, logger: testLogger)
}

func memberData(_ name: String, port: Int, role: String = "replica") -> JSONValue {
    .object([
        "conn_url": .string("postgres://127.0.0.1:\(port)/postgres"),
        "api_url": .string("http://127.0.0.1:\(port + 1000)/patroni"),
        "state": .string("running"),
        "role": .string(role),
        "xlog_location": .int(50_331_648),
        "timeline": .int(1),
        "tags": .object(["clonefrom": .bool(true)]),
        "version": .string("3.3.0"),
    ])
}

/// Runs a program off the cooperative pool; returns its exit status and standard output.
func runTool(_ path: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try TestSupport.runTool(path, arguments, environment: environment) })
        }
    }
}

/// One key as `etcdctl get -w json` shows it (independent of Stork's client).
struct RawKey: Equatable {
    var value: String
    var lease: Int64
}

/// Every key under `prefix`, read with etcdctl (not with Stork's client).
func etcdctlKeys(_ endpoint: String, prefix: String) async throws -> [String: RawKey] {
    guard let etcdctl = TestSupport.which("etcdctl") else { throw EtcdTestError("etcdctl is not installed") }
    let (status, out) = try await runTool(etcdctl, ["--endpoints=\(endpoint)", "get", "--prefix", prefix, "-w", "json"],
                                          environment: ["ETCDCTL_API": "3"])
    guard status == 0, let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any] else {
        throw EtcdTestError("etcdctl get failed: \(out)")
    }
    var result: [String: RawKey] = [:]
    for kv in json["kvs"] as? [[String: Any]] ?? [] {
        guard let k = kv["key"] as? String, let kd = Data(base64Encoded: k) else { continue }
        let v = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        let lease = (kv["lease"] as? NSNumber)?.int64Value ?? 0
        result[String(decoding: kd, as: UTF8.self)] = RawKey(value: String(decoding: v, as: UTF8.self), lease: lease)
    }
    return result
}

/// The TTL etcd granted a lease (`etcdctl lease timetolive`), by its decimal ID.
func etcdctlLeaseGrantedTTL(_ endpoint: String, lease: Int64) async throws -> Int {
    guard let etcdctl = TestSupport.which("etcdctl") else { throw EtcdTestError("etcdctl is not installed") }
    let (_, out) = try await runTool(etcdctl, ["--endpoints=\(endpoint)", "lease", "timetolive", String(lease, radix: 16), "-w", "json"],
                                     environment: ["ETCDCTL_API": "3"])
    guard let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
          let granted = (json["granted-ttl"] as? NSNumber)?.intValue else {
        throw EtcdTestError("etcdctl lease timetolive failed: \(out)")
    }
    return granted
}

/// Seconds `body` took.
func timed<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let start = Date()
    let r = try await body()
    return (r, Date().timeIntervalSince(start))
}

func parseJSON(_ s: String) -> JSONValue? { JSONValue.parse(json: Data(s.utf8)) }
