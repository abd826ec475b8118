import Foundation
import StorkTestSupport
import Testing
@testable import StorkConfig

/// Real TLS files made once with openssl (`TestCertificates`), plus a few bad ones.
struct TLSFiles: Sendable {
    let certificates: TestCertificates
    let ca: String, cert: String, key: String, combined: String, text: String, crl: String, dir: String

    static let shared: TLSFiles = {
        do { return try TLSFiles() } catch { fatalError("cannot make test certificates: \(error)") }
    }()

    init() throws {
        certificates = try TestCertificates()
        let d = certificates.directory
        ca = certificates.caCert
        (cert, key) = try certificates.issue("client", cn: "stork")
        combined = d + "/combined.pem"
        try (try String(contentsOfFile: cert, encoding: .utf8) + (try String(contentsOfFile: key, encoding: .utf8)))
            .write(toFile: combined, atomically: true, encoding: .utf8)
        text = d + "/notes.txt"
        try "just some text\n".write(toFile: text, atomically: true, encoding: .utf8)
        crl = d + "/ca.crl"
        try "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n".write(toFile: crl, atomically: true, encoding: .utf8)
        dir = d
    }
}

@Suite("TLS files: checked at load time, one line naming the key")
struct TLSFileTests {
    static let f = TLSFiles.shared
    static let head = "scope: s\nname: n\nrestapi:\n  listen: 127.0.0.1:8008\n"
    static let pg = "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n    replication: {username: rep}\n"
    static func etcd(_ extra: String) -> String { "etcd3:\n  host: 127.0.0.1:2379\n" + extra }
    static func api(_ extra: String) -> String { head + extra }
    static func replication(_ extra: String) -> String {
        "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n    replication:\n      username: rep\n" + extra
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var yaml: String
        var env: [String: String] = [:]
        var expected: [String]
        var testDescription: String { expected.joined(separator: " | ") }
    }

    static let cases: [Case] = [
        // etcd3
        Case(yaml: head + etcd("  cacert: /nonexistent/ca.crt\n  cert: \(f.cert)\n  key: \(f.key)\n") + pg,
             expected: ["etcd3.cacert: \"/nonexistent/ca.crt\": no such file"]),
        Case(yaml: head + etcd("  cacert: \(f.ca)\n  cert: /x/y.crt\n  key: \(f.key)\n") + pg,
             expected: ["etcd3.cert: \"/x/y.crt\": no such file"]),
        Case(yaml: head + etcd("  cacert: \(f.ca)\n  cert: \(f.cert)\n  key: /x/y.key\n") + pg,
             expected: ["etcd3.key: \"/x/y.key\": no such file"]),
        Case(yaml: head + etcd("  cacert: \(f.ca)\n  key: \(f.key)\n") + pg,
             expected: ["etcd3.key: \"\(f.key)\": set without etcd3.cert"]),
        Case(yaml: head + etcd("  cacert: \(f.ca)\n  cert: \(f.cert)\n") + pg,
             expected: ["etcd3.cert: \"\(f.cert)\": holds no private key and etcd3.key is not set"]),
        Case(yaml: head + etcd("  cacert: \(f.text)\n") + pg,
             expected: ["etcd3.cacert: \"\(f.text)\": not a PEM certificate (no -----BEGIN CERTIFICATE----- line)"]),
        Case(yaml: head + etcd("  cert: \(f.key)\n  key: \(f.cert)\n") + pg,
             expected: ["etcd3.cert: \"\(f.key)\": not a PEM certificate (no -----BEGIN CERTIFICATE----- line)",
                        "etcd3.key: \"\(f.cert)\": not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)"]),
        Case(yaml: head + etcd("  cacert: \(f.dir)\n") + pg,
             expected: ["etcd3.cacert: \"\(f.dir)\": is a directory, not a file"]),
        // The variables are checked the same way.
        Case(yaml: head + etcd("") + pg, env: ["PATRONI_ETCD3_CERT": "/env/etcd.crt", "PATRONI_ETCD3_KEY": f.key],
             expected: ["etcd3.cert: \"/env/etcd.crt\": no such file"]),
        // restapi
        Case(yaml: api("  certfile: /x/api.crt\n  keyfile: \(f.key)\n") + etcd("") + pg,
             expected: ["restapi.certfile: \"/x/api.crt\": no such file"]),
        Case(yaml: api("  keyfile: \(f.key)\n") + etcd("") + pg,
             expected: ["restapi.keyfile: \"\(f.key)\": set without restapi.certfile"]),
        Case(yaml: api("  certfile: \(f.cert)\n") + etcd("") + pg,
             expected: ["restapi.certfile: \"\(f.cert)\": holds no private key and restapi.keyfile is not set"]),
        Case(yaml: api("  certfile: \(f.cert)\n  keyfile: \(f.text)\n  cafile: /x/ca.pem\n") + etcd("") + pg,
             expected: ["restapi.keyfile: \"\(f.text)\": not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)",
                        "restapi.cafile: \"/x/ca.pem\": no such file"]),
        Case(yaml: api("") + etcd("") + pg, env: ["PATRONI_RESTAPI_CAFILE": "/env/ca.pem"],
             expected: ["restapi.cafile: \"/env/ca.pem\": no such file"]),
        // postgresql.authentication.<user>
        Case(yaml: head + etcd("") + replication("      sslcert: /x/rep.crt\n      sslkey: \(f.text)\n      sslrootcert: /x/root.crt\n      sslcrl: \(f.ca)\n"),
             expected: ["postgresql.authentication.replication.sslcert: \"/x/rep.crt\": no such file",
                        "postgresql.authentication.replication.sslkey: \"\(f.text)\": not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)",
                        "postgresql.authentication.replication.sslrootcert: \"/x/root.crt\": no such file",
                        "postgresql.authentication.replication.sslcrl: \"\(f.ca)\": not a PEM certificate revocation list (no -----BEGIN X509 CRL----- line)"]),
        Case(yaml: head + etcd("") + pg, env: ["PATRONI_SUPERUSER_SSLROOTCERT": "/env/root.crt", "PATRONI_REWIND_USERNAME": "rw",
                                              "PATRONI_REWIND_SSLCERT": f.key],
             expected: ["postgresql.authentication.superuser.sslrootcert: \"/env/root.crt\": no such file",
                        "postgresql.authentication.rewind.sslcert: \"\(f.key)\": not a PEM certificate (no -----BEGIN CERTIFICATE----- line)"]),
        // verify_client
        Case(yaml: api("  verify_client: sometimes\n") + etcd("") + pg,
             expected: ["restapi.verify_client: \"sometimes\": expected none, optional or required"]),
        Case(yaml: api("") + etcd("") + pg, env: ["PATRONI_RESTAPI_VERIFY_CLIENT": "always"],
             expected: ["restapi.verify_client: \"always\": expected none, optional or required"]),
    ]

    @Test(arguments: cases)
    func badFiles(_ c: Case) {
        #expect(issueLines(c.yaml, env: c.env) == c.expected)
    }

    @Test func goodFilesLoad() throws {
        let f = Self.f
        let yaml = Self.api("  certfile: \(f.cert)\n  keyfile: \(f.key)\n  cafile: \(f.ca)\n  verify_client: required\n  keyfile_password: kp-9999\n")
            + Self.etcd("  cacert: \(f.ca)\n  cert: \(f.cert)\n  key: \(f.key)\n")
            + Self.replication("      sslmode: verify-ca\n      sslcert: \(f.cert)\n      sslkey: \(f.key)\n      sslrootcert: \(f.ca)\n      sslcrl: \(f.crl)\n")
        let c = try ConfigLoader.parse(yaml: yaml).config
        #expect(c.restapi.certfile == f.cert && c.restapi.keyfile == f.key && c.restapi.cafile == f.ca)
        #expect(c.restapi.verifyClient == "required")
        #expect(c.restapi.keyfilePassword == "kp-9999")
        #expect(c.unimplementedKeys.isEmpty, "\(c.unimplementedKeys)")
        // A combined PEM file (certificate and key) needs no separate key; sslrootcert=system is libpq's store.
        let combined = Self.api("  certfile: \(f.combined)\n") + Self.etcd("  cert: \(f.combined)\n")
            + Self.replication("      sslrootcert: system\n")
        #expect(issueLines(combined) == ["<loaded without issues>"])
        // verify_client defaults to none.
        #expect(try ConfigLoader.parse(yaml: minimalYAML).config.restapi.verifyClient == "none")
    }

    @Test func restapiVariables() throws {
        let f = Self.f
        let env = ["PATRONI_RESTAPI_CERTFILE": f.cert, "PATRONI_RESTAPI_KEYFILE": f.key, "PATRONI_RESTAPI_CAFILE": f.ca,
                   "PATRONI_RESTAPI_VERIFY_CLIENT": "optional", "PATRONI_RESTAPI_KEYFILE_PASSWORD": "kp-env-1"]
        let c = try ConfigLoader.parse(yaml: minimalYAML, environment: env).config
        #expect(c.restapi.certfile == f.cert && c.restapi.keyfile == f.key && c.restapi.cafile == f.ca)
        #expect(c.restapi.verifyClient == "optional")
        #expect(c.restapi.keyfilePassword == "kp-env-1")
    }

    /// As root every file is readable: BadConfigTests runs `stork check` as postgres for this.
    @Test(.enabled(if: geteuid() != 0, "root reads every file; BadConfigTests covers this as postgres"))
    func unreadableFile() throws {
        let f = Self.f
        let locked = f.dir + "/locked-\(UUID().uuidString.prefix(6)).crt"
        try FileManager.default.copyItem(atPath: f.cert, toPath: locked)
        chmod(locked, 0)
        defer { try? FileManager.default.removeItem(atPath: locked) }
        let yaml = Self.head + Self.etcd("  cacert: \(locked)\n") + Self.pg
        #expect(issueLines(yaml) == ["etcd3.cacert: \"\(locked)\": permission denied (cannot read it as user \(geteuid()))"])
    }

    @Test func httpsImpliedByTLSFilesAsInPatroni() throws {
        let f = Self.f
        func endpoints(_ etcd: String) throws -> [String] {
            guard case .etcd3(let e) = try ConfigLoader.parse(yaml: Self.head + etcd + Self.pg).config.dcs else { return [] }
            return e.endpoints
        }
        #expect(try endpoints("etcd3:\n  hosts: [a:1, b:2]\n  cacert: \(f.ca)\n") == ["https://a:1", "https://b:2"])
        #expect(try endpoints("etcd3:\n  host: a:1\n  cert: \(f.cert)\n  key: \(f.key)\n") == ["https://a:1"])
        #expect(try endpoints("etcd3:\n  host: a:1\n  protocol: http\n  cacert: \(f.ca)\n") == ["http://a:1"])
        #expect(try endpoints("etcd3:\n  url: http://a:1\n  cacert: \(f.ca)\n") == ["http://a:1"])
        #expect(try endpoints("etcd3:\n  host: a:1\n") == ["http://a:1"])
    }

    @Test func secretsMaskedInRenderMasked() throws {
        let f = Self.f
        let yaml = Self.api("  certfile: \(f.cert)\n  keyfile: \(f.key)\n  keyfile_password: kp-secret-1\n  cafile: \(f.ca)\n  verify_client: required\n")
            + Self.etcd("  username: root\n  password: etcd-secret-2\n  cacert: \(f.ca)\n") + Self.pg
        let text = try ConfigLoader.parse(yaml: yaml).config.renderMasked()
        #expect(!text.contains("kp-secret-1") && !text.contains("etcd-secret-2"))
        #expect(text.contains("  keyfile_password: \"******\"\n  cafile: \(f.ca)\n  verify_client: required\n"), "\(text)")
        #expect(text.contains("  password: \"******\"\n  cacert: \(f.ca)\n"), "\(text)")
    }
}
