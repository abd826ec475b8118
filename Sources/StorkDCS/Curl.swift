import CCurl
import Foundation

/// `curl_global_init` exactly once per process (a lazily initialised global is thread-safe).
private let curlGlobalInitResult: Bool = curl_global_init(stork_curl_global_default) == CURLE_OK

/// TLS files for an HTTPS endpoint (PEM paths), as Patroni's `etcd3.cacert/cert/key`.
struct CurlTLS: Sendable, Equatable {
    var caFile: String?
    var certFile: String?
    var keyFile: String?
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

    /// POSTs `body` to `url`; a transport failure (connect, timeout, TLS) is a `.failure` with
    /// curl's text for it, an HTTP answer of any status is a `.success`.
    func post(url: String, body: Data, headers: [String], timeout: Double, tls: CurlTLS) -> Result<CurlResponse, CurlTransportError> {
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
        set(stork_curl_setopt_long(handle, CURLOPT_POST, 1))
        set(stork_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count))
        // COPYPOSTFIELDS copies the bytes (the JSON body holds no NUL).
        set(String(decoding: body, as: UTF8.self).withCString { stork_curl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, $0) })
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
                if access(key, R_OK) != 0 { return with("cannot read the key (etcd3.key \(key))", "etcd3.key") }
                return with("certificate and key do not match (etcd3.cert \(tls.certFile ?? "-"), etcd3.key \(key))", "etcd3.key")
            }
            return with("cannot use the client certificate (etcd3.cert \(tls.certFile ?? "-"))", "etcd3.cert")
        case CURLE_SSL_CACERT_BADFILE:
            return with("cannot read the CA file (etcd3.cacert \(tls.caFile ?? "-"))", "etcd3.cacert")
        case CURLE_PEER_FAILED_VERIFICATION:
            return with(tls.caFile.map { "the server's certificate is not trusted by etcd3.cacert \($0)" }
                        ?? "the server's certificate is not trusted (set etcd3.cacert)", "etcd3.cacert")
        case CURLE_SSL_CLIENTCERT:
            return with("the server requires a client certificate (set etcd3.cert and etcd3.key)", "etcd3.cert")
        case CURLE_SSL_CONNECT_ERROR, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            let refused = ["certificate required", "handshake failure", "bad certificate", "unknown ca",
                           "certificate unknown", "unsupported certificate"].contains { lower.contains($0) }
            let closed = afterNewTLSHandshake && code != CURLE_SSL_CONNECT_ERROR
            if (refused || closed) && (tls.certFile == nil || lower.contains("certificate required")) {
                return with("the server requires a client certificate (set etcd3.cert and etcd3.key)", "etcd3.cert")
            }
            if refused || closed {
                return with("the server refused the client certificate (etcd3.cert \(tls.certFile ?? "-") is not signed by a CA it trusts)", "etcd3.cert")
            }
            if lower.contains("wrong version number") || lower.contains("packet length too long") {
                return with("the server does not speak TLS (use http:// for this endpoint)", "etcd3.protocol")
            }
            if code == CURLE_SSL_CONNECT_ERROR || lower.contains("ssl") || lower.contains("tls") { return with("handshake failed", "etcd3.cacert") }
            return text(code)
        default:
            return text(code)
        }
    }
}

struct CurlTransportError: Error, Sendable {
    var message: String
    /// The `etcd3` key to fix when the failure is a TLS configuration problem.
    var configurationKey: String? = nil
}
