import Foundation
import Logging
import Testing
import StorkConfig
import StorkPostgres
import StorkTestSupport

/// Parameters checked against what the server program knows (`postgres --describe-config`), on
/// the major the tests run on (STORK_TEST_PG_BINDIR): what would keep it from starting is left out.
@Suite("PostgreSQL parameters checked against the major")
struct ParameterCatalogTests {
    @Test func unknownAndUnreadableParametersAreLeftOut() throws {
        var settings = PostgresSettings(listen: "127.0.0.1:1", connectAddress: "127.0.0.1:1", dataDir: "/nonexistent", pgpass: "/tmp/x",
                                        superuser: PostgresUser(username: "postgres", password: nil), replication: PostgresUser(username: "r", password: nil))
        settings.binDir = TestSupport.pgBinDir
        let node = PostgresNode(settings: settings, memberName: "pg0", logger: Logger(label: "t"))
        let catalog = try #require(node.parameterCatalog())
        let major = try node.binariesMajor()
        #expect(catalog.major == major)
        let given: [String: JSONValue] = [
            "wal_keep_segments": .int(8), "foo_bar": .int(1), "work_mem": .string("abc"), "max_connections": .int(10_000_000),
            "shared_buffers": .string("16MB"), "hot_standby": .string("on"), "fsync": .string("maybe"), "pg_stat_statements.max": .int(500),
            "statement_timeout": .string("5s"), "random_page_cost": .double(1.1),
        ]
        let (kept, warnings) = catalog.check(given)
        // 13 and later: wal_keep_size in MB of 16 MB segments.
        #expect(kept["wal_keep_segments"] == nil && kept["wal_keep_size"] == .string("128MB"), "\(kept)")
        #expect(kept["foo_bar"] == nil && kept["work_mem"] == nil && kept["max_connections"] == nil && kept["fsync"] == nil, "\(kept)")
        for name in ["shared_buffers", "hot_standby", "pg_stat_statements.max", "statement_timeout", "random_page_cost"] {
            #expect(kept[name] == given[name], "\(name)")
        }
        #expect(warnings.count == 5, "\(warnings)")
        #expect(warnings.contains("postgresql.parameters: foo_bar is not a parameter of PostgreSQL \(major); left out of postgresql.conf"), "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("postgresql.parameters: max_connections = 10000000: above the maximum") }, "\(warnings)")
        #expect(warnings.contains("postgresql.parameters: wal_keep_segments is not a parameter of PostgreSQL \(major); written as wal_keep_size = 128MB"))
        // 18 knows io_method, 15 does not.
        let io = catalog.check(["io_method": .string("worker")]).kept
        #expect((io["io_method"] != nil) == ((Int(major) ?? 0) >= 18), "io_method on \(major)")
    }
}
