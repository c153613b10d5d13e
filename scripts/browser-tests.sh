#!/usr/bin/env bash
# The web console's browser tests (tests/browser/, issue 14): Debian's chromium driven by
# Playwright for Python (no browser download: the Debian build is launched by path), against
# the RELEASE rmm-server and rmm-agent, on SQLite in a temp dir on 127.0.0.1.
#
# Installs what is missing (apt: chromium chromium-driver python3-venv; a venv under
# target/browser-venv with playwright and pytest), builds the binaries, runs the tests.
# Screenshots: target/browser-screenshots/<test>.png. Figures: target/browser-bench.json.
# Extra arguments go to pytest (e.g. -k terminal). RMM_BROWSER_KEEP=1 keeps the temp dir
# (server and agent logs) for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/lib/binaries.sh

PLAYWRIGHT_VERSION=1.65.2
PYTEST_VERSION=9.0.1
VENV="$ROOT/target/browser-venv"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! "$VENV/bin/python" -c "import playwright, pytest" >/dev/null 2>&1; then
    echo "creating $VENV (playwright $PLAYWRIGHT_VERSION, pytest $PYTEST_VERSION)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # No `playwright install`: the tests launch /usr/bin/chromium.
    "$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION" "pytest==$PYTEST_VERSION"
fi

release_binaries
export RMM_BROWSER_BIN="${RMM_BROWSER_BIN:-$BIN_DIR}"

rm -rf "$ROOT/target/browser-screenshots"
started=$(date +%s)
# The fixtures start and stop the server and agents; they run in their own process groups,
# ended by the fixtures (also on a failed test).
status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -v -s "$ROOT/tests/browser" "$@" || status=$?
echo "browser tests: $(( $(date +%s) - started )) s; screenshots in target/browser-screenshots/"
exit $status
