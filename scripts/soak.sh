#!/usr/bin/env bash
# The soak (issue 17, point 5): the release server with a few real rmm-agent processes and a
# mixed loop for MINUTES (default 30) — tunnel opens and closes, commands with output (checked
# byte for byte), uploads and downloads (checked by content), cancelled commands, agents
# SIGKILLed and started again — then the checks: the server's gauges (/metrics) back to their
# baseline (no session, no tunnel left; every agent connected), every session opened closed,
# RSS within 10% of its baseline, every audit start (tunnel_open, command) with one end.
#
#   scripts/soak.sh [--debug] [--no-build] [--sqlite] [--agents N] [MINUTES]
#
# The server runs on PostgreSQL: the local image of scripts/ensure-postgres-image.sh in a
# container labelled rmm-tunnel-test on a free loopback port, removed at exit. Without Docker
# (or with --sqlite) it runs on SQLite; the output says which. A pass appends a JSON line to
# $RMM_RELIABILITY_OUT when it is set (part "soak"). Exits 1 when a check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

PROFILE=release BUILD=1 SQLITE=0 AGENTS=3 MINUTES=30
ARGS="$*"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --debug) PROFILE=debug ;;
        --no-build) BUILD=0 ;;
        --sqlite) SQLITE=1 ;;
        --agents)
            [ "$#" -ge 2 ] || die "--agents needs a number"
            AGENTS="$2"
            shift
            ;;
        -h | --help)
            sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) MINUTES="$1" ;;
    esac
    shift
done
SECS="$(awk -v m="$MINUTES" 'BEGIN { s = int(m * 60 + 0.5); if (m !~ /^[0-9]+(\.[0-9]+)?$/ || s < 1) exit 1; print s }')" \
    || die "MINUTES must be a positive number (got $MINUTES)"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$PROFILE" = release ]; then
    BIN="$TARGET_DIR/release"
    build=(cargo build --release --bins -p rmm-server -p rmm-agent -p rmm-bench)
else
    BIN="$TARGET_DIR/debug"
    build=(cargo build --bins -p rmm-server -p rmm-agent -p rmm-bench)
fi
if [ "$BUILD" = 1 ]; then
    log "${build[*]}"
    "${build[@]}" >&2 || die "the build failed"
fi
for b in rmm-server rmm-agent rmm-bench; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it (drop --no-build)"
done
BENCH="$BIN/rmm-bench"

WORK="$(mktemp -d /tmp/rmm-soak.XXXXXX)"
SERVER_PID="" PG_CONTAINER=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_CONTAINER" ]; then docker rm -f "$PG_CONTAINER" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL in a container on the host's network (no userland proxy on every query), on a
# free loopback port; sets DATABASE_URL, or returns 1 with PG_WHY.
start_postgres() {
    command -v docker >/dev/null 2>&1 || { PG_WHY="no docker command"; return 1; }
    docker info >/dev/null 2>&1 || bash scripts/ensure-docker.sh >&2 || { PG_WHY="no Docker engine"; return 1; }
    local image port i
    image="$(bash scripts/ensure-postgres-image.sh)" || { PG_WHY="no PostgreSQL image"; return 1; }
    port="$("$BENCH" free-port)"
    PG_CONTAINER="rmm-soak-pg-$$"
    docker run -d --rm --name "$PG_CONTAINER" --label rmm-tunnel-test -e POSTGRES_PASSWORD=soak \
        --network host "$image" postgres -c port="$port" -c listen_addresses=127.0.0.1 >/dev/null \
        || { PG_WHY="docker run $image failed"; PG_CONTAINER=""; return 1; }
    for ((i = 0; i < 120; i++)); do
        if docker exec "$PG_CONTAINER" pg_isready -h 127.0.0.1 -p "$port" -U postgres >/dev/null 2>&1; then
            DATABASE_URL="postgres://postgres:soak@127.0.0.1:$port/postgres"
            return 0
        fi
        sleep 0.5
    done
    PG_WHY="PostgreSQL in $image did not become ready within 60 s"
    return 1
}

DATABASE=PostgreSQL
PG_WHY="--sqlite given"
if [ "$SQLITE" = 1 ] || ! start_postgres; then
    DATABASE=SQLite
    DATABASE_URL="sqlite://$WORK/rmm.db"
    log "PostgreSQL is not available ($PG_WHY): the soak runs on SQLite"
fi
log "database: $DATABASE; $AGENTS real agents; $SECS s of mixed work ($PROFILE build)"

port="$("$BENCH" free-port)"
metrics_port="$("$BENCH" free-port)"
password="soak-$RANDOM$RANDOM$RANDOM"
env RMM_LISTEN="127.0.0.1:$port" DATABASE_URL="$DATABASE_URL" RMM_METRICS_LISTEN="127.0.0.1:$metrics_port" \
    RMM_JWT_SECRET="soak-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    RMM_ADMIN_PASSWORD="$password" RMM_DATA_DIR="$WORK/data" \
    RUST_LOG="${RMM_SOAK_SERVER_LOG:-warn}" "$BIN/rmm-server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
url="http://127.0.0.1:$port"
if ! "$BENCH" wait-http --url "$url/healthz" --timeout-secs 60; then
    tail -n 20 "$WORK/server.log" >&2 || true
    die "the server did not start"
fi
token="$(RMM_BENCH_PASSWORD="$password" "$BENCH" token --server "$url")"
flags=()
[ "$PROFILE" = debug ] && flags+=(--debug)
[ "$DATABASE" = SQLite ] && [ "$SQLITE" = 1 ] && flags+=(--sqlite)
if RMM_TOKEN="$token" "$BENCH" soak --server "$url" --metrics "http://127.0.0.1:$metrics_port/metrics" \
    --server-pid "$SERVER_PID" --agent-bin "$BIN/rmm-agent" --agents "$AGENTS" --secs "$SECS" \
    --work "$WORK/agents" --database "$DATABASE" \
    --reproduce "scripts/soak.sh${flags[*]:+ ${flags[*]}} $MINUTES"; then
    log "passed ($DATABASE)"
else
    log "FAILED ($DATABASE; scripts/soak.sh $ARGS); the server's log ends:"
    tail -n 20 "$WORK/server.log" >&2 || true
    exit 1
fi
