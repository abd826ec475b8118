import Foundation
import Synchronization
import StorkConfig
import StorkProcess
import StorkTestSupport
import Testing
@testable import StorkArchive

/// A directory archive that hides its local paths, so the restorer downloads each part as it
/// does from S3 or a web server.
struct DownloadingStore: ArchiveStore {
    let directory: DirectoryStore
    func describe(_ key: String) -> String { directory.describe(key) }
    func uploadPath(for key: String, scratch: String) -> String { directory.uploadPath(for: key, scratch: scratch) }
    func create(_ key: String, fromFile path: String) throws -> Bool { try directory.create(key, fromFile: path) }
    func download(_ key: String, to path: String) throws -> Bool { try directory.download(key, to: path) }
    func localPath(_ key: String) -> String? { nil }
    func list(prefix: String) throws -> [StoredObject] { try directory.list(prefix: prefix) }
    func delete(_ key: String) throws { try directory.delete(key) }
}

@Suite("A restore run as root")
struct RootRestoreTests {
    /// A one-part backup `b1` of `files` in a directory archive at `root`.
    static func backup(_ files: [String: String], root: String, source: String) throws -> BackupManifest {
        for (path, text) in files {
            try makeDirectory(source + "/" + (path as NSString).deletingLastPathComponent)
            try Data(text.utf8).write(to: URL(fileURLWithPath: source + "/" + path))
        }
        let part = root + "/main/backups/b1/part-0001.tar.zst"
        try makeDirectory(root + "/main/backups/b1")
        let entries = try BackupWriter.writePart(files.keys.sorted().map { (source + "/" + $0, $0, UInt32(0o600)) }, index: 0,
                                                 to: part, compression: .zstd) { _ in }
        let manifest = BackupManifest(name: "b1", scope: "main", systemIdentifier: "42", postgresqlVersion: 150018, timeline: 1,
                                      walSegmentSize: 16 << 20, startLSN: "0/1000028", stopLSN: "0/2000000",
                                      startWALFile: "000000010000000000000001", startTime: Date(), stopTime: Date(), stopSnapshot: "1:1:",
                                      compression: "zstd", directories: directories(of: files.keys),
                                      files: entries, parts: [.init(name: "part-0001.tar.zst", size: fileSize(part), sha256: try sha256(file: part))])
        try manifest.encoded().write(to: URL(fileURLWithPath: root + "/main/backups/b1/manifest.json"))
        return manifest
    }

    /// Every directory above `paths`, parents first.
    static func directories(of paths: some Sequence<String>) -> [String] {
        var out = Set<String>()
        for path in paths {
            var directory = (path as NSString).deletingLastPathComponent
            while !directory.isEmpty { out.insert(directory); directory = (directory as NSString).deletingLastPathComponent }
        }
        return out.sorted()
    }

    static func owner(_ path: String) -> uid_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_uid : nil
    }

    /// The restore's parent directory belongs to the PostgreSQL user (as /var/lib/postgresql
    /// does), who can plant links there and write into whatever is handed over early. Before:
    /// root downloaded each part to a predictable name beside the target, through a planted
    /// link (the link's target got the part's bytes), and handed every directory to the owner
    /// before it wrote into it.
    @Test func privateDownloadsAndOwnershipHandedOverAtTheEnd() async throws {
        try #require(geteuid() == 0, "this test needs root, as CI runs it")
        let base = TestSupport.makeTempDir("stork-root-restore")
        defer { TestSupport.removeTree(base) }
        let manifest = try Self.backup(["base/1/1259": "pg_class", "global/pg_control": "control", "PG_VERSION": "15\n",
                                        "postgresql.auto.conf": "work_mem = '8MB'\n"],
                                       root: base + "/archive", source: base + "/source")
        let nobody = OSUser(name: "nobody", uid: 65534, gid: 65534)
        let parent = base + "/home"
        try makeDirectory(parent)
        #expect(chown(parent, nobody.uid, nobody.gid) == 0)
        let victim = base + "/victim"
        _ = FileManager.default.createFile(atPath: victim, contents: Data("root's".utf8), attributes: [.posixPermissions: 0o600])
        for name in [".stork-download-\(getpid())-part-0001.tar.zst", ".stork-download-\(getpid())-part-0001.tar.zst.stork-part"] {
            try FileManager.default.createSymbolicLink(atPath: parent + "/" + name, withDestinationPath: victim)
        }

        let catalog = BackupCatalog(store: DownloadingStore(directory: DirectoryStore(root: base + "/archive")), scope: "main")
        let target = parent + "/data"
        let seen = Mutex<Set<uid_t?>>([])
        let summary = try await BackupRestorer(catalog: catalog, concurrency: 1, owner: nobody)
            .restore(manifest, into: target, expectedSystemIdentifier: "42", recovery: ["restore_command": "it's"]) { _, _ in
                seen.withLock { $0.formUnion([Self.owner(target), Self.owner(target + "/base"), Self.owner(target + "/base/1")]) }
            }
        #expect(summary.files == 4)
        #expect(FileManager.default.contents(atPath: victim) == Data("root's".utf8), "a planted link's target was written")
        #expect(Self.owner(victim) == 0)
        #expect(seen.withLock { $0 } == [0], "directories were handed to their owner while root still wrote into them")
        for path in ["", "/base", "/base/1", "/base/1/1259", "/global/pg_control", "/PG_VERSION", "/postgresql.auto.conf", "/recovery.signal"] {
            #expect(Self.owner(target + path) == nobody.uid, "\(path) not handed over")
        }
        #expect(try String(contentsOfFile: target + "/base/1/1259", encoding: .utf8) == "pg_class")
        #expect(try String(contentsOfFile: target + "/postgresql.auto.conf", encoding: .utf8)
                == "work_mem = '8MB'\n# Written by stork restore\nrestore_command = 'it''s'\n")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: parent).sorted()
        #expect(leftovers.filter { !$0.hasPrefix(".stork-download-") } == ["data"], "\(leftovers)")
    }
}
