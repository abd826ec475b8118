import Foundation
import Testing
import StorkTestSupport

/// TLS settings a user can get wrong: each is one line naming the key, exit status 2 from
/// `stork check` and `stork agent`, and nothing started; no passphrase in the output.
@Suite("Bad TLS settings: one line naming the key, exit status 2")
struct BadTLSConfigTests {
    @Test func refused() throws {
        let certs = try TestCertificates()
        defer { certs.destroy() }
        let a = try certs.issue("a", cn: "127.0.0.1"), b = try certs.issue("b", cn: "127.0.0.1")
        let encrypted = try certs.encrypted(a.key, label: "a", passphrase: "right-Phrase-9")
        let base = """
            scope: batman
            name: pg0
            etcd3:
              hosts: 127.0.0.1:2379
            postgresql:
              listen: 127.0.0.1:5432
              connect_address: 127.0.0.1:5432
              data_dir: /tmp/stork-never-created
              authentication:
                superuser: {username: postgres, password: topsecret-su}
                replication: {username: replicator, password: topsecret-repl}
            restapi:
              listen: 127.0.0.1:8008
              connect_address: 127.0.0.1:8008

            """
        func api(_ lines: String) -> String { base + lines.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n") + "\n" }
        let cases: [(String, String, String)] = [
            ("missing certificate file", api("certfile: /nonexistent/api.crt\nkeyfile: \(a.key)"),
             "restapi.certfile: \"/nonexistent/api.crt\": no such file"),
            ("key of another certificate", api("certfile: \(a.cert)\nkeyfile: \(b.key)"),
             "restapi.keyfile: \"\(b.key)\" does not match the certificate in \"\(a.cert)\""),
            ("encrypted key without passphrase", api("certfile: \(a.cert)\nkeyfile: \(encrypted)"),
             "restapi.keyfile_password: required: \"\(encrypted)\" is encrypted"),
            ("wrong passphrase", api("certfile: \(a.cert)\nkeyfile: \(encrypted)\nkeyfile_password: wrong-Phrase-1"),
             "restapi.keyfile_password: does not decrypt \"\(encrypted)\""),
            ("verify_client: sometimes", api("certfile: \(a.cert)\nkeyfile: \(a.key)\ncafile: \(certs.caCert)\nverify_client: sometimes"),
             "restapi.verify_client: \"sometimes\": expected none, optional or required"),
            ("verify_client without HTTPS", api("cafile: \(certs.caCert)\nverify_client: required"),
             "restapi.verify_client: required needs HTTPS: set restapi.certfile (and restapi.cafile)"),
            ("allowlist entry not a network", api("allowlist: [10.0.0.0/33]"),
             "restapi.allowlist: \"10.0.0.0/33\": not a network (expected e.g. 10.0.0.0/8 or fd00::/8)"),
            ("etcd client key of another certificate",
             base.replacingOccurrences(of: "  hosts: 127.0.0.1:2379\n", with: "  hosts: 127.0.0.1:2379\n  protocol: https\n  cacert: \(certs.caCert)\n  cert: \(a.cert)\n  key: \(b.key)\n"),
             "etcd3.key: \"\(b.key)\" does not match the certificate in \"\(a.cert)\""),
            ("ctl key of another certificate", base + "ctl:\n  certfile: \(a.cert)\n  keyfile: \(b.key)\n",
             "ctl.keyfile: \"\(b.key)\" does not match the certificate in \"\(a.cert)\""),
        ]
        let dir = TestSupport.makeTempDir("stork-badtls")
        defer { TestSupport.removeTree(dir) }
        for (label, yaml, expected) in cases {
            let path = dir + "/bad.yml"
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            for command in ["check", "agent"] {
                let r = try runStork([command, path])
                #expect(r.status == 2, "\(label): stork \(command) exit status \(r.status)\n\(r.err)")
                #expect(r.err.split(separator: "\n").contains { $0 == expected }, "\(label): stork \(command): missing \(expected)\n\(r.err)")
                #expect(!r.err.contains("Phrase") && !r.err.contains("topsecret"), "\(label): a secret in the output")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/stork-never-created"), "nothing started")
    }
}
