import Foundation
import Testing
import StorkTestSupport

/// `postgresql.callbacks`, `pre_promote` and `before_stop` on real PostgreSQL: each callback
/// called as Patroni calls it (`CMD ACTION ROLE SCOPE`) across a bootstrap, a clone, a reload,
/// a restart, a switchover and a shutdown; a hanging callback ended by the next one and never
/// stalling the loop; a failing pre_promote keeping a member from leading.
@Suite("Callbacks: on_start, on_stop, on_restart, on_reload, on_role_change, pre_promote, before_stop", .serialized)
struct CallbackTests {
    /// Scripts in the member's directory that append what they were called with to
    /// `callbacks.log` there; on_reload then hangs (its PID in `reload.pid`); pre_promote
    /// exits with the number in `pre_promote.exit` (0 without it).
    static func scripts(_ m: String) -> String {
        // A newer callback sends SIGTERM to the one running; these record their call first
        // whatever the timing (the hanging on_reload still ends by it).
        let callback = "#!/bin/sh\n[ \"$1\" = on_reload ] || trap '' TERM\necho \"$*\" >> \(m)/callbacks.log\nif [ \"$1\" = on_reload ]; then echo $$ > \(m)/reload.pid; exec sleep 60; fi\n"
        let beforeStop = "#!/bin/sh\necho before_stop >> \(m)/callbacks.log\n"
        let prePromote = "#!/bin/sh\necho pre_promote >> \(m)/callbacks.log\nexit $(cat \(m)/pre_promote.exit 2>/dev/null || echo 0)\n"
        for (name, text) in [("callback.sh", callback), ("before_stop.sh", beforeStop), ("pre_promote.sh", prePromote)] {
            _ = FileManager.default.createFile(atPath: "\(m)/\(name)", contents: Data(text.utf8), attributes: [.posixPermissions: 0o755])
            TestSupport.chownToPostgres("\(m)/\(name)")
        }
        let actions = ["on_start", "on_stop", "on_restart", "on_reload", "on_role_change"]
        return "callbacks:\n" + actions.map { "  \($0): \(m)/callback.sh" }.joined(separator: "\n")
            + "\npre_promote: \(m)/pre_promote.sh\nbefore_stop: \(m)/before_stop.sh"
    }

    static func calls(_ m: TestMember) -> [String] {
        ((try? String(contentsOfFile: m.base + "/callbacks.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Waits until `m`'s calls after the first `since` are `expected`.
    static func waitForCalls(_ m: TestMember, since: Int, _ expected: [String]) async -> Bool {
        await TestSupport.waitUntil(timeout: 30) { Array(calls(m).dropFirst(since)) == expected }
    }

    @Test(.timeLimit(.minutes(5)))
    func calledAsPatroniCallsThem() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "cbs", dcs: .local(dcsDir))
        var hanging: [pid_t] = []
        defer {
            for pid in hanging { kill(pid, SIGKILL) }
            for m in cluster.members {
                if let pid = pid_t((try? String(contentsOfFile: m.base + "/reload.pid", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") { kill(pid, SIGKILL) }
            }
            cluster.destroy()
            TestSupport.removeTree(dcsDir)
        }
        let members = ["pg0", "pg1"].map { name in
            let base = cluster.root + "/" + name
            mkdir(base, 0o755)
            return cluster.addMember(name, postgresqlYAML: Self.scripts(base))
        }
        let pg0 = members[0], pg1 = members[1]

        // Bootstrap and clone: on_start once each, in the role it started in.
        try pg0.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        #expect(await Self.waitForCalls(pg0, since: 0, ["on_start primary cbs"]), "\(Self.calls(pg0))\n\(pg0.log.suffix(3000))")
        #expect(await Self.waitForCalls(pg1, since: 0, ["on_start replica cbs"]), "\(Self.calls(pg1))\n\(pg1.log.suffix(3000))")

        // A reload: on_reload, which hangs; the loop goes on, and the next reload's callback ends it.
        var seen = Self.calls(pg0).count
        #expect(await pg0.send("POST", "/reload", "").0 == 202)
        #expect(await Self.waitForCalls(pg0, since: seen, ["on_reload primary cbs"]), "\(Self.calls(pg0))")
        #expect(await TestSupport.waitUntil(timeout: 5) { FileManager.default.fileExists(atPath: pg0.base + "/reload.pid") })
        let first = try #require(pid_t(String(contentsOfFile: pg0.base + "/reload.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        hanging.append(first)
        let cycles = pg0.log.components(separatedBy: "no action. I am (pg0)").count
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.components(separatedBy: "no action. I am (pg0)").count >= cycles + 3 },
                "the loop stalled behind a hanging callback: \(pg0.log.suffix(2000))")
        seen = Self.calls(pg0).count
        #expect(await pg0.send("POST", "/reload", "").0 == 202)
        #expect(await Self.waitForCalls(pg0, since: seen, ["on_reload primary cbs"]), "\(Self.calls(pg0))")
        #expect(await TestSupport.waitUntil(timeout: 15) { kill(first, 0) != 0 }, "the first on_reload (PID \(first)) still runs")

        // A restart: before_stop, then on_restart.
        seen = Self.calls(pg1).count
        #expect(await pg1.send("POST", "/restart", "{}").0 == 200)
        #expect(await Self.waitForCalls(pg1, since: seen, ["before_stop", "on_restart replica cbs"]), "\(Self.calls(pg1))\n\(pg1.log.suffix(3000))")
        // A switchover's candidate must be running in its member key (Patroni's check).
        let running = await TestSupport.waitUntil(timeout: 20) {
            let members = await pg0.api("/cluster").1["members"] as? [[String: Any]] ?? []
            return members.first { $0["name"] as? String == "pg1" }.map { ["running", "streaming"].contains($0["state"] as? String) } == true
        }
        let clusterDoc = await pg0.api("/cluster").1
        #expect(running, "\(clusterDoc)")

        // A switchover: the old primary stops (before_stop, on_stop) and comes back as a
        // replica (on_role_change); the new one runs pre_promote, then on_role_change.
        let seen0 = Self.calls(pg0).count, seen1 = Self.calls(pg1).count
        let switchover = await pg0.send("POST", "/switchover", #"{"leader": "pg0", "candidate": "pg1"}"#)
        #expect(switchover.0 == 200, "\(switchover)\n\(cluster.logs())")
        #expect(await Self.waitForCalls(pg1, since: seen1, ["pre_promote", "on_role_change primary cbs"]), "\(Self.calls(pg1))\n\(pg1.log.suffix(3000))")
        // (When it started before pg1 held the key, following pg1 is a reload: on_reload too.)
        let demotion = ["before_stop", "on_stop demoted cbs", "on_role_change replica cbs"]
        #expect(await TestSupport.waitUntil(timeout: 30) {
            let calls = Array(Self.calls(pg0).dropFirst(seen0))
            return calls.starts(with: demotion) && calls.dropFirst(demotion.count).allSatisfy { $0 == "on_reload replica cbs" }
        }, "\(Self.calls(pg0))\n\(pg0.log.suffix(3000))")
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")

        // pre_promote exits 1 on pg0: when pg1's agent shuts down (on_stop), pg0 wins the
        // race but does not promote, gives the key back and sits the next races out for a ttl.
        try "1".write(toFile: pg0.base + "/pre_promote.exit", atomically: true, encoding: .utf8)
        let before1 = Self.calls(pg1).count
        pg1.stop()
        #expect(Array(Self.calls(pg1).dropFirst(before1)) == ["before_stop", "on_stop primary cbs"], "\(Self.calls(pg1))\n\(pg1.log.suffix(3000))")
        #expect(await TestSupport.waitUntil(timeout: 30) { pg0.log.contains("Releasing the leader key voluntarily because the pre-promote script failed") },
                "\(pg0.log.suffix(3000))")
        #expect(await TestSupport.waitUntil(timeout: 10) { pg0.log.contains("backoff: skip leader race after pre_promote script failure") },
                "\(pg0.log.suffix(3000))")
        #expect(pg0.sql("SELECT pg_is_in_recovery()") == "t", "promoted although pre_promote failed")
        #expect(!Self.calls(pg0).contains("on_role_change primary cbs"), "\(Self.calls(pg0))")

        // pre_promote succeeds again: after the backoff pg0 leads.
        try "0".write(toFile: pg0.base + "/pre_promote.exit", atomically: true, encoding: .utf8)
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.sql("SELECT pg_is_in_recovery()") == "f" }, "\(pg0.log.suffix(3000))")
        #expect(await TestSupport.waitUntil(timeout: 10) { Self.calls(pg0).last == "on_role_change primary cbs" }, "\(Self.calls(pg0))")
    }
}
