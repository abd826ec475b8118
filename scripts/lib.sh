# Shared by scripts/test, scripts/demo and scripts/bench.

# apt packages Stork needs to build and to run its tests.
STORK_APT_PACKAGES="postgresql-15 postgresql-client-15 libpq-dev libcurl4-openssl-dev libarchive-dev etcd-server etcd-client rsync pgbackrest barman bc openssl curl"

# Installed without the packages they recommend: barman recommends openssh-server, which
# would start an SSH server; the tests run Barman on this host, without SSH.
STORK_APT_NO_RECOMMENDS="barman"

install_missing() {
    local missing=()
    for p in $STORK_APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
        exit 1
    fi
    echo "== installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    local plain=() bare=()
    for p in "${missing[@]}"; do
        if [[ " $STORK_APT_NO_RECOMMENDS " == *" $p "* ]]; then bare+=("$p"); else plain+=("$p"); fi
    done
    if [ ${#plain[@]} -gt 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${plain[@]}" >/dev/null; fi
    if [ ${#bare[@]} -gt 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null; fi
    # Debian starts a default cluster and etcd on install; stop the ones the packages started
    # so they do not hold ports 5432/2379 (by their service names, not by process name).
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
        systemctl stop etcd postgresql >/dev/null 2>&1 || true
    fi
}

# PostgreSQL's default socket directory on Debian; missing on a machine that never booted
# the postgresql service.
ensure_runtime_dirs() {
    if [ "$(id -u)" -eq 0 ]; then
        install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    fi
}
