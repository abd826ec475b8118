import Foundation
import NIOSSL
import StorkConfig

/// A certificate chain and its private key, loaded and checked to belong together. The
/// start-time check for every pair a configuration names (`restapi`, `ctl`, `etcd3`), so that
/// a wrong key is one line naming the key at start, not a failed handshake later.
public struct TLSIdentity {
    public let chain: [NIOSSLCertificate]
    public let key: NIOSSLPrivateKey

    /// `keyfile` nil: the key is in `certfile` (a combined PEM file, as Patroni accepts).
    /// Errors are `ConfigIssue`s naming `keys` (certificate, key, password).
    static func load(certfile: String, keyfile: String?, password: String?,
                     keys: (cert: String, key: String, password: String)) throws -> TLSIdentity {
        let keyPath = (keyfile?.isEmpty ?? true) ? certfile : keyfile!
        let keyName = (keyfile?.isEmpty ?? true) ? keys.cert : keys.key
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certfile) } catch {
            throw ConfigIssue(path: keys.cert, message: "\"\(certfile)\": cannot load the certificate (\(error))")
        }
        if chain.isEmpty { throw ConfigIssue(path: keys.cert, message: "\"\(certfile)\": holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            if let password, !password.isEmpty {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem) { setter in setter(Array(password.utf8)) }
            } else {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            }
        } catch {
            // Why it failed: an encrypted key wants (the right) passphrase.
            let encrypted = (try? String(contentsOfFile: keyPath, encoding: .utf8))?.contains("ENCRYPTED") ?? false
            if encrypted && (password ?? "").isEmpty {
                throw ConfigIssue(path: keys.password, message: "required: \"\(keyPath)\" is encrypted")
            }
            if encrypted { throw ConfigIssue(path: keys.password, message: "does not decrypt \"\(keyPath)\"") }
            throw ConfigIssue(path: keyName, message: "\"\(keyPath)\": cannot load the private key (\(error))")
        }
        // BoringSSL compares the key with the certificate when both go into one context.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                          privateKey: .privateKey(key)))
        } catch {
            throw ConfigIssue(path: keyName, message: "\"\(keyPath)\" does not match the certificate in \"\(certfile)\"")
        }
        return TLSIdentity(chain: chain, key: key)
    }

    /// Every certificate/key pair of `config` that does not load or does not match, one issue
    /// each. Run after `TLSFileCheck` (which says which file is missing or not PEM).
    public static func issues(_ config: Config) -> [ConfigIssue] {
        var pairs: [(cert: String, key: String?, password: String?, names: (String, String, String))] = []
        let api = config.restapi, ctl = config.ctl
        if let cert = api.certfile, !cert.isEmpty {
            pairs.append((cert, api.keyfile, api.keyfilePassword, ("restapi.certfile", "restapi.keyfile", "restapi.keyfile_password")))
        }
        if let cert = ctl.certfile, !cert.isEmpty {
            pairs.append((cert, ctl.keyfile, ctl.keyfilePassword, ("ctl.certfile", "ctl.keyfile", "ctl.keyfile_password")))
        }
        if case .etcd3(let etcd) = config.dcs, let cert = etcd.cert, !cert.isEmpty {
            pairs.append((cert, etcd.key, nil, ("etcd3.cert", "etcd3.key", "etcd3.key")))
        }
        var out: [ConfigIssue] = []
        for pair in pairs {
            do { _ = try load(certfile: pair.cert, keyfile: pair.key, password: pair.password, keys: pair.names) } catch let issue as ConfigIssue {
                out.append(issue)
            } catch {
                out.append(ConfigIssue(path: pair.names.0, message: "\(error)"))
            }
        }
        return out
    }
}
