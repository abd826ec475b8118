import Foundation
import StorkAPI
import StorkConfig
import StorkDCS
import StorkTestSupport
import Testing

extension RestAPIServerTests {
    /// `PUT /config` writes a whole configuration, `PATCH /config` merges into it (null removes
    /// a key), each answering the configuration now in the DCS; what would not run as written
    /// (a wrong type, timing against Patroni's rule, an unknown key) is refused with one line
    /// and leaves the key as it was.
    @Test func changingTheClusterConfiguration() async throws {
        try await withServer({ $0.username = "admin"; $0.password = "api-Secret" }, limits: .init()) { base, dcs in
            let port = Self.port(of: base)
            let auth = "Authorization: Basic " + Data("admin:api-Secret".utf8).base64EncodedString()
            func send(_ method: String, _ body: String, headers: [String]? = nil) async -> (status: Int, body: String)? {
                let h = headers ?? [auth]
                guard let a = await Task.detached(operation: { LoopbackTCP.exchange(port, method, "/config", body: body, headers: h) }).value else { return nil }
                return (a.status, a.body)
            }
            func stored() async -> JSONValue? { try? await dcs.readConfig()?.value }

            let patchFirst = await send("PATCH", #"{"ttl": 30}"#)
            #expect(patchFirst?.status == 503 && patchFirst?.body.contains("PUT /config") == true, "\(String(describing: patchFirst))")
            #expect(await stored() == nil)

            let whole = #"{"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": 100}}}"#
            let put = await send("PUT", whole)
            #expect(put?.status == 200, "\(String(describing: put))")
            let expected = JSONValue.parse(json: Data(whole.utf8))
            #expect(await stored() == expected)
            #expect(put.flatMap { JSONValue.parse(json: Data($0.body.utf8)) } == expected)

            let patch = await send("PATCH", #"{"postgresql": {"parameters": {"work_mem": null, "shared_buffers": "256MB"}}, "maximum_lag_on_failover": 1000}"#)
            #expect(patch?.status == 200, "\(String(describing: patch))")
            let merged: JSONValue = .object([
                "ttl": .int(30), "loop_wait": .int(10), "retry_timeout": .int(10), "maximum_lag_on_failover": .int(1000),
                "postgresql": .object(["parameters": .object(["max_connections": .int(100), "shared_buffers": .string("256MB")])]),
            ])
            #expect(await stored() == merged)
            #expect(patch.flatMap { JSONValue.parse(json: Data($0.body.utf8)) } == merged)

            let bad: [(method: String, body: String, headers: [String]?, status: Int, says: String)] = [
                ("PATCH", "{not json", nil, 400, "JSON object"),
                ("PATCH", "[1, 2]", nil, 400, "JSON object"),
                ("PATCH", "{}", nil, 400, "non-empty"),
                ("PUT", "{}", nil, 400, "non-empty"),
                ("PATCH", #"{"ttl": "x"}"#, nil, 422, "config.ttl"),
                ("PATCH", #"{"loop_wait": 100}"#, nil, 422, "loop_wait + 2*retry_timeout <= ttl"),
                ("PATCH", #"{"ttl": 10}"#, nil, 422, "ttl at least 20"),
                ("PATCH", #"{"surprise": 1}"#, nil, 422, "config.surprise"),
                ("PATCH", #"{"postgresql": 5}"#, nil, 422, "config.postgresql"),
                ("PUT", #"{"ttl": 30, "loop_wait": "often"}"#, nil, 422, "config.loop_wait"),
                ("PATCH", #"{"ttl": 40}"#, [], 401, "no auth header"),
            ]
            for row in bad {
                let answer = await send(row.method, row.body, headers: row.headers)
                let what = "\(row.method) /config \(row.body)"
                guard let answer else { Issue.record("\(what): no answer"); continue }
                let line = answer.body.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(answer.status == row.status && line.contains(row.says) && !line.contains("\n"), "\(what): HTTP \(answer.status) \(answer.body)")
                #expect(await stored() == merged, "\(what) changed the DCS")
            }
            // Answered from the agent's last look at the DCS: this agent's loop has not run.
            #expect(LoopbackTCP.request(port, "GET", "/config") == 503)
        }
    }
}
