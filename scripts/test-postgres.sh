#!/usr/bin/env bash
# Throwaway PostgreSQL for tests/store_behaviour.rs (docs/data-and-auth.md §5.2).
#
#   bash scripts/test-postgres.sh        start (or reuse) the cluster; prints `export DATABASE_URL=…`
#   bash scripts/test-postgres.sh stop   stop it and delete its files
#   bash scripts/test-postgres.sh status exit 0 when the cluster is running
#   bash scripts/test-postgres.sh pause  stop the server, keep its files (a database outage)
#   bash scripts/test-postgres.sh resume start it again after `pause`
#
# TEST_PG_STATE names another state directory: a cluster of its own, for a test that stops it.
# TEST_PG_TLS_DIR (server.pem, server.key) and TEST_PG_PORT make that cluster also listen on
# 127.0.0.1:TEST_PG_PORT with TLS, for the tests of `sslmode`.
#
# The cluster lives in a temp dir owned by the `postgres` OS user (initdb refuses root), listens
# on a unix socket only (no port clashes between parallel runs), and holds the Supabase stand-in
# (sql/supabase_standin.sql) in the template database `relay_template`; every test copies it with
# CREATE DATABASE … TEMPLATE. The tests find the socket directory in
# target/test-postgres/socket_dir (never in DATABASE_URL, which may point at a real database).
# `DATABASE_URL` printed here points at `relay_dev`, a copy for running the relay by hand.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="${TEST_PG_STATE:-$ROOT/target/test-postgres}"
STANDIN="$ROOT/sql/supabase_standin.sql"
TEMPLATE=relay_template
DEV_DB=relay_dev

log() { echo "test-postgres: $*" >&2; }

find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then echo "$dir"; return 0; fi
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then echo "$dir"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

# Run a command as the postgres OS user (we are usually root; initdb and postgres refuse root).
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# As root, or through sudo for a normal user.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

cluster_running() {
    [[ -f "$STATE/socket_dir" ]] || return 1
    local base bindir
    base=$(cat "$STATE/socket_dir")
    bindir=$(find_bindir) || return 1
    [[ -f "$base/data/PG_VERSION" ]] && as_pg "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1
}

stop_cluster() {
    [[ -f "$STATE/socket_dir" ]] || { log "nothing to stop"; return 0; }
    local base bindir
    base=$(cat "$STATE/socket_dir")
    if bindir=$(find_bindir) && [[ -d "$base/data" ]]; then
        as_pg "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$base"
    rm -f "$STATE/socket_dir" "$STATE/env" "$STATE/standin.sha256"
    log "stopped and removed $base"
}

if [[ "${1:-start}" == "stop" ]]; then
    stop_cluster
    exit 0
fi
if [[ "${1:-start}" == "status" ]]; then
    cluster_running
    exit
fi
# The server as this script starts it: unix socket only, no durability (a throwaway cluster).
start_server() {
    local base=$1 bindir=$2 listen="-c listen_addresses=''"
    if [[ -n "${TEST_PG_TLS_DIR:-}" ]]; then
        # The server reads its key only when the postgres user owns it, mode 0600.
        install -o postgres -m 0644 "$TEST_PG_TLS_DIR/server.pem" "$base/server.pem"
        install -o postgres -m 0600 "$TEST_PG_TLS_DIR/server.key" "$base/server.key"
        listen="-c listen_addresses=127.0.0.1 -p ${TEST_PG_PORT:?} -c ssl=on -c ssl_cert_file=$base/server.pem -c ssl_key_file=$base/server.key"
    fi
    as_pg "$bindir/pg_ctl" -D "$base/data" -w -l "$base/server.log" \
        -o "-k $base $listen -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c timezone=UTC -c max_connections=200" \
        start >/dev/null
}
if [[ "${1:-start}" == "pause" || "${1:-start}" == "resume" ]]; then
    BASE=$(cat "$STATE/socket_dir")
    BINDIR=$(find_bindir)
    if [[ "$1" == "pause" ]]; then
        as_pg "$BINDIR/pg_ctl" -D "$BASE/data" -m fast -w stop >/dev/null
    else
        start_server "$BASE" "$BINDIR"
    fi
    exit 0
fi
if [[ "${1:-start}" != "start" ]]; then
    echo "usage: $0 [start|stop|status|pause|resume]" >&2
    exit 2
fi

if ! BINDIR=$(find_bindir); then
    log "installing postgresql (initdb/pg_ctl not found)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    BINDIR=$(find_bindir)
fi
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || { log "the postgres OS user is missing"; exit 1; }
fi
mkdir -p "$STATE"

BASE=""
if [[ -f "$STATE/socket_dir" ]]; then
    BASE=$(cat "$STATE/socket_dir")
    if [[ ! -f "$BASE/data/PG_VERSION" ]]; then
        log "previous cluster $BASE is gone; creating a new one"
        rm -rf "$BASE"
        BASE=""
    fi
fi

if [[ -z "$BASE" ]]; then
    BASE=$(mktemp -d /tmp/dreamcore-pg.XXXXXX)
    # The socket lives in $BASE: readable by everyone, data/ stays private to postgres.
    chmod 755 "$BASE"
    chown postgres: "$BASE" 2>/dev/null || true
    as_pg "$BINDIR/initdb" -D "$BASE/data" --auth=trust -E UTF8 --locale=C.UTF-8 -U postgres >/dev/null
    echo "$BASE" >"$STATE/socket_dir"
    rm -f "$STATE/standin.sha256"
fi

if ! as_pg "$BINDIR/pg_ctl" -D "$BASE/data" status >/dev/null 2>&1; then
    start_server "$BASE" "$BINDIR"
fi

export PGOPTIONS='-c client_min_messages=warning'
PSQL=("$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$BASE" -p "${TEST_PG_PORT:-5432}" -U postgres)

# Databases left by tests that panicked before dropping theirs (one still in use is kept).
for db in $("${PSQL[@]}" -d postgres -At -c "SELECT datname FROM pg_database WHERE datname ~ '^t_[0-9a-f]{32}$'"); do
    "${PSQL[@]}" -d postgres -c "DROP DATABASE $db" >/dev/null 2>&1 || true
done

# (Re)build the template whenever the stand-in changed.
SUM=$(sha256sum "$STANDIN" | cut -d' ' -f1)
if [[ "$(cat "$STATE/standin.sha256" 2>/dev/null || true)" != "$SUM" ]]; then
    log "loading $STANDIN into $TEMPLATE"
    # A template database cannot be dropped: clear the flag first (a no-op when it is absent).
    "${PSQL[@]}" -d postgres -c "UPDATE pg_database SET datistemplate = false WHERE datname = '$TEMPLATE'" \
        -c "DROP DATABASE IF EXISTS $DEV_DB" -c "DROP DATABASE IF EXISTS $TEMPLATE" \
        -c "CREATE DATABASE $TEMPLATE"
    "${PSQL[@]}" -d "$TEMPLATE" -f "$STANDIN" >/dev/null
    "${PSQL[@]}" -d postgres -c "ALTER DATABASE $TEMPLATE WITH IS_TEMPLATE true" \
        -c "CREATE DATABASE $DEV_DB TEMPLATE $TEMPLATE"
    echo "$SUM" >"$STATE/standin.sha256"
fi

URL="postgresql://relay:relay-test@/$DEV_DB?host=$BASE"
echo "export DATABASE_URL='$URL'" >"$STATE/env"
log "PostgreSQL ready on socket dir $BASE (tests read $STATE/socket_dir)"
echo "export DATABASE_URL='$URL'"
