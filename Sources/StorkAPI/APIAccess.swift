import StorkConfig

/// Who may send a request that changes something (`POST /reinitialize`, ...), Patroni's
/// order of checks: the source address against `restapi.allowlist` (403), a client
/// certificate when `verify_client` asks for one (403), then basic authentication when
/// `restapi.authentication` is set (401). Reading requests are open to anyone.
public struct APIAccess: Sendable {
    public let allowlist: [IPNetwork]
    public let certificateExpected: Bool
    /// `Basic base64(username:password)`, nil when no authentication is configured.
    let expectedAuthorization: String?

    public init(settings: RestAPISettings, allowlist: [IPNetwork]) {
        self.allowlist = allowlist
        certificateExpected = settings.usesTLS && settings.verifyClient != "none"
        expectedAuthorization = basicAuthorization(username: settings.username, password: settings.password)
    }

    /// Why a changing request is refused (status code and text), nil when it may proceed.
    public func refusal(remoteAddress: String?, hasClientCertificate: Bool, authorization: String?) -> (code: Int, text: String)? {
        if !allowlist.isEmpty {
            guard let remoteAddress, allowlist.contains(where: { $0.contains(remoteAddress) }) else {
                return (403, "Access is denied")
            }
        }
        if certificateExpected && !hasClientCertificate { return (403, "client certificate required") }
        guard let expected = expectedAuthorization else { return nil }
        guard let authorization, !authorization.isEmpty else { return (401, "no auth header received") }
        return Self.constantTimeEqual(authorization, expected) ? nil : (401, "not authenticated")
    }

    /// Compares without an early exit, so the time taken does not tell how much of a guess was right.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }
}
