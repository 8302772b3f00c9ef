#!/bin/sh
# Entrypoint of deploy/postgres/Dockerfile: the official postgres image's conventions on
# Debian's packages. On the first start (empty PGDATA) it creates the cluster with
# POSTGRES_USER (default postgres) and POSTGRES_PASSWORD (scram-sha-256 over TCP from anywhere,
# trust on the local socket), and the database POSTGRES_DB (default POSTGRES_USER), on a
# server that listens on no TCP address meanwhile, so a healthcheck over TCP passes only once
# the real server runs. Then postgres runs in the foreground as PID 1, as user postgres,
# listening on POSTGRES_LISTEN_ADDRESSES (default *) and PGPORT (default 5432). Arguments after
# `postgres` (or starting with `-`) are passed to the server; any other command is run instead.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
SOCKETS=/var/run/postgresql

case "${1:-postgres}" in
    postgres) [ $# -gt 0 ] && shift ;;
    -*) ;;
    *) exec "$@" ;;  # another command (sh, psql, ...)
esac

if [ "$(id -u)" = 0 ]; then
    # a bind mount or a fresh volume may belong to root
    mkdir -p "$PGDATA" "$SOCKETS"
    chown postgres:postgres "$PGDATA" "$SOCKETS"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    printf '\n# other containers (added by postgres-entrypoint)\nhost all all all scram-sha-256\n' \
        >>"$PGDATA/pg_hba.conf"
    pg_ctl --silent --wait -o "-c listen_addresses='' -k $SOCKETS" start
    if [ "$POSTGRES_DB" != postgres ]; then
        createdb --host="$SOCKETS" --username="$POSTGRES_USER" -- "$POSTGRES_DB"
    fi
    pg_ctl --silent --wait -m fast stop
    echo "postgres-entrypoint: cluster created in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi

exec postgres -c listen_addresses="${POSTGRES_LISTEN_ADDRESSES:-*}" -k "$SOCKETS" "$@"
