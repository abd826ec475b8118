import Foundation
import StorkNet
#if canImport(Glibc)
import Glibc
#endif

/// A read-only archive served by a web server (an archive directory behind nginx, say): the
/// object `key` is `<baseURL>/<key>`. Objects are read by name (GET) and probed by name (HEAD);
/// a web server gives no listing, so `list` throws, and `firstExisting` (what WAL fetch uses)
/// asks for each candidate in turn.
public struct HTTPSStore: ArchiveStore {
    /// Without a trailing slash.
    public let baseURL: String

    /// `https://host/path` (the configuration accepts no other); `http://` too, for a test
    /// server on loopback.
    public init(baseURL: String) throws {
        guard baseURL.hasPrefix("https://") || baseURL.hasPrefix("http://") else {
            throw ArchiveError("\"\(baseURL)\": expected https://host/path")
        }
        var url = baseURL
        while url.hasSuffix("/") { url.removeLast() }
        self.baseURL = url
    }

    private func url(_ key: String) -> String {
        baseURL + "/" + key.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? String($0) }.joined(separator: "/")
    }

    public func describe(_ key: String) -> String { baseURL + "/" + key }

    public func uploadPath(for key: String, scratch: String) -> String { scratch }

    public func localPath(_ key: String) -> String? { nil }

    public func create(_ key: String, fromFile path: String) throws -> Bool {
        throw ArchiveError("the https:// archive is read-only: cannot store \(describe(key)); push to an s3:// or file:// archive")
    }

    public func delete(_ key: String) throws {
        throw ArchiveError("the https:// archive is read-only: cannot remove \(describe(key))")
    }

    public func list(prefix: String) throws -> [StoredObject] {
        throw ArchiveError("an https:// archive cannot be listed (\(describe(prefix))...): only objects named in full can be read from it, as wal-fetch does; use an s3:// or file:// archive for this")
    }

    public func firstExisting(_ keys: [String]) throws -> String? {
        for key in keys {
            let response = try send("HEAD", key)
            if (200..<300).contains(response.status) { return key }
            guard response.status == 404 || response.status == 410 else { throw failure("HEAD", key, response) }
        }
        return nil
    }

    public func download(_ key: String, to target: String) throws -> Bool {
        try downloadThroughPartFile(to: target, get: { try send("GET", key, downloadFD: $0) },
                                    missing: { $0.status == 404 || $0.status == 410 }, failure: { failure("GET", key, $0) })
    }

    private func send(_ method: String, _ key: String, downloadFD: Int32? = nil) throws -> HTTPResponse {
        let transfer = HTTPTransfer(method: method, url: url(key), downloadFD: downloadFD, followRedirects: true, bodyLimit: 4096)
        do {
            return try transfer.perform()
        } catch {
            if error.unreachable { throw ArchiveError("cannot reach the archive at \(baseURL): \(error.reason)") }
            throw ArchiveError("\(method) \(describe(key)) failed: \(error.reason)")
        }
    }

    private func failure(_ method: String, _ key: String, _ response: HTTPResponse) -> ArchiveError {
        let hint = response.status == 401 || response.status == 403 ? ": the web server refuses to serve it; check its access rules" : ""
        return ArchiveError("\(method) \(describe(key)) failed: HTTP \(response.status)\(hint)")
    }
}
