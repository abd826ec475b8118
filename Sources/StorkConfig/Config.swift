import Foundation

/// Stork's version: `stork --version`, the REST API's `patroni.version`, member keys, User-Agent.
public let storkVersion = "0.1.0"

/// The effective configuration of one Stork agent: Patroni's YAML keys
/// (https://patroni.readthedocs.io, "YAML Configuration Settings") after environment
/// overrides, with Patroni's defaults filled in. Built by `ConfigLoader`.
public struct Config: Sendable, Equatable {
    /// `scope`: the cluster name; the DCS keys live under `<namespace>/<scope>/`.
    public var scope: String
    /// `namespace`: default `/service/`.
    public var namespace: String = "/service/"
    /// `name`: this member's name, unique in the cluster.
    public var name: String
    public var log = LogSettings()
    public var restapi = RestAPISettings()
    /// `ctl`: how this member's tools (`stork reinit`, later the agent itself) call members' REST APIs.
    public var ctl = CtlSettings()
    /// Exactly one DCS: `etcd3` or Stork's embedded `local` store (a Patroni `etcd` v2 section is refused).
    public var dcs: DCSSettings
    public var bootstrap = BootstrapSettings()
    public var postgresql: PostgresSettings
    /// `tags`: written into the member key as given (`clonefrom`, `nofailover`, `noloadbalance`, `nosync`, ...).
    public var tags: [String: JSONValue] = [:]
    /// Stork's `archive` section: where `stork wal-push` and `wal-fetch` keep the WAL.
    public var archive: ArchiveSettings? = nil
    /// `watchdog`: how a primary whose agent hangs or dies is stopped before its key expires.
    public var watchdog = WatchdogSettings()
    /// The absolute path of the file this configuration was read from, when there was one
    /// (the agent names it in the `archive_command` it sets).
    public var configFile: String? = nil
    /// Top-level and nested keys that were accepted but are not implemented yet (logged once).
    public var unimplementedKeys: [String] = []

    public init(scope: String, name: String, dcs: DCSSettings, postgresql: PostgresSettings) {
        self.scope = scope
        self.name = name
        self.dcs = dcs
        self.postgresql = postgresql
    }

    /// `<namespace>/<scope>/` with exactly one slash between the parts, e.g. `/service/batman/`.
    public var keyPrefix: String {
        var ns = namespace
        if !ns.hasPrefix("/") { ns = "/" + ns }
        if !ns.hasSuffix("/") { ns += "/" }
        return ns + scope + "/"
    }

    public var noFailover: Bool { tags["nofailover"]?.isTruthy ?? false }
    public var cloneFrom: Bool { tags["clonefrom"]?.isTruthy ?? false }
}

/// `watchdog`, as Patroni has it, plus Stork's `self_fence`.
public struct WatchdogSettings: Sendable, Equatable {
    public enum Mode: String, Sendable { case off, automatic, required }
    /// `watchdog.mode`: Patroni's default is automatic (use the device when it can be opened).
    public var mode: Mode = .automatic
    /// `watchdog.device`: a Linux watchdog device.
    public var device: String = "/dev/watchdog"
    /// `watchdog.safety_margin`: the device fires this many seconds before the leader key
    /// expires (-1: at half the ttl).
    public var safetyMargin: Int = 5
    /// `watchdog.driver`: `default`, or Patroni's `testing` (a named pipe gets the timeout as
    /// text instead of an ioctl).
    public var driver: String = "default"
    /// `watchdog.self_fence` (Stork): a companion process stops a primary whose agent stopped
    /// sending heartbeats, for machines without a watchdog device. Off by default.
    public var selfFence: Bool = false
    public init() {}

    /// Seconds after a leader key refresh by which a primary must be stopped when its agent
    /// does not refresh again: the watchdog's timeout and the self-fence's deadline.
    public func fenceTimeout(ttl: Int) -> Int {
        safetyMargin == -1 ? ttl / 2 : ttl - safetyMargin
    }
}

public struct LogSettings: Sendable, Equatable {
    /// `log.level`: DEBUG, INFO (default), WARNING, ERROR, CRITICAL.
    public var level: String = "INFO"
    /// `log.type`: `plain` (Patroni's line format, default) or `json`.
    public var type: String = "plain"
    /// `log.dir`: the agent logs to `<dir>/patroni.log` instead of standard error, rotated at
    /// `log.file_size` bytes (Patroni's default 25,000,000), `log.file_num` old files kept (4).
    public var dir: String?
    public var fileSize = 25_000_000
    public var fileNum = 4
    public init() {}
}

public struct RestAPISettings: Sendable, Equatable {
    /// `restapi.listen`: `host:port`, default `127.0.0.1:8008`... Patroni requires it; so do we.
    public var listen: String = ""
    /// `restapi.connect_address`: what other members and tools use; goes into `api_url`.
    public var connectAddress: String = ""
    public var username: String?
    public var password: String?
    /// `restapi.certfile`: PEM certificate (it may hold the key too); set means HTTPS.
    public var certfile: String?
    /// `restapi.keyfile`: PEM private key of `certfile`.
    public var keyfile: String?
    /// `restapi.keyfile_password`: the passphrase of an encrypted `keyfile` (a secret).
    public var keyfilePassword: String?
    /// `restapi.cafile`: PEM CA certificates that client certificates are checked against.
    public var cafile: String?
    /// `restapi.verify_client`: `none` (default), `optional` or `required`.
    public var verifyClient: String = "none"
    /// `restapi.allowlist`: addresses (IP, CIDR network or host name) that may send requests
    /// that change something; empty means any.
    public var allowlist: [String] = []
    /// `restapi.request_queue_size`: the listen backlog, connections the kernel holds for the
    /// API beyond those it serves (Patroni's default 5, at most 4096).
    public var requestQueueSize: Int = 5
    public init() {}

    /// HTTPS is on when a certificate is given (Patroni's rule).
    public var usesTLS: Bool { certfile.map { !$0.isEmpty } ?? false }

    /// What to warn about at start when anyone who reaches the API may change the cluster:
    /// no basic authentication, no required client certificate, no allowlist, and an address
    /// beyond loopback. Nil otherwise.
    public var openToEveryone: String? {
        guard basicAuthorization(username: username, password: password) == nil, verifyClient != "required", allowlist.isEmpty else { return nil }
        let hosts = ListenAddress.split(listen).hosts.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "[] ")) }
        if !hosts.isEmpty && hosts.allSatisfy({ $0 == "localhost" || $0 == "::1" || $0.hasPrefix("127.") }) { return nil }
        return "the REST API on \(listen) lets anyone who reaches it switch over, fail over, restart and reinitialize members: set restapi.authentication, restapi.verify_client: required or restapi.allowlist, or listen on 127.0.0.1"
    }
}

/// The `Authorization` header value of HTTP basic authentication, nil unless both are given:
/// what a REST API client sends and what the server compares with.
public func basicAuthorization(username: String?, password: String?) -> String? {
    guard let username, let password else { return nil }
    return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
}

/// Patroni's `ctl` section: the client side of the REST API.
public struct CtlSettings: Sendable, Equatable {
    /// `ctl.insecure`: do not verify the server's certificate (with a client certificate: its host name only).
    public var insecure = false
    /// `ctl.cacert`: CA of the members' certificates (falls back to `restapi.cafile`).
    public var cacert: String?
    /// `ctl.certfile`/`keyfile`/`keyfile_password`: the client certificate sent to members.
    public var certfile: String?
    public var keyfile: String?
    public var keyfilePassword: String?
    /// `ctl.authentication`: basic authentication (falls back to `restapi.authentication`).
    public var username: String?
    public var password: String?
    public init() {}
}

public enum DCSSettings: Sendable, Equatable {
    case etcd3(Etcd3Settings)
    /// Stork's embedded single-host store (`local.path`): one machine only.
    case local(path: String)
}

public struct Etcd3Settings: Sendable, Equatable {
    /// Endpoints as `http(s)://host:port`, from `host`, `hosts` or `url` and `protocol`.
    public var endpoints: [String]
    public var username: String?
    public var password: String?
    public var cacert: String?
    public var cert: String?
    public var key: String?
    public init(endpoints: [String], username: String? = nil, password: String? = nil,
                cacert: String? = nil, cert: String? = nil, key: String? = nil) {
        self.endpoints = endpoints
        self.username = username
        self.password = password
        self.cacert = cacert
        self.cert = cert
        self.key = key
    }
}

public struct BootstrapSettings: Sendable, Equatable {
    /// `bootstrap.dcs`: written to the DCS `config` key by the node that bootstraps,
    /// as given (ttl, loop_wait, retry_timeout, postgresql.parameters, ...).
    public var dcs: [String: JSONValue] = [:]
    /// `bootstrap.method`: `initdb` (default) or the name of a section with a `command`.
    public var method: String = "initdb"
    /// `bootstrap.initdb` as Patroni takes it: a list of switches and single-key maps, or a map.
    public var initdb: JSONValue? = nil
    /// `bootstrap.pg_hba`: lines used when `postgresql.pg_hba` is not set.
    public var pgHBA: [String]? = nil
    /// `bootstrap.users`: name → {password, options}.
    public var users: [String: BootstrapUser] = [:]
    /// `bootstrap.post_bootstrap` (or the older `post_init`): a command.
    public var postBootstrap: String? = nil
    /// Custom bootstrap method sections (`bootstrap.<method>` with `command`, `no_params`,
    /// `keep_existing_recovery_conf`, `recovery_conf`, extra keys), kept as given: the section
    /// named by `method`, and any other section that has a `command`.
    public var methodSections: [String: JSONValue] = [:]
    /// The custom method `method` names, read and checked; nil for initdb.
    public var custom: BootstrapMethodSpec? = nil
    /// Stork's `bootstrap.recovery_timeout`: seconds a custom bootstrap's recovery may take
    /// (time paused at the target not counted); nil waits as long as it takes.
    public var recoveryTimeout: Double? = nil
    /// Stork's `bootstrap.keep_failed_data_dirs`: how many data directories of failed
    /// bootstraps are kept, moved aside (default 1, the newest); 0 removes a failed one.
    public var keepFailedDataDirs: Int = 1
    public init() {}

    /// Cluster-wide timing from `bootstrap.dcs` with Patroni's defaults.
    public var ttl: Int { dcs["ttl"]?.intValue ?? 30 }
    public var loopWait: Int { dcs["loop_wait"]?.intValue ?? 10 }
    public var retryTimeout: Int { dcs["retry_timeout"]?.intValue ?? 10 }
}

/// A custom bootstrap method (`bootstrap.<method>`), called as Patroni calls it.
public struct BootstrapMethodSpec: Sendable, Equatable {
    public var name: String
    /// `command`, split like a shell would.
    public var command: [String]
    /// `no_params`: no `--scope=` and `--datadir=`.
    public var noParams = false
    /// `keep_existing_recovery_conf`: recovery settings and signal files the tool wrote stay.
    public var keepExistingRecoveryConf = false
    /// `recovery_conf`: recovery parameters for the restored copy (`restore_command`,
    /// `recovery_target_*`, ...); with it, the copy recovers under `recovery.signal`.
    public var recoveryConf: [String: JSONValue]? = nil
    /// The section as given: its other keys go to the command as `--key=value`.
    public var section: [String: JSONValue] = [:]
    /// `bootstrap.method: archive` (a section without a command): a point-in-time clone from
    /// Stork's archive.
    public var archive: ArchiveBootstrapSource? = nil
    /// Keys the command never gets as arguments.
    public static let reservedKeys: Set<String> = ["command", "no_params", "keep_existing_recovery_conf", "recovery_conf"]
    public init(name: String, command: [String]) {
        self.name = name
        self.command = command
    }
}

/// `bootstrap.archive`: the cluster whose archive a new cluster is restored from, and to where.
public struct ArchiveBootstrapSource: Sendable, Equatable {
    /// The source archive: the section's own `url` (and S3 keys), else the `archive` section's.
    public var archive: ArchiveSettings
    /// The source cluster's scope (default: this cluster's, to rebuild it from its own archive).
    public var scope: String?
    /// A backup to restore by name; else the newest that ended before the target.
    public var backup: String?
    public enum Target: Sendable, Equatable {
        /// No target: the end of the archive.
        case end
        case time(String)
        case lsn(String)
        case xid(String)
        case name(String)
        case immediate
    }
    public var target: Target = .end
    /// The recovery parameters the section gives (`recovery_target_*`), less `restore_command`,
    /// which the agent sets to `stork wal-fetch --bootstrap-source`.
    public var recoveryParameters: [String: JSONValue] = [:]
    public init(archive: ArchiveSettings) { self.archive = archive }
}

public struct BootstrapUser: Sendable, Equatable {
    public var password: String?
    /// Options for CREATE ROLE, e.g. `createrole`, `createdb`.
    public var options: [String]
    public init(password: String?, options: [String]) { self.password = password; self.options = options }
}

public struct PostgresUser: Sendable, Equatable {
    public var username: String
    public var password: String?
    /// sslmode, sslcert, sslkey, sslrootcert, sslcrl, channel_binding, gssencmode as given.
    public var sslOptions: [String: String] = [:]
    public init(username: String, password: String?) { self.username = username; self.password = password }
}

public struct PostgresSettings: Sendable, Equatable {
    /// `postgresql.listen`: `host[,host...]:port`.
    public var listen: String
    /// `postgresql.connect_address`: `host:port` others use to reach this member.
    public var connectAddress: String
    public var dataDir: String
    /// `postgresql.bin_dir`: empty means `pg_config --bindir`, then PATH.
    public var binDir: String = ""
    /// `postgresql.pgpass`: where Stork writes the pgpass file it uses for connections.
    public var pgpass: String
    public var superuser: PostgresUser
    public var replication: PostgresUser
    public var rewind: PostgresUser?
    /// `postgresql.parameters`: override `bootstrap.dcs.postgresql.parameters`.
    public var parameters: [String: JSONValue] = [:]
    /// `postgresql.pg_hba`: lines; wins over `bootstrap.pg_hba`.
    public var pgHBA: [String]? = nil
    /// `postgresql.pg_ident`: lines of pg_ident.conf; wins over the DCS's (nil: neither says,
    /// and the file is left as it is).
    public var pgIdent: [String]? = nil
    /// `postgresql.create_replica_methods`; empty means `[basebackup]`.
    public var createReplicaMethods: [String] = []
    /// `postgresql.basebackup`: a list of switches and single-key maps, or a map.
    public var basebackup: JSONValue? = nil
    /// Other per-method sections (`postgresql.<method>`), as given.
    public var methodSections: [String: JSONValue] = [:]
    /// The replica-creation chain: `create_replica_methods` (default `[basebackup]`) with each
    /// method's settings, checked.
    public var replicaMethods: [ReplicaMethodSpec] = [ReplicaMethodSpec.basebackupDefault]
    /// The chain the first member of a standby cluster builds itself with from the remote
    /// primary (`bootstrap.dcs.standby_cluster.create_replica_methods`, default basebackup);
    /// nil without `standby_cluster`.
    public var standbyReplicaMethods: [ReplicaMethodSpec]? = nil
    /// `postgresql.pg_ctl_timeout`: seconds to wait for start and stop (Patroni: 60).
    public var pgCtlTimeout: Int = 60
    /// `postgresql.use_pg_rewind`: a former primary whose history diverged from the new
    /// leader's is rewound with pg_rewind; without it, it is rebuilt through the replica methods.
    public var useRewind = false
    /// `postgresql.remove_data_directory_on_rewind_failure` and
    /// `remove_data_directory_on_diverged_timelines` (Patroni's): a former primary's rebuild
    /// that cannot keep the old directory until the new copy is in place (short of space, or a
    /// mount point built in place) may remove it first. Off, the directory is kept: it may hold
    /// the only copy of what this member wrote.
    public var removeOnRewindFailure = false
    public var removeOnDivergedTimelines = false
    /// `postgresql.callbacks`: the command of each action (`CallbackAction`), run as Patroni
    /// runs it, `CMD ACTION ROLE SCOPE`, in the background.
    public var callbacks: [String: String] = [:]
    /// `postgresql.pre_promote`: run before a promotion, which a non-zero exit cancels.
    public var prePromote: String?
    /// `postgresql.before_stop`: run, and waited for, before every stop of PostgreSQL.
    public var beforeStop: String?
    /// `postgresql.proxy_address`: a connection pooler in front of this member, published in
    /// the member key as `proxy_url`.
    public var proxyAddress: String?
    /// `postgresql.use_unix_socket` and `use_unix_socket_repl`: the agent's own connections to
    /// its server (superuser; replication) go through the first of `unix_socket_directories`
    /// (libpq's default directory when the parameter is not set) instead of TCP.
    public var useUnixSocket = false
    public var useUnixSocketRepl = false
    /// Patroni's callback actions, the keys of `postgresql.callbacks`.
    public static let callbackActions = ["on_start", "on_stop", "on_restart", "on_reload", "on_role_change"]
    public init(listen: String, connectAddress: String, dataDir: String, pgpass: String,
                superuser: PostgresUser, replication: PostgresUser) {
        self.listen = listen
        self.connectAddress = connectAddress
        self.dataDir = dataDir
        self.pgpass = pgpass
        self.superuser = superuser
        self.replication = replication
    }
}

/// Stork's `archive` section.
public struct ArchiveSettings: Sendable, Equatable {
    public enum Compression: String, Sendable, Equatable {
        case zstd, lz4, gzip, none
        /// The file name suffix of an archived object.
        public var suffix: String {
            switch self {
            case .zstd: ".zst"
            case .lz4: ".lz4"
            case .gzip: ".gz"
            case .none: ""
            }
        }
    }

    /// `s3://bucket/prefix` with the section's `endpoint`, `region` and credentials; a missing
    /// credential comes from the usual `AWS_*` variables when the archive is opened.
    public struct S3Location: Sendable, Equatable {
        public var bucket: String
        /// Without leading or trailing slashes; may be empty.
        public var prefix: String
        /// `https://host[:port]` (or `http://` for a test server); nil is AWS's own for `region`.
        public var endpoint: String?
        public var region: String?
        public var accessKeyID: String?
        public var secretAccessKey: String?
        public var sessionToken: String?
        public init(bucket: String, prefix: String) {
            self.bucket = bucket
            self.prefix = prefix
        }
    }

    public enum Location: Sendable, Equatable {
        /// `file:///path`: a local or mounted directory.
        case directory(String)
        case s3(S3Location)
        /// `https://...`: read only (restores and wal-fetch), for an archive served by a web server.
        case https(String)
    }

    public var location: Location
    public var compression: Compression = .zstd
    /// `prefetch`: WAL segments `stork wal-fetch` fetches ahead into its spool (0 turns it off).
    public var prefetch = 8
    /// `concurrency`: parallel transfers and (de)compressions of backups and prefetches.
    public var concurrency = 2
    public init(location: Location) { self.location = location }
    /// A `file://` archive.
    public init(directory: String) { self.location = .directory(directory) }
}
