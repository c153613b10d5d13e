#!/usr/bin/env bash
# The generated-client flow (issue 16): generates a Python client with openapi-python-client
# from the COMMITTED spec (openapi/openapi.json; bin/server/tests/openapi_spec.rs keeps it
# equal to the served one) into a temp folder, then runs tests/python/client_flow.py through
# it against the RELEASE rmm-server and rmm-agent (SQLite in a temp dir, 127.0.0.1): login,
# agents, open, command, its result, close, audit, each result asserted as its generated type.
# A lost operationId, an enum turned back into a string or a model the generator cannot read
# fails it. RMM_PYCLIENT_KEEP=1 keeps the temp dirs (generated client; server and agent logs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source scripts/lib/binaries.sh

PYTHON="${RMM_TEST_PYTHON:-}"
[ -n "$PYTHON" ] || PYTHON="$(bash scripts/ensure-py-tools.sh)"
GENERATOR="$(dirname "$PYTHON")/openapi-python-client"
[ -x "$GENERATOR" ] || {
    echo "python-client-tests: $GENERATOR missing; run scripts/ensure-py-tools.sh" >&2
    exit 1
}

release_binaries

GEN=$(mktemp -d -t rmm-pyclient-gen.XXXXXX)
cleanup() { [ "${RMM_PYCLIENT_KEEP:-}" = 1 ] || rm -rf "$GEN"; }
trap cleanup EXIT
# No post hooks (they run ruff, which the venv does not have). A recording is served as
# what it is, application/x-asciicast, a media type the generator does not know: it is read as
# bytes, as it would be as application/octet-stream.
printf 'post_hooks: []\ncontent_type_overrides:\n  application/x-asciicast: application/octet-stream\n' >"$GEN/config.yaml"
# Warnings (a schema it cannot read, a response it drops) fail the test: the spec must
# generate whole.
"$GENERATOR" generate --path "$ROOT/openapi/openapi.json" --meta none \
    --output-path "$GEN/rmm_client" --config "$GEN/config.yaml" 2>&1 | tee "$GEN/generate.log"
if grep -qi "warning\|unable to\|cannot" "$GEN/generate.log"; then
    echo "python-client-tests: openapi-python-client could not read all of openapi/openapi.json (above)" >&2
    exit 1
fi

started=$(date +%s)
"$PYTHON" "$ROOT/tests/python/client_flow.py" --client-dir "$GEN" --bin "$BIN_DIR"
echo "python client tests: $(( $(date +%s) - started )) s"
