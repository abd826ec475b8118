import Foundation
import Logging
import StorkConfig
import StorkPostgres
import StorkProcess

/// A custom bootstrap method (`bootstrap.method` names a section with a `command`), called as
/// Patroni calls it (DESIGN.md contract 3): the words of `command`, then `--scope=` and
/// `--datadir=` unless `no_params`, then every other key of the section as `--key=value`.
public enum CustomBootstrap {
    public static func arguments(_ spec: BootstrapMethodSpec, scope: String, datadir: String) -> [String] {
        CallingConvention.arguments(command: spec.command, section: spec.section, notPassed: BootstrapMethodSpec.reservedKeys,
                                    fixed: spec.noParams ? nil : [("scope", scope), ("datadir", datadir)])
    }

    /// Runs the command on an empty data directory; throws saying how it failed, with its exit
    /// status and the tail of its output. The agent's `PATRONI_*` variables (passwords among
    /// them) are not passed on.
    public static func run(_ spec: BootstrapMethodSpec, scope: String, node: PostgresNode) async throws {
        try node.ensureDataDirectory()
        let command = Command(spec.command[0], arguments(spec, scope: scope, datadir: node.settings.dataDir))
        let shown = command.arguments.map { argument -> String in
            guard argument.hasPrefix("--"), let eq = argument.firstIndex(of: "="),
                  Config.isSecretKey(String(argument[argument.index(argument.startIndex, offsetBy: 2)..<eq]),
                                     value: String(argument[argument.index(after: eq)...])) else { return argument }
            return argument[...eq] + Config.passwordMask
        }
        node.logger.info("running custom bootstrap script: \(([spec.command[0]] + shown).joined(separator: " "))")
        let result = try await node.run(command)
        guard result.succeeded else { throw PostgresNode.failure("bootstrap command \(spec.command[0])", result) }
    }
}
