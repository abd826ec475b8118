import Foundation
import StorkConfig
import StorkPostgres
import StorkSpool
import StorkTestSupport
import Testing
@testable import StorkArchive

@Suite("Base backup catalog, manifest checks and the WAL spool's checks")
struct BackupCatalogTests {
    static func manifest(_ name: String, stop: Date, stopLSN: String, snapshot: String, startWAL: String) -> BackupManifest {
        BackupManifest(name: name, scope: "main", systemIdentifier: "42", postgresqlVersion: 150018, timeline: 1, walSegmentSize: 16 << 20,
                       startLSN: "0/1000028", stopLSN: stopLSN, startWALFile: startWAL, startTime: stop.addingTimeInterval(-60),
                       stopTime: stop, stopSnapshot: snapshot, compression: "zstd", directories: ["base"],
                       files: [.init(path: "base/1", size: 1, sha256: "x", mode: 0o600, part: 0)],
                       parts: [.init(name: "part-0001.tar.zst", size: 1, sha256: "y")])
    }

    /// Three backups in a directory store, with WAL around them.
    func catalog(_ root: String) throws -> (BackupCatalog, [BackupManifest]) {
        let store = DirectoryStore(root: root)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let backups = [
            Self.manifest("a", stop: t0, stopLSN: "0/3000100", snapshot: "100:105:101,103", startWAL: "000000010000000000000002"),
            Self.manifest("b", stop: t0.addingTimeInterval(3600), stopLSN: "0/6000100", snapshot: "200:200:", startWAL: "000000010000000000000005"),
            Self.manifest("c", stop: t0.addingTimeInterval(7200), stopLSN: "0/9000100", snapshot: "300:310:", startWAL: "000000010000000000000008"),
        ]
        for b in backups {
            try makeDirectory(root + "/main/backups/" + b.name)
            try b.encoded().write(to: URL(fileURLWithPath: root + "/main/backups/\(b.name)/manifest.json"))
            try Data("p".utf8).write(to: URL(fileURLWithPath: root + "/main/backups/\(b.name)/part-0001.tar.zst"))
        }
        try makeDirectory(root + "/main/wal")
        for name in ["000000010000000000000001.zst", "000000010000000000000004.zst", "000000010000000000000005.zst",
                     "000000020000000000000003.partial.zst", "00000002.history.zst", "000000020000000000000009.zst"] {
            try Data("w".utf8).write(to: URL(fileURLWithPath: root + "/main/wal/" + name))
        }
        return (BackupCatalog(store: store, scope: "main"), backups)
    }

    @Test func choosesTheNewestBackupThatEndedBeforeTheTarget() throws {
        let root = TestSupport.makeTempDir("stork-catalog")
        defer { TestSupport.removeTree(root) }
        let (catalog, b) = try catalog(root)
        #expect(try catalog.list().map(\.name) == ["a", "b", "c"])
        #expect(try catalog.choose(.newest).name == "c")
        #expect(try catalog.choose(.named("a")).name == "a")
        #expect(try catalog.choose(.time(b[1].stopTime.addingTimeInterval(1))).name == "b")
        #expect(try catalog.choose(.time(b[1].stopTime)).name == "a", "a backup that stops at the target cannot recover to it")
        #expect(try catalog.choose(.lsn(LSN.parse("0/8000000")!)).name == "b")
        // xid: not committed at the stop (at or above xmax, or in progress).
        #expect(try catalog.choose(.xid(103)).name == "a")
        #expect(try catalog.choose(.xid(250)).name == "b")
        #expect(try catalog.choose(.xid(310)).name == "c")
        let early = #expect(throws: ArchiveError.self) { try catalog.choose(.time(b[0].stopTime.addingTimeInterval(-5))) }
        #expect(early?.description.hasPrefix("the recovery target is older than every backup of main: the oldest, a, ended at 2027-01-15 08:00:00 UTC") == true,
                "\(early?.description ?? "")")
        let missing = #expect(throws: ArchiveError.self) { try catalog.choose(.named("zzz")) }
        #expect(missing?.description.contains("holds no finished backup zzz") == true)
        #expect(throws: ArchiveError.self) { try catalog.choose(.named("../a")) }
        // Two backups in the same second: the stop LSN orders them; the manifest keeps milliseconds.
        var same = Self.manifest("c-2", stop: b[2].stopTime.addingTimeInterval(0.25), stopLSN: "0/A000100", snapshot: "300:310:",
                                 startWAL: "000000010000000000000009")
        let decoded = try BackupManifest.decode(try same.encoded(), from: "m")
        #expect(abs(decoded.stopTime.timeIntervalSince(same.stopTime)) < 0.002)
        same.stopTime = b[2].stopTime
        try makeDirectory(root + "/main/backups/c-2")
        try same.encoded().write(to: URL(fileURLWithPath: root + "/main/backups/c-2/manifest.json"))
        #expect(try catalog.choose(.newest).name == "c-2")
        try FileManager.default.removeItem(atPath: root + "/main/backups/c-2")
        // A backup without its manifest (unfinished) is not listed.
        try makeDirectory(root + "/main/backups/d")
        #expect(try catalog.list().count == 3)
    }

    /// Another cluster's backup copied under this scope's prefix, newer than every own one:
    /// passed over by every target, refused by name, neither counted nor removed by delete.
    @Test func anotherClustersBackupIsNeverChosenNorCounted() throws {
        let root = TestSupport.makeTempDir("stork-catalog")
        defer { TestSupport.removeTree(root) }
        let (catalog, b) = try catalog(root)
        var other = Self.manifest("z", stop: b[2].stopTime.addingTimeInterval(3600), stopLSN: "0/F000100", snapshot: "400:400:",
                                  startWAL: "00000001000000000000000E")
        other.scope = "other"
        other.systemIdentifier = "7"
        try makeDirectory(root + "/main/backups/z")
        try other.encoded().write(to: URL(fileURLWithPath: root + "/main/backups/z/manifest.json"))
        #expect(try catalog.choose(.newest).name == "c")
        #expect(try catalog.choose(.time(other.stopTime.addingTimeInterval(1))).name == "c")
        let named = #expect(throws: ArchiveError.self) { try catalog.choose(.named("z")) }
        #expect(named?.description.hasPrefix("backup z under main/backups/ was taken of cluster other (system identifier 7), not main") == true,
                "\(named?.description ?? "")")
        let (removed, _) = try catalog.delete(retain: 1)
        #expect(removed == ["a", "b"], "\(removed)")
        #expect(FileManager.default.fileExists(atPath: root + "/main/backups/z/manifest.json"))
        #expect(try catalog.list().map(\.name) == ["c", "z"])
    }

    @Test func deleteKeepsTheNewestAndTheWALTheyNeed() throws {
        let root = TestSupport.makeTempDir("stork-catalog")
        defer { TestSupport.removeTree(root) }
        let (catalog, _) = try catalog(root)
        let (removed, walFiles) = try catalog.delete(retain: 2)
        #expect(removed == ["a"] && walFiles == 3)
        #expect(try catalog.list().map(\.name) == ["b", "c"])
        #expect(!FileManager.default.fileExists(atPath: root + "/main/backups/a/part-0001.tar.zst"))
        let wal = try FileManager.default.contentsOfDirectory(atPath: root + "/main/wal").sorted()
        #expect(wal == ["000000010000000000000005.zst", "00000002.history.zst", "000000020000000000000009.zst"], "\(wal)")
        #expect(try catalog.delete(retain: 2) == ([], 0))
    }

    /// A manifest planted in the archive whose name (or a part's) climbs out of it: before,
    /// `backup delete` removed the files it named outside the archive.
    @Test func aPlantedManifestCannotReachOutsideTheArchive() throws {
        let base = TestSupport.makeTempDir("stork-catalog")
        defer { TestSupport.removeTree(base) }
        let root = base + "/archive"
        let (catalog, b) = try catalog(root)
        try makeDirectory(base + "/victim")
        for file in ["manifest.json", "part-0001.tar.zst", "precious"] {
            try Data("keep".utf8).write(to: URL(fileURLWithPath: base + "/victim/" + file))
        }
        let old = b[0].stopTime.addingTimeInterval(-3600)
        for (directory, name, part) in [("x", "../../../victim", "part-0001.tar.zst"), ("y", "y", "../../../../victim/precious")] {
            var planted = Self.manifest(name, stop: old, stopLSN: "0/2000100", snapshot: "50:50:", startWAL: "000000010000000000000001")
            planted.parts = [.init(name: part, size: 1, sha256: "y")]
            try makeDirectory(root + "/main/backups/" + directory)
            try planted.encoded().write(to: URL(fileURLWithPath: root + "/main/backups/\(directory)/manifest.json"))
            let error = #expect(throws: ArchiveError.self) { try catalog.delete(retain: 1) }
            #expect(error?.description.contains(root + "/main/backups/\(directory)/manifest.json") == true, "\(error?.description ?? "")")
            #expect(error?.description.contains("remove it") == true, "\(error?.description ?? "")")
            for file in ["manifest.json", "part-0001.tar.zst", "precious"] {
                #expect(FileManager.default.fileExists(atPath: base + "/victim/" + file), "\(name), \(part): \(file) removed")
            }
            #expect(throws: ArchiveError.self) { try catalog.list() }
            try FileManager.default.removeItem(atPath: root + "/main/backups/" + directory)
        }
        // A manifest deeper than <scope>/backups/<name>/ is no backup of this catalog.
        try makeDirectory(root + "/main/backups/c/nested")
        try Self.manifest("nested", stop: old, stopLSN: "0/2000100", snapshot: "50:50:", startWAL: "000000010000000000000001").encoded()
            .write(to: URL(fileURLWithPath: root + "/main/backups/c/nested/manifest.json"))
        #expect(try catalog.list().map(\.name) == ["a", "b", "c"])
    }

    @Test func manifestChecks() throws {
        var m = Self.manifest("x", stop: Date(), stopLSN: "0/1", snapshot: "1:1:", startWAL: "")
        #expect(try BackupRestorer.check(m, expectedSystemIdentifier: "42").count == 1)
        let other = #expect(throws: ArchiveError.self) { try BackupRestorer.check(m, expectedSystemIdentifier: "43") }
        #expect(other?.description == "backup x belongs to another cluster: system identifier 42, this cluster's is 43")
        for (path, reason) in [("/etc/passwd", "is an absolute path"), ("base/../../x", "points outside the data directory"),
                               ("base//x", "is not a plain path"), ("", "points outside")] {
            m.files = [.init(path: path, size: 1, sha256: "x", mode: 0o600, part: 0)]
            let error = #expect(throws: ArchiveError.self) { try BackupRestorer.check(m, expectedSystemIdentifier: nil) }
            #expect(error?.description.contains(reason) == true, "\(path): \(error?.description ?? "")")
        }
        m.files = [.init(path: "a", size: 1, sha256: "x", mode: 0o600, part: 3)]
        #expect(throws: ArchiveError.self) { try BackupRestorer.check(m, expectedSystemIdentifier: nil) }
        let garbage = #expect(throws: ArchiveError.self) { try BackupManifest.decode(Data("{}".utf8), from: "m.json") }
        #expect(garbage?.description == "m.json is not a Stork backup manifest (no format)")
    }

    @Test func backupExclusions() {
        for path in ["pg_wal/000000010000000000000001", "pg_replslot/s/state", "postmaster.pid", "backup_label", "base/1/pgsql_tmp/x",
                     "base/pgsql_tmp123", "global/pg_internal.init", "pg_stat_tmp/x", "standby.signal"] {
            #expect(BackupExclusions.excludes(path), "\(path)")
        }
        for path in ["pg_wal", "base/1/1259", "global/pg_control", "postgresql.conf", "base/1/backup_label", "pg_stat/x"] {
            #expect(!BackupExclusions.excludes(path), "\(path)")
        }
    }

    /// A spool file is served only when its page header says it is that segment of the data
    /// directory's cluster.
    @Test func spoolChecksTheSegmentHeader() throws {
        let root = TestSupport.makeTempDir("stork-spool")
        defer { TestSupport.removeTree(root) }
        let previous = FileManager.default.currentDirectoryPath
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        try makeDirectory(root + "/global")
        try makeDirectory(root + "/" + WALSpool.directory)
        #expect(FileManager.default.changeCurrentDirectoryPath(root))
        func little(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        try Data(little(7712, 8) + [UInt8](repeating: 0, count: 100)).write(to: URL(fileURLWithPath: "global/pg_control"))
        let size: UInt64 = 1 << 20
        func segment(_ name: String, address: UInt64, sysid: UInt64) throws {
            let header = little(0xD110, 2) + little(2, 2) + little(1, 4) + little(address, 8) + little(0, 8) + little(sysid, 8) + little(size, 4) + little(8192, 4)
            try Data(header + [UInt8](repeating: 0, count: Int(size) - header.count)).write(to: URL(fileURLWithPath: WALSpool.directory + "/" + name))
        }
        // 1 MiB segments: 4096 per log id.
        let name = "000000010000000100000003"
        #expect(WALSpool.segment(name, segmentSize: size)?.number == 4096 + 3)
        #expect(WALSpool.name(timeline: 1, number: 4096 + 3, segmentSize: size) == name)
        try segment(name, address: (4096 + 3) * size, sysid: 7712)
        #expect(WALSpool.take(name, to: "pg_wal/RECOVERYXLOG") == size)
        #expect(FileManager.default.fileExists(atPath: "pg_wal/RECOVERYXLOG"))
        try segment(name, address: (4096 + 4) * size, sysid: 7712)
        #expect(WALSpool.take(name, to: "pg_wal/X") == nil, "another segment's address")
        #expect(!FileManager.default.fileExists(atPath: WALSpool.directory + "/" + name), "removed, not served")
        try segment(name, address: (4096 + 3) * size, sysid: 9)
        #expect(WALSpool.take(name, to: "pg_wal/X") == nil, "another cluster's segment")
        #expect(!FileManager.default.fileExists(atPath: "pg_wal/X"))
    }
}
