import Foundation
import Testing
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Patroni's own command line, `patronictl` from PyPI, pointed at a Stork cluster: the DCS
/// layout and the REST API are Patroni's, so Patroni's tool must read and drive the cluster.
/// scripts/test installs it (ensure_patroni_venv in scripts/lib.sh) and exports its path as
/// STORK_PATRONICTL.
struct Patronictl {
    let configPath: String
    let workDirectory: String

    /// STORK_PATRONICTL, else patronictl in STORK_PATRONI_VENV, else lib.sh's default venv.
    static var path: String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["STORK_PATRONICTL"], !p.isEmpty { return p }
        if let venv = env["STORK_PATRONI_VENV"], !venv.isEmpty { return venv + "/bin/patronictl" }
        if getuid() == 0 { return "/var/lib/stork/patroni-venv/bin/patronictl" }
        let cache = env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? "/tmp") + "/.cache")
        return cache + "/stork/patroni-venv/bin/patronictl"
    }

    /// Writes a patronictl configuration naming the etcd3 hosts and the scope into `directory`.
    static func requireInstalled() throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw PatronictlError("patronictl is not installed at \(path): run scripts/test, which installs "
                                  + "patroni[etcd3] into a virtualenv (ensure_patroni_venv in scripts/lib.sh, STORK_PATRONICTL)")
        }
    }

    init(cluster: TestCluster, etcd: EtcdServer) throws {
        try Self.requireInstalled()
        workDirectory = cluster.root + "/patronictl"
        mkdir(workDirectory, 0o755)
        configPath = workDirectory + "/patronictl.yml"
        let hosts = etcd.clientURL.replacingOccurrences(of: "http://", with: "")
        try "scope: \(cluster.scope)\netcd3:\n  hosts: \(hosts)\n".write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Runs `patronictl -c CONFIG ARGS...` with no standard input (a prompt fails instead of
    /// waiting), killed by PID after `timeout` seconds; its status and its output (stdout + stderr).
    func run(_ args: [String], timeout: Double = 60) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.path)
        p.arguments = ["-c", configPath] + args
        var env = ProcessInfo.processInfo.environment
        for k in env.keys where k.hasPrefix("PATRONI_") || k.hasPrefix("PATRONICTL_") { env[k] = nil }
        env["HOME"] = workDirectory
        p.environment = env
        p.currentDirectoryURL = URL(fileURLWithPath: workDirectory)
        let outPath = workDirectory + "/output"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        let out = FileHandle(forWritingAtPath: outPath)
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        let timedOut = p.isRunning
        if timedOut { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        try? out?.close()
        let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        return timedOut ? (-1, text + "\n(patronictl killed after \(Int(timeout)) s)") : (p.terminationStatus, text)
    }

    /// `patronictl list SCOPE -f json`: one dictionary per member (keys as patronictl prints them:
    /// Cluster, Member, Host, Role, State, TL, Receive LSN, Receive Lag, Replay LSN, Replay Lag).
    func listJSON(_ scope: String) throws -> [[String: Any]]? {
        let r = try run(["list", scope, "-f", "json"])
        guard r.status == 0 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(r.output.utf8))) as? [[String: Any]]
    }
}

struct PatronictlError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The rows of patronictl's pretty table as dictionaries keyed by the header's cells. The two
/// `Lag` columns become `Receive Lag` and `Replay Lag` (the JSON's names).
func parsePatronictlTable(_ text: String) -> (title: String, rows: [[String: String]]) {
    let lines = text.split(separator: "\n").map(String.init)
    let title = lines.first { $0.hasPrefix("+ Cluster:") } ?? ""
    let cellLines = lines.filter { $0.hasPrefix("|") }
    guard let header = cellLines.first else { return (title, []) }
    func cells(_ line: String) -> [String] {
        line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
            .map { $0.trimmingCharacters(in: .whitespaces) }
    }
    var names = cells(header)
    var lagSeen = 0
    for i in names.indices where names[i] == "Lag" {
        names[i] = lagSeen == 0 ? "Receive Lag" : "Replay Lag"
        lagSeen += 1
    }
    let rows = cellLines.dropFirst().map { line in
        Dictionary(zip(names, cells(line)), uniquingKeysWith: { a, _ in a })
    }
    return (title, rows)
}

/// A three-member Stork cluster on a real etcd, started and streaming; torn down by the caller.
func startPatroniToolsCluster(scope: String) async throws -> (EtcdServer, TestCluster, TestMember) {
    try Patronictl.requireInstalled()
    let etcd = try await EtcdServer.startSingle()
    let cluster = TestCluster(scope: scope, dcs: .etcd([etcd.clientURL]))
    for i in 0..<3 { cluster.addMember("pg\(i)") }
    for m in cluster.members { try m.start() }
    let streaming = await cluster.waitAllStreaming(timeout: 120)
    guard streaming, let primary = await cluster.primaries().first else {
        let logs = cluster.logs()
        cluster.destroy()
        etcd.destroy()
        throw PatronictlError("the cluster did not reach one primary and two streaming replicas\n\(logs)")
    }
    return (etcd, cluster, primary)
}

@Suite("patronictl (Patroni's CLI from PyPI) against a Stork cluster on etcd", .serialized)
struct PatroniToolsTests {
    /// `patronictl list` shows the leader running and two replicas streaming on timeline 1 with
    /// no lag; `patronictl reinit --force --wait` rebuilds a replica through POST /reinitialize,
    /// which streams again afterwards.
    @Test(.timeLimit(.minutes(5)))
    func listAndReinit() async throws {
        let (etcd, cluster, primary) = try await startPatroniToolsCluster(scope: "ctl-list")
        defer { cluster.destroy(); etcd.destroy() }
        let ctl = try Patronictl(cluster: cluster, etcd: etcd)
        let scope = cluster.scope
        let sysid = try #require(primary.sql("SELECT system_identifier FROM pg_control_system()"))
        let replicas = cluster.members.filter { $0 !== primary }

        // Member keys follow the servers within one loop_wait (1 s here).
        var rows: [[String: Any]] = []
        let settled = try await TestSupport.waitUntil(timeout: 20, interval: 0.5) {
            rows = try ctl.listJSON(scope) ?? []
            // The replicas' member keys caught up with the leader's optime too: a clone's last
            // segment switch moves the optime a segment on before their next cycle reports it.
            return rows.count == 3 && rows.filter { $0["State"] as? String == "streaming" }.count == 2
                && rows.contains { $0["Role"] as? String == "Leader" && $0["State"] as? String == "running" }
                && rows.filter { $0["Role"] as? String == "Replica" }.allSatisfy { $0["Receive Lag"] as? Int == 0 && $0["Replay Lag"] as? Int == 0 }
        }
        #expect(settled, "patronictl list -f json: \(rows)\n\((try? ctl.run(["list", scope]))?.output ?? "")\n\(cluster.logs())")

        // The JSON rows, sorted by member name as patronictl sorts them.
        #expect(rows.map { $0["Member"] as? String } == ["pg0", "pg1", "pg2"])
        for row in rows {
            let name = try #require(row["Member"] as? String)
            let member = try #require(cluster.members.first { $0.name == name })
            #expect(row["Cluster"] as? String == scope)
            #expect(row["Host"] as? String == "127.0.0.1:\(member.pgPort)", "\(row)")
            #expect(row["TL"] as? Int == 1, "\(row)")
            if member === primary {
                #expect(row["Role"] as? String == "Leader", "\(row)")
                #expect(row["State"] as? String == "running", "\(row)")
                // patronictl has no LSN or lag for the leader (the JSON leaves empty cells out).
                for column in ["Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"] {
                    #expect((row[column] as? String ?? "") == "", "\(column): \(row)")
                }
            } else {
                #expect(row["Role"] as? String == "Replica", "\(row)")
                #expect(row["State"] as? String == "streaming", "\(row)")
                // Lag in MB against the leader's optime (the DCS `status` key): an idle cluster has none.
                #expect(row["Receive Lag"] as? Int == 0, "receive_lsn in the member key and the leader's optime: \(row)")
                #expect(row["Replay Lag"] as? Int == 0, "replay_lsn in the member key and the leader's optime: \(row)")
                let lsn = try #require(member.sql("SELECT pg_last_wal_replay_lsn()"))
                #expect((row["Replay LSN"] as? String)?.contains("/") == true, "\(row), server at \(lsn)")
                #expect((row["Receive LSN"] as? String)?.contains("/") == true, "\(row)")
            }
        }

        // The pretty table: its title names the scope and the system identifier from `initialize`.
        let pretty = try ctl.run(["list", scope])
        #expect(pretty.status == 0, "\(pretty.output)")
        let table = parsePatronictlTable(pretty.output)
        #expect(table.title.contains("Cluster: \(scope) (\(sysid))"), "\(pretty.output)")
        #expect(table.rows.count == 3, "\(pretty.output)")
        for row in table.rows {
            let isPrimary = row["Member"] == primary.name
            #expect(row["Role"] == (isPrimary ? "Leader" : "Replica"), "\(pretty.output)")
            #expect(row["State"] == (isPrimary ? "running" : "streaming"), "\(pretty.output)")
            #expect(row["TL"] == "1", "\(pretty.output)")
            #expect(row["Receive Lag"] == (isPrimary ? "" : "0") && row["Replay Lag"] == (isPrimary ? "" : "0"), "\(pretty.output)")
        }

        // patronictl reinit: a file that only this replica's data directory has is gone after the
        // rebuild (a new copy from the leader), and the replica streams again.
        let replica = try #require(replicas.sorted { $0.name < $1.name }.first)
        let marker = replica.dataDir + "/only-on-this-replica"
        try runAsPostgres("/usr/bin/touch", [marker])
        #expect(FileManager.default.fileExists(atPath: marker))
        let logBefore = replica.log.count
        let reinit = try ctl.run(["reinit", scope, replica.name, "--force", "--wait"], timeout: 180)
        #expect(reinit.status == 0, "\(reinit.output)\n\(replica.log.suffix(3000))")
        #expect(reinit.output.contains("Success: reinitialize for member \(replica.name)"), "\(reinit.output)")
        let rebuilt = await TestSupport.waitUntil(timeout: 120) {
            String(replica.log.dropFirst(logBefore)).contains("reinitialize: rebuilt from")
        }
        #expect(rebuilt, "the agent did not log the rebuild\n\(replica.log.suffix(3000))")
        #expect(!FileManager.default.fileExists(atPath: marker), "the data directory was not rebuilt")
        // patronictl --wait returns once GET /patroni no longer says `creating replica`.
        #expect(reinit.output.contains("Reinitialize is completed on: \(replica.name)"), "\(reinit.output)")
        #expect(await cluster.waitAllStreaming(timeout: 120), "\(cluster.logs())")
        #expect(replica.sql("SELECT system_identifier FROM pg_control_system()") == sysid)
        #expect(await cluster.primaries().map(\.name) == [primary.name], "the leader stays the leader")

        let again = try await TestSupport.waitUntil(timeout: 20, interval: 0.5) {
            let r = try ctl.listJSON(scope) ?? []
            return r.first { $0["Member"] as? String == replica.name }?["State"] as? String == "streaming"
        }
        #expect(again, "\((try? ctl.run(["list", scope]))?.output ?? "")")
        // reinit of the leader is refused by patronictl itself: the DCS says it is no replica.
        let refused = try ctl.run(["reinit", scope, primary.name, "--force"])
        #expect(refused.status != 0 && !refused.output.contains("Success"), "\(refused.output)")
    }

    /// `patronictl switchover --leader OLD --candidate NEW --force`: NEW becomes the primary
    /// (on a new timeline), OLD follows it, and `patronictl list` says so.
    @Test(.timeLimit(.minutes(5)))
    func switchover() async throws {
        let (etcd, cluster, primary) = try await startPatroniToolsCluster(scope: "ctl-switch")
        defer { cluster.destroy(); etcd.destroy() }
        let ctl = try Patronictl(cluster: cluster, etcd: etcd)
        let scope = cluster.scope
        let candidate = try #require(cluster.members.filter { $0 !== primary }.sorted { $0.name < $1.name }.first)
        #expect(try await TestSupport.waitUntil(timeout: 20, interval: 0.5) {
            (try ctl.listJSON(scope) ?? []).filter { $0["State"] as? String == "streaming" }.count == 2
        }, "\((try? ctl.run(["list", scope]))?.output ?? "")")

        let r = try ctl.run(["switchover", scope, "--leader", primary.name, "--candidate", candidate.name, "--force"],
                            timeout: 120)
        #expect(r.status == 0, "\(r.output)\n\(cluster.logs())")
        // patronictl exits 0 also when the REST call is refused ("Switchover failed, details: ..."):
        // the answer of POST /switchover, as Patroni words it, is what tells.
        #expect(r.output.contains("Successfully switched over to \"\(candidate.name)\""), "\(r.output)")

        let switched = await TestSupport.waitUntil(timeout: 90, interval: 0.5) {
            await cluster.primaries().map(\.name) == [candidate.name]
        }
        #expect(switched, "\(candidate.name) is not the only primary\n\(cluster.logs())")
        #expect(candidate.sql("SELECT NOT pg_is_in_recovery()") == "t")
        #expect(await cluster.waitAllStreaming(timeout: 120), "the old leader and the other replica follow \(candidate.name)\n\(cluster.logs())")
        #expect(primary.sql("SELECT pg_is_in_recovery()") == "t", "the old leader is a replica now")
        #expect(candidate.sql("SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication WHERE state = 'streaming'")
                == cluster.members.filter { $0 !== candidate }.map(\.name).sorted().joined(separator: ","))

        var rows: [[String: Any]] = []
        let listed = try await TestSupport.waitUntil(timeout: 30, interval: 0.5) {
            rows = try ctl.listJSON(scope) ?? []
            return rows.count == 3
                && rows.contains { $0["Member"] as? String == candidate.name && $0["Role"] as? String == "Leader"
                                   && $0["State"] as? String == "running" && $0["TL"] as? Int == 2 }
                && rows.filter { $0["Role"] as? String == "Replica" && $0["State"] as? String == "streaming"
                                 && $0["TL"] as? Int == 2 }.count == 2
        }
        #expect(listed, "\(rows)")
        // The switchover is recorded in the DCS `history` key (patronictl history shows timeline 1).
        let history = try ctl.run(["history", scope, "-f", "json"])
        #expect(history.status == 0 && history.output.contains("\(candidate.name)"), "\(history.output)")
    }
}
