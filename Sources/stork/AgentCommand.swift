// `stork agent`: the HA agent, its REST API and SIGHUP, as one service group.
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

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the HA agent beside one PostgreSQL instance (like `patroni CONFIG`).",
        discussion: """
            Bootstraps a new cluster (initdb) when the DCS has none, clones this member from the \
            leader with pg_basebackup when its data directory is empty, and keeps PostgreSQL running \
            in its role. Stops PostgreSQL and releases the leader key on SIGTERM or SIGINT; SIGHUP \
            (or POST /reload) reloads the configuration file and PostgreSQL (a file that no longer loads \
            keeps the running one). \
            One agent per data directory: a second one exits before touching anything. Without CONFIG, PATRONI_CONFIGURATION or PATRONI_* variables must give the configuration.

            Exit status: 0 after SIGTERM/SIGINT; 1 when another agent runs for the same data \
            directory, the data directory belongs to another cluster, or the bootstrap failed (its data directory is moved aside); 2 for a bad configuration, \
            credentials the DCS refuses (one line per problem, naming the key), or PostgreSQL binaries that are missing or of \
            another major than the data directory (one line naming both); nothing is started then.
            """)

    @Argument(help: "Patroni YAML configuration file.")
    var configFile: String?

    func run() async throws {
        // SIGHUP reloads the configuration (Patroni's systemd unit sends it on reload); until
        // the handler below runs, it must not end the agent either.
        signal(SIGHUP, SIG_IGN)
        // A watchdog pipe or a self-fence whose reader is gone is an error to log, not the end
        // of the agent.
        signal(SIGPIPE, SIG_IGN)
        let (loaded, logger) = try loadConfigAndLog(configFile, toFile: true)
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
        let node = PostgresNode(settings: config.postgresql, memberName: config.name, logger: logger)
        // Binaries that are missing, or of another major than the data directory, are a
        // configuration error: the server would refuse to start, and the agent must not take
        // that for a broken data directory.
        do { try node.checkBinariesFitDataDirectory() } catch {
            logger.critical("\(error)")
            throw ExitCode(2)
        }
        let dcs = makeDCS(config: config, logger: logger)
        // A DCS that refuses the configured credentials or certificates will not change its
        // mind: say which key is wrong and start nothing. An unreachable one may come back.
        do {
            let view = try await dcs.clusterView()
            // Patroni's ensure_unique_name: a member key of this name whose REST API answers at
            // all is another node running under the same name (an operator's copy-paste).
            if let api = view.member(named: config.name)?.apiURL {
                let base = api.hasSuffix("/patroni") ? String(api.dropLast("/patroni".count)) : api
                if (try? await MemberAPIClient(config: config, timeout: 3).request("GET", url: base + "/liveness")) != nil {
                    logger.critical("Can't start; there is already a node named '\(config.name)' running")
                    throw ExitCode(1)
                }
            }
        } catch let error as DCSError where error.configurationKey != nil {
            FileHandle.standardError.write(Data("\(error.configurationKey!): \(error.message)\n".utf8))
            throw ExitCode(2)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            logger.warning("DCS not reachable at start: \(error); the agent keeps trying")
        }
        let status = StatusBoard()
        let agent = Agent(config: config, dcs: dcs, node: node, status: status, logger: logger)
        let api: any Service
        do {
            api = try RestAPI.makeApplication(config: config, agent: agent, logger: logger) { port in
                logger.info("REST API listening on \(config.restapi.listen) (port \(port))")
                if let open = config.restapi.openToEveryone { logger.warning("\(open)") }
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
                .init(service: ReloadOnRequest(agent: agent, configFile: config.configFile, logger: logger)),
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

/// SIGHUP and `POST /reload`: the configuration loaded again and handed to the agent; a file
/// that no longer loads is told, one line per problem, and the running configuration stays.
struct ReloadOnRequest: Service {
    let agent: Agent
    let configFile: String?
    let logger: Logger
    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { for await _ in hangups { agent.requestReload(from: "SIGHUP") } }
                group.addTask {
                    for await source in agent.reloadRequests {
                        logger.info("received \(source): reloading the configuration")
                        switch loadConfig(configFile) {
                        case .success(let loaded):
                            await agent.reload(loaded.config)
                        case .failure(let error):
                            for issue in error.issues { logger.error("configuration not reloaded: \(issue)") }
                            logger.error("the running configuration stays; fix \(configFile ?? "the PATRONI_* variables") and send SIGHUP again")
                        }
                    }
                }
            }
        }
    }
}
