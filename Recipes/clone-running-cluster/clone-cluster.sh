#!/bin/sh
# A custom bootstrap method for Stork (and Patroni): copies another, running cluster with
# pg_basebackup. Called as
#   clone-cluster.sh --scope=SCOPE --datadir=DIR --source=CONNINFO [--pgpass=FILE] [--bindir=DIR]
# --source: a replication connection to the other cluster's primary or a replica of it
# (host=... port=... user=...), its password in --pgpass (a pgpass file, mode 0600); --bindir:
# the PostgreSQL binaries of the other cluster's major (default: pg_config --bindir).
set -eu
source="" datadir="" pgpass="" bindir=""
for arg in "$@"; do
    case $arg in
        --datadir=*) datadir=${arg#--datadir=} ;;
        --source=*) source=${arg#--source=} ;;
        --pgpass=*) pgpass=${arg#--pgpass=} ;;
        --bindir=*) bindir=${arg#--bindir=} ;;
    esac
done
[ -n "$source" ] || { echo "clone-cluster.sh: --source (a connection string to the other cluster) is required" >&2; exit 2; }
[ -n "$datadir" ] || { echo "clone-cluster.sh: --datadir is required" >&2; exit 2; }
[ -z "$pgpass" ] || export PGPASSFILE="$pgpass"
# The same major as the other cluster: pg_basebackup refuses a server of another major.
[ -n "$bindir" ] || bindir=$(pg_config --bindir)
# -X stream: the copy carries the WAL it needs and starts as a primary by itself, on the other
# cluster's timeline, with its data as of the end of the copy.
exec "$bindir/pg_basebackup" --pgdata="$datadir" -X stream --checkpoint=fast --no-password --dbname="$source"
