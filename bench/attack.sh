#!/usr/bin/env bash
# The front-door attacks of the "Internet-facing hardening" issue, replayed against the
# release rmm-server (each on a fresh server on SQLite, at a soft open-file limit of 1024 as
# under systemd), printed beside the figures the issue reported before the hardening.
# Not a timed test: it prints figures and asserts nothing. See bench/README.md.
#
#   bench/attack.sh                       build (release) and run every attack
#   bench/attack.sh --no-build            use the binaries already in target/release
#   bench/attack.sh --debug               use the debug build
#   bench/attack.sh -- --brute-secs 20    pass options to rmm-attack (see its --help)
#
# Everything talks to 127.0.0.1 only; every loop is bounded in count and time (about two
# minutes with the defaults, most of it the 60 s brute-force run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

PROFILE=release
BUILD=1
while [ "$#" -gt 0 ]; do
    case "$1" in
        --debug) PROFILE=debug ;;
        --no-build) BUILD=0 ;;
        --) shift; break ;;
        -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "attack.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$BUILD" = 1 ]; then
    flags=()
    [ "$PROFILE" = release ] && flags=(--release)
    cargo build "${flags[@]}" -p rmm-server -p rmm-bench --bins >&2
fi
dir="${CARGO_TARGET_DIR:-target}/$PROFILE"
exec "$dir/rmm-attack" --server "$dir/rmm-server" "$@"
