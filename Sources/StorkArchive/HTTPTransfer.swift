import CCurl
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `curl_global_init` once per process (a lazily initialised global is thread-safe; libcurl
/// counts the calls, so StorkDCS calling it too is fine).
private let curlReady: Bool = curl_global_init(stork_curl_global_default) == CURLE_OK

/// One HTTP exchange of the archive stores: a request whose body comes from a file and whose
/// successful (2xx) body goes to a file, so neither is ever held in memory whole.
struct HTTPTransfer {
    var method: String
    var url: String
    var headers: [String] = []
    /// SigV4 signing by libcurl: `aws:amz:REGION:s3`, with the key pair.
    var sigV4: (provider: String, accessKeyID: String, secretAccessKey: String)? = nil
    /// The request body: an open file read from its current offset, `size` bytes.
    var upload: (fd: Int32, size: Int64)? = nil
    /// Where a 2xx response body goes; without it (and for any other status) the body is
    /// collected in memory, up to `bodyLimit` bytes (error documents and listings are small).
    var downloadFD: Int32? = nil
    var followRedirects = false
    var bodyLimit = 16 << 20
}

struct HTTPResponse {
    var status: Int
    /// The body when it did not go to `downloadFD`.
    var body: Data
}

/// A failure below HTTP: nothing answered, or the transfer broke off.
struct HTTPTransferError: Error {
    /// One line: the OS's reason for a failed connect ("Connection refused"), else curl's text.
    var reason: String
    /// No connection was made (resolve, connect, TLS handshake): the endpoint is the problem.
    var unreachable: Bool
}

/// What the callbacks share with `perform`; passed to them through `CURLOPT_*DATA`.
private final class TransferState {
    let handle: UnsafeMutableRawPointer
    var uploadFD: Int32 = -1
    var downloadFD: Int32 = -1
    var body = Data()
    var bodyLimit = 0
    /// errno of a failed read of the upload or write of the download.
    var fileError: Int32 = 0
    init(handle: UnsafeMutableRawPointer) { self.handle = handle }
}

/// Bodies: to the download file when the status is 2xx, else to memory.
private let writeBody: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = { data, size, count, context in
    guard let data, let context else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    var status = 0
    _ = stork_curl_getinfo_long(state.handle, CURLINFO_RESPONSE_CODE, &status)
    if state.downloadFD >= 0 && (200..<300).contains(status) {
        var written = 0
        while written < n {
            let w = write(state.downloadFD, data + written, n - written)
            if w < 0 && errno == EINTR { continue }
            guard w > 0 else { state.fileError = errno; return 0 }
            written += w
        }
        return n
    }
    let room = max(0, state.bodyLimit - state.body.count)
    data.withMemoryRebound(to: UInt8.self, capacity: n) { state.body.append($0, count: min(n, room)) }
    return n
}

private let readBody: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = { buffer, size, count, context in
    guard let buffer, let context else { return stork_curl_readfunc_abort }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    while true {
        let n = read(state.uploadFD, buffer, size * count)
        if n >= 0 { return n }
        if errno == EINTR { continue }
        state.fileError = errno
        return stork_curl_readfunc_abort
    }
}

extension HTTPTransfer {
    /// Runs the exchange on a new easy handle (one per call: the stores are Sendable values and
    /// a CURL handle is not, so it never leaves this function). Blocks: call it from a thread
    /// that may block, not from a Swift concurrency task that must not.
    ///
    /// Gives up when connecting takes over 10 s, or when the transfer moves under 1 KiB/s for
    /// 30 s; there is no limit on the total time (an object may be several hundred MB).
    func perform() throws(HTTPTransferError) -> HTTPResponse {
        guard curlReady, let handle = curl_easy_init() else { throw HTTPTransferError(reason: "cannot initialise libcurl", unreachable: false) }
        defer { curl_easy_cleanup(handle) }
        let state = TransferState(handle: handle)
        state.bodyLimit = bodyLimit
        state.downloadFD = downloadFD ?? -1
        let context = Unmanaged.passUnretained(state).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for h in headers { headerList = curl_slist_append(headerList, h) }
        defer { curl_slist_free_all(headerList) }

        var rc = CURLE_OK
        func set(_ code: CURLcode) { if rc == CURLE_OK { rc = code } }
        set(stork_curl_setopt_string(handle, CURLOPT_URL, url))
        set(stork_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(stork_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, 10))
        set(stork_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1024))
        set(stork_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, 30))
        set(stork_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
        set(stork_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, followRedirects ? 1 : 0))
        switch method {
        case "GET": set(stork_curl_setopt_long(handle, CURLOPT_HTTPGET, 1))
        case "HEAD": set(stork_curl_setopt_long(handle, CURLOPT_NOBODY, 1))
        case "PUT": set(stork_curl_setopt_long(handle, CURLOPT_UPLOAD, 1))
        default: set(stork_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method))
        }
        if let upload {
            state.uploadFD = upload.fd
            set(stork_curl_setopt_off_t(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(upload.size)))
            set(stork_curl_setopt_read_function(handle, readBody))
            set(stork_curl_setopt_pointer(handle, CURLOPT_READDATA, context))
        } else if method == "PUT" {
            set(stork_curl_setopt_off_t(handle, CURLOPT_INFILESIZE_LARGE, 0))
        }
        set(stork_curl_setopt_write_function(handle, writeBody))
        set(stork_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        if let sigV4 {
            set(stork_curl_setopt_string(handle, CURLOPT_AWS_SIGV4, sigV4.provider))
            // USERNAME and PASSWORD separately: a colon in either cannot split them wrongly.
            set(stork_curl_setopt_string(handle, CURLOPT_USERNAME, sigV4.accessKeyID))
            set(stork_curl_setopt_string(handle, CURLOPT_PASSWORD, sigV4.secretAccessKey))
        }
        set(stork_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
        guard rc == CURLE_OK else { throw HTTPTransferError(reason: "setting up the request: " + String(cString: curl_easy_strerror(rc)), unreachable: false) }

        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let result = errorBuffer.withUnsafeMutableBufferPointer { buffer -> CURLcode in
            _ = stork_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, buffer.baseAddress)
            defer { _ = stork_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, nil) }
            return curl_easy_perform(handle)
        }
        if state.fileError != 0 {
            throw HTTPTransferError(reason: String(cString: strerror(state.fileError)), unreachable: false)
        }
        if result != CURLE_OK {
            var connects = 0
            _ = stork_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
            var osError = 0
            _ = stork_curl_getinfo_long(handle, CURLINFO_OS_ERRNO, &osError)
            let detail = errorBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let unreachable = [CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT,
                               CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION].contains(result)
                || (result == CURLE_OPERATION_TIMEDOUT && connects == 0)
            let reason = result == CURLE_COULDNT_CONNECT && osError != 0
                ? String(cString: strerror(Int32(osError)))
                : (detail.isEmpty ? String(cString: curl_easy_strerror(result)) : detail)
            throw HTTPTransferError(reason: reason, unreachable: unreachable)
        }
        var status = 0
        _ = stork_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, body: state.body)
    }
}

/// Escapes `text` as AWS's SigV4 canonical form wants it (RFC 3986 unreserved characters kept,
/// every other byte `%XX` in upper case; `/` kept when `keepSlash`). libcurl 7.88 signs the URL's
/// path and query as they are written, so they must be written in this form.
func awsEscape(_ text: String, keepSlash: Bool = false) -> String {
    var out = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        case UInt8(ascii: "/") where keepSlash:
            out.append("/")
        default:
            out += String(format: "%%%02X", byte)
        }
    }
    return out
}

/// A GET into `<target>.stork-part`, renamed to `target` when it succeeded: false (and nothing
/// left) when the response says the object is `missing`, `failure` for any other non-2xx.
func downloadThroughPartFile(to target: String, get: (Int32) throws -> HTTPResponse, missing: (HTTPResponse) -> Bool,
                             failure: (HTTPResponse) -> ArchiveError) throws -> Bool {
    let path = target + ".stork-part"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ArchiveError("cannot write \(path): \(String(cString: strerror(errno)))") }
    var keep = false
    defer {
        close(fd)
        if !keep { unlink(path) }
    }
    let response = try get(fd)
    if missing(response) { return false }
    guard (200..<300).contains(response.status) else { throw failure(response) }
    guard rename(path, target) == 0 else {
        throw ArchiveError("cannot rename \(path) to \(target): \(String(cString: strerror(errno)))")
    }
    keep = true
    return true
}
