#!/usr/bin/env bash
# Make sure a Docker engine is running and usable by the tests.
#
#   * Idempotent: does nothing if the engine already answers.
#   * Installs Debian's docker.io if dockerd is missing, and starts dockerd
#     directly in the background (no systemd needed). Run as root (CI, dev).
#   * API compatibility: Debian 12's engine (20.10) speaks Docker API <= 1.41.
#     The `docker` CLI negotiates down by itself, but bollard (used by
#     testcontainers) pins its API version (1.52 for bollard 0.20) and the
#     engine rejects it ("client version 1.52 is too new"). When the engine's
#     API is older than $RMM_DOCKER_MIN_API, a small local proxy is started that
#     rewrites the /v1.NN/ prefix of each request to the engine's version, and
#     its address is printed on stdout for the caller to export as DOCKER_HOST.
#
# Stdout: nothing, or one line "unix:///…" (the DOCKER_HOST to use). Logs: stderr.
#
# Env:
#   RMM_DOCKERD_LOG        dockerd log file (default /var/log/rmm-dockerd.log)
#   RMM_DOCKERD_WAIT_SECS  how long to wait for the engine (default 60)
#   RMM_DOCKER_MIN_API     API version the tests' client needs (default 1.52)
#   RMM_DOCKER_PROXY       "auto" (default), "always" or "never"
set -euo pipefail

exec 3>&1 1>&2
log() { echo "[ensure-docker] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

DOCKERD_LOG="${RMM_DOCKERD_LOG:-/var/log/rmm-dockerd.log}"
WAIT_SECS="${RMM_DOCKERD_WAIT_SECS:-60}"
MIN_API="${RMM_DOCKER_MIN_API:-1.52}"
PROXY_MODE="${RMM_DOCKER_PROXY:-auto}"
PROXY_DIR=/run/rmm-docker
PROXY_SOCK="$PROXY_DIR/api-compat.sock"
PROXY_PY="$PROXY_DIR/api-compat-proxy.py"
PROXY_LOG="$PROXY_DIR/api-compat-proxy.log"

# Talk to the engine itself, never to our own proxy.
if [ "${DOCKER_HOST:-}" = "unix://$PROXY_SOCK" ]; then unset DOCKER_HOST; fi
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
ENGINE_API="$(docker version --format '{{.Server.APIVersion}}')"
log "docker engine ready: $(docker version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}) / engine {{.Server.Version}} (API {{.Server.APIVersion}}, min {{.Server.MinAPIVersion}})' 2>/dev/null || echo '?')"

# --- 2. API-version compatibility proxy ------------------------------------------
minor() { local v="${1#*.}"; echo "${v%%.*}"; }

case "$PROXY_MODE" in
    never) exit 0 ;;
    always) ;;
    auto)
        if [ "$(minor "$ENGINE_API")" -ge "$(minor "$MIN_API")" ]; then
            exit 0
        fi
        log "engine API $ENGINE_API < $MIN_API (needed by bollard/testcontainers): using API-compat proxy"
        ;;
    *) die "RMM_DOCKER_PROXY must be auto, always or never (got '$PROXY_MODE')" ;;
esac

# Debian's interpreter (not a pyenv shim, which depends on the working directory).
if [ ! -x /usr/bin/python3 ] && ! command -v python3 >/dev/null 2>&1; then
    apt_install python3-minimal
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
mkdir -p "$PROXY_DIR"
cat >"$PROXY_PY.new" <<'PYEOF'
#!/usr/bin/env python3
"""Docker API version-downgrading proxy (written by scripts/ensure-docker.sh).

Listens on a unix socket and relays to the engine's socket, rewriting the
"/v1.NN/" prefix of each request to the engine's maximum API version when the
client asks for a newer one (bollard, used by testcontainers, pins its version
instead of negotiating). Handles keep-alive, Content-Length and chunked request
bodies, and connection upgrades (attach/exec hijack) by switching to a raw relay.
Responses are relayed untouched.

usage: api-compat-proxy.py LISTEN_SOCK UPSTREAM_SOCK
       api-compat-proxy.py --check LISTEN_SOCK
"""
import asyncio
import json
import os
import re
import socket
import sys

REQ_RE = re.compile(rb"^([A-Z]+) /v1\.(\d+)(/[^ ]*) (HTTP/1\.[01])\r\n")


def http_get(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: docker\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = data.split(b"\r\n", 1)[0]
    return status, data.split(b"\r\n\r\n", 1)[1]


async def relay(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def copy_exact(reader, writer, n):
    while n > 0:
        data = await reader.read(min(n, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(data)
        n -= len(data)
        await writer.drain()


async def relay_requests(creader, uwriter, max_minor):
    try:
        while True:
            try:
                head = await creader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            m = REQ_RE.match(head)
            if m and int(m.group(2)) > max_minor:
                head = b"%s /v1.%d%s %s\r\n" % (
                    m.group(1), max_minor, m.group(3), m.group(4)) + head[m.end():]
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                if b":" in line:
                    k, v = line.split(b":", 1)
                    headers[k.strip().lower()] = v.strip().lower()
            uwriter.write(head)
            await uwriter.drain()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                while True:
                    size_line = await creader.readuntil(b"\r\n")
                    uwriter.write(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailers, up to the empty line
                            t = await creader.readuntil(b"\r\n")
                            uwriter.write(t)
                            if t == b"\r\n":
                                break
                        break
                    await copy_exact(creader, uwriter, size + 2)
                await uwriter.drain()
            elif b"content-length" in headers:
                await copy_exact(creader, uwriter, int(headers[b"content-length"]))
            if b"upgrade" in headers.get(b"connection", b"") or b"upgrade" in headers:
                await relay(creader, uwriter)  # hijacked stream: raw from here on
                return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    try:
        uwriter.write_eof()
    except (OSError, RuntimeError):
        pass


def main():
    if sys.argv[1] == "--check":
        status, body = http_get(sys.argv[2], "/v1.99/_ping")
        sys.exit(0 if b" 200 " in status and body.strip() == b"OK" else 1)

    listen, upstream = sys.argv[1], sys.argv[2]
    _, body = http_get(upstream, "/version")
    max_minor = int(json.loads(body)["ApiVersion"].split(".")[1])

    async def handle(creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_unix_connection(upstream)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(relay_requests(creader, uwriter, max_minor), relay(ureader, cwriter))
        for w in (uwriter, cwriter):
            try:
                w.close()
            except OSError:
                pass

    async def serve():
        if os.path.exists(listen):
            os.unlink(listen)
        server = await asyncio.start_unix_server(handle, path=listen, limit=1 << 20)
        os.chmod(listen, 0o660)
        print(f"api-compat proxy {listen} -> {upstream} (engine API 1.{max_minor})", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
PYEOF

proxy_ok() { [ -S "$PROXY_SOCK" ] && "$PY" "$PROXY_PY" --check "$PROXY_SOCK" 2>/dev/null; }

if [ -f "$PROXY_PY" ] && cmp -s "$PROXY_PY.new" "$PROXY_PY" && proxy_ok; then
    rm -f "$PROXY_PY.new"
    log "API-compat proxy already running"
else
    # (Re)start: stop the one we started earlier, if any (by its recorded pid).
    if [ -f "$PROXY_DIR/api-compat-proxy.pid" ]; then
        old="$(cat "$PROXY_DIR/api-compat-proxy.pid")"
        if [ -n "$old" ] && grep -q api-compat-proxy "/proc/$old/cmdline" 2>/dev/null; then
            kill "$old" 2>/dev/null || true
        fi
    fi
    mv -f "$PROXY_PY.new" "$PROXY_PY"
    real_sock="/var/run/docker.sock"
    case "${DOCKER_HOST:-}" in unix://*) real_sock="${DOCKER_HOST#unix://}" ;; esac
    nohup setsid "$PY" "$PROXY_PY" "$PROXY_SOCK" "$real_sock" >>"$PROXY_LOG" 2>&1 </dev/null 3>&- &
    echo $! >"$PROXY_DIR/api-compat-proxy.pid"
    for ((i = 0; i < 40; i++)); do
        proxy_ok && break
        sleep 0.25
    done
    proxy_ok || { tail -n 20 "$PROXY_LOG" >&2 || true; die "API-compat proxy did not come up"; }
    log "API-compat proxy started on $PROXY_SOCK (log: $PROXY_LOG)"
fi
echo "unix://$PROXY_SOCK" >&3
