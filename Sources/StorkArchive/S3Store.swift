import Crypto
import Foundation
import StorkNet
import StorkConfig
#if canImport(Glibc)
import Glibc
#endif

/// The archive in an S3 bucket, or on a server that speaks S3 (MinIO, Ceph, moto), over
/// libcurl with SigV4 signing. Object `key` is `<prefix>/<key>` in the bucket.
///
/// `create` relies on a conditional PUT (`If-None-Match: *`): S3 (since August 2024), MinIO and
/// moto refuse it with 412 when the object exists, so two writers cannot replace each other's
/// object. A server that ignores the header would let a second writer replace the object
/// silently; WALArchive's check of the existing object before a push narrows that to a race.
///
/// Each object goes up in one PUT (S3 takes up to 5 GB that way), with no multipart upload:
/// backups are cut into parts of a few hundred MB by their writer.
public struct S3Store: ArchiveStore {
    public let bucket: String
    /// Without leading or trailing slashes; may be empty.
    public let prefix: String
    public let region: String
    /// `http(s)://host[:port]` for path-style requests; nil for AWS (virtual-host style).
    public let endpoint: String?
    let accessKeyID: String
    let secretAccessKey: String
    let sessionToken: String?
    /// Keys per ListObjectsV2 page (S3's maximum is 1000); tests make it small.
    var pageSize = 1000
    /// 10 million objects: far beyond any archive's prefix; what a looping endpoint reaches.
    var maxListPages = 10_000

    /// The store of an `s3://` archive section. A credential, the region or the endpoint the
    /// section does not give comes from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL_S3` (or
    /// `AWS_ENDPOINT_URL`) in `environment`. Throws when there is no key pair.
    public init(_ location: ArchiveSettings.S3Location, environment: [String: String]) throws {
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        bucket = location.bucket
        prefix = location.prefix
        region = location.region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? "us-east-1"
        endpoint = (location.endpoint ?? env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL"))
            .map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        // The pair (and token) from one place: a configured key with a token from the
        // environment would be a mix of two identities.
        if location.accessKeyID != nil || location.secretAccessKey != nil {
            guard let id = location.accessKeyID, let secret = location.secretAccessKey else {
                throw ArchiveError("s3://\(bucket): set both archive.access_key_id and archive.secret_access_key (only one is set)")
            }
            (accessKeyID, secretAccessKey, sessionToken) = (id, secret, location.sessionToken)
        } else {
            guard let id = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") else {
                throw ArchiveError("no S3 credentials for s3://\(bucket): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or archive.access_key_id and archive.secret_access_key")
            }
            (accessKeyID, secretAccessKey, sessionToken) = (id, secret, location.sessionToken ?? env("AWS_SESSION_TOKEN"))
        }
    }

    func objectKey(_ key: String) -> String { prefix.isEmpty ? key : prefix + "/" + key }

    public func describe(_ key: String) -> String { "s3://\(bucket)/\(objectKey(key))" }

    /// Where requests go, for messages: the endpoint, or AWS's host for the bucket.
    var endpointDescription: String { endpoint ?? "https://\(virtualHost)" }

    private var virtualHost: String { "\(bucket).s3.\(region).amazonaws.com" }

    /// The bucket's URL, ending in `/`: path style with an endpoint (servers on one host name
    /// rarely have one per bucket), virtual-host style on AWS, except for a bucket with a dot in
    /// its name, which the `*.s3...` certificate cannot cover.
    private var bucketURL: String {
        if let endpoint { return "\(endpoint)/\(awsEscape(bucket))/" }
        if bucket.contains(".") { return "https://s3.\(region).amazonaws.com/\(awsEscape(bucket))/" }
        return "https://\(virtualHost)/"
    }

    private func url(_ key: String) -> String { bucketURL + awsEscape(objectKey(key), keepSlash: true) }

    public func uploadPath(for key: String, scratch: String) -> String { scratch }

    public func localPath(_ key: String) -> String? { nil }

    public func create(_ key: String, fromFile path: String) throws -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let (digest, size) = try sha256(of: fd, path: path)
        // S3 answers 409 while another conditional write of the key is under way: try again.
        for attempt in 1...3 {
            guard lseek(fd, 0, SEEK_SET) == 0 else { throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))") }
            let response = try send("PUT", key, payloadHash: digest, extraHeaders: ["If-None-Match: *"], upload: (fd, size))
            switch response.status {
            case 200..<300: return true
            case 412: return false
            case 409 where attempt < 3: usleep(useconds_t(attempt) * 500_000)
            default: throw failure("PUT", key, response)
            }
        }
        return false  // not reached
    }

    public func download(_ key: String, to target: String) throws -> Bool {
        try downloadThroughPartFile(to: target, get: { try send("GET", key, downloadFD: $0) },
                                    missing: { $0.status == 404 && S3ErrorDocument($0.body).code != "NoSuchBucket" },
                                    failure: { failure("GET", key, $0) })
    }

    public func list(prefix listPrefix: String) throws -> [StoredObject] {
        let storePrefix = prefix.isEmpty ? "" : prefix + "/"
        var objects: [StoredObject] = []
        var token: String?
        var tokens = Set<String>()
        repeat {
            guard tokens.count < maxListPages else {
                throw ArchiveError("\(describe(listPrefix)): the listing goes on past \(maxListPages) pages of \(pageSize): refused; the endpoint does not behave like S3, or the prefix holds far too many objects")
            }
            // libcurl signs the query as written: parameters in sorted order, AWS-escaped.
            var query = token.map { ["continuation-token=" + awsEscape($0)] } ?? []
            query += ["list-type=2", "max-keys=\(pageSize)", "prefix=" + awsEscape(storePrefix + listPrefix)]
            let response = try send("GET", bucketQuery: query.joined(separator: "&"))
            guard response.status == 200 else { throw failure("LIST", listPrefix, response) }
            let page = ListPage(response.body)
            for object in page.objects where object.key.hasPrefix(storePrefix) {
                objects.append(StoredObject(key: String(object.key.dropFirst(storePrefix.count)), size: object.size))
            }
            token = page.truncated ? page.nextToken : nil
            if let token, !tokens.insert(token).inserted {
                throw ArchiveError("\(describe(listPrefix)): S3 returned the continuation token \(token) twice: refused (a listing that would never end); check the endpoint")
            }
            if page.truncated && token == nil { throw ArchiveError("\(describe(listPrefix)): S3 cut the listing short without a continuation token") }
        } while token != nil
        return objects.sorted { $0.key < $1.key }
    }

    public func delete(_ key: String) throws {
        let response = try send("DELETE", key)
        if (200..<300).contains(response.status) { return }
        if response.status == 404 && S3ErrorDocument(response.body).code != "NoSuchBucket" { return }
        throw failure("DELETE", key, response)
    }

    // MARK: - requests

    private static let emptyPayloadHash = SHA256.hash(data: Data()).hex

    /// One signed request for `key`, or for the bucket with `bucketQuery`.
    private func send(_ method: String, _ key: String = "", bucketQuery: String? = nil, payloadHash: String = emptyPayloadHash,
                      extraHeaders: [String] = [], upload: (fd: Int32, size: Int64)? = nil, downloadFD: Int32? = nil) throws -> HTTPResponse {
        var headers = ["x-amz-content-sha256: \(payloadHash)"] + extraHeaders
        if let sessionToken { headers.append("x-amz-security-token: \(sessionToken)") }
        let transfer = HTTPTransfer(method: method, url: bucketQuery.map { bucketURL + "?" + $0 } ?? url(key), headers: headers,
                                    sigV4: ("aws:amz:\(region):s3", accessKeyID, secretAccessKey), upload: upload, downloadFD: downloadFD)
        do {
            return try transfer.perform()
        } catch {
            if error.unreachable { throw ArchiveError("cannot reach S3 endpoint \(endpointDescription): \(error.reason)") }
            let what = bucketQuery == nil ? describe(key) : "s3://\(bucket)"
            throw ArchiveError("S3 \(method) \(what) failed: \(error.reason)")
        }
    }

    /// One line for an S3 answer that is not a success: the status, S3's code and message,
    /// and what to change for the errors a configuration causes.
    private func failure(_ operation: String, _ key: String, _ response: HTTPResponse) -> ArchiveError {
        let error = S3ErrorDocument(response.body)
        var text = "S3 \(operation) \(describe(key)) failed: HTTP \(response.status)"
        if let code = error.code { text += " \(code)" }
        if let message = error.message { text += " (\(message))" }
        let remedy: String? = switch error.code {
        case "InvalidAccessKeyId": "check the access key: archive.access_key_id or AWS_ACCESS_KEY_ID"
        case "SignatureDoesNotMatch": "check the secret key: archive.secret_access_key or AWS_SECRET_ACCESS_KEY"
        case "InvalidToken", "ExpiredToken", "TokenRefreshRequired":
            "the session token is wrong or expired: renew archive.session_token or AWS_SESSION_TOKEN"
        case "NoSuchBucket": "the bucket \(bucket) does not exist at \(endpointDescription): create it or fix archive.url"
        case "AccessDenied": "the credentials may not do this in bucket \(bucket): check their policy"
        case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
            error.region.map { "the bucket is in region \($0): set archive.region" } ?? "the bucket is in another region: set archive.region"
        default: nil
        }
        if let remedy { text += ": " + remedy }
        return ArchiveError(text.split(whereSeparator: \.isNewline).joined(separator: " "))
    }

    /// The SHA-256 of the file's bytes (read in 1 MiB pieces) and its size.
    private func sha256(of fd: Int32, path: String) throws -> (hex: String, size: Int64) {
        var hasher = SHA256()
        var size: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ArchiveError("cannot read \(path): \(String(cString: strerror(errno)))") }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            size += Int64(n)
        }
        return (hasher.finalize().hex, size)
    }
}

extension Digest {
    var hex: String { map { String(format: "%02x", $0) }.joined() }
}

/// S3's `<Error>` document: `<Code>`, `<Message>` and, for a wrong region, `<Region>`.
struct S3ErrorDocument {
    var code: String?
    var message: String?
    var region: String?
    init(_ body: Data) {
        let xml = String(decoding: body, as: UTF8.self)
        code = xmlValues("Code", in: xml).first
        message = xmlValues("Message", in: xml).first
        region = xmlValues("Region", in: xml).first
    }
}

/// One page of a ListObjectsV2 answer.
struct ListPage {
    var objects: [(key: String, size: Int)] = []
    var truncated = false
    var nextToken: String?
    init(_ body: Data) {
        let xml = String(decoding: body, as: UTF8.self)
        for contents in xmlValues("Contents", in: xml, decode: false) {
            guard let key = xmlValues("Key", in: contents).first else { continue }
            objects.append((key, xmlValues("Size", in: contents).first.flatMap { Int($0) } ?? 0))
        }
        truncated = xmlValues("IsTruncated", in: xml).first == "true"
        nextToken = xmlValues("NextContinuationToken", in: xml).first
    }
}

/// The text of every `<name>...</name>` element in `xml`, in order, with XML's character
/// references decoded (unless `decode` is false, for an element whose children are read next).
/// S3's answers are flat and regular enough that this small reader does, without a parser.
func xmlValues(_ name: String, in xml: String, decode: Bool = true) -> [String] {
    var values: [String] = []
    var rest = xml[...]
    while let open = rest.range(of: "<\(name)>"), let close = rest[open.upperBound...].range(of: "</\(name)>") {
        let text = String(rest[open.upperBound..<close.lowerBound])
        values.append(decode ? xmlDecode(text) : text)
        rest = rest[close.upperBound...]
    }
    return values
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;` and numeric references.
func xmlDecode(_ text: String) -> String {
    guard text.contains("&") else { return text }
    var out = ""
    var rest = text[...]
    while let amp = rest.firstIndex(of: "&") {
        out += rest[..<amp]
        guard let semicolon = rest[amp...].firstIndex(of: ";") else { break }
        let entity = rest[rest.index(after: amp)..<semicolon]
        let named = ["amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'"][String(entity)]
        var scalar: Unicode.Scalar?
        if entity.hasPrefix("#x") || entity.hasPrefix("#X") { scalar = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init) }
        else if entity.hasPrefix("#") { scalar = UInt32(entity.dropFirst()).flatMap(Unicode.Scalar.init) }
        if let named { out += named } else if let scalar { out.unicodeScalars.append(scalar) } else { out += rest[amp...semicolon] }
        rest = rest[rest.index(after: semicolon)...]
    }
    return out + rest
}
