import Testing
import StorkConfig
import StorkDCS
@testable import stork

@Suite("stork list")
struct ClusterTableTests {
    @Test func clusterTableLooksLikePatronictl() {
        let view = ClusterView(initialize: "7001", leader: "pg0", members: [
            Member(name: "pg1", data: .object(["conn_url": .string("postgres://127.0.0.1:5433/postgres"), "state": .string("running"),
                                                "role": .string("replica"), "xlog_location": .int(3 * 1024 * 1024), "timeline": .int(1),
                                                "replication_state": .string("streaming")])),
            Member(name: "pg0", data: .object(["conn_url": .string("postgres://127.0.0.1:5432/postgres"), "state": .string("running"),
                                                "role": .string("primary"), "xlog_location": .int(10 * 1024 * 1024), "timeline": .int(1)])),
        ])
        let text = ClusterTable.render(scope: "batman", view: view)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0].hasPrefix("+ Cluster: batman (7001) "))
        #expect(lines[1] == "| Member | Host           | Role    | State     | TL | Lag in MB |")
        #expect(lines[3] == "| pg0    | 127.0.0.1:5432 | Leader  | running   |  1 |           |")
        #expect(lines[4] == "| pg1    | 127.0.0.1:5433 | Replica | streaming |  1 |         7 |")
        #expect(lines.count == 6)
    }
}
