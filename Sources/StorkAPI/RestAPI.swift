import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import StorkConfig
import StorkHA

/// Patroni's REST API on `restapi.listen`: health checks and `GET /patroni`, answered from
/// the agent's StatusBoard (see `APIResponses` for the paths and status codes).
public enum RestAPI {
    /// The Hummingbird application; run it in the agent's ServiceGroup.
    public static func makeApplication(config: Config, status: StatusBoard, logger: Logger,
                                       onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> any Service {
        let (host, port) = try listenAddress(config.restapi.listen)
        let router = Router()
        let paths = ["/", "/patroni", "/primary", "/master", "/leader", "/replica", "/read-write", "/read-only",
                     "/health", "/liveness", "/readiness"]
        for path in paths {
            router.get(RouterPath(path)) { _, _ -> Response in
                respond(path: path, status: status, config: config)
            }
            router.head(RouterPath(path)) { _, _ -> Response in
                let code = APIResponses.statusCode(path: path, status.snapshot, config: config) ?? 404
                return Response(status: .init(code: code))
            }
        }
        return Application(router: router,
                           configuration: .init(address: .hostname(host, port: port), serverName: "Stork/\(storkVersion)"),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    static func respond(path: String, status: StatusBoard, config: Config) -> Response {
        let s = status.snapshot
        let code = APIResponses.statusCode(path: path, s, config: config) ?? 404
        let body = APIResponses.patroniDocument(s, config: config).jsonData()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .init(code: code), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// `host:port` (`*` or empty host: all addresses).
    static func listenAddress(_ listen: String) throws -> (String, Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw RestAPIError("restapi.listen: \"\(listen)\": expected host:port")
        }
        var host = String(listen[..<colon])
        if host.isEmpty || host == "*" { host = "0.0.0.0" }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return (host, port)
    }
}

public struct RestAPIError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
