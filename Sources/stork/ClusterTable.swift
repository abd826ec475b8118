import Foundation
import StorkConfig
import StorkDCS

/// `stork list`: the member table in `patronictl list`'s layout.
enum ClusterTable {
    static func render(scope: String, view: ClusterView) -> String {
        let leaderLSN = view.leaderMember?.xlogLocation ?? view.leaderOptime
        let header = ["Member", "Host", "Role", "State", "TL", "Lag in MB"]
        let rows: [[String]] = view.members.sorted { $0.name < $1.name }.map { m in
            let isLeader = m.name == view.leader
            let role = isLeader ? "Leader" : (m.role == "primary" ? "Primary" : "Replica")
            var state = m.data["replication_state"]?.scalarText ?? m.state ?? ""
            if case .object(let p)? = m.data["replica_creation"], let method = p["method"]?.scalarText {
                // Stork's addition: which method builds the replica, and how far it got.
                state += " (\(method) \(p["attempt"]?.scalarText ?? "?")/\(p["attempts"]?.scalarText ?? "?")"
                if let bytes = p["bytes_done"]?.intValue {
                    state += ", \(bytes >> 20)" + (p["bytes_total"]?.intValue.map { "/\($0 >> 20)" } ?? "") + " MiB"
                }
                state += ")"
            }
            if case .object(let p)? = m.data["recovery_progress"] {
                // Stork's addition: a bootstrap's recovery towards its target.
                state += " (replayed up to \(p["replayed_lsn"]?.scalarText ?? "?"), target \(p["target"]?.scalarText ?? "?"))"
            }
            var lag = ""
            if !isLeader, let leaderLSN, let mine = m.xlogLocation {
                lag = String(max(0, leaderLSN - mine) / (1024 * 1024))
            } else if !isLeader {
                lag = "unknown"
            }
            return [m.name, host(of: m.connURL), role, state, m.timeline.map(String.init) ?? "", lag]
        }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String], rightAligned: Set<Int> = []) -> String {
            "| " + cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return rightAligned.contains(i) ? pad + c : c + pad
            }.joined(separator: " | ") + " |\n"
        }
        let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+\n"
        var title = "+ Cluster: \(scope)"
        if let sysid = view.initialize, !sysid.isEmpty { title += " (\(sysid))" }
        title += " "
        let top = title.count < rule.count - 1
            ? title + String(rule.dropFirst(title.count).dropLast()) + "\n"
            : title + "+\n"
        var out = top + line(header) + rule
        for row in rows { out += line(row, rightAligned: [4, 5]) }
        out += rule
        return out
    }

    static func host(of connURL: String?) -> String {
        guard let url = connURL, let at = url.range(of: "://") else { return "" }
        let rest = url[at.upperBound...]
        return String(rest.split(separator: "/", maxSplits: 1).first ?? "")
    }
}
