import Foundation
import Testing
@testable import StorkConfig

@Suite("renderMasked")
struct RenderMaskedTests {
    func rendered(env: [String: String] = [:]) throws -> String {
        try ConfigLoader.parse(yaml: postgres0YAML, environment: env, checkFiles: false).config.renderMasked()
    }

    @Test func noPasswordAppears() throws {
        let env = ["PATRONI_ETCD3_PASSWORD": "etcd-pw-6666", "PATRONI_ops_PASSWORD": "ops-pw-7777",
                   "PATRONI_SUPERUSER_SSLPASSWORD": "sslkey-pw-8888"]
        let text = try rendered(env: env)
        for secret in passwordsInPostgres0 + ["etcd-pw-6666", "ops-pw-7777", "sslkey-pw-8888"] {
            #expect(!text.contains(secret), "\(secret) leaked")
        }
        // superuser, replication, rewind, restapi, etcd3, two bootstrap users, and the superuser sslpassword
        #expect(text.components(separatedBy: "password: \"******\"").count - 1 == 8)
        #expect(text.contains("sslpassword: \"******\""))
    }

    @Test func secretsInsideKeptMapsAreMasked() throws {
        var c = try ConfigLoader.parse(yaml: minimalYAML).config
        c.postgresql.methodSections["wal_g"] = .object(["command": .string("x"), "aws_password": .string("mpw-1"),
                                                        "nested": .object(["password": .string("mpw-2")])])
        c.bootstrap.dcs["standby_cluster"] = .object(["password": .string("mpw-3")])
        let text = c.renderMasked()
        #expect(!text.contains("mpw-"))
        #expect(text.contains("aws_password: \"******\""))
    }

    @Test func readableStableAndValidYAML() throws {
        let text = try rendered()
        #expect(text == (try rendered()))
        #expect(text.hasPrefix("scope: batman\nnamespace: /service/\nname: postgresql0\nlog:\n  level: INFO\n  type: plain\n  dir: /var/log/patroni\n  file_size: 25000000\n  file_num: 4\nrestapi:\n"))
        #expect(text.contains("\netcd3:\n  hosts: [\"http://127.0.0.1:2379\"]\n") || text.contains("\netcd3:\n  hosts: [http://127.0.0.1:2379]\n"))
        #expect(text.contains("  initdb:\n    - encoding: UTF8\n    - data-checksums\n"))
        #expect(text.contains("  users:\n    admin:\n      password: \"******\"\n      options: [createrole, createdb]\n"))
        #expect(text.contains("    unix_socket_directories: ..\n"))
        #expect(text.contains("  create_replica_methods: [wal_g, basebackup]\n"))
        #expect(!text.contains("# accepted but not implemented by Stork yet"), "every key of postgres0.yml is implemented")

        // It reads back as YAML with the same values.
        let back = try #require(try ConfigLoader.yamlValue(text))
        #expect(back["scope"] == .string("batman"))
        #expect(back["postgresql"]?["authentication"]?["superuser"]?["password"] == .string("******"))
        #expect(back["postgresql"]?["authentication"]?["replication"]?["sslmode"] == .string("verify-full"))
        #expect(back["bootstrap"]?["dcs"]?["postgresql"]?["parameters"]?["hot_standby"] == .bool(true))
        #expect(back["bootstrap"]?["pg_hba"] == .array([.string("host replication replicator 127.0.0.1/32 md5"),
                                                         .string("host all all 0.0.0.0/0 md5")]))
        #expect(back["postgresql"]?["wal_g"]?["no_leader"] == .int(1))
        #expect(back["postgresql"]?["pg_ctl_timeout"] == .int(60))
        #expect(back["postgresql"]?["remove_data_directory_on_rewind_failure"] == .bool(true))
        #expect(back["tags"]?["nofailover"] == .bool(false))
    }

    @Test func awkwardStringsAreQuoted() {
        for s in ["on", "yes", "123", "1.5", "", " lead", "a: b", "x #y", "[list]", "quote\"d", "line\nbreak", "~", "null", "*star", "-"] {
            let line = "k: " + YAMLWriter.scalarText(.string(s))
            #expect((try? ConfigLoader.yamlValue(line)) == .object(["k": .string(s)]), "\(s)")
        }
        #expect(YAMLWriter.scalarText(.string("/service/")) == "/service/")
        #expect(YAMLWriter.scalarText(.string("127.0.0.1:5432")) == "127.0.0.1:5432")
    }
}
