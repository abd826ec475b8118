import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import StorkConfig
import StorkDCS
import StorkHA
import StorkPostgres

/// Patroni's REST API on `restapi.listen`: health checks and `GET /patroni`, answered from
/// the agent's StatusBoard (see `APIResponses` for the paths and status codes), and the
/// requests that change the cluster (`POST /reinitialize`, `/switchover`, `/failover`,
/// `/restart`, `/reload`, `PATCH`/`PUT /config`),
/// passed to the agent through `ClusterOperations`. HTTPS when `restapi.certfile` is set; requests that change something
/// pass `APIAccess` first (allowlist, client certificate, basic authentication).
public enum RestAPI {
    /// How much of the agent the API's clients may take: the descriptors it shares with etcd
    /// and libpq, and the DCS calls the HA loop needs for its leader key. Fixed; a test
    /// shortens the idle time.
    public struct Limits: Sendable {
        /// An HTTP connection with no request for this long is closed (a request being read or answered is not).
        public var idleTimeout: Duration = .seconds(30)
        /// Connections served at once; more wait in the listen backlog (`restapi.request_queue_size`),
        /// holding no descriptor of the agent's. NIO accepts up to 4 per wake-up, so the count may pass it by 3.
        public var maxConnections = 100
        /// The largest body of a request that changes something; a larger one is answered 413.
        public var maxBody = 64 * 1024
        public init() {}
    }

    /// The Hummingbird application; run it in the agent's ServiceGroup.
    public static func makeApplication(config: Config, agent: any ClusterOperations, logger: Logger, limits: Limits = Limits(),
                                       onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> any Service {
        let (host, port) = try listenAddress(config.restapi.listen)
        let status = agent.status
        let access = APIAccess(settings: config.restapi, allowlist: resolveAllowlist(config.restapi.allowlist, logger: logger))
        let inFlight = OneChangeAtATime()
        let router = Router(context: APIRequestContext.self)
        router.get("/patroni") { _, _ -> Response in json(200, APIResponses.patroniDocument(status.snapshot, config: config)) }
        router.head("/patroni") { _, _ -> Response in Response(status: .ok) }
        for path in HealthChecks.paths {
            router.get(RouterPath(path)) { request, _ -> Response in
                let s = status.snapshot
                let code = HealthChecks.statusCode(path: path, query: HealthQuery(request.uri.query), s, config: config) ?? 404
                return json(code, APIResponses.patroniDocument(s, config: config))
            }
            // HEAD and OPTIONS (HAProxy's `option httpchk OPTIONS /primary`): the code alone.
            for method in [HTTPRequest.Method.head, .options] {
                router.on(RouterPath(path), method: method) { request, _ -> Response in
                    let code = HealthChecks.statusCode(path: path, query: HealthQuery(request.uri.query), status.snapshot, config: config) ?? 404
                    return Response(status: .init(code: code))
                }
            }
        }
        // The cluster as the last cycle read it from the DCS (Patroni reads it again for these).
        router.get("/cluster") { _, _ -> Response in
            let s = status.snapshot
            guard let view = s.view else { return text(503, "the DCS has not been read yet") }
            return json(200, APIResponses.clusterDocument(view, standbyCluster: s.standbyCluster, config: config))
        }
        router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            let archive = ArchiveCounters.read(at: ArchiveCounters.path(dataDir: config.postgresql.dataDir))
            let body = Metrics.text(status.snapshot, config: config, archive: archive)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        router.get("/history") { _, _ -> Response in
            json(200, .array(status.snapshot.view?.history ?? []))
        }
        router.get("/config") { _, _ -> Response in
            guard let view = status.snapshot.view else { return text(503, "the DCS has not been read yet") }
            guard let stored = view.config else { return text(502, "there is no configuration in the DCS") }
            return json(200, stored)
        }
        for (method, replace) in [(HTTPRequest.Method.patch, false), (.put, true)] {
            router.on("/config", method: method) { request, context -> Response in
                let body: ByteBuffer
                do throws(Answer) { body = try await accepted(request, context, access, limit: limits.maxBody) } catch { return error.response }
                guard case .object(let change)? = JSONValue.parse(json: Data(body.readableBytesView)), !change.isEmpty else {
                    return text(400, "Bad request: the body must be a non-empty JSON object such as {\"ttl\": 30}")
                }
                if let running = inFlight.begin("\(method) /config") { return busy(running) }
                defer { inFlight.end() }
                switch await agent.changeConfig(change, replace: replace) {
                case .success(let config): return json(200, config)
                case .failure(let refused): return text(refused.code, refused.reason)
                }
            }
        }
        router.post("/reinitialize") { request, context -> Response in
            let body: ByteBuffer
            do throws(Answer) { body = try await accepted(request, context, access, limit: limits.maxBody) } catch { return error.response }
            // Options that cannot be read are not taken for none (Patroni answers 400 too).
            guard let map = optionalObject(body) else {
                return text(400, "Bad request: the body must be a JSON object such as {\"force\": true}, or empty")
            }
            let force = map["force"]?.isTruthy ?? false, fromLeader = map["from_leader"]?.isTruthy ?? false
            if let running = inFlight.begin("POST /reinitialize") { return busy(running) }
            defer { inFlight.end() }
            if let reason = await agent.reinitialize(force: force, fromLeader: fromLeader) {
                return text(503, reason)
            }
            return text(200, "reinitialize started")
        }
        for (path, switchover) in [("/switchover", true), ("/failover", false)] {
            router.post(RouterPath(path)) { request, context -> Response in
                let body: ByteBuffer
                do throws(Answer) { body = try await accepted(request, context, access, limit: limits.maxBody) } catch { return error.response }
                guard case .object(let map)? = JSONValue.parse(json: Data(body.readableBytesView)) else {
                    return text(400, "Bad request: a JSON object with leader and candidate is expected")
                }
                let schedule = map["scheduled_at"].flatMap { $0 == .null ? nil : RestartRequestParser.parseSchedule($0, action: "switchover", now: Date()) }
                if let running = inFlight.begin("POST \(path)") { return busy(running) }
                defer { inFlight.end() }
                // Patroni takes `member` for the candidate too.
                let (code, message) = await agent.manualFailover(leader: map["leader"]?.scalarText,
                                                                  candidate: (map["candidate"] ?? map["member"])?.scalarText,
                                                                  switchover: switchover, schedule: schedule)
                return text(code, message)
            }
        }
        router.post("/restart") { request, context -> Response in
            let body: ByteBuffer
            do throws(Answer) { body = try await accepted(request, context, access, limit: limits.maxBody) } catch { return error.response }
            guard let fields = optionalObject(body) else {
                return text(400, "Bad request: the body must be a JSON object such as {\"schedule\": \"2030-01-01T01:00:00+00:00\"}, or empty")
            }
            let restart: RestartRequest
            switch RestartRequestParser.parse(fields) {
            case .success(let r): restart = r
            case .failure(let refused): return text(refused.code, refused.reason)
            }
            if let running = inFlight.begin("POST /restart") { return busy(running) }
            defer { inFlight.end() }
            let (code, message) = await agent.restart(restart)
            return text(code, message)
        }
        router.delete("/restart") { request, context -> Response in
            if let refused = await refusal(request, context, access) { return refused }
            let (code, message) = await agent.cancelScheduledRestart()
            return text(code, message)
        }
        router.delete("/switchover") { request, context -> Response in
            if let refused = await refusal(request, context, access) { return refused }
            let (code, message) = await agent.cancelScheduledSwitchover()
            return text(code, message)
        }
        // Handled as SIGHUP is, by the next cycle (Patroni answers the same before it reloads).
        router.post("/reload") { request, context -> Response in
            if let refused = await refusal(request, context, access) { return refused }
            agent.requestReload(from: "POST /reload")
            return text(202, "reload scheduled")
        }
        // Patroni's test hook (it only acts on Windows): refused the same way, then "not here".
        router.post("/sigterm") { request, context -> Response in
            if let refused = await refusal(request, context, access) { return refused }
            return text(501, "/sigterm is not implemented by Stork yet")
        }

        let http1: HTTPServerBuilder = .http1(configuration: .init(idleTimeout: TimeAmount(limits.idleTimeout)))
        let server: HTTPServerBuilder = config.restapi.usesTLS ? try .tls(http1, tlsConfiguration: tlsConfiguration(config.restapi)) : http1
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "Stork/\(storkVersion)",
                                                     backlog: config.restapi.requestQueueSize,
                                                     availableConnectionsDelegate: ConnectionCap(limits.maxConnections, logger: logger))
        return Application(router: router, server: server, configuration: configuration,
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    /// A changing request that passed the access checks: its body, at most `limit` bytes
    /// (413 when larger); else the answer that refuses it.
    static func accepted(_ request: Request, _ context: APIRequestContext, _ access: APIAccess, limit: Int) async throws(Answer) -> ByteBuffer {
        if let refused = await refusal(request, context, access) { throw Answer(refused) }
        do { return try await request.body.collect(upTo: limit) } catch is NIOTooManyBytesError {
            throw Answer(text(413, "Request body too large: at most \(limit / 1024) KiB"))
        } catch {
            throw Answer(text(400, "Bad request: the body could not be read"))
        }
    }

    /// An optional body's JSON object: empty when there is no body, nil when it is not an object.
    static func optionalObject(_ body: ByteBuffer) -> [String: JSONValue]? {
        if case .object(let map)? = JSONValue.parse(json: Data(body.readableBytesView)) { return map }
        return body.readableBytesView.allSatisfy({ Character(UnicodeScalar($0)).isWhitespace }) ? [:] : nil
    }

    /// A Response as a failure of `accepted`.
    struct Answer: Error { let response: Response; init(_ r: Response) { response = r } }

    /// The answer to a changing request while `running` (`POST /switchover`, ...) has not answered.
    static func busy(_ running: String) -> Response {
        text(503, "\(running) is in progress; try again when it has answered")
    }

    static func json(_ code: Int, _ document: JSONValue) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .init(code: code), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: document.jsonData())))
    }

    static func text(_ code: Int, _ message: String, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .init(code: code), headers: headers, body: .init(byteBuffer: ByteBuffer(string: message)))
    }

    /// The response that refuses a changing request, nil when it may go on.
    static func refusal(_ request: Request, _ context: APIRequestContext, _ access: APIAccess) async -> Response? {
        let certificate = access.certificateExpected ? (try? await context.channel.nioSSL_peerCertificate().get()) ?? nil : nil
        guard let (code, message) = access.refusal(remoteAddress: context.channel.remoteAddress?.ipAddress,
                                                   hasClientCertificate: certificate != nil,
                                                   authorization: request.headers[.authorization]) else { return nil }
        context.logger.warning("refused \(request.method) \(request.uri.path) from \(context.channel.remoteAddress?.ipAddress ?? "?"): \(message)")
        var headers = HTTPFields()
        if code == 401 { headers[.wwwAuthenticate] = "Basic realm=\"Stork\"" }
        return text(code, message, headers: headers)
    }

    /// The server's TLS settings from `restapi.certfile/keyfile/keyfile_password/cafile/verify_client`.
    static func tlsConfiguration(_ api: RestAPISettings) throws -> TLSConfiguration {
        let identity = try TLSIdentity.load(certfile: api.certfile ?? "", keyfile: api.keyfile, password: api.keyfilePassword,
                                            keys: ("restapi.certfile", "restapi.keyfile", "restapi.keyfile_password"))
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: identity.chain.map { .certificate($0) },
                                                           privateKey: .privateKey(identity.key))
        switch api.verifyClient {
        case "required": tls.certificateVerification = .noHostnameVerification
        case "optional": tls.certificateVerification = .optionalVerification
        default: tls.certificateVerification = .none
        }
        if let ca = api.cafile, !ca.isEmpty { tls.trustRoots = .file(ca) }
        return tls
    }

    /// `restapi.allowlist` as networks; host names are resolved once, at start.
    static func resolveAllowlist(_ entries: [String], logger: Logger) -> [IPNetwork] {
        var out: [IPNetwork] = []
        for entry in entries {
            if let network = IPNetwork(entry) { out.append(network); continue }
            let addresses = resolve(host: entry)
            if addresses.isEmpty { logger.error("restapi.allowlist: cannot resolve \"\(entry)\"; it allows nobody") }
            out += addresses.compactMap(IPNetwork.init)
        }
        return out
    }

    static func resolve(host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0 else { return [] }
        defer { freeaddrinfo(result) }
        var out: [String] = []
        var next = result
        while let info = next {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                out.append(cText(buffer))
            }
            next = info.pointee.ai_next
        }
        return out
    }

    /// `host:port` (`*` or empty host: all addresses).
    static func listenAddress(_ listen: String) throws -> (String, Int) {
        let (hosts, port) = ListenAddress.split(listen)
        guard let port else { throw RestAPIError("restapi.listen: \"\(listen)\": expected host:port") }
        var host = hosts
        if host.isEmpty || host == "*" { host = "0.0.0.0" }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return (host, port)
    }
}

/// At most one changing request that reaches the DCS (switchover, failover, reinitialize) at a
/// time. The etcd client runs its calls one after another, the HA loop's leader key refresh
/// among them: a flood of such requests would queue ahead of the refresh one call each. With
/// this, it adds at most the one request's calls (a switchover polls the DCS for up to 30 s,
/// one call at a time); the others are answered 503 before any DCS call.
final class OneChangeAtATime: Sendable {
    private let current = Mutex<String?>(nil)

    /// Nil when `what` may run (call `end` when it has answered), else the request that runs.
    func begin(_ what: String) -> String? {
        current.withLock { running in
            if let running { return running }
            running = what
            return nil
        }
    }

    func end() { current.withLock { $0 = nil } }
}

/// Hummingbird's connection count with a line in the log when the API stops accepting
/// connections (they wait in the listen backlog) and when half of them have closed since.
struct ConnectionCap: AvailableConnectionsDelegate {
    let maximum: Int
    let logger: Logger
    var open = 0
    var full = false

    init(_ maximum: Int, logger: Logger) {
        self.maximum = maximum
        self.logger = logger
    }

    mutating func connectionOpened() {
        open += 1
        if open >= maximum && !full {
            full = true
            logger.warning("REST API: \(open) connections open, the most it serves; new ones wait in the listen backlog")
        }
    }

    mutating func connectionClosed() {
        open -= 1
        if full && open <= maximum / 2 {
            full = false
            logger.info("REST API: \(open) connections open (of at most \(maximum))")
        }
    }

    func isAcceptingNewConnections() -> Bool { open < maximum }
}

/// The request context: Hummingbird's core storage plus the connection, for the peer's
/// address (allowlist) and certificate (`verify_client`).
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

public struct RestAPIError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
