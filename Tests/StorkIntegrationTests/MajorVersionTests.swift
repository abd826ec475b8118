import Foundation
import Testing
import StorkTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL 15's binaries (Debian's) and 18's (scripts/test installs them and names them in
/// `STORK_PG15_BINDIR` and `STORK_PG18_BINDIR`): a test that needs both fails when one is missing.
func bothMajorsBinDirs() throws -> (v15: String, v18: String) {
    let v15 = ProcessInfo.processInfo.environment["STORK_PG15_BINDIR"] ?? "/usr/lib/postgresql/15/bin"
    let v18 = ProcessInfo.processInfo.environment["STORK_PG18_BINDIR"] ?? ""
    try #require(FileManager.default.isExecutableFile(atPath: v15 + "/postgres"), "PostgreSQL 15 is not installed at \(v15)")
    try #require(!v18.isEmpty && FileManager.default.isExecutableFile(atPath: v18 + "/postgres"),
                 "PostgreSQL 18 is not installed: STORK_PG18_BINDIR (set by scripts/test) names no bin directory")
    return (v15, v18)
}

/// Every file under `directory` with its size and modification time, to tell that nothing changed.
func treeSnapshot(_ directory: String) -> [String: String] {
    var out: [String: String] = [:]
    guard let walker = FileManager.default.enumerator(atPath: directory) else { return out }
    for case let path as String in walker {
        var st = stat()
        guard lstat(directory + "/" + path, &st) == 0 else { continue }
        out[path] = "\(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }
    return out
}

@Suite("PostgreSQL majors: binaries that do not fit the data directory", .serialized)
struct MajorVersionTests {
    /// `bin_dir` without a `postgres` program, and a data directory of one major with the
    /// binaries of another (both ways): the agent exits 2 with one line naming what is wrong
    /// (both majors for a mismatch), and nothing is started, moved or removed. Before: without
    /// binaries it made the data directory and exited 1 on a failed initdb; with 18's binaries
    /// on a 15 directory it wrote standby.signal and postgresql.base.conf into it and went on
    /// running; with 15's on an 18 directory it tried to start it and exited 1 in two lines.
    @Test(.timeLimit(.minutes(3)))
    func theAgentRefusesBinariesThatDoNotFit() async throws {
        let (v15, v18) = try bothMajorsBinDirs()
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        let empty = cluster.root + "/no-binaries"
        mkdir(empty, 0o755)

        let cases: [(name: String, binDir: String, madeBy: String?, wants: [String])] = [
            ("nobin", empty, nil, ["no PostgreSQL server program at \(empty)/postgres"]),
            ("old15", v18, v15, ["holds a PostgreSQL 15 cluster", "are PostgreSQL 18", "point postgresql.bin_dir at PostgreSQL 15's"]),
            ("new18", v15, v18, ["holds a PostgreSQL 18 cluster", "are PostgreSQL 15", "point postgresql.bin_dir at PostgreSQL 18's"]),
        ]
        for c in cases {
            let m = cluster.addMember(c.name, postgresqlYAML: "bin_dir: \(c.binDir)")
            if let madeBy = c.madeBy {
                let initdb = try runAsPostgres(madeBy + "/initdb", ["-D", m.dataDir, "-U", "postgres", "-A", "trust"])
                try #require(initdb.status == 0, "\(initdb.output)")
            }
            let before = treeSnapshot(m.base)
            try m.start()
            let status = await m.waitForExit(timeout: 20)
            if status == nil { m.crash(); m.stopPostgresIfRunning() }
            #expect(status == 2, "\(c.name): exit status \(status.map(String.init) ?? "none: still running after 20 s")\n\(m.log)")
            let critical = m.log.split(separator: "\n").filter { $0.contains("CRITICAL") }
            #expect(critical.count == 1, "\(c.name): \(m.log)")
            for want in c.wants {
                #expect(critical.first?.contains(want) == true, "\(c.name): no '\(want)' in\n\(m.log)")
            }
            var after = treeSnapshot(m.base)
            after["agent.log"] = before["agent.log"]
            // The agent lock beside the data directory is the agent's own file.
            after = after.filter { !$0.key.hasPrefix(".data.stork-agent.lock") }
            #expect(after == before.filter { !$0.key.hasPrefix(".data.stork-agent.lock") },
                    "\(c.name): files changed: \(Set(after.keys).symmetricDifference(before.keys).sorted())")
            #expect(!FileManager.default.fileExists(atPath: m.dataDir + "/postmaster.pid"), "\(c.name): a server was started")
        }
    }

    /// A member whose binaries are of another major than the leader's (15 beside an 18 leader
    /// in the 18 run, 18 beside a 15 leader in the 15 run): its clone is refused before any
    /// method runs, in one line naming both; its data directory stays empty and nothing is
    /// staged. Before: 18's pg_basebackup copied the 15 leader whole, every cycle, and the copy
    /// failed its check ("pg_verifybackup: error: WAL parsing failed"); 15's refused the 18
    /// leader ("incompatible server version"), as if the copy had broken.
    @Test(.timeLimit(.minutes(3)))
    func aReplicaIsNotCopiedFromAnotherMajor() async throws {
        let (v15, v18) = try bothMajorsBinDirs()
        let other = TestSupport.pgMajor == 18 ? (dir: v15, major: 15) : (dir: v18, major: 18)
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "majors", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        let pg0 = try await cluster.startPrimary("pg0")
        let pg1 = cluster.addMember("pg1", postgresqlYAML: "bin_dir: \(other.dir)")
        try pg1.start()
        let refusal = "pg0 runs PostgreSQL \(TestSupport.pgMajor) and this member's binaries (\(other.dir)/postgres) are PostgreSQL \(other.major)"
        #expect(await TestSupport.waitUntil(timeout: 30) { pg1.log.contains(refusal) }, "\(pg1.log)")
        try await Task.sleep(for: .seconds(2))
        let line = pg1.log.split(separator: "\n").first { $0.contains(refusal) }.map(String.init) ?? ""
        #expect(line.contains("ERROR: cannot bootstrap from leader 'pg0': "), "\(line)")
        #expect(!pg1.log.contains("creating replica using method"), "\(pg1.log)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: pg1.dataDir)) ?? []).isEmpty, "pg1's data directory is not empty")
        #expect(!FileManager.default.fileExists(atPath: pg1.dataDir + ".stork-staging"), "a copy was staged")
        #expect(await pg0.api("/primary").0 == 200)
    }

    /// initdb without data checksums (18 turns them on by default; `no-data-checksums` passes
    /// through there, and 15 has them off without a word): the primary and its replica both run
    /// without, and the replica's copy is checked and streams.
    @Test(.timeLimit(.minutes(3)))
    func aClusterWithoutChecksums() async throws {
        let etcd = try await EtcdServer.startSingle()
        defer { etcd.destroy() }
        let cluster = TestCluster(scope: "nosums", dcs: .etcd([etcd.clientURL]))
        defer { cluster.destroy() }
        for name in ["pg0", "pg1"] {
            let m = cluster.addMember(name)
            let yaml = try String(contentsOfFile: m.configPath, encoding: .utf8)
            let initdb = TestSupport.pgMajor >= 18 ? "  - no-data-checksums\n" : ""
            try #require(yaml.contains("  - data-checksums\n"))
            try yaml.replacingOccurrences(of: "  - data-checksums\n", with: initdb).write(toFile: m.configPath, atomically: true, encoding: .utf8)
            try m.start()
            #expect(await cluster.waitAllStreaming(timeout: 90), "\(cluster.logs())")
        }
        for m in cluster.members {
            #expect(m.sql("SHOW data_checksums") == "off", "\(m.name)")
        }
        #expect(cluster.members[1].log.contains("is checked and in place"), "\(cluster.members[1].log)")
    }
}
