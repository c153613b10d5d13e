#!/usr/bin/env bash
# Make sure a Docker engine is running and reachable by the `docker` client on PATH.
#
# Idempotent: exits 0 at once if `docker info` already works. Otherwise installs
# Debian's docker.io (if dockerd is missing) and starts dockerd directly in the
# background (no systemd needed). Meant to be run as root (CI, dev machines).
#
# Env:
#   RMM_DOCKERD_LOG        dockerd log file (default /var/log/rmm-dockerd.log)
#   RMM_DOCKERD_WAIT_SECS  how long to wait for the engine (default 60)
set -euo pipefail

log() { echo "[ensure-docker] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

DOCKERD_LOG="${RMM_DOCKERD_LOG:-/var/log/rmm-dockerd.log}"
WAIT_SECS="${RMM_DOCKERD_WAIT_SECS:-60}"

docker_ok() { docker info >/dev/null 2>&1; }

# --- 0. a docker client -------------------------------------------------------
# /usr/local/bin/docker (a newer static client) may shadow Debian's /usr/bin/docker.
# Both negotiate the API version down to the engine's, so either works; we only
# need *some* client. Debian's docker.io package ships one if none is present.
if command -v docker >/dev/null 2>&1 && docker_ok; then
    log "docker engine already reachable ($(docker version --format 'client {{.Client.Version}} / engine {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    die "docker engine not reachable and not running as root; start dockerd yourself (or run as root)"
fi

# --- 1. install docker.io if dockerd is missing ---------------------------------
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # Refresh package lists unless they were refreshed within the last 6 hours.
    local stamp=/var/lib/apt/periodic/update-success-stamp lists_fresh=0
    if [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
        lists_fresh=1
    elif [ -f "$stamp" ] && [ -n "$(find "$stamp" -mmin -360 2>/dev/null)" ]; then
        lists_fresh=1
    fi
    if [ "$lists_fresh" -eq 0 ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    fi
    log "apt-get install -y $*"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >&2 \
        || { log "install failed; retrying after apt-get update"; \
             apt-get -o DPkg::Lock::Timeout=600 update -qq >&2; \
             apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >&2; }
}

find_dockerd() { command -v dockerd 2>/dev/null || { [ -x /usr/sbin/dockerd ] && echo /usr/sbin/dockerd; } || true; }

DOCKERD="$(find_dockerd)"
if [ -z "$DOCKERD" ]; then
    # docker.io pulls in containerd, runc, tini (docker-init) and iptables.
    apt_install docker.io
    DOCKERD="$(find_dockerd)"
    [ -n "$DOCKERD" ] || die "dockerd still not found after installing docker.io"
fi
# Make sure Debian's dockerd helpers are found (docker-proxy, docker-init, containerd).
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/usr/libexec/docker/cli-plugins"

if ! command -v docker >/dev/null 2>&1; then
    die "no docker client on PATH (expected /usr/bin/docker from docker.io)"
fi

# --- 2. start dockerd ---------------------------------------------------------
wait_for_engine() {
    local pid="$1" i
    for ((i = 0; i < WAIT_SECS * 2; i++)); do
        if docker_ok; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 2; fi
        sleep 0.5
    done
    return 1
}

dockerd_pid() { pgrep -x dockerd 2>/dev/null | head -n1 || true; }

start_dockerd() {
    # Extra args (e.g. --iptables=false) are appended.
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
        log "removing stale $pidfile"
        rm -f "$pidfile"
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting $DOCKERD $* (log: $DOCKERD_LOG)"
    {
        echo "==== $(date -u +%FT%TZ) starting $DOCKERD $*"
    } >>"$DOCKERD_LOG"
    # setsid + nohup: fully detached, survives the calling shell / CI step.
    nohup setsid "$DOCKERD" "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    STARTED_PID=$!
}

PID="$(dockerd_pid)"
if [ -n "$PID" ]; then
    log "dockerd already running (pid $PID) but not answering yet; waiting"
else
    start_dockerd
    PID="$STARTED_PID"
fi

rc=0
wait_for_engine "$PID" || rc=$?
if [ "$rc" -eq 2 ]; then
    # dockerd died. The usual culprit on minimal VMs is iptables/netfilter; retry
    # without it (port publishing to 127.0.0.1 still works through docker-proxy).
    log "dockerd exited early; last log lines:"
    tail -n 15 "$DOCKERD_LOG" >&2 || true
    log "retrying with --iptables=false --ip6tables=false"
    start_dockerd --iptables=false --ip6tables=false
    PID="$STARTED_PID"
    rc=0
    wait_for_engine "$PID" || rc=$?
fi

if [ "$rc" -ne 0 ]; then
    log "last dockerd log lines ($DOCKERD_LOG):"
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    if [ -x /usr/bin/docker ] && [ "$(command -v docker)" != /usr/bin/docker ] \
        && /usr/bin/docker info >/dev/null 2>&1; then
        die "engine answers /usr/bin/docker but not $(command -v docker): client/engine API mismatch? Put /usr/bin first on PATH."
    fi
    die "docker engine did not become ready within ${WAIT_SECS}s"
fi

log "docker engine ready: $(docker version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}) / engine {{.Server.Version}} (API {{.Server.APIVersion}}, min {{.Server.MinAPIVersion}})' 2>/dev/null || echo '?')"
