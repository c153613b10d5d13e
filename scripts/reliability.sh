#!/usr/bin/env bash
# The reliability suite in one command; writes RELIABILITY.md (issue 17).
#
#   scripts/reliability.sh            the long runs: fuzz 300 s per target, contract 1000
#                                     examples per operation, the fault tests, the storms at
#                                     full size (~19k agents), a 30-minute soak
#   scripts/reliability.sh --quick    the same parts at CI sizes (a few minutes)
# Options (after the mode): --fuzz-seconds N, --contract-examples N, --soak-minutes N,
#   --only "PART ..." (of: fuzz contract faults storms soak), --report FILE (default
#   RELIABILITY.md).
#
# Every part appends its passed checks to target/reliability/PART.jsonl (RMM_RELIABILITY_OUT:
# rmm_e2e::reliability::record in the Rust tests, the same JSON lines from the scripts); a
# part that fails adds a failed row naming its log (target/reliability/PART.log), and the
# tests that failed by name. Each part's run (command, time, load average) is kept beside its
# rows in PART.meta.json, so `--only` reruns one part and the report keeps the others' last
# figures. scripts/reliability-report.py renders them all. Exits non-zero when any check
# failed; the report is written either way. Run it on a quiet machine: the storm and soak
# figures depend on it (the load average of each part is printed in the report).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
if ! command -v cargo >/dev/null 2>&1; then
    export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

log() { printf '[reliability] %s\n' "$*" >&2; }

MODE=full
FUZZ_SECONDS=300
CONTRACT_EXAMPLES=1000
SOAK_MINUTES=30
ONLY="fuzz contract faults storms soak"
REPORT="$ROOT/RELIABILITY.md"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick; FUZZ_SECONDS=smoke; CONTRACT_EXAMPLES=""; SOAK_MINUTES=1 ;;
        --fuzz-seconds) FUZZ_SECONDS="$2"; shift ;;
        --contract-examples) CONTRACT_EXAMPLES="$2"; shift ;;
        --soak-minutes) SOAK_MINUTES="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --report) REPORT="$2"; shift ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) log "unknown argument: $1 (see --help)"; exit 2 ;;
    esac
    shift
done
for part in $ONLY; do
    case "$part" in
        fuzz | contract | faults | storms | soak) ;;
        *) log "--only: unknown part '$part' (fuzz contract faults storms soak)"; exit 2 ;;
    esac
done

OUT="$ROOT/target/reliability"
mkdir -p "$OUT"
log "mode $MODE, parts: $ONLY; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# A failed row for a part that did not finish, and one per test it names as failed.
failed_row() {
    local part="$1" check="$2" figure="$3" reproduce="$4"
    python3 - "$part" "$check" "$figure" "$reproduce" >>"$OUT/$part.jsonl" <<'PY'
import json, sys
part, check, figure, reproduce = sys.argv[1:]
print(json.dumps({"part": part, "check": check, "figure": figure,
                  "reproduce": reproduce, "passed": False}))
PY
}

# PART.meta.json: how and when this part ran, on what machine and commit, under what load.
write_meta() {
    python3 - "$OUT/$1.meta.json" "$MODE" "$2" "$3" "$4" "$5" <<'PY'
import json, os, subprocess, sys
path, mode, command, started, load_start, seconds = sys.argv[1:]
def out(*args):
    try:
        return subprocess.check_output(args, text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
dirty = out("git", "status", "--porcelain", "--untracked-files=no") != ""
mem_kib = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:")), 0)
with open(path, "w", encoding="utf-8") as f:
    json.dump({
        "mode": mode,
        "command": command,
        "started": started,
        "seconds": int(seconds),
        "commit": out("git", "rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if dirty else ""),
        "load_at_start": load_start,
        "load_at_end": " ".join(open("/proc/loadavg").read().split()[:3]),
        "cpus": os.cpu_count(),
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
    }, f)
PY
}

run_part() {
    local part="$1" reproduce="$2"
    shift 2
    local logfile="$OUT/$part.log"
    log "$part: $reproduce (log: ${logfile#"$ROOT"/})"
    export RMM_RELIABILITY_OUT="$OUT/$part.jsonl"
    : >"$RMM_RELIABILITY_OUT"
    local started=$SECONDS rc=0 started_at load_at_start
    started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    load_at_start="$(cut -d' ' -f1-3 /proc/loadavg)"
    "$@" >"$logfile" 2>&1 || rc=$?
    log "$part: exit $rc after $((SECONDS - started)) s"
    write_meta "$part" "$reproduce" "$started_at" "$load_at_start" "$((SECONDS - started))"
    if [ "$rc" -ne 0 ]; then
        # libtest's "test NAME ... FAILED" lines: one row per failed test.
        grep -E '^test .* \.\.\. FAILED$' "$logfile" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' |
            while read -r name; do
                failed_row "$part" "test \`$name\`" "FAILED (see ${logfile#"$ROOT"/})" "$reproduce"
            done
        failed_row "$part" "$part run" "exit code $rc; log ${logfile#"$ROOT"/}" "$reproduce"
    fi
}

wants() { [[ " $ONLY " == *" $1 "* ]]; }

# What the parts need: the Docker engine and the PostgreSQL image (fault tests, soak), the
# Python venv (contract), the binaries.
if wants faults || wants soak || wants storms; then
    bash scripts/ensure-docker.sh >&2 || log "docker engine unavailable: PostgreSQL parts will fail"
    RMM_TEST_PG_IMAGE="$(bash scripts/ensure-postgres-image.sh)" && export RMM_TEST_PG_IMAGE
fi
if wants contract; then
    RMM_TEST_PYTHON="$(bash scripts/ensure-py-tools.sh)" && export RMM_TEST_PYTHON
fi

if wants fuzz; then
    if [ "$FUZZ_SECONDS" = smoke ]; then
        run_part fuzz "scripts/fuzz.sh --smoke" bash scripts/fuzz.sh --smoke
    else
        run_part fuzz "scripts/fuzz.sh $FUZZ_SECONDS" bash scripts/fuzz.sh "$FUZZ_SECONDS"
    fi
    if [ -f target/fuzz-report.json ]; then
        cp target/fuzz-report.json "$OUT/fuzz-report.json"
    else
        rm -f "$OUT/fuzz-report.json"
    fi
fi

if wants contract; then
    if [ -n "$CONTRACT_EXAMPLES" ]; then
        run_part contract "scripts/contract-tests.sh --examples $CONTRACT_EXAMPLES" \
            bash scripts/contract-tests.sh --examples "$CONTRACT_EXAMPLES"
    else
        run_part contract "scripts/contract-tests.sh" bash scripts/contract-tests.sh
    fi
fi

if wants faults; then
    # Every fault test: the crash tests and tests/tests/faults_*.rs.
    tests=()
    for f in tests/tests/agent_crash.rs tests/tests/server_crash.rs tests/tests/faults_*.rs; do
        [ -f "$f" ] && tests+=(--test "$(basename "$f" .rs)")
    done
    cargo build --workspace --bins --locked >"$OUT/build.log" 2>&1 ||
        failed_row faults "build" "cargo build failed; log target/reliability/build.log" "cargo build --workspace --bins"
    run_part faults "cargo test -p rmm-e2e ${tests[*]}" \
        cargo test -p rmm-e2e --locked "${tests[@]}"
fi

if wants storms; then
    # The soak is its own part below.
    if [ "$MODE" = quick ]; then
        run_part storms "scripts/storms.sh --smoke --parts restart,watchers" \
            bash scripts/storms.sh --smoke --parts restart,watchers
    else
        run_part storms "scripts/storms.sh --parts restart,watchers" \
            bash scripts/storms.sh --parts restart,watchers
    fi
fi

if wants soak; then
    run_part soak "scripts/soak.sh $SOAK_MINUTES" bash scripts/soak.sh "$SOAK_MINUTES"
fi

python3 scripts/reliability-report.py "$OUT" "$REPORT"
