#!/usr/bin/env bash
# Contract fuzzing of the HTTP API (issue 17): schemathesis, stateful, against the spec the
# RELEASE rmm-server serves (/api/v1/openapi.json), as an admin, with every check on, while a
# real rmm-agent is connected (tunnels open; commands, files and terminals reach it). Fails on
# any failure: a 5xx, an answer or a body the spec does not document, a valid input refused
# or an invalid one accepted, a 405 without `Allow`... (tests/python/contract.py).
#
#   scripts/contract-tests.sh                   the CI size (--examples 10: about a minute)
#   scripts/contract-tests.sh --examples 1000   the long run (docs/testing.md)
#   scripts/contract-tests.sh --seed 1234       replay a run (the seed is printed)
#
# Options: --examples N (cases per operation in the examples/coverage/fuzzing phases; the
# stateful phase then runs 0.6 s per example, at least 30 s, suites of 5 x N scenarios, at
# least 50), --stateful-seconds T, --stateful-examples S, --seed SEED.
#
# It runs in a sandbox (scripts/lib/sandbox.sh): its own network namespace with nothing but
# loopback, every file system read-only except its temp dir, its own PID namespace. What the
# fuzzer sends reaches a real agent (commands run, files are written), so none of it can touch
# this machine's files, processes or network. Needs root (as CI runs).
#
# Bounded: the whole run is killed after RMM_CONTRACT_TIMEOUT_SECS (default 900 + 6 s per
# example). With RMM_RELIABILITY_OUT set, appends its figures as JSON lines (part "contract").
# RMM_CONTRACT_KEEP=1 keeps the temp dir (server and agent logs, schemathesis' reports).
# RMM_BIN_DIR=target/debug runs the programs there instead of building the release ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source scripts/lib/binaries.sh
source scripts/lib/sandbox.sh

EXAMPLES=10
STATEFUL=()
SEED=()
while [ $# -gt 0 ]; do
    case "$1" in
        --examples) EXAMPLES="$2"; shift 2 ;;
        --stateful-examples) STATEFUL+=(--stateful-examples "$2"); shift 2 ;;
        --stateful-seconds) STATEFUL+=(--stateful-seconds "$2"); shift 2 ;;
        --seed) SEED=(--seed "$2"); shift 2 ;;
        *) echo "contract-tests: unknown argument $1 (--examples N, --stateful-seconds T, --stateful-examples S, --seed SEED)" >&2; exit 2 ;;
    esac
done
case "$EXAMPLES" in
    ''|*[!0-9]*|0) echo "contract-tests: --examples takes a positive number" >&2; exit 2 ;;
esac

PYTHON="${RMM_TEST_PYTHON:-}"
[ -n "$PYTHON" ] || PYTHON="$(bash scripts/ensure-py-tools.sh)"
[ -x "$(dirname "$PYTHON")/schemathesis" ] || {
    echo "contract-tests: $(dirname "$PYTHON")/schemathesis missing; run scripts/ensure-py-tools.sh" >&2
    exit 1
}
release_binaries

WORK=$(mktemp -d -t rmm-contract.XXXXXX)
cleanup() { [ "${RMM_CONTRACT_KEEP:-}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

BUDGET="${RMM_CONTRACT_TIMEOUT_SECS:-$((900 + 6 * EXAMPLES))}"
started=$(date +%s)
status=0
timeout --kill-after=10 "$BUDGET" \
    bash -c "source '$ROOT/scripts/lib/sandbox.sh'; sandboxed \"\$@\"" contract "$WORK" \
    "$PYTHON" "$ROOT/tests/python/contract.py" --bin "$BIN_DIR" --work "$WORK" \
    --examples "$EXAMPLES" "${STATEFUL[@]}" "${SEED[@]}" --summary "$WORK/summary.json" \
    || status=$?
elapsed=$(( $(date +%s) - started ))
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "contract-tests: not done within $BUDGET s (RMM_CONTRACT_TIMEOUT_SECS); killed" >&2
fi
if [ "$status" != 0 ]; then
    echo "contract-tests: FAILED (exit $status) after $elapsed s; logs and reports in $WORK" >&2
    RMM_CONTRACT_KEEP=1
    exit "$status"
fi

reproduce="scripts/contract-tests.sh --examples $EXAMPLES"
[ ${#STATEFUL[@]} -eq 0 ] || reproduce+=" ${STATEFUL[*]}"
[ ${#SEED[@]} -eq 0 ] || reproduce+=" ${SEED[*]}"
"$PYTHON" - "$WORK/summary.json" "$reproduce" <<'EOF'
import json, os, sys

summary = json.load(open(sys.argv[1]))
reproduce = sys.argv[2]
ops, st = summary["operations"], summary["stateful"]
rows = [
    (
        "schemathesis, every check, phases examples + coverage + fuzzing, as an admin, against the served spec, a real agent connected",
        f"{ops['requests']} requests over {ops['operations']}/{ops['operations_documented']} operations "
        f"({ops['examples']} cases per operation): {ops['server_errors']} server errors, "
        f"{sum(ops['failures'].values())} contract failures (schema, status, headers, content type)",
    ),
    (
        "schemathesis stateful: call sequences linked by the ids answers carry (open a tunnel -> run a command -> read it, terminals, files, the admin's resources)",
        f"{st['scenarios']} scenarios in {st['seconds']} s, {st['requests']} requests, {st['links_followed']} links followed to a 2xx, "
        f"{st['open_command_read']} open -> command -> read: {st['server_errors']} server errors, "
        f"{sum(st['failures'].values())} contract failures",
    ),
]
print(f"contract tests: {rows[0][1]}; {rows[1][1]}; {summary['seconds']} s")
out = os.environ.get("RMM_RELIABILITY_OUT")
if out:
    with open(out, "a") as f:
        for check, figure in rows:
            f.write(json.dumps({"part": "contract", "check": check, "figure": figure,
                                "reproduce": reproduce, "passed": True}) + "\n")
EOF
echo "contract tests: $elapsed s"
