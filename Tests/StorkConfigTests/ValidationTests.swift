import Foundation
import Testing
@testable import StorkConfig

@Suite("Validation: every issue, one line each")
struct ValidationTests {
    let etcd = "etcd3:\n  host: 127.0.0.1:2379\n"
    let pg = """
    postgresql:
      listen: 127.0.0.1:5432
      data_dir: /d
      authentication:
        superuser: {username: postgres}
        replication: {username: rep}

    """
    let head = "scope: s\nname: n\nrestapi:\n  listen: 127.0.0.1:8008\n"

    @Test func emptyConfigurationListsEverythingRequired() {
        #expect(issueLines("") == [
            "scope: required",
            "name: required",
            "restapi.listen: required",
            "etcd3: required (or local for the embedded single-host store)",
            "postgresql.listen: required",
            "postgresql.data_dir: required",
            "postgresql.authentication.superuser.username: required",
            "postgresql.authentication.replication.username: required",
        ])
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var yaml: String
        var expected: [String]
        var testDescription: String { expected.joined(separator: " | ") }
    }

    static let etcdS = "etcd3:\n  host: 127.0.0.1:2379\n"
    static let pgS = "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n    replication: {username: rep}\n"
    static let headS = "scope: s\nname: n\nrestapi:\n  listen: 127.0.0.1:8008\n"

    static let cases: [Case] = [
        Case(yaml: "name: n\nrestapi: {listen: '127.0.0.1:8008'}\n" + etcdS + pgS, expected: ["scope: required"]),
        Case(yaml: "scope: ''\nname: n\nrestapi: {listen: '127.0.0.1:8008'}\n" + etcdS + pgS, expected: ["scope: required"]),
        Case(yaml: "scope: s\nrestapi: {listen: '127.0.0.1:8008'}\n" + etcdS + pgS, expected: ["name: required"]),
        Case(yaml: "scope: s\nname: n\n" + etcdS + pgS, expected: ["restapi.listen: required"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: abc}\n" + etcdS + pgS,
             expected: ["restapi.listen: \"abc\": expected host:port"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: 'h:x'}\n" + etcdS + pgS,
             expected: ["restapi.listen: \"h:x\": port is not a number"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: 'h:70000'}\n" + etcdS + pgS,
             expected: ["restapi.listen: \"h:70000\": port must be between 1 and 65535"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: '0.0.0.0:8008'}\n" + etcdS + pgS,
             expected: ["restapi.connect_address: required when restapi.listen (\"0.0.0.0:8008\") has no specific host"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: '0.0.0.0:8008', connect_address: nohost}\n" + etcdS + pgS,
             expected: ["restapi.connect_address: \"nohost\": expected host:port"]),
        Case(yaml: "scope: s\nname: n\nrestapi: [a]\n" + etcdS + pgS,
             expected: ["restapi: expected a map", "restapi.listen: required"]),
        Case(yaml: headS + "etcd3:\n  hosts: ['a:1', 'x:y']\n" + pgS, expected: ["etcd3.hosts: \"x:y\": port is not a number"]),
        Case(yaml: headS + "etcd3:\n  hosts: 'a:1,x:y,:3'\n" + pgS,
             expected: ["etcd3.hosts: \"x:y\": port is not a number", "etcd3.hosts: \":3\": expected host:port"]),
        Case(yaml: headS + "etcd3:\n  host: 'h:'\n" + pgS, expected: ["etcd3.host: \"h:\": expected host:port"]),
        Case(yaml: headS + "etcd3:\n  url: not a url\n" + pgS,
             expected: ["etcd3.url: \"not a url\": expected a URL like http://host:2379"]),
        Case(yaml: headS + "etcd3:\n  host: h\n  protocol: ftp\n" + pgS, expected: ["etcd3.protocol: \"ftp\": expected http or https"]),
        Case(yaml: headS + "etcd3:\n  username: u\n" + pgS, expected: ["etcd3: host, hosts or url required"]),
        Case(yaml: headS + "etcd3: h:2379\n" + pgS, expected: ["etcd3: expected a map"]),
        Case(yaml: headS + "etcd:\n  host: 127.0.0.1:2379\n" + pgS,
             expected: ["etcd: Stork speaks the etcd v3 API only; rename the section to etcd3"]),
        Case(yaml: headS + etcdS + "local:\n  path: /x\n" + pgS,
             expected: ["etcd3, local: only one DCS may be configured; keep etcd3 or local, not both"]),
        Case(yaml: headS + "local: {}\n" + pgS, expected: ["local.path: required"]),
        Case(yaml: headS + pgS, expected: ["etcd3: required (or local for the embedded single-host store)"]),
        Case(yaml: headS + etcdS + "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n",
             expected: ["postgresql.authentication.replication.username: required"]),
        Case(yaml: headS + etcdS + "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n",
             expected: ["postgresql.authentication.superuser.username: required",
                        "postgresql.authentication.replication.username: required"]),
        Case(yaml: headS + etcdS + pgS + "  connect_address: host\n",
             expected: ["postgresql.connect_address: \"host\": expected host:port"]),
        Case(yaml: headS + etcdS + "postgresql:\n  listen: '*:5432'\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n    replication: {username: rep}\n",
             expected: ["postgresql.connect_address: required when postgresql.listen (\"*:5432\") has no single specific host"]),
        Case(yaml: headS + etcdS + "postgresql:\n  listen: '5432'\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres}\n    replication: {username: rep}\n",
             expected: ["postgresql.listen: \"5432\": expected host[,host...]:port"]),
        Case(yaml: headS + etcdS + pgS + "  parameters: [a, b]\n", expected: ["postgresql.parameters: expected a map"]),
        Case(yaml: headS + etcdS + pgS + "  pg_hba: host all all all md5\n", expected: ["postgresql.pg_hba: expected a list of strings"]),
        Case(yaml: headS + etcdS + pgS + "  pg_ctl_timeout: soon\n", expected: ["postgresql.pg_ctl_timeout: \"soon\": expected an integer"]),
        Case(yaml: headS + etcdS + pgS + "  basebackup: [pgdata, {wal-method: fetch}]\n",
             expected: ["postgresql.basebackup: option \"pgdata\" is set by Stork and cannot be given",
                        "postgresql.basebackup: option \"wal-method\" is set by Stork and cannot be given"]),
        Case(yaml: headS + etcdS + pgS + "bootstrap:\n  dcs:\n    ttl: abc\n",
             expected: ["bootstrap.dcs.ttl: \"abc\": expected an integer"]),
        Case(yaml: headS + etcdS + pgS + "bootstrap:\n  dcs:\n    loop_wait: [1]\n    retry_timeout: 1.5\n",
             expected: ["bootstrap.dcs.loop_wait: [1]: expected an integer",
                        "bootstrap.dcs.retry_timeout: \"1.5\": expected an integer"]),
        Case(yaml: headS + etcdS + pgS + "bootstrap:\n  dcs: 30\n", expected: ["bootstrap.dcs: expected a map"]),
        Case(yaml: headS + etcdS + pgS + "bootstrap:\n  initdb:\n  - pgdata: /x\n  - nosync\n  - {encoding: UTF8, locale: C}\n",
             expected: ["bootstrap.initdb: option \"pgdata\" is set by Stork and cannot be given",
                        "bootstrap.initdb: option \"nosync\" is set by Stork and cannot be given",
                        "bootstrap.initdb: item 3: a map item must have exactly one key, found 2 (encoding, locale)"]),
        Case(yaml: headS + etcdS + pgS + "bootstrap:\n  users:\n    admin:\n      options: createdb\n",
             expected: ["bootstrap.users.admin.options: expected a list of strings"]),
        Case(yaml: headS + etcdS + pgS + "tags: [nofailover]\n", expected: ["tags: expected a map"]),
        Case(yaml: headS + etcdS + pgS + "log:\n  level: LOUD\n  type: xml\n",
             expected: ["log.level: \"LOUD\": expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
                        "log.type: \"xml\": expected plain or json"]),
        Case(yaml: headS + etcdS + "postgresql:\n  listen: 127.0.0.1:5432\n  data_dir: /d\n  authentication:\n    superuser: {username: postgres, password: yes}\n    replication: {username: rep}\n",
             expected: ["postgresql.authentication.superuser.password: true: expected a string (quote the value)"]),
        Case(yaml: "scope: s\nname: n\nrestapi: {listen: abc}\netcd3: {hosts: 'x:y'}\npostgresql:\n  parameters: 1\n",
             expected: ["restapi.listen: \"abc\": expected host:port",
                        "etcd3.hosts: \"x:y\": port is not a number",
                        "postgresql.listen: required",
                        "postgresql.data_dir: required",
                        "postgresql.authentication.superuser.username: required",
                        "postgresql.authentication.replication.username: required",
                        "postgresql.parameters: expected a map"]),
    ]

    @Test(arguments: cases)
    func badConfiguration(_ c: Case) {
        #expect(issueLines(c.yaml) == c.expected)
    }

    @Test func theBaseOfTheTableIsValid() {
        #expect(issueLines(head + etcd + pg) == ["<loaded without issues>"])
        #expect(issueLines(minimalYAML) == ["<loaded without issues>"])
    }

    /// Warned at start: a REST API that changes the cluster, open to anyone beyond loopback.
    @Test func restAPIOpenToEveryone() {
        var api = RestAPISettings()
        for (listen, open) in [("127.0.0.1:8008", false), ("localhost:8008", false), ("[::1]:8008", false),
                               ("127.0.0.1,10.0.0.5:8008", true), ("0.0.0.0:8008", true), (":8008", true), ("10.0.0.5:8008", true)] {
            api.listen = listen
            #expect((api.openToEveryone != nil) == open, "\(listen)")
        }
        api.listen = "0.0.0.0:8008"
        api.username = "admin"; api.password = "pw"
        #expect(api.openToEveryone == nil)
        api.password = nil
        api.verifyClient = "required"
        #expect(api.openToEveryone == nil)
        api.verifyClient = "none"; api.allowlist = ["10.0.0.0/8"]
        #expect(api.openToEveryone == nil)
    }

    @Test func errorDescriptionIsOneLinePerIssue() {
        let error = ConfigError(issues: [ConfigIssue(path: "scope", message: "required"),
                                         ConfigIssue(path: "name", message: "required")])
        #expect(error.description == "scope: required\nname: required")
        #expect("\(error.issues[0])" == "scope: required")
    }

    @Test func unknownInputNeverCrashes() {
        let weird = [
            "scope: {a: [1, {b: null}]}\nname: [[[]]]\nrestapi: ~\netcd3: ~\npostgresql: ~\nbootstrap: [1]\ntags: 5\n",
            "? [complex, key]\n: value\n",
            "scope: !!binary aGVsbG8=\nname: .inf\n",
            "postgresql:\n  authentication: 5\n  create_replica_methods: 7\n  basebackup: 3\n",
            "bootstrap:\n  initdb: {pgdata: /x, '': y}\n  users: [a]\n",
            "bootstrap:\n  dcs: {ttl: 1e300, loop_wait: .inf, retry_timeout: -.nan}\npostgresql:\n  pg_ctl_timeout: 1e300\n",
            "etcd3: {hosts: [[a]], port: 1e300}\nrestapi: {listen: '[::1'}\npostgresql: {listen: ':'}\n",
        ]
        for yaml in weird {
            let lines = issueLines(yaml)
            #expect(!lines.isEmpty)
            #expect(lines != ["<loaded without issues>"])
        }
    }
}
