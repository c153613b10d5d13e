#!/usr/bin/env bash
# Regenerates the committed OpenAPI document (openapi/openapi.json) from the server's code:
# runs the test that guards it, in its write mode.
#   scripts/update-openapi.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

UPDATE_OPENAPI=1 cargo test -p rmm-server --test openapi_spec -- --nocapture
echo "update-openapi: wrote openapi/openapi.json"
