import Testing
@testable import StorkConfig

@Suite("create_replica_methods: the chain as configured")
struct ReplicaMethodConfigTests {
    func chain(_ lines: String) throws -> [ReplicaMethodSpec] {
        try ConfigLoader.parse(yaml: minimalYAML + "\n" + lines, checkFiles: false).config.postgresql.replicaMethods
    }

    @Test func defaultIsBasebackupWithTwoAttempts() throws {
        let c = try chain("")
        #expect(c.map(\.name) == ["basebackup"])
        #expect(c[0].kind == .basebackup && c[0].retries == 1 && !c[0].noLeader)
    }

    @Test func orderSectionsAndStorkKeys() throws {
        let c = try chain("""
              create_replica_methods: [wal_g, rsync, basebackup]
              wal_g:
                command: "/usr/bin/env 'wal g' --flag"
                no_master: 1
                retries: 2
                timeout: 90
                envdir: /etc/wal-g
              rsync:
                source: "rsync://{host}:8873/{name}"
              basebackup:
                max-rate: 100M
                retries: 3
            """)
        #expect(c.map(\.name) == ["wal_g", "rsync", "basebackup"])
        #expect(c[0].kind == .custom(command: ["/usr/bin/env", "wal g", "--flag"]))
        #expect(c[0].noLeader && c[0].retries == 2 && c[0].timeout == 90 && !c[0].keepData)
        #expect(c[0].section["envdir"] == .string("/etc/wal-g"))
        #expect(c[1].kind == .rsync(source: "rsync://{host}:8873/{name}") && c[1].keepData)
        #expect(c[2].retries == 3)
        // Stork's keys never reach pg_basebackup.
        #expect(ReplicaMethodSpec.pgBasebackupOptions(.object(["max-rate": .string("100M"), "retries": .int(3)]))
                == .object(["max-rate": .string("100M")]))
        #expect(ReplicaMethodSpec.pgBasebackupOptions(.array([.object(["retries": .int(3)]), .string("verbose")])) == .array([.string("verbose")]))
    }

    @Test func badInput() {
        let cases: [(String, String)] = [
            ("  create_replica_methods: [nosuch]",
             "postgresql.create_replica_methods: \"nosuch\": no section postgresql.nosuch with a command (built in: basebackup, rsync, archive)"),
            ("  create_replica_methods: [x]\n  x: {command: /bin/true, retries: -1}", "postgresql.x.retries: -1: expected 0 or more"),
            ("  create_replica_methods: [x]\n  x: {command: /bin/true, timeout: 0}", "postgresql.x.timeout: 0: expected seconds, more than 0"),
            ("  create_replica_methods: [x]\n  x: {command: \"/bin/true 'open\"}",
             "postgresql.x.command: \"/bin/true 'open\": an unbalanced quote or a trailing backslash"),
            ("  create_replica_methods: [rsync]\n  rsync: {source: \"rsync://{host}/{dir}\"}",
             "postgresql.rsync.source: \"rsync://{host}/{dir}\": unknown placeholder {dir} (known: {host}, {port}, {name}, {scope})"),
            ("  create_replica_methods: [basebackup]\n  basebackup: {retries: x}", "postgresql.basebackup.retries: x: expected 0 or more"),
            ("  create_replica_methods: [rsync]\n  rsync: {no_leader: true}",
             "postgresql.rsync.no_leader: rsync copies from a running member; only a custom method can work without one"),
            ("  create_replica_methods: [rsync]\n  rsync: {delta: quick}", "postgresql.rsync.delta: quick: expected checkpoint (the default) or checksum"),
            ("  create_replica_methods: [rsync]\n  rsync: {max_clock_skew: -5}", "postgresql.rsync.max_clock_skew: -5: expected seconds, 0 or more"),
            ("  create_replica_methods: [rsync]\n  rsync: {max_clock_skew: soon}", "postgresql.rsync.max_clock_skew: soon: expected seconds, 0 or more"),
            ("  create_replica_methods: [rsync]\n  rsync: {streams: 0}", "postgresql.rsync.streams: 0: expected how many rsyncs copy side by side, 1 to 16"),
            ("  create_replica_methods: [rsync]\n  rsync: {streams: many}", "postgresql.rsync.streams: many: expected how many rsyncs copy side by side, 1 to 16"),
        ]
        for (yaml, expected) in cases {
            let found = issueLines(minimalYAML + "\n" + yaml)
            #expect(found.contains(expected), "\(yaml)\n\(found)")
        }
    }

    @Test func commandMustExist() throws {
        let config = try ConfigLoader.parse(yaml: minimalYAML + "\n  create_replica_methods: [a, b, c]\n  a: {command: /nonexistent/restore}\n  b: {command: no-such-program-here --x}\n  c: {command: sh -c true}\n",
                                            checkFiles: false).config
        #expect(MethodCommandCheck.issues(config, path: "/usr/bin:/bin").map(\.description) == [
            "postgresql.a.command: \"/nonexistent/restore\": no such executable file",
            "postgresql.b.command: \"no-such-program-here\": not found on PATH",
        ])
    }
}
