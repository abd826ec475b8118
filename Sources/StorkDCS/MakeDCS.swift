import Logging
import StorkConfig

/// The DCS backend `config.dcs` names: etcd v3 (`etcd3`/`etcd`) or Stork's single-host
/// `local` store, both with Patroni's keys under `config.keyPrefix` for member `config.name`.
public func makeDCS(config: Config, logger: Logger) -> any DCS {
    switch config.dcs {
    case .etcd3(let settings):
        return EtcdDCS(settings: settings, keyPrefix: config.keyPrefix, memberName: config.name, logger: logger)
    case .local(let path):
        return LocalDCS(path: path, keyPrefix: config.keyPrefix, memberName: config.name, logger: logger)
    }
}
