#!/usr/bin/env bash
# Frame fuzzing (cargo-fuzz, nightly): every target in fuzz/ for SECONDS each (default 300),
# then target/fuzz-report.json: per target, the executions (libFuzzer's final
# stat::number_of_executed_units), the seconds, the crashes (new files in
# fuzz/artifacts/<target>/) and the command that reproduces the run or each crash.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#   scripts/fuzz.sh --smoke      every target over its seed corpus only (CI, scripts/test.sh);
#                                without nightly, the same seeds through the same target bodies
#                                as a plain test (fuzz/tests/corpus.rs)
# Exits non-zero when any target crashed (or did not run). See docs/fuzzing.md.
# RMM_FUZZ_SANITIZER: cargo-fuzz's --sanitizer (default none: the code under test forbids
# `unsafe`, and without ASan a target runs about twice as fast); RMM_FUZZ_TARGETS: a
# space-separated subset of the targets.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

mode=timed seconds=300
case "${1:-}" in
    --smoke) mode=smoke seconds=0 ;;
    "") ;;
    *[!0-9]* | 0)
        echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET | --smoke]" >&2
        exit 2
        ;;
    *) seconds=$1 ;;
esac

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    if [ "$mode" = smoke ]; then
        # No libFuzzer without nightly (a machine may have one toolchain only): the same target
        # bodies and properties over the same seeds, as a plain test on this toolchain.
        echo "fuzz.sh: no nightly toolchain: replaying every seed through every target on $(rustc --version) (cargo test --test corpus; no coverage-guided fuzzing)"
        cargo test --locked --manifest-path fuzz/Cargo.toml --test corpus -- --nocapture
        exit 0
    fi
    echo "fuzz.sh: cargo-fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

sanitizer="${RMM_FUZZ_SANITIZER:-none}"
fuzz=(cargo +nightly fuzz)
targets="${RMM_FUZZ_TARGETS:-$("${fuzz[@]}" list | tr '\n' ' ')}"
# libFuzzer writes what it finds into the first corpus folder: a scratch one, so the committed
# seeds (the second) stay as they are.
scratch=target/fuzz-corpus logs=target/fuzz-logs
mkdir -p "$scratch" "$logs"

echo "fuzz.sh: building ($sanitizer sanitizer): $targets"
"${fuzz[@]}" build --sanitizer "$sanitizer"

results="$logs/results.tsv"
: >"$results"
for t in $targets; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    stamp="$logs/$t.stamp"
    touch "$stamp"
    if [ "$mode" = smoke ]; then
        # -runs=0: the seeds are executed (and their properties checked), nothing mutated.
        corpora=("fuzz/corpus/$t") flags=(-runs=0)
    else
        corpora=("$scratch/$t" "fuzz/corpus/$t") flags=("-max_total_time=$seconds")
    fi
    flags+=(-print_final_stats=1 -timeout=10)
    command="cargo +nightly fuzz run --sanitizer $sanitizer $t ${corpora[*]} -- ${flags[*]}"
    echo "fuzz.sh: $command"
    start=$(date +%s)
    rc=0
    "${fuzz[@]}" run --sanitizer "$sanitizer" "$t" "${corpora[@]}" -- "${flags[@]}" \
        >"$logs/$t.log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logs/$t.log" | tail -n1)
    crashes=$(find "fuzz/artifacts/$t" -type f -newer "$stamp" | sort | tr '\n' ' ')
    if [ "$rc" -ne 0 ] && [ -z "$crashes" ]; then
        tail -n 20 "$logs/$t.log" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rc" "${runs:-0}" "$elapsed" "$command" "$crashes" >>"$results"
    echo "fuzz.sh: $t: ${runs:-0} executions in ${elapsed}s, exit $rc${crashes:+, crashes: $crashes}"
done

python3 - "$results" "$mode" "$seconds" "$sanitizer" <<'PY'
import json, subprocess, sys
results, mode, seconds, sanitizer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
targets = []
for line in open(results, encoding="utf-8"):
    name, rc, runs, elapsed, command, crashes = line.rstrip("\n").split("\t")
    files = crashes.split()
    targets.append({
        "target": name,
        "executions": int(runs),
        "seconds": int(elapsed),
        "crashes": len(files),
        "crash_files": files,
        "exit_code": int(rc),
        "command": command,
        "reproduce": [f"cargo +nightly fuzz run --sanitizer {sanitizer} {name} {f}" for f in files],
        "log": f"target/fuzz-logs/{name}.log",
    })
report = {
    "mode": mode,
    "seconds_per_target": seconds,
    "sanitizer": sanitizer,
    "commit": out("git", "rev-parse", "HEAD"),
    "toolchain": out("rustc", "+nightly", "--version"),
    "finished": out("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
    "reproduce_all": "scripts/fuzz.sh --smoke" if mode == "smoke" else f"scripts/fuzz.sh {seconds}",
    "total_executions": sum(t["executions"] for t in targets),
    "total_crashes": sum(t["crashes"] for t in targets),
    "targets": targets,
}
with open("target/fuzz-report.json", "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
failed = [t["target"] for t in targets if t["exit_code"] != 0 or t["crashes"]]
print(f"fuzz.sh: {report['total_executions']} executions, {report['total_crashes']} crashes; "
      f"target/fuzz-report.json" + (f"; FAILED: {' '.join(failed)}" if failed else ""))
sys.exit(1 if failed else 0)
PY
