import Foundation
import Testing
@testable import StorkConfig

@Suite("Loading Patroni's YAML")
struct ConfigLoaderTests {
    @Test func postgres0FileParses() throws {
        let loaded = try ConfigLoader.parse(yaml: postgres0YAML, environment: ["HOME": "/home/pg"], checkFiles: false)
        let c = loaded.config
        #expect(loaded.warnings == [])
        #expect(c.scope == "batman")
        #expect(c.namespace == "/service/")
        #expect(c.name == "postgresql0")
        #expect(c.keyPrefix == "/service/batman/")
        #expect(c.log.level == "INFO")
        #expect(c.log.type == "plain")

        #expect(c.restapi.listen == "127.0.0.1:8008")
        #expect(c.restapi.connectAddress == "127.0.0.1:8008")
        #expect(c.restapi.username == "patroni")
        #expect(c.restapi.password == "rest-pw-1111")

        #expect(c.dcs == .etcd3(Etcd3Settings(endpoints: ["http://127.0.0.1:2379"])))

        #expect(c.bootstrap.ttl == 30 && c.bootstrap.loopWait == 10 && c.bootstrap.retryTimeout == 10)
        #expect(c.bootstrap.dcs["maximum_lag_on_failover"] == .int(1048576))
        #expect(c.bootstrap.dcs["synchronous_mode"] == .bool(false))
        #expect(c.bootstrap.dcs["postgresql"]?["parameters"]?["hot_standby"] == .bool(true))
        #expect(c.bootstrap.dcs["postgresql"]?["use_pg_rewind"] == .bool(true))
        #expect(c.bootstrap.method == "initdb")
        #expect(c.bootstrap.initdb == .array([.object(["encoding": .string("UTF8")]), .string("data-checksums")]))
        #expect(try UserOptions.initdbArguments(c.bootstrap.initdb) == ["--encoding=UTF8", "--data-checksums"])
        #expect(c.bootstrap.pgHBA == ["host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5"])
        #expect(c.bootstrap.users == ["admin": BootstrapUser(password: "admin-pw-2222", options: ["createrole", "createdb"])])
        #expect(c.bootstrap.postBootstrap == "/usr/local/bin/setup-cluster.sh")

        let pg = c.postgresql
        #expect(pg.listen == "127.0.0.1:5432")
        #expect(pg.port == 5432)
        #expect(pg.connectAddress == "127.0.0.1:5432")
        #expect(pg.dataDir == "data/postgresql0")
        #expect(pg.binDir == "/usr/lib/postgresql/15/bin")
        #expect(pg.pgpass == "/tmp/pgpass0")
        #expect(pg.pgCtlTimeout == 60)
        #expect(pg.removeOnRewindFailure && !pg.removeOnDivergedTimelines)
        var replication = PostgresUser(username: "replicator", password: "rep-pw-3333")
        replication.sslOptions = ["sslmode": "verify-full"]
        #expect(pg.replication == replication)
        #expect(pg.superuser == PostgresUser(username: "postgres", password: "super-pw-4444"))
        #expect(pg.rewind == PostgresUser(username: "rewind_user", password: "rewind-pw-5555"))
        #expect(pg.parameters == ["unix_socket_directories": .string(".."), "shared_buffers": .string("128MB"),
                                  "max_connections": .int(100)])
        #expect(pg.createReplicaMethods == ["wal_g", "basebackup"])
        #expect(pg.methodSections == ["wal_g": .object(["command": .string("/usr/local/bin/wal-g-restore"),
                                                        "no_leader": .int(1), "keep_data": .bool(true)])])
        #expect(pg.basebackup == .object(["max-rate": .string("100M"), "checkpoint": .string("fast")]))
        #expect(try UserOptions.basebackupArguments(pg.basebackup) == ["--checkpoint=fast", "--max-rate=100M"])

        #expect(c.tags == ["nofailover": .bool(false), "noloadbalance": .bool(false), "clonefrom": .bool(false),
                           "nosync": .bool(false)])
        #expect(c.noFailover == false && c.cloneFrom == false)
    }

    @Test func watchdogAsPatroniWritesIt() throws {
        // Patroni's default with no section: automatic, /dev/watchdog, 5 s before the key expires.
        let none = try ConfigLoader.parse(yaml: minimalYAML, checkFiles: false).config.watchdog
        #expect(none == WatchdogSettings())
        #expect(none.mode == .automatic && none.fenceTimeout(ttl: 30) == 25)
        let given = try ConfigLoader.parse(yaml: minimalYAML + """

            watchdog: {mode: require, device: /dev/watchdog1, safety_margin: -1, driver: testing, self_fence: true}
            """, checkFiles: false).config.watchdog
        #expect(given.mode == .required && given.device == "/dev/watchdog1" && given.driver == "testing" && given.selfFence)
        #expect(given.fenceTimeout(ttl: 30) == 15)
        for (bad, line) in [
            ("{mode: requird}", "watchdog.mode: \"requird\": expected off, automatic or required"),
            ("{device: watchdog}", "watchdog.device: \"watchdog\": expected an absolute path such as /dev/watchdog"),
            ("{safety_margin: -3}", "watchdog.safety_margin: -3: expected seconds (0 or more), or -1 for half the ttl"),
        ] {
            #expect(issueLines(minimalYAML + "\nwatchdog: \(bad)\n") == [line])
        }
    }

    @Test func unimplementedKeysAreListedNotRefused() throws {
        let c = try ConfigLoader.parse(yaml: postgres0YAML, checkFiles: false).config
        #expect(c.unimplementedKeys == [])
        #expect(c.log.dir == "/var/log/patroni")
        #expect(c.postgresql.callbacks == ["on_start": "/bin/true"])
        #expect(c.watchdog.mode == .off)
        let more = minimalYAML + """

        citus: {group: 0, database: citus}
        consul: {host: 127.0.0.1:8500}
        ctl: {insecure: true, ciphers: HIGH}
        something_new: [1, 2]
        """
        let c2 = try ConfigLoader.parse(yaml: more).config
        #expect(c2.unimplementedKeys == ["citus", "consul", "ctl.ciphers", "something_new"])
        #expect(c2.ctl.insecure)
    }

    @Test func defaults() throws {
        let c = try ConfigLoader.parse(yaml: minimalYAML, environment: ["HOME": "/home/postgres"]).config
        #expect(c.namespace == "/service/")
        #expect(c.bootstrap.ttl == 30 && c.bootstrap.loopWait == 10 && c.bootstrap.retryTimeout == 10)
        #expect(c.bootstrap.method == "initdb")
        #expect(c.postgresql.pgpass == "/home/postgres/pgpass")
        #expect(c.postgresql.pgCtlTimeout == 60)
        #expect(c.postgresql.connectAddress == "127.0.0.1:5432")
        #expect(c.restapi.connectAddress == "127.0.0.1:8008")
        #expect(c.postgresql.rewind == nil)
        #expect(c.postgresql.superuser.password == nil)
        #expect(c.log == LogSettings())
        #expect(c.unimplementedKeys == [])
    }

    @Test func etcd3Endpoints() throws {
        func endpoints(_ section: String) throws -> [String] {
            let yaml = minimalYAML.replacingOccurrences(of: "etcd3:\n  host: 127.0.0.1:2379", with: section)
            guard case .etcd3(let e) = try ConfigLoader.parse(yaml: yaml, checkFiles: false).config.dcs else { return [] }
            return e.endpoints
        }
        #expect(try endpoints("etcd3:\n  host: 10.0.0.1:2379") == ["http://10.0.0.1:2379"])
        #expect(try endpoints("etcd3:\n  host: 10.0.0.1") == ["http://10.0.0.1:2379"])
        #expect(try endpoints("etcd3:\n  hosts: [a:1, 'b:2']") == ["http://a:1", "http://b:2"])
        #expect(try endpoints("etcd3:\n  hosts:\n  - a:1\n  - b") == ["http://a:1", "http://b:2379"])
        #expect(try endpoints("etcd3:\n  hosts: a:1, b:2,c:3") == ["http://a:1", "http://b:2", "http://c:3"])
        #expect(try endpoints("etcd3:\n  hosts: a, b\n  port: 4001\n  protocol: https") == ["https://a:4001", "https://b:4001"])
        #expect(try endpoints("etcd3:\n  url: https://etcd.example:2380") == ["https://etcd.example:2380"])
        #expect(try endpoints("etcd3:\n  url: http://etcd.example") == ["http://etcd.example:2379"])
        #expect(try endpoints("etcd3:\n  host: '[::1]:2379'") == ["http://[::1]:2379"])
        // url wins over hosts, hosts over host (Patroni's order).
        #expect(try endpoints("etcd3:\n  host: h:1\n  hosts: [g:2]\n  url: http://u:3") == ["http://u:3"])
        #expect(try endpoints("etcd3:\n  host: h:1\n  hosts: [g:2]") == ["http://g:2"])

        let yaml = minimalYAML.replacingOccurrences(of: "etcd3:\n  host: 127.0.0.1:2379", with: """
        etcd3:
          hosts: e1:2379
          protocol: https
          username: root
          password: etcd-pw
          cacert: /ca.pem
          cert: /c.pem
          key: /k.pem
          srv: example.com
        """)
        let c = try ConfigLoader.parse(yaml: yaml, checkFiles: false).config
        var expected = Etcd3Settings(endpoints: ["https://e1:2379"])
        expected.username = "root"; expected.password = "etcd-pw"
        expected.cacert = "/ca.pem"; expected.cert = "/c.pem"; expected.key = "/k.pem"
        #expect(c.dcs == .etcd3(expected))
        #expect(c.unimplementedKeys == ["etcd3.srv"])
    }

    @Test func localStore() throws {
        let yaml = minimalYAML.replacingOccurrences(of: "etcd3:\n  host: 127.0.0.1:2379", with: "local:\n  path: /var/lib/stork/dcs")
        #expect(try ConfigLoader.parse(yaml: yaml).config.dcs == .local(path: "/var/lib/stork/dcs"))
    }

    @Test func customBootstrapMethod() throws {
        let yaml = minimalYAML + """

        bootstrap:
          method: clone_with_walg
          clone_with_walg:
            command: /bin/clone --flag
            recovery_conf:
              restore_command: envdir /etc/wal-g wal-g wal-fetch "%f" "%p"
              recovery_target_timeline: latest
            keep_existing_recovery_conf: true
          other_method:
            command: /bin/other
          post_bootstrap: /bin/post
          post_init: /bin/older
        """
        let loaded = try ConfigLoader.parse(yaml: yaml)
        let b = loaded.config.bootstrap
        #expect(b.method == "clone_with_walg")
        #expect(b.methodSections["clone_with_walg"]?["command"] == .string("/bin/clone --flag"))
        #expect(b.methodSections["clone_with_walg"]?["keep_existing_recovery_conf"] == .bool(true))
        #expect(b.methodSections["other_method"] == .object(["command": .string("/bin/other")]))
        #expect(b.postBootstrap == "/bin/post")
        #expect(b.custom?.command == ["/bin/clone", "--flag"])
        #expect(b.custom?.keepExistingRecoveryConf == true)
        #expect(b.custom?.noParams == false)
        #expect(b.custom?.recoveryConf?["recovery_target_timeline"] == .string("latest"))
        #expect(b.recoveryTimeout == nil && b.keepFailedDataDirs == 1)
        #expect(loaded.warnings == [])
        #expect(loaded.config.unimplementedKeys == [])
    }

    /// Each a one-line error at load time: nothing starts.
    @Test func badCustomBootstrap() {
        let cases: [(String, String)] = [
            ("bootstrap:\n  method: nothere", "bootstrap.method: \"nothere\": no section bootstrap.nothere with a command (or use initdb)"),
            ("bootstrap:\n  method: x\n  x: {no_params: true}", "bootstrap.x.command: required (the program that makes the new cluster's data directory)"),
            ("bootstrap:\n  method: x\n  x: {command: /bin/true, recovery_conf: [restore_command]}",
             "bootstrap.x.recovery_conf: expected a map of recovery parameters (restore_command, recovery_target_time, ...)"),
            ("bootstrap:\n  method: x\n  x: {command: /bin/true, recovery_conf: {recovery_target_action: resume}}",
             "bootstrap.x.recovery_conf.recovery_target_action: \"resume\": expected pause, promote or shutdown"),
            ("bootstrap:\n  recovery_timeout: 0", "bootstrap.recovery_timeout: 0: expected seconds, more than 0"),
            ("bootstrap:\n  keep_failed_data_dirs: -1", "bootstrap.keep_failed_data_dirs: -1: expected 0 or more"),
            ("bootstrap:\n  dcs:\n    standby_cluster: {port: 5432}", "bootstrap.dcs.standby_cluster.host: required"),
            ("archive: {url: \"ftp://host/x\"}", "archive.url: \"ftp://host/x\": expected file:///path, s3://bucket/prefix or https://host/path"),
            ("archive: {url: \"s3:///prefix\"}", "archive.url: \"s3:///prefix\": no bucket (s3://bucket/prefix)"),
            ("archive: {url: \"file:///srv/a\", endpoint: \"http://127.0.0.1:9\"}", "archive.endpoint: only for an s3:// archive"),
            ("archive: {url: \"s3://b/p\", endpoint: \"127.0.0.1:9\"}", "archive.endpoint: \"127.0.0.1:9\": expected https://host[:port]"),
            ("archive: {url: \"file:///srv/a\", prefetch: -1}", "archive.prefetch: -1: expected 0 (off) to 64 segments"),
            ("archive: {url: \"file:///srv/a\", concurrency: 0}", "archive.concurrency: 0: expected 1 to 32"),
            ("archive: {url: \"file:///srv/archive\", compression: brotli}", "archive.compression: \"brotli\": expected zstd (the default), lz4, gzip or none"),
            ("archive: {compression: zstd}", "archive.url: required"),
            ("bootstrap:\n  dcs:\n    standby_cluster: {host: a, create_replica_methods: [nosuch]}",
             "postgresql.create_replica_methods: \"nosuch\": no section postgresql.nosuch with a command (built in: basebackup, rsync, archive)"),
        ]
        for (yaml, expected) in cases {
            let found = issueLines(minimalYAML + "\n" + yaml)
            #expect(found.contains(expected), "\(yaml)\n\(found)")
        }
    }

    /// `postgresql.callbacks`, `pre_promote`, `before_stop` and `post_bootstrap`: commands
    /// split as a shell would, refused at load when they cannot be; an action Patroni does not
    /// have is listed as not implemented.
    @Test func callbackCommands() throws {
        let c = try ConfigLoader.parse(yaml: minimalYAML + """

          callbacks: {on_role_change: "/usr/local/bin/cb --quiet", on_foo: /bin/true}
          pre_promote: /usr/local/bin/fence
          before_stop: ""
        """, checkFiles: false).config
        #expect(c.postgresql.callbacks == ["on_role_change": "/usr/local/bin/cb --quiet"])
        #expect(c.postgresql.prePromote == "/usr/local/bin/fence" && c.postgresql.beforeStop == nil)
        #expect(c.unimplementedKeys == ["postgresql.callbacks.on_foo"])
        let cases = [
            ("  callbacks: {on_start: \"/bin/cb 'unclosed\"}", "postgresql.callbacks.on_start: \"/bin/cb 'unclosed\": an unbalanced quote or a trailing backslash"),
            ("  callbacks: [on_start]", "postgresql.callbacks: expected a map"),
            ("  pre_promote: {a: 1}", "postgresql.pre_promote: expected a string, found a map"),
            ("  proxy_address: pgbouncer", "postgresql.proxy_address: \"pgbouncer\": expected host:port"),
            (#"  before_stop: "x \\""#, #"postgresql.before_stop: "x \": an unbalanced quote or a trailing backslash"#),
        ]
        for (yaml, expected) in cases {
            let found = issueLines(minimalYAML + "\n" + yaml)
            #expect(found.contains(expected), "\(yaml)\n\(found)")
        }
    }

    /// Keys Stork accepts without acting on them yet are listed (the agent logs them, `stork
    /// check` prints them): in bootstrap.dcs unknown ones and set ones of synchronous
    /// replication, slots and failsafe; Patroni's topology tags; one set to its default is not.
    @Test func keysWithoutEffectAreListed() throws {
        let c = try ConfigLoader.parse(yaml: minimalYAML + """

        bootstrap:
          dcs:
            synchronous_mode: true
            synchronous_mode_strict: false
            synchronous_node_count: 1
            maximum_lag_on_syncnode: -1
            failsafe_mode: off
            slots: {cdc: {type: logical, database: app, plugin: pgoutput}}
            ignore_slots: []
            retry_timeouts: 10
            postgresql:
              parameters: {work_mem: 8MB}
              pg_ident: [map1 alice postgres]
              recovery_conf: {restore_command: "cp /a/%f %p"}
              use_slots: true
        tags:
          nofailover: false
          nosync: true
          replicatefrom: pg1
          failover_priority: 1
          nostream: false
          rack: r1
        """, checkFiles: false).config
        #expect(c.unimplementedKeys == [
            "bootstrap.dcs.postgresql.recovery_conf", "bootstrap.dcs.retry_timeouts", "bootstrap.dcs.slots", "bootstrap.dcs.synchronous_mode",
            "tags.nosync", "tags.replicatefrom",
        ])
        #expect(c.renderMasked().contains("# accepted but not implemented by Stork yet: bootstrap.dcs.postgresql.recovery_conf, bootstrap.dcs.retry_timeouts, "))
        let zero = try ConfigLoader.parse(yaml: minimalYAML + "\ntags: {failover_priority: 0}\n", checkFiles: false).config
        #expect(zero.unimplementedKeys == ["tags.failover_priority"])
    }

    @Test func yamlScalarsReadLikePyYAML() throws {
        let v = try ConfigLoader.yamlValue("""
        a: on
        b: "on"
        c: 0755
        d: 1.5
        e: ~
        f: 2024-01-01
        g: 12345678901234567890123
        base: &b {x: 1, y: 2}
        h:
          <<: *b
          y: 3
        """)
        #expect(v?["a"] == .bool(true))
        #expect(v?["b"] == .string("on"))
        #expect(v?["c"] == .int(0o755))
        #expect(v?["d"] == .double(1.5))
        #expect(v?["e"] == .null)
        #expect(v?["f"] == .string("2024-01-01"))
        #expect(v?["g"] == .string("12345678901234567890123"))
        #expect(v?["h"] == .object(["x": .int(1), "y": .int(3)]))
    }
}

@Suite("Timing adjustment (loop_wait + 2*retry_timeout <= ttl)")
struct TimingTests {
    func load(_ dcs: String) throws -> LoadedConfig {
        try ConfigLoader.parse(yaml: minimalYAML + "\nbootstrap:\n  dcs: \(dcs)\n")
    }

    @Test func validValuesAreKept() throws {
        let l = try load("{ttl: 40, loop_wait: 10, retry_timeout: 15}")
        #expect(l.warnings == [])
        #expect(l.config.bootstrap.ttl == 40 && l.config.bootstrap.loopWait == 10 && l.config.bootstrap.retryTimeout == 15)
    }

    @Test func loopWaitIsLoweredFirst() throws {
        let l = try load("{ttl: 30, loop_wait: 15, retry_timeout: 10}")
        #expect(l.config.bootstrap.loopWait == 10)
        #expect(l.config.bootstrap.retryTimeout == 10)
        #expect(l.config.bootstrap.dcs["loop_wait"] == .int(10))
        #expect(l.warnings == ["bootstrap.dcs: loop_wait + 2*retry_timeout must not exceed ttl (30, retry_timeout 10); loop_wait adjusted from 15 to 10"])
    }

    @Test func retryTimeoutIsLoweredWhenLoopWaitCannotBe() throws {
        // Defaults loop_wait 10 and retry_timeout 10 do not fit ttl 20: Patroni sets loop_wait 1, retry_timeout 9.
        let l = try load("{ttl: 20}")
        #expect(l.config.bootstrap.ttl == 20)
        #expect(l.config.bootstrap.loopWait == 1)
        #expect(l.config.bootstrap.retryTimeout == 9)
        #expect(l.warnings == ["bootstrap.dcs: loop_wait + 2*retry_timeout must not exceed ttl (20); loop_wait adjusted from 10 to 1 and retry_timeout from 10 to 9"])
    }

    @Test func minimumsAreEnforced() throws {
        let l = try load("{ttl: 5, loop_wait: 0, retry_timeout: 1}")
        #expect(l.config.bootstrap.ttl == 20)
        #expect(l.config.bootstrap.loopWait == 0 + 1)
        #expect(l.config.bootstrap.retryTimeout == 3)
        #expect(l.warnings == [
            "bootstrap.dcs.loop_wait: 0 is below the minimum 1; using 1",
            "bootstrap.dcs.retry_timeout: 1 is below the minimum 3; using 3",
            "bootstrap.dcs.ttl: 5 is below the minimum 20; using 20",
        ])
    }

    @Test func stringNumbersCount() throws {
        let l = try load("{ttl: '30', loop_wait: '20'}")
        #expect(l.config.bootstrap.loopWait == 10)
        #expect(l.warnings.count == 1)
    }
}

@Suite("An S3 endpoint over plain http")
struct PlainHTTPEndpointTests {
    func warnings(_ endpoint: String) throws -> [String] {
        try ConfigLoader.parse(yaml: minimalYAML + "\narchive:\n  url: s3://wal/main\n  endpoint: \(endpoint)\n").warnings
    }

    /// Before: accepted without a word.
    @Test func isWarnedAboutUnlessOnLoopback() throws {
        #expect(try warnings("http://10.0.0.5:9000") == [
            "archive.endpoint: http://10.0.0.5:9000 is plain http: WAL and base backups cross the network unencrypted and can be changed on the way (requests are signed, not hidden); use https://"])
        #expect(try warnings("http://minio.internal/") .count == 1)
        for quiet in ["https://minio.internal:9000", "http://127.0.0.1:9000", "http://localhost:9000/", "http://[::1]:9000"] {
            #expect(try warnings(quiet) == [], "\(quiet)")
        }
    }
}
