import Foundation
@testable import StorkConfig

/// A configuration in the shape of Patroni's postgres0.yml, with every section Stork reads and a
/// few it does not implement yet.
let postgres0YAML = """
scope: batman
namespace: /service/
name: postgresql0

restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
  cafile: /etc/ssl/ca.pem
  authentication:
    username: patroni
    password: rest-pw-1111

log:
  level: INFO
  dir: /var/log/patroni

etcd3:
  host: 127.0.0.1:2379

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    synchronous_mode: false
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: on
        max_wal_senders: 10
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 127.0.0.1/32 md5
  - host all all 0.0.0.0/0 md5
  users:
    admin:
      password: admin-pw-2222
      options:
        - createrole
        - createdb
  post_init: /usr/local/bin/setup-cluster.sh

postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pw-3333
      sslmode: verify-full
    superuser:
      username: postgres
      password: super-pw-4444
    rewind:
      username: rewind_user
      password: rewind-pw-5555
  parameters:
    unix_socket_directories: '..'
    shared_buffers: 128MB
    max_connections: 100
  create_replica_methods:
  - wal_g
  - basebackup
  wal_g:
    command: /usr/local/bin/wal-g-restore
    no_leader: 1
    keep_data: true
  basebackup:
    max-rate: 100M
    checkpoint: fast
  callbacks:
    on_start: /bin/true
  remove_data_directory_on_rewind_failure: true

watchdog:
  mode: off

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""

/// The least a valid configuration needs.
let minimalYAML = """
scope: s
name: n
restapi:
  listen: 127.0.0.1:8008
etcd3:
  host: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /d
  authentication:
    superuser: {username: postgres}
    replication: {username: rep}
"""

let passwordsInPostgres0 = ["rest-pw-1111", "admin-pw-2222", "rep-pw-3333", "super-pw-4444", "rewind-pw-5555"]

/// The issue lines of a configuration that must fail, or a marker when it loads.
func issueLines(_ yaml: String, env: [String: String] = [:]) -> [String] {
    do {
        _ = try ConfigLoader.parse(yaml: yaml, source: "test.yml", environment: env)
        return ["<loaded without issues>"]
    } catch {
        return error.lines
    }
}

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("stork-config-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
