import CCurl
import Foundation

/// `curl_global_init` exactly once per process (a lazily initialised global is thread-safe).
private let curlGlobalInitResult: Bool = curl_global_init(stork_curl_global_default) == CURLE_OK

/// TLS files for an HTTPS endpoint (PEM paths), as Patroni's `etcd3.cacert/cert/key` or
/// `ctl.cacert/certfile/keyfile`.
struct CurlTLS: Sendable, Equatable {
    var caFile: String?
    var certFile: String?
    var keyFile: String?
    /// The passphrase of an encrypted `keyFile` (handed to libcurl, never to a command line).
    var keyPassword: String? = nil
    /// Do not verify the server's certificate (`ctl.insecure`); with a client certificate,
    /// only its host name is not checked (Patroni's rule).
    var insecure = false
    /// The configuration keys these come from, for error messages.
    var names = TLSKeyNames.etcd3
}

/// Which configuration keys name the TLS files, so a failure says what to fix.
struct TLSKeyNames: Sendable, Equatable {
    var ca, cert, key, scheme: String
    static let etcd3 = TLSKeyNames(ca: "etcd3.cacert", cert: "etcd3.cert", key: "etcd3.key", scheme: "etcd3.protocol")
    static let ctl = TLSKeyNames(ca: "ctl.cacert", cert: "ctl.certfile", key: "ctl.keyfile", scheme: "restapi.certfile")
}

/// What came back from one HTTP exchange.
struct CurlResponse: Sendable {
    var status: Int
    var body: Data
}

/// The body collected by the write callback; passed through `CURLOPT_WRITEDATA`.
private final class CurlSink {
    var data = Data()
}

/// One libcurl easy handle (kept for connection reuse), freed in `deinit`.
/// Not thread-safe: confine it to one thread or a lock. Its calls BLOCK: never run them on a
/// cooperative (Swift concurrency) thread.
final class CurlEasy {
    private let handle: UnsafeMutableRawPointer

    init() throws(DCSError) {
        guard curlGlobalInitResult else { throw DCSError("curl_global_init failed") }
        guard let h = curl_easy_init() else { throw DCSError("curl_easy_init failed") }
        handle = h
    }

    deinit { curl_easy_cleanup(handle) }

    /// Sends `body` to `url` with `method` (GET sends none); a transport failure (connect,
    /// timeout, TLS) is a `.failure` with curl's text for it, an HTTP answer of any status is a `.success`.
    func request(_ method: String = "POST", url: String, body: Data = Data(), headers: [String], timeout: Double,
                 tls: CurlTLS) -> Result<CurlResponse, CurlTransportError> {
        curl_easy_reset(handle)
        let sink = CurlSink()
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for h in headers { headerList = curl_slist_append(headerList, h) }
        defer { curl_slist_free_all(headerList) }

        let timeoutMs = max(1, Int(timeout * 1000))
        var rc = CURLE_OK
        func set(_ code: CURLcode) { if rc == CURLE_OK { rc = code } }
        set(stork_curl_setopt_string(handle, CURLOPT_URL, url))
        set(stork_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(stork_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMs))
        set(stork_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMs, 2000)))
        set(stork_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
        if method == "GET" {
            set(stork_curl_setopt_long(handle, CURLOPT_HTTPGET, 1))
        } else {
            set(stork_curl_setopt_long(handle, CURLOPT_POST, 1))
            if method != "POST" { set(stork_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method)) }
            set(stork_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count))
            // COPYPOSTFIELDS copies the bytes (the JSON body holds no NUL).
            set(String(decoding: body, as: UTF8.self).withCString { stork_curl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, $0) })
        }
        set(stork_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
        set(stork_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer))
        set(stork_curl_setopt_write_function(handle) { ptr, size, count, context in
            guard let ptr, let context else { return 0 }
            let sink = Unmanaged<CurlSink>.fromOpaque(context).takeUnretainedValue()
            let n = size * count
            ptr.withMemoryRebound(to: UInt8.self, capacity: n) { sink.data.append($0, count: n) }
            return n
        })
        if let ca = tls.caFile { set(stork_curl_setopt_string(handle, CURLOPT_CAINFO, ca)) }
        if let cert = tls.certFile { set(stork_curl_setopt_string(handle, CURLOPT_SSLCERT, cert)) }
        if let key = tls.keyFile { set(stork_curl_setopt_string(handle, CURLOPT_SSLKEY, key)) }
        if let password = tls.keyPassword { set(stork_curl_setopt_string(handle, CURLOPT_KEYPASSWD, password)) }
        if tls.insecure {
            set(stork_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 0))
            if tls.certFile == nil { set(stork_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 0)) }
        }
        // curl's detailed text for a failure (OpenSSL's reason for a TLS one).
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        if rc != CURLE_OK { return .failure(CurlTransportError(message: "setting up the request: " + Self.text(rc))) }

        let result = errorBuffer.withUnsafeMutableBufferPointer { buffer -> CURLcode in
            _ = stork_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, buffer.baseAddress)
            defer { _ = stork_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, nil) }
            return curl_easy_perform(handle)
        }
        if result != CURLE_OK {
            let detail = errorBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            var connects = 0
            _ = stork_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
            let https = url.lowercased().hasPrefix("https://")
            return .failure(Self.failure(result, detail: detail, tls: tls, afterNewTLSHandshake: https && connects > 0))
        }
        var status = 0
        _ = stork_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(CurlResponse(status: status, body: sink.data))
    }

    static func text(_ code: CURLcode) -> String {
        String(cString: curl_easy_strerror(code))
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
            return text(code)
        default:
            return text(code)
        }
    }
}

struct CurlTransportError: Error, Sendable {
    var message: String
    /// The configuration key to fix when the failure is a TLS configuration problem.
    var configurationKey: String? = nil
}
