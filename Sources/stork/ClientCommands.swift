// The commands that read the cluster and print an answer: check, list, reinit, explain, resume.
import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import StorkAPI
import StorkArchive
import StorkConfig
import StorkDCS
import StorkHA
import StorkMethods
import StorkPostgres
import StorkSpool

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a configuration and print it as Stork understands it, passwords masked.",
        discussion: "Exit status 0 when valid; 2 with one line per problem, each naming the key, when not.")

    @Argument(help: "Patroni YAML configuration file.")
    var configFile: String?

    func run() async throws {
        let loaded = try loadConfigOrExit(configFile)
        for warning in loaded.warnings { print("# warning: \(warning)") }
        // A warning, not an error: the file may be checked on another host than its own.
        let node = PostgresNode(settings: loaded.config.postgresql, memberName: loaded.config.name, logger: Logger(label: "stork"))
        do { try node.checkBinariesFitDataDirectory() } catch { print("# warning: \(error); stork agent refuses to start so") }
        for key in loaded.config.unimplementedKeys { print("# not implemented yet, ignored: \(key)") }
        print(loaded.config.renderMasked(), terminator: "")
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the cluster's members as the DCS shows them (like `patronictl list`).")

    @Argument(help: "Patroni YAML configuration file (or PATRONI_* variables).")
    var configFile: String?

    func run() async throws {
        let config = try loadConfigQuietly(configFile)
        let dcs = makeDCS(config: config, logger: Logger(label: "stork"))
        do {
            let view = try await dcs.clusterView()
            print(ClusterTable.render(scope: config.scope, view: view), terminator: "")
        } catch {
            fail("list", "cannot read the cluster from the DCS: \(error)")
        }
    }
}

struct ReinitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reinit",
        abstract: "Rebuild a replica through its REST API (like `patronictl reinit CLUSTER MEMBER`).",
        discussion: """
            Sends POST /reinitialize to the member's api_url (from its member key), with the client \
            settings of the ctl section (cacert, certfile, keyfile, keyfile_password, insecure) and \
            basic authentication from ctl.authentication, else restapi.authentication. The member \
            stops PostgreSQL, moves its data directory aside, clones anew, and removes the old \
            directory once the new one is complete.

            Exit status: 0 when the member started (or with --wait, finished) the rebuild; 1 when it \
            refused (the text says why) or cannot be reached; 2 for a bad configuration.
            """)

    @Argument(help: "Patroni YAML configuration file (or PATRONI_* variables).")
    var configFile: String?

    @Argument(help: "patronictl's form: the cluster (must be this configuration's scope), then the member.")
    var clusterAndMember: [String] = []

    @Option(help: "The member to rebuild (default: this configuration's name).")
    var member: String?

    @Flag(help: "Clone from the leader even when a member is tagged clonefrom.")
    var fromLeader = false

    @Flag(help: "Cancel a task the member is running (a clone that hangs, say).")
    var force = false

    @Flag(help: "Wait until the member runs again, printing its state changes.")
    var wait = false

    func run() async throws {
        let config = try loadConfigQuietly(configFile)
        if clusterAndMember.count > 2 { fail("expected at most CLUSTER MEMBER after CONFIG") }
        if let cluster = clusterAndMember.first, cluster != config.scope {
            fail("cluster \(cluster) is not this configuration's scope (\(config.scope))")
        }
        let name = member ?? clusterAndMember.dropFirst().first ?? config.name
        let dcs = makeDCS(config: config, logger: Logger(label: "stork"))
        let view: ClusterView
        do { view = try await dcs.clusterView() } catch {
            fail("cannot read the cluster from the DCS: \(error)")
        }
        guard let target = view.member(named: name), let apiURL = target.apiURL, let base = apiURL.range(of: "/patroni") else {
            fail("member \(name) is not in cluster \(config.scope) (or its member key has no api_url)")
        }
        let root = String(apiURL[..<base.lowerBound])
        let client = MemberAPIClient(config: config)
        let body: JSONValue = .object(["force": .bool(force), "from_leader": .bool(fromLeader)])
        do {
            let answer = try await client.request("POST", url: root + "/reinitialize", json: body)
            guard answer.status == 200 else {
                fail("\(name) refused: \(answer.text) (HTTP \(answer.status))")
            }
            print("Success: reinitialize for member \(name)")
            guard wait else { return }
            var last = ""
            while true {
                try await Task.sleep(nanoseconds: 1_000_000_000)
                guard let doc = try? await client.request("GET", url: apiURL),
                      case .object(let map)? = JSONValue.parse(json: Data(doc.text.utf8)) else { continue }
                let state = map["state"]?.scalarText ?? "?"
                if state != last { print("\(name): \(state)"); last = state }
                if state == "running" && map["task"] == nil { return }
                if state.hasSuffix("failed") { fail("\(name): \(state)") }
            }
        } catch let error as DCSError {
            fail((error.configurationKey.map { "\($0): " } ?? "") + error.message)
        }
    }

    func fail(_ message: String) -> Never { stork.fail("reinit", message) }
}

struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Show which replica methods would build this member now, and how, without doing anything.",
        discussion: """
            Reads the live cluster from the DCS and prints the copy source the agent would choose, \
            then each method of create_replica_methods in order: its attempts and timeout, where it \
            builds, and its command line with passwords masked, or why it would be skipped.

            Exit status: 0; 1 when the DCS cannot be read; 2 for a bad configuration.
            """)

    @Argument(help: "Patroni YAML configuration file (or PATRONI_* variables).")
    var configFile: String?

    func run() async throws {
        let config = try loadConfigQuietly(configFile)
        let logger = Logger(label: "stork")
        let view: ClusterView
        do { view = try await makeDCS(config: config, logger: logger).clusterView() } catch {
            fail("explain", "cannot read the cluster from the DCS: \(error)")
        }
        let node = PostgresNode(settings: config.postgresql, memberName: config.name, logger: logger)
        let state: String
        switch node.dataDirectoryState() {
        case .empty: state = "empty: the agent would build a replica"
        case .initialized: state = "holds a data directory: the agent builds a replica only on reinitialize"
        case .unusable(let reason): state = "unusable (\(reason)): the agent would not touch it"
        }
        print("member \(config.name) of cluster \(config.scope); data directory \(config.postgresql.dataDir) \(state)")
        let source = cloneSource(me: config.name, cluster: view)?.name
        print(ChainExplanation.render(replicaBuildRequest(config: config, view: view, node: node, source: source), node: node),
              terminator: "")
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "End a recovery paused at its target (recovery_target_action: pause) so the server promotes.",
        discussion: """
            For a custom bootstrap whose recovery_conf pauses at the recovery target: once you have \
            checked the restored data, this calls pg_wal_replay_resume() on this member's PostgreSQL \
            (as the superuser of the configuration, over the local socket or listen address); \
            recovery ends, the server promotes and the agent finishes the bootstrap.

            Exit status: 0 when recovery was paused and resumes; 1 when the server cannot be reached \
            or is not paused; 2 for a bad configuration.
            """)

    @Argument(help: "Patroni YAML configuration file (or PATRONI_* variables).")
    var configFile: String?

    func run() async throws {
        let config = try loadConfigQuietly(configFile)
        let node = PostgresNode(settings: config.postgresql, memberName: config.name, logger: Logger(label: "stork"))
        func fail(_ message: String) -> Never { stork.fail("resume", message) }
        let row: [String?]
        do {
            row = try await node.localQuery("""
                SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,
                       pg_last_wal_replay_lsn()::text
                """)
        } catch { fail("cannot reach PostgreSQL of \(config.name): \(error)") }
        guard row.first == "t" else { fail("PostgreSQL of \(config.name) is not in recovery: nothing to resume") }
        guard (row.count > 1 ? row[1] : nil) == "paused" else { fail("recovery of \(config.name) is not paused: nothing to resume") }
        do { _ = try await node.localQuery("SELECT pg_wal_replay_resume()") } catch { fail("pg_wal_replay_resume() failed: \(error)") }
        print("recovery of \(config.name) resumes from \((row.count > 2 ? row[2] : nil) ?? "?"): at its target, the server promotes")
    }
}
