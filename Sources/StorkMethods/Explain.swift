import Foundation
import StorkConfig
import StorkPostgres

/// `stork explain`: what the chain would do for a request, without doing anything: each
/// method in order, whether it would run or why it is skipped, where it builds, and its
/// command line with every secret masked.
public enum ChainExplanation {
    public static func render(_ request: ReplicaBuildRequest, node: PostgresNode) -> String {
        var out: [String] = []
        let source = request.source.map { "\($0) (\($0.connURL))" }
            ?? "none (no running leader to copy from): only methods with no_leader run, with an empty --connstring"
        out.append("copy source: \(source)")
        if let slot = request.slot { out.append("replication slot: \(slot)") }
        out.append("chain (create_replica_methods), tried in order until one succeeds:")
        let runnable = Set(request.runnable.map(\.name))
        for (index, spec) in request.methods.enumerated() {
            let inPlace = spec.keepData || node.dataDirectoryStaysInPlace
            let target = inPlace ? node.settings.dataDir : node.stagingDirectory
            var facts = ["\(spec.retries + 1) attempt\(spec.retries == 0 ? "" : "s")"]
            if let t = spec.timeout { facts.append("timeout \(Int(t)) s") }
            facts.append(inPlace ? "in place in \(target) (keeps its files)" : "into \(target), renamed into place once checked")
            out.append("  \(index + 1). \(spec.name): \(facts.joined(separator: ", "))")
            guard runnable.contains(spec.name) else {
                out.append("     skipped: needs a member to copy from (no no_leader)")
                continue
            }
            out.append("     " + commandLine(spec, request: request, target: target, node: node))
        }
        if request.runnable.isEmpty { out.append("nothing would run: the member waits for a leader") }
        return out.joined(separator: "\n") + "\n"
    }

    static func commandLine(_ spec: ReplicaMethodSpec, request: ReplicaBuildRequest, target: String, node: PostgresNode) -> String {
        let conninfo = masked(request.conninfo)
        let words: [String]
        switch spec.kind {
        case .basebackup:
            let args = (try? PostgresNode.basebackupArguments(
                target: target, dbname: conninfo, options: ReplicaMethodSpec.pgBasebackupOptions(node.settings.basebackup),
                slot: request.slot, createSlot: true, staged: target == node.stagingDirectory)) ?? ["(postgresql.basebackup options do not parse)"]
            words = [node.binary("pg_basebackup")] + args
        case .rsync(let template):
            let method = RsyncMethod(sourceTemplate: template)
            let from = request.source.map { method.sourceURL($0, scope: request.scope) } ?? template
            let section = maskedSection(spec.section)
            let fromDirectory = RsyncMethod.directory(from)
            let holdsData = PostgresNode.holdsData(target)
            let streams = section["streams"]?.intValue ?? RsyncMethod.defaultStreams
            let copy = ["then \(streams) rsync\(streams == 1 ? "" : "s") side by side, each"]
                + RsyncMethod.copyArguments(from: fromDirectory, target: target, copyList: "FILES-N", inPlace: !holdsData, section: section)
            if !holdsData {
                words = ["pg_backup_start on the source, then rsync --list-only"] + copy
                    + ["(FILES-N: a share of every file listed, by size)", "then pg_backup_stop"]
            } else if section["delta"]?.scalarText == "checksum" {
                words = ["pg_backup_start on the source, then rsync"]
                    + RsyncMethod.checksumArguments(from: fromDirectory, target: target, section: section) + ["then pg_backup_stop"]
            } else {
                words = ["pg_backup_start on the source, then rsync --list-only, then what the source lacks is removed from \(target)"] + copy
                    + ["(FILES-N: a share of what the source wrote since the copy's latest checkpoint; by checksum if that cannot be trusted)",
                       "then pg_backup_stop"]
            }
        case .archive(let backup):
            let place: String
            switch request.archive?.location {
            case .directory(let path)?: place = "file://" + path
            case .s3(let s3)?: place = "s3://\(s3.bucket)/\(s3.prefix)"
            case .https(let url)?: place = url
            case nil: place = "(no archive section)"
            }
            words = ["restore backup \(backup ?? "(the newest)") of \(request.scope) from \(place), checked against its manifest,",
                     "then replay the archive with stork wal-fetch"]
        case .custom(let command):
            var shown = spec
            shown.section = maskedSection(spec.section)
            words = command.prefix(1) + CustomMethod.arguments(command: command, spec: shown, scope: request.scope,
                                                               datadir: target, connstring: conninfo)
        }
        return words.map(shellQuoted).joined(separator: " ")
    }

    /// A conninfo with `password`/`sslpassword` values masked (there should be none).
    static func masked(_ conninfo: String) -> String {
        guard let pairs = ConnInfo.parse(conninfo), pairs.contains(where: { ConnInfo.secretKeys.contains($0.key) }) else { return conninfo }
        return ConnInfo.format(pairs.map { ConnInfo.secretKeys.contains($0.key) ? ($0.key, Config.passwordMask) : ($0.key, $0.value) })
    }

    static func maskedSection(_ section: [String: JSONValue]) -> [String: JSONValue] {
        section.reduce(into: [:]) { out, pair in
            out[pair.key] = Config.isSecretKey(pair.key, value: pair.value.scalarText) ? .string(Config.passwordMask) : pair.value
        }
    }
}
