#!/usr/bin/env bash
# The project's test command: formatting, lints, dependency rules and the full
# test suite (integration tests use PostgreSQL in Docker).
#   scripts/test.sh [extra args for cargo test]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    cargo_bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
    if [ -x "$cargo_bin/cargo" ]; then
        export PATH="$cargo_bin:$PATH"
    else
        echo "test.sh: cargo not found (PATH or $cargo_bin)" >&2
        exit 1
    fi
fi
export RUST_BACKTRACE=1

banner() { printf '\n==== %s ====\n' "$*"; }

banner "docker engine"
bash scripts/ensure-docker.sh

banner "postgres test image"
RMM_TEST_PG_IMAGE="$(bash scripts/ensure-postgres-image.sh)"
export RMM_TEST_PG_IMAGE
echo "RMM_TEST_PG_IMAGE=$RMM_TEST_PG_IMAGE"

banner "test tools: nginx, curl (reverse_proxy.rs, tls.rs), tmux (cli_shell.rs), asciinema and script (terminal recordings), systemd-analyze (server_image.rs), nats-server and haproxy (cluster.rs)"
# Debian's packages, installed when missing (as root, like scripts/ensure-docker.sh does
# docker.io). nginx-light is bookworm's smallest nginx; later releases have only `nginx`.
# The package must not start a system nginx on port 80: the test runs its own.
ensure_test_tools() {
    local missing=()
    [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    command -v asciinema >/dev/null 2>&1 || missing+=(asciinema)
    command -v script >/dev/null 2>&1 || missing+=(bsdutils)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    [ -x /usr/bin/tinyproxy ] || command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
    [ -x /usr/bin/nats-server ] || command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
    [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
    [ "${#missing[@]}" -eq 0 ] && { echo "test tools present"; return 0; }
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
    fi
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    local packages=("${missing[@]}")
    if [[ " ${missing[*]} " == *" nginx "* ]] && apt-cache show nginx-light >/dev/null 2>&1; then
        packages=("${missing[@]/#nginx/nginx-light}")
    fi
    local rc=0
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${packages[@]}" || rc=$?
    [ -n "$own_policy" ] && rm -f "$policy"
    return "$rc"
}
ensure_test_tools

banner "python test tools (scripts/ensure-py-tools.sh)"
RMM_TEST_PYTHON="$(bash scripts/ensure-py-tools.sh)"
export RMM_TEST_PYTHON
echo "RMM_TEST_PYTHON=$RMM_TEST_PYTHON"

banner "cargo fmt --all --check"
cargo fmt --all --check

banner "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

banner "dependency rules (scripts/check-deps.sh)"
bash scripts/check-deps.sh --self-test
bash scripts/check-deps.sh

# Bans (rsa, openssl, ...), licenses and sources (crates.io only), by the policy in deny.toml.
# Advisories need the advisory database from the network: not checked here. cargo-deny is
# built once per machine (several minutes on 2 cores) and then found on PATH.
CARGO_DENY_VERSION=0.20.2
banner "supply chain (cargo deny check bans licenses sources)"
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny $CARGO_DENY_VERSION"
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
cargo deny --version
cargo deny --locked check --hide-inclusion-graph bans licenses sources

banner "size and structure rules (scripts/check-size.py, scripts/check-modules.py)"
python3 scripts/check-size.py
python3 scripts/check-modules.py

# Containers of an earlier, killed run are removed now; those of this run at exit.
remove_test_containers() {
    docker ps -aq --filter label=rmm-tunnel-test | xargs -r docker rm -f >/dev/null 2>&1 || true
}
remove_test_containers
trap remove_test_containers EXIT

# The end-to-end tests run the real binaries: build them first.
banner "cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked

banner "cargo test --workspace --locked $*"
cargo test --workspace --locked --no-fail-fast "$@"

# Every frame fuzz target over its seed corpus (nightly, cargo-fuzz; the long runs are
# `scripts/fuzz.sh SECONDS`, see docs/fuzzing.md).
banner "fuzz smoke (scripts/fuzz.sh --smoke)"
bash scripts/fuzz.sh --smoke

# Benchmarks are not timed tests: the smoke run only proves every part still produces figures.
banner "benchmark smoke (bench/smoke.sh)"
bash bench/smoke.sh

# The web console in a real browser (Debian's chromium, Playwright), against the release
# binaries with real agents; about 25 s once the release build and the venv exist.
banner "browser tests (scripts/browser-tests.sh)"
bash scripts/browser-tests.sh

# A Python client generated from the committed OpenAPI document (openapi-python-client), and
# the whole technician flow through it, against the release binaries; a few seconds.
banner "generated Python client (scripts/python-client-tests.sh)"
bash scripts/python-client-tests.sh

# The API against its own document: schemathesis, every check, stateful, at the small size
# (about a minute, sandboxed; the long run is `scripts/contract-tests.sh --examples 1000`,
# see docs/contract-testing.md).
banner "contract tests (scripts/contract-tests.sh)"
bash scripts/contract-tests.sh
