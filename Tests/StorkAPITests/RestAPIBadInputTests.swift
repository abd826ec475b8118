import Foundation
import StorkAPI
import StorkConfig
import StorkDCS
import StorkTestSupport
import Testing

extension RestAPIServerTests {
    /// Every request a client can get wrong, against a member that holds the leader key: each
    /// answered 4xx (or 501 for a method Patroni does not serve either) with one line that says
    /// what is wrong, and nothing in the DCS changes. Before: `POST /reinitialize` with a body
    /// that is not JSON went ahead as if it had none.
    @Test func badRequestsAreRefusedInOneLineAndChangeNothing() async throws {
        try await withServer({ $0.username = "admin"; $0.password = "api-Secret" }, limits: .init()) { base, dcs in
            #expect(try await dcs.acquireLeader(ttl: 30))
            let before = try await dcs.clusterView()
            let port = Self.port(of: base)
            let auth = "Authorization: Basic " + Data("admin:api-Secret".utf8).base64EncodedString()
            let rows: [(method: String, path: String, body: String, headers: [String], status: ClosedRange<Int>)] = [
                ("POST", "/switchover", "{not json", [auth], 400...400),
                ("POST", "/switchover", "[1, 2]", [auth], 400...400),
                ("POST", "/failover", "{}", [auth], 400...400),
                ("POST", "/switchover", #"{"leader": 5, "candidate": true}"#, [auth], 412...412),
                ("POST", "/switchover", #"{"leader": "pg0", "candidate": "nobody", "surprise": [1]}"#, [auth], 412...412),
                ("POST", "/reinitialize", "{not json", [auth], 400...400),
                ("POST", "/reinitialize", #"{"force": "#, [auth], 400...400),
                ("POST", "/switchover", #"{"leader": "pg0", "candidate": "pg1"}"#, [], 401...401),
                ("POST", "/switchover", #"{"leader": "pg0", "candidate": "pg1"}"#, ["Authorization: Basic " + Data("admin:wrong".utf8).base64EncodedString()], 401...401),
                ("POST", "/switchover", #"{"leader": "pg0", "candidate": "pg1"}"#, ["Authorization: Basic !!!"], 401...401),
                ("POST", "/switchover", #"{"leader": "pg0", "candidate": ""#, [auth] + ["X-Pad: " + String(repeating: "y", count: 100)], 400...400),
                ("POST", "/failover", "{\"candidate\": \"" + String(repeating: "x", count: 70_000) + "\"}", [auth], 413...413),
                ("PUT", "/switchover", "{}", [auth], 400...501),
                ("DELETE", "/patroni", "", [auth], 400...501),
                ("GET", "/no-such-endpoint", "", [], 404...404),
                ("POST", "/restart", "{not json", [auth], 400...400),
                ("POST", "/restart", #"{"schedule": "yesterday"}"#, [auth], 422...422),
                ("POST", "/restart", #"{"schedule": "2020-01-01T00:00:00+00:00"}"#, [auth], 422...422),
                ("POST", "/restart", #"{"timeout": -5}"#, [auth], 400...400),
                ("POST", "/restart", #"{"role": "leader"}"#, [auth], 400...400),
                ("POST", "/restart", "{}", [], 401...401),
                ("DELETE", "/restart", "", [auth], 404...404),
                ("POST", "/reload", "", [], 401...401),
            ]
            for row in rows {
                let answer = await Task.detached { LoopbackTCP.exchange(port, row.method, row.path, body: row.body, headers: row.headers) }.value
                let what = "\(row.method) \(row.path) \(row.body.prefix(60))"
                guard let answer else { Issue.record("\(what): no answer"); continue }
                #expect(row.status.contains(answer.status) && answer.status != 500, "\(what): HTTP \(answer.status) \(answer.body)")
                let text = answer.body.trimmingCharacters(in: .whitespacesAndNewlines)
                // The router's own 404 and 405 (no such path or method) come without a text.
                if answer.status != 405 && answer.status != 501 && (answer.status != 404 || row.path == "/restart") {
                    #expect(!text.isEmpty && !text.contains("\n") && text.count < 200, "\(what): \(answer.body)")
                }
            }
            let after = try await dcs.clusterView()
            #expect(after.failover == nil && after.leader == before.leader && after.members == before.members, "\(after)")
            // The server still answers.
            #expect(LoopbackTCP.request(port, "GET", "/patroni") == 200)
        }
    }
}
