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

/// The configuration, or every problem with it. Certificate/key pairs are loaded too, so a
/// key that does not match is found here.
func loadConfig(_ path: String?) -> Result<LoadedConfig, ConfigError> {
    let loaded: LoadedConfig
    do { loaded = try ConfigLoader.load(path: path) } catch { return .failure(error) }
    let pairIssues = TLSIdentity.issues(loaded.config)
    return pairIssues.isEmpty ? .success(loaded) : .failure(ConfigError(issues: pairIssues))
}

/// ``loadConfig``, or every problem printed, one line each, and exit status 2.
func loadConfigOrExit(_ path: String?) throws -> LoadedConfig {
    switch loadConfig(path) {
    case .success(let loaded): return loaded
    case .failure(let error):
        for issue in error.issues { FileHandle.standardError.write(Data("\(issue)\n".utf8)) }
        throw ExitCode(2)
    }
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
/// 2, logging as its `log` section says (`toFile`: into `log.dir` when set, the agent's), and
/// the loader's warnings logged.
func loadConfigAndLog(_ path: String?, toFile: Bool = false) throws -> (LoadedConfig, Logger) {
    let loaded = try loadConfigOrExit(path)
    let log = loaded.config.log
    var file: RotatingLogFile?
    // Not as root: the agent refuses to run as root, and must not leave a root-owned log behind.
    if toFile, geteuid() != 0, let dir = log.dir {
        do { file = try RotatingLogFile(dir: dir, maxBytes: log.fileSize, backups: log.fileNum) } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(2)
        }
    }
    StorkLogging.bootstrap(level: log.level, json: log.type == "json", file: file)
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
