import CCurl
import Foundation

/// `curl_global_init` exactly once per process (a lazily initialised global is thread-safe).
private let curlGlobalInitResult: Bool = curl_global_init(stork_curl_global_default) == CURLE_OK

/// The one owner of a libcurl easy handle: the handle, its header list and its error buffer
/// live and die together. Every libcurl call of Stork goes through this type.
///
/// Not thread-safe, and not Sendable: confine it to one thread or a lock. `perform` BLOCKS:
/// never call it on a cooperative (Swift concurrency) thread.
final class CurlHandle {
    let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// curl's detailed text for a failure (OpenSSL's reason for a TLS one), filled by `perform`.
    private let errorBuffer: UnsafeMutablePointer<CChar>
    /// The first failed option since `reset`: a request that could not be set up is not sent.
    private(set) var setupError = CURLE_OK

    init() throws(CurlSetupError) {
        guard curlGlobalInitResult else { throw CurlSetupError(message: "cannot initialise libcurl (curl_global_init failed)") }
        guard let h = curl_easy_init() else { throw CurlSetupError(message: "cannot initialise libcurl (curl_easy_init failed)") }
        handle = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    // The handle refers to the header list and the error buffer: all three go together, the
    // handle first, so that it never points at freed memory.
    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    /// Forgets every option of the last request (the connection cache stays), then sets `headers`.
    func reset(headers: [String]) {
        curl_easy_reset(handle)
        curl_slist_free_all(headerList)
        headerList = nil
        for h in headers { headerList = curl_slist_append(headerList, h) }
        setupError = CURLE_OK
        errorBuffer[0] = 0
        record(stork_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
        record(stork_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        record(stork_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        record(stork_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
    }

    func set(_ option: CURLoption, _ value: Int) { record(stork_curl_setopt_long(handle, option, value)) }
    func set(_ option: CURLoption, _ value: String) { record(stork_curl_setopt_string(handle, option, value)) }
    func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer?) { record(stork_curl_setopt_pointer(handle, option, pointer)) }
    func setSize(_ option: CURLoption, _ value: Int64) { record(stork_curl_setopt_off_t(handle, option, curl_off_t(value))) }
    func setWriteFunction(_ f: @escaping @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int) {
        record(stork_curl_setopt_write_function(handle, f))
    }
    func setReadFunction(_ f: @escaping @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int) {
        record(stork_curl_setopt_read_function(handle, f))
    }

    private func record(_ code: CURLcode) { if setupError == CURLE_OK { setupError = code } }

    /// Runs the request set up since `reset`.
    func perform() -> CURLcode { curl_easy_perform(handle) }

    /// What `perform` wrote into the error buffer, trimmed.
    var errorText: String {
        String(cString: errorBuffer).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func info(_ item: CURLINFO) -> Int {
        var value = 0
        _ = stork_curl_getinfo_long(handle, item, &value)
        return value
    }

    static func text(_ code: CURLcode) -> String { String(cString: curl_easy_strerror(code)) }
}

/// libcurl could not be set up at all.
public struct CurlSetupError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
