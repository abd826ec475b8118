import Foundation
import Synchronization
import Testing
import StorkConfig
import StorkDCS
#if canImport(Glibc)
import Glibc
#endif

/// A loopback HTTP server that records each request (head and body) and answers every one with
/// `reply`: what a planted `api_url` would point at.
final class RequestRecorder: Sendable {
    let port: Int
    private let listener: Int32
    private let log = RequestLog()

    final class RequestLog: Sendable {
        let requests = Mutex<[String]>([])
    }

    init(reply: String) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard fd >= 0, bound, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        let log = self.log
        Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                log.requests.withLock { $0.append(Self.readRequest(client)) }
                _ = reply.withCString { write(client, $0, strlen($0)) }
                close(client)
            }
        }.start()
    }

    /// The head and, by its Content-Length, the body: all of it is read before the answer, so
    /// closing the socket never resets a request the client is still sending.
    static func readRequest(_ client: Int32) -> String {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        func complete() -> Bool {
            let text = String(decoding: received, as: UTF8.self)
            guard let end = text.range(of: "\r\n\r\n") else { return false }
            let head = text[..<end.lowerBound].lowercased()
            let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            return text.utf8.count - text[..<end.upperBound].utf8.count >= length
        }
        while !complete() {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        return String(decoding: received, as: UTF8.self)
    }

    var requests: [String] { log.requests.withLock { $0 } }
    var url: String { "http://127.0.0.1:\(port)" }
    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }
}

private let okReply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"

/// The REST credentials once went to whatever `api_url` a member key named, on every request.
@Suite("Member API client: where the credentials go")
struct MemberAPIClientTests {
    @Test func credentialsOnlyWithChangingRequestsOverTheConfiguredScheme() async throws {
        let server = try RequestRecorder(reply: okReply)
        defer { server.stop() }
        let plain = MemberAPIClient(username: "admin", password: "api-Secret-9", timeout: 3)
        let reading = try await plain.request("GET", url: server.url + "/patroni")
        #expect(reading.status == 200)
        #expect(try await plain.request("POST", url: server.url + "/reinitialize", json: .object([:])).status == 200)
        // A member whose own API is on https sends them over https only.
        let tlsOnly = MemberAPIClient(username: "admin", password: "api-Secret-9", credentialScheme: "https", timeout: 3)
        #expect(try await tlsOnly.request("POST", url: server.url + "/switchover", json: .object([:])).status == 200)
        let heads = server.requests
        #expect(heads.count == 3, "\(heads)")
        let withCredentials = heads.filter { $0.lowercased().contains("authorization: basic") }
        #expect(withCredentials.count == 1 && withCredentials.first?.hasPrefix("POST /reinitialize") == true, "\(heads)")
    }

    @Test func noRedirectIsFollowed() async throws {
        let target = try RequestRecorder(reply: okReply)
        defer { target.stop() }
        let redirect = try RequestRecorder(reply: "HTTP/1.1 307 Temporary Redirect\r\nLocation: \(target.url)/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        defer { redirect.stop() }
        let client = MemberAPIClient(username: "admin", password: "api-Secret-9", timeout: 3)
        let answer = try await client.request("POST", url: redirect.url + "/switchover", json: .object([:]))
        #expect(answer.status == 307)
        try await Task.sleep(for: .milliseconds(200))
        #expect(target.requests.isEmpty, "the redirect was followed: \(target.requests)")
    }
}
