import Foundation
import Logging
import StorkConfig
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What is at `postgresql.data_dir`.
public enum DataDirectoryState: Sendable, Equatable {
    /// Absent, or an empty directory: a new member.
    case empty
    /// Has `PG_VERSION` and `global/pg_control`.
    case initialized
    /// Not empty but not a data directory either (a half-copied clone, stray files):
    /// the agent never starts it; the reason says what is missing.
    case unusable(String)
}

/// The role a started server should have.
public enum ServerRole: Sendable, Equatable {
    case primary
    /// A standby following `primaryConninfo` (nil: no upstream known yet).
    case replica(primaryConninfo: String?)
    /// A custom bootstrap's restored copy recovering before it becomes the new cluster's
    /// primary: `recoveryConf` in postgresql.conf and `recovery.signal`; nil keeps the
    /// recovery settings and signal files the restore tool wrote (`keep_existing_recovery_conf`).
    case bootstrapRecovery(recoveryConf: [String: JSONValue]?)
}

/// The local PostgreSQL instance of one member: its data directory, its binaries, its
/// configuration files, and the server process.
public final class PostgresNode: Sendable {
    public let settings: PostgresSettings
    public let memberName: String
    /// When set (Stork runs as root), child processes run as this user.
    public let runAs: OSUser?
    public let logger: Logger

    public init(settings: PostgresSettings, memberName: String, runAs: OSUser? = nil, logger: Logger) {
        self.settings = settings
        self.memberName = memberName
        self.runAs = runAs
        self.logger = logger
    }

    /// Replication credentials for upstreams this node reads from (basebackup,
    /// `primary_conninfo`); every pgpass write keeps them beside the local superuser's.
    let upstreamPgpass = Mutex<[PgpassEntry]>([])
    /// Held while the pgpass file is written.
    let pgpassWriter = Mutex<Void>(())

    /// Full path of a PostgreSQL program (`initdb`, `pg_ctl`, ...): `bin_dir`, else
    /// `pg_config --bindir`, else the name itself (PATH).
    public func binary(_ name: String) -> String {
        if !settings.binDir.isEmpty { return (settings.binDir as NSString).appendingPathComponent(name) }
        if let dir = PostgresNode.pgConfigBindir { return (dir as NSString).appendingPathComponent(name) }
        return name
    }

    /// `pg_config --bindir`, asked once per process.
    static let pgConfigBindir: String? = ProcessRunner.captureSynchronously("pg_config", ["--bindir"])

    /// `postgres://host:port/postgres` for the member key's `conn_url`.
    public var connURL: String { "postgres://\(settings.connectAddress)/postgres" }

    /// The conninfo (no password) to reach a member from its `conn_url` as the replication user.
    /// `primary_conninfo` carries `application_name` = this member's name (what
    /// pg_stat_replication and synchronous_standby_names show); a clone passes nil, so that
    /// pg_basebackup's WAL stream shows as `pg_basebackup`, never as a streaming replica.
    public func replicationConninfo(toConnURL url: String, applicationName: String?? = .none) -> String {
        let (host, port) = PostgresNode.hostAndPort(fromConnURL: url)
        var pairs: [(String, String)] = [("host", host), ("port", port),
                                         ("user", settings.replication.username), ("dbname", "postgres")]
        if let name = applicationName ?? memberName { pairs.append(("application_name", name)) }
        for key in settings.replication.sslOptions.keys.sorted() {
            pairs.append((key, settings.replication.sslOptions[key]!))
        }
        return ConnInfo.format(pairs)
    }
}
