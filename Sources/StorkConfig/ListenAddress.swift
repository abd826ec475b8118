/// A `listen` setting (`host[,host...]:port`, `[v6]:port`, `:port`) split at its last colon.
/// The loader has already refused malformed ones with a message naming the setting; this only
/// takes valid ones apart.
public enum ListenAddress {
    /// The hosts as written (brackets kept) and the port; nil port when there is no numeric one.
    public static func split(_ listen: String) -> (hosts: String, port: Int?) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            return (listen, nil)
        }
        return (String(listen[..<colon]), port)
    }

    /// `postgresql.listen` as PostgreSQL's `listen_addresses` (`localhost` when it names no
    /// host) and `port` (5432 when it names none).
    public static func postgres(_ listen: String) -> (listenAddresses: String, port: Int) {
        let (hosts, port) = split(listen)
        return (hosts.isEmpty ? "localhost" : hosts, port ?? 5432)
    }
}

extension PostgresSettings {
    public var port: Int { ListenAddress.postgres(listen).port }
    public var listenAddresses: String { ListenAddress.postgres(listen).listenAddresses }
}
