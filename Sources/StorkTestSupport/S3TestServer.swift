import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A key pair (and session token) the test S3 server accepts.
public struct S3TestCredentials: Sendable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// A real S3-compatible server for tests: moto (`moto_server` from PyPI, which scripts/test
/// installs into a virtualenv) on a free loopback port, with one bucket. `stop()` ends it by PID.
///
/// moto checks SigV4 signatures only once IAM authentication is on, and then only for keys its
/// IAM knows. So the server is prepared before authentication is turned on: a user with an
/// access key allowed `s3:*`, a role assumed for temporary credentials (with a session token),
/// and the bucket. Every request after that is checked as AWS would.
public final class S3TestServer: @unchecked Sendable {
    // @unchecked: every property is set once in init and only read afterwards.
    public let endpoint: String
    public let bucket: String
    public let region = "us-east-1"
    /// An IAM user's access key.
    public let credentials: S3TestCredentials
    /// Temporary credentials of an assumed role (with a session token).
    public let temporaryCredentials: S3TestCredentials
    public let logPath: String
    private let process: Process

    public init(bucket: String = "stork-test") async throws {
        guard let moto = Self.motoServer() else {
            throw S3TestError("moto_server is not installed: run scripts/test, which installs moto[server] into \(Self.venvDirectory) (STORK_TEST_VENV)")
        }
        guard let curl = TestSupport.which("curl") else { throw S3TestError("curl is not installed: run scripts/test (apt-get install curl)") }
        let port = TestSupport.freePort()
        let endpoint = "http://127.0.0.1:\(port)"
        let logPath = NSTemporaryDirectory() + "/stork-moto-\(port).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: moto)
        process.arguments = ["-H", "127.0.0.1", "-p", String(port)]
        process.standardInput = FileHandle.nullDevice
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        do {
            let ready = await TestSupport.waitUntil(timeout: 30, interval: 0.1) {
                Self.run(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", endpoint + "/moto-api/"]).output == "200"
            }
            guard ready else { throw S3TestError("moto_server on \(endpoint) did not answer in 30 s; see \(logPath)") }
            credentials = try Self.prepare(curl, endpoint, bucket: bucket)
            temporaryCredentials = try Self.assumeRole(curl, endpoint)
            // From here on, moto checks every request's signature and permissions.
            try Self.expect(curl, ["-s", "-X", "POST", "-H", "Content-Type: text/plain", "--data-binary", "0", endpoint + "/moto-api/reset-auth"], "PREVIOUS")
        } catch {
            Self.end(process)
            throw error
        }
        self.bucket = bucket
        self.endpoint = endpoint
        self.logPath = logPath
        self.process = process
    }

    deinit { stop() }

    /// Ends moto (SIGKILL by PID) and removes its log.
    public func stop() {
        Self.end(process)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    // MARK: - set-up

    static let emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// Where scripts/test puts the virtualenv (STORK_TEST_VENV, else the default of scripts/lib.sh).
    public static var venvDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        if let venv = environment["STORK_TEST_VENV"], !venv.isEmpty { return venv }
        let cache = environment["XDG_CACHE_HOME"] ?? ((environment["HOME"] ?? "/root") + "/.cache")
        return geteuid() == 0 ? "/var/lib/stork/test-venv" : cache + "/stork/test-venv"
    }

    /// Only the virtualenv's: a `moto_server` on PATH may be a wrapper script (pyenv's shim)
    /// whose PID is not the server's, so stopping it by PID would leave the server running.
    static func motoServer() -> String? {
        let path = venvDirectory + "/bin/moto_server"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// A user `stork` with an access key and a policy allowing everything on S3, and the bucket.
    static func prepare(_ curl: String, _ endpoint: String, bucket: String) throws -> S3TestCredentials {
        let setup = S3TestCredentials(accessKeyID: "setup", secretAccessKey: "setup")
        _ = try iam(curl, endpoint, setup, "Action=CreateUser&UserName=stork")
        let key = try iam(curl, endpoint, setup, "Action=CreateAccessKey&UserName=stork")
        guard let id = element("AccessKeyId", key), let secret = element("SecretAccessKey", key) else {
            throw S3TestError("moto's CreateAccessKey answered without a key: \(key)")
        }
        _ = try iam(curl, endpoint, setup, "Action=PutUserPolicy&UserName=stork&PolicyName=s3&PolicyDocument=" + encode(allowS3))
        let user = S3TestCredentials(accessKeyID: id, secretAccessKey: secret)
        try expect(curl, signed("s3", user) + ["-X", "PUT", "-H", "x-amz-content-sha256: \(emptySHA256)", "-w", "%{http_code}",
                                              endpoint + "/" + bucket], "200")
        return user
    }

    /// A role allowed `s3:*`, assumed through STS: temporary credentials with a session token.
    static func assumeRole(_ curl: String, _ endpoint: String) throws -> S3TestCredentials {
        let setup = S3TestCredentials(accessKeyID: "setup", secretAccessKey: "setup")
        let trust = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#
        let role = try iam(curl, endpoint, setup, "Action=CreateRole&RoleName=stork&AssumeRolePolicyDocument=" + encode(trust))
        guard let arn = element("Arn", role) else { throw S3TestError("moto's CreateRole answered without an Arn: \(role)") }
        _ = try iam(curl, endpoint, setup, "Action=PutRolePolicy&RoleName=stork&PolicyName=s3&PolicyDocument=" + encode(allowS3))
        let answer = try query(curl, endpoint, setup, service: "sts",
                               "Action=AssumeRole&RoleArn=\(encode(arn))&RoleSessionName=stork-test&Version=2011-06-15")
        guard let id = element("AccessKeyId", answer), let secret = element("SecretAccessKey", answer),
              let token = element("SessionToken", answer) else {
            throw S3TestError("moto's AssumeRole answered without credentials: \(answer)")
        }
        return S3TestCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    static let allowS3 = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#

    static func iam(_ curl: String, _ endpoint: String, _ credentials: S3TestCredentials, _ form: String) throws -> String {
        try query(curl, endpoint, credentials, service: "iam", form + "&Version=2010-05-08")
    }

    /// An AWS query-protocol call (IAM, STS); moto routes it by the service in the signature.
    static func query(_ curl: String, _ endpoint: String, _ credentials: S3TestCredentials, service: String, _ form: String) throws -> String {
        let result = run(curl, signed(service, credentials) + ["-d", form, endpoint + "/"])
        guard result.status == 0, !result.output.contains("<Error>") else {
            throw S3TestError("moto refused \(form.prefix { $0 != "&" }): \(result.output)")
        }
        return result.output
    }

    static func signed(_ service: String, _ credentials: S3TestCredentials) -> [String] {
        ["-s", "--aws-sigv4", "aws:amz:us-east-1:\(service)", "--user", "\(credentials.accessKeyID):\(credentials.secretAccessKey)"]
    }

    static func expect(_ curl: String, _ arguments: [String], _ expected: String) throws {
        let result = run(curl, arguments)
        guard result.output.contains(expected) else {
            throw S3TestError("curl \(arguments.last ?? ""): expected \(expected), got \(result.output)")
        }
    }

    static func element(_ name: String, _ xml: String) -> String? {
        guard let open = xml.range(of: "<\(name)>"), let close = xml[open.upperBound...].range(of: "</\(name)>") else { return nil }
        return String(xml[open.upperBound..<close.lowerBound])
    }

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_.~"))) ?? text
    }

    /// A program's exit status and standard output; -1 when it cannot run.
    static func run(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
        (try? TestSupport.runTool(path, arguments)) ?? (-1, "")
    }

    /// Ends a test server by PID with SIGKILL. Not SIGTERM: Foundation's `Process` starts a child
    /// with the signal mask of the thread that ran it, and a Dispatch thread blocks SIGTERM, so
    /// a Python server would ignore it. These servers keep nothing worth a clean shutdown.
    static func end(_ p: Process) {
        guard p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }
}

public struct S3TestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
