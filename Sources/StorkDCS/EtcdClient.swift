import Foundation
import StorkNet
import StorkConfig
import Synchronization

/// A failure of one etcd call, before it becomes a `DCSError`.
enum EtcdFailure: Error, Sendable {
    /// No endpoint answered (connection refused, timeout, TLS, or etcd unavailable on each).
    case unreachable(String, key: String? = nil)
    /// etcd answered with an error (gRPC `code`, etcd's `message`).
    case server(httpStatus: Int, code: Int, message: String)
    /// etcd answered something that is not the JSON we expect.
    case badResponse(String)

    var dcsError: DCSError {
        switch self {
        case .unreachable(let m, let key): return DCSError(m, configurationKey: key)
        case .server(let status, let code, let message):
            var key: String?
            if message.contains("invalid user ID or password") { key = "etcd3.password" }
            else if message.contains("etcd refuses JSON-gateway requests that carry a client certificate") { key = "etcd3.cert" }
            return DCSError("etcd3: \(message) (gRPC code \(code), HTTP \(status))", configurationKey: key)
        case .badResponse(let m): return DCSError("etcd3: " + m)
        }
    }

    var isLeaseNotFound: Bool {
        if case .server(_, _, let m) = self { return m.contains("requested lease not found") }
        return false
    }
}

/// gRPC codes etcd uses that we act on.
enum GRPCCode {
    static let deadlineExceeded = 4
    static let unavailable = 14
    static let unauthenticated = 16
}

/// Settings of one etcd v3 JSON-gateway client: the `etcd3` section plus a per-request limit.
public struct EtcdClientOptions: Sendable, Equatable {
    /// Endpoints (tried in order, the last one that answered first), credentials, TLS files.
    public var settings: Etcd3Settings
    /// Seconds one request may take on one endpoint (connect + answer) before the next is tried.
    public var requestTimeout: Double

    public init(settings: Etcd3Settings, requestTimeout: Double = 3) {
        self.settings = settings
        self.requestTimeout = requestTimeout
    }

    public init(endpoints: [String], username: String? = nil, password: String? = nil, requestTimeout: Double = 3) {
        self.init(settings: Etcd3Settings(endpoints: endpoints, username: username, password: password), requestTimeout: requestTimeout)
    }
}

/// The connection state: one curl handle, the auth token, the endpoint that answered last.
/// Used only under `EtcdClient`'s lock, on its queue (never on a cooperative thread).
final class EtcdConnection {
    let options: EtcdClientOptions
    private let curl: CurlEasy
    private var token: String?
    private(set) var preferred = 0
    private(set) var authentications = 0

    init(options: EtcdClientOptions) throws(DCSError) {
        self.options = options
        do { self.curl = try CurlEasy() } catch { throw DCSError(error.message) }
    }

    var hasCredentials: Bool { (options.settings.username ?? "").isEmpty == false && options.settings.password != nil }
    var currentEndpoint: String? { options.settings.endpoints.isEmpty ? nil : options.settings.endpoints[preferred] }

    /// One gateway call (`method` like `/kv/range`), authenticating first when credentials are
    /// set and no token is held, and once more when etcd says the token is missing or stale.
    func call(_ method: String, _ body: JSONValue) throws(EtcdFailure) -> JSONValue {
        if hasCredentials && token == nil { try authenticate() }
        do throws(EtcdFailure) {
            return try send(method, body, useToken: true)
        } catch let failure {
            guard hasCredentials, case .server(_, let code, let message) = failure,
                  code == GRPCCode.unauthenticated || Self.authRetryMessages.contains(where: { message.contains($0) })
            else { throw failure }
            try authenticate()
            return try send(method, body, useToken: true)
        }
    }

    /// etcd's answers that a fresh token cures (Patroni retries on the same ones).
    private static let authRetryMessages = [
        "invalid auth token", "user name is empty", "revision of auth store is old", "permission denied",
    ]

    private func authenticate() throws(EtcdFailure) {
        token = nil
        let name = options.settings.username ?? ""
        do throws(EtcdFailure) {
            let answer = try send("/auth/authenticate",
                                  .object(["name": .string(name), "password": .string(options.settings.password ?? "")]),
                                  useToken: false)
            guard case .string(let t)? = answer["token"], !t.isEmpty else {
                throw EtcdFailure.badResponse("/auth/authenticate answered without a token")
            }
            token = t
            authentications += 1
        } catch let failure {
            if case .server(_, _, let m) = failure, m.contains("authentication is not enabled") { return }
            if case .server(let status, let code, let m) = failure {
                throw .server(httpStatus: status, code: code, message: "authentication as '\(name)' failed: \(m)")
            }
            throw failure
        }
    }

    /// Tries the endpoints, the one that answered last first; remembers the one that answers.
    private func send(_ method: String, _ body: JSONValue, useToken: Bool) throws(EtcdFailure) -> JSONValue {
        let endpoints = options.settings.endpoints
        guard !endpoints.isEmpty else { throw .unreachable("etcd3: no endpoints configured") }
        let payload = body.jsonData(sortedKeys: false)
        var headers = ["Content-Type: application/json", "Expect:"]
        if useToken, let token { headers.append("Authorization: \(token)") }
        let tls = CurlTLS(caFile: options.settings.cacert, certFile: options.settings.cert, keyFile: options.settings.key)
        var failures: [String] = []
        var keys: [String?] = []
        let order = [preferred] + endpoints.indices.filter { $0 != preferred }
        for index in order {
            let base = endpoints[index].hasSuffix("/") ? String(endpoints[index].dropLast()) : endpoints[index]
            switch curl.request(url: base + "/v3" + method, body: payload, headers: headers,
                             timeout: options.requestTimeout, tls: tls) {
            case .failure(let transport):
                failures.append("\(endpoints[index]): \(transport.message)")
                keys.append(transport.configurationKey)
                continue
            case .success(let response):
                let json = JSONValue.parse(json: response.body)
                if let error = Self.error(in: json, status: response.status, body: response.body) {
                    if case .server(_, let code, let message) = error,
                       code == GRPCCode.unavailable || code == GRPCCode.deadlineExceeded {
                        failures.append("\(endpoints[index]): \(message)")
                        keys.append(nil)
                        continue
                    }
                    preferred = index
                    throw error
                }
                guard let json else {
                    failures.append("\(endpoints[index]): HTTP \(response.status), not JSON")
                    keys.append(nil)
                    continue
                }
                preferred = index
                return json
            }
        }
        // A configuration problem only when every endpoint refused for the same setting.
        let key = Set(keys).count == 1 ? keys.first! : nil
        throw .unreachable("etcd3: no endpoint answered (" + failures.joined(separator: "; ") + ")", key: key)
    }

    /// The error etcd's gateway reports: `{"error": ..., "code": N, "message": ...}` with an HTTP
    /// status of 400 or more (a streaming call nests it: `{"error": {"grpc_code", "message"}}`).
    /// A plain-text error body's first line (at most 200 characters) is the message.
    private static func error(in json: JSONValue?, status: Int, body: Data = Data()) -> EtcdFailure? {
        guard let json else {
            guard status >= 400 else { return nil }
            var message = "HTTP \(status)"
            let text = String(decoding: body.prefix(400), as: UTF8.self)
                .split(whereSeparator: \.isNewline).first.map { String($0.prefix(200)).trimmingCharacters(in: .whitespaces) } ?? ""
            if text.contains("CommonName of client sending a request against gateway") {
                // etcd 3.4 with --client-cert-auth and authentication enabled refuses every gateway request.
                message = "etcd refuses JSON-gateway requests that carry a client certificate while etcd authentication is enabled "
                    + "(--client-cert-auth with users); use etcd3.cert/etcd3.key or etcd3.username/etcd3.password, not both"
            } else if !text.isEmpty {
                message = text
            }
            return .server(httpStatus: status, code: status == 503 ? GRPCCode.unavailable : 2, message: message)
        }
        if case .object(let nested)? = json["error"] {
            return .server(httpStatus: nested["http_code"]?.intValue ?? status,
                           code: nested["grpc_code"]?.intValue ?? 2,
                           message: nested["message"]?.scalarText ?? "unknown error")
        }
        guard status >= 400 || json["error"] != nil else { return nil }
        let message = json["message"]?.scalarText ?? json["error"]?.scalarText ?? "HTTP \(status)"
        return .server(httpStatus: status, code: json["code"]?.intValue ?? 2, message: message)
    }
}

/// An etcd v3 client over libcurl and etcd's JSON gateway (`/v3/...`, etcd 3.4 or later).
/// Requests run one at a time on the client's own dispatch queue, off the Swift concurrency
/// pool (libcurl blocks). Keys and values go base64-encoded, as the gateway wants.
public final class EtcdClient: Sendable {
    public let options: EtcdClientOptions
    private let connection: Mutex<EtcdConnection?>
    private let status = Mutex<(endpoint: String?, authentications: Int)>((nil, 0))
    private let setupError: DCSError?
    private let queue = DispatchQueue(label: "stork.etcd3")

    public init(options: EtcdClientOptions) {
        self.options = options
        do {
            connection = Mutex(try EtcdConnection(options: options))
            setupError = nil
        } catch {
            connection = Mutex(nil)
            setupError = error
        }
    }

    /// Runs `body` with the connection on the client's queue (a sequence of calls runs as one
    /// unit, no other request in between).
    func run<T: Sendable>(_ body: @escaping @Sendable (EtcdConnection) throws(EtcdFailure) -> T) async throws(DCSError) -> T {
        if let setupError { throw setupError }
        let result: Result<T, EtcdFailure> = await withCheckedContinuation { continuation in
            queue.async {
                let r: Result<T, EtcdFailure> = self.connection.withLock { conn in
                    guard let conn else { return .failure(.badResponse("no connection")) }
                    defer {
                        let now = (endpoint: conn.currentEndpoint, authentications: conn.authentications)
                        self.status.withLock { $0 = now }
                    }
                    do throws(EtcdFailure) { return .success(try body(conn)) } catch { return .failure(error) }
                }
                continuation.resume(returning: r)
            }
        }
        switch result {
        case .success(let value): return value
        case .failure(let failure): throw failure.dcsError
        }
    }

    /// One raw gateway call: `method` is the path after `/v3`, e.g. `/kv/range`; `body` is the
    /// request JSON. Returns etcd's answer (int64 fields come back as strings).
    public func call(_ method: String, _ body: JSONValue) async throws(DCSError) -> JSONValue {
        try await run { conn throws(EtcdFailure) in try conn.call(method, body) }
    }

    /// The endpoint that answered last (the one tried first next time).
    public var currentEndpoint: String? {
        status.withLock { $0.endpoint }
    }

    /// How many times this client obtained an auth token.
    public var authenticationCount: Int {
        status.withLock { $0.authentications }
    }

    /// Base64 of a string's UTF-8 bytes (keys and values in gateway requests).
    public static func base64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    /// A base64 field of an answer as text.
    public static func text(base64 value: JSONValue?) -> String? {
        guard case .string(let b)? = value, let d = Data(base64Encoded: b) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }

    /// Base64 of the end of the range that holds every key starting with `prefix` (last byte + 1).
    public static func prefixRangeEndBase64(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        for i in bytes.indices.reversed() where bytes[i] < 0xff {
            bytes[i] += 1
            return Data(bytes[...i]).base64EncodedString()
        }
        return Data([0]).base64EncodedString()
    }
}
