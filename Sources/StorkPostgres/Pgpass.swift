import Foundation
import Logging
import StorkConfig
import StorkProcess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Credentials without argv: the pgpass file, the replication service file, and the
// connection strings (local and to other members) that use them; the roles.
extension PostgresNode {
    /// The libpq service file (0600) with the secrets of `primary_conninfo` that have no file
    /// of their own (an `sslpassword`), beside the pgpass file.
    public var replicationServiceFile: String { settings.pgpass + ".service" }

    /// Host and port from `postgres://[user@]host[:port][/db]` (IPv6 in brackets).
    public static func hostAndPort(fromConnURL url: String) -> (host: String, port: String) {
        var rest = Substring(url)
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            let host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            return (host, after.hasPrefix(":") ? String(after.dropFirst()) : "5432")
        }
        if let colon = rest.lastIndex(of: ":"), rest.firstIndex(of: ":") == colon {
            return (String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
        }
        return (String(rest), "5432")
    }

    /// Runs `body` with `conninfo` fit for a command line (pg_basebackup's `--dbname`, the
    /// argument of `post_bootstrap`) and the environment the program needs: secrets such as
    /// `sslpassword` go to a temporary libpq service file (0600, owned by ``runAs``, in
    /// `PGSERVICEFILE`), removed when `body` returns.
    public func withCommandLineConninfo<T>(_ conninfo: String,
                                    _ body: (_ conninfo: String, _ environment: [String: String]) async throws -> T) async throws -> T {
        let split = try ConnInfo.movingSecrets(conninfo, toService: "stork")
        guard let text = split.serviceFile else { return try await body(conninfo, [:]) }
        let path = try writeTemporaryFile(prefix: "stork-pgservice", contents: text)
        defer { unlink(path) }
        return try await body(split.conninfo, ["PGSERVICEFILE": path])
    }


    /// Writes `settings.pgpass` (mode 0600, owned by ``runAs``) with exactly these entries.
    /// Writes the pgpass file with every entry this node knows now (`pgpassEntries()`); one
    /// writer at a time, so that concurrent connections never leave an entry out.
    public func writePgpass() throws {
        try pgpassWriter.withLock { _ in try writePgpass(entries: pgpassEntries()) }
    }

    public func writePgpass(entries: [PgpassEntry]) throws {
        let contents = entries.map { $0.line + "\n" }.joined()
        // Every local connection asks for the file: rewrite (and fsync) it only when it changed.
        var st = stat()
        if stat(settings.pgpass, &st) == 0, st.st_mode & 0o777 == 0o600, runAs.map({ $0.uid == st.st_uid }) ?? true,
           FileManager.default.contents(atPath: settings.pgpass) == Data(contents.utf8) {
            return
        }
        try writeOwnedFile(settings.pgpass, contents: contents)
    }

    /// What the pgpass file should hold now: the superuser for local connections, then the
    /// replication user for each upstream this node reads from.
    public func pgpassEntries() -> [PgpassEntry] {
        var entries: [PgpassEntry] = []
        if let password = settings.superuser.password {
            let port = String(settings.port)
            for host in Set([localHost, "localhost", "127.0.0.1", "::1"]).sorted() {
                entries.append(PgpassEntry(host: host, port: port, user: settings.superuser.username, password: password))
            }
        }
        return entries + upstreamPgpass.withLock { $0 }
    }

    /// Notes the replication credentials for the host and port `conninfo` names.
    public func rememberUpstream(conninfo: String) {
        guard let password = settings.replication.password else { return }
        let pairs = ConnInfo.parse(conninfo) ?? []
        let host = pairs.last(where: { $0.key == "host" || $0.key == "hostaddr" })?.value ?? "localhost"
        let port = pairs.last(where: { $0.key == "port" })?.value ?? "5432"
        let user = pairs.last(where: { $0.key == "user" })?.value ?? settings.replication.username
        remember(PgpassEntry(host: host, port: port, user: user, password: password))
    }

    func remember(_ entry: PgpassEntry) {
        upstreamPgpass.withLock { list in
            list.removeAll { $0.host == entry.host && $0.port == entry.port && $0.user == entry.user }
            list.append(entry)
        }
    }


    /// The host local connections use: the first `listen` address, wildcards mapped to loopback.
    var localHost: String {
        let first = settings.listenAddresses.split(separator: ",").first
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "127.0.0.1"
        switch first {
        case "", "*", "0.0.0.0": return "127.0.0.1"
        case "::": return "::1"
        default: return first
        }
    }

    /// With `use_unix_socket(_repl)`: the first of `unix_socket_directories` that names a
    /// directory (an `@` entry is Linux's abstract namespace, which libpq cannot name as a
    /// host); nil when the parameter is not set (libpq's own default directory), and the TCP
    /// address when none fits, as Patroni falls back.
    var socketDirectory: String? {
        guard let value = settings.parameters["unix_socket_directories"]?.scalarText else { return nil }
        let dirs = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return dirs.first { $0.hasPrefix("/") } ?? localHost
    }

    /// The superuser's conninfo to this node; no password (it is in the pgpass file). With
    /// `statementTimeout` (milliseconds, 0 for none), the session's `statement_timeout`.
    func localConninfo(passfile: Bool, statementTimeout: Int? = nil) -> String {
        var pairs: [(String, String)] = [("port", String(settings.port)), ("user", settings.superuser.username), ("dbname", "postgres")]
        if let host = settings.useUnixSocket ? socketDirectory : localHost { pairs.insert(("host", host), at: 0) }
        if passfile { pairs += [("passfile", settings.pgpass), ("connect_timeout", "3"), ("application_name", "stork")] }
        if let statementTimeout { pairs.append(("options", "-c statement_timeout=\(statementTimeout)")) }
        for key in settings.superuser.sslOptions.keys.sorted() { pairs.append((key, settings.superuser.sslOptions[key]!)) }
        return ConnInfo.format(pairs)
    }

    /// A connection as the superuser to another member (`conn_url`), its password through the
    /// pgpass file; for operations replication connections cannot do (`pg_backup_start`).
    public func superuserConnection(toConnURL url: String) async throws -> Connection {
        try await Connection.connect(conninfo: conninfo(toConnURL: url, as: settings.superuser, applicationName: "stork"), timeout: 5)
    }

    /// A replication connection as the replication user to a member (`conn_url`): it accepts
    /// replication commands (`IDENTIFY_SYSTEM`, `TIMELINE_HISTORY`, `SHOW`) only.
    func replicationConnection(toConnURL url: String) async throws -> Connection {
        var conninfo = try conninfo(toConnURL: url, as: settings.replication, applicationName: "stork") + " replication=true"
        if url == connURL && settings.useUnixSocketRepl {
            // This member's own server through its socket (libpq reads the password of a socket
            // connection under `localhost`); the later `host` wins.
            if let password = settings.replication.password {
                remember(PgpassEntry(host: "localhost", port: String(settings.port), user: settings.replication.username, password: password))
                try writePgpass()
            }
            conninfo += " " + ConnInfo.format([("host", socketDirectory ?? "")])
        }
        return try await Connection.connect(conninfo: conninfo, timeout: 5)
    }

    /// `user`'s conninfo to another member (`conn_url`), without a password: it goes into the
    /// pgpass file, written here.
    func conninfo(toConnURL url: String, as user: PostgresUser, applicationName: String) throws -> String {
        let (host, port) = PostgresNode.hostAndPort(fromConnURL: url)
        if let password = user.password { remember(PgpassEntry(host: host, port: port, user: user.username, password: password)) }
        try writePgpass()
        var pairs: [(String, String)] = [("host", host), ("port", port), ("user", user.username), ("dbname", "postgres"),
                                         ("passfile", settings.pgpass), ("connect_timeout", "5"), ("application_name", applicationName)]
        for key in user.sslOptions.keys.sorted() { pairs.append((key, user.sslOptions[key]!)) }
        return ConnInfo.format(pairs)
    }

    /// A new connection to this node as the superuser.
    ///
    /// The agent's queries run with Patroni's `statement_timeout` of 2 s: one that hangs (a lock
    /// it waits for) must fail, not stall the cycle past the ttl while the primary keeps its
    /// key. Work that may take long (a checkpoint, a base backup) asks for 0.
    public func localConnection(statementTimeout: Int = PostgresNode.agentStatementTimeout) async throws -> Connection {
        try writePgpass()
        return try await Connection.connect(conninfo: localConninfo(passfile: true, statementTimeout: statementTimeout), timeout: 3)
    }

    /// Milliseconds; Patroni's default for its own connection.
    public static let agentStatementTimeout = 2000

    /// Creates or updates the replication role and `bootstrap.users`, and sets the
    /// superuser's password, on a freshly bootstrapped primary.
    public func createRoles(users: [String: BootstrapUser]) async throws {
        let connection = try await localConnection()
        defer { Task { await connection.close() } }
        // Keep passwords out of the server log, as Patroni does.
        for statement in ["SET log_statement TO none", "SET log_min_duration_statement TO -1",
                          "SET log_min_error_statement TO panic", "SET synchronous_commit TO local"] {
            try await connection.query(statement)
        }
        if let password = settings.superuser.password {
            try await createOrUpdateRole(connection, name: settings.superuser.username, password: password, options: ["SUPERUSER"])
        }
        try await createOrUpdateRole(connection, name: settings.replication.username,
                                     password: settings.replication.password, options: ["REPLICATION"])
        for name in users.keys.sorted() {
            let user = users[name]!
            try await createOrUpdateRole(connection, name: name, password: user.password, options: user.options)
        }
    }

    /// Creates the role, or alters it when it exists, with `options` (upper-cased, LOGIN added
    /// unless NOLOGIN is given) and the password as a quoted literal. Statement text is never
    /// logged.
    func createOrUpdateRole(_ connection: Connection, name: String, password: String?, options: [String]) async throws {
        var words = options.map { $0.uppercased() }
        if let bad = words.first(where: { $0.contains(";") }) {
            throw PostgresError("role \(name): option \(bad) is not a role option")
        }
        if !words.contains("LOGIN") && !words.contains("NOLOGIN") { words.append("LOGIN") }
        if let password { words += ["PASSWORD", try connection.escapeLiteral(password)] }
        let exists = try await connection.query("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", params: [name])
        let ident = try connection.escapeIdentifier(name)
        let verb = exists.isEmpty ? "CREATE" : "ALTER"
        do {
            try await connection.query("\(verb) ROLE \(ident) WITH \(words.joined(separator: " "))")
        } catch var error as PostgresError {
            // The server's message does not repeat the statement; keep it that way.
            error.message = "cannot \(verb.lowercased()) role \(name): \(error.message)"
            throw error
        }
    }
}
