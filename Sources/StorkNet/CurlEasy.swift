import CCurl
import Foundation

/// TLS files for an HTTPS endpoint (PEM paths), as Patroni's `etcd3.cacert/cert/key` or
/// `ctl.cacert/certfile/keyfile`.
public struct CurlTLS: Sendable, Equatable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    /// The passphrase of an encrypted `keyFile` (handed to libcurl, never to a command line).
    public var keyPassword: String? = nil
    /// Do not verify the server's certificate (`ctl.insecure`); with a client certificate,
    /// only its host name is not checked (Patroni's rule).
    public var insecure = false
    /// The configuration keys these come from, for error messages.
    public var names = TLSKeyNames.etcd3

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, keyPassword: String? = nil,
                insecure: Bool = false, names: TLSKeyNames = .etcd3) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.keyPassword = keyPassword
        self.insecure = insecure
        self.names = names
    }
}

/// Which configuration keys name the TLS files, so a failure says what to fix.
public struct TLSKeyNames: Sendable, Equatable {
    public var ca, cert, key, scheme: String
    public static let etcd3 = TLSKeyNames(ca: "etcd3.cacert", cert: "etcd3.cert", key: "etcd3.key", scheme: "etcd3.protocol")
    public static let ctl = TLSKeyNames(ca: "ctl.cacert", cert: "ctl.certfile", key: "ctl.keyfile", scheme: "restapi.certfile")
}

/// What came back from one HTTP exchange.
public struct CurlResponse: Sendable {
    public var status: Int
    public var body: Data
}

/// The body collected by the write callback; passed through `CURLOPT_WRITEDATA`.
private final class CurlSink {
    var data = Data()
}

/// One HTTP client connection for small requests and answers held in memory (etcd's
/// gateway, members' REST APIs): one libcurl handle, kept for connection reuse.
/// Not thread-safe: confine it to one thread or a lock. Its calls BLOCK: never run them on a
/// cooperative (Swift concurrency) thread.
public final class CurlEasy {
    private let curl: CurlHandle

    public init() throws(CurlSetupError) {
        curl = try CurlHandle()
    }

    /// Sends `body` to `url` with `method` (GET sends none); a transport failure (connect,
    /// timeout, TLS) is a `.failure` with curl's text for it, an HTTP answer of any status is a `.success`.
    public func request(_ method: String = "POST", url: String, body: Data = Data(), headers: [String], timeout: Double,
                        tls: CurlTLS) -> Result<CurlResponse, CurlTransportError> {
        curl.reset(headers: headers)
        let sink = CurlSink()
        let timeoutMs = max(1, Int(timeout * 1000))
        curl.set(CURLOPT_URL, url)
        // Never after a redirect: the headers (credentials, a token) would go wherever it points.
        curl.set(CURLOPT_FOLLOWLOCATION, 0)
        curl.set(CURLOPT_TIMEOUT_MS, timeoutMs)
        curl.set(CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMs, 2000))
        if method == "GET" {
            curl.set(CURLOPT_HTTPGET, 1)
        } else {
            curl.set(CURLOPT_POST, 1)
            if method != "POST" { curl.set(CURLOPT_CUSTOMREQUEST, method) }
            curl.set(CURLOPT_POSTFIELDSIZE, body.count)
            // COPYPOSTFIELDS copies the bytes (the JSON body holds no NUL).
            curl.set(CURLOPT_COPYPOSTFIELDS, String(decoding: body, as: UTF8.self))
        }
        curl.set(CURLOPT_WRITEDATA, pointer: Unmanaged.passUnretained(sink).toOpaque())
        curl.setWriteFunction { ptr, size, count, context in
            guard let ptr, let context else { return 0 }
            let sink = Unmanaged<CurlSink>.fromOpaque(context).takeUnretainedValue()
            let n = size * count
            ptr.withMemoryRebound(to: UInt8.self, capacity: n) { sink.data.append($0, count: n) }
            return n
        }
        if let ca = tls.caFile { curl.set(CURLOPT_CAINFO, ca) }
        if let cert = tls.certFile { curl.set(CURLOPT_SSLCERT, cert) }
        if let key = tls.keyFile { curl.set(CURLOPT_SSLKEY, key) }
        if let password = tls.keyPassword { curl.set(CURLOPT_KEYPASSWD, password) }
        if tls.insecure {
            curl.set(CURLOPT_SSL_VERIFYHOST, 0)
            if tls.certFile == nil { curl.set(CURLOPT_SSL_VERIFYPEER, 0) }
        }
        if curl.setupError != CURLE_OK {
            return .failure(CurlTransportError(message: "setting up the request: " + CurlHandle.text(curl.setupError)))
        }
        let result = withExtendedLifetime(sink) { curl.perform() }
        if result != CURLE_OK {
            let https = url.lowercased().hasPrefix("https://")
            return .failure(Self.failure(result, detail: curl.errorText, tls: tls,
                                         afterNewTLSHandshake: https && curl.info(CURLINFO_NUM_CONNECTS) > 0))
        }
        return .success(CurlResponse(status: curl.info(CURLINFO_RESPONSE_CODE), body: sink.data))
    }

    /// One line for a failed exchange: curl's short text, or for a TLS failure what went wrong
    /// in words an operator acts on (which file, which side refused) and OpenSSL's reason.
    /// Never holds a secret: the request's headers and body are not part of it.
    /// `afterNewTLSHandshake`: this exchange opened a new HTTPS connection. A server that refuses
    /// the client certificate of a TLS 1.3 handshake closes the connection after it, so the
    /// client sees a failed send or receive, sometimes without the server's alert.
    static func failure(_ code: CURLcode, detail: String, tls: CurlTLS, afterNewTLSHandshake: Bool = false) -> CurlTransportError {
        let reason = detail.trimmingCharacters(in: .whitespacesAndNewlines)
        let lower = reason.lowercased()
        var key: String?
        func with(_ summary: String, _ k: String) -> String {
            key = k
            return reason.isEmpty ? "TLS: \(summary)" : "TLS: \(summary) (\(reason))"
        }
        let text = failureText(code, lower: lower, tls: tls, afterNewTLSHandshake: afterNewTLSHandshake, with: with)
        return CurlTransportError(message: text, configurationKey: key)
    }

    private static func failureText(_ code: CURLcode, lower: String, tls: CurlTLS, afterNewTLSHandshake: Bool,
                                    with: (String, String) -> String) -> String {
        switch code {
        case CURLE_SSL_CERTPROBLEM:
            if lower.contains("private key") || lower.contains("key values mismatch") {
                let key = tls.keyFile ?? tls.certFile ?? "-"
                if access(key, R_OK) != 0 { return with("cannot read the key (\(tls.names.key) \(key))", tls.names.key) }
                return with("certificate and key do not match (\(tls.names.cert) \(tls.certFile ?? "-"), \(tls.names.key) \(key))", tls.names.key)
            }
            return with("cannot use the client certificate (\(tls.names.cert) \(tls.certFile ?? "-"))", tls.names.cert)
        case CURLE_SSL_CACERT_BADFILE:
            return with("cannot read the CA file (\(tls.names.ca) \(tls.caFile ?? "-"))", tls.names.ca)
        case CURLE_PEER_FAILED_VERIFICATION:
            return with(tls.caFile.map { "the server's certificate is not trusted by \(tls.names.ca) \($0)" }
                        ?? "the server's certificate is not trusted (set \(tls.names.ca))", tls.names.ca)
        case CURLE_SSL_CLIENTCERT:
            return with("the server requires a client certificate (set \(tls.names.cert) and \(tls.names.key))", tls.names.cert)
        case CURLE_SSL_CONNECT_ERROR, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            let refused = ["certificate required", "handshake failure", "bad certificate", "unknown ca",
                           "certificate unknown", "unsupported certificate"].contains { lower.contains($0) }
            let closed = afterNewTLSHandshake && code != CURLE_SSL_CONNECT_ERROR
            if (refused || closed) && (tls.certFile == nil || lower.contains("certificate required")) {
                return with("the server requires a client certificate (set \(tls.names.cert) and \(tls.names.key))", tls.names.cert)
            }
            if refused || closed {
                return with("the server refused the client certificate (\(tls.names.cert) \(tls.certFile ?? "-") is not signed by a CA it trusts)", tls.names.cert)
            }
            if lower.contains("wrong version number") || lower.contains("packet length too long") {
                return with("the server does not speak TLS (use http:// for this endpoint)", tls.names.scheme)
            }
            if code == CURLE_SSL_CONNECT_ERROR || lower.contains("ssl") || lower.contains("tls") { return with("handshake failed", tls.names.ca) }
            return CurlHandle.text(code)
        default:
            return CurlHandle.text(code)
        }
    }
}

public struct CurlTransportError: Error, Sendable {
    public var message: String
    /// The configuration key to fix when the failure is a TLS configuration problem.
    public var configurationKey: String? = nil

    public init(message: String, configurationKey: String? = nil) {
        self.message = message
        self.configurationKey = configurationKey
    }
}
