// The DCS sections (etcd3, local) and Stork's archive section.
import Foundation

extension ConfigReader {
    mutating func readDCS(_ root: [String: JSONValue]) -> DCSSettings? {
        if root["etcd"] != nil {
            issue("etcd", "Stork speaks the etcd v3 API only; rename the section to etcd3")
        }
        let given = ["etcd3", "local"].filter { root[$0] != nil }
        if given.count > 1 {
            issue(given.joined(separator: ", "), "only one DCS may be configured; keep etcd3 or local, not both")
            return nil
        }
        if given.isEmpty {
            if root["etcd"] == nil { issue("etcd3", "required (or local for the embedded single-host store)") }
            return nil
        }
        if given[0] == "local" {
            guard let m = map(root["local"], "local") else {
                if root["local"] == .null { issue("local.path", "required") }
                return nil
            }
            unknownKeys(m, known: ["path"], prefix: "local")
            guard let path = required(m["path"], "local.path") else { return nil }
            return .local(path: path)
        }
        guard let m = map(root["etcd3"], "etcd3") else {
            if root["etcd3"] == .null { issue("etcd3", "host, hosts or url required") }
            return nil
        }
        return readEtcd3(m).map(DCSSettings.etcd3)
    }

    mutating func readEtcd3(_ m: [String: JSONValue]) -> Etcd3Settings? {
        unknownKeys(m, known: ["host", "hosts", "port", "url", "protocol", "username", "password", "cacert", "cert", "key"],
                    prefix: "etcd3")
        let before = issues.count
        // Patroni: https when protocol is not given but TLS files are (cacert or cert).
        let tlsGiven = [m["cacert"], m["cert"]].contains { if case .string(let s)? = $0 { return !s.isEmpty } else { return false } }
        var proto = tlsGiven ? "https" : "http"
        if let p = string(m["protocol"], "etcd3.protocol") {
            if p == "http" || p == "https" { proto = p } else { issue("etcd3.protocol", "\"\(p)\": expected http or https") }
        }
        let defaultPort = int(m["port"], "etcd3.port") ?? 2379
        var endpoints: [String] = []
        if let url = string(m["url"], "etcd3.url") {
            if let u = URLComponents(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https",
               let host = u.host, !host.isEmpty {
                let port = u.port ?? 2379
                let h = host.hasPrefix("[") ? host : Self.urlHost(host)
                endpoints = ["\(scheme)://\(h):\(port)"]
            } else {
                issue("etcd3.url", "\"\(url)\": expected a URL like http://host:2379")
            }
        } else if let hostsValue = m["hosts"], hostsValue != .null {
            var items: [String] = []
            switch hostsValue {
            case .string(let s): items = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            case .array: items = stringList(hostsValue, "etcd3.hosts") ?? []
            default: issue("etcd3.hosts", "expected a list of host:port or a comma-separated string")
            }
            for item in items where !item.isEmpty {
                if let hp = hostPort(item, "etcd3.hosts", defaultPort: defaultPort) {
                    endpoints.append("\(proto)://\(Self.urlHost(hp.host)):\(hp.port)")
                }
            }
            if endpoints.isEmpty && issues.count == before { issue("etcd3.hosts", "expected at least one host:port") }
        } else if let host = string(m["host"], "etcd3.host") {
            if let hp = hostPort(host, "etcd3.host", defaultPort: defaultPort) {
                endpoints = ["\(proto)://\(Self.urlHost(hp.host)):\(hp.port)"]
            }
        } else if issues.count == before {
            issue("etcd3", "host, hosts or url required")
        }
        var etcd = Etcd3Settings(endpoints: endpoints)
        etcd.username = string(m["username"], "etcd3.username")
        etcd.password = string(m["password"], "etcd3.password")
        etcd.cacert = string(m["cacert"], "etcd3.cacert")
        etcd.cert = string(m["cert"], "etcd3.cert")
        etcd.key = string(m["key"], "etcd3.key")
        return issues.count == before ? etcd : nil
    }

    // MARK: - archive

    /// `http://127.0.0.1:9000`, `http://localhost/...`, `http://[::1]:9000`: nothing crosses a network.
    static func isLoopbackURL(_ url: String) -> Bool {
        let rest = url.drop { $0 != "/" }.drop { $0 == "/" }
        let authority = rest.prefix { $0 != "/" }.split(separator: "@").last.map(String.init) ?? ""
        let host = authority.hasPrefix("[") ? String(authority.dropFirst().prefix { $0 != "]" }) : String(authority.prefix { $0 != ":" })
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Stork's `archive` section. Only `file://` is implemented so far.
    mutating func readArchive(_ value: JSONValue?) -> ArchiveSettings? {
        guard let m = map(value, "archive") else { return nil }
        guard let url = required(m["url"], "archive.url") else { return nil }
        let s3Keys: Set<String> = ["endpoint", "region", "access_key_id", "secret_access_key", "session_token"]
        unknownKeys(m, known: Set(["url", "compression", "prefetch", "concurrency"]).union(s3Keys), prefix: "archive")
        var settings: ArchiveSettings
        if url.hasPrefix("file:///") {
            settings = ArchiveSettings(directory: String(url.dropFirst("file://".count)))
        } else if url.hasPrefix("s3://") {
            let rest = url.dropFirst("s3://".count)
            let bucket = String(rest.prefix { $0 != "/" })
            guard !bucket.isEmpty else { issue("archive.url", "\"\(url)\": no bucket (s3://bucket/prefix)"); return nil }
            let prefix = rest.dropFirst(bucket.count).split(separator: "/").joined(separator: "/")
            var s3 = ArchiveSettings.S3Location(bucket: bucket, prefix: prefix)
            s3.endpoint = string(m["endpoint"], "archive.endpoint")
            if let e = s3.endpoint, !(e.hasPrefix("https://") || e.hasPrefix("http://")) {
                issue("archive.endpoint", "\"\(e)\": expected https://host[:port]")
            } else if let e = s3.endpoint, e.hasPrefix("http://"), !Self.isLoopbackURL(e) {
                warnings.append("archive.endpoint: \(e) is plain http: WAL and base backups cross the network unencrypted and can be changed on the way (requests are signed, not hidden); use https://")
            }
            s3.region = string(m["region"], "archive.region")
            s3.accessKeyID = string(m["access_key_id"], "archive.access_key_id")
            s3.secretAccessKey = string(m["secret_access_key"], "archive.secret_access_key")
            s3.sessionToken = string(m["session_token"], "archive.session_token")
            settings = ArchiveSettings(location: .s3(s3))
        } else if url.hasPrefix("https://") {
            settings = ArchiveSettings(location: .https(url))
        } else {
            issue("archive.url", "\"\(url)\": expected file:///path, s3://bucket/prefix or https://host/path")
            return nil
        }
        if case .s3 = settings.location {} else {
            for key in s3Keys.sorted() where m[key] != nil { issue("archive.\(key)", "only for an s3:// archive") }
        }
        if let c = string(m["compression"], "archive.compression") {
            guard let compression = ArchiveSettings.Compression(rawValue: c) else {
                issue("archive.compression", "\"\(c)\": expected zstd (the default), lz4, gzip or none")
                return nil
            }
            settings.compression = compression
        }
        if let n = int(m["prefetch"], "archive.prefetch") {
            if n < 0 || n > 64 { issue("archive.prefetch", "\(n): expected 0 (off) to 64 segments") } else { settings.prefetch = n }
        }
        if let n = int(m["concurrency"], "archive.concurrency") {
            if n < 1 || n > 32 { issue("archive.concurrency", "\(n): expected 1 to 32") } else { settings.concurrency = n }
        }
        return settings
    }
}
