import Foundation
import StorkConfig
import StorkTestSupport
import Testing
@testable import StorkArchive

/// A read-only archive behind a web server: a file archive served by `python3 -m http.server`.
@Suite("The archive on a web server: WAL fetch, read-only")
struct HTTPSArchiveTests {
    @Test func walFetchThroughAWebServer() async throws {
        let root = TestSupport.makeTempDir("stork-https")
        defer { TestSupport.removeTree(root) }
        // Two segments pushed to a file archive with different compressions.
        let names = ["000000010000000000000001", "000000010000000000000002"]
        for (name, compression) in zip(names, [ArchiveSettings.Compression.zstd, .none]) {
            var settings = ArchiveSettings(directory: root + "/archive")
            settings.compression = compression
            try Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 ^ name.count) }).write(to: URL(fileURLWithPath: root + "/" + name))
            #expect(try WALArchive(settings: settings, scope: "main").push(root + "/" + name) == .stored)
        }
        let server = try await HTTPFileServer(directory: root + "/archive")
        defer { server.stop() }
        let store = try HTTPSStore(baseURL: server.url + "/")
        let archive = WALArchive(store: store, scope: "main", compression: .zstd)
        for name in names {
            #expect(try archive.fetch(name, to: root + "/back"))
            #expect(FileManager.default.contents(atPath: root + "/back") == FileManager.default.contents(atPath: root + "/" + name))
        }
        #expect(try archive.fetch("000000010000000000000009", to: root + "/missing") == false)
        #expect(try store.download("main/wal/nothing", to: root + "/missing") == false)
        #expect(!FileManager.default.fileExists(atPath: root + "/missing"))
        #expect(!FileManager.default.fileExists(atPath: root + "/missing.stork-part"))
        #expect(try store.exists("main/wal/\(names[0]).zst"))
        #expect(store.describe("main/wal/x") == server.url + "/main/wal/x")

        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/000000010000000000000003"))
        let readOnly = #expect(throws: ArchiveError.self) { _ = try archive.push(root + "/000000010000000000000003") }
        #expect(readOnly?.description.hasPrefix("the https:// archive is read-only") == true, "\(String(describing: readOnly))")
        #expect(throws: ArchiveError.self) { try store.delete("main/wal/\(names[0]).zst") }
        let listing = #expect(throws: ArchiveError.self) { _ = try store.list(prefix: "main/") }
        #expect(listing?.description.hasPrefix("an https:// archive cannot be listed") == true)

        server.stop()
        let down = #expect(throws: ArchiveError.self) { _ = try archive.fetch(names[0], to: root + "/back2") }
        #expect(down?.description.hasPrefix("cannot reach the archive at \(server.url): Connection refused") == true, "\(String(describing: down))")
    }

    @Test func configurationOpensIt() throws {
        let store = try openArchiveStore(ArchiveSettings(location: .https("https://archive.example.com/pg/")), environment: [:])
        #expect(store.describe("main/wal/x") == "https://archive.example.com/pg/main/wal/x")
        #expect(store.localPath("main/wal/x") == nil)
    }
}
