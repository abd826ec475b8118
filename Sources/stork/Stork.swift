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

@main
struct Stork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stork",
        abstract: "Builds PostgreSQL clusters and their replicas; reads Patroni's YAML.",
        version: storkVersion,
        subcommands: [AgentCommand.self, CheckCommand.self, ListCommand.self, ReinitCommand.self, ExplainCommand.self, ResumeCommand.self, WALPushCommand.self, WALFetchCommand.self,
                      BackupCommand.self, RestoreCommand.self])
}

/// Loads the configuration or prints every problem, one line each, and exits with status 2.
/// Certificate/key pairs are loaded too, so a key that does not match is found here.
func loadConfigOrExit(_ path: String?) throws -> LoadedConfig {
    let loaded: LoadedConfig
    do {
        loaded = try ConfigLoader.load(path: path)
    } catch {
        for issue in error.issues { FileHandle.standardError.write(Data("\(issue)\n".utf8)) }
        throw ExitCode(2)
    }
    let pairIssues = TLSIdentity.issues(loaded.config)
    for issue in pairIssues { FileHandle.standardError.write(Data("\(issue)\n".utf8)) }
    if !pairIssues.isEmpty { throw ExitCode(2) }
    return loaded
}

/// The configuration for a command that reads the cluster and prints an answer (`list`,
/// `reinitialize`, `explain`, `resume`): loaded or exit 2, and only errors logged, as the
/// answer is the output.
func loadConfigQuietly(_ path: String?) throws -> Config {
    let config = try loadConfigOrExit(path).config
    StorkLogging.bootstrap(level: "ERROR", json: false)
    return config
}

/// The configuration for a command that works for a while (`agent`, `backup`): loaded or exit
/// 2, logging as its `log` section says, and the loader's warnings logged.
func loadConfigAndLog(_ path: String?) throws -> (LoadedConfig, Logger) {
    let loaded = try loadConfigOrExit(path)
    StorkLogging.bootstrap(level: loaded.config.log.level, json: loaded.config.log.type == "json")
    let logger = Logger(label: "stork")
    for warning in loaded.warnings { logger.warning("\(warning)") }
    return (loaded, logger)
}

/// `stork COMMAND: message` on standard error: one line, as every command reports.
func complain(_ command: String, _ message: String) {
    FileHandle.standardError.write(Data("stork \(command): \(message)\n".utf8))
}

/// ``complain``, then exit with `status`.
func fail(_ command: String, _ message: String, status: Int32 = 1) -> Never {
    complain(command, message)
    Foundation.exit(status)
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the HA agent beside one PostgreSQL instance (like `patroni CONFIG`).",
        discussion: """
            Bootstraps a new cluster (initdb) when the DCS has none, clones this member from the \
            leader with pg_basebackup when its data directory is empty, and keeps PostgreSQL running \
            in its role. Stops PostgreSQL and releases the leader key on SIGTERM or SIGINT; SIGHUP \
            reloads the configuration file (a file that no longer loads keeps the running one). \
            One agent per data directory: a second one exits before touching anything. Without CONFIG, PATRONI_CONFIGURATION or PATRONI_* variables must give the configuration.

            Exit status: 0 after SIGTERM/SIGINT; 1 when another agent runs for the same data \
            directory, the data directory belongs to another cluster, or the bootstrap failed (its data directory is moved aside); 2 for a bad configuration or \
            credentials the DCS refuses (one line per problem, naming the key; nothing started).
            """)

    @Argument(help: "Patroni YAML configuration file.")
    var configFile: String?

    func run() async throws {
        // SIGHUP reloads the configuration (Patroni's systemd unit sends it on reload); until
        // the handler below runs, it must not end the agent either.
        signal(SIGHUP, SIG_IGN)
        let (loaded, logger) = try loadConfigAndLog(configFile)
        let config = loaded.config
        // libpq prefers PGPASSWORD to the pgpass file Stork writes: an inherited one would send
        // the wrong password for every user.
        if ProcessInfo.processInfo.environment["PGPASSWORD"] != nil {
            unsetenv("PGPASSWORD")
            logger.warning("PGPASSWORD is set in the environment; Stork ignores it and takes passwords from postgresql.authentication")
        }
        if geteuid() == 0 {
            logger.critical("stork agent must not run as root: PostgreSQL refuses to. Run it as the PostgreSQL OS user, e.g. `runuser -u postgres -- stork agent FILE`")
            throw ExitCode(1)
        }
        // Before anything that touches PostgreSQL, the DCS or the REST port.
        let lock: AgentLock
        do { lock = try AgentLock(dataDir: config.postgresql.dataDir) } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        defer { withExtendedLifetime(lock) {} }
        let dcs = makeDCS(config: config, logger: logger)
        // A DCS that refuses the configured credentials or certificates will not change its
        // mind: say which key is wrong and start nothing. An unreachable one may come back.
        do {
            _ = try await dcs.clusterView()
        } catch let error as DCSError where error.configurationKey != nil {
            FileHandle.standardError.write(Data("\(error.configurationKey!): \(error.message)\n".utf8))
            throw ExitCode(2)
        } catch {
            logger.warning("DCS not reachable at start: \(error); the agent keeps trying")
        }
        let node = PostgresNode(settings: config.postgresql, memberName: config.name, logger: logger)
        let status = StatusBoard()
        let agent = Agent(config: config, dcs: dcs, node: node, status: status, logger: logger)
        let api: any Service
        do {
            api = try RestAPI.makeApplication(config: config, agent: agent, logger: logger) { port in
                logger.info("REST API listening on \(config.restapi.listen) (port \(port))")
            }
        } catch {
            logger.critical("\(error)")
            throw ExitCode(2)
        }
        var quiet = logger
        quiet.logLevel = .critical
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: AgentService(agent: agent), successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: api, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: ReloadOnHangup(agent: agent, configFile: config.configFile, logger: logger)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: quiet))
        do {
            try await group.run()
        } catch let error as AgentFatalError {
            logger.critical("\(error.message)")
            throw ExitCode(1)
        } catch {
            logger.critical("Stork agent stopped: \(error)")
            throw ExitCode(1)
        }
    }
}

/// The agent as a service: graceful shutdown cancels its loop, and the loop then stops
/// PostgreSQL and releases the leader key.
struct AgentService: Service {
    let agent: Agent
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await agent.run() }
    }
}

/// SIGHUP: the configuration loaded again and handed to the agent; a file that no longer
/// loads is told, one line per problem, and the running configuration stays.
struct ReloadOnHangup: Service {
    let agent: Agent
    let configFile: String?
    let logger: Logger
    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in hangups {
                logger.info("received SIGHUP: reloading the configuration")
                var issues: [ConfigIssue] = []
                var loaded: LoadedConfig?
                do { loaded = try ConfigLoader.load(path: configFile) } catch let error as ConfigError { issues = error.issues }
                if let loaded { issues = TLSIdentity.issues(loaded.config) }
                guard let loaded, issues.isEmpty else {
                    for issue in issues { logger.error("configuration not reloaded: \(issue)") }
                    logger.error("the running configuration stays; fix \(configFile ?? "the PATRONI_* variables") and send SIGHUP again")
                    continue
                }
                await agent.reload(loaded.config)
            }
        }
    }
}

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

/// The archive of the configuration's cluster (or, with `bootstrapSource`, the archive and
/// scope `bootstrap.archive` restores from); a missing or bad configuration exits `status`.
func walArchive(_ configFile: String, command: String, failureStatus: Int32, bootstrapSource: Bool = false) -> (WALArchive, ArchiveSettings) {
    let config: Config
    do { config = try ConfigLoader.load(path: configFile).config } catch {
        fail(command, error.issues.map { "\($0)" }.joined(separator: "; "), status: failureStatus)
    }
    var settings = config.archive
    var scope = config.scope
    if bootstrapSource {
        guard let source = config.bootstrap.custom?.archive else { fail(command, "\(configFile) has no bootstrap.archive to restore from", status: failureStatus) }
        settings = source.archive
        scope = source.scope ?? config.scope
    }
    guard let settings else { fail(command, "\(configFile) has no archive section", status: failureStatus) }
    do { return (try WALArchive(settings: settings, scope: scope), settings) } catch { fail(command, "\(error)", status: failureStatus) }
}

struct WALPushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive a WAL file (for archive_command: stork wal-push CONFIG %p).",
        discussion: """
            Stores the file, compressed, under the cluster's scope in the archive section's place, \
            durably (fsync) and atomically (no partial object is ever visible). The same file pushed \
            again succeeds; a different file under a name the archive holds fails and the archive \
            keeps what it had.

            Exit status: 0 when archived (or archived already); 1 with a one-line reason otherwise.
            """)

    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String
    @Argument(help: "The WAL file (%p, relative to the data directory where PostgreSQL runs it).")
    var path: String

    func run() throws {
        let (archive, _) = walArchive(configFile, command: "wal-push", failureStatus: 1)
        do {
            if try archive.push(path) == .alreadyArchived {
                complain("wal-push", "\((path as NSString).lastPathComponent) is archived already, with the same content")
            }
        } catch {
            fail("wal-push", "\(error)")
        }
    }
}

struct WALFetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Restore a WAL file from the archive (for restore_command: stork wal-fetch CONFIG %f %p).",
        discussion: """
            Exit status: 0 when restored; 1, quietly, when the archive does not hold the file (what \
            PostgreSQL expects at the end of the archive); 255 with a one-line reason when the \
            archive cannot be read or the configuration is wrong: PostgreSQL then stops recovery \
            instead of taking the error for the end of the archive and promoting early. Nothing is \
            left at the target path when it fails.
            """)

    @Flag(help: "Fetch from the archive and scope that bootstrap.archive restores the new cluster from.")
    var bootstrapSource = false
    @Option(help: .hidden) var prefetchAfter: String?
    @Option(help: .hidden) var segmentSize: UInt64 = 16 << 20
    @Argument(help: "Patroni YAML configuration file with an archive section.")
    var configFile: String
    @Argument(help: "The WAL file's name (%f).")
    var name: String?
    @Argument(help: "Where to put it (%p).")
    var target: String?

    func validate() throws {
        if prefetchAfter == nil && target == nil { throw ValidationError("expected CONFIG NAME TARGET (%f %p)") }
    }

    func run() throws {
        let (archive, settings) = walArchive(configFile, command: "wal-fetch", failureStatus: 255, bootstrapSource: bootstrapSource)
        if let after = prefetchAfter {
            // In the background, started by a fetch: nobody reads what it prints.
            _ = try? WALPrefetcher(archive: archive, depth: settings.prefetch, width: settings.concurrency).run(after: after, segmentSize: segmentSize)
            return
        }
        guard let name, let target else { return }
        if WALSpool.serve(name, to: target) != nil { return }
        do {
            guard try archive.fetch(name, to: target) else { throw ExitCode(1) }
        } catch let error as ArchiveError {
            fail("wal-fetch", "\(error)", status: 255)
        }
        // A segment from the archive: recovery will want the next ones.
        var st = stat()
        if settings.prefetch > 0, name.count == 24, stat(target, &st) == 0, !WALSpool.prefetcherRunning() {
            WALSpool.startPrefetcher(WALSpool.prefetchCommand(stork: WALArchiveCommands.executable, config: configFile,
                                                            flags: bootstrapSource ? ["--bootstrap-source"] : [], after: name,
                                                            segmentSize: UInt64(st.st_size)))
        }
    }
}
