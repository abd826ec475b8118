import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Plain TCP on 127.0.0.1 for tests that need what an HTTP client library hides: many idle
/// connections, a peer that is far away, and the sockets a process holds.
public enum LoopbackTCP {
    /// A socket connecting to `port`; with `blocking: false` the connect may still be under way
    /// (the server's listen backlog is full). -1 when no socket could be made.
    public static func connect(_ port: Int, blocking: Bool = true) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        if !blocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) } }
        if rc != 0 && !(errno == EINPROGRESS && !blocking) { close(fd); return -1 }
        return fd
    }

    /// One HTTP/1.1 request on a new connection (`Connection: close`), blocking: the status
    /// code of the answer, nil when there was none.
    public static func request(_ port: Int, _ method: String, _ path: String, body: String = "", headers: [String] = []) -> Int? {
        exchange(port, method, path, body: body, headers: headers)?.status
    }

    /// The same, with the answer's body.
    public static func exchange(_ port: Int, _ method: String, _ path: String, body: String = "",
                                headers: [String] = []) -> (status: Int, body: String)? {
        let fd = connect(port)
        guard fd >= 0 else { return nil }
        defer {
            // Closed with a reset, not into TIME_WAIT: a flood of tens of thousands of requests
            // would otherwise use up the ephemeral ports and fail to connect.
            var noLinger = linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &noLinger, socklen_t(MemoryLayout<linger>.size))
            close(fd)
        }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for h in headers { head += h + "\r\n" }
        if !body.isEmpty { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        let bytes = Array((head + "\r\n" + body).utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return nil }
            sent += n
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            answer += buffer[..<n]
        }
        let text = String(decoding: answer, as: UTF8.self)
        let statusLine = text.prefix(32).split(separator: " ")
        guard statusLine.count > 1, let status = Int(statusLine[1]) else { return nil }
        return (status, text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n"))
    }

    /// Whether the peer has closed `fd` (a read would see the end), without waiting.
    public static func peerClosed(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0
    }

    /// The TCP connections this process holds open on its side of local `port` (accepted by a
    /// server listening there), the listening socket not counted: from `/proc/self/fd` and
    /// `/proc/self/net/tcp`. A connection waiting in the listen backlog holds no descriptor.
    public static func acceptedSockets(onPort port: Int) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        var inodes = Set<String>()
        for fd in fds {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd),
                  target.hasPrefix("socket:[") else { continue }
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
        // procfs files have no size: read to the end, not by the size stat gives.
        let table = String(decoding: FileHandle(forReadingAtPath: "/proc/self/net/tcp")?.readDataToEndOfFile() ?? Data(), as: UTF8.self)
        let local = String(format: ":%04X", port)
        var count = 0
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9, fields[1].hasSuffix(local), fields[3] != "0A", inodes.contains(String(fields[9])) else { continue }
            count += 1
        }
        return count
    }
}

/// A TCP forwarder on loopback that holds every chunk for `delay` before passing it on, both
/// ways: a peer (etcd) a round trip of twice `delay` away, for the tests. One thread per
/// direction of each connection.
public final class DelayProxy: @unchecked Sendable {
    // @unchecked: `listener` is set once; the open descriptors are under `open`'s lock.
    public let port: Int
    private let listener: Int32
    private let open = Mutex<Set<Int32>>([])

    public init(to targetPort: Int, delay: Duration) throws {
        let port = TestSupport.freePort()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.port = port
        self.listener = listener
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
        guard bound == 0, listen(listener, 64) == 0 else {
            close(listener)
            throw EtcdTestError("DelayProxy: cannot listen on 127.0.0.1:\(port)")
        }
        let microseconds = UInt32(delay.components.seconds * 1_000_000 + delay.components.attoseconds / 1_000_000_000_000)
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }
                let server = LoopbackTCP.connect(targetPort)
                guard server >= 0 else { close(client); continue }
                open.withLock { $0.formUnion([client, server]) }
                let finished = Shared(0)
                for (from, to) in [(client, server), (server, client)] {
                    Thread.detachNewThread { [self] in
                        defer {
                            if finished.value.withLock({ $0 += 1; return $0 }) == 2 {
                                open.withLock { $0.subtract([client, server]) }
                                close(client)
                                close(server)
                            }
                        }
                        var buffer = [UInt8](repeating: 0, count: 65536)
                        while true {
                            let n = recv(from, &buffer, buffer.count, 0)
                            if n <= 0 { break }
                            usleep(microseconds)
                            var sent = 0
                            while sent < n {
                                let m = buffer[sent..<n].withUnsafeBytes { send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                                if m <= 0 { break }
                                sent += m
                            }
                        }
                        shutdown(to, Int32(SHUT_WR))
                    }
                }
            }
        }
    }

    /// Stops accepting and ends every forwarded connection.
    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in open.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

/// A value under a lock that escaping closures (threads) can share.
public final class Shared<Value: Sendable>: Sendable {
    public let value: Mutex<Value>
    public init(_ initial: Value) { value = Mutex(initial) }
}
