#!/usr/bin/env bash
# CI smoke test of the benchmark suite: every part at tiny sizes on the debug build, so the
# instruments keep working. It asserts only that each part produced figures of ours (never a
# figure's value: timings on a shared CI machine are noise, and OpenSSH or PostgreSQL being
# unavailable only leaves their rows "not available"), then the storms and the soak at tiny
# sizes, which do check (below). Under three minutes once the debug binaries are built
# (scripts/test.sh builds them before).
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
bench="${CARGO_TARGET_DIR:-target}/debug/rmm-bench"
"$bench" check --results "$out/results" \
    --parts roundtrip,stream,files,sim,opens,terminal,agent,cluster

# The storms and the soak of scripts/storms.sh at tiny sizes (about a minute). Unlike the
# figures above these are checks of correctness — every agent back, every byte delivered or
# an explicit too-slow close, nothing leaked — so a failure fails the smoke. The restart
# storm is part 4's run above, judged; the others run here.
"$bench" storm-check --measurement "$out/results/sim-1.json" \
    --load "$(cut -d' ' -f1 /proc/loadavg)" --reproduce "scripts/storms.sh --parts restart --debug --smoke"
timeout --kill-after=15 300 bash scripts/storms.sh --smoke --debug --no-build --parts watchers,soak
