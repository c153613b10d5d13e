#!/usr/bin/env bash
# The benchmark suite: rmm-tunnel side by side with OpenSSH, and an agent simulator.
# Writes BENCHMARKS.md at the repo root (or --report FILE). See bench/README.md.
#
#   bench/run.sh                      every part, full sizes, release build
#   bench/run.sh --roundtrip --stream  only those parts
#   bench/run.sh --smoke              every part at tiny sizes (CI: bench/smoke.sh)
#   bench/run.sh --terminal           one part; merged into the BENCHMARKS.md already there
#
# Parts: --roundtrip --stream --files --sim --opens --terminal --agent --cluster (none given: all). A run of
# some parts merges its figures into the report already at --report (the other parts'
# rows are kept, and the header gains this run's command, date and load average).
# Options:
#   --smoke             tiny sizes
#   --debug             use the debug build (cargo build), not --release
#   --no-build          use the binaries already in target/ as they are
#   --sim-agents N      simulated agents for --sim (default 19500; smoke 200)
#   --report FILE       where to write the report (default BENCHMARKS.md)
#   --results DIR       keep the JSON rows there (default: a temp folder)
#   --keep              keep the work folder (logs, configs) for inspection
#
# Needs root for the OpenSSH baseline (installs Debian's openssh-server when missing, creates
# the user rmmbench with login shell /bin/sh, runs a private sshd on 127.0.0.1) and for the
# PostgreSQL container (scripts/ensure-docker.sh). Without them those rows say "not
# available" and everything else still runs. Everything talks to 127.0.0.0/8 only; every
# loop is bounded in count and time. Set RMM_BENCH_PG_URL=postgres://... to use an existing
# PostgreSQL instead of a container.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

# Errors of the bench tools are one line each; backtraces would bury them.
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ALL_PARTS=(roundtrip stream files sim opens terminal agent cluster)
PARTS=()
SMOKE=0
PROFILE=release
SIM_AGENTS=""
BUILD=1
REPORT="$ROOT/BENCHMARKS.md"
RESULTS=""
KEEP=0
ARGS="$*"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --roundtrip | --stream | --files | --sim | --opens | --terminal | --agent | --cluster) PARTS+=("${1#--}") ;;
        --smoke) SMOKE=1 ;;
        --debug) PROFILE=debug ;;
        --no-build) BUILD=0 ;;
        --sim-agents)
            [ "$#" -ge 2 ] || die "--sim-agents needs a number"
            SIM_AGENTS="$2"
            shift
            ;;
        --report)
            [ "$#" -ge 2 ] || die "--report needs a file"
            REPORT="$2"
            shift
            ;;
        --results)
            [ "$#" -ge 2 ] || die "--results needs a folder"
            RESULTS="$2"
            shift
            ;;
        --keep) KEEP=1 ;;
        -h | --help)
            sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ "${#PARTS[@]}" -gt 0 ] || PARTS=("${ALL_PARTS[@]}")
wants() {
    local p
    for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done
    return 1
}

# --- sizes ---------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
    RT_ITER=20
    STREAM_RAW_MIB=15 # base64 of 15 MiB: ~20 MB of text
    STREAM_RUNS=2
    FILE_MIB=32
    FILE_RUNS=2
    SIM_AGENTS="${SIM_AGENTS:-200}"
    SIM_HOLD=3
    SIM_RAMP=1000
    OPENS_AGENTS=50
    OPENS_CONC=8
    OPENS_SECS=3
    OPENS_SINGLE=20
    TERM_ECHO_ITER=50
    TERM_RAW_MIB=3 # base64 of 3 MiB: ~4 MB of text
    TERM_RUNS=2
    AGENT_SETTLE=3
    CLUSTER_RT_ITER=20
    CLUSTER_ROUNDS=2
    CLUSTER_RAW_MIB=3
    CLUSTER_RUNS=2
    CLUSTER_AGENTS=60
    CLUSTER_HOLD=3
else
    RT_ITER=200
    STREAM_RAW_MIB=768 # base64 of 768 MiB: ~1.04 GB of text
    STREAM_RUNS=5
    FILE_MIB=1024
    FILE_RUNS=3
    # ~19.5k: the most one process holds under this machine's hard open-file limit (20,000).
    SIM_AGENTS="${SIM_AGENTS:-19500}"
    SIM_HOLD=30
    SIM_RAMP=1000
    OPENS_AGENTS=1000
    OPENS_CONC=32
    OPENS_SECS=20
    OPENS_SINGLE=300
    TERM_ECHO_ITER=1000
    TERM_RAW_MIB=768 # as the stream: ~1.04 GB of text
    TERM_RUNS=5
    AGENT_SETTLE=10
    CLUSTER_RT_ITER=200
    CLUSTER_ROUNDS=4
    CLUSTER_RAW_MIB=256 # base64 of 256 MiB: ~354 MB of text
    CLUSTER_RUNS=5
    # HAProxy holds two descriptors per agent (client and node side) under the 20,000 limit.
    CLUSTER_AGENTS=6000
    CLUSTER_HOLD=20
fi
case "$SIM_AGENTS" in '' | *[!0-9]*) die "--sim-agents must be a number" ;; esac
b64_text() { awk -v m="$1" 'BEGIN { b = int((m * 1048576 + 2) / 3) * 4; printf "%.0f MB", (b + int(b / 76)) / 1e6 }'; }
STREAM_BYTES_TEXT="$(b64_text "$STREAM_RAW_MIB")"
TERM_BYTES_TEXT="$(b64_text "$TERM_RAW_MIB")"
# The sizes of the parts this run measures, in words.
SIZES=""
add_size() { if wants "$1"; then SIZES="${SIZES:+$SIZES; }$2"; fi; }
add_size roundtrip "round trip: ${RT_ITER} runs per client"
add_size stream "stream: ${STREAM_BYTES_TEXT} of base64 text × ${STREAM_RUNS}"
add_size files "files: ${FILE_MIB} MiB × ${FILE_RUNS} each way"
add_size sim "simulator: ${SIM_AGENTS} agents, ${SIM_HOLD} s window"
add_size opens "opens: ${OPENS_AGENTS} agents, ${OPENS_CONC} concurrent, ${OPENS_SECS} s per database, then ${OPENS_SINGLE} one at a time"
add_size agent "agent: idle ${AGENT_SETTLE} s"
add_size cluster "cluster: ${CLUSTER_RT_ITER} runs per node in ${CLUSTER_ROUNDS} alternating rounds, cat of $(b64_text "$CLUSTER_RAW_MIB") of base64 text × ${CLUSTER_RUNS} per node, ${CLUSTER_AGENTS} simulated agents over 3 nodes"
add_size terminal "terminal: ${TERM_ECHO_ITER} echoes per client, cat of ${TERM_BYTES_TEXT} of base64 text × ${TERM_RUNS}"
[ "$SMOKE" = 1 ] && SIZES="smoke — $SIZES"

# --- build ---------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The agent measured is the one shipped: in a release run, the `agent` profile's
# (Cargo.toml: size-optimised, LTO, stripped), built by its own cargo run.
if [ "$PROFILE" = release ]; then
    BIN="$TARGET_DIR/release"
    AGENT_BIN="$TARGET_DIR/agent/rmm-agent"
    build=(cargo build --release --bins -p rmm-server -p rmm-cli -p rmm-bench)
    build_agent=(cargo build --profile agent -p rmm-agent)
else
    BIN="$TARGET_DIR/debug"
    AGENT_BIN="$BIN/rmm-agent"
    build=(cargo build --bins -p rmm-server -p rmm-agent -p rmm-cli -p rmm-bench)
    build_agent=()
fi
if [ "$BUILD" = 1 ]; then
    log "${build[*]} (once; a release build takes minutes on 2 cores)"
    "${build[@]}" >&2 || die "the build failed; fix it, or pass --no-build to measure the binaries already in $BIN"
    if [ "${#build_agent[@]}" -gt 0 ]; then
        log "${build_agent[*]}"
        "${build_agent[@]}" >&2 || die "the agent's build failed"
    fi
else
    PROFILE="$PROFILE (prebuilt binaries, --no-build)"
fi
[ "$PROFILE" = debug ] || PROFILE="$PROFILE; rmm-agent: the agent profile (target/agent)"
# The real agent only for the parts that run it (--sim alone, as scripts/storms.sh runs it,
# needs no agent build).
NEEDED=("$BIN/rmm-server" "$BIN/rmm-bench" "$BIN/rmm-agent-sim")
if wants roundtrip || wants stream || wants files || wants terminal || wants agent || wants cluster; then NEEDED+=("$AGENT_BIN"); fi
for b in "${NEEDED[@]}"; do
    [ -x "$b" ] || die "$b is missing: build it (drop --no-build)"
done
BENCH="$BIN/rmm-bench"
SIM="$BIN/rmm-agent-sim"

# --- work folder and cleanup -----------------------------------------------------
WORK="$(mktemp -d /tmp/rmm-bench.XXXXXX)"
chmod 755 "$WORK" # the sshd user reads the data files
export RMM_BENCH_WORK="$WORK" RMM_BENCH_ROOT="$ROOT"
mkdir -p "$WORK/data"
if [ -z "$RESULTS" ]; then RESULTS="$WORK/results"; fi
mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json
log "work folder $WORK; results in $RESULTS"

STARTED_PIDS=()
SSHD_PID=""
SSH_CONFIG=""
PG_CONTAINER=""
cleanup() {
    local pid
    if [ -n "$SSH_CONFIG" ]; then ssh -F "$SSH_CONFIG" -O exit bench >/dev/null 2>&1 || true; fi
    for pid in "${STARTED_PIDS[@]}" $SSHD_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}" $SSHD_PID; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$PG_CONTAINER" ]; then docker rm -f "$PG_CONTAINER" >/dev/null 2>&1 || true; fi
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Records a row that could not be measured.
na() { # part name reason outfile
    "$BENCH" not-available --part "$1" --name "$2" --reason "$3" --out "$4" || true
}

# Runs a measuring command; when it fails without writing its row, records why instead.
measure() { # part name outfile -- command...
    local part="$1" name="$2" out="$3" errlog
    shift 4
    errlog="$WORK/$(basename "$out" .json).err"
    # stderr goes to the terminal live and to the log; stdout stays stdout.
    if { "$@" 2>&1 1>&3 3>&- | tee "$errlog" >&2; } 3>&1; then return 0; fi
    if [ ! -f "$out" ]; then
        local why
        why="$(grep -m1 '^Error' "$errlog" || grep -v '^[[:space:]]*$' "$errlog" | tail -n 3)"
        na "$part" "$name" "failed: $(printf '%s' "$why" | tr '\n' ' ' | cut -c1-400)" "$out"
    fi
}

# --- servers and agents --------------------------------------------------------------
ADMIN_PASSWORD="bench-admin-password-$RANDOM$RANDOM"
export RMM_BENCH_PASSWORD="$ADMIN_PASSWORD"
JWT_SECRET="bench-jwt-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# Extra VAR=value settings for the next start_server (cluster mode).
SERVER_ENV=()

# start_server NAME DATABASE_URL [PORT]: sets SERVER_URL, SERVER_PID, TOKEN.
start_server() {
    local name="$1" db="$2" port="${3:-}"
    [ -n "$port" ] || port="$("$BENCH" free-port)"
    mkdir -p "$WORK/$name"
    # The open-file limit is raised to its hard limit: each agent holds a socket. One token
    # opens from many workers at once, so the per-user session cap is lifted.
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        exec env RMM_LISTEN="127.0.0.1:$port" DATABASE_URL="$db" RMM_JWT_SECRET="$JWT_SECRET" \
            RMM_ADMIN_PASSWORD="$ADMIN_PASSWORD" RMM_DATA_DIR="$WORK/$name" \
            RMM_MAX_SESSIONS_PER_USER=100000 \
            RUST_LOG="${RMM_BENCH_SERVER_LOG:-warn}" ${SERVER_ENV[@]+"${SERVER_ENV[@]}"} "$BIN/rmm-server"
    ) >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    SERVER_URL="http://127.0.0.1:$port"
    if ! "$BENCH" wait-http --url "$SERVER_URL/healthz" --timeout-secs 60; then
        tail -n 20 "$WORK/$name.log" >&2 || true
        return 1
    fi
    TOKEN="$("$BENCH" token --server "$SERVER_URL")"
    export RMM_TOKEN="$TOKEN"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_agent NAME: a real rmm-agent; sets AGENT_ID, AGENT_PID.
start_agent() {
    local line key
    line="$("$BENCH" register --server "$SERVER_URL" --name "$1")" || return 1
    AGENT_ID="${line%%$'\t'*}"
    key="${line#*$'\t'}"
    RMM_SERVER="ws://${SERVER_URL#http://}" RMM_AGENT_KEY="$key" RUST_LOG=warn \
        "$AGENT_BIN" >"$WORK/agent-$1.log" 2>&1 &
    AGENT_PID=$!
    STARTED_PIDS+=("$AGENT_PID")
    "$BENCH" wait-agent --server "$SERVER_URL" --agent-id "$AGENT_ID" --timeout-secs 30
}

# --- OpenSSH baseline ------------------------------------------------------------------
SSH_OK=0
SSH_WHY=""
SSH_PORT="${RMM_BENCH_SSH_PORT:-2222}"
SSH_USER=rmmbench

# apt_install PACKAGE: installs a Debian package (root only), keeping it from starting a
# system service (sshd on port 22, nats-server, haproxy); sets PKG_WHY when it cannot.
apt_install() {
    [ "$(id -u)" -eq 0 ] || { PKG_WHY="$1 is not installed and installing it needs root"; return 1; }
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || rc=$?
    fi
    log "apt-get install -y $1"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$1" >&2 || rc=$?
    if [ "$created" = 1 ]; then rm -f "$policy"; fi
    [ "$rc" -eq 0 ] || PKG_WHY="apt-get install $1 failed (exit $rc)"
    return "$rc"
}

install_sshd() {
    [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v scp >/dev/null && return 0
    apt_install openssh-server || { SSH_WHY="$PKG_WHY"; return 1; }
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

setup_ssh() {
    install_sshd || return 1
    if ! id "$SSH_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh "$SSH_USER" || { SSH_WHY="useradd $SSH_USER failed"; return 1; }
    fi
    # /bin/sh (dash) as login shell: nothing like .bashrc runs per command. '*' (not '!'):
    # an account whose password is locked with '!' is refused even for key logins.
    usermod --shell /bin/sh --password '*' "$SSH_USER" || { SSH_WHY="usermod $SSH_USER failed"; return 1; }
    local dir="$WORK/ssh"
    mkdir -p "$dir" "$WORK/ssh-up"
    chmod 755 "$dir"
    chown "$SSH_USER" "$WORK/ssh-up"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519" -C rmm-bench-host
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519" -C rmm-bench-client
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    chown "$SSH_USER" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    if port_busy "$SSH_PORT"; then SSH_PORT="$("$BENCH" free-port)"; fi
    cat >"$dir/sshd_config" <<EOF
# A private sshd for the benchmarks: loopback only, key auth only, one user.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
# The keys file lives under /tmp, which StrictModes would refuse.
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $SSH_USER
MaxSessions 64
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
EOF
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    /usr/sbin/sshd -t -f "$dir/sshd_config" || { SSH_WHY="sshd rejected its config"; return 1; }
    /usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log" &
    SSHD_PID=$!
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"
    SSH_CONFIG="$dir/config"
    cat >"$SSH_CONFIG" <<EOF
Host bench 127.0.0.1
    HostName 127.0.0.1
    Port $SSH_PORT
    User $SSH_USER
    IdentityFile $dir/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
    ControlMaster auto
    ControlPath $dir/cm-%C
    ControlPersist 600
EOF
    local i
    for ((i = 0; i < 50; i++)); do
        port_busy "$SSH_PORT" && break
        sleep 0.1
    done
    # The master connection, kept open for every ssh and scp below.
    if ! ssh -F "$SSH_CONFIG" -o ControlMaster=yes -fN bench 2>"$dir/master.err"; then
        SSH_WHY="ssh master connection failed: $(tr '\n' ' ' <"$dir/master.err")"
        return 1
    fi
    ssh -F "$SSH_CONFIG" -O check bench 2>/dev/null || { SSH_WHY="ssh ControlMaster is not running"; return 1; }
    # Shown in the report: the ControlMaster options spelled out (the config file holds the
    # key and the known host).
    SSH=(ssh -F "$SSH_CONFIG" -o ControlMaster=auto -o ControlPath="$dir/cm-%C" -o ControlPersist=600 -p "$SSH_PORT" "$SSH_USER@127.0.0.1")
    # -tt: a PTY on the server side although stdin is not a terminal (the terminal part).
    SSH_TT=(ssh -F "$SSH_CONFIG" -o ControlMaster=auto -o ControlPath="$dir/cm-%C" -o ControlPersist=600 -tt -p "$SSH_PORT" "$SSH_USER@127.0.0.1")
    SCP=(scp -F "$SSH_CONFIG" -o ControlMaster=auto -o ControlPath="$dir/cm-%C" -o ControlPersist=600 -P "$SSH_PORT" -q)
    SSH_OK=1
    log "sshd on 127.0.0.1:$SSH_PORT (user $SSH_USER, /bin/sh), ControlMaster up"
}

if wants roundtrip || wants stream || wants files || wants terminal || wants agent; then
    setup_ssh || { SSH_OK=0; log "OpenSSH baseline not available: $SSH_WHY"; }
fi
SSH_VERSION="$(ssh -V 2>&1 || true)"

# --- parts 1-3: one server, one real agent ----------------------------------------------
part_roundtrip() {
    local out="$RESULTS"
    log "part 1: command round trip ($RT_ITER runs each)"
    if [ "$SSH_OK" = 1 ]; then
        measure roundtrip "ssh (ControlMaster)" "$out/roundtrip-1-ssh.json" -- \
            "$BENCH" time-cmd --part roundtrip --name "ssh (ControlMaster)" --iterations "$RT_ITER" \
            --out "$out/roundtrip-1-ssh.json" -- "${SSH[@]}" true
    else
        na roundtrip "ssh (ControlMaster)" "$SSH_WHY" "$out/roundtrip-1-ssh.json"
    fi
    measure roundtrip "HTTP API (POST command, GET ?wait=)" "$out/roundtrip-2-api.json" -- \
        "$BENCH" roundtrip --server "$SERVER_URL" --agent-id "$AGENT_ID" --iterations "$RT_ITER" \
        --out "$out/roundtrip-2-api.json"
    local kept="rmm exec (session kept open)" fresh="rmm exec (opens and closes a session)"
    if [ ! -x "$BIN/rmm" ]; then
        na roundtrip "$kept" "the rmm CLI binary is not built" "$out/roundtrip-3-cli.json"
        return
    fi
    # The CLI keeps its token and remembered sessions here; RMM_TOKEN is set by start_server.
    export XDG_CONFIG_HOME="$WORK/cli"
    local rmm=("$BIN/rmm" --server "$SERVER_URL")
    # Opens a session and remembers it; later execs reuse it (as ssh reuses its master).
    if ! "${rmm[@]}" exec --no-mux --keep bench -- true 2>"$WORK/cli-warmup.err"; then
        na roundtrip "$kept" "rmm exec --keep bench -- true failed: $(tr '\n' ' ' <"$WORK/cli-warmup.err" | cut -c1-300)" "$out/roundtrip-3-cli.json"
        return
    fi
    measure roundtrip "$kept" "$out/roundtrip-3-cli.json" -- \
        "$BENCH" time-cmd --part roundtrip --name "$kept" --iterations "$RT_ITER" \
        --out "$out/roundtrip-3-cli.json" -- "${rmm[@]}" exec --no-mux bench -- true
    # Through the exec mux (ssh's ControlMaster's peer): the first exec starts it, the
    # warm-up of time-cmd warms it; it is stopped (its socket removed) afterwards.
    local muxed="rmm exec (warm mux, session kept open)"
    measure roundtrip "$muxed" "$out/roundtrip-5-cli-mux.json" -- \
        "$BENCH" time-cmd --part roundtrip --name "$muxed" --iterations "$RT_ITER" \
        --out "$out/roundtrip-5-cli-mux.json" -- "${rmm[@]}" exec bench -- true
    rm -rf "$XDG_CONFIG_HOME/rmm/mux"
    "${rmm[@]}" close bench >/dev/null 2>&1 || true
    measure roundtrip "$fresh" "$out/roundtrip-4-cli-fresh.json" -- \
        "$BENCH" time-cmd --part roundtrip --name "$fresh" --iterations "$(((RT_ITER + 3) / 4))" \
        --out "$out/roundtrip-4-cli-fresh.json" -- "${rmm[@]}" exec --no-mux bench -- true
}

part_stream() {
    local out="$RESULTS" file="$WORK/data/stream.b64"
    log "part 2: output throughput (${STREAM_BYTES_TEXT} of base64 text, $STREAM_RUNS runs)"
    head -c "$((STREAM_RAW_MIB * 1048576))" /dev/urandom | base64 -w 76 >"$file"
    chmod 644 "$file"
    local size exec_name="rmm exec cat (to a pipe)"
    size=$(stat -c %s "$file")
    [ "$SSH_OK" = 1 ] || na stream "ssh cat (ControlMaster)" "$SSH_WHY" "$out/stream-1-ssh.json"
    # Runs alternate between the two, so a change of load on a shared machine hits both.
    local i
    for ((i = 1; i <= STREAM_RUNS; i++)); do
        if [ "$SSH_OK" = 1 ]; then
            measure stream "ssh cat (ControlMaster)" "$out/stream-1-ssh.json" -- \
                "$BENCH" time-cmd --part stream --name "ssh cat (ControlMaster)" --count-stdout \
                --warmup 0 --iterations 1 --append --out "$out/stream-1-ssh.json" -- "${SSH[@]}" cat "$file"
        fi
        measure stream "rmm session stream (WebSocket)" "$out/stream-2-rmm.json" -- \
            "$BENCH" stream --server "$SERVER_URL" --agent-id "$AGENT_ID" --file "$file" \
            --runs 1 --append --out "$out/stream-2-rmm.json"
        # What a technician runs: `rmm exec` to a pipe (binary output frames end to end). It
        # opens and closes its own session around the command (tens of ms of a multi-second run).
        if [ -x "$BIN/rmm" ]; then
            XDG_CONFIG_HOME="$WORK/cli" measure stream "$exec_name" "$out/stream-3-exec.json" -- \
                "$BENCH" time-cmd --part stream --name "$exec_name" --count-stdout \
                --expect-bytes "$size" --warmup 0 --iterations 1 --append \
                --out "$out/stream-3-exec.json" -- "$BIN/rmm" --server "$SERVER_URL" exec bench -- cat "$file"
        fi
    done
    [ -x "$BIN/rmm" ] || na stream "$exec_name" "the rmm CLI binary is not built" "$out/stream-3-exec.json"
    rm -f "$file"
}

part_files() {
    local out="$RESULTS" file="$WORK/data/file.bin" size
    log "part 3: file transfer (${FILE_MIB} MiB, $FILE_RUNS runs each way)"
    head -c "$((FILE_MIB * 1048576))" /dev/urandom >"$file"
    chmod 644 "$file"
    size=$((FILE_MIB * 1048576))
    mkdir -p "$WORK/agent-up"
    [ "$SSH_OK" = 1 ] || na files "upload: scp (ControlMaster)" "$SSH_WHY" "$out/files-2-upload-scp.json"
    # Runs alternate between the API and scp, so a change of load hits both.
    local i
    for ((i = 1; i <= FILE_RUNS; i++)); do
        measure files "upload: rmm API (PUT .../files)" "$out/files-1-upload-api.json" -- \
            "$BENCH" files --server "$SERVER_URL" --agent-id "$AGENT_ID" --local "$file" \
            --remote "$WORK/agent-up/file.bin" --download-to "$WORK/data/dl-api.bin" \
            --runs 1 --append --out-dir "$out"
        rm -f "$WORK/agent-up/file.bin" "$WORK/data/dl-api.bin"
        if [ "$SSH_OK" = 1 ]; then
            measure files "upload: scp (ControlMaster)" "$out/files-2-upload-scp.json" -- \
                "$BENCH" time-cmd --part files --name "upload: scp (ControlMaster)" --bytes "$size" \
                --warmup 0 --iterations 1 --append --out "$out/files-2-upload-scp.json" -- \
                "${SCP[@]}" "$file" "$SSH_USER@127.0.0.1:$WORK/ssh-up/file.bin"
            measure files "download: scp (ControlMaster)" "$out/files-4-download-scp.json" -- \
                "$BENCH" time-cmd --part files --name "download: scp (ControlMaster)" --bytes "$size" \
                --warmup 0 --iterations 1 --append --out "$out/files-4-download-scp.json" -- \
                "${SCP[@]}" "$SSH_USER@127.0.0.1:$WORK/ssh-up/file.bin" "$WORK/data/dl-scp.bin"
            rm -f "$WORK/ssh-up/file.bin" "$WORK/data/dl-scp.bin"
        fi
    done
    rm -f "$file" "$WORK/ssh-up/file.bin" "$WORK/data/dl-scp.bin"
}

# The terminal part's remote command for the echo: the same as ECHO_COMMAND in
# bench/src/terminal.rs (raw, no echo, a ready mark, then cat: each byte comes back once).
ECHO_REMOTE='stty raw -echo; printf R; exec cat'

part_terminal() {
    local out="$RESULTS" file="$WORK/data/terminal.b64"
    local echo_ssh="ssh -tt echo (ControlMaster)" cat_ssh="ssh -tt cat (ControlMaster)"
    log "part 6: terminals (echo $TERM_ECHO_ITER times each; cat of ${TERM_BYTES_TEXT}, $TERM_RUNS runs)"
    if [ "$SSH_OK" = 1 ]; then
        measure terminal "$echo_ssh" "$out/terminal-1-echo-ssh.json" -- \
            "$BENCH" echo-cmd --name "$echo_ssh" --iterations "$TERM_ECHO_ITER" \
            --out "$out/terminal-1-echo-ssh.json" -- "${SSH_TT[@]}" "$ECHO_REMOTE"
    else
        na terminal "$echo_ssh" "$SSH_WHY" "$out/terminal-1-echo-ssh.json"
        na terminal "$cat_ssh" "$SSH_WHY" "$out/terminal-3-cat-ssh.json"
    fi
    measure terminal "rmm terminal echo (WebSocket)" "$out/terminal-2-echo-rmm.json" -- \
        "$BENCH" term-echo --server "$SERVER_URL" --agent-id "$AGENT_ID" \
        --iterations "$TERM_ECHO_ITER" --out "$out/terminal-2-echo-rmm.json"
    head -c "$((TERM_RAW_MIB * 1048576))" /dev/urandom | base64 -w 76 >"$file"
    chmod 644 "$file"
    # What a cooked PTY shows of it: each \n as \r\n. ssh -tt with a stdin that is not a
    # terminal hands sshd all-off terminal modes (-opost: no \r\n); `stty sane` makes its PTY
    # cooked like the agent's, and both sides' counts are checked against this.
    local expected
    expected=$(($(wc -c <"$file") + $(wc -l <"$file")))
    # Runs alternate between the two, so a change of load on a shared machine hits both.
    local i
    for ((i = 1; i <= TERM_RUNS; i++)); do
        if [ "$SSH_OK" = 1 ]; then
            measure terminal "$cat_ssh" "$out/terminal-3-cat-ssh.json" -- \
                "$BENCH" time-cmd --part terminal --name "$cat_ssh" --count-stdout \
                --expect-bytes "$expected" --warmup 0 --iterations 1 --append \
                --out "$out/terminal-3-cat-ssh.json" -- "${SSH_TT[@]}" "stty sane; exec cat '$file'"
        fi
        measure terminal "rmm terminal cat (WebSocket)" "$out/terminal-4-cat-rmm.json" -- \
            "$BENCH" term-cat --server "$SERVER_URL" --agent-id "$AGENT_ID" --file "$file" \
            --runs 1 --append --out "$out/terminal-4-cat-rmm.json"
    done
    rm -f "$file"
}

if wants roundtrip || wants stream || wants files || wants terminal; then
    if start_server tunnel "sqlite://$WORK/tunnel/rmm.db" && start_agent bench; then
        if wants roundtrip; then part_roundtrip || log "part 1 failed"; fi
        if wants stream; then part_stream || log "part 2 failed"; fi
        if wants files; then part_files || log "part 3 failed"; fi
        if wants terminal; then part_terminal || log "part 6 failed"; fi
    else
        for p in roundtrip stream files terminal; do
            wants "$p" && na "$p" "rmm" "the server or the agent did not start (see the log above)" "$RESULTS/$p-9-setup.json"
        done
    fi
    stop_pid "${AGENT_PID:-}"
    stop_pid "${SERVER_PID:-}"
fi

# --- part 7: the idle agent ------------------------------------------------------------------
# A real agent on its own server, connected and left alone; beside it the sshd processes of
# the ControlMaster's connection (idle too), the memory one ssh connection costs a host.
part_agent() {
    local out="$RESULTS/agent-1.json" sshd=() priv
    log "part 7: the idle agent (${AGENT_SETTLE} s idle)"
    if [ "$SSH_OK" = 1 ] && [ -n "$SSHD_PID" ]; then
        # OpenSSH 9.2: the listener's child is the connection's privileged monitor, whose
        # child runs as the user; both exist per connection.
        for priv in $(pgrep -P "$SSHD_PID" || true); do
            sshd+=("$priv")
            sshd+=($(pgrep -P "$priv" || true))
        done
    fi
    if start_server agent "sqlite://$WORK/agent/rmm.db" && start_agent idle; then
        measure agent "rmm-agent idle" "$out" -- \
            "$BENCH" agent-idle --pid "$AGENT_PID" --binary "$AGENT_BIN" \
            --settle-secs "$AGENT_SETTLE" --sshd-pids "$(IFS=,; echo "${sshd[*]}")" --out "$out"
    else
        na agent "rmm-agent idle" "the server or the agent did not start" "$out"
    fi
    stop_pid "${AGENT_PID:-}"
    stop_pid "${SERVER_PID:-}"
}
if wants agent; then part_agent || log "part 7 failed"; fi

# --- part 4: the agent simulator -----------------------------------------------------------
if wants sim; then
    # Must equal rmm_bench::report::SIM_PEER (the report tells the peer's row by it).
    SIM_PEER_NAME="bare tokio-tungstenite peer"
    log "part 4: agent simulator ($SIM_AGENTS agents)"
    out="$RESULTS/sim-1.json"
    if start_server sim "sqlite://$WORK/sim/rmm.db"; then
        keys="$WORK/sim-keys.tsv"
        # Register only as many as both processes' open-file limits allow (the simulator
        # reports the shortfall).
        hard="$(ulimit -Hn)"
        register="$SIM_AGENTS"
        if [ "$hard" != unlimited ] && [ "$register" -gt $((hard - 256)) ]; then
            register=$((hard - 256))
        fi
        ws="ws://${SERVER_URL#http://}"
        if RMM_ADMIN_TOKEN="$TOKEN" "$SIM" --server "$ws" --keys-file "$keys" --register "$register"; then
            # The heartbeat interval is the real agent's default (30 s). After the windows the
            # simulator asks for a restart (the storm): the server is killed with the fleet
            # connected and started again on the same port and database.
            storm="$WORK/storm"
            mkdir -p "$storm"
            measure sim "$SIM_AGENTS agents" "$out" -- "$SIM" --server "$ws" \
                --agents "$SIM_AGENTS" --keys-file "$keys" --heartbeat-secs 30 \
                --ramp-per-sec "$SIM_RAMP" --bind-ips 127.0.0.1-127.0.0.20 \
                --server-pid "$SERVER_PID" --hold-secs "$SIM_HOLD" --storm-dir "$storm" \
                --out "$out" &
            sim_job=$!
            while [ ! -f "$storm/ready" ] && kill -0 "$sim_job" 2>/dev/null; do sleep 0.2; done
            if [ -f "$storm/ready" ]; then
                log "part 4: restarting the server (SIGKILL) with the fleet connected"
                kill -KILL "$SERVER_PID" 2>/dev/null || true
                wait "$SERVER_PID" 2>/dev/null || true
                port="${SERVER_URL##*:}"
                if start_server sim "sqlite://$WORK/sim/rmm.db" "$port"; then
                    echo "$SERVER_PID SIGKILL" >"$storm/restarted"
                fi
            fi
            wait "$sim_job" || true
            # The same fleet against the bare peer (the floor of the server's stack), with
            # the server stopped so the two never share the machine.
            stop_pid "$SERVER_PID"
            peer_port="$("$BENCH" free-port)"
            (
                ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
                exec "$BENCH" bare-ws --listen "127.0.0.1:$peer_port"
            ) >"$WORK/sim-peer.log" 2>&1 &
            peer_pid=$!
            STARTED_PIDS+=("$peer_pid")
            log "part 4: the same fleet against the bare tokio-tungstenite peer"
            measure sim "$SIM_PEER_NAME" "$RESULTS/sim-peer.json" -- "$SIM" \
                --server "ws://127.0.0.1:$peer_port" --agents "$SIM_AGENTS" \
                --keys-file "$keys" --heartbeat-secs 30 --ramp-per-sec "$SIM_RAMP" \
                --bind-ips 127.0.0.1-127.0.0.20 --server-pid "$peer_pid" \
                --hold-secs "$SIM_HOLD" --name "$SIM_PEER_NAME" \
                --out "$RESULTS/sim-peer.json" || true
            stop_pid "$peer_pid"
        else
            na sim "$SIM_AGENTS agents" "registering the agents failed" "$out"
        fi
    else
        na sim "$SIM_AGENTS agents" "the server did not start" "$out"
    fi
    stop_pid "${SERVER_PID:-}"
fi

# --- part 5: tunnel opens on SQLite and PostgreSQL ------------------------------------------
start_postgres() { # sets PG_URL
    if [ -n "${RMM_BENCH_PG_URL:-}" ]; then
        PG_URL="$RMM_BENCH_PG_URL"
        return 0
    fi
    command -v docker >/dev/null 2>&1 || [ "$(id -u)" -eq 0 ] || { PG_WHY="no docker and not root"; return 1; }
    bash "$ROOT/scripts/ensure-docker.sh" || { PG_WHY="no Docker engine (scripts/ensure-docker.sh failed)"; return 1; }
    local image="${RMM_TEST_PG_IMAGE:-}" port i
    # The image the tests built earlier, if any, without ensure-postgres-image.sh's pull attempt.
    if [ -z "$image" ] && docker image inspect rmm-postgres:15-bookworm >/dev/null 2>&1; then
        image="rmm-postgres:15-bookworm"
    fi
    if [ -z "$image" ]; then
        image="$(bash "$ROOT/scripts/ensure-postgres-image.sh")" || { PG_WHY="no PostgreSQL image (scripts/ensure-postgres-image.sh failed)"; return 1; }
    fi
    PG_CONTAINER="rmm-bench-pg-$$"
    # The host's network, PostgreSQL on a free loopback port: a published port would put
    # Docker's userland proxy (docker-proxy) on every query, and it took as much CPU as our
    # server during the opens run.
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    docker run -d --rm --name "$PG_CONTAINER" --label rmm-bench -e POSTGRES_PASSWORD=bench \
        --network host "$image" postgres -c port="$port" -c listen_addresses=127.0.0.1 >/dev/null \
        || { PG_WHY="docker run $image failed"; PG_CONTAINER=""; return 1; }
    PG_URL="postgres://postgres:bench@127.0.0.1:$port/postgres"
    for ((i = 0; i < 120; i++)); do
        if docker exec "$PG_CONTAINER" pg_isready -h 127.0.0.1 -p "$port" -U postgres >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    PG_WHY="PostgreSQL in $image did not become ready within 60 s"
    return 1
}

run_opens() { # backend database_url outfile
    local name="$1 ($OPENS_AGENTS agents, $OPENS_CONC at once)"
    if start_server "opens-$1" "$2"; then
        measure opens "$name" "$3" -- \
            "$BENCH" opens --server "$SERVER_URL" --agents "$OPENS_AGENTS" --concurrency "$OPENS_CONC" \
            --secs "$OPENS_SECS" --single "$OPENS_SINGLE" --backend "$1" --server-pid "$SERVER_PID" --out "$3"
    else
        na opens "$name" "the server did not start on $1" "$3"
    fi
    stop_pid "${SERVER_PID:-}"
}

if wants opens; then
    log "part 5: tunnel opens ($OPENS_AGENTS agents, $OPENS_CONC concurrent, $OPENS_SECS s each)"
    run_opens sqlite "sqlite://$WORK/opens-sqlite.db" "$RESULTS/opens-1-sqlite.json"
    PG_WHY=""
    if start_postgres; then
        run_opens postgres "$PG_URL" "$RESULTS/opens-2-postgres.json"
    else
        na opens "postgres" "$PG_WHY" "$RESULTS/opens-2-postgres.json"
    fi
    if [ -n "$PG_CONTAINER" ]; then
        docker rm -f "$PG_CONTAINER" >/dev/null 2>&1 || true
        PG_CONTAINER=""
    fi
fi

# --- part 8: cluster mode, the hop between nodes ----------------------------------------------
# Three nodes on one PostgreSQL and a private nats-server (Debian's); a real agent connected to
# node C. The same CLI commands go to node C (same node) and to node A, which forwards them to
# C (across nodes: over TCP to C's cluster address, RMM_CLUSTER_LISTEN, dialled over NATS);
# the cat runs alternate between the two. Then a simulated fleet.
ensure_pkg() { # program package
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] && return 0
    apt_install "$2" || { CLUSTER_WHY="$PKG_WHY"; return 1; }
}

# The fleet: CLUSTER_AGENTS simulated agents through HAProxy (round robin over the three
# nodes), while rmm-bench cluster-fleet times how long node A takes to list them all and then
# reads each node's share (its metrics) and memory.
cluster_fleet() { # a_url nats_port node_pids... (a b c)
    local a_url="$1" haproxy_port cfg keys="$WORK/cluster-keys.tsv" sim_job i
    shift
    ensure_pkg haproxy haproxy || return 1
    haproxy_port="$("$BENCH" free-port)"
    cfg="$WORK/haproxy.cfg"
    {
        printf 'global\n  maxconn 9500\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n'
        printf 'frontend rmm\n  bind 127.0.0.1:%s\n  default_backend nodes\nbackend nodes\n  balance roundrobin\n' "$haproxy_port"
        for i in a b c; do printf '  server %s %s\n' "$i" "${CLUSTER_NODE_ADDR[$i]}"; done
    } >"$cfg"
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        exec "$(command -v haproxy || echo /usr/sbin/haproxy)" -f "$cfg" -db
    ) >"$WORK/haproxy.log" 2>&1 &
    STARTED_PIDS+=("$!")
    for ((i = 0; i < 100; i++)); do port_busy "$haproxy_port" && break; sleep 0.1; done
    port_busy "$haproxy_port" || { CLUSTER_WHY="haproxy did not start: $(grep -m1 ALERT "$WORK/haproxy.log" | cut -c1-200)"; return 1; }
    RMM_ADMIN_TOKEN="$TOKEN" "$SIM" --server "ws://${a_url#http://}" --keys-file "$keys" --register "$CLUSTER_AGENTS" \
        || { CLUSTER_WHY="registering the simulated agents failed"; return 1; }
    local name="$CLUSTER_AGENTS agents over 3 nodes"
    measure cluster "$name (simulator)" "$RESULTS/cluster-5-sim.json" -- "$SIM" \
        --server "ws://127.0.0.1:$haproxy_port" --agents "$CLUSTER_AGENTS" --keys-file "$keys" \
        --heartbeat-secs 30 --ramp-per-sec "$SIM_RAMP" --bind-ips 127.0.0.1-127.0.0.20 \
        --hold-secs "$CLUSTER_HOLD" --part cluster --name "$name (simulator)" \
        --out "$RESULTS/cluster-5-sim.json" &
    sim_job=$!
    measure cluster "$name (nodes)" "$RESULTS/cluster-6-fleet.json" -- "$BENCH" cluster-fleet \
        --server "$a_url" --expect "$CLUSTER_AGENTS" --timeout-secs "$((CLUSTER_HOLD * 3 + 60))" --name "$name (nodes)" \
        --node "A=$1@http://${CLUSTER_METRICS[a]}/metrics" --node "B=$2@http://${CLUSTER_METRICS[b]}/metrics" \
        --node "C=$3@http://${CLUSTER_METRICS[c]}/metrics" --out "$RESULTS/cluster-6-fleet.json"
    wait "$sim_job" || true
}

# rmm exec -- true through the warm mux, as part 1's, with a session kept open: agent `bench`
# through node C (same node) and agent `bench2`, also on C, through node A (across nodes). The
# runs alternate between the two in CLUSTER_ROUNDS rounds, so a change in the machine's load
# during the part weighs on both alike.
cluster_keep() { # agent url
    "$BIN/rmm" --server "$2" exec --no-mux --keep "$1" -- true >/dev/null 2>"$WORK/cluster-warmup.err" \
        || { CLUSTER_WHY="rmm exec --keep $1 through $2 failed: $(tr '\n' ' ' <"$WORK/cluster-warmup.err" | cut -c1-300)"; return 1; }
}

cluster_exec() { # c_url a_url
    local same="rmm exec -- true, same node" cross="rmm exec -- true, across nodes" r
    local per=$((CLUSTER_RT_ITER / CLUSTER_ROUNDS))
    export XDG_CONFIG_HOME="$WORK/cli"
    cluster_keep bench "$1" && cluster_keep bench2 "$2" || return 1
    for ((r = 1; r <= CLUSTER_ROUNDS; r++)); do
        measure cluster "$same" "$RESULTS/cluster-1-exec-same.json" -- "$BENCH" time-cmd --part cluster --name "$same" \
            --iterations "$per" --append --out "$RESULTS/cluster-1-exec-same.json" -- "$BIN/rmm" --server "$1" exec bench -- true
        measure cluster "$cross" "$RESULTS/cluster-2-exec-cross.json" -- "$BENCH" time-cmd --part cluster --name "$cross" \
            --iterations "$per" --append --out "$RESULTS/cluster-2-exec-cross.json" -- "$BIN/rmm" --server "$2" exec bench2 -- true
    done
    rm -rf "$XDG_CONFIG_HOME/rmm/mux"
    "$BIN/rmm" --server "$1" close bench >/dev/null 2>&1 || true
    "$BIN/rmm" --server "$2" close bench2 >/dev/null 2>&1 || true
    pkill -f -- "--server $1 mux" 2>/dev/null || true
    pkill -f -- "--server $2 mux" 2>/dev/null || true
}

part_cluster() {
    local out="$RESULTS" nats_port nats_pid node url a_url="" c_url="" pids=() i
    local rmm=("$BIN/rmm") file="$WORK/data/cluster.b64" size
    CLUSTER_WHY=""
    ensure_pkg nats-server nats-server || return 1
    PG_WHY=""
    start_postgres || { CLUSTER_WHY="$PG_WHY"; return 1; }
    nats_port="$("$BENCH" free-port)"
    nats-server -a 127.0.0.1 -p "$nats_port" >"$WORK/nats.log" 2>&1 &
    nats_pid=$!
    STARTED_PIDS+=("$nats_pid")
    for ((i = 0; i < 100; i++)); do port_busy "$nats_port" && break; sleep 0.1; done
    declare -gA CLUSTER_NODE_ADDR=() CLUSTER_METRICS=()
    for node in a b c; do
        CLUSTER_METRICS[$node]="127.0.0.1:$("$BENCH" free-port)"
        SERVER_ENV=(RMM_NATS_URL="nats://127.0.0.1:$nats_port" RMM_NODE_ID="node-$node"
            RMM_METRICS_LISTEN="${CLUSTER_METRICS[$node]}" RMM_CLUSTER_LISTEN="127.0.0.1:$("$BENCH" free-port)")
        start_server "cluster-$node" "$PG_URL" || { SERVER_ENV=(); CLUSTER_WHY="node $node did not start"; return 1; }
        pids+=("$SERVER_PID")
        CLUSTER_NODE_ADDR[$node]="${SERVER_URL#http://}"
        [ "$node" = a ] && a_url="$SERVER_URL"
        [ "$node" = c ] && c_url="$SERVER_URL"
    done
    SERVER_ENV=()
    # SERVER_URL is node C's: both agents connect there.
    local agents=()
    for i in bench bench2; do
        start_agent "$i" || { CLUSTER_WHY="agent $i did not connect to node C"; return 1; }
        agents+=("$AGENT_PID")
        "$BENCH" wait-agent --server "$a_url" --agent-id "$AGENT_ID" --timeout-secs 30 \
            || { CLUSTER_WHY="node A did not list agent $i of node C"; return 1; }
    done
    log "part 8: cluster hop (${CLUSTER_RT_ITER} runs per node in $CLUSTER_ROUNDS rounds, $CLUSTER_RUNS cats of $(b64_text "$CLUSTER_RAW_MIB"))"
    cluster_exec "$c_url" "$a_url" || return 1
    head -c "$((CLUSTER_RAW_MIB * 1048576))" /dev/urandom | base64 -w 76 >"$file"
    chmod 644 "$file"
    size=$(stat -c %s "$file")
    for ((i = 1; i <= CLUSTER_RUNS; i++)); do
        XDG_CONFIG_HOME="$WORK/cli" measure cluster "rmm exec cat, same node" "$out/cluster-3-cat-same.json" -- \
            "$BENCH" time-cmd --part cluster --name "rmm exec cat, same node" --count-stdout --expect-bytes "$size" \
            --warmup 0 --iterations 1 --append --out "$out/cluster-3-cat-same.json" -- "${rmm[@]}" --server "$c_url" exec bench -- cat "$file"
        XDG_CONFIG_HOME="$WORK/cli" measure cluster "rmm exec cat, across nodes" "$out/cluster-4-cat-cross.json" -- \
            "$BENCH" time-cmd --part cluster --name "rmm exec cat, across nodes" --count-stdout --expect-bytes "$size" \
            --warmup 0 --iterations 1 --append --out "$out/cluster-4-cat-cross.json" -- "${rmm[@]}" --server "$a_url" exec bench -- cat "$file"
    done
    rm -f "$file"
    for i in "${agents[@]}"; do stop_pid "$i"; done
    cluster_fleet "$a_url" "${pids[@]}" || na cluster "$CLUSTER_AGENTS agents over 3 nodes" "${CLUSTER_WHY:-failed}" "$RESULTS/cluster-7-fleet-setup.json"
    for i in "${pids[@]}"; do stop_pid "$i"; done
    stop_pid "$nats_pid"
}

if wants cluster; then
    if [ ! -x "$BIN/rmm" ]; then
        na cluster "rmm exec across nodes" "the rmm CLI binary is not built" "$RESULTS/cluster-9-setup.json"
    elif ! part_cluster; then
        na cluster "rmm exec across nodes" "${CLUSTER_WHY:-failed (see the log above)}" "$RESULTS/cluster-9-setup.json"
    fi
    if [ -n "$PG_CONTAINER" ]; then
        docker rm -f "$PG_CONTAINER" >/dev/null 2>&1 || true
        PG_CONTAINER=""
    fi
fi

# --- the report --------------------------------------------------------------------------------
# A run of some parts merges into the report already there instead of replacing it.
MERGE=()
if [ "${#PARTS[@]}" -lt "${#ALL_PARTS[@]}" ] && [ -f "$REPORT" ]; then MERGE=(--merge); fi
PARTS_CSV="$(IFS=,; echo "${PARTS[*]}")"
"$BENCH" report --results "$RESULTS" --out "$REPORT" --command "bench/run.sh${ARGS:+ $ARGS}" \
    --sizes "$SIZES" --profile "$PROFILE" --ssh-version "$SSH_VERSION" --load "$LOAD_AT_START" \
    --notes "$ROOT/bench/notes.md" --parts "$PARTS_CSV" ${MERGE[@]+"${MERGE[@]}"}
log "done: $REPORT"
