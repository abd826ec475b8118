import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkTestSupport

/// Start-up as Patroni's: a `data_dir` whose parents do not exist yet is created (0700) and
/// bootstrapped; a second node started under a name a running member has is refused before it
/// touches anything (Patroni's "Can't start; there is already a node named ... running").
@Suite("Start-up: a data_dir without parents, a name already taken", .serialized)
struct StartupTests {
    @Test(.timeLimit(.minutes(3)))
    func missingParentsAndATakenName() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "startup", dcs: .local(dcsDir))
        let other = TestSupport.makeTempDir("stork-it")
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir); TestSupport.removeTree(other) }
        // log.dir (made too): the agent's lines go to patroni.log there, rotated at 2,000 bytes.
        let logDir = cluster.root + "/pg0/log/stork"
        let pg0 = cluster.addMember("pg0", extraYAML: "log:\n  dir: \(logDir)\n  file_size: 2000\n  file_num: 1")
        let nested = pg0.base + "/not/yet/there/data"
        let text = try String(contentsOfFile: pg0.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "data_dir: \(pg0.dataDir)\n", with: "data_dir: \(nested)\n")
            .write(toFile: pg0.configPath, atomically: false, encoding: .utf8)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg0.sql("SHOW data_directory") == nested)
        for dir in [pg0.base + "/not", pg0.base + "/not/yet", pg0.base + "/not/yet/there"] {
            let mode = (try FileManager.default.attributesOfItem(atPath: dir)[.posixPermissions] as? Int) ?? 0
            #expect(mode == 0o700, "\(dir): \(String(mode, radix: 8))")
        }

        #expect(await TestSupport.waitUntil(timeout: 30) { FileManager.default.fileExists(atPath: logDir + "/patroni.log.1") })
        let current = (try? String(contentsOfFile: logDir + "/patroni.log", encoding: .utf8)) ?? ""
        #expect(current.utf8.count < 2000 && current.contains(" INFO: "), "\(current)")
        #expect(!FileManager.default.fileExists(atPath: logDir + "/patroni.log.2"), "file_num 1 keeps one")
        #expect(!pg0.log.contains("Lock owner"), "the cycle's lines went to standard error: \(pg0.log)")

        // The same name on another host (here another directory and ports): exit 1, nothing touched.
        #expect(await TestSupport.waitUntil(timeout: 10) { await pg0.api("/patroni").1["state"] as? String == "running" })
        let twin = TestMember(name: "pg0", scope: cluster.scope, dcs: cluster.dcs, root: other)
        try twin.start()
        let status = await twin.waitForExit(timeout: 30)
        #expect(status == 1, "\(twin.log)")
        #expect(twin.log.contains("Can't start; there is already a node named 'pg0' running"), "\(twin.log)")
        #expect(!FileManager.default.fileExists(atPath: twin.dataDir), "the twin made a data directory")
        #expect(await pg0.api("/primary").0 == 200, "\(pg0.log.suffix(2000))")
        let doc = await pg0.api("/cluster").1
        let members = (doc["members"] as? [[String: Any]] ?? []).compactMap { $0["api_url"] as? String }
        #expect(members == ["http://127.0.0.1:\(pg0.apiPort)/patroni"], "\(doc)")
    }

    /// `use_unix_socket`: the agent's own connections go through the socket, so a pg_hba that
    /// refuses the superuser over TCP does not blind it; `proxy_address` is in the member key.
    @Test(.timeLimit(.minutes(2)))
    func unixSocketAndProxyAddress() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "socket", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let pg0 = cluster.addMember("pg0", postgresqlYAML: """
            use_unix_socket: true
            use_unix_socket_repl: true
            proxy_address: 127.0.0.1:6432
            pg_hba:
            - local all all trust
            - host all postgres 127.0.0.1/32 reject
            - host replication replicator 127.0.0.1/32 scram-sha-256
            - host all all 127.0.0.1/32 scram-sha-256
            """)
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        // Several cycles later it still leads: its queries were answered all along.
        try await Task.sleep(for: .seconds(3))
        #expect(await pg0.api("/primary").0 == 200, "\(pg0.log.suffix(3000))")
        #expect(!pg0.log.contains("does not answer"), "\(pg0.log.suffix(3000))")
        let members = await pg0.api("/cluster").1["members"] as? [[String: Any]] ?? []
        let view = try await readView(scope: cluster.scope, dcs: cluster.dcs)
        #expect(view.member(named: "pg0")?.data["proxy_url"]?.scalarText == "postgres://127.0.0.1:6432/postgres", "\(members)")
    }

    /// A replica configured with fewer connections than its primary runs with starts with the
    /// primary's number (recovery refuses less) and reports a pending restart saying so, as Patroni.
    @Test(.timeLimit(.minutes(2)))
    func aReplicaConfiguredBelowItsPrimary() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "floor", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        _ = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        let text = try String(contentsOfFile: pg1.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "    max_connections: 30\n", with: "    max_connections: 20\n")
            .write(toFile: pg1.configPath, atomically: false, encoding: .utf8)
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg1.sql("SHOW max_connections") == "30")
        let pending = await TestSupport.waitUntil(timeout: 10) { await pg1.api("/patroni").1["pending_restart"] as? Bool == true }
        let doc = await pg1.api("/patroni").1
        #expect(pending, "\(doc)\n\(pg1.log.suffix(2000))")
        let reason = (doc["pending_restart_reason"] as? [String: Any])?["max_connections"] as? [String: Any]
        #expect(reason?["old_value"] as? String == "30" && reason?["new_value"] as? String == "20", "\(doc)")
        #expect(pg1.log.contains("max_connections value in pg_controldata: 30, in the global configuration: 20. pg_controldata value will be used"), "\(pg1.log.suffix(2000))")
    }
}
