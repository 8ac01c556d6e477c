#!/usr/bin/env bash
# A PostgreSQL cluster of its own for the MLflow tracking server: Debian's postgresql, data under
# $ENGINES_DIR/postgres, listening on 127.0.0.1:$POSTGRES_PORT only, one database `mlflow`.
#
#   pipelines/engines/postgres.sh up     # install (apt-get) if missing, initdb once, start; prints the URI
#   pipelines/engines/postgres.sh uri    # postgresql+psycopg://mlflow@127.0.0.1:PORT/mlflow
#   pipelines/engines/postgres.sh down   # stop (the data stays; rm -r the folder to start afresh)
#
# Authentication is `trust` for the `mlflow` role on the loopback address: the cluster serves this
# machine's jobs only. As root the server runs as Debian's `postgres` user (initdb refuses root).
set -euo pipefail
source "$(dirname "$0")/common.sh"

PORT="${POSTGRES_PORT:-5433}"
DIR="$ENGINES_DIR/postgres"
# psycopg (3) is the driver: SQLAlchemy 2.1 makes it the default for postgresql://, the name says so anyway.
URI="postgresql+psycopg://mlflow@127.0.0.1:$PORT/mlflow"

bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

up() {
    [ -n "$(bin)" ] || apt_install /usr/lib/postgresql postgresql
    local pg; pg="$(bin)"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    as_owner test -w "$DIR" || { echo "the server's user cannot write $DIR (a parent folder closed to it?): set ENGINES_DIR elsewhere" >&2; exit 1; }
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        as_owner "$pg/initdb" -D "$DIR/data" -U mlflow --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
    fi
    if ! as_owner "$pg/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        # Modest memory: a tracking server needs few buffers; connections: MLflow's pool per server worker.
        as_owner "$pg/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start \
            -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c shared_buffers=64MB -c max_connections=200" >/dev/null
    fi
    if [ "$(as_owner "$pg/psql" -h "$DIR" -p "$PORT" -U mlflow -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" != 1 ]; then
        as_owner "$pg/createdb" -h "$DIR" -p "$PORT" -U mlflow mlflow
    fi
    echo "$URI"
}

down() {
    local pg; pg="$(bin)"
    if [ -n "$pg" ] && [ -f "$DIR/data/PG_VERSION" ] && as_owner "$pg/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        as_owner "$pg/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    uri) echo "$URI" ;;
    *) echo "usage: $0 up|down|uri" >&2; exit 2 ;;
esac
