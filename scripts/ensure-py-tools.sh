#!/usr/bin/env bash
# Python tools the tests use, from PyPI, in one venv: target/py-venv (made once, kept).
#   prometheus_client     - parses /metrics with Prometheus' own text parser (tests/tests/metrics.rs)
#   openapi-python-client - generates a client from openapi/openapi.json (tests/tests/python_client.rs)
#   httpx, attrs, python-dateutil - what the generated client imports
#   schemathesis          - contract fuzzing against the served spec (scripts/contract-tests.sh)
# Prints the venv's python. The tests find it as RMM_TEST_PYTHON (else target/py-venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/py-venv"
PACKAGES=(
    "prometheus_client==0.26.0"
    "openapi-python-client==0.29.1"
    "httpx==0.28.1"
    "attrs==26.1.0"
    "python-dateutil==2.9.0.post0"
    "schemathesis==4.32.5"
)
stamp="$VENV/.packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PACKAGES[*]}" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >&2
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q "${PACKAGES[@]}" >&2
    echo "${PACKAGES[*]}" >"$stamp"
fi
echo "$VENV/bin/python"
