import Foundation
import Logging
import StorkConfig

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

    /// Full path of a PostgreSQL program (`initdb`, `pg_ctl`, ...): `bin_dir`, else
    /// `pg_config --bindir`, else the name itself (PATH).
    public func binary(_ name: String) -> String { fatalError("not implemented") }

    public func dataDirectoryState() -> DataDirectoryState { fatalError("not implemented") }

    /// Runs `pg_controldata` on the data directory.
    public func controlData() async throws -> ControlData { throw PostgresError("not implemented") }

    /// `initdb` with `bootstrap.initdb` options (both Patroni forms; `pgdata`, `nosync`,
    /// `pwfile`, `sync-only`, `version` refused), `--username` = the superuser, and its
    /// password through a temporary 0600 file removed afterwards.
    public func initdb(options: JSONValue?) async throws { throw PostgresError("not implemented") }

    /// `pg_basebackup -D data_dir -X stream -c fast` from `conninfo` (no password in it: the
    /// replication password goes through the pgpass file), with `postgresql.basebackup`
    /// options in both forms (Patroni's refused options refused).
    public func basebackup(from conninfo: String, options: JSONValue?) async throws { throw PostgresError("not implemented") }

    /// Writes the managed configuration: `postgresql.conf` (the original kept once as
    /// `postgresql.base.conf` and included), `pg_hba.conf` from `hba`, and for a replica
    /// `standby.signal` and `primary_conninfo`; for a primary removes `standby.signal`.
    public func writeConfiguration(parameters: [String: JSONValue], hba: [String], role: ServerRole) throws {
        throw PostgresError("not implemented")
    }

    /// `pg_ctl start -w -t timeout -l <log>`; throws when the server does not start.
    public func start(timeout: Int) async throws { throw PostgresError("not implemented") }

    /// `pg_ctl stop -m mode -w -t timeout`; `fast` by default, escalating to `immediate` on timeout.
    public func stop(mode: String = "fast", timeout: Int) async throws { throw PostgresError("not implemented") }

    /// `postmaster.pid` names a live postmaster.
    public func isRunning() -> Bool { fatalError("not implemented") }

    /// Connects over the local socket or `listen` address as the superuser and reads
    /// recovery state, WAL positions, timeline, version and receiver status.
    public func serverState() async throws -> ServerState { throw PostgresError("not implemented") }

    /// Creates or updates the replication role and `bootstrap.users`, and sets the
    /// superuser's password, on a freshly bootstrapped primary.
    public func createRoles(users: [String: BootstrapUser]) async throws { throw PostgresError("not implemented") }

    /// Runs `post_bootstrap` with the new primary's connection string as its one argument,
    /// a pgpass file in `PGPASSFILE`; throws with its exit status and output tail on failure.
    public func runPostBootstrap(_ command: String) async throws { throw PostgresError("not implemented") }

    /// Removes everything inside the data directory (keeping the directory itself).
    /// Only for the agent's own failed work.
    public func wipeDataDirectory() throws { throw PostgresError("not implemented") }

    /// Runs `SELECT pg_promote()` / `pg_ctl promote`.
    public func promote() async throws { throw PostgresError("not implemented") }

    /// `postgres://host:port/postgres` for the member key's `conn_url`.
    public var connURL: String { fatalError("not implemented") }

    /// The conninfo (no password) to reach a member from its `conn_url` as the replication user,
    /// with `application_name` = this member's name. Used for `primary_conninfo` and basebackup.
    public func replicationConninfo(toConnURL url: String) -> String { fatalError("not implemented") }
}
