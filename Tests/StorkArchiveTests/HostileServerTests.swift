import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import StorkConfig
import StorkTestSupport
import Testing
@testable import StorkArchive

/// Archive servers that misbehave: a listing that never ends, a redirect to another protocol,
/// an object that decompresses to more than any WAL file.
@Suite("Hostile archive servers")
struct HostileServerTests {
    static func s3Store(_ server: ScriptedHTTPServer) throws -> S3Store {
        var location = ArchiveSettings.S3Location(bucket: "b", prefix: "")
        location.endpoint = server.url
        location.accessKeyID = "AKIDEXAMPLE"
        location.secretAccessKey = "wJalrXUtnFEMI"
        return try S3Store(location, environment: [:])
    }

    static func page(token: String) -> ScriptedHTTPServer.Response {
        .init(status: 200, headers: ["Content-Type": "application/xml"], body: """
            <?xml version="1.0" encoding="UTF-8"?><ListBucketResult><IsTruncated>true</IsTruncated>\
            <Contents><Key>main/wal/{n}</Key><Size>1</Size></Contents><NextContinuationToken>\(token)</NextContinuationToken></ListBucketResult>
            """)
    }

    /// Before: both listings went on for as long as the server answered.
    @Test func aListingThatNeverEndsIsRefused() async throws {
        let same = try await ScriptedHTTPServer(routes: ["/b/": Self.page(token: "again")])
        defer { same.stop() }
        let repeated = #expect(throws: ArchiveError.self) { _ = try Self.s3Store(same).list(prefix: "main/") }
        #expect(repeated?.description.contains("returned the continuation token again twice") == true, "\(repeated?.description ?? "")")
        #expect(same.requests.count == 2, "\(same.requests.count) requests")

        let endless = try await ScriptedHTTPServer(routes: ["/b/": Self.page(token: "t{n}")])
        defer { endless.stop() }
        var store = try Self.s3Store(endless)
        store.maxListPages = 5
        let long = #expect(throws: ArchiveError.self) { _ = try store.list(prefix: "main/") }
        #expect(long?.description.contains("goes on past 5 pages") == true, "\(long?.description ?? "")")
        #expect(endless.requests.count == 5)
    }

    /// Counts the connections made to a loopback port, closing each at once.
    final class Listener: @unchecked Sendable {
        let port: Int
        private let fd: Int32
        private let accepted = Mutex(0)
        var connections: Int { accepted.withLock { $0 } }

        init() throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            port = TestSupport.freePort()
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard bound == 0, listen(fd, 8) == 0 else { throw ArchiveError("cannot listen on \(port)") }
            Thread.detachNewThread { [self] in
                while true {
                    let client = accept(fd, nil, nil)
                    if client < 0 { return }
                    accepted.withLock { $0 += 1 }
                    close(client)
                }
            }
        }

        func stop() { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
    }

    /// A web-server archive that redirects a WAL request to ftp:// (which libcurl's default
    /// allows in redirects), on a port behind it. Before: libcurl followed it and connected.
    @Test func aRedirectToAnotherProtocolIsNotFollowed() async throws {
        let inside = try Listener()
        defer { inside.stop() }
        let web = try await ScriptedHTTPServer(routes: [:])
        defer { web.stop() }
        let archive = try await ScriptedHTTPServer(routes: [
            "/main/wal/000000010000000000000001.zst": .init(status: 302, headers: ["Location": "ftp://127.0.0.1:\(inside.port)/x.zst"]),
            "/main/wal/000000010000000000000002.zst": .init(status: 302, headers: ["Location": web.url + "/x.zst"])])
        defer { archive.stop() }
        let wal = WALArchive(store: try HTTPSStore(baseURL: archive.url), scope: "main", compression: .zstd)
        let root = TestSupport.makeTempDir("stork-hostile")
        defer { TestSupport.removeTree(root) }
        let refused = #expect(throws: (any Error).self) { _ = try wal.fetch("000000010000000000000001", to: root + "/segment") }
        #expect("\(refused.map { "\($0)" } ?? "")".lowercased().contains("protocol"), "\(String(describing: refused))")
        try await Task.sleep(for: .milliseconds(200))
        #expect(inside.connections == 0, "the redirect connected to the port behind the archive")
        // A redirect to another web server is still followed.
        _ = try? wal.fetch("000000010000000000000002", to: root + "/segment")
        #expect(web.requests.contains { $0.hasSuffix(" /x.zst") }, "\(web.requests)")
        #expect(!FileManager.default.fileExists(atPath: root + "/segment"))
    }

    /// An archived object that decompresses to more than the largest WAL file is refused, and
    /// nothing is left at the target (before: decompressed whole into memory, then written).
    @Test func anObjectLargerThanAnyWALFileIsRefused() throws {
        let root = TestSupport.makeTempDir("stork-hostile")
        defer { TestSupport.removeTree(root) }
        var archive = try WALArchive(settings: ArchiveSettings(directory: root + "/archive"), scope: "main")
        try Data(count: 3 << 20).write(to: URL(fileURLWithPath: root + "/000000010000000000000001"))
        #expect(try archive.push(root + "/000000010000000000000001") == .stored)
        archive.maximumFileSize = 1 << 20
        let big = #expect(throws: ArchiveError.self) { _ = try archive.fetch("000000010000000000000001", to: root + "/back") }
        #expect(big?.description.contains("decompresses to more than 1 MiB, more than any WAL file") == true, "\(big?.description ?? "")")
        #expect(!FileManager.default.fileExists(atPath: root + "/back") && !FileManager.default.fileExists(atPath: root + "/back.stork-fetch"))
        archive.maximumFileSize = 4 << 20
        #expect(try archive.fetch("000000010000000000000001", to: root + "/back"))
        #expect(FileManager.default.contents(atPath: root + "/back") == Data(count: 3 << 20))
    }
}
