import CCurl
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP exchange of the archive stores: a request whose body comes from a file and whose
/// successful (2xx) body goes to a file, so neither is ever held in memory whole.
public struct HTTPTransfer {
    public var method: String
    public var url: String
    public var headers: [String] = []
    /// SigV4 signing by libcurl: `aws:amz:REGION:s3`, with the key pair.
    public var sigV4: (provider: String, accessKeyID: String, secretAccessKey: String)? = nil
    /// The request body: an open file read from its current offset, `size` bytes.
    public var upload: (fd: Int32, size: Int64)? = nil
    /// Where a 2xx response body goes; without it (and for any other status) the body is
    /// collected in memory, up to `bodyLimit` bytes (error documents and listings are small).
    public var downloadFD: Int32? = nil
    public var followRedirects = false
    public var bodyLimit = 16 << 20

    public init(method: String, url: String, headers: [String] = [],
                sigV4: (provider: String, accessKeyID: String, secretAccessKey: String)? = nil,
                upload: (fd: Int32, size: Int64)? = nil, downloadFD: Int32? = nil, followRedirects: Bool = false,
                bodyLimit: Int = 16 << 20) {
        self.method = method
        self.url = url
        self.headers = headers
        self.sigV4 = sigV4
        self.upload = upload
        self.downloadFD = downloadFD
        self.followRedirects = followRedirects
        self.bodyLimit = bodyLimit
    }
}

public struct HTTPResponse {
    public var status: Int
    /// The body when it did not go to `downloadFD`.
    public var body: Data
}

/// A failure below HTTP: nothing answered, or the transfer broke off.
public struct HTTPTransferError: Error {
    /// One line: the OS's reason for a failed connect ("Connection refused"), else curl's text.
    public var reason: String
    /// No connection was made (resolve, connect, TLS handshake): the endpoint is the problem.
    public var unreachable: Bool
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
    public func perform() throws(HTTPTransferError) -> HTTPResponse {
        let curl: CurlHandle
        do { curl = try CurlHandle() } catch { throw HTTPTransferError(reason: error.message, unreachable: false) }
        let handle = curl.handle
        let state = TransferState(handle: handle)
        state.bodyLimit = bodyLimit
        state.downloadFD = downloadFD ?? -1
        let context = Unmanaged.passUnretained(state).toOpaque()
        curl.reset(headers: headers)
        curl.set(CURLOPT_URL, url)
        curl.set(CURLOPT_CONNECTTIMEOUT, 10)
        curl.set(CURLOPT_LOW_SPEED_LIMIT, 1024)
        curl.set(CURLOPT_LOW_SPEED_TIME, 30)
        curl.set(CURLOPT_FOLLOWLOCATION, followRedirects ? 1 : 0)
        // Web requests only, and a redirect never to another protocol (libcurl's default
        // allows gopher, dict, ftp, ...: a request to a service behind the firewall) nor from
        // https down to plain http.
        curl.set(CURLOPT_PROTOCOLS_STR, "http,https")
        curl.set(CURLOPT_REDIR_PROTOCOLS_STR, url.hasPrefix("https://") ? "https" : "http,https")
        switch method {
        case "GET": curl.set(CURLOPT_HTTPGET, 1)
        case "HEAD": curl.set(CURLOPT_NOBODY, 1)
        case "PUT": curl.set(CURLOPT_UPLOAD, 1)
        default: curl.set(CURLOPT_CUSTOMREQUEST, method)
        }
        if let upload {
            state.uploadFD = upload.fd
            curl.setSize(CURLOPT_INFILESIZE_LARGE, upload.size)
            curl.setReadFunction(readBody)
            curl.set(CURLOPT_READDATA, pointer: context)
        } else if method == "PUT" {
            curl.setSize(CURLOPT_INFILESIZE_LARGE, 0)
        }
        curl.setWriteFunction(writeBody)
        curl.set(CURLOPT_WRITEDATA, pointer: context)
        if let sigV4 {
            curl.set(CURLOPT_AWS_SIGV4, sigV4.provider)
            // USERNAME and PASSWORD separately: a colon in either cannot split them wrongly.
            curl.set(CURLOPT_USERNAME, sigV4.accessKeyID)
            curl.set(CURLOPT_PASSWORD, sigV4.secretAccessKey)
        }
        guard curl.setupError == CURLE_OK else {
            throw HTTPTransferError(reason: "setting up the request: " + CurlHandle.text(curl.setupError), unreachable: false)
        }
        let result = withExtendedLifetime(state) { curl.perform() }
        if state.fileError != 0 {
            throw HTTPTransferError(reason: String(cString: strerror(state.fileError)), unreachable: false)
        }
        if result != CURLE_OK {
            let connects = curl.info(CURLINFO_NUM_CONNECTS)
            let osError = curl.info(CURLINFO_OS_ERRNO)
            let detail = curl.errorText
            let unreachable = [CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT,
                               CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION].contains(result)
                || (result == CURLE_OPERATION_TIMEDOUT && connects == 0)
            let reason = result == CURLE_COULDNT_CONNECT && osError != 0
                ? String(cString: strerror(Int32(osError)))
                : (detail.isEmpty ? CurlHandle.text(result) : detail)
            throw HTTPTransferError(reason: reason, unreachable: unreachable)
        }
        return HTTPResponse(status: curl.info(CURLINFO_RESPONSE_CODE), body: state.body)
    }
}
