import CLibPQ
import Dispatch
import Foundation
import Synchronization

/// One libpq connection (`PGconn*`).
///
/// Every libpq call that can block (connecting, running a query) runs on this connection's
/// own serial `DispatchQueue`, never on Swift's cooperative pool (two threads here: one
/// blocked libpq call would halve it). The handle lives in a `Mutex`, so a query holds the
/// connection for its whole round trip and the class is `Sendable` without `@unchecked`.
/// Cancelling the calling task sends a cancel request to the server (`PQcancel`).
public final class Connection: Sendable {
    private let handle: Mutex<OpaquePointer?>
    /// `PGcancel*` as a bit pattern (0: none): usable from another thread while a query runs
    /// on the queue. Kept as an integer because it must be reachable without the connection's
    /// lock, which the running query holds.
    private let cancelHandle: Mutex<Int>
    private let queue: DispatchQueue
    /// The server's `server_version_num` (150018 for 15.18), as libpq read it at connection.
    public let serverVersion: Int

    private init(taking conn: sending OpaquePointer, queue: DispatchQueue) {
        self.serverVersion = Int(PQserverVersion(conn))
        self.cancelHandle = Mutex(Int(bitPattern: PQgetCancel(conn)))
        self.handle = Mutex(conn)
        self.queue = queue
    }

    /// Why a `deinit`: `PQfinish` frees the connection's memory and closes its socket; without
    /// it a forgotten ``close()`` would leak a server backend until the process exits.
    deinit {
        cancelHandle.withLock { if let c = OpaquePointer(bitPattern: $0) { PQfreeCancel(c) } }
        handle.withLock { if let c = $0 { PQfinish(c) } }
    }

    /// Opens a connection.
    /// - Parameters:
    ///   - conninfo: libpq `key=value` text (or a URI). Passwords belong in a pgpass file
    ///     (`passfile=`), not here: error messages never repeat this text, but logs might.
    ///   - timeout: seconds for `connect_timeout` unless `conninfo` sets it.
    /// - Throws: ``PostgresError`` with libpq's message (which holds no password).
    public static func connect(conninfo: String, timeout: Int = 3) async throws -> Connection {
        let text = conninfo.contains("connect_timeout=") || conninfo.contains("://")
            ? conninfo : conninfo + " connect_timeout=\(max(timeout, 2))"
        let queue = DispatchQueue(label: "stork.libpq")
        let outcome: Result<Connection, PostgresError> = await withCheckedContinuation { continuation in
            queue.async {
                guard let conn = PQconnectdb(text) else {
                    continuation.resume(returning: .failure(PostgresError("cannot connect to PostgreSQL: out of memory")))
                    return
                }
                if PQstatus(conn) != CONNECTION_OK {
                    let message = Connection.trimmed(PQerrorMessage(conn))
                    PQfinish(conn)
                    continuation.resume(returning: .failure(PostgresError("cannot connect to PostgreSQL: \(message)")))
                    return
                }
                continuation.resume(returning: .success(Connection(taking: conn, queue: queue)))
            }
        }
        return try outcome.get()
    }

    /// Runs one statement with text parameters (`$1`, `$2`, ...; nil is SQL NULL) and
    /// returns every row as text (nil for NULL). Statements without rows return `[]`.
    /// - Throws: ``PostgresError`` with the server's SQLSTATE (``PostgresError/sqlState``)
    ///   and message; parameter values never appear in it.
    @discardableResult
    public func query(_ sql: String, params: [String?] = []) async throws -> [[String?]] {
        let outcome: Result<[[String?]], PostgresError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                queue.async {
                    continuation.resume(returning: self.blockingQuery(sql, params: params))
                }
            }
        } onCancel: {
            self.cancelHandle.withLock { bits in
                guard let cancel = OpaquePointer(bitPattern: bits) else { return }
                var buffer = [CChar](repeating: 0, count: 256)
                _ = PQcancel(cancel, &buffer, 256)
            }
        }
        return try outcome.get()
    }

    /// Closes the connection now (the `deinit` would do it later).
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                self.cancelHandle.withLock { if let c = OpaquePointer(bitPattern: $0) { PQfreeCancel(c) }; $0 = 0 }
                self.handle.withLock { if let c = $0 { PQfinish(c) }; $0 = nil }
                continuation.resume()
            }
        }
    }

    /// `PQescapeLiteral`: a quoted SQL string literal for statements that cannot take
    /// parameters (`CREATE ROLE ... PASSWORD`), with the server's encoding rules.
    public func escapeLiteral(_ text: String) throws -> String {
        try escape(text, what: "a literal", PQescapeLiteral)
    }

    /// `PQescapeIdentifier`: a quoted SQL identifier (a role name).
    public func escapeIdentifier(_ text: String) throws -> String {
        try escape(text, what: "an identifier", PQescapeIdentifier)
    }

    private func escape(_ text: String, what: String,
                        _ function: (OpaquePointer?, UnsafePointer<CChar>?, Int) -> UnsafeMutablePointer<CChar>?) throws -> String {
        try handle.withLock { conn in
            guard let conn else { throw PostgresError("connection is closed") }
            guard let out = function(conn, text, text.utf8.count) else {
                throw PostgresError("cannot quote \(what): \(Connection.trimmed(PQerrorMessage(conn)))")
            }
            defer { PQfreemem(out) }
            return String(cString: out)
        }
    }

    // MARK: - Blocking part (runs on `queue`)

    private func blockingQuery(_ sql: String, params: [String?]) -> Result<[[String?]], PostgresError> {
        handle.withLock { conn -> Result<[[String?]], PostgresError> in
            guard let conn else { return .failure(PostgresError("connection is closed")) }
            // Without parameters, the simple protocol: a replication connection
            // (`IDENTIFY_SYSTEM`) accepts nothing else.
            let result = params.isEmpty ? PQexec(conn, sql) : Connection.withCStrings(params) { pointers in
                PQexecParams(conn, sql, Int32(params.count), nil, pointers, nil, nil, 0)
            }
            guard let result else {
                return .failure(PostgresError("query failed: \(Connection.trimmed(PQerrorMessage(conn)))"))
            }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
                var rows: [[String?]] = []
                let nrows = PQntuples(result), ncols = PQnfields(result)
                rows.reserveCapacity(Int(nrows))
                for r in 0..<nrows {
                    var row: [String?] = []
                    row.reserveCapacity(Int(ncols))
                    for c in 0..<ncols {
                        row.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
                    }
                    rows.append(row)
                }
                return .success(rows)
            case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
                return .success([])
            default:
                return .failure(Connection.error(from: result, connection: conn))
            }
        }
    }

    private static func error(from result: OpaquePointer, connection conn: OpaquePointer) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            guard let p = PQresultErrorField(result, Int32(code)) else { return nil }
            return String(cString: p)
        }
        let sqlState = field(UInt8(ascii: "C"))
        let primary = field(UInt8(ascii: "M")) ?? trimmed(PQerrorMessage(conn))
        let severity = field(UInt8(ascii: "V")) ?? "ERROR"
        var error = PostgresError("\(severity) \(sqlState ?? "?????"): \(primary)")
        error.sqlState = sqlState
        error.detail = field(UInt8(ascii: "D"))
        error.hint = field(UInt8(ascii: "H"))
        return error
    }

    private static func trimmed(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "unknown error" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func withCStrings<R>(_ values: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let owned: [UnsafeMutablePointer<CChar>?] = values.map { $0.map { strdup($0) } ?? nil }
        defer { owned.forEach { free($0) } }
        return body(owned.map { $0.map { UnsafePointer($0) } })
    }
}
