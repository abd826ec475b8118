import Foundation

/// Load-time checks of the TLS files a configuration names (`etcd3.cacert/cert/key`,
/// `restapi.certfile/keyfile/cafile`, `ctl.cacert/certfile/keyfile`, `postgresql.authentication.<user>.sslcert/sslkey/
/// sslrootcert/sslcrl`): each must be a readable PEM file of the right kind, and a certificate
/// and its key come in pairs. One issue per problem, naming the key.
///
/// Cheap by design: no cryptography and no child process. That a key belongs to its
/// certificate is found by the first TLS handshake (the etcd client says "certificate and key
/// do not match").
public enum TLSFileCheck {
    /// What a file must hold.
    public enum Kind: Sendable {
        case certificate, privateKey, crl

        var marker: String {
            switch self {
            case .certificate: return "-----BEGIN CERTIFICATE-----"
            case .privateKey: return "-----BEGIN ... PRIVATE KEY-----"
            case .crl: return "-----BEGIN X509 CRL-----"
            }
        }

        var name: String {
            switch self {
            case .certificate: return "a PEM certificate"
            case .privateKey: return "a PEM private key"
            case .crl: return "a PEM certificate revocation list"
            }
        }
    }

    /// The issues of every TLS file `config` names.
    public static func issues(_ config: Config) -> [ConfigIssue] {
        var out: [ConfigIssue] = []
        if case .etcd3(let etcd) = config.dcs {
            out += pair(cert: etcd.cert, certKey: "etcd3.cert", key: etcd.key, keyKey: "etcd3.key")
            if let ca = etcd.cacert { out += check(ca, .certificate, key: "etcd3.cacert") }
        }
        let api = config.restapi
        out += pair(cert: api.certfile, certKey: "restapi.certfile", key: api.keyfile, keyKey: "restapi.keyfile")
        if let ca = api.cafile { out += check(ca, .certificate, key: "restapi.cafile") }
        let ctl = config.ctl
        out += pair(cert: ctl.certfile, certKey: "ctl.certfile", key: ctl.keyfile, keyKey: "ctl.keyfile")
        if let ca = ctl.cacert { out += check(ca, .certificate, key: "ctl.cacert") }

        let pg = config.postgresql
        for (name, user) in [("superuser", pg.superuser), ("replication", pg.replication), ("rewind", pg.rewind)] {
            guard let user else { continue }
            let path = "postgresql.authentication.\(name)"
            let o = user.sslOptions
            // libpq looks for ~/.postgresql/postgresql.{crt,key} when one of the pair is not given.
            if let v = o["sslcert"], !v.isEmpty { out += check(v, .certificate, key: "\(path).sslcert") }
            if let v = o["sslkey"], !v.isEmpty, !isEngineKey(v) { out += check(v, .privateKey, key: "\(path).sslkey") }
            if let v = o["sslrootcert"], !v.isEmpty, v != "system" { out += check(v, .certificate, key: "\(path).sslrootcert") }
            if let v = o["sslcrl"], !v.isEmpty { out += check(v, .crl, key: "\(path).sslcrl") }
        }
        return out
    }

    /// A certificate and its key (`etcd3.cert`/`key`, `restapi.certfile`/`keyfile`): the key
    /// alone is an issue; the certificate alone must hold its key too (a combined PEM file, as
    /// Patroni accepts).
    static func pair(cert: String?, certKey: String, key: String?, keyKey: String) -> [ConfigIssue] {
        let cert = cert.flatMap { $0.isEmpty ? nil : $0 }, key = key.flatMap { $0.isEmpty ? nil : $0 }
        switch (cert, key) {
        case (nil, nil):
            return []
        case (nil, let k?):
            return [ConfigIssue(path: keyKey, message: "\"\(k)\": set without \(certKey)")]
        case (let c?, nil):
            switch read(c) {
            case .failure(let reason): return [ConfigIssue(path: certKey, message: "\"\(c)\": \(reason)")]
            case .success(let text):
                var out = problems(text, .certificate).map { ConfigIssue(path: certKey, message: "\"\(c)\": \($0)") }
                if out.isEmpty && !problems(text, .privateKey).isEmpty {
                    out.append(ConfigIssue(path: certKey, message: "\"\(c)\": holds no private key and \(keyKey) is not set"))
                }
                return out
            }
        case (let c?, let k?):
            return check(c, .certificate, key: certKey) + check(k, .privateKey, key: keyKey)
        }
    }

    /// One file: readable, and PEM of `kind`.
    public static func check(_ file: String, _ kind: Kind, key: String) -> [ConfigIssue] {
        switch read(file) {
        case .failure(let reason): return [ConfigIssue(path: key, message: "\"\(file)\": \(reason)")]
        case .success(let text): return problems(text, kind).map { ConfigIssue(path: key, message: "\"\(file)\": \($0)") }
        }
    }

    static func problems(_ text: String, _ kind: Kind) -> [String] {
        let ok: Bool
        switch kind {
        case .certificate: ok = text.contains("-----BEGIN CERTIFICATE-----") || text.contains("-----BEGIN TRUSTED CERTIFICATE-----")
        case .crl: ok = text.contains("-----BEGIN X509 CRL-----")
        case .privateKey:
            ok = text.split(separator: "\n").contains { $0.hasPrefix("-----BEGIN ") && $0.hasSuffix("PRIVATE KEY-----") }
        }
        return ok ? [] : ["not \(kind.name) (no \(kind.marker) line)"]
    }

    /// `engine:key-id`: an OpenSSL engine key for libpq, not a file.
    static func isEngineKey(_ value: String) -> Bool {
        !value.hasPrefix("/") && value.contains(":") && !FileManager.default.fileExists(atPath: value)
    }

    /// The file's text (at most 1 MiB, enough for any PEM bundle we need to recognise), or why not.
    static func read(_ path: String) -> Result<String, ReadFailure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return .failure(ReadFailure(errno: errno)) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { return .failure(ReadFailure(errno: EISDIR)) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while bytes.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(errno: errno))
            }
            bytes.append(contentsOf: buffer[0..<n])
        }
        return .success(String(decoding: bytes, as: UTF8.self))
    }

    struct ReadFailure: Error, CustomStringConvertible {
        var errno: Int32
        var description: String {
            switch errno {
            case ENOENT: return "no such file"
            case EACCES: return "permission denied (cannot read it as user \(geteuid()))"
            case EISDIR: return "is a directory, not a file"
            case ENOTDIR: return "no such file (a part of the path is not a directory)"
            default: return String(cString: strerror(errno)).lowercased()
            }
        }
    }
}
