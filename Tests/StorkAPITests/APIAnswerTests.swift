import Foundation
import Testing
import StorkConfig
import StorkDCS
import StorkAPI
import StorkHA
import StorkPostgres

func config(tags: [String: JSONValue] = [:]) -> Config {
    let pg = PostgresSettings(listen: "127.0.0.1:5432", connectAddress: "127.0.0.1:5432", dataDir: "/tmp/x", pgpass: "/tmp/pgpass",
                              superuser: PostgresUser(username: "postgres", password: "s3cret"),
                              replication: PostgresUser(username: "replicator", password: "r3pl"))
    var c = Config(scope: "batman", name: "pg0", dcs: .local(path: "/tmp/dcs"), postgresql: pg)
    c.tags = tags
    return c
}

func status(state: String, role: String, leader: Bool, inRecovery: Bool = false, lastCycle: Date? = Date()) -> MemberStatus {
    var s = MemberStatus()
    s.state = state
    s.role = role
    s.holdsLeaderKey = leader
    s.lastCycle = lastCycle
    s.systemIdentifier = "7001"
    if state == "running" {
        s.server = ServerState(inRecovery: inRecovery, walPosition: 50_331_648, replayLSN: inRecovery ? 50_331_000 : nil,
                               receiveLSN: inRecovery ? 50_331_648 : nil, timeline: 1, serverVersion: 150018, streaming: inRecovery)
    }
    return s
}

@Suite("REST API answers")
struct APITests {
    @Test func patroniDocumentFields() {
        let c = config()
        let doc = APIResponses.patroniDocument(status(state: "running", role: "primary", leader: true), config: c)
        #expect(doc["state"] == .string("running"))
        #expect(doc["role"] == .string("primary"))
        #expect(doc["server_version"] == .int(150018))
        #expect(doc["timeline"] == .int(1))
        #expect(doc["xlog"]?["location"] == .int(50_331_648))
        #expect(doc["database_system_identifier"] == .string("7001"))
        #expect(doc["patroni"]?["scope"] == .string("batman"))
        #expect(doc["patroni"]?["name"] == .string("pg0"))
        let rdoc = APIResponses.patroniDocument(status(state: "running", role: "replica", leader: false, inRecovery: true), config: c)
        #expect(rdoc["xlog"]?["received_location"] == .int(50_331_648))
        #expect(rdoc["xlog"]?["replayed_location"] == .int(50_331_000))
        #expect(rdoc["replication_state"] == .string("streaming"))
        let cloning = APIResponses.patroniDocument(status(state: "creating replica", role: "uninitialized", leader: false), config: c)
        #expect(cloning["state"] == .string("creating replica"))
        #expect(cloning["xlog"] == nil)
    }
}

@Suite("Who may change something through the REST API")
struct APIAccessTests {
    func settings(user: String? = "admin", password: String? = "api-Secret", verify: String = "none") -> RestAPISettings {
        var s = RestAPISettings()
        s.username = user
        s.password = password
        s.certfile = verify == "none" ? nil : "/api.crt"
        s.verifyClient = verify
        return s
    }
    let right = "Basic " + Data("admin:api-Secret".utf8).base64EncodedString()

    @Test func basicAuthentication() {
        let access = APIAccess(settings: settings(), allowlist: [])
        #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: nil)! == (401, "no auth header received"))
        let wrong = "Basic " + Data("admin:guess".utf8).base64EncodedString()
        #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: wrong)! == (401, "not authenticated"))
        #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: right + "x")! == (401, "not authenticated"))
        #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: right) == nil)
        // No authentication configured: anyone may (Patroni's default).
        let open = APIAccess(settings: settings(user: nil, password: nil), allowlist: [])
        #expect(open.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: nil) == nil)
    }

    @Test func allowlistComesFirst() throws {
        let access = APIAccess(settings: settings(), allowlist: [try #require(IPNetwork("10.0.0.0/8"))])
        #expect(access.refusal(remoteAddress: "192.168.0.1", hasClientCertificate: true, authorization: right)! == (403, "Access is denied"))
        #expect(access.refusal(remoteAddress: nil, hasClientCertificate: true, authorization: right)! == (403, "Access is denied"))
        #expect(access.refusal(remoteAddress: "10.9.8.7", hasClientCertificate: false, authorization: right) == nil)
    }

    @Test func clientCertificateWhenAskedFor() {
        for verify in ["optional", "required"] {
            let access = APIAccess(settings: settings(verify: verify), allowlist: [])
            #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: false, authorization: right)! == (403, "client certificate required"))
            #expect(access.refusal(remoteAddress: "127.0.0.1", hasClientCertificate: true, authorization: right) == nil)
        }
    }
}
