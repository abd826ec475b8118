import Foundation
import Testing
@testable import StorkConfig

@Suite("PATRONI_* environment overrides")
struct EnvironmentTests {
    let everything: [String: String] = [
        "PATRONI_NAME": "pg-env",
        "PATRONI_SCOPE": "robin",
        "PATRONI_NAMESPACE": "/envns/",
        "PATRONI_LOG_LEVEL": "debug",
        "PATRONI_LOG_TYPE": "json",
        "PATRONI_RESTAPI_LISTEN": "0.0.0.0:9008",
        "PATRONI_RESTAPI_CONNECT_ADDRESS": "10.0.0.5:9008",
        "PATRONI_RESTAPI_USERNAME": "api-user",
        "PATRONI_RESTAPI_PASSWORD": "api-pw",
        "PATRONI_RESTAPI_CERTFILE": "/api.crt",
        "PATRONI_RESTAPI_KEYFILE": "/api.key",
        "PATRONI_RESTAPI_KEYFILE_PASSWORD": "api-key-pw",
        "PATRONI_RESTAPI_CAFILE": "/api-ca.pem",
        "PATRONI_RESTAPI_VERIFY_CLIENT": "required",
        "PATRONI_RESTAPI_ALLOWLIST": "10.0.0.0/8,127.0.0.1",
        "PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "64",
        "PATRONI_CTL_INSECURE": "true",
        "PATRONI_CTL_CACERT": "/ctl-ca.pem",
        "PATRONI_CTL_CERTFILE": "/ctl.crt",
        "PATRONI_CTL_KEYFILE": "/ctl.key",
        "PATRONI_CTL_KEYFILE_PASSWORD": "ctl-key-pw",
        "PATRONI_CTL_USERNAME": "ctl-user",
        "PATRONI_CTL_PASSWORD": "ctl-pw",
        "PATRONI_POSTGRESQL_LISTEN": "0.0.0.0:6432",
        "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "10.0.0.5:6432",
        "PATRONI_POSTGRESQL_DATA_DIR": "/env/data",
        "PATRONI_POSTGRESQL_BIN_DIR": "/env/bin",
        "PATRONI_POSTGRESQL_PGPASS": "/env/pgpass",
        "PATRONI_SUPERUSER_USERNAME": "su",
        "PATRONI_SUPERUSER_PASSWORD": "su-pw",
        "PATRONI_REPLICATION_USERNAME": "repl",
        "PATRONI_REPLICATION_PASSWORD": "repl-pw",
        "PATRONI_REWIND_USERNAME": "rw",
        "PATRONI_REWIND_PASSWORD": "rw-pw",
        "PATRONI_ETCD3_HOSTS": "e1:2379,e2:2380",
        "PATRONI_ETCD3_PROTOCOL": "https",
        "PATRONI_ETCD3_USERNAME": "etcd-user",
        "PATRONI_ETCD3_PASSWORD": "etcd-pw",
        "PATRONI_ETCD3_CACERT": "/etcd-ca.pem",
        "PATRONI_ETCD3_CERT": "/etcd.crt",
        "PATRONI_ETCD3_KEY": "/etcd.key",
    ]

    /// `restapi.request_queue_size`, the REST API's listen backlog: Patroni's default 5, 0 to 4096.
    @Test func requestQueueSize() throws {
        #expect(try ConfigLoader.parse(yaml: minimalYAML).config.restapi.requestQueueSize == 5)
        let yaml = minimalYAML.replacingOccurrences(of: "  listen: 127.0.0.1:8008\n", with: "  listen: 127.0.0.1:8008\n  request_queue_size: 128\n")
        let c = try ConfigLoader.parse(yaml: yaml).config
        #expect(c.restapi.requestQueueSize == 128 && c.unimplementedKeys.isEmpty, "\(c.unimplementedKeys)")
        #expect(c.renderMasked().contains("  request_queue_size: 128\n"), "\(c.renderMasked())")
        #expect(issueLines(minimalYAML, env: ["PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "5000"])
                == ["restapi.request_queue_size: 5000: expected 0 to 4096"])
    }

    @Test func everyOverrideWinsOverTheFile() throws {
        let c = try ConfigLoader.parse(yaml: postgres0YAML, environment: everything, checkFiles: false).config
        #expect(c.name == "pg-env")
        #expect(c.scope == "robin")
        #expect(c.namespace == "/envns/")
        #expect(c.log.level == "DEBUG")
        #expect(c.log.type == "json")
        #expect(c.restapi.listen == "0.0.0.0:9008")
        #expect(c.restapi.connectAddress == "10.0.0.5:9008")
        #expect(c.restapi.username == "api-user")
        #expect(c.restapi.password == "api-pw")
        #expect(c.restapi.certfile == "/api.crt")
        #expect(c.restapi.keyfile == "/api.key")
        #expect(c.restapi.keyfilePassword == "api-key-pw")
        #expect(c.restapi.cafile == "/api-ca.pem")
        #expect(c.restapi.verifyClient == "required")
        #expect(c.restapi.allowlist == ["10.0.0.0/8", "127.0.0.1"])
        #expect(c.restapi.requestQueueSize == 64)
        #expect(c.ctl.insecure && c.ctl.cacert == "/ctl-ca.pem" && c.ctl.certfile == "/ctl.crt" && c.ctl.keyfile == "/ctl.key")
        #expect(c.ctl.keyfilePassword == "ctl-key-pw" && c.ctl.username == "ctl-user" && c.ctl.password == "ctl-pw")
        #expect(!c.unimplementedKeys.contains { $0.hasPrefix("ctl") || $0.contains("allowlist") }, "\(c.unimplementedKeys)")
        let shown = c.renderMasked()
        for secret in ["api-key-pw", "ctl-key-pw", "ctl-pw", "api-pw"] { #expect(!shown.contains(secret), "\(secret) shown") }
        #expect(shown.contains("ctl:\n  insecure: true"), "\(shown)")
        #expect(c.postgresql.listen == "0.0.0.0:6432")
        #expect(c.postgresql.port == 6432)
        #expect(c.postgresql.connectAddress == "10.0.0.5:6432")
        #expect(c.postgresql.dataDir == "/env/data")
        #expect(c.postgresql.binDir == "/env/bin")
        #expect(c.postgresql.pgpass == "/env/pgpass")
        #expect(c.postgresql.superuser.username == "su" && c.postgresql.superuser.password == "su-pw")
        #expect(c.postgresql.replication.username == "repl" && c.postgresql.replication.password == "repl-pw")
        #expect(c.postgresql.rewind?.username == "rw" && c.postgresql.rewind?.password == "rw-pw")
        // The file's sslmode for replication stays: variables patch, they do not replace the section.
        #expect(c.postgresql.replication.sslOptions == ["sslmode": "verify-full"])
        guard case .etcd3(let etcd) = c.dcs else { Issue.record("expected etcd3"); return }
        // PATRONI_ETCD3_HOSTS wins over the file's etcd3.host (hosts before host, as in Patroni).
        #expect(etcd.endpoints == ["https://e1:2379", "https://e2:2380"])
        #expect(etcd.username == "etcd-user")
        #expect(etcd.password == "etcd-pw")
        #expect(etcd.cacert == "/etcd-ca.pem")
        #expect(etcd.cert == "/etcd.crt")
        #expect(etcd.key == "/etcd.key")
        // Nothing left over became a bootstrap user.
        #expect(c.bootstrap.users.keys.sorted() == ["admin"])
    }

    @Test func etcd3HostURLAndPortVariables() throws {
        let noDCS = minimalYAML.replacingOccurrences(of: "etcd3:\n  host: 127.0.0.1:2379\n", with: "")
        func endpoints(_ env: [String: String]) throws -> [String] {
            guard case .etcd3(let e) = try ConfigLoader.parse(yaml: noDCS, environment: env).config.dcs else { return [] }
            return e.endpoints
        }
        #expect(try endpoints(["PATRONI_ETCD3_HOST": "10.1.1.1:2379"]) == ["http://10.1.1.1:2379"])
        #expect(try endpoints(["PATRONI_ETCD3_URL": "https://etcd.local:2379"]) == ["https://etcd.local:2379"])
        #expect(try endpoints(["PATRONI_ETCD3_HOSTS": "['a:1', 'b:2']"]) == ["http://a:1", "http://b:2"])
        #expect(try endpoints(["PATRONI_ETCD3_HOSTS": "a,b", "PATRONI_ETCD3_PORT": "4001"]) == ["http://a:4001", "http://b:4001"])
        // The file has no DCS section at all and no variable gives one.
        #expect(issueLines(noDCS) == ["etcd3: required (or local for the embedded single-host store)"])
    }

    @Test func sslOptionsOfTheThreeUsers() throws {
        var env: [String: String] = [:]
        let keys = ["SSLMODE": "verify-ca", "SSLKEY": "/k", "SSLCERT": "/c", "SSLROOTCERT": "/r", "SSLCRL": "/crl",
                    "CHANNEL_BINDING": "require", "GSSENCMODE": "disable"]
        for user in ["SUPERUSER", "REPLICATION", "REWIND"] {
            for (k, v) in keys { env["PATRONI_\(user)_\(k)"] = "\(v)-\(user.lowercased())" }
        }
        env["PATRONI_REWIND_USERNAME"] = "rewinder"
        let c = try ConfigLoader.parse(yaml: minimalYAML, environment: env, checkFiles: false).config
        for (name, user) in [("superuser", c.postgresql.superuser), ("replication", c.postgresql.replication),
                             ("rewind", c.postgresql.rewind!)] {
            #expect(user.sslOptions == [
                "sslmode": "verify-ca-\(name)", "sslkey": "/k-\(name)", "sslcert": "/c-\(name)",
                "sslrootcert": "/r-\(name)", "sslcrl": "/crl-\(name)", "channel_binding": "require-\(name)",
                "gssencmode": "disable-\(name)",
            ])
        }
        #expect(c.postgresql.rewind?.username == "rewinder")
    }

    @Test func emptyVariablesAreIgnored() throws {
        let c = try ConfigLoader.parse(yaml: minimalYAML, environment: ["PATRONI_NAME": "", "PATRONI_SCOPE": ""]).config
        #expect(c.name == "n" && c.scope == "s")
    }

    @Test func olderLogLevelName() throws {
        #expect(try ConfigLoader.parse(yaml: minimalYAML, environment: ["PATRONI_LOGLEVEL": "WARNING"]).config.log.level == "WARNING")
        let both = ["PATRONI_LOGLEVEL": "WARNING", "PATRONI_LOG_LEVEL": "ERROR"]
        #expect(try ConfigLoader.parse(yaml: minimalYAML, environment: both).config.log.level == "ERROR")
    }

    @Test func leftoverPasswordVariablesBecomeBootstrapUsers() throws {
        let env = ["PATRONI_admin_PASSWORD": "adm", "PATRONI_admin_OPTIONS": "createdb,createrole",
                   "PATRONI_app_user_PASSWORD": "app", "PATRONI_SUPERUSER_PASSWORD": "su"]
        let c = try ConfigLoader.parse(yaml: minimalYAML, environment: env).config
        #expect(c.bootstrap.users == [
            "admin": BootstrapUser(password: "adm", options: ["createdb", "createrole"]),
            "app_user": BootstrapUser(password: "app", options: []),
        ])
        #expect(c.postgresql.superuser.password == "su")
    }

    @Test func environmentAloneIsAConfiguration() throws {
        let env = [
            "PATRONI_NAME": "n1", "PATRONI_SCOPE": "s1",
            "PATRONI_RESTAPI_LISTEN": "10.0.0.1:8008",
            "PATRONI_ETCD3_HOST": "10.0.0.9:2379",
            "PATRONI_POSTGRESQL_LISTEN": "10.0.0.1:5432", "PATRONI_POSTGRESQL_DATA_DIR": "/data",
            "PATRONI_SUPERUSER_USERNAME": "postgres", "PATRONI_REPLICATION_USERNAME": "rep",
        ]
        let c = try ConfigLoader.load(path: nil, environment: env, checkFiles: false).config
        #expect(c.name == "n1" && c.scope == "s1")
        #expect(c.postgresql.connectAddress == "10.0.0.1:5432")
        #expect(c.dcs == .etcd3(Etcd3Settings(endpoints: ["http://10.0.0.9:2379"])))
    }
}

@Suite("Configuration sources")
struct SourceTests {
    @Test func configurationVariableWhenNoFileIsGiven() throws {
        let env = ["PATRONI_CONFIGURATION": postgres0YAML, "PATRONI_NAME": "from-env"]
        let c = try ConfigLoader.load(path: nil, environment: env, checkFiles: false).config
        #expect(c.scope == "batman")
        #expect(c.name == "from-env")
    }

    @Test func configurationVariableWhenTheFileDoesNotExist() throws {
        let c = try ConfigLoader.load(path: "/nonexistent/stork.yml", environment: ["PATRONI_CONFIGURATION": postgres0YAML], checkFiles: false).config
        #expect(c.name == "postgresql0")
    }

    @Test func anExistingFileWinsOverTheVariable() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("stork.yml").path
        try minimalYAML.write(toFile: file, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: file, environment: ["PATRONI_CONFIGURATION": postgres0YAML]).config
        #expect(c.scope == "s")
        #expect(c.name == "n")
    }

    @Test func aDirectoryMergesItsFilesInNameOrder() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try minimalYAML.write(toFile: dir.appendingPathComponent("00-base.yml").path, atomically: true, encoding: .utf8)
        try "name: second\npostgresql:\n  data_dir: /other\n".write(toFile: dir.appendingPathComponent("10-node.yaml").path,
                                                                      atomically: true, encoding: .utf8)
        try "ignored: true".write(toFile: dir.appendingPathComponent("notes.txt").path, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: dir.path, environment: [:]).config
        #expect(c.name == "second")
        #expect(c.postgresql.dataDir == "/other")
        #expect(c.postgresql.superuser.username == "postgres")
    }

    @Test func missingFile() {
        #expect(throws: ConfigError("/nonexistent/stork.yml", "cannot read the configuration file: No such file or directory")) {
            try ConfigLoader.load(path: "/nonexistent/stork.yml", environment: [:])
        }
    }

    @Test(.enabled(if: getuid() != 0, "root reads every file; BadConfigTests covers this as postgres"))
    func unreadableFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("secret.yml").path
        try minimalYAML.write(toFile: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: file)
        #expect(throws: ConfigError(file, "cannot read the configuration file: Permission denied")) {
            try ConfigLoader.load(path: file, environment: [:])
        }
    }

    @Test func yamlSyntaxErrorNamesFileLineAndColumn() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("broken.yml").path
        try "scope: batman\nname: postgresql0\nrestapi:\n  listen: a: b\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError("\(file):4:12", "YAML syntax error: mapping values are not allowed in this context")) {
            try ConfigLoader.load(path: file, environment: [:])
        }
        #expect(issueLines("scope: [batman\nname: x\n") == ["test.yml:2:5: YAML syntax error: did not find expected ',' or ']'"])
        #expect(issueLines("scope: a\nscope: b\n") == ["test.yml:1:1: YAML syntax error: duplicated key \"scope\""])
    }

    @Test func documentThatIsNotAMap() {
        #expect(issueLines("- scope\n- name\n") == ["test.yml: the configuration must be a YAML map of settings (key: value), but the document is a list"])
        #expect(issueLines("just text") == ["test.yml: the configuration must be a YAML map of settings (key: value), but the document is a string"])
        #expect(throws: ConfigError("PATRONI_CONFIGURATION", "the configuration must be a YAML map of settings (key: value), but the document is a number")) {
            try ConfigLoader.load(path: nil, environment: ["PATRONI_CONFIGURATION": "42"])
        }
    }
}
