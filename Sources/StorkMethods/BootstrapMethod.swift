import Foundation
import Logging
import StorkConfig
import StorkPostgres

/// What a bootstrap method left in the empty data directory.
public enum BootstrapResult: Sendable, Equatable {
    /// A new cluster (initdb): the agent starts it as a primary and creates the roles.
    case initialized
    /// A copy of another cluster to recover: the recovery parameters it starts with (nil:
    /// none, it starts as it is), or the tool's own (`keepExisting`, keep_existing_recovery_conf).
    case restored(recoveryConf: [String: JSONValue]?, keepExisting: Bool)
}

/// What a bootstrap method gets.
public struct BootstrapContext: Sendable {
    public var node: PostgresNode
    public var scope: String
    /// The agent's configuration file: the archive's `restore_command` names it.
    public var configFile: String?
    /// Bytes done and the total of a restore, while it runs; nil when it is over.
    public var reportProgress: @Sendable (ReplicaProgress?) -> Void

    public init(node: PostgresNode, scope: String, configFile: String?, reportProgress: @escaping @Sendable (ReplicaProgress?) -> Void) {
        self.node = node
        self.scope = scope
        self.configFile = configFile
        self.reportProgress = reportProgress
    }
}

/// A way to make a new cluster's data directory: initdb, a user's command (Patroni's custom
/// bootstrap), or a restore from Stork's archive.
public protocol BootstrapMethod: Sendable {
    /// The member's state while it runs (`initializing new cluster`, ...).
    var state: String { get }
    func run(_ context: BootstrapContext) async throws -> BootstrapResult
}

/// The method `bootstrap.method` names: initdb unless a section with a command (or
/// `bootstrap.archive`) is chosen.
public func bootstrapMethod(_ bootstrap: BootstrapSettings) -> any BootstrapMethod {
    guard let custom = bootstrap.custom else { return InitdbBootstrap(options: bootstrap.initdb) }
    if let source = custom.archive { return ArchiveBootstrap(source: source, keepExistingRecoveryConf: custom.keepExistingRecoveryConf) }
    return CommandBootstrap(spec: custom)
}

/// `initdb` with the `bootstrap.initdb` options.
struct InitdbBootstrap: BootstrapMethod {
    let options: JSONValue?
    var state: String { "initializing new cluster" }

    func run(_ context: BootstrapContext) async throws -> BootstrapResult {
        try await context.node.initdb(options: options)
        return .initialized
    }
}

/// A custom bootstrap command, called as Patroni calls it (`CustomBootstrap`).
struct CommandBootstrap: BootstrapMethod {
    let spec: BootstrapMethodSpec
    var state: String { "running custom bootstrap script" }

    func run(_ context: BootstrapContext) async throws -> BootstrapResult {
        try await CustomBootstrap.run(spec, scope: context.scope, node: context.node)
        return .restored(recoveryConf: spec.recoveryConf, keepExisting: spec.keepExistingRecoveryConf)
    }
}
