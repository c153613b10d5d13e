#!/usr/bin/env bash
# Make sure a Docker engine is running and usable by the tests.
#
#   * Idempotent: does nothing if the engine already answers.
#   * Installs Debian's docker.io if dockerd is missing, and starts dockerd
#     directly in the background (no systemd needed). Run as root (CI, dev).
#   * API versions: Debian 12's engine (20.10) speaks Docker API <= 1.41. The `docker`
#     CLI negotiates down by itself, and bollard (under testcontainers) works against this
#     engine directly: the PostgreSQL end-to-end tests pass with the engine's own socket, so
#     the API-rewriting proxy earlier versions started here is gone.
#
# Stdout: nothing (callers used to read a DOCKER_HOST from it). Logs: stderr.
#
# Env:
#   RMM_DOCKERD_LOG        dockerd log file (default /var/log/rmm-dockerd.log)
#   RMM_DOCKERD_WAIT_SECS  how long to wait for the engine (default 60)
set -euo pipefail

exec 1>&2
log() { echo "[ensure-docker] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

DOCKERD_LOG="${RMM_DOCKERD_LOG:-/var/log/rmm-dockerd.log}"
WAIT_SECS="${RMM_DOCKERD_WAIT_SECS:-60}"

# Talk to the engine itself, never to the API-rewriting proxy earlier versions started.
case "${DOCKER_HOST:-}" in */rmm-docker/api-compat.sock) unset DOCKER_HOST ;; esac
# Make sure Debian's dockerd helpers are found (docker-proxy, docker-init, containerd).
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin"

docker_ok() { docker info >/dev/null 2>&1; }

# --- 1. the engine ------------------------------------------------------------
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # Refresh package lists unless they were refreshed within the last 6 hours.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
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
dockerd_pid() { pgrep -x dockerd 2>/dev/null | head -n1 || true; }

wait_for_engine() {
    local pid="$1" i
    for ((i = 0; i < WAIT_SECS * 2; i++)); do
        if docker_ok; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 2; fi
        sleep 0.5
    done
    return 1
}

start_dockerd() {
    # Extra args (e.g. --iptables=false) are appended.
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
        log "removing stale $pidfile"
        rm -f "$pidfile"
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting $DOCKERD $* (log: $DOCKERD_LOG)"
    echo "==== $(date -u +%FT%TZ) starting $DOCKERD $*" >>"$DOCKERD_LOG"
    # setsid + nohup: fully detached, survives the calling shell / CI step.
    nohup setsid "$DOCKERD" "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null 3>&- &
    STARTED_PID=$!
}

ensure_engine() {
    # /usr/local/bin/docker (a newer static client, 28.x) may shadow Debian's
    # /usr/bin/docker (20.10). Both negotiate the API version down to the
    # engine's, so either works; we only need *some* client.
    if command -v docker >/dev/null 2>&1 && docker_ok; then
        log "docker engine already running"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "docker engine not reachable and not running as root; start dockerd yourself (or run as root)"

    DOCKERD="$(find_dockerd)"
    if [ -z "$DOCKERD" ] || ! command -v docker >/dev/null 2>&1; then
        # docker.io brings dockerd, the docker client, containerd, runc, tini, iptables.
        apt_install docker.io
        DOCKERD="$(find_dockerd)"
        [ -n "$DOCKERD" ] || die "dockerd still not found after installing docker.io"
        command -v docker >/dev/null 2>&1 || die "no docker client on PATH after installing docker.io"
    fi

    local pid rc=0
    pid="$(dockerd_pid)"
    if [ -n "$pid" ]; then
        log "dockerd already running (pid $pid) but not answering yet; waiting"
    else
        start_dockerd
        pid="$STARTED_PID"
    fi
    wait_for_engine "$pid" || rc=$?
    if [ "$rc" -eq 2 ]; then
        # dockerd died. The usual culprit on minimal VMs is iptables/netfilter;
        # retry without it (publishing ports on 127.0.0.1 still works through
        # docker-proxy).
        log "dockerd exited early; last log lines:"
        tail -n 15 "$DOCKERD_LOG" >&2 || true
        log "retrying with --iptables=false --ip6tables=false"
        start_dockerd --iptables=false --ip6tables=false
        pid="$STARTED_PID"
        rc=0
        wait_for_engine "$pid" || rc=$?
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
}

ensure_engine
log "docker engine ready: $(docker version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}) / engine {{.Server.Version}} (API {{.Server.APIVersion}}, min {{.Server.MinAPIVersion}})' 2>/dev/null || echo '?')"
