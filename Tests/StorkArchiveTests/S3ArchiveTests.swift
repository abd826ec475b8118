import Foundation
import StorkConfig
import StorkTestSupport
import Testing
@testable import StorkArchive

/// The archive in a real S3-compatible server (moto on loopback, checking signatures).
@Suite("The archive in S3: stores, WAL push and fetch, errors", .serialized)
struct S3ArchiveTests {
    func location(_ server: S3TestServer, prefix: String = "", bucket: String? = nil,
                  credentials: S3TestCredentials? = nil) -> ArchiveSettings.S3Location {
        var location = ArchiveSettings.S3Location(bucket: bucket ?? server.bucket, prefix: prefix)
        location.endpoint = server.endpoint
        let credentials = credentials ?? server.credentials
        location.accessKeyID = credentials.accessKeyID
        location.secretAccessKey = credentials.secretAccessKey
        location.sessionToken = credentials.sessionToken
        return location
    }

    /// A WAL-segment-sized file: a varied start, then zeros, as a switched segment looks.
    func segment(_ path: String, seed: UInt8) throws -> String {
        var bytes = [UInt8](repeating: 0, count: 16 << 20)
        for i in 0..<(1 << 20) { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) ^ seed }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The message of the ArchiveError `body` throws (the test fails when it throws none).
    func archiveError(_ body: () throws -> Void) -> String {
        do {
            try body()
        } catch let error as ArchiveError {
            #expect(!error.description.contains("\n"), "not one line: \(error)")
            return error.description
        } catch {
            Issue.record("expected an ArchiveError, got \(error)")
            return ""
        }
        Issue.record("expected an ArchiveError, nothing was thrown")
        return ""
    }

    @Test func walRoundTripIdempotentAndNoOverwrite() async throws {
        let server = try await S3TestServer()
        defer { server.stop() }
        let root = TestSupport.makeTempDir("stork-s3")
        defer { TestSupport.removeTree(root) }
        try FileManager.default.createDirectory(atPath: root + "/wal/other", withIntermediateDirectories: true)
        let name = "000000010000000000000003"
        let path = try segment(root + "/wal/" + name, seed: 1)
        let other = try segment(root + "/wal/other/" + name, seed: 2)

        // zstd with the user's key from AWS_* variables; none with temporary credentials
        // (a session token) from the section.
        var fromEnvironment = location(server, prefix: "clusters/a")
        (fromEnvironment.accessKeyID, fromEnvironment.secretAccessKey) = (nil, nil)
        let environment = ["AWS_ACCESS_KEY_ID": server.credentials.accessKeyID, "AWS_SECRET_ACCESS_KEY": server.credentials.secretAccessKey]
        let cases: [(ArchiveSettings.Compression, any ArchiveStore)] = [
            (.zstd, try S3Store(fromEnvironment, environment: environment)),
            (.none, try S3Store(location(server, prefix: "clusters/b", credentials: server.temporaryCredentials), environment: [:])),
        ]
        for (compression, store) in cases {
            let archive = WALArchive(store: store, scope: "main", compression: compression)
            let target = root + "/back-\(compression)"
            #expect(try archive.push(path) == .stored)
            // The same again: fine. Other bytes under the same name: refused, the archive unchanged.
            #expect(try archive.push(path) == .alreadyArchived)
            let refusal = archiveError { _ = try archive.push(other) }
            #expect(refusal.contains("already holds a different \(name)"))
            #expect(try archive.fetch(name, to: target))
            #expect(FileManager.default.contents(atPath: target) == FileManager.default.contents(atPath: path))
            #expect(try archive.fetch("000000010000000000000009", to: root + "/missing") == false)
            #expect(!FileManager.default.fileExists(atPath: root + "/missing"))
            #expect(!FileManager.default.fileExists(atPath: root + "/missing.stork-part"))
            // Nothing but the object: no temporaries, in the store nor beside the target.
            let listed = try store.list(prefix: "")
            #expect(listed.map(\.key) == ["main/wal/" + name + compression.suffix])
            if compression == .zstd { #expect(listed[0].size < 4 << 20) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == ["back-\(compression)", "wal"])
            try FileManager.default.removeItem(atPath: target)
        }
        // Both under their prefixes in the one bucket.
        let whole = try S3Store(location(server), environment: [:])
        #expect(try whole.list(prefix: "clusters/").map(\.key) == [
            "clusters/a/main/wal/\(name).zst", "clusters/b/main/wal/\(name)",
        ])
        #expect(whole.describe("x/y") == "s3://\(server.bucket)/x/y")
        #expect(try S3Store(location(server, prefix: "clusters/a"), environment: [:]).describe("main/wal/\(name).zst")
                == "s3://\(server.bucket)/clusters/a/main/wal/\(name).zst")
    }

    @Test func listingFollowsContinuationAndDeleteIsIdempotent() async throws {
        let server = try await S3TestServer()
        defer { server.stop() }
        let root = TestSupport.makeTempDir("stork-s3")
        defer { TestSupport.removeTree(root) }
        var store = try S3Store(location(server, prefix: "p"), environment: [:])
        store.pageSize = 3
        // Names that need escaping in the URL and in the listing's XML.
        let keys = (0..<10).map { "objects/\(String(format: "%02d", $0))" } + ["objects/odd name+&=.x"]
        for (i, key) in keys.enumerated() {
            let file = root + "/f"
            try Data(repeating: UInt8(i), count: i + 1).write(to: URL(fileURLWithPath: file))
            #expect(try store.create(key, fromFile: file))
            #expect(try store.create(key, fromFile: file) == false)
        }
        let other = try S3Store(location(server, prefix: "q"), environment: [:])
        #expect(try other.create("objects/00", fromFile: root + "/f"))

        let listed = try store.list(prefix: "objects/")
        #expect(listed == keys.enumerated().map { StoredObject(key: $1, size: $0 + 1) }.sorted { $0.key < $1.key })
        #expect(try store.list(prefix: "objects/0").count == 10)
        #expect(try store.list(prefix: "nothing/").isEmpty)
        #expect(try store.exists("objects/odd name+&=.x"))
        #expect(try store.download("objects/odd name+&=.x", to: root + "/odd"))
        #expect(FileManager.default.contents(atPath: root + "/odd") == Data(repeating: 10, count: 11))

        try store.delete("objects/03")
        try store.delete("objects/03")
        #expect(try store.list(prefix: "objects/").count == 10)
        #expect(try store.exists("objects/03") == false)
        #expect(try other.list(prefix: "").map(\.key) == ["objects/00"])
    }

    @Test func largeObjectRoundTrip() async throws {
        let server = try await S3TestServer()
        defer { server.stop() }
        let root = TestSupport.makeTempDir("stork-s3")
        defer { TestSupport.removeTree(root) }
        // 200 MiB, every MiB different, written a MiB at a time.
        let source = root + "/big"
        _ = FileManager.default.createFile(atPath: source, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: source))
        var block = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255) }
        for i in 0..<200 {
            block[0] = UInt8(i)
            try handle.write(contentsOf: block)
        }
        try handle.close()

        let store = try S3Store(location(server, prefix: "base"), environment: [:])
        let start = Date()
        #expect(try store.create("backup/part-0001", fromFile: source))
        #expect(try store.download("backup/part-0001", to: root + "/back"))
        let seconds = Date().timeIntervalSince(start)
        #expect(try store.list(prefix: "backup/") == [StoredObject(key: "backup/part-0001", size: 200 << 20)])
        #expect(sha256(source) == sha256(root + "/back"))
        #expect(sha256(source).count == 64)
        print("200 MiB up and down through moto in \(String(format: "%.1f", seconds)) s")
    }

    func sha256(_ path: String) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [path]
        let pipe = Pipe()
        p.standardOutput = pipe
        guard (try? p.run()) != nil else { return "" }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(String(decoding: output, as: UTF8.self).prefix { $0 != " " })
    }

    @Test func mistakesGiveOneLineErrorsThatSayWhatToFix() async throws {
        let server = try await S3TestServer()
        defer { server.stop() }
        let root = TestSupport.makeTempDir("stork-s3")
        defer { TestSupport.removeTree(root) }
        let file = root + "/f"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))

        var wrongSecret = server.credentials
        wrongSecret.secretAccessKey = "wrong"
        let secret = archiveError { _ = try S3Store(location(server, credentials: wrongSecret), environment: [:]).download("k", to: root + "/t") }
        #expect(secret.contains("SignatureDoesNotMatch") && secret.contains("archive.secret_access_key") && secret.contains("AWS_SECRET_ACCESS_KEY"), "\(secret)")

        let unknown = S3TestCredentials(accessKeyID: "AKIAUNKNOWN000000000", secretAccessKey: "x")
        let key = archiveError { _ = try S3Store(location(server, credentials: unknown), environment: [:]).create("k", fromFile: file) }
        #expect(key.contains("InvalidAccessKeyId") && key.contains("archive.access_key_id"), "\(key)")

        var wrongToken = server.temporaryCredentials
        wrongToken.sessionToken = "wrong"
        let token = archiveError { _ = try S3Store(location(server, credentials: wrongToken), environment: [:]).list(prefix: "") }
        #expect(token.contains("session token"), "\(token)")

        let noBucket = try S3Store(location(server, bucket: "no-such-bucket"), environment: [:])
        for message in [archiveError { _ = try noBucket.download("k", to: root + "/t") },
                        archiveError { _ = try noBucket.list(prefix: "") },
                        archiveError { _ = try noBucket.create("k", fromFile: file) }] {
            #expect(message.contains("NoSuchBucket") && message.contains("the bucket no-such-bucket does not exist"), "\(message)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["f"])

        var unreachable = location(server)
        unreachable.endpoint = "http://127.0.0.1:1"
        let start = Date()
        let refused = archiveError { _ = try S3Store(unreachable, environment: [:]).download("k", to: root + "/t") }
        #expect(refused == "cannot reach S3 endpoint http://127.0.0.1:1: Connection refused")
        #expect(Date().timeIntervalSince(start) < 5)

        var noCredentials = location(server)
        (noCredentials.accessKeyID, noCredentials.secretAccessKey, noCredentials.sessionToken) = (nil, nil, nil)
        let missing = archiveError { _ = try S3Store(noCredentials, environment: ["AWS_ACCESS_KEY_ID": "only-the-id"]) }
        #expect(missing.contains("AWS_ACCESS_KEY_ID") && missing.contains("AWS_SECRET_ACCESS_KEY") && missing.contains("archive.access_key_id"), "\(missing)")
        noCredentials.accessKeyID = "id"
        let half = archiveError { _ = try openArchiveStore(ArchiveSettings(location: .s3(noCredentials)), environment: [:]) }
        #expect(half.contains("archive.secret_access_key"), "\(half)")
    }

    @Test func settingsAndEnvironment() throws {
        var location = ArchiveSettings.S3Location(bucket: "b", prefix: "")
        let environment = ["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
                           "AWS_DEFAULT_REGION": "eu-west-3", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"]
        let store = try S3Store(location, environment: environment)
        #expect(store.region == "eu-west-3" && store.endpoint == "http://127.0.0.1:9000" && store.sessionToken == "token")
        #expect(store.describe("main/wal/x") == "s3://b/main/wal/x")
        // The section's key pair goes without the environment's token.
        location.accessKeyID = "configured"
        location.secretAccessKey = "configured-secret"
        location.region = "us-west-2"
        let configured = try S3Store(location, environment: environment)
        #expect(configured.accessKeyID == "configured" && configured.sessionToken == nil && configured.region == "us-west-2")
        let aws = try S3Store(ArchiveSettings.S3Location(bucket: "b", prefix: ""), environment: ["AWS_ACCESS_KEY_ID": "i", "AWS_SECRET_ACCESS_KEY": "s"])
        #expect(aws.region == "us-east-1" && aws.endpoint == nil && aws.endpointDescription == "https://b.s3.us-east-1.amazonaws.com")
    }

    @Test func xmlReading() {
        let page = ListPage(Data("""
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b&#x20;c&lt;</Key><Size>12</Size></Contents>\
            <Contents><Key>d</Key><Size>0</Size></Contents><NextContinuationToken>t/+=</NextContinuationToken></ListBucketResult>
            """.utf8))
        #expect(page.objects.map(\.key) == ["a&b c<", "d"] && page.objects.map(\.size) == [12, 0])
        #expect(page.truncated && page.nextToken == "t/+=")
        let error = S3ErrorDocument(Data("<Error><Code>NoSuchKey</Code><Message>gone &quot;k&quot;</Message></Error>".utf8))
        #expect(error.code == "NoSuchKey" && error.message == "gone \"k\"")
        #expect(awsEscape("a b+/~é") == "a%20b%2B%2F~%C3%A9" && awsEscape("a/b c", keepSlash: true) == "a/b%20c")
    }
}
