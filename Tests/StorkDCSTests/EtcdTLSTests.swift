import Foundation
import StorkConfig
import StorkDCS
import StorkTestSupport
import Testing

/// An EtcdDCS with the `etcd3` TLS files (and credentials) given.
func tlsDCS(_ endpoint: String, prefix: String, name: String = "a", cacert: String?, cert: String?, key: String?,
            username: String? = nil, password: String? = nil, timeout: Double = 3) -> EtcdDCS {
    let settings = Etcd3Settings(endpoints: [endpoint], username: username, password: password,
                                 cacert: cacert, cert: cert, key: key)
    return EtcdDCS(options: EtcdClientOptions(settings: settings, requestTimeout: timeout),
                   keyPrefix: prefix, memberName: name, logger: testLogger)
}

/// The DCSError of one `clusterView()` that must fail, its configuration key, and how long it took.
func failure(_ dcs: EtcdDCS) async -> (message: String, seconds: Double, key: String?) {
    let started = Date()
    do {
        _ = try await dcs.clusterView()
        return ("(no error)", Date().timeIntervalSince(started), nil)
    } catch {
        let e = error as? DCSError
        return (e?.message ?? "\(error)", Date().timeIntervalSince(started), e?.configurationKey)
    }
}

/// EtcdDCS against a real etcd that serves HTTPS only and requires client certificates
/// (`--client-cert-auth --trusted-ca-file`); certificates made with openssl by `TestCertificates`.
@Suite("EtcdDCS over TLS (real etcd)", .serialized)
struct EtcdTLSTests {
    @Test("with the right CA and client certificate the DCS works: create-only initialize, leader, cluster view")
    func works() async throws {
        let ca = try TestCertificates()
        defer { ca.destroy() }
        let etcd = try await EtcdServer.startSingle(tls: ca)
        defer { etcd.destroy() }
        #expect(etcd.clientURL.hasPrefix("https://127.0.0.1:"))
        let tls = try #require(etcd.tlsFiles)
        let prefix = uniquePrefix("tls")
        let a = tlsDCS(etcd.clientURL, prefix: prefix, name: "a", cacert: tls.caCert, cert: tls.clientCert, key: tls.clientKey)
        let b = tlsDCS(etcd.clientURL, prefix: prefix, name: "b", cacert: tls.caCert, cert: tls.clientCert, key: tls.clientKey)
        #expect(try await a.createInitialize(""))
        #expect(try await b.createInitialize("") == false)
        try await a.setInitialize("7312345678901234567")
        #expect(try await a.acquireLeader(ttl: 30))
        #expect(try await b.acquireLeader(ttl: 30) == false)
        try await a.touchMember(memberData("a", port: 5432, role: "primary"), ttl: 30)
        let view = try await b.clusterView()
        #expect(view.initialize == "7312345678901234567")
        #expect(view.leader == "a")
        #expect(view.member(named: "a") != nil)
    }

    @Test("TLS problems give one clear line naming the endpoint and the problem, at once")
    func tlsProblems() async throws {
        let ca = try TestCertificates()
        defer { ca.destroy() }
        let other = try TestCertificates(name: "Other CA")
        defer { other.destroy() }
        let etcd = try await EtcdServer.startSingle(tls: ca)
        defer { etcd.destroy() }
        let tls = try #require(etcd.tlsFiles)
        let foreign = try other.issue("foreign", cn: "stork")
        let ep = etcd.clientURL
        let head = "etcd3: no endpoint answered (\(ep): TLS: "
        // (label, cacert, cert, key, the message's start after `head`, the configuration key to fix)
        let cases: [(String, String?, String?, String?, String, String)] = [
            ("client certificate from another CA", tls.caCert, foreign.cert, foreign.key,
             "the server refused the client certificate (etcd3.cert \(foreign.cert) is not signed by a CA it trusts) (", "etcd3.cert"),
            ("no client certificate", tls.caCert, nil, nil,
             "the server requires a client certificate (set etcd3.cert and etcd3.key) (", "etcd3.cert"),
            ("server not trusted: CA file of another CA", other.caCert, tls.clientCert, tls.clientKey,
             "the server's certificate is not trusted by etcd3.cacert \(other.caCert) (SSL certificate problem: unable to get local issuer certificate)",
             "etcd3.cacert"),
            ("server not trusted: no CA file", nil, tls.clientCert, tls.clientKey,
             "the server's certificate is not trusted (set etcd3.cacert) (", "etcd3.cacert"),
            ("key of another certificate", tls.caCert, tls.clientCert, foreign.key,
             "certificate and key do not match (etcd3.cert \(tls.clientCert), etcd3.key \(foreign.key)) (", "etcd3.key"),
            ("missing key file", tls.caCert, tls.clientCert, "/nonexistent/client.key",
             "cannot read the key (etcd3.key /nonexistent/client.key) (", "etcd3.key"),
            ("missing CA file", "/nonexistent/ca.crt", tls.clientCert, tls.clientKey,
             "cannot read the CA file (etcd3.cacert /nonexistent/ca.crt) (", "etcd3.cacert"),
            ("missing certificate file", tls.caCert, "/nonexistent/client.crt", tls.clientKey,
             "cannot use the client certificate (etcd3.cert /nonexistent/client.crt) (", "etcd3.cert"),
        ]
        for (label, cacert, cert, key, expected, configurationKey) in cases {
            let dcs = tlsDCS(ep, prefix: uniquePrefix("bad"), cacert: cacert, cert: cert, key: key)
            let (message, seconds, failedKey) = await failure(dcs)
            #expect(message.hasPrefix(head + expected), "\(label): \(message)")
            #expect(failedKey == configurationKey, "\(label)")
            #expect(!message.contains("\n"), "\(label): \(message)")
            #expect(seconds < 2, "\(label): took \(seconds) s")
            // Writes fail the same way (no crash, no hang).
            await #expect(throws: DCSError.self, "\(label)") { try await dcs.acquireLeader(ttl: 10) }
        }
    }

    @Test("etcd users over TLS (server certificate, no client certificates): the right password works and re-authenticates; a wrong one is a clear line without the password")
    func usersOverTLS() async throws {
        let ca = try TestCertificates()
        defer { ca.destroy() }
        let etcd = try await EtcdServer.startSingle(tls: ca, clientCertAuth: false)
        defer { etcd.destroy() }
        let tls = try #require(etcd.tlsFiles)
        let secret = "Tr0ub4dor&3-etcd"
        let admin = EtcdClient(options: EtcdClientOptions(settings: Etcd3Settings(endpoints: [etcd.clientURL], cacert: tls.caCert)))
        _ = try await admin.call("/auth/user/add", .object(["name": .string("root"), "password": .string(secret)]))
        _ = try await admin.call("/auth/role/add", .object(["name": .string("root")]))
        _ = try await admin.call("/auth/user/grant", .object(["user": .string("root"), "role": .string("root")]))
        _ = try await admin.call("/auth/enable", .object([:]))
        // No client certificate; the server's certificate is still checked against the CA.
        let noCert: String? = nil

        let prefix = uniquePrefix("tlsauth")
        let wrongPassword = "wr0ng-Pa55word"
        let wrong = tlsDCS(etcd.clientURL, prefix: prefix, cacert: tls.caCert, cert: noCert, key: noCert,
                           username: "root", password: wrongPassword)
        let (message, seconds, failedKey) = await failure(wrong)
        #expect(failedKey == "etcd3.password")
        #expect(message == "etcd3: authentication as 'root' failed: etcdserver: authentication failed, invalid user ID or password (gRPC code 3, HTTP 400)",
                "\(message)")
        #expect(!message.contains(wrongPassword) && !message.contains(secret))
        #expect(seconds < 2)

        let right = tlsDCS(etcd.clientURL, prefix: prefix, cacert: tls.caCert, cert: noCert, key: noCert,
                           username: "root", password: secret)
        try await right.touchMember(memberData("a", port: 5432), ttl: 10)
        #expect(try await right.acquireLeader(ttl: 10))
        #expect(try await right.clusterView().leader == "a")
        #expect(right.client.authenticationCount == 1)

        // A password change invalidates the user's tokens: the next request re-authenticates once.
        let admin2 = EtcdClient(options: EtcdClientOptions(settings: Etcd3Settings(
            endpoints: [etcd.clientURL], username: "root", password: secret, cacert: tls.caCert)))
        _ = try await admin2.call("/auth/user/changepw", .object(["name": .string("root"), "password": .string(secret)]))
        #expect(try await right.refreshLeader(ttl: 10))
        #expect(try await right.clusterView().member(named: "a") != nil)
        #expect(right.client.authenticationCount == 2)
    }

    @Test("client certificates and etcd users together: etcd 3.4's gateway refuses them, and the message says so")
    func clientCertificatesWithUsers() async throws {
        let ca = try TestCertificates()
        defer { ca.destroy() }
        let etcd = try await EtcdServer.startSingle(tls: ca)
        defer { etcd.destroy() }
        let tls = try #require(etcd.tlsFiles)
        let secret = "pw-Cl1ent-cert"
        let admin = EtcdClient(options: EtcdClientOptions(settings: Etcd3Settings(
            endpoints: [etcd.clientURL], cacert: tls.caCert, cert: tls.clientCert, key: tls.clientKey)))
        _ = try await admin.call("/auth/user/add", .object(["name": .string("root"), "password": .string(secret)]))
        _ = try await admin.call("/auth/role/add", .object(["name": .string("root")]))
        _ = try await admin.call("/auth/user/grant", .object(["user": .string("root"), "role": .string("root")]))
        _ = try await admin.call("/auth/enable", .object([:]))
        let dcs = tlsDCS(etcd.clientURL, prefix: uniquePrefix("both"), cacert: tls.caCert, cert: tls.clientCert, key: tls.clientKey,
                         username: "root", password: secret)
        let (message, _, failedKey) = await failure(dcs)
        #expect(failedKey == "etcd3.cert")
        #expect(message == "etcd3: authentication as 'root' failed: etcd refuses JSON-gateway requests that carry a client certificate "
                + "while etcd authentication is enabled (--client-cert-auth with users); use etcd3.cert/etcd3.key or "
                + "etcd3.username/etcd3.password, not both (gRPC code 2, HTTP 400)", "\(message)")
        #expect(!message.contains(secret))
    }

    @Test("a failure that may pass (nothing listening, a TLS endpoint down) names no configuration key")
    func transientFailureHasNoKey() async throws {
        let closed = "https://127.0.0.1:\(TestSupport.freePort())"
        let (message, _, key) = await failure(tlsDCS(closed, prefix: uniquePrefix("down"), cacert: nil, cert: nil, key: nil))
        #expect(message == "etcd3: no endpoint answered (\(closed): Couldn't connect to server)")
        #expect(key == nil)
    }

    @Test("no auth failure message holds the password (plain HTTP etcd, wrong password and unknown user)")
    func noSecretInErrors() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let secret = "s3cret-Right-0ne"
        let admin = EtcdClient(options: EtcdClientOptions(endpoints: [etcd.clientURL]))
        _ = try await admin.call("/auth/user/add", .object(["name": .string("root"), "password": .string(secret)]))
        _ = try await admin.call("/auth/role/add", .object(["name": .string("root")]))
        _ = try await admin.call("/auth/user/grant", .object(["user": .string("root"), "role": .string("root")]))
        _ = try await admin.call("/auth/enable", .object([:]))
        for (user, password) in [("root", "Bad-Pa55-1"), ("nobody", "Bad-Pa55-2"), ("root", secret + "x")] {
            let dcs = etcdDCS([etcd.clientURL], prefix: uniquePrefix("nosecret"), name: "a", username: user, password: password)
            let (message, _, failedKey) = await failure(dcs)
            #expect(message.contains("authentication as '\(user)' failed"), "\(message)")
            #expect(failedKey == "etcd3.password")
            #expect(!message.contains(password) && !message.contains(secret), "\(message)")
            let error = await #expect(throws: DCSError.self) { try await dcs.touchMember(memberData("a", port: 1), ttl: 10) }
            #expect(!"\(String(describing: error))".contains(password))
        }
    }
}
