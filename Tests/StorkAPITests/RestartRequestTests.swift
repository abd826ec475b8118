import Foundation
import Testing
import StorkConfig
import StorkAPI
import StorkHA

/// `POST /restart`'s body as Patroni reads it: each field, and each refusal with its code and text.
@Suite("POST /restart: the request and its refusals")
struct RestartRequestTests {
    let now = Date(timeIntervalSince1970: 1_900_000_000)  // 2030-03-17 17:46:40 UTC

    func parse(_ json: String) -> Result<RestartRequest, RefusedRequest> {
        guard case .object(let body)? = JSONValue.parse(json: Data(json.utf8)) else { fatalError("not an object: \(json)") }
        return RestartRequestParser.parse(body, now: now)
    }

    @Test func acceptedFields() throws {
        let r = try parse(#"{"schedule": "2030-03-17T18:00:00+00:00", "role": "replica", "postgres_version": "18.1", "timeout": "5min", "restart_pending": false}"#).get()
        #expect(r.schedule == Date(timeIntervalSince1970: 1_900_000_000 + 800))
        #expect(r.scheduleText == "2030-03-17T18:00:00+00:00")
        #expect(r.role == "replica" && r.postgresVersion == "18.1" && r.timeout == 300)
        // Patroni filters on restart_pending's presence, whatever its value.
        #expect(r.restartPending)
        #expect(r.json == .object(["schedule": .string("2030-03-17T18:00:00+00:00"), "role": .string("replica"),
                                   "postgres_version": .string("18.1"), "timeout": .int(300), "restart_pending": .bool(true)]))
        let empty = try parse("{}").get()
        #expect(empty == RestartRequest())
        #expect(try parse(#"{"schedule": "2030-03-17 20:30+02:00"}"#).get().schedule == Date(timeIntervalSince1970: 1_900_000_000 + 2600))
        #expect(try parse(#"{"schedule": "2030-03-17T17:50:00.5Z", "timeout": 90}"#).get().timeout == 90)
    }

    @Test(arguments: [
        (#"{"schedule": "2030-03-17T18:00:00"}"#, 400, "Timezone information is mandatory for the scheduled restart"),
        (#"{"schedule": "2030-03-17T17:00:00+00:00"}"#, 422, "Cannot schedule restart in the past"),
        (#"{"schedule": "tomorrow"}"#, 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        (#"{"schedule": "2030-02-31T10:00:00Z"}"#, 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        (#"{"schedule": 1900000900}"#, 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        (#"{"role": "master"}"#, 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        (#"{"postgres_version": "18.x"}"#, 400, "Invalid PostgreSQL version: 18.x"),
        (#"{"postgres_version": "9.6"}"#, 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"),
        (#"{"postgres_version": "18"}"#, 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 18"),
        (#"{"timeout": 0}"#, 400, "Timeout should be a positive number of seconds"),
        (#"{"timeout": "soon"}"#, 400, "Timeout should be a positive number of seconds"),
        (#"{"when": "now"}"#, 400, "Unknown filter for the scheduled restart: when"),
    ])
    func refusals(body: String, code: Int, reason: String) {
        #expect(throws: RefusedRequest(code, reason)) { try parse(body).get() }
    }

    @Test func serverVersions() {
        #expect(RestartRequest.serverVersion("15.4") == 150004)
        #expect(RestartRequest.serverVersion("18.1.0") == 180000)
        #expect(RestartRequest.serverVersion("9.6.24") == 90624)
        #expect(RestartRequest.serverVersion("9.6") == nil)
        #expect(RestartRequest.serverVersion("x.1") == nil)
    }
}
