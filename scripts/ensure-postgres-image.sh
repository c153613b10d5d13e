#!/usr/bin/env bash
# Print the Docker image reference that the integration tests should use for
# PostgreSQL. Only that one line goes to stdout; all logging goes to stderr.
#
#   1. $RMM_TEST_PG_IMAGE (default postgres:16) if it exists locally or can be
#      pulled within 60 s;
#   2. otherwise a locally built image $RMM_TEST_PG_LOCAL_IMAGE (default
#      rmm-postgres:15-bookworm): Debian bookworm (minbase, via debootstrap from
#      the machine's Debian mirror) + postgresql-15 + an entrypoint that behaves
#      like the official image's for POSTGRES_USER / POSTGRES_PASSWORD /
#      POSTGRES_DB. Built once, reused afterwards (rebuilt only when this
#      script's recipe changes).
#
# Needs a running Docker engine (scripts/ensure-docker.sh) and root for the build.
set -euo pipefail

# Everything goes to stderr; the final answer is written to the saved stdout (fd 3).
exec 3>&1 1>&2
log() { echo "[ensure-postgres-image] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
answer() { echo "$1" >&3; exit 0; }

PUBLIC_IMAGE="${RMM_TEST_PG_IMAGE:-postgres:16}"
LOCAL_IMAGE="${RMM_TEST_PG_LOCAL_IMAGE:-rmm-postgres:15-bookworm}"
PULL_TIMEOUT="${RMM_TEST_PG_PULL_TIMEOUT:-60}"
SUITE=bookworm
PG_MAJOR=15

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Identity of the build recipe: any change to this script forces a rebuild.
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
RECIPE="$(sha256sum "$SELF" | cut -c1-16)"

# --- 1. the requested (public) image ------------------------------------------
if image_exists "$PUBLIC_IMAGE"; then
    log "using local image $PUBLIC_IMAGE"
    answer "$PUBLIC_IMAGE"
fi

local_image_current() {
    image_exists "$LOCAL_IMAGE" || return 1
    local have
    have="$(docker image inspect -f '{{ index .Config.Labels "rmm.recipe" }}' "$LOCAL_IMAGE" 2>/dev/null || true)"
    [ "$have" = "$RECIPE" ]
}

# A current locally built fallback wins over a (slow, usually failing) pull
# only when the public image is the default one; an explicitly requested image
# is always tried first.
if [ "$PUBLIC_IMAGE" != "$LOCAL_IMAGE" ]; then
    log "pulling $PUBLIC_IMAGE (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull -q "$PUBLIC_IMAGE" >&2 2>&1 && image_exists "$PUBLIC_IMAGE"; then
        log "pulled $PUBLIC_IMAGE"
        answer "$PUBLIC_IMAGE"
    fi
    log "could not pull $PUBLIC_IMAGE; falling back to locally built $LOCAL_IMAGE"
fi

# --- 2. the locally built fallback --------------------------------------------
# Serialise concurrent builds (two test runs at once).
LOCK=/tmp/rmm-postgres-image.lock
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another build of $LOCAL_IMAGE is running; waiting for it"
    flock 9
fi

if local_image_current; then
    log "using local image $LOCAL_IMAGE (recipe $RECIPE)"
    answer "$LOCAL_IMAGE"
fi
if image_exists "$LOCAL_IMAGE"; then
    log "$LOCAL_IMAGE exists but was built from another recipe; rebuilding"
fi

[ "$(id -u)" -eq 0 ] || die "building $LOCAL_IMAGE needs root (debootstrap)"
export PATH="$PATH:/usr/sbin:/sbin"

# shellcheck source=lib/debian-mirror.sh
source "$(dirname "$SELF")/lib/debian-mirror.sh"

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap
fi

MIRROR="$(debian_mirror)"
ROOTFS="$(mktemp -d /var/tmp/rmm-pg-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$ROOTFS"; }
trap cleanup EXIT
# Keep downloaded .debs between builds on the same machine.
CACHE=/var/cache/rmm-debootstrap
mkdir -p "$CACHE"

START=$SECONDS
log "building $LOCAL_IMAGE: debootstrap $SUITE (minbase + postgresql-$PG_MAJOR) from $MIRROR"
debootstrap --variant=minbase --include="postgresql-$PG_MAJOR" --cache-dir="$CACHE" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.debootstrap.log" 2>&1 \
    || { tail -n 40 "$ROOTFS.debootstrap.log"; [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 40 "$ROOTFS/debootstrap/debootstrap.log"; rm -f "$ROOTFS.debootstrap.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.debootstrap.log"
log "debootstrap done in $((SECONDS - START))s"

PGBIN="/usr/lib/postgresql/$PG_MAJOR/bin"
[ -x "$ROOTFS$PGBIN/postgres" ] || die "postgres binary missing in rootfs"

# Trim: the cluster the package's postinst created, docs, caches, apt lists,
# translations, and the LLVM JIT (the server runs fine without it; jit is off).
rm -rf "$ROOTFS/var/lib/postgresql/$PG_MAJOR" "$ROOTFS/etc/postgresql/$PG_MAJOR" \
       "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log \
       "$ROOTFS/usr/lib/postgresql/$PG_MAJOR/lib/llvmjit.so" \
       "$ROOTFS/usr/lib/postgresql/$PG_MAJOR/lib/llvmjit_types.bc" \
       "$ROOTFS/usr/lib/postgresql/$PG_MAJOR/lib/bitcode" \
       "$ROOTFS"/usr/lib/*-linux-gnu/libLLVM-*.so* "$ROOTFS"/usr/lib/*-linux-gnu/libz3.so* \
       "$ROOTFS"/debootstrap
# Make sure no server binary or module needed what was trimmed (libLLVM, libz3).
missing="$(chroot "$ROOTFS" /bin/sh -c \
    "for f in $PGBIN/* /usr/lib/postgresql/$PG_MAJOR/lib/*.so; do ldd \"\$f\" 2>/dev/null | grep 'not found' | sed \"s|^|\$f: |\"; done" || true)"
[ -z "$missing" ] || die "unresolved libraries after trimming:"$'\n'"$missing"
mkdir -p "$ROOTFS/var/lib/postgresql/data" "$ROOTFS/var/run/postgresql"
chroot "$ROOTFS" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

cat >"$ROOTFS/usr/local/bin/rmm-pg-entrypoint" <<'ENTRYPOINT'
#!/bin/bash
# Minimal stand-in for the official postgres image's docker-entrypoint.sh.
# Env: POSTGRES_USER (postgres), POSTGRES_PASSWORD (postgres), POSTGRES_DB
# (= user), POSTGRES_HOST_AUTH_METHOD (scram-sha-256), POSTGRES_INITDB_ARGS, PGDATA.
# Args: none / "postgres [opts]" / "-c x=y ..." run the server (extra opts are
# appended, so they override the defaults); anything else is exec'd as is.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
case ":$PATH:" in *":$PGBIN:"*) ;; *) export PATH="$PGBIN:$PATH" ;; esac
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "$#" -eq 0 ] || [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 2775 /var/run/postgresql
    export HOME=/var/lib/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "rmm-pg-entrypoint: initialising cluster in $PGDATA (user $POSTGRES_USER, db $POSTGRES_DB)" >&2
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    # shellcheck disable=SC2086
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="$AUTH" --encoding=UTF8 --locale=C.UTF-8 \
        --no-sync ${POSTGRES_INITDB_ARGS:-} >&2
    rm -f "$pwfile"
    {
        echo
        echo "# rmm-pg-entrypoint: accept connections from any host"
        echo "host all all all $AUTH"
    } >>"$PGDATA/pg_hba.conf"

    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user backend: no postmaster, no sockets, so nothing can connect
        # (or see a "ready" line) before the real server below is up.
        db_ident="\"${POSTGRES_DB//\"/\"\"}\""
        errlog="$(mktemp)"
        echo "CREATE DATABASE $db_ident;" \
            | postgres --single -D "$PGDATA" -c fsync=off -c log_checkpoints=off postgres \
                >/dev/null 2>"$errlog"
        if grep -qE '(ERROR|FATAL|PANIC):' "$errlog"; then
            cat "$errlog" >&2
            echo "rmm-pg-entrypoint: creating database $POSTGRES_DB failed" >&2
            exit 1
        fi
        rm -f "$errlog"
    fi
    echo "rmm-pg-entrypoint: init done; starting server" >&2
fi

exec postgres -D "$PGDATA" \
    -c listen_addresses='*' -c port=5432 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=500 -c jit=off \
    "$@"
ENTRYPOINT
chmod 755 "$ROOTFS/usr/local/bin/rmm-pg-entrypoint"

OLD_ID="$(docker image inspect -f '{{.Id}}' "$LOCAL_IMAGE" 2>/dev/null || true)"
log "importing rootfs as $LOCAL_IMAGE"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    -c 'EXPOSE 5432' \
    -c "ENV PATH=$PGBIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    -c 'ENV PGDATA=/var/lib/postgresql/data' \
    -c 'ENV LANG=C.UTF-8' \
    -c "LABEL rmm.recipe=$RECIPE" \
    -c 'ENTRYPOINT ["/usr/local/bin/rmm-pg-entrypoint"]' \
    -c 'CMD ["postgres"]' \
    - "$LOCAL_IMAGE" >&2
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(docker image inspect -f '{{.Id}}' "$LOCAL_IMAGE")" ]; then
    docker image rm "$OLD_ID" >/dev/null 2>&1 || true   # stale build; ignore if still in use
fi
log "built $LOCAL_IMAGE in $((SECONDS - START))s ($(docker image inspect -f '{{.Size}}' "$LOCAL_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
answer "$LOCAL_IMAGE"
