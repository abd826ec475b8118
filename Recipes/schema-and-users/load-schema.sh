#!/bin/sh
# post_bootstrap for Stork (and Patroni): loads an application's schema into the new cluster.
# Called with the new primary's connection string as its one argument; the superuser's
# password comes through PGPASSFILE, which Stork sets. ON_ERROR_STOP: a failing statement
# fails the bootstrap, and Stork's log shows psql's error.
set -eu
schema="${STORK_SCHEMA_FILE:-/etc/stork/schema.sql}"
exec /usr/lib/postgresql/15/bin/psql "$1" --no-psqlrc --set=ON_ERROR_STOP=1 --quiet --file="$schema"
