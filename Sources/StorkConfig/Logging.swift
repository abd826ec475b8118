import Foundation
import Logging
import Synchronization

/// A swift-log handler that writes Patroni's log lines to a file descriptor (stderr by default).
///
/// Plain mode is Patroni's default format `%(asctime)s %(levelname)s: %(message)s`, for example
/// `2026-01-18 13:29:06,714 INFO: no action. I am (postgresql0), the leader with the lock`:
/// local time, a comma before the milliseconds. Metadata is not printed in plain mode (messages
/// carry their data). JSON mode (`log.type: json`) writes one object per line with `time`,
/// `levelname`, `message` and the metadata as further fields.
///
/// Each line is written with one `write(2)` call, so lines from concurrent tasks never
/// interleave (pipes and terminals keep writes up to `PIPE_BUF` whole; a longer line is still one
/// call). The handler holds no lock.
public struct PatroniLogHandler: LogHandler {
    /// The level and format given to this handler, else the process's (`StorkLogging.apply`,
    /// which a reload of the configuration changes).
    private var ownLevel: Logger.Level?
    private let ownJSON: Bool?
    public var logLevel: Logger.Level {
        get { ownLevel ?? StorkLogging.level }
        set { ownLevel = newValue }
    }
    public var json: Bool { ownJSON ?? StorkLogging.json }
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    /// Where lines go; 2 (stderr) unless a test passes a pipe, or `file` (`log.dir`) is given.
    public let fileDescriptor: Int32
    public let file: RotatingLogFile?

    public init(label: String, json: Bool? = nil, logLevel: Logger.Level? = nil,
                metadataProvider: Logger.MetadataProvider? = nil, fileDescriptor: Int32 = 2, file: RotatingLogFile? = nil) {
        self.label = label
        self.ownJSON = json
        self.ownLevel = logLevel
        self.metadataProvider = metadataProvider
        self.fileDescriptor = fileDescriptor
        self.file = file
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let own = event.metadata { all.merge(own) { _, new in new } }
        let line = json
            ? Self.formatJSON(date: Date(), level: event.level, message: event.message.description, metadata: all)
            : Self.formatPlain(date: Date(), level: event.level, message: event.message.description)
        if let file { file.write(line) } else { Self.writeLine(line, to: fileDescriptor) }
    }

    // MARK: - Formatting (pure; tests pass a fixed date and time zone)

    /// Patroni's level name for a swift-log level.
    public static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARNING"
        case .error: return "ERROR"
        case .critical: return "CRITICAL"
        }
    }

    /// Python logging's `asctime`: `YYYY-MM-DD HH:MM:SS,mmm` in `timeZone` (local time by default).
    public static func timestamp(_ date: Date, timeZone: TimeZone = .current) -> String {
        let seconds = date.timeIntervalSince1970
        var whole = seconds.rounded(.down)
        var millis = Int(((seconds - whole) * 1000).rounded(.down))
        if millis >= 1000 { millis = 999 }
        if millis < 0 { millis = 0 }
        whole += Double(timeZone.secondsFromGMT(for: date))
        var t = time_t(whole)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d,%03d",
                      Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
    }

    /// One plain line, without the newline: `2026-01-18 13:29:06,714 INFO: message`.
    public static func formatPlain(date: Date, level: Logger.Level, message: String, timeZone: TimeZone = .current) -> String {
        "\(timestamp(date, timeZone: timeZone)) \(levelName(level)): \(message)"
    }

    /// One JSON object, without the newline: `time`, `levelname`, `message` first, then the
    /// metadata keys in sorted order (a metadata key with one of the first three names is left out).
    public static func formatJSON(date: Date, level: Logger.Level, message: String, metadata: Logger.Metadata,
                                  timeZone: TimeZone = .current) -> String {
        var out = "{"
        out += "\"time\":" + JSONValue.string(timestamp(date, timeZone: timeZone)).jsonString()
        out += ",\"levelname\":" + JSONValue.string(levelName(level)).jsonString()
        out += ",\"message\":" + JSONValue.string(message).jsonString()
        for key in metadata.keys.sorted() where !["time", "levelname", "message"].contains(key) {
            out += "," + JSONValue.string(key).jsonString() + ":" + jsonValue(metadata[key]!).jsonString()
        }
        return out + "}"
    }

    static func jsonValue(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let s): return .string(s)
        case .stringConvertible(let c): return .string(c.description)
        case .array(let items): return .array(items.map(jsonValue))
        case .dictionary(let d): return .object(d.mapValues(jsonValue))
        }
    }

    /// Writes `line` and a newline in one `write(2)` call (retried on EINTR; a short write,
    /// which only happens on a full disk or a closed reader, writes the rest).
    public static func writeLine(_ line: String, to fd: Int32) {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }
}

/// Process-wide logging set-up for the `stork` command.
public enum StorkLogging {
    private static let bootstrapped = OnceFlag()
    private static let levelIndex = Atomic<Int>(Logger.Level.allCases.firstIndex(of: .info)!)
    private static let jsonFlag = Atomic<Bool>(false)

    /// The process's level and format (`log.level`, `log.type`), which every handler made by
    /// `bootstrap` follows.
    public static var level: Logger.Level { Logger.Level.allCases[levelIndex.load(ordering: .relaxed)] }
    public static var json: Bool { jsonFlag.load(ordering: .relaxed) }

    /// Sets the process's level (Patroni's name; an unknown one means INFO) and format, for the
    /// loggers that exist already too: a reload of the configuration applies `log` at once.
    public static func apply(level: String, json: Bool) {
        levelIndex.store(Logger.Level.allCases.firstIndex(of: parseLevel(level) ?? .info)!, ordering: .relaxed)
        jsonFlag.store(json, ordering: .relaxed)
    }

    /// Installs `PatroniLogHandler` as swift-log's handler, once per process: later calls do
    /// nothing and return false (swift-log allows one bootstrap per process).
    /// - Parameters:
    ///   - level: Patroni's level name (`log.level`); an unknown name means INFO.
    ///   - json: `log.type == "json"`.
    ///   - file: `log.dir`'s file, written instead of standard error.
    @discardableResult
    public static func bootstrap(level: String, json: Bool, file: RotatingLogFile? = nil) -> Bool {
        guard bootstrapped.claim() else { return false }
        apply(level: level, json: json)
        LoggingSystem.bootstrap { label in
            PatroniLogHandler(label: label, file: file)
        }
        return true
    }

    /// Patroni's level names (`DEBUG`, `INFO`, `WARNING`/`WARN`, `ERROR`, `CRITICAL`/`FATAL`, any
    /// case) and swift-log's own (`trace`, `notice`) to a swift-log level; nil for anything else.
    public static func parseLevel(_ text: String) -> Logger.Level? {
        switch text.trimmingCharacters(in: .whitespaces).uppercased() {
        case "TRACE": return .trace
        case "DEBUG": return .debug
        case "INFO": return .info
        case "NOTICE": return .notice
        case "WARNING", "WARN": return .warning
        case "ERROR": return .error
        case "CRITICAL", "FATAL": return .critical
        default: return nil
        }
    }
}

/// A flag that exactly one caller can claim, from any thread.
final class OnceFlag: Sendable {
    private let claimed = Mutex(false)

    /// True for the first call only.
    func claim() -> Bool {
        claimed.withLock { done in
            if done { return false }
            done = true
            return true
        }
    }
}
