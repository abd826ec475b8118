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

    public func writeConfig(_ config: JSONValue, createOnly: Bool) async throws -> Bool {
        let key = keys.config, value = DCSKeys.configValue(config)
        return try await withStore { store, _ in
            if createOnly && store.keys[key] != nil { return false }
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

    public func appendHistory(timeline: Int, lsn: Int, reason: String, newLeader: String) async throws {
        let keys = self.keys
        try await withStore { store, _ in
            let value = DCSKeys.historyValue(appending: (timeline, lsn, reason, newLeader), to: store.keys[keys.history]?.value)
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
        let lockPath = directory + "/lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw DCSError("local DCS: cannot open \(lockPath): \(errnoText()); the agents' OS user must own the store's files")
        }
        defer { close(fd) }
        giveToDirectoryOwner(fd, directory: directory)
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw DCSError("local DCS: cannot lock \(lockPath): \(errnoText())") }
        }
        defer { flock(fd, LOCK_UN) }

        let path = directory + "/store.json"
        var store = LocalStore()
        if let data = FileManager.default.contents(atPath: path), !data.isEmpty {
            do { store = try JSONDecoder().decode(LocalStore.self, from: data) }
            catch { throw DCSError("local DCS: \(path) is not a Stork store: \(error)") }
        }
        let original = store
        let now = Date().timeIntervalSince1970
        store.purge(now: now)
        let result = try body(&store, now)
        if store != original { try write(store, to: path, directory: directory) }
        return result
    }

    private static func write(_ store: LocalStore, to path: String, directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        let data = try encoder.encode(store)
        let temp = "\(path).tmp.\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DCSError("local DCS: cannot create \(temp): \(errnoText())") }
        giveToDirectoryOwner(fd, directory: directory)
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
        guard ok else { unlink(temp); throw DCSError("local DCS: cannot write \(temp): \(failure)") }
        guard rename(temp, path) == 0 else {
            let e = errnoText(); unlink(temp)
            throw DCSError("local DCS: cannot rename \(temp) to \(path): \(e)")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// A root process (`stork list` run by an operator) must not leave files the agents, running
    /// as the directory's owner, cannot open: what root creates here goes to that owner.
    private static func giveToDirectoryOwner(_ fd: Int32, directory: String) {
        guard geteuid() == 0 else { return }
        var st = stat()
        guard stat(directory, &st) == 0, st.st_uid != 0 else { return }
        _ = fchown(fd, st.st_uid, st.st_gid)
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
