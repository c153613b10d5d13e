#!/usr/bin/env bash
# Builds a container image of rmm-server from its release binary, on a Debian base made
# locally with debootstrap (no registry needed), the way the PostgreSQL test image is made.
# Prints the image's name on stdout (logs go to stderr).
#
#   scripts/build-image.sh [--binary PATH] [--image NAME]
#
#   --binary PATH   the rmm-server to put in it (default: target/release/rmm-server, built
#                   with `cargo build --release --locked -p rmm-server` first)
#   --image NAME    the image's name (default: $RMM_SERVER_IMAGE, else rmm-server:local)
#
# The image runs `rmm-server serve` as user `rmm` (uid 10001) in /var/lib/rmm-server (its
# data folder, a volume), listening on 0.0.0.0:8080; configure it with environment variables
# or a config file mounted at /etc/rmm/server.toml (RMM_CONFIG). Run it, e.g.:
#
#   docker run -d --name rmm -p 8080:8080 -v rmm-data:/var/lib/rmm-server \
#       -e DATABASE_URL=postgres://... -e RMM_JWT_SECRET=... rmm-server:local
#
# The Debian base (minbase + ca-certificates) is built once and kept in
# /var/cache/rmm-debootstrap/; the image is rebuilt only when the binary or this recipe changes.
set -euo pipefail
exec 3>&1 1>&2
log() { echo "[build-image] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${RMM_SERVER_IMAGE:-rmm-server:local}"
BINARY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
        --image) IMAGE="${2:?--image needs a name}"; shift 2 ;;
        *) die "unknown argument $1 (see the comment at the top of $0)" ;;
    esac
done
if [ -z "$BINARY" ]; then
    log "cargo build --release --locked -p rmm-server"
    (cd "$ROOT" && cargo build --release --locked -p rmm-server >&2)
    BINARY="$ROOT/target/release/rmm-server"
fi
[ -x "$BINARY" ] || die "$BINARY is not an executable"
command -v docker >/dev/null 2>&1 || die "docker is missing: run scripts/ensure-docker.sh"

SUITE=bookworm
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
RECIPE="$(cat "$SELF" "$BINARY" | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{ index .Config.Labels "rmm.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$RECIPE" ]; then
    log "$IMAGE is current (recipe $RECIPE)"
    echo "$IMAGE" >&3
    exit 0
fi

CACHE=/var/cache/rmm-debootstrap
# Named by its recipe version: change the suffix when the base-building part below changes.
BASE="$CACHE/server-base-$SUITE-v2.tar"
mkdir -p "$CACHE"
exec 9>/tmp/rmm-server-image.lock
flock 9
if [ ! -s "$BASE" ]; then
    [ "$(id -u)" -eq 0 ] || die "building the Debian base needs root (debootstrap)"
    export PATH="$PATH:/usr/sbin:/sbin"
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >&2
    fi
    # shellcheck source=lib/debian-mirror.sh
    source "$ROOT/scripts/lib/debian-mirror.sh"
    MIRROR="$(debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/rmm-server-rootfs.XXXXXX)"
    trap 'rm -rf --one-file-system "$rootfs"' EXIT
    log "debootstrap $SUITE (minbase + ca-certificates) from $MIRROR"
    debootstrap --variant=minbase --include=ca-certificates --cache-dir="$CACHE" \
        "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log"; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/debootstrap
    chroot "$rootfs" groupadd --gid 10001 rmm
    chroot "$rootfs" useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/rmm-server \
        --shell /usr/sbin/nologin rmm
    install -d -m 0700 -o 10001 -g 10001 "$rootfs/var/lib/rmm-server"
    install -d -m 0755 "$rootfs/etc/rmm"
    tar -C "$rootfs" -cf "$BASE.partial" . && mv "$BASE.partial" "$BASE"
    rm -rf --one-file-system "$rootfs"
    trap - EXIT
fi

# The base plus the binary, as one imported layer.
work="$(mktemp -d /var/tmp/rmm-server-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp "$BASE" "$work/image.tar"
install -D -m 0755 "$BINARY" "$work/usr/local/bin/rmm-server"
tar -C "$work" -rf "$work/image.tar" --owner=0 --group=0 ./usr/local/bin/rmm-server
log "docker import $IMAGE"
docker import \
    -c 'USER rmm' \
    -c 'WORKDIR /var/lib/rmm-server' \
    -c 'ENV RMM_LISTEN=0.0.0.0:8080 RMM_DATA_DIR=/var/lib/rmm-server' \
    -c 'EXPOSE 8080' \
    -c 'VOLUME /var/lib/rmm-server' \
    -c 'ENTRYPOINT ["/usr/local/bin/rmm-server"]' \
    -c 'CMD ["serve"]' \
    -c "LABEL rmm.recipe=$RECIPE" \
    "$work/image.tar" "$IMAGE" >&2
log "built $IMAGE ($(docker image inspect -f '{{ .Size }}' "$IMAGE") bytes)"
echo "$IMAGE" >&3
