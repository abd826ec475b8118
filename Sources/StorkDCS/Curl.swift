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
        if rc != CURLE_OK { return .failure(CurlTransportError(message: "setting up the request: " + Self.text(rc))) }

        let result = curl_easy_perform(handle)
        if result != CURLE_OK { return .failure(CurlTransportError(message: Self.text(result))) }
        var status = 0
        _ = stork_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(CurlResponse(status: status, body: sink.data))
    }

    static func text(_ code: CURLcode) -> String {
        String(cString: curl_easy_strerror(code))
    }
}

struct CurlTransportError: Error, Sendable {
    var message: String
}
