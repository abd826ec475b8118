import Foundation
import StorkNet
import StorkConfig

/// A member's REST API answer.
public struct MemberAPIResponse: Sendable {
    public var status: Int
    public var text: String
}

/// Calls members' REST APIs (`api_url` of their member keys) with the client settings of the
/// `ctl` section, as Patroni's own client does: `ctl.cacert` else `restapi.cafile`,
/// `ctl.certfile`/`keyfile`/`keyfile_password`, `ctl.insecure`, and basic authentication from
/// `ctl.authentication` else `restapi.authentication`. Each call gets its own curl handle on a
/// dispatch thread (libcurl blocks; these calls are rare).
///
/// The `api_url` comes from a member key anyone with write access to the DCS can plant, so the
/// credentials go only where they are needed and safe: with requests that change something
/// (reading ones are open to anyone, as Patroni's are), only over https when this member's
/// own REST API uses TLS, and never after a redirect (none is followed).
public struct MemberAPIClient: Sendable {
    let tls: CurlTLS
    let authorization: String?
    /// Credentials are sent only to URLs of this scheme (nil: any).
    let credentialScheme: String?
    public let timeout: Double

    public init(config: Config, timeout: Double = 10) {
        let ctl = config.ctl, api = config.restapi
        self.init(cacert: ctl.cacert ?? api.cafile, certfile: ctl.certfile, keyfile: ctl.keyfile,
                  keyfilePassword: ctl.keyfilePassword, insecure: ctl.insecure,
                  username: ctl.username ?? api.username, password: ctl.password ?? api.password,
                  credentialScheme: api.usesTLS || ctl.certfile != nil ? "https" : nil, timeout: timeout)
    }

    /// The settings one by one (tests, and callers that are not a member).
    public init(cacert: String? = nil, certfile: String? = nil, keyfile: String? = nil, keyfilePassword: String? = nil,
                insecure: Bool = false, username: String? = nil, password: String? = nil, credentialScheme: String? = nil,
                timeout: Double = 10) {
        tls = CurlTLS(caFile: cacert, certFile: certfile, keyFile: keyfile, keyPassword: keyfilePassword,
                      insecure: insecure, names: .ctl)
        authorization = basicAuthorization(username: username, password: password)
        self.credentialScheme = credentialScheme
        self.timeout = timeout
    }

    /// The `Authorization` header for `method` on `url`, nil when it must not carry one.
    func authorization(for method: String, url: String) -> String? {
        guard let authorization, !["GET", "HEAD", "OPTIONS"].contains(method.uppercased()) else { return nil }
        if let scheme = credentialScheme, !url.lowercased().hasPrefix(scheme + "://") { return nil }
        return authorization
    }

    /// `method` on `url` with an optional JSON body. A connection or TLS failure throws a
    /// `DCSError` whose `configurationKey` names the `ctl` key to fix; any HTTP answer returns.
    public func request(_ method: String, url: String, json: JSONValue? = nil) async throws(DCSError) -> MemberAPIResponse {
        var headers = ["Expect:", "User-Agent: Stork/\(storkVersion)"]
        if json != nil { headers.append("Content-Type: application/json") }
        if let authorization = authorization(for: method, url: url) { headers.append("Authorization: \(authorization)") }
        let body = json?.jsonData() ?? Data()
        let tls = self.tls, timeout = self.timeout, sent = headers
        let result: Result<CurlResponse, CurlTransportError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    let curl = try CurlEasy()
                    continuation.resume(returning: curl.request(method, url: url, body: body, headers: sent, timeout: timeout, tls: tls))
                } catch {
                    continuation.resume(returning: .failure(CurlTransportError(message: "\(error)")))
                }
            }
        }
        switch result {
        case .success(let response):
            return MemberAPIResponse(status: response.status, text: String(decoding: response.body, as: UTF8.self))
        case .failure(let failure):
            throw DCSError("\(url): \(failure.message)", configurationKey: failure.configurationKey)
        }
    }
}

