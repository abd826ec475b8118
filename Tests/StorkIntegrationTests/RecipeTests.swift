import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkTestSupport

/// A recipe's folder in the repository.
func recipeDirectory(_ name: String) -> String { repositoryRoot + "/Recipes/" + name }

/// The recipe's `bootstrap` section without what the test harness sets itself (`dcs`,
/// `pg_hba`, `initdb`), with `change` applied to the method section: YAML lines for `bootstrapYAML`.
func recipeBootstrap(_ name: String, change: (inout [String: JSONValue]) -> Void = { _ in }) throws -> String {
    let text = try String(contentsOfFile: recipeDirectory(name) + "/stork.yml", encoding: .utf8)
    guard case .object(let root) = try ConfigLoader.yamlValue(text), case .object(var bootstrap)? = root["bootstrap"] else {
        throw TestFailure("Recipes/\(name)/stork.yml has no bootstrap section")
    }
    bootstrap["dcs"] = nil
    bootstrap["pg_hba"] = nil
    bootstrap["initdb"] = nil
    if let method = bootstrap["method"]?.scalarText, case .object(var section)? = bootstrap[method] {
        change(&section)
        bootstrap[method] = .object(section)
    }
    // JSON is YAML: one flow value per key.
    return bootstrap.keys.sorted().map { "\($0): \(bootstrap[$0]!.jsonString())" }.joined(separator: "\n")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("Recipes/, each run end to end", .serialized)
struct RecipeTests {
    /// clone-running-cluster: the new cluster's primary holds the other cluster's data.
    @Test(.timeLimit(.minutes(3)))
    func cloneRunningCluster() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "reports", dcs: .local(dcsDir))
        let source = try ArchivingServer(root: cluster.root + "/main")
        defer { cluster.destroy(); source.stop(); TestSupport.removeTree(dcsDir) }
        try await source.start()
        #expect(source.sql("CREATE TABLE sales AS SELECT g AS id FROM generate_series(1, 1000) g") != nil)
        let bootstrap = try recipeBootstrap("clone-running-cluster") { section in
            section["command"] = .string(recipeDirectory("clone-running-cluster") + "/clone-cluster.sh")
            section["source"] = .string("host=127.0.0.1 port=\(source.port) user=postgres dbname=postgres")
            section["pgpass"] = nil  // the test's other cluster trusts loopback
            section["bindir"] = .string(TestSupport.pgBinDir)
        }
        let pg0 = cluster.addMember("pg0", bootstrapYAML: bootstrap)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        #expect(pg0.sql("SELECT count(*) FROM sales") == "1000")
        #expect(pg0.sql("SELECT pg_is_in_recovery()") == "f")
        #expect(pg0.log.contains("running custom bootstrap script: \(recipeDirectory("clone-running-cluster"))/clone-cluster.sh --scope=reports --datadir="), "\(pg0.log)")
        let pg1 = cluster.addMember("pg1")
        try pg1.start()
        #expect(await cluster.waitAllStreaming(timeout: 60), "\(cluster.logs())")
        #expect(pg1.sql("SELECT count(*) FROM sales") == "1000")
    }

    /// schema-and-users: the roles log in with their passwords and own what the schema made.
    @Test(.timeLimit(.minutes(3)))
    func schemaAndUsers() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "shop", dcs: .local(dcsDir))
        defer { cluster.destroy(); TestSupport.removeTree(dcsDir) }
        var bootstrap = try recipeBootstrap("schema-and-users")
        bootstrap = bootstrap.replacingOccurrences(of: "\"/etc/stork/load-schema.sh\"", with: "\"\(recipeDirectory("schema-and-users"))/load-schema.sh\"")
        let pg0 = cluster.addMember("pg0", bootstrapYAML: bootstrap)
        try pg0.start(environment: ["STORK_SCHEMA_FILE": recipeDirectory("schema-and-users") + "/schema.sql"])
        #expect(await TestSupport.waitUntil(timeout: 60) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        let psql = TestSupport.pgBinDir + "/psql"
        func asUser(_ user: String, _ password: String, _ query: String) throws -> (status: Int32, output: String) {
            try runAsPostgres(psql, ["-h", "127.0.0.1", "-p", String(pg0.pgPort), "-U", user, "-d", "shop", "-XAtc", query],
                              env: ["PGPASSWORD": password])
        }
        let owner = try asUser("shop_owner", "change-me-owner", "INSERT INTO customers (name) VALUES ('ada') RETURNING id")
        #expect(owner.status == 0 && owner.output.hasPrefix("1"), "\(owner.output)")
        let reader = try asUser("shop_reader", "change-me-reader", "SELECT name FROM customers")
        #expect(reader.status == 0 && reader.output.hasPrefix("ada"), "\(reader.output)")
        let denied = try asUser("shop_reader", "change-me-reader", "INSERT INTO customers (name) VALUES ('eve')")
        #expect(denied.status != 0 && denied.output.contains("permission denied"), "\(denied.output)")
        let wrong = try asUser("shop_reader", "wrong", "SELECT 1")
        #expect(wrong.status != 0, "a wrong password must not log in")
    }

    /// pitr-from-pgbackrest: a real pgBackRest repository of another cluster, a `--type=time`
    /// restore with pgBackRest's own recovery settings kept: the new cluster has the row
    /// written before the target, not the one after, and is on a new timeline.
    @Test(.timeLimit(.minutes(4)))
    func pointInTimeFromPgBackRest() async throws {
        let dcsDir = TestSupport.makeTempDir("stork-dcs")
        let cluster = TestCluster(scope: "audit", dcs: .local(dcsDir))
        let root = cluster.root + "/main"
        let conf = cluster.root + "/pgbackrest.conf"
        let source = try ArchivingServer(root: root, archiveCommand: "pgbackrest --config=\(conf) --stanza=main archive-push %p")
        defer { cluster.destroy(); source.stop(); TestSupport.removeTree(dcsDir) }
        try """
            [global]
            repo1-path=\(root)/repo
            log-path=\(root)/pgbackrest-log
            lock-path=\(root)/pgbackrest-lock
            log-level-console=warn
            start-fast=y

            [main]
            pg1-path=\(source.dataDir)
            pg1-port=\(source.port)
            pg1-socket-path=\(root)
            """.write(toFile: conf, atomically: true, encoding: .utf8)
        TestSupport.chownToPostgres(conf)
        try await source.start()
        func pgbackrest(_ args: [String]) throws {
            let r = try runAsPostgres("/usr/bin/pgbackrest", ["--config=\(conf)", "--stanza=main"] + args)
            try #require(r.status == 0, "pgbackrest \(args): \(r.output)")
        }
        try pgbackrest(["stanza-create"])
        #expect(source.sql("CREATE TABLE t (v text)") != nil)
        try pgbackrest(["backup", "--type=full"])
        #expect(source.sql("INSERT INTO t VALUES ('first')") != nil)
        try await Task.sleep(for: .seconds(1.1))
        let target = try #require(source.sql("SELECT now()"))
        try await Task.sleep(for: .seconds(1.1))
        #expect(source.sql("INSERT INTO t VALUES ('second')") != nil)
        let last = try #require(source.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        #expect(await TestSupport.waitUntil(timeout: 30) { source.sql("SELECT last_archived_wal >= '\(last)' FROM pg_stat_archiver") == "t" })

        let dataDir = cluster.root + "/pg0/data"
        let bootstrap = try recipeBootstrap("pitr-from-pgbackrest") { section in
            let command = section["command"]?.scalarText ?? ""
            section["command"] = .string(command
                .replacingOccurrences(of: "pgbackrest --stanza=main", with: "pgbackrest --config=\(conf) --stanza=main")
                .replacingOccurrences(of: "/var/lib/postgresql/15/audit", with: dataDir)
                .replacingOccurrences(of: "2026-11-27 09:59:00+00", with: target))
        }
        let pg0 = cluster.addMember("pg0", bootstrapYAML: bootstrap)
        try #require(pg0.dataDir == dataDir)
        try pg0.start()
        #expect(await TestSupport.waitUntil(timeout: 90) { pg0.log.contains("initialized a new cluster") }, "\(pg0.log)")
        #expect(pg0.sql("SELECT string_agg(v, ',') FROM t") == "first")
        let walFile = pg0.sql("SELECT pg_walfile_name(pg_current_wal_lsn())") ?? ""
        #expect(walFile.count == 24 && !walFile.hasPrefix("00000001"), "still on timeline 1: \(walFile)")
        // pgBackRest's own settings were used (kept), not Stork's.
        let auto = (try? String(contentsOfFile: dataDir + "/postgresql.auto.conf", encoding: .utf8)) ?? ""
        #expect(auto.contains("archive-get"), "\(auto)")
        #expect(pg0.log.contains("recovery has ended"), "\(pg0.log)")
    }
}
