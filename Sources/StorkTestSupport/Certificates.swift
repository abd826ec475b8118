import Foundation

/// Test certificates made with the `openssl` command: a CA, then server and client
/// certificates it signs. Every file is readable by the postgres user (directory from
/// `TestSupport.makeTempDir`), private keys mode 0600.
public final class TestCertificates: Sendable {
    public let directory: String
    public let caCert: String
    let caKey: String

    /// A new CA named `name` in a new temporary directory.
    public init(name: String = "Stork Test CA") throws {
        directory = TestSupport.makeTempDir("stork-certs")
        caCert = directory + "/ca.crt"
        caKey = directory + "/ca.key"
        try Self.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=\(name)",
                          "-keyout", caKey, "-out", caCert])
        try Self.fixOwnership([caKey, caCert])
    }

    /// A certificate signed by this CA: `cn` as the subject's common name (the PostgreSQL user
    /// name for a client certificate), `127.0.0.1` and `localhost` as subject alternative names.
    /// Returns the certificate and key paths.
    public func issue(_ label: String, cn: String) throws -> (cert: String, key: String) {
        let key = directory + "/\(label).key", csr = directory + "/\(label).csr", cert = directory + "/\(label).crt"
        let ext = directory + "/\(label).ext"
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(cn)", "-keyout", key, "-out", csr])
        try Self.openssl(["x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial", "-days", "2",
                          "-extfile", ext, "-out", cert])
        try Self.fixOwnership([key, cert])
        return (cert, key)
    }

    /// A copy of `key` encrypted with AES-256 under `passphrase` (as `<label>-encrypted.key`,
    /// mode 0600, readable by the postgres user); its path.
    public func encrypted(_ key: String, label: String, passphrase: String) throws -> String {
        let out = directory + "/\(label)-encrypted.key"
        try Self.openssl(["pkey", "-in", key, "-out", out, "-aes256", "-passout", "pass:" + passphrase])
        try Self.fixOwnership([out])
        return out
    }

    public func destroy() { TestSupport.removeTree(directory) }

    static func fixOwnership(_ paths: [String]) throws {
        for p in paths {
            TestSupport.chownToPostgres(p)
            chmod(p, p.hasSuffix(".key") ? 0o600 : 0o644)
        }
    }

    static func openssl(_ args: [String]) throws {
        guard let openssl = TestSupport.which("openssl") else { throw EtcdTestError("openssl is not installed: apt-get install openssl") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: openssl)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw EtcdTestError("openssl \(args.first ?? "") failed: \(String(decoding: out, as: UTF8.self))")
        }
    }
}
