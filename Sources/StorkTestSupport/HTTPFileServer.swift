import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A directory served read-only over HTTP on a free loopback port (`python3 -m http.server`),
/// standing in for a web server in front of an archive; `stop()` ends it by PID.
public final class HTTPFileServer: @unchecked Sendable {
    // @unchecked: every property is set once in init and only read afterwards.
    public let url: String
    private let process: Process

    public init(directory: String) async throws {
        // A real interpreter, not a wrapper script (pyenv's shim) whose PID is not the server's.
        let candidates = [S3TestServer.venvDirectory + "/bin/python3", "/usr/bin/python3"]
        guard let python = candidates.first(where: FileManager.default.isExecutableFile(atPath:)) ?? TestSupport.which("python3") else {
            throw S3TestError("python3 is not installed: apt-get install python3")
        }
        guard let curl = TestSupport.which("curl") else { throw S3TestError("curl is not installed: run scripts/test (apt-get install curl)") }
        let port = TestSupport.freePort()
        let url = "http://127.0.0.1:\(port)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", directory]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let ready = await TestSupport.waitUntil(timeout: 10, interval: 0.05) {
            S3TestServer.run(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/"]).output == "200"
        }
        guard ready else {
            S3TestServer.end(process)
            throw S3TestError("python3 -m http.server on \(url) did not answer in 10 s")
        }
        self.url = url
        self.process = process
    }

    /// Ends the server (SIGKILL by PID).
    public func stop() { S3TestServer.end(process) }

    deinit { stop() }
}
