// The watchdog section: Patroni's (mode, device, safety_margin, driver) and Stork's self_fence.
import Foundation

extension ConfigReader {
    mutating func readWatchdog(_ value: JSONValue?) -> WatchdogSettings {
        var watchdog = WatchdogSettings()
        guard let m = map(value, "watchdog") else { return watchdog }
        unknownKeys(m, known: ["mode", "device", "safety_margin", "driver", "self_fence"], prefix: "watchdog")
        switch m["mode"] {
        case nil, .null?: break
        // YAML 1.1 reads a bare `off` as false.
        case .bool(false)?: watchdog.mode = .off
        case let value?:
            let text = value.scalarText?.lowercased() ?? ""
            switch text {
            case "off", "disable", "disabled": watchdog.mode = .off
            case "auto", "automatic": watchdog.mode = .automatic
            case "require", "required": watchdog.mode = .required
            // Patroni turns an unknown mode off with a warning; a mistyped `required` must not
            // quietly run without the watchdog.
            default: issue("watchdog.mode", "\(quoted(value)): expected off, automatic or required")
            }
        }
        if let device = string(m["device"], "watchdog.device") {
            if device.hasPrefix("/") { watchdog.device = device }
            else { issue("watchdog.device", "\"\(device)\": expected an absolute path such as /dev/watchdog") }
        }
        if let margin = int(m["safety_margin"], "watchdog.safety_margin") {
            if margin >= 0 || margin == -1 { watchdog.safetyMargin = margin }
            else { issue("watchdog.safety_margin", "\(margin): expected seconds (0 or more), or -1 for half the ttl") }
        }
        if let driver = string(m["driver"], "watchdog.driver") {
            if driver == "default" || driver == "testing" { watchdog.driver = driver }
            else { issue("watchdog.driver", "\"\(driver)\": expected default (a Linux watchdog device) or testing (a named pipe)") }
        }
        watchdog.selfFence = m["self_fence"]?.isTruthy ?? false
        return watchdog
    }
}
