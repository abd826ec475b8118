import Foundation
import StorkConfig
import StorkPostgres
import StorkTestSupport
import Testing

/// Real PostgreSQL 15 servers: a primary bootstrapped by initdb, then a replica built by
/// pg_basebackup with the replication user's password going through pgpass only.
@Suite("PostgreSQL cluster", .serialized)
struct ClusterTests {
    static let initdbOptions = JSONValue.array([
        .string("data-checksums"), .object(["encoding": .string("UTF8")]), .object(["locale": .string("C")]),
        .object(["auth-host": .string("scram-sha-256")]), .object(["auth-local": .string("trust")]),
    ])

    /// initdb, configuration, start, roles: a primary ready for replicas.
    static func startPrimary(_ t: TestNode) async throws {
        try await t.node.initdb(options: initdbOptions)
        try t.node.writeConfiguration(parameters: t.parameters, hba: TestNode.hba, role: .primary)
        try await t.node.start(timeout: 30)
        try await t.node.createRoles(users: ["app": BootstrapUser(password: Secrets.app, options: ["createdb"])])
    }

    @Test(.timeLimit(.minutes(2))) func primaryLifecycle() async throws {
        let recorder = LogRecorder()
        let t = TestNode(name: "primary", recorder: recorder)
        do {
            #expect(!t.node.isRunning())
            try await Self.startPrimary(t)
            #expect(t.node.isRunning())
            #expect(FileManager.default.fileExists(atPath: t.node.serverLogPath))
            #expect(t.node.serverLogPath == t.node.settings.dataDir + ".log")

            let state = try await t.node.serverState()
            #expect(!state.inRecovery)
            #expect(state.timeline == 1)
            #expect(state.serverVersion >= 150000 && state.serverVersion < 160000)
            #expect(state.walPosition > 0)
            #expect(!state.streaming)
            #expect(state.receiveLSN == nil)

            let control = try await t.node.controlData()
            #expect(control.clusterState == "in production")
            #expect(control.timeline == 1)

            // Roles: the superuser's password works over TCP (scram), the others exist as asked.
            let connection = try await t.node.localConnection()
            // The agent's own queries give up after Patroni's 2 s; long work asks for none.
            #expect(try await connection.query("SHOW statement_timeout") == [["2s"]])
            let unbounded = try await t.node.localConnection(statementTimeout: 0)
            #expect(try await unbounded.query("SHOW statement_timeout") == [["0"]])
            await unbounded.close()
            let roles = try await connection.query("""
                SELECT rolname, rolsuper, rolreplication, rolcreatedb, rolcanlogin, left(rolpassword, 13)
                FROM pg_authid WHERE rolname = ANY($1) ORDER BY rolname
                """, params: ["{app,postgres,replicator}"])
            #expect(roles == [
                ["app", "f", "f", "t", "t", "SCRAM-SHA-256"],
                ["postgres", "t", "t", "t", "t", "SCRAM-SHA-256"],
                ["replicator", "f", "t", "f", "t", "SCRAM-SHA-256"],
            ])
            // createRoles again: the roles exist now, so they are altered, not created.
            try await t.node.createRoles(users: ["app": BootstrapUser(password: Secrets.app, options: ["nologin"])])
            #expect(try await connection.query("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app'") == [["f"]])

            // Errors carry SQLSTATE and message; parameters are not in the text.
            do {
                try await connection.query("SELECT * FROM no_such_table WHERE x = $1", params: ["secret-param"])
                Issue.record("expected an error")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42P01")
                #expect(error.message == "ERROR 42P01: relation \"no_such_table\" does not exist")
                #expect(!error.description.contains("secret-param"))
            }
            #expect(try await connection.query("SELECT $1::text, $2::text", params: [nil, "x"]) == [[nil, "x"]])
            await connection.close()

            // post_bootstrap: one argument (the conninfo, no password), PGPASSFILE and PGOPTIONS set.
            let psql = t.node.binary("psql")
            try writeScript(t.directory + "/post.sh", """
                #!/bin/sh
                echo "args=$#" > \(t.directory)/post.out
                echo "conn=$1" >> \(t.directory)/post.out
                echo "pgpassfile=$PGPASSFILE" >> \(t.directory)/post.out
                \(psql) "$1" -XAt -v ON_ERROR_STOP=1 -c "CREATE TABLE made_by_post_bootstrap (x int)" -c "SHOW synchronous_commit" -c "SELECT current_user" >> \(t.directory)/post.out
                """)
            try await t.node.runPostBootstrap("'\(t.directory)/post.sh'")
            let port = t.node.settings.port
            #expect(try String(contentsOfFile: t.directory + "/post.out", encoding: .utf8) == """
                args=1
                conn=host=127.0.0.1 port=\(port) user=postgres dbname=postgres
                pgpassfile=\(t.node.settings.pgpass)
                CREATE TABLE
                local
                postgres

                """)

            do {
                try await t.node.runPostBootstrap("/bin/sh -c 'echo \"it broke: $0\"; exit 7'")
                Issue.record("expected post_bootstrap to fail")
            } catch let error as PostgresError {
                #expect(error.exitStatus == 7)
                #expect(error.message.contains("exit status 7"))
                #expect(error.message.contains("it broke: host=127.0.0.1"))
            }
            await #expect(throws: PostgresError.self) { try await t.node.runPostBootstrap("/nonexistent/script --x") }
            await #expect(throws: PostgresError.self) { try await t.node.runPostBootstrap("'unterminated") }

            try await t.node.stop(timeout: 30)
            #expect(!t.node.isRunning())
            #expect(try await t.node.controlData().clusterState == "shut down")
            try await t.node.stop(timeout: 30)  // stopping a stopped server is fine
            await #expect(throws: PostgresError.self) { try await t.node.serverState() }
        } catch {
            Issue.record(error)
        }
        for secret in [Secrets.superuser, Secrets.replication, Secrets.app] {
            #expect(!recorder.all.contains(secret))
            #expect(!((try? String(contentsOfFile: t.node.serverLogPath, encoding: .utf8)) ?? "").contains(secret))
        }
        await t.cleanUp()
    }

    @Test(.timeLimit(.minutes(2))) func replicaFromBasebackup() async throws {
        let recorder = LogRecorder()
        let primary = TestNode(name: "primary", recorder: recorder)
        let replica = TestNode(name: "replica1", recorder: recorder)
        let intruder = TestNode(name: "intruder", recorder: recorder, replicationPassword: "WrongSecret-123")
        do {
            try await Self.startPrimary(primary)

            // A wrong replication password fails with pg_basebackup's reason and exit status.
            do {
                try await intruder.node.basebackup(from: intruder.node.replicationConninfo(toConnURL: primary.node.connURL), options: nil)
                Issue.record("expected the basebackup to fail")
            } catch let error as PostgresError {
                #expect(error.exitStatus == 1)
                #expect(error.message.hasPrefix("pg_basebackup failed with exit status 1"))
                #expect(error.message.contains("password authentication failed for user \"replicator\""))
                #expect(!error.message.contains("WrongSecret-123"))
            }

            // Refused basebackup options.
            await #expect(throws: PostgresError.self) {
                try await replica.node.basebackup(from: "host=127.0.0.1", options: .array([.object(["wal-method": .string("fetch")])]))
            }

            let conninfo = replica.node.replicationConninfo(toConnURL: primary.node.connURL)
            #expect(conninfo == "host=127.0.0.1 port=\(primary.node.settings.port) user=replicator dbname=postgres application_name=replica1")
            try await replica.node.basebackup(from: conninfo, options: .object(["max-rate": .string("100M"), "verbose": .bool(true)]))
            #expect(replica.node.dataDirectoryState() == .initialized)
            let pgpass = try String(contentsOfFile: replica.node.settings.pgpass, encoding: .utf8)
            #expect(pgpass.contains("127.0.0.1:\(primary.node.settings.port):*:replicator:rep\\:pass 1\n"))
            #expect(ownerAndMode(replica.node.settings.pgpass).map { "\($0.owner) \($0.mode)" } == "postgres \(0o600)")

            try replica.node.writeConfiguration(parameters: replica.parameters, hba: TestNode.hba, role: .replica(primaryConninfo: conninfo))
            let conf = try String(contentsOfFile: replica.node.settings.dataDir + "/postgresql.conf", encoding: .utf8)
            #expect(conf.contains("primary_conninfo = '\(conninfo) passfile=\(replica.node.settings.pgpass)'"))
            #expect(!conf.contains(Secrets.replication))
            try await replica.node.start(timeout: 30)

            let streaming = try await TestSupport.waitUntil(timeout: 30) { try await replica.node.serverState().streaming }
            #expect(streaming)
            let state = try await replica.node.serverState()
            #expect(state.inRecovery)
            #expect(state.timeline == 1)
            #expect(state.receiveLSN != nil && state.replayLSN != nil)
            #expect(state.walPosition == max(state.receiveLSN ?? 0, state.replayLSN ?? 0))

            let connection = try await primary.node.localConnection()
            #expect(try await connection.query("SELECT application_name, state FROM pg_stat_replication") == [["replica1", "streaming"]])
            await connection.close()

            let primaryControl = try await primary.node.controlData()
            let replicaControl = try await replica.node.controlData()
            #expect(primaryControl.systemIdentifier == replicaControl.systemIdentifier)
            #expect(replicaControl.clusterState == "in archive recovery")

            // Promotion: the replica becomes a primary on timeline 2.
            try await primary.node.stop(timeout: 30)
            try await replica.node.promote()
            let promoted = try await TestSupport.waitUntil(timeout: 30) {
                let s = try await replica.node.serverState()
                return !s.inRecovery && s.timeline == 2
            }
            #expect(promoted)

            try await replica.node.stop(mode: "fast", timeout: 30)
            #expect(!replica.node.isRunning())
            try replica.node.wipeDataDirectory()
            #expect(replica.node.dataDirectoryState() == .empty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: replica.node.settings.dataDir).isEmpty)
            #expect(ownerAndMode(replica.node.settings.dataDir).map { "\($0.owner) \($0.mode)" } == "postgres \(0o700)")
        } catch {
            Issue.record(error)
        }
        for secret in [Secrets.superuser, Secrets.replication, Secrets.app] {
            #expect(!recorder.all.contains(secret))
        }
        await replica.cleanUp()
        await primary.cleanUp()
        await intruder.cleanUp()
    }
}
