import Foundation
import Testing
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Recipes/haproxy/haproxy.cfg run by Debian's haproxy in front of a real cluster.
@Suite("Recipes/haproxy: the primary and replica ports follow the cluster through a switchover", .serialized)
struct HAProxyRecipeTests {
    /// The recipe's text with only what its README lists as yours changed: the `bind` ports
    /// (on 127.0.0.1) and, on each `server` line, the member's PostgreSQL and REST API ports.
    /// `server` lines of members the test does not start are left out.
    static func configuration(primaryPort: Int, replicaPort: Int, statsPort: Int, members: [TestMember]) throws -> String {
        let recipe = try String(contentsOfFile: recipeDirectory("haproxy") + "/haproxy.cfg", encoding: .utf8)
        let binds = ["*:5000": primaryPort, "*:5001": replicaPort, "*:7000": statsPort]
        var lines: [String] = []
        for line in recipe.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            var words = line.split(separator: " ").map(String.init)
            let indent = String(line.prefix { $0 == " " })
            if words.first == "bind", words.count == 2, let port = binds[words[1]] {
                lines.append(indent + "bind 127.0.0.1:\(port)")
            } else if words.first == "server", words.count > 2 {
                guard let member = members.first(where: { $0.name == words[1] }) else { continue }
                words[2] = "127.0.0.1:\(member.pgPort)"
                let check = try #require(words.firstIndex(of: "port").map { $0 + 1 }, "no `check port` in: \(line)")
                words[check] = String(member.apiPort)
                lines.append(indent + words.joined(separator: " "))
            } else {
                lines.append(line)
            }
        }
        let text = lines.joined(separator: "\n")
        for port in binds.values { try #require(text.contains("bind 127.0.0.1:\(port)\n"), "a bind the test expects is gone from the recipe:\n\(recipe)") }
        for m in members {
            // One line in the primary pool, one in the replica pool.
            try #require(text.components(separatedBy: "server \(m.name) 127.0.0.1:\(m.pgPort) ").count == 3, "\(text)")
        }
        return text
    }

    /// `psql` through HAProxy's `port` as the superuser, the way `TestMember.sql` runs it; nil
    /// when the connection or the query fails.
    static func sql(through port: Int, _ query: String) -> String? {
        let r = try? runAsPostgres(TestSupport.pgBinDir + "/psql",
                                   ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-XAt", "-F", " ", "-c", query],
                                   env: ["PGPASSWORD": superuserPassword, "PGCONNECT_TIMEOUT": "3"])
        guard let r, r.status == 0 else { return nil }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Which member a new connection through `port` lands on, and whether it is in recovery:
    /// "pg0 f", say; nil when it could not connect.
    static func reached(_ port: Int, _ members: [TestMember]) -> String? {
        guard let answer = sql(through: port, "SELECT inet_server_port(), pg_is_in_recovery()") else { return nil }
        let parts = answer.split(separator: " ")
        guard parts.count == 2, let member = members.first(where: { String($0.pgPort) == parts[0] }) else { return answer }
        return "\(member.name) \(parts[1])"
    }

    /// Every one of a few new connections through `port` lands on `expected`. One is not
    /// enough: HAProxy starts with every server up and balances round robin until the checks
    /// have marked the others down.
    static func allReach(_ port: Int, _ expected: String, _ members: [TestMember]) -> Bool {
        (0..<4).allSatisfy { _ in reached(port, members) == expected }
    }

    /// Each server's state in each pool from the stats page (`pool/server STATUS`), for failure messages.
    static func stats(_ port: Int) -> String {
        // curl, which reads HAProxy's chunked answer.
        guard let page = try? TestSupport.runTool("/usr/bin/curl", ["-s", "-m", "3", "http://127.0.0.1:\(port)/;csv"]).output,
              !page.isEmpty else { return "stats page unreachable" }
        let rows = page.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = rows.first(where: { $0.first?.hasPrefix("# pxname") ?? false }),
              let status = header.firstIndex(of: "status") else { return String(page.prefix(2000)) }
        return rows.filter { $0.count > status && ["primary", "replicas"].contains($0[0]) && !["FRONTEND", "BACKEND"].contains($0[1]) }
            .map { "\($0[0])/\($0[1]) \($0[status])" }.joined(separator: ", ")
    }

    @Test(.timeLimit(.minutes(4)))
    func portsFollowASwitchover() async throws {
        // A failure, not a skip: scripts/test installs haproxy (STORK_APT_PACKAGES).
        let haproxy = try #require(TestSupport.which("haproxy"), "haproxy is not installed: run scripts/test or apt-get install haproxy")
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "main", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        let members = [pg0, pg1]

        let primaryPort = TestSupport.freePort(), replicaPort = TestSupport.freePort(), statsPort = TestSupport.freePort()
        let cfg = cluster.root + "/haproxy.cfg"
        let logPath = cluster.root + "/haproxy.log"
        try Self.configuration(primaryPort: primaryPort, replicaPort: replicaPort, statsPort: statsPort, members: members)
            .write(toFile: cfg, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: haproxy)
        // -db: in the foreground, so that the PID is haproxy's own and SIGTERM ends it.
        process.arguments = ["-f", cfg, "-db"]
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // Declared after the cluster's: runs first, while the directory with its log still exists.
        defer {
            // SIGTERM ends haproxy at once; SIGKILL if it has not ended within 10 s.
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            for _ in 0..<100 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        func state() -> String {
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            let through = "primary port: \(Self.reached(primaryPort, members) ?? "nil"), replica port: \(Self.reached(replicaPort, members) ?? "nil")"
            return "haproxy \(process.isRunning ? "running" : "exited"): \(Self.stats(statsPort))\n\(through)\n--- haproxy.log ---\n\(text.suffix(3000))"
        }

        // Until the checks have run, both members are up in both pools.
        #expect(await TestSupport.waitUntil(timeout: 30) {
            Self.allReach(primaryPort, "pg0 f", members) && Self.allReach(replicaPort, "pg1 t", members)
        }, "\(state())")
        #expect(Self.sql(through: primaryPort, "CREATE TABLE t AS SELECT 1 AS i") != nil, "\(state())")

        let switchover = await pg0.send("POST", "/switchover", "{\"leader\": \"pg0\", \"candidate\": \"pg1\"}")
        #expect(switchover == (200, "Successfully switched over to \"pg1\""), "\(switchover)\n\(cluster.logs())")
        let switched = Date()
        // The new primary needs 2 good checks (rise 2), the old one 3 bad (fall 3), inter 3s.
        let followed = await TestSupport.waitUntil(timeout: 30) {
            Self.allReach(primaryPort, "pg1 f", members) && Self.allReach(replicaPort, "pg0 t", members)
        }
        #expect(followed, "\(state())\n\(cluster.logs())")
        if followed { print("haproxy recipe: both ports followed the switchover after \(Int(Date().timeIntervalSince(switched))) s") }
        #expect(Self.sql(through: primaryPort, "INSERT INTO t VALUES (2)") != nil, "\(state())")
        #expect(await TestSupport.waitUntil(timeout: 20) { Self.sql(through: replicaPort, "SELECT count(*) FROM t") == "2" },
                "\(state())")
    }
}
