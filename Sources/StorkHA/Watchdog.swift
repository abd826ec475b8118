import Foundation
import Logging
import StorkConfig
#if canImport(Glibc)
import Glibc
#endif

/// Patroni's watchdog: a Linux watchdog device that the primary keeps alive on every leader
/// key refresh, with a timeout of `ttl - safety_margin`, so that a machine whose agent hangs
/// or dies is reset before its key can expire and another member promotes. The `testing`
/// driver is Patroni's test harness: a named pipe gets `Ctimeout=N` instead of the ioctl.
final class Watchdog {
    var settings: WatchdogSettings { didSet { if settings != oldValue { lastFailure = nil } } }
    private let logger: Logger
    private var fd: Int32 = -1
    /// The timeout the device runs with, as set or read back.
    private var timeout: Int?
    private var supportsMagicClose = true
    /// The last activation that failed in required mode, and when: the member does not race
    /// for the key again (only to give it back) until a ttl has passed or the settings change.
    private var lastFailure: (reason: String, at: Date)?

    init(settings: WatchdogSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    var isRunning: Bool { fd >= 0 }

    /// Patroni's `is_healthy`: a member whose required watchdog cannot work does not lead.
    func isHealthy(ttl: Int, loopWait: Int) -> Bool { unusableReason(ttl: ttl, loopWait: loopWait) == nil }

    /// Why a required watchdog is not usable, for the log; nil when it is.
    func unusableReason(ttl: Int, loopWait: Int) -> String? {
        guard settings.mode == .required else { return nil }
        if settings.fenceTimeout(ttl: ttl) < loopWait {
            return "watchdog.mode is required but ttl - safety_margin (\(settings.fenceTimeout(ttl: ttl)) s) is below loop_wait (\(loopWait) s)"
        }
        if access(settings.device, W_OK) != 0 { return "watchdog.mode is required but \(settings.device) cannot be opened for writing" }
        if let failure = lastFailure, Date().timeIntervalSince(failure.at) < Double(ttl) {
            return "watchdog.mode is required but \(settings.device) could not be activated \(Int(Date().timeIntervalSince(failure.at))) s ago: \(failure.reason)"
        }
        return nil
    }

    private var describe: String {
        let name = settings.driver == "testing" ? "Watchdog test harness" : "Linux watchdog device"
        return settings.device == "/dev/watchdog" ? name : "\(name) at \(settings.device)"
    }

    /// Opens the device and sets its timeout. False when the mode is `required` and no safe
    /// watchdog could be had: the caller must not lead then.
    func activate(ttl: Int, loopWait: Int) -> Bool {
        guard settings.mode != .off, !isRunning else { return true }
        let required = settings.mode == .required
        let wanted = settings.fenceTimeout(ttl: ttl)
        if wanted < loopWait {
            logger.warning("Watchdog not supported because leader TTL \(ttl) minus safety_margin is less than loop_wait \(loopWait)")
            return refuse(required, "Configuration requires watchdog, but watchdog could not be configured.", reason: "ttl - safety_margin is below loop_wait")
        }
        // Non-blocking: a named pipe with no reader fails at once instead of hanging the cycle.
        fd = open(settings.device, O_WRONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let failure = "Can't open watchdog device: \(String(cString: strerror(errno)))"
            if required { logger.warning("Could not activate \(describe): \(failure)") } else { logger.debug("Could not activate \(describe): \(failure)") }
            return refuse(required, "Configuration requires watchdog, but watchdog could not be configured.", reason: failure)
        }
        guard let actual = setTimeout(wanted) else {
            close()
            return refuse(required, "Configuration requires watchdog, but watchdog could not be configured.", reason: "its timeout could not be set")
        }
        if actual < loopWait {
            logger.error("loop_wait of \(loopWait) seconds is too long for watchdog \(actual) second timeout")
            logger.info("Disabling watchdog due to unsafe timeout.")
            close()
            return refuse(required, "Configuration requires watchdog, but watchdog could not be activated", reason: "its \(actual) second timeout is below loop_wait")
        }
        if actual > wanted {
            if required {
                close()
                return refuse(true, "Configuration requires watchdog, but a safe watchdog timeout \(wanted) could not be configured. Watchdog timeout is \(actual).",
                              reason: "it runs with a \(actual) second timeout, not \(wanted)")
            }
            logger.warning("Watchdog timeout \(actual) seconds does not ensure safe termination within \(wanted) seconds")
        }
        if !supportsMagicClose {
            logger.warning("Watchdog implementation can't be disabled. Watchdog will trigger after Stork loses leader key.")
        }
        logger.info("\(describe) activated with \(actual) second timeout, timing slack \(actual - loopWait) seconds")
        lastFailure = nil
        return true
    }

    private func refuse(_ required: Bool, _ message: String, reason: String) -> Bool {
        guard required else { return true }
        logger.error("\(message)")
        lastFailure = (reason, Date())
        return false
    }

    /// Resets the device's timer (on every leader key refresh); a changed ttl or safety margin
    /// takes effect here, so the new timeout starts with the refresh it belongs to.
    func keepalive(ttl: Int) {
        guard isRunning else { return }
        if !send("1") { logger.error("Error while sending keepalive: \(String(cString: strerror(errno)))") }
        let wanted = settings.fenceTimeout(ttl: ttl)
        if wanted != timeout, let actual = setTimeout(wanted) {
            logger.info("\(describe) updated with \(actual) second timeout")
        }
    }

    /// Closes the device with the magic character, which stops its timer (when the server no
    /// longer accepts writes, or on shutdown).
    func disable() {
        guard isRunning else { return }
        if !supportsMagicClose {
            _ = send("1")
            logger.warning("Watchdog implementation can't be disabled. System will reboot after \(timeout ?? 0) seconds when watchdog times out.")
        }
        if !send("V") { logger.error("Error while disabling watchdog: \(String(cString: strerror(errno)))") }
        close()
    }

    private func close() {
        _ = Glibc.close(fd)
        fd = -1
        timeout = nil
    }

    private func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return write(fd, bytes, bytes.count) == bytes.count
    }

    // linux/watchdog.h: _IOR('W', 0, struct watchdog_info), _IOWR('W', 6, int), _IOR('W', 7, int).
    private static let getSupport: UInt = 0x8028_5700
    private static let setTimeoutRequest: UInt = 0xC004_5706
    private static let getTimeoutRequest: UInt = 0x8004_5707
    private static let optionSetTimeout: UInt32 = 0x0080
    private static let optionMagicClose: UInt32 = 0x0100

    /// Sets the timeout where the device can and reads back the one in effect; nil (logged)
    /// when the device does not answer.
    private func setTimeout(_ seconds: Int) -> Int? {
        guard (1...0xFFFF).contains(seconds) else {
            logger.error("Invalid watchdog timeout \(seconds). Supported values are between 1 and 65535")
            return nil
        }
        if settings.driver == "testing" {
            guard send("Ctimeout=\(seconds)\n") else {
                logger.error("Could not set timeout on watchdog device: \(String(cString: strerror(errno)))")
                return nil
            }
            timeout = seconds
            return seconds
        }
        // struct watchdog_info: options, firmware_version, identity[32].
        var info = [UInt32](repeating: 0, count: 10)
        guard info.withUnsafeMutableBytes({ ioctl(fd, Self.getSupport, $0.baseAddress!) }) == 0 else {
            logger.error("Could not get information about watchdog device: \(String(cString: strerror(errno)))")
            return nil
        }
        supportsMagicClose = info[0] & Self.optionMagicClose != 0
        if info[0] & Self.optionSetTimeout != 0 {
            var value = Int32(seconds)
            guard ioctl(fd, Self.setTimeoutRequest, &value) == 0 else {
                logger.error("Could not set timeout on watchdog device: \(String(cString: strerror(errno)))")
                return nil
            }
        }
        var actual: Int32 = 0
        guard ioctl(fd, Self.getTimeoutRequest, &actual) == 0 else {
            logger.error("Could not get timeout on watchdog device: \(String(cString: strerror(errno)))")
            return nil
        }
        timeout = Int(actual)
        return Int(actual)
    }
}
