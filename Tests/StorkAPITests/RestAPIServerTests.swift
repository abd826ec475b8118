import Foundation
import Logging
import ServiceLifecycle
import Testing
import StorkAPI
import StorkConfig
import StorkDCS
import StorkHA
import StorkPostgres
import StorkTestSupport

/// The REST API server itself (Hummingbird, NIOSSL) on a free loopback port, in front of an
/// agent that never runs its loop: the access checks of changing requests, with what a real
/// client (libcurl) sends. The agent answers `POST /reinitialize` with 503 (no leader), so a
/// request that passes the checks is told apart from one that does not.
@Suite("REST API server: HTTPS, client certificates, allowlist, authentication", .serialized)
struct RestAPIServerTests {
    /// Runs the API with `restapi` settings around `body`, then shuts it down.
    func withServer(_ adjust: (inout RestAPISettings) -> Void, _ body: (String) async throws -> Void) async throws {
        try await withServer(adjust, limits: RestAPI.Limits()) { base, _ in try await body(base) }
    }

    /// The same with the server's `limits`, and the agent on `makeDCS` (the embedded store when
    /// nil); `body` gets the base URL and the agent's DCS.
    func withServer(_ adjust: (inout RestAPISettings) -> Void, limits: RestAPI.Limits,
                    dcs makeDCS: ((Config, Logger) -> any DCS)? = nil,
                    _ body: (String, any DCS) async throws -> Void) async throws {
        let dir = TestSupport.makeTempDir("stork-api")
        defer { TestSupport.removeTree(dir) }
        let port = TestSupport.freePort()
        let pg = PostgresSettings(listen: "127.0.0.1:1", connectAddress: "127.0.0.1:1", dataDir: dir + "/data", pgpass: dir + "/pgpass",
                                  superuser: PostgresUser(username: "postgres", password: "su-Secret"),
                                  replication: PostgresUser(username: "replicator", password: "repl-Secret"))
        var config = Config(scope: "api", name: "pg0", dcs: .local(path: dir + "/dcs"), postgresql: pg)
        config.restapi.listen = "127.0.0.1:\(port)"
        config.restapi.connectAddress = config.restapi.listen
        adjust(&config.restapi)
        let logger = Logger(label: "test")
        let dcs = makeDCS?(config, logger) ?? LocalDCS(path: dir + "/dcs", keyPrefix: config.keyPrefix, memberName: "pg0", logger: logger)
        let agent = Agent(config: config, dcs: dcs, node: PostgresNode(settings: pg, memberName: "pg0", logger: logger), logger: logger)
        let running = AsyncStream<Int>.makeStream()
        let app = try RestAPI.makeApplication(config: config, agent: agent, logger: logger, limits: limits) { port in
            running.continuation.yield(port)
        }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task { try await group.run() }
        var iterator = running.stream.makeAsyncIterator()
        _ = await iterator.next()
        defer { task.cancel() }
        try await body("\(config.restapi.usesTLS ? "https" : "http")://127.0.0.1:\(port)", dcs)
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    let noLeader = "Cluster has no leader, can not reinitialize"

    @Test func allowlist() async throws {
        try await withServer({ $0.allowlist = ["10.0.0.0/8"] }) { base in
            let r = try await MemberAPIClient().request("POST", url: base + "/reinitialize")
            #expect(r.status == 403 && r.text == "Access is denied", "\(r)")
            // Reading stays open to anyone.
            #expect(try await MemberAPIClient().request("GET", url: base + "/patroni").status == 200)
        }
        try await withServer({ $0.allowlist = ["10.0.0.0/8", "localhost"] }) { base in
            let r = try await MemberAPIClient().request("POST", url: base + "/reinitialize")
            #expect(r.status == 503 && r.text == noLeader, "\(r)")
        }
    }

    @Test func optionalClientCertificateAndAuthentication() async throws {
        let certs = try TestCertificates()
        defer { certs.destroy() }
        let server = try certs.issue("api", cn: "127.0.0.1"), client = try certs.issue("ctl", cn: "ctl")
        try await withServer({
            $0.certfile = server.cert
            $0.keyfile = server.key
            $0.cafile = certs.caCert
            $0.verifyClient = "optional"
            $0.username = "admin"
            $0.password = "api-Secret"
        }) { base in
            // No certificate: the handshake passes (optional), reading works, changing does not.
            let anonymous = MemberAPIClient(cacert: certs.caCert, username: "admin", password: "api-Secret")
            #expect(try await anonymous.request("GET", url: base + "/patroni").status == 200)
            let r = try await anonymous.request("POST", url: base + "/reinitialize")
            #expect(r.status == 403 && r.text == "client certificate required", "\(r)")
            let noAuth = try await MemberAPIClient(cacert: certs.caCert, certfile: client.cert, keyfile: client.key)
                .request("POST", url: base + "/reinitialize")
            #expect(noAuth.status == 401, "\(noAuth)")
            let right = try await MemberAPIClient(cacert: certs.caCert, certfile: client.cert, keyfile: client.key,
                                                  username: "admin", password: "api-Secret").request("POST", url: base + "/reinitialize")
            #expect(right.status == 503 && right.text == noLeader, "\(right)")
            // A client that does not trust the server's CA refuses it, and says which key to set.
            do {
                _ = try await MemberAPIClient().request("GET", url: base + "/patroni")
                Issue.record("an untrusted server certificate was accepted")
            } catch {
                #expect((error as? DCSError)?.configurationKey == "ctl.cacert", "\(error)")
            }
            // ctl.insecure skips the check.
            #expect(try await MemberAPIClient(insecure: true).request("GET", url: base + "/patroni").status == 200)
        }
    }
}
