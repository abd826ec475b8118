import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkTestSupport

/// The cluster's configuration in the DCS (Patroni's dynamic configuration), changed with
/// `patronictl edit-config` and through `PATCH /config`, reaching every member's running
/// server without a restart where PostgreSQL allows, else reported as `pending_restart`
/// until `patronictl restart --pending`; scheduled restarts, flush and reload.
@Suite("Dynamic configuration, restart and reload: edit-config, PATCH /config, patronictl restart and reload", .serialized)
struct DynamicConfigTests {
    @Test(.timeLimit(.minutes(5)))
    func changesReachEveryMember() async throws {
        try Patronictl.requireInstalled()
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "dynconf", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        for i in 0..<2 { cluster.addMember("pg\(i)") }
        // A file carried over from PostgreSQL 12 (wal_keep_segments), and a parameter no major has.
        let carried = try String(contentsOfFile: cluster.members[1].configPath, encoding: .utf8)
        try carried.replacingOccurrences(of: "    max_connections: 30\n", with: "    max_connections: 30\n    wal_keep_segments: 8\n    foo_bar: 1\n")
            .write(toFile: cluster.members[1].configPath, atomically: false, encoding: .utf8)
        for m in cluster.members { try m.start() }
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(cluster.members[1].sql("SHOW wal_keep_size") == "128MB")
        let ctl = try Patronictl(cluster: cluster, etcd: etcd)
        let started = cluster.members.map { $0.sql("SELECT pg_postmaster_start_time()") }

        // A parameter a reload applies, with patronictl edit-config: on both servers, neither restarted.
        let edit = try ctl.run(["edit-config", cluster.scope, "--force", "-p", "work_mem=12MB"])
        #expect(edit.status == 0, "\(edit.output)")
        for m in cluster.members {
            #expect(await TestSupport.waitUntil(timeout: 20) { m.sql("SHOW work_mem") == "12MB" }, "\(m.name): \(m.sql("SHOW work_mem") ?? "-")\n\(m.log.suffix(2000))")
            #expect(m.log.contains("reloaded PostgreSQL with the changed settings: work_mem"), "\(m.log.suffix(2000))")
        }
        #expect(cluster.members.map { $0.sql("SELECT pg_postmaster_start_time()") } == started, "a reload, not a restart")

        // A parameter only a restart applies, through PATCH /config: pending_restart on both,
        // in GET /patroni, the member key and patronictl list.
        let (code, _) = await cluster.members[0].send("PATCH", "/config", #"{"postgresql": {"parameters": {"max_files_per_process": 900}}}"#)
        #expect(code == 200)
        for m in cluster.members {
            let pending = await TestSupport.waitUntil(timeout: 20) { await m.api("/patroni").1["pending_restart"] as? Bool == true }
            let doc = await m.api("/patroni").1
            #expect(pending, "\(m.name): \(doc)\n\(m.log.suffix(2000))")
            let reason = (doc["pending_restart_reason"] as? [String: Any])?["max_files_per_process"] as? [String: Any]
            #expect(reason?["old_value"] as? String == "1000" && reason?["new_value"] as? String == "900", "\(doc)")
            #expect(m.sql("SHOW max_files_per_process") == "1000")
        }
        let listed = try await TestSupport.waitUntil(timeout: 10) {
            let rows = try ctl.listJSON(cluster.scope) ?? []
            return rows.count == 2 && rows.allSatisfy { $0["Pending restart"] as? String == "*" }
        }
        #expect(listed, "\((try? ctl.run(["list", cluster.scope]))?.output ?? "")")

        // patronictl restart --pending: both restart (the leader keeps its key), and the change is in.
        let leader = try #require(await cluster.primaries().first)
        let restart = try ctl.run(["restart", cluster.scope, "--pending", "--force"], timeout: 120)
        #expect(restart.status == 0 && cluster.members.allSatisfy { restart.output.contains("Success: restart on member \($0.name)") },
                "\(restart.output)\n\(cluster.logs())")
        for m in cluster.members {
            #expect(m.sql("SHOW max_files_per_process") == "900", "\(m.name)")
            #expect(await m.api("/patroni").1["pending_restart"] == nil, "\(m.name)")
        }
        let restarted = cluster.members.map { $0.sql("SELECT pg_postmaster_start_time()") }
        #expect(zip(restarted, started).allSatisfy { $0 != nil && $0 != $1 }, "\(restarted) after \(started)")
        #expect(await cluster.primaries().map(\.name) == [leader.name], "the leader restarted in place")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")

        // A restart at a time: shown until it happens, then done; one scheduled far ahead is flushed.
        let pg1 = cluster.members[1]
        func iso(_ secondsAhead: Double) -> String { DateText.isoformat(Date().addingTimeInterval(secondsAhead)) }
        let scheduled = try ctl.run(["restart", cluster.scope, pg1.name, "--scheduled", iso(4), "--force"])
        #expect(scheduled.status == 0 && scheduled.output.contains("Success: restart scheduled on member \(pg1.name)"), "\(scheduled.output)")
        #expect(await pg1.api("/patroni").1["scheduled_restart"] != nil)
        #expect(await TestSupport.waitUntil(timeout: 20) {
            pg1.sql("SELECT pg_postmaster_start_time()") != restarted[1] && pg1.sql("SELECT 1") == "1"
        }, "\(pg1.log.suffix(3000))")
        #expect(await TestSupport.waitUntil(timeout: 5) { await pg1.api("/patroni").1["scheduled_restart"] == nil })
        #expect(pg1.log.contains("Manual scheduled restart at"), "\(pg1.log.suffix(3000))")
        #expect(await pg1.send("POST", "/restart", #"{"schedule": "\#(iso(3600))"}"#).0 == 202)
        #expect(await pg1.send("POST", "/restart", #"{"schedule": "\#(iso(7200))"}"#) == (409, "Another restart is already scheduled"))
        let flush = try ctl.run(["flush", cluster.scope, "restart", "--force"])
        #expect(flush.output.contains("Success: flush scheduled restart for member \(pg1.name)"), "\(flush.output)")
        #expect(await pg1.api("/patroni").1["scheduled_restart"] == nil)
        #expect(await pg1.send("DELETE", "/restart", "") == (404, "no restarts are scheduled"))

        // patronictl reload: PostgreSQL reloads on both, though nothing changed.
        let reload = try ctl.run(["reload", cluster.scope, "--force"])
        #expect(reload.status == 0 && reload.output.contains("Reload request received for member"), "\(reload.output)")
        for m in cluster.members {
            #expect(await TestSupport.waitUntil(timeout: 10) { m.log.contains("reloaded PostgreSQL as asked") }, "\(m.name)\n\(m.log.suffix(2000))")
        }

        // pg_hba from the cluster's configuration (the members set none of their own).
        let line = "host all stork_probe 127.0.0.1/32 reject"
        let hba = #"{"postgresql": {"pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 scram-sha-256", "\#(line)", "host all all 127.0.0.1/32 scram-sha-256"]}}"#
        #expect(await cluster.members[1].send("PATCH", "/config", hba).0 == 200)
        for m in cluster.members {
            #expect(await TestSupport.waitUntil(timeout: 20) {
                m.sql("SELECT count(*) FROM pg_hba_file_rules WHERE 'stork_probe' = ANY(user_name)") == "1"
            }, "\(m.name)\n\(m.log.suffix(2000))")
        }

        // pg_ident from the cluster's configuration, on every member.
        #expect(await cluster.members[0].send("PATCH", "/config", #"{"postgresql": {"pg_ident": ["stork_map alice postgres"]}}"#).0 == 200)
        for m in cluster.members {
            #expect(await TestSupport.waitUntil(timeout: 20) {
                m.sql("SELECT count(*) FROM pg_ident_file_mappings WHERE map_name = 'stork_map' AND pg_username = 'postgres'") == "1"
            }, "\(m.name)\n\(m.log.suffix(2000))")
            #expect(m.log.contains("reloaded PostgreSQL with the changed settings: pg_ident"), "\(m.log.suffix(2000))")
        }

        // A key Stork accepts without acting on it yet: each member says so once.
        #expect(await cluster.members[0].send("PATCH", "/config", #"{"synchronous_mode": true}"#).0 == 200)
        let ignored = "configuration key config.synchronous_mode (the DCS config key) is accepted but not implemented by Stork yet"
        for m in cluster.members {
            #expect(await TestSupport.waitUntil(timeout: 10) { m.log.contains(ignored) }, "\(m.name)\n\(m.log.suffix(2000))")
        }
        #expect(await cluster.members[0].send("PATCH", "/config", #"{"synchronous_mode": null}"#).0 == 200)

        // The member's own YAML after SIGHUP (systemctl reload): applied the same way, to that member only.
        let yaml = try String(contentsOfFile: cluster.members[1].configPath, encoding: .utf8)
        #expect(!cluster.members[1].log.contains(" DEBUG: "))
        try (yaml.replacingOccurrences(of: "    max_connections: 30\n", with: "    max_connections: 30\n    lock_timeout: 7000\n") + "\nlog:\n  level: DEBUG\ntags:\n  noloadbalance: true\n")
            .write(toFile: cluster.members[1].configPath, atomically: false, encoding: .utf8)
        kill(try #require(cluster.members[1].process?.processIdentifier), SIGHUP)
        #expect(await TestSupport.waitUntil(timeout: 20) { cluster.members[1].sql("SHOW lock_timeout") == "7s" }, "\(cluster.members[1].log.suffix(2000))")
        // log.level too, at once: the reload's pg_ctl run is logged at DEBUG.
        #expect(await TestSupport.waitUntil(timeout: 10) { cluster.members[1].log.contains(" DEBUG: ") }, "\(cluster.members[1].log.suffix(2000))")
        // And the tags: the REST API answers with them (a replica tagged noloadbalance leaves the read pool).
        let tagged = await TestSupport.waitUntil(timeout: 10) {
            (await cluster.members[1].api("/patroni").1["tags"] as? [String: Any])?["noloadbalance"] as? Bool == true
        }
        let taggedDoc = await cluster.members[1].api("/patroni").1
        #expect(tagged, "\(taggedDoc)")
        if taggedDoc["role"] as? String == "replica" {
            #expect(await cluster.members[1].api("/replica").0 == 503, "a noloadbalance replica still in the read pool")
        }
        #expect(cluster.members[0].sql("SHOW lock_timeout") == "0")

        // The carried-over file's parameters: one warning each, however often the files were written since.
        let major = try #require(cluster.members[1].sql("SHOW server_version_num")).prefix(2)
        for warning in ["wal_keep_segments is not a parameter of PostgreSQL \(major); written as wal_keep_size = 128MB",
                        "foo_bar is not a parameter of PostgreSQL \(major); left out of postgresql.conf"] {
            #expect(cluster.members[1].log.components(separatedBy: warning).count == 2, "\(warning)\n\(cluster.members[1].log.suffix(3000))")
        }

        // GET /config is the DCS's; GET /cluster names the leader and the replica.
        let config = await cluster.members[1].api("/config").1
        #expect((config["postgresql"] as? [String: Any])?["pg_hba"] != nil && config["ttl"] as? Int == 20, "\(config)")
        let primary = try #require(await cluster.primaries().first)
        let clusterDoc = await cluster.members[1].api("/cluster").1
        let members = clusterDoc["members"] as? [[String: Any]] ?? []
        #expect(members.map { $0["name"] as? String } == ["pg0", "pg1"], "\(clusterDoc)")
        for m in members {
            let leads = m["name"] as? String == primary.name
            #expect(m["role"] as? String == (leads ? "leader" : "replica") && m["state"] as? String == (leads ? "running" : "streaming"), "\(m)")
            #expect(m["pending_restart"] == nil, "restarted: \(m)")
        }
        #expect(clusterDoc["scope"] as? String == cluster.scope)

        // HAProxy's checks: OPTIONS and HEAD answer the code alone, as GET with its filters does.
        let replica = try #require(cluster.members.first { $0 !== primary })
        // pg1 was tagged noloadbalance by the SIGHUP above: out of the read pool when it is the replica.
        let inReadPool = replica !== cluster.members[1]
        for method in ["OPTIONS", "HEAD", "GET"] {
            #expect(LoopbackTCP.request(primary.apiPort, method, "/primary") == 200, "\(method) /primary on the primary")
            #expect(LoopbackTCP.request(replica.apiPort, method, "/primary") == 503, "\(method) /primary on the replica")
            #expect(LoopbackTCP.request(replica.apiPort, method, "/replica?lag=16MB") == (inReadPool ? 200 : 503), "\(method) /replica on the replica")
            #expect(LoopbackTCP.request(replica.apiPort, method, "/health") == 200, "\(method) /health on the replica")
            #expect(LoopbackTCP.request(replica.apiPort, method, "/replica?tag_zone=a") == 503, "\(method): no tag zone")
        }
    }

    /// `patronictl pause --wait`: the agents start, stop, promote and demote nothing; an agent
    /// stopped leaves its server running; the primary's postmaster killed is not restarted and
    /// nobody promotes; `patronictl resume --wait`: normal handling, one primary again.
    @Test(.timeLimit(.minutes(4)))
    func pauseAndResume() async throws {
        try Patronictl.requireInstalled()
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "paused", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        for i in 0..<2 { cluster.addMember("pg\(i)") }
        for m in cluster.members { try m.start() }
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        let ctl = try Patronictl(cluster: cluster, etcd: etcd)
        let primary = try #require(await cluster.primaries().first)
        let replica = try #require(cluster.members.first { $0 !== primary })

        let pause = try ctl.run(["pause", cluster.scope, "--wait"])
        #expect(pause.status == 0 && pause.output.contains("Success: cluster management is paused"), "\(pause.output)\n\(cluster.logs())")
        #expect(try ctl.run(["list", cluster.scope]).output.contains("Maintenance mode: on"))
        for m in cluster.members {
            #expect(await m.api("/patroni").1["pause"] as? Bool == true, "\(m.name)")
            #expect(await TestSupport.waitUntil(timeout: 5) { m.log.contains("PAUSE: no action. I am (\(m.name))") }, "\(m.log.suffix(2000))")
        }
        #expect(await cluster.members[0].api("/cluster").1["pause"] as? Bool == true)

        // GET /metrics, read by prometheus_client's parser: Patroni's names, the values of this cluster.
        for m in [primary, replica] {
            let metrics = try prometheusMetrics(m, scope: cluster.scope)
            let isPrimary = m === primary
            #expect(metrics["patroni_postgres_running"] == 1 && metrics["patroni_is_paused"] == 1 && metrics["patroni_cluster_unlocked"] == 0, "\(metrics)")
            #expect(metrics["patroni_primary"] == (isPrimary ? 1 : 0) && metrics["patroni_replica"] == (isPrimary ? 0 : 1), "\(metrics)")
            #expect(metrics["patroni_postgres_server_version"] == Double(m.sql("SHOW server_version_num") ?? ""), "\(metrics)")
            #expect(metrics["patroni_postgres_timeline"] == 1 && metrics["patroni_postgres_state"] == 5, "\(metrics)")
            // The parser names a counter's sample <name>_total (Patroni's text has none).
            #expect((metrics[isPrimary ? "patroni_xlog_location_total" : "patroni_xlog_replayed_location_total"] ?? 0) > 0, "\(metrics)")
            #expect(metrics["patroni_xlog_received_location_total"].map { isPrimary ? $0 == 0 : $0 > 0 } == true, "\(metrics)")
            #expect(metrics["patroni_postgres_streaming"] == (isPrimary ? 0 : 1), "\(metrics)")
            #expect(abs((metrics["patroni_dcs_last_seen"] ?? 0) - Date().timeIntervalSince1970) < 10, "\(metrics)")
            // Stork's own: the replica was cloned once (pg_basebackup), the primary never.
            #expect(metrics["stork_replica_builds_total"] == (isPrimary ? 0 : 1) && metrics["stork_replica_build_failures_total"] == 0, "\(metrics)")
            #expect(metrics["stork_replica_build_in_progress"] == 0, "\(metrics)")
            if !isPrimary {
                #expect((metrics["stork_replica_build_last_bytes{method=basebackup}"] ?? 0) > 1_000_000, "\(metrics)")
                #expect((metrics["stork_replica_build_last_duration_seconds{method=basebackup}"] ?? 0) > 0, "\(metrics)")
            }
        }

        // The replica's agent stopped: its server keeps running (maintenance of the agent); started again, it follows.
        replica.stop()
        #expect(replica.sql("SELECT pg_is_in_recovery()") == "t", "the replica's server runs on")
        try replica.start()

        // The primary's postmaster killed: not restarted, the key given back, and no promotion.
        let pid = try #require(FailoverTests.postmasterPID(primary))
        kill(pid, SIGKILL)
        #expect(await TestSupport.waitUntil(timeout: 15) { primary.log.contains("PAUSE: removed leader lock because postgres is not running") },
                "\(primary.log.suffix(3000))")
        try await Task.sleep(for: .seconds(5))
        #expect(primary.sql("SELECT 1") == nil, "the agent started its server")
        #expect(replica.sql("SELECT pg_is_in_recovery()") == "t", "the replica promoted while paused")
        #expect(replica.log.contains("PAUSE: no action. I am (\(replica.name))"), "\(replica.log.suffix(3000))")

        // A failover to a named candidate, with no leader (its main use): the replica promotes, paused.
        let failover = try ctl.run(["failover", cluster.scope, "--candidate", replica.name, "--force"], timeout: 60)
        #expect(failover.output.contains("Successfully failed over to \"\(replica.name)\""), "\(failover.output)\n\(cluster.logs())")
        #expect(replica.sql("SELECT pg_is_in_recovery()") == "f", "\(replica.log.suffix(3000))")

        let resume = try ctl.run(["resume", cluster.scope, "--wait"])
        #expect(resume.status == 0 && resume.output.contains("Success: cluster management is resumed"), "\(resume.output)")
        #expect(await TestSupport.waitUntil(timeout: 60) { await cluster.primaries().count == 1 }, "\(cluster.logs())")
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(await cluster.members[0].api("/patroni").1["pause"] == nil)
    }
}

/// `GET /metrics` of `m`, parsed by prometheus_client (STORK_TEST_VENV): every sample's value
/// by name; the parser throws on anything the text format does not allow, and every sample
/// must carry Patroni's labels.
func prometheusMetrics(_ m: TestMember, scope: String) throws -> [String: Double] {
    let port = m.apiPort
    guard let answer = LoopbackTCP.exchange(port, "GET", "/metrics"), answer.status == 200 else {
        throw PatronictlError("GET /metrics on \(m.name) did not answer 200")
    }
    let program = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for family in text_string_to_metric_families(sys.stdin.read()):
            for sample in family.samples:
                labels = dict(sample.labels)
                assert labels.pop("scope") == sys.argv[1] and labels.pop("name") == sys.argv[2], sample
                extra = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                out[sample.name + ("{" + extra + "}" if extra else "")] = sample.value
        print(json.dumps(out))
        """
    let input = m.base + "/metrics.txt"
    try answer.body.write(toFile: input, atomically: true, encoding: .utf8)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: S3TestServer.venvDirectory + "/bin/python3")
    p.arguments = ["-c", program, scope, m.name]
    p.standardInput = FileHandle(forReadingAtPath: input)
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0, let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Double] else {
        throw PatronictlError("prometheus_client could not read GET /metrics: \(String(decoding: data, as: UTF8.self))\n\(answer.body)")
    }
    return parsed
}

