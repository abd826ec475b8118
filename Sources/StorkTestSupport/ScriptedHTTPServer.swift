import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A web server on a free loopback port that answers every request for `path` (the query left
/// out) with the same canned response (`{n}` in its body replaced by a count of requests), and
/// 404 for other paths: a misbehaving S3 or archive server, for the client's defences. `requests` counts what it was asked; `stop()` ends it.
public final class ScriptedHTTPServer: @unchecked Sendable {
    // @unchecked: every property is set once in init and only read afterwards.
    public struct Response: Encodable {
        public var status: Int
        public var headers: [String: String]
        public var body: String
        public init(status: Int, headers: [String: String] = [:], body: String = "") {
            self.status = status
            self.headers = headers
            self.body = body
        }
    }

    public let url: String
    private let process: Process
    private let logPath: String
    private let directory: String

    static let script = """
        import http.server, json, sys
        routes = json.load(open(sys.argv[2]))
        log = open(sys.argv[3], "a", buffering=1)
        counter = [0]
        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                log.write(self.command + " " + self.path + "\\n")
                r = routes.get(self.path.split("?")[0], {"status": 404, "headers": {}, "body": ""})
                counter[0] += 1
                body = r["body"].replace("{n}", str(counter[0])).encode()
                self.send_response(r["status"])
                for k, v in r["headers"].items(): self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD": self.wfile.write(body)
            do_GET = do_HEAD = do_PUT = do_DELETE = answer
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
        """

    public init(routes: [String: Response]) async throws {
        let candidates = [S3TestServer.venvDirectory + "/bin/python3", "/usr/bin/python3"]
        guard let python = candidates.first(where: FileManager.default.isExecutableFile(atPath:)) ?? TestSupport.which("python3") else {
            throw S3TestError("python3 is not installed: apt-get install python3")
        }
        let directory = TestSupport.makeTempDir("stork-scripted-http")
        var routes = routes
        routes["/__ready"] = Response(status: 200)
        try JSONEncoder().encode(routes).write(to: URL(fileURLWithPath: directory + "/routes.json"))
        try Data(Self.script.utf8).write(to: URL(fileURLWithPath: directory + "/server.py"))
        let port = TestSupport.freePort()
        let url = "http://127.0.0.1:\(port)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [directory + "/server.py", String(port), directory + "/routes.json", directory + "/requests.log"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let ready = await TestSupport.waitUntil(timeout: 10, interval: 0.05) {
            S3TestServer.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/__ready"]).output == "200"
        }
        guard ready else {
            S3TestServer.end(process)
            TestSupport.removeTree(directory)
            throw S3TestError("the scripted web server on \(url) did not answer in 10 s")
        }
        self.url = url
        self.process = process
        self.logPath = directory + "/requests.log"
        self.directory = directory
    }

    /// The requests so far (`GET /path?query`), readiness probes left out.
    public var requests: [String] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter { !$0.contains("/__ready") }
    }

    public func stop() {
        S3TestServer.end(process)
        TestSupport.removeTree(directory)
    }

    deinit { stop() }
}
