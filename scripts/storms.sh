#!/usr/bin/env bash
# The long reliability runs of issue 17: storms and load (point 4), soak (point 5).
#
#   scripts/storms.sh                    all three at full size, release build (~45 min)
#   scripts/storms.sh --parts restart,watchers
#   scripts/storms.sh --smoke --debug    tiny sizes on the debug build (bench/smoke.sh, CI)
#
# Parts (--parts, comma-separated; default all):
#   restart   ~19,000 simulated agents connected, the server SIGKILLed and started again on the
#             same port and database: all back within 20 s (issue 15's target), none given up.
#             This is bench/run.sh's part 4 (--sim), judged by `rmm-bench storm-check`.
#   watchers  200 technicians' session streams over 50 simulated agents writing known output:
#             every reader gets every byte, 5 that stop reading are closed "too slow", server
#             RSS bounded (`rmm-bench watchers`).
#   soak      scripts/soak.sh: 30 minutes of mixed work on real agents, then the leak checks.
# Options:
#   --smoke             200 agents; 10 watchers over 5 agents (1 stopped); soak 30 s
#   --debug             the debug build (default: release)
#   --no-build          use the binaries already in target/
#   --agents N          agents of the restart storm (default 19000: the server and the
#                       simulator each hold one descriptor per agent under the hard limit of
#                       20,000 here)
#   --soak-minutes M    (default 30)
# Each check that passes appends a JSON line to $RMM_RELIABILITY_OUT when it is set (part
# "storms" or "soak"). Exits 1 when any check failed. Everything talks to 127.0.0.0/8 only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

log() { printf '[storms] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

PARTS="restart,watchers,soak"
SMOKE=0
PROFILE=release
BUILD=1
AGENTS=""
SOAK_MINUTES=""
ARGS="$*"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --parts)
            [ "$#" -ge 2 ] || die "--parts needs a list"
            PARTS="$2"
            shift
            ;;
        --smoke) SMOKE=1 ;;
        --debug) PROFILE=debug ;;
        --no-build) BUILD=0 ;;
        --agents)
            [ "$#" -ge 2 ] || die "--agents needs a number"
            AGENTS="$2"
            shift
            ;;
        --soak-minutes)
            [ "$#" -ge 2 ] || die "--soak-minutes needs a number"
            SOAK_MINUTES="$2"
            shift
            ;;
        -h | --help)
            sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
wants() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$SMOKE" = 1 ]; then
    AGENTS="${AGENTS:-200}"
    W_AGENTS=5 W_WATCHERS=10 W_SLOW=1 W_BYTES=$((1024 * 1024)) W_RATE=$((512 * 1024))
    SOAK_MINUTES="${SOAK_MINUTES:-0.5}"
else
    AGENTS="${AGENTS:-19000}"
    W_AGENTS=50 W_WATCHERS=200 W_SLOW=5 W_BYTES=$((4 * 1024 * 1024)) W_RATE=$((256 * 1024))
    SOAK_MINUTES="${SOAK_MINUTES:-30}"
fi
case "$AGENTS" in '' | *[!0-9]*) die "--agents must be a number" ;; esac

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
FLAGS=()
if [ "$PROFILE" = release ]; then
    BIN="$TARGET_DIR/release"
    build=(cargo build --release --bins -p rmm-server -p rmm-agent -p rmm-bench)
else
    BIN="$TARGET_DIR/debug"
    FLAGS+=(--debug)
    build=(cargo build --bins -p rmm-server -p rmm-agent -p rmm-bench)
fi
[ "$SMOKE" = 1 ] && FLAGS+=(--smoke)
if [ "$BUILD" = 1 ]; then
    log "${build[*]}"
    "${build[@]}" >&2 || die "the build failed"
fi
BENCH="$BIN/rmm-bench"
[ -x "$BENCH" ] || die "$BENCH is missing: build it (drop --no-build)"
# What reproduces one part, as the reliability rows show it.
reproduce() { echo "scripts/storms.sh --parts $1${FLAGS[*]:+ ${FLAGS[*]}}"; }

WORK="$(mktemp -d /tmp/rmm-storms.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILED=()

# --- the restart storm: bench/run.sh's part 4, judged -----------------------------------------
if wants restart; then
    load="$(cut -d' ' -f1 /proc/loadavg)"
    log "restart storm: $AGENTS agents (bench/run.sh --sim), load $load at start"
    mkdir -p "$WORK/restart"
    bash bench/run.sh --sim --no-build "${FLAGS[@]}" --sim-agents "$AGENTS" \
        --results "$WORK/restart" --report "$WORK/restart-BENCHMARKS.md" >&2 || true
    "$BENCH" storm-check --measurement "$WORK/restart/sim-1.json" --load "$load" \
        --reproduce "$(reproduce restart)" || FAILED+=(restart)
fi

# --- the watcher storm ----------------------------------------------------------------------------
if wants watchers; then
    load="$(cut -d' ' -f1 /proc/loadavg)"
    log "watcher storm: $W_WATCHERS watchers over $W_AGENTS agents ($W_SLOW stop reading), load $load at start"
    port="$("$BENCH" free-port)"
    password="storms-$RANDOM$RANDOM$RANDOM"
    mkdir -p "$WORK/watchers"
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        exec env RMM_LISTEN="127.0.0.1:$port" DATABASE_URL="sqlite://$WORK/watchers/rmm.db" \
            RMM_JWT_SECRET="storms-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
            RMM_ADMIN_PASSWORD="$password" RMM_DATA_DIR="$WORK/watchers" RMM_MAX_SESSIONS_PER_USER=100000 \
            RUST_LOG="${RMM_STORMS_SERVER_LOG:-warn}" "$BIN/rmm-server"
    ) >"$WORK/watchers.log" 2>&1 &
    SERVER_PID=$!
    url="http://127.0.0.1:$port"
    if "$BENCH" wait-http --url "$url/healthz" --timeout-secs 60 \
        && token="$(RMM_BENCH_PASSWORD="$password" "$BENCH" token --server "$url")"; then
        RMM_TOKEN="$token" "$BENCH" watchers --server "$url" --server-pid "$SERVER_PID" \
            --agents "$W_AGENTS" --watchers "$W_WATCHERS" --slow "$W_SLOW" \
            --bytes "$W_BYTES" --rate "$W_RATE" --reproduce "$(reproduce watchers)" \
            || FAILED+=(watchers)
    else
        tail -n 20 "$WORK/watchers.log" >&2 || true
        FAILED+=(watchers)
    fi
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
fi

# --- the soak -------------------------------------------------------------------------------------------
if wants soak; then
    soak_flags=(--no-build)
    [ "$PROFILE" = debug ] && soak_flags+=(--debug)
    bash scripts/soak.sh "${soak_flags[@]}" "$SOAK_MINUTES" || FAILED+=(soak)
fi

if [ "${#FAILED[@]}" -gt 0 ]; then
    log "FAILED: ${FAILED[*]} (scripts/storms.sh $ARGS)"
    exit 1
fi
log "every check passed ($PARTS)"
