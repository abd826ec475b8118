import Foundation

/// The DCS `config` key, Patroni's dynamic configuration, as `PATCH /config` and `PUT /config`
/// change it: Patroni's merge, and the checks a new value must pass before it is written.
/// Patroni writes whatever it is sent and later adjusts or ignores what it cannot use; Stork
/// refuses it instead, so that what the key says is what the members run.
public enum DynamicConfig {
    /// The keys of Patroni's dynamic configuration (dynamic_configuration.rst, Patroni 4).
    public static let keys: Set<String> = [
        "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "maximum_lag_on_syncnode", "max_timelines_history",
        "primary_start_timeout", "primary_stop_timeout", "master_start_timeout", "master_stop_timeout", "check_timeline",
        "synchronous_mode", "synchronous_mode_strict", "synchronous_node_count", "failsafe_mode", "pause",
        "postgresql", "standby_cluster", "slots", "ignore_slots", "member_slots_ttl",
    ]

    /// Keys Stork accepts and does not act on yet (synchronous replication, slots and failsafe
    /// come with issue 19; primary_stop_timeout acts only in synchronous mode).
    static let notImplemented: Set<String> = [
        "maximum_lag_on_syncnode", "synchronous_mode", "synchronous_mode_strict", "synchronous_node_count", "failsafe_mode",
        "slots", "ignore_slots", "member_slots_ttl", "primary_stop_timeout", "master_stop_timeout",
    ]
    /// The keys of `postgresql` in the dynamic configuration that Stork applies.
    static let postgresqlKeys: Set<String> = [
        "parameters", "pg_hba", "pg_ident", "use_slots", "use_pg_rewind",
        "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines",
    ]

    /// Patroni's defaults of the keys that are not all off when unset.
    static func isDefault(_ key: String, _ value: JSONValue) -> Bool {
        switch key {
        case "synchronous_node_count": return value.intValue == 1
        case "maximum_lag_on_syncnode": return value.intValue == -1
        case "member_slots_ttl": return ["30min", "1800"].contains(value.scalarText ?? "")
        default: return false
        }
    }

    /// The keys of `config` (`bootstrap.dcs` or the DCS key) that have no effect in Stork,
    /// as paths under `prefix`: unknown ones, and set ones Stork does not act on yet (one set
    /// to false, 0 or empty changes nothing, so it is not named).
    public static func withoutEffect(_ config: [String: JSONValue], prefix: String) -> [String] {
        var out: [String] = []
        for (key, value) in config where !keys.contains(key) || (notImplemented.contains(key) && value.isSet && !isDefault(key, value)) {
            out.append(prefix + key)
        }
        if case .object(let pg)? = config["postgresql"] {
            for (key, value) in pg where !postgresqlKeys.contains(key) && value.isSet { out.append(prefix + "postgresql." + key) }
        }
        return out.sorted()
    }

    /// Patroni's merge for `PATCH /config`: a key whose value is null is removed, an object
    /// merges into an object key by key, anything else replaces what was there.
    public static func patched(_ current: [String: JSONValue], with patch: [String: JSONValue]) -> [String: JSONValue] {
        var out = current
        for (key, value) in patch {
            switch (value, out[key]) {
            case (.null, _):
                out[key] = nil
            case (.object(let inner), .object(let existing)?):
                out[key] = .object(patched(existing, with: inner))
            default:
                out[key] = value
            }
        }
        return out
    }

    /// What is wrong with `config` as the cluster's configuration, one line each (empty: it
    /// may be written): unknown keys among `given` (the keys the request named: one that
    /// Patroni or an older Stork left in the key does not block a change of another), values
    /// of the wrong type, timing that breaks Patroni's rule `loop_wait + 2*retry_timeout <= ttl`
    /// or its minimums.
    public static func problems(_ config: [String: JSONValue], given: some Sequence<String>) -> [String] {
        var reader = ConfigReader(environment: [:])
        for key in Set(given).sorted() where !keys.contains(key) {
            reader.issue("config.\(key)", "not a key of the dynamic configuration (\(keys.sorted().joined(separator: ", ")))")
        }
        _ = reader.readBootstrapDCS(config, path: "config")
        var problems = reader.issues.map(\.description)
        if problems.isEmpty {
            // Patroni would adjust these in memory and leave the key saying otherwise: refused here.
            let given = ClusterTiming(ttl: config["ttl"]?.intValue ?? 30, loopWait: config["loop_wait"]?.intValue ?? 10,
                                      retryTimeout: config["retry_timeout"]?.intValue ?? 10)
            if given.adjusted(source: "config").timing != given {
                problems.append("config: ttl \(given.ttl), loop_wait \(given.loopWait) and retry_timeout \(given.retryTimeout) break Patroni's rule "
                                + "(ttl at least 20, loop_wait at least 1, retry_timeout at least 3, loop_wait + 2*retry_timeout <= ttl)")
            }
        }
        return problems
    }
}
