import Foundation
import Logging
import StorkConfig
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Stork's embedded single-host store: a directory on local disk holding one JSON file of
/// keys (`store.json`), with the same key layout and the same lease scheme as `EtcdDCS`
/// (one lease per agent with an absolute expiry time; `leader` and `members/<name>` are
/// attached to it and vanish when it expires; create-only `initialize` and `leader`).
///
/// Every operation runs under an exclusive `flock` on `<directory>/lock`, so several agent
/// processes on ONE machine can share the directory safely; the file is replaced atomically
/// (temp file, fsync, rename, fsync of the directory) and survives restarts. Expiry uses the
/// wall clock, so keys written before a restart expire on time after it.
///
/// It cannot serve several machines: a lock on a local file coordinates only the processes of
/// the machine that holds the directory (and `flock` over NFS is not to be trusted). Use etcd
/// for a cluster that spans hosts.
public final class LocalDCS: DCS {
    public let directory: String
    public let keys: DCSKeys
    private let logger: Logger
    private let leaseID = Mutex<String?>(nil)
    private let queue = DispatchQueue(label: "stork.localdcs")

    public init(path: String, keyPrefix: String, memberName: String, logger: Logger) {
        self.directory = path
        self.keys = DCSKeys(prefix: keyPrefix, memberName: memberName)
        self.logger = logger
    }

    public var storeFile: String { directory + "/store.json" }
    public var lockFile: String { directory + "/lock" }

    /// The lease this agent holds now, nil before the first TTL write.
    public var currentLeaseID: String? { leaseID.withLock { $0 } }

    // MARK: DCS

    public func clusterView() async throws -> ClusterView {
        let keys = self.keys
        return try await withStore { store, _ in
            keys.clusterView(from: store.keys.filter { $0.key.hasPrefix(keys.prefix) }.mapValues(\.value))
        }
    }

    public func createInitialize(_ value: String) async throws -> Bool {
        let key = keys.initialize
        return try await withStore { store, _ in
            guard store.keys[key] == nil else { return false }
            store.keys[key] = LocalStore.Entry(value: value, lease: nil)
            return true
        }
    }

    public func setInitialize(_ value: String) async throws {
        let key = keys.initialize
        try await withStore { store, _ in store.keys[key] = LocalStore.Entry(value: value, lease: nil) }
    }

    public func deleteInitialize() async throws {
        let key = keys.initialize
        try await withStore { store, _ in store.keys[key] = nil }
    }

    public func acquireLeader(ttl: Int) async throws -> Bool {
        let key = keys.leader, name = keys.memberName
        let ok = try await withStore { store, now in
            let lease = self.keepLease(&store, ttl: ttl, now: now)
            guard store.keys[key] == nil else { return false }
            store.keys[key] = LocalStore.Entry(value: name, lease: lease)
            return true
        }
        if !ok { logger.info("could not take the leader key: another member holds it") }
        return ok
    }

    public func refreshLeader(ttl: Int) async throws -> Bool {
        let key = keys.leader, name = keys.memberName
        return try await withStore { store, now in
            let lease = self.keepLease(&store, ttl: ttl, now: now)
            guard store.keys[key]?.value == name else { return false }
            store.keys[key] = LocalStore.Entry(value: name, lease: lease)
            return true
        }
    }

    public func deleteLeader() async throws {
        let key = keys.leader, name = keys.memberName
        try await withStore { store, _ in
            if store.keys[key]?.value == name { store.keys[key] = nil }
        }
    }

    public func touchMember(_ data: JSONValue, ttl: Int) async throws {
        let key = keys.member, value = DCSKeys.memberValue(data)
        try await withStore { store, now in
            let lease = self.keepLease(&store, ttl: ttl, now: now)
            store.keys[key] = LocalStore.Entry(value: value, lease: lease)
        }
    }

    public func deleteMember() async throws {
        let key = keys.member
        try await withStore { store, _ in store.keys[key] = nil }
    }

    public func readConfig() async throws -> StoredConfig? {
        let key = keys.config
        return try await withStore { store, _ in store.keys[key].map { StoredConfig(text: $0.value, version: $0.value) } }
    }

    public func writeConfig(_ config: JSONValue, ifVersion version: String?) async throws -> Bool {
        let key = keys.config, value = DCSKeys.configValue(config)
        return try await withStore { store, _ in
            guard store.keys[key]?.value == version else { return false }
            store.keys[key] = LocalStore.Entry(value: value, lease: nil)
            return true
        }
    }

    public func writeLeaderOptime(_ lsn: Int) async throws {
        let keys = self.keys
        try await withStore { store, _ in
            store.keys[keys.status] = LocalStore.Entry(value: DCSKeys.statusValue(lsn), lease: nil)
            store.keys[keys.leaderOptime] = LocalStore.Entry(value: String(lsn), lease: nil)
        }
    }

    public func appendHistory(timeline: Int, lsn: Int, reason: String, newLeader: String, keep: Int) async throws {
        let keys = self.keys
        try await withStore { store, _ in
            let value = DCSKeys.historyValue(appending: (timeline, lsn, reason, newLeader), to: store.keys[keys.history]?.value, keep: keep)
            store.keys[keys.history] = LocalStore.Entry(value: value, lease: nil)
        }
    }

    public func leaderExpiresIn() async throws -> Double? {
        let keys = self.keys
        return try await withStore { store, now -> Double? in
            guard let id = store.keys[keys.leader]?.lease, let lease = store.leases[id] else { return nil }
            return lease.expires - now
        }
    }

    public func setFailover(_ failover: ManualFailover?) async throws {
        let keys = self.keys
        try await withStore { store, _ in
            store.keys[keys.failover] = failover.map { LocalStore.Entry(value: $0.value, lease: nil) }
        }
    }

    /// Ends this agent's lease: its member key and (if ours) the leader key go at once.
    public func revokeLease() async throws {
        guard let id = leaseID.withLock({ v -> String? in let id = v; v = nil; return id }) else { return }
        try await withStore { store, _ in
            store.leases[id] = nil
            store.keys = store.keys.filter { $0.value.lease != id }
        }
    }

    // MARK: store

    /// Extends our lease (or grants a new one if it expired or the TTL changed); returns its ID.
    private func keepLease(_ store: inout LocalStore, ttl: Int, now: Double) -> String {
        let ttl = max(ttl, 1)
        let id = leaseID.withLock { $0 }
        if let id, let lease = store.leases[id], lease.ttl == ttl {
            store.leases[id] = LocalStore.Lease(ttl: ttl, expires: now + Double(ttl))
            return id
        }
        var rng = SystemRandomNumberGenerator()
        let newID = String(rng.next() & 0x7fff_ffff_ffff_ffff, radix: 16)
        store.leases[newID] = LocalStore.Lease(ttl: ttl, expires: now + Double(ttl))
        leaseID.withLock { $0 = newID }
        return newID
    }

    /// Runs `body` on the store under the lock, on this instance's queue (the lock may block),
    /// and writes the store back if `body` changed it (expired leases and keys are dropped).
    private func withStore<T: Sendable>(_ body: @escaping @Sendable (inout LocalStore, Double) throws -> T) async throws -> T {
        let directory = self.directory
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try LocalStore.locked(directory: directory, body) })
            }
        }
    }
}

/// The on-disk form of `LocalDCS`: `{"keys": {key: {"value", "lease"}}, "leases": {id: {"ttl", "expires"}}}`,
/// `expires` in seconds since 1970.
struct LocalStore: Codable, Equatable, Sendable {
    struct Entry: Codable, Equatable, Sendable {
        var value: String
        var lease: String?
    }
    struct Lease: Codable, Equatable, Sendable {
        var ttl: Int
        var expires: Double
    }
    var keys: [String: Entry] = [:]
    var leases: [String: Lease] = [:]

    /// Drops expired leases and the keys attached to them (and keys of unknown leases).
    mutating func purge(now: Double) {
        leases = leases.filter { $0.value.expires > now }
        keys = keys.filter { entry in entry.value.lease.map { leases[$0] != nil } ?? true }
    }

    static func locked<T>(directory: String, _ body: (inout LocalStore, Double) throws -> T) throws -> T {
        try makeDirectory(directory)
        let dfd = try openStoreDirectory(directory)
        defer { close(dfd) }
        let fd = try openInStore(dfd, "lock", O_RDWR | O_CREAT, directory: directory)
        defer { close(fd) }
        giveToDirectoryOwner(fd, directory: dfd)
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw DCSError("local DCS: cannot lock \(directory)/lock: \(errnoText())") }
        }
        defer { flock(fd, LOCK_UN) }

        let path = directory + "/store.json"
        var store = LocalStore()
        if let data = try read(dfd, "store.json", directory: directory), !data.isEmpty {
            do { store = try JSONDecoder().decode(LocalStore.self, from: data) }
            catch { throw DCSError("local DCS: \(path) is not a Stork store: \(error)") }
        }
        let original = store
        let now = Date().timeIntervalSince1970
        store.purge(now: now)
        let result = try body(&store, now)
        if store != original { try write(store, in: dfd, directory: directory) }
        return result
    }

    /// The store's directory, opened for `openat`: its owner alone may write in it, and a
    /// process that is not root runs as that owner. Everything below is opened relative to it,
    /// without following links, so a root process cannot be led elsewhere by what is planted here.
    private static func openStoreDirectory(_ directory: String) throws -> Int32 {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw DCSError("local DCS: cannot open \(directory): \(errnoText())") }
        var st = stat()
        guard fstat(dfd, &st) == 0 else { let e = errnoText(); close(dfd); throw DCSError("local DCS: cannot read \(directory): \(e)") }
        if st.st_mode & 0o022 != 0 {
            close(dfd)
            throw DCSError("local DCS: \(directory) is writable by others (mode \(String(st.st_mode & 0o777, radix: 8))): refused; chmod 700 it, owned by the agents' user")
        }
        if geteuid() != 0, st.st_uid != geteuid() {
            close(dfd)
            throw DCSError("local DCS: \(directory) belongs to uid \(st.st_uid), not to this user (uid \(geteuid())): refused; run as its owner, the agents' user")
        }
        return dfd
    }

    /// `name` in the store's directory, never through a symbolic link.
    private static func openInStore(_ dfd: Int32, _ name: String, _ flags: Int32, directory: String) throws -> Int32 {
        let fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw openError(name, directory: directory) }
        return fd
    }

    /// Why opening `name` failed, from errno.
    private static func openError(_ name: String, directory: String) -> DCSError {
        if errno == ELOOP { return DCSError("local DCS: \(directory)/\(name) is a symbolic link: refused; remove it (Stork never makes one)") }
        return DCSError("local DCS: cannot open \(directory)/\(name): \(errnoText()); the agents' OS user must own the store's files")
    }

    /// The bytes of `name` in the store, nil when it does not exist.
    private static func read(_ dfd: Int32, _ name: String, directory: String) throws -> Data? {
        let fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw openError(name, directory: directory)
        }
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return data }
            if n < 0 { if errno == EINTR { continue }; throw DCSError("local DCS: cannot read \(directory)/\(name): \(errnoText())") }
            data.append(contentsOf: buffer[0..<n])
        }
    }

    private static func write(_ store: LocalStore, in dfd: Int32, directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        let data = try encoder.encode(store)
        // A new name each time, created exclusively: nothing planted under it is written through.
        let temp = "store.json.tmp.\(getpid()).\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
        let fd = try openInStore(dfd, temp, O_WRONLY | O_CREAT | O_EXCL, directory: directory)
        giveToDirectoryOwner(fd, directory: dfd)
        var ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        let failure = errnoText()
        close(fd)
        guard ok else { unlinkat(dfd, temp, 0); throw DCSError("local DCS: cannot write \(directory)/\(temp): \(failure)") }
        guard renameat(dfd, temp, dfd, "store.json") == 0 else {
            let e = errnoText(); unlinkat(dfd, temp, 0)
            throw DCSError("local DCS: cannot rename \(directory)/\(temp) to store.json: \(e)")
        }
        _ = fsync(dfd)
    }

    /// A root process (`stork list` run by an operator) must not leave files the agents, running
    /// as the directory's owner, cannot open: what root creates here goes to that owner. Only a
    /// plain file root owns with one link (one it made), so no planted hard link is given away.
    private static func giveToDirectoryOwner(_ fd: Int32, directory dfd: Int32) {
        guard geteuid() == 0 else { return }
        var dir = stat(), file = stat()
        guard fstat(dfd, &dir) == 0, dir.st_uid != 0, fstat(fd, &file) == 0,
              (file.st_mode & S_IFMT) == S_IFREG, file.st_uid == 0, file.st_nlink == 1 else { return }
        _ = fchown(fd, dir.st_uid, dir.st_gid)
    }

    private static func makeDirectory(_ directory: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) {
            if isDir.boolValue { return }
            throw DCSError("local DCS: \(directory) exists and is not a directory")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw DCSError("local DCS: cannot create \(directory): \(error.localizedDescription)")
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
