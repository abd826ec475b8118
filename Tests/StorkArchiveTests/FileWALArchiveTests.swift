import Foundation
import StorkConfig
import StorkTestSupport
import Testing
@testable import StorkArchive

@Suite("The WAL archive on a file system: push and fetch")
struct FileWALArchiveTests {
    /// A WAL-segment-sized file: a varied start, then zeros, as a switched segment looks.
    func segment(_ directory: String, _ name: String, seed: UInt8) throws -> String {
        var bytes = [UInt8](repeating: 0, count: 16 << 20)
        for i in 0..<(1 << 20) { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) ^ seed }
        let path = directory + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test(arguments: [ArchiveSettings.Compression.zstd, .lz4, .gzip, .none])
    func roundTripIdempotentAndNoOverwrite(_ compression: ArchiveSettings.Compression) throws {
        let root = TestSupport.makeTempDir("stork-archive")
        defer { TestSupport.removeTree(root) }
        var settings = ArchiveSettings(directory: root + "/archive")
        settings.compression = compression
        let archive = try WALArchive(settings: settings, scope: "main")
        let walDirectory = root + "/archive/main/wal"
        try FileManager.default.createDirectory(atPath: root + "/wal/other", withIntermediateDirectories: true)
        let name = "000000010000000000000003"
        let path = try segment(root + "/wal", name, seed: 1)
        #expect(try archive.push(path) == .stored)
        let stored = walDirectory + "/" + name + compression.suffix
        #expect(FileManager.default.fileExists(atPath: stored))
        let storedSize = (try FileManager.default.attributesOfItem(atPath: stored)[.size] as? Int) ?? 0
        if compression != .none { #expect(storedSize < 4 << 20, "\(compression) stored \(storedSize) bytes") }
        // The same again: fine. Other bytes under the same name: refused, the archive unchanged.
        #expect(try archive.push(path) == .alreadyArchived)
        let other = try segment(root + "/wal", "other/" + name, seed: 2)
        #expect(throws: ArchiveError.self) { try archive.push(other) }
        #expect(FileManager.default.contents(atPath: root + "/back") == nil)
        #expect(try archive.fetch(name, to: root + "/back"))
        #expect(FileManager.default.contents(atPath: root + "/back") == FileManager.default.contents(atPath: path))
        // Nothing but the object: no temporary files left.
        #expect(try FileManager.default.contentsOfDirectory(atPath: walDirectory) == [name + compression.suffix])
    }

    @Test func missingAndBadNames() throws {
        let root = TestSupport.makeTempDir("stork-archive")
        defer { TestSupport.removeTree(root) }
        let archive = try WALArchive(settings: ArchiveSettings(directory: root), scope: "main")
        let walDirectory = root + "/main/wal"
        #expect(try archive.fetch("000000010000000000000009", to: root + "/x") == false)
        #expect(!FileManager.default.fileExists(atPath: root + "/x"))
        #expect(throws: ArchiveError.self) { try archive.fetch("../../etc/passwd", to: root + "/x") }
        // A corrupt object: an error, not "missing", and nothing at the target.
        try FileManager.default.createDirectory(atPath: walDirectory, withIntermediateDirectories: true)
        try Data([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]).write(to: URL(fileURLWithPath: walDirectory + "/00000002.history.zst"))
        #expect(throws: ArchiveError.self) { try archive.fetch("00000002.history", to: root + "/x") }
        #expect(!FileManager.default.fileExists(atPath: root + "/x"))
    }
}
