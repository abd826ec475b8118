import Foundation
import Logging
import Testing
@testable import StorkConfig

@Suite("Patroni's log lines")
struct LoggingTests {
    // 2026-01-18 13:30:06.7145 UTC
    let date = Date(timeIntervalSince1970: 1_768_743_006.7145)
    let utc = TimeZone(identifier: "UTC")!

    @Test func plainLineFormat() {
        #expect(PatroniLogHandler.formatPlain(date: date, level: .info, message: "no action. I am (postgresql0), the leader with the lock", timeZone: utc)
                == "2026-01-18 13:30:06,714 INFO: no action. I am (postgresql0), the leader with the lock")
        #expect(PatroniLogHandler.formatPlain(date: date, level: .warning, message: "m", timeZone: TimeZone(secondsFromGMT: 3600)!)
                == "2026-01-18 14:30:06,714 WARNING: m")
        #expect(PatroniLogHandler.formatPlain(date: Date(timeIntervalSince1970: 1_768_694_399.0009), level: .error, message: "m",
                                              timeZone: TimeZone(secondsFromGMT: -5 * 3600)!)
                == "2026-01-17 18:59:59,000 ERROR: m")
    }

    @Test func levelNames() {
        let expected: [(Logger.Level, String)] = [(.trace, "DEBUG"), (.debug, "DEBUG"), (.info, "INFO"), (.notice, "INFO"),
                                                  (.warning, "WARNING"), (.error, "ERROR"), (.critical, "CRITICAL")]
        for (level, name) in expected { #expect(PatroniLogHandler.levelName(level) == name) }
    }

    @Test func parseLevel() {
        #expect(StorkLogging.parseLevel("DEBUG") == .debug)
        #expect(StorkLogging.parseLevel("info") == .info)
        #expect(StorkLogging.parseLevel("WARN") == .warning)
        #expect(StorkLogging.parseLevel("Warning") == .warning)
        #expect(StorkLogging.parseLevel("ERROR") == .error)
        #expect(StorkLogging.parseLevel("FATAL") == .critical)
        #expect(StorkLogging.parseLevel("CRITICAL") == .critical)
        #expect(StorkLogging.parseLevel("trace") == .trace)
        #expect(StorkLogging.parseLevel("loud") == nil)
    }

    @Test func jsonLineFormat() {
        let line = PatroniLogHandler.formatJSON(date: date, level: .error, message: "method \"wal_g\" failed",
                                                metadata: ["stork.method": "wal_g", "stork.exit_status": .stringConvertible(3),
                                                           "list": .array(["a", "b"]), "message": "dropped"],
                                                timeZone: utc)
        #expect(line == #"{"time":"2026-01-18 13:30:06,714","levelname":"ERROR","message":"method \"wal_g\" failed","list":["a","b"],"stork.exit_status":"3","stork.method":"wal_g"}"#)
        #expect(JSONValue.parse(json: Data(line.utf8))?["message"] == .string("method \"wal_g\" failed"))
    }

    @Test func handlerWritesWholeLinesToItsDescriptor() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }

        var plainLogger = Logger(label: "t") { PatroniLogHandler(label: $0, fileDescriptor: fds[1]) }
        plainLogger[metadataKey: "stork.member"] = "pg0"
        plainLogger.debug("below the level")
        plainLogger.warning("hello", metadata: ["ignored": "in plain mode"])
        var jsonLogger = Logger(label: "t") { PatroniLogHandler(label: $0, json: true, fileDescriptor: fds[1]) }
        jsonLogger.logLevel = .debug
        jsonLogger[metadataKey: "stork.member"] = "pg0"
        jsonLogger.debug("details", metadata: ["stork.pid": "42"])
        close(fds[1])

        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            data.append(contentsOf: buffer[0..<n])
        }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 3)
        #expect(lines.last == "")
        let plain = try #require(lines.first)
        #expect(plain.wholeMatch(of: /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING: hello/) != nil, "\(plain)")
        let object = try #require(JSONValue.parse(json: Data(lines[1].utf8)))
        #expect(object["levelname"] == .string("DEBUG"))
        #expect(object["message"] == .string("details"))
        #expect(object["stork.member"] == .string("pg0"))
        #expect(object["stork.pid"] == .string("42"))
        #expect(lines[1].hasPrefix(#"{"time":""#))
    }

    @Test func concurrentLinesNeverInterleave() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let writeEnd = fds[1], readEnd = fds[0]
        let reader = Task.detached { () -> String in
            var data = Data()
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(readEnd, &buffer, buffer.count)
                if n <= 0 { break }
                data.append(contentsOf: buffer[0..<n])
            }
            close(readEnd)
            return String(decoding: data, as: UTF8.self)
        }
        let payload = String(repeating: "x", count: 200)
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    let logger = Logger(label: "t") { PatroniLogHandler(label: $0, fileDescriptor: writeEnd) }
                    for i in 0..<50 { logger.info("\(t)-\(i) \(payload)") }
                }
            }
        }
        close(writeEnd)
        let lines = await reader.value.split(separator: "\n").map(String.init)
        #expect(lines.count == 400)
        #expect(lines.allSatisfy { $0.wholeMatch(of: /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO: \d+-\d+ x{200}/) != nil })
    }

    @Test func onlyOneCallerClaimsTheBootstrap() async {
        // StorkLogging.bootstrap itself is not called here: it would change logging for every test in this process.
        let flag = OnceFlag()
        let wins = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<64 { group.addTask { flag.claim() } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(wins == 1)
        #expect(flag.claim() == false)
    }
}

@Suite("log.dir: patroni.log, rotated as Patroni rotates it")
struct RotatingLogFileTests {
    /// Lines of 9 bytes with the newline, file_size 30: three lines a file; two old files kept.
    @Test func rotatesAtTheSizeAndKeepsFileNum() throws {
        let dir = NSTemporaryDirectory() + "stork-log-\(UUID().uuidString)/nested"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
        let file = try RotatingLogFile(dir: dir, maxBytes: 30, backups: 2)
        for i in 1...10 { file.write("line \(String(format: "%03d", i))") }
        func read(_ name: String) -> String? { try? String(contentsOfFile: dir + "/" + name, encoding: .utf8) }
        #expect(read("patroni.log") == "line 010\n")
        #expect(read("patroni.log.1") == "line 007\nline 008\nline 009\n")
        #expect(read("patroni.log.2") == "line 004\nline 005\nline 006\n")
        #expect(read("patroni.log.3") == nil, "file_num 2 keeps two")
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/patroni.log")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Opened again, it appends and counts what is there.
        let again = try RotatingLogFile(dir: dir, maxBytes: 30, backups: 2)
        again.write("line 011")
        #expect(read("patroni.log") == "line 010\nline 011\n")
    }

    /// file_num 0: Python's handler never rolls over without backups; the file only grows.
    @Test func noBackupsMeansNoRotation() throws {
        let dir = NSTemporaryDirectory() + "stork-log-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try RotatingLogFile(dir: dir, maxBytes: 30, backups: 0)
        for i in 1...10 { file.write("line \(String(format: "%03d", i))") }
        #expect((try? String(contentsOfFile: dir + "/patroni.log", encoding: .utf8))?.split(separator: "\n").count == 10)
        #expect(!FileManager.default.fileExists(atPath: dir + "/patroni.log.1"))
    }

    @Test func aDirectoryThatCannotBeMadeIsOneLine() {
        do {
            _ = try RotatingLogFile(dir: "/proc/stork-log", maxBytes: 100, backups: 1)
            Issue.record("made a log directory under /proc")
        } catch {
            #expect("\(error)".hasPrefix("log.dir: cannot create /proc/stork-log") && !"\(error)".contains("\n"), "\(error)")
        }
    }
}
