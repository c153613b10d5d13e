#!/usr/bin/env bash
# CI smoke test of the benchmark suite: every part at tiny sizes on the debug build, so the
# instruments keep working. It asserts only that each part produced figures of ours (never a
# figure's value: timings on a shared CI machine are noise, and OpenSSH or PostgreSQL being
# unavailable only leaves their rows "not available"). Under two minutes once the debug
# binaries are built (scripts/test.sh builds them before).
#
#   bench/smoke.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="$(mktemp -d /tmp/rmm-bench-smoke.XXXXXX)"
trap 'rm -rf "$out"' EXIT

# Bounded even if something hangs: run.sh cleans up its processes on TERM.
timeout --kill-after=15 600 bash bench/run.sh --smoke --debug \
    --results "$out/results" --report "$out/BENCHMARKS.md"
cat "$out/BENCHMARKS.md"
"${CARGO_TARGET_DIR:-target}/debug/rmm-bench" check --results "$out/results" \
    --parts roundtrip,stream,files,sim,opens,terminal,agent
