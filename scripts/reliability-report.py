#!/usr/bin/env python3
"""Writes RELIABILITY.md from what scripts/reliability.sh collected.

    scripts/reliability-report.py DIR OUT.md

DIR (target/reliability) holds, per part, PART.jsonl: one JSON object per line, as
rmm_e2e::reliability::record and the scripts write them (part, check, figure, reproduce,
passed; the suite's own rows for a part or test that failed have the same shape), and
PART.meta.json: how that part last ran (mode, command, started, seconds, commit, load_at_start,
load_at_end, cpus, memory). The fuzz part's figures come from fuzz-report.json, scripts/fuzz.sh's
report. A part that never ran is shown as such.
"""

import json
import os
import sys

SECTIONS = [
    ("contract", "Inputs tried: the API contract",
     "schemathesis, stateful, against the spec the server serves, with an admin token. "
     "Any server error or schema violation fails the run."),
    ("fuzz", "Inputs tried: the frames",
     "cargo-fuzz (libFuzzer) on every decoder of a frame off the network; the properties "
     "checked are listed in [docs/fuzzing.md](docs/fuzzing.md)."),
    ("faults", "Faults injected and survived",
     "Each row is an end-to-end test on the real binaries (real PostgreSQL, real "
     "`rmm-agent`): the fault, what must hold, and what was measured. "
     "The \"nothing lost\" checks compare what the commands wrote with what was stored."),
    ("storms", "Load held",
     "Storms against the real release server: agents reconnecting at once, watchers "
     "streaming at once."),
    ("soak", "Soak: nothing leaked, nothing lost",
     "A mixed workload for the stated time, then counts, memory and the audit compared "
     "with the baseline."),
]


def run_line(meta):
    if not meta:
        return None
    return (f"Ran `{meta.get('command')}` ({meta.get('mode')}) at {meta.get('started')} for "
            f"{meta.get('seconds')} s on commit `{meta.get('commit')}`, "
            f"{meta.get('cpus')} cores and {meta.get('memory')}; load average "
            f"{meta.get('load_at_start')} at start, {meta.get('load_at_end')} at end.")


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def load_rows(path):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"reliability-report: {path}:{number}: not JSON ({e})")
    except FileNotFoundError:
        pass
    return rows


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def fuzz_rows(report):
    if report is None:
        return [{"check": "frame fuzzing", "figure": "not run (no target/fuzz-report.json)",
                 "reproduce": "scripts/fuzz.sh 300", "passed": False}]
    rows = []
    for t in report.get("targets", []):
        ok = t.get("exit_code") == 0 and not t.get("crashes")
        figure = (f"{t.get('executions', 0):,} executions in {t.get('seconds', 0)} s, "
                  f"{t.get('crashes', 0)} crashes")
        rows.append({"check": f"`{t.get('target')}`", "figure": figure,
                     "reproduce": t.get("command") or report.get("reproduce_all", ""),
                     "passed": ok})
    rows.append({"check": "all targets", "figure":
                 f"{report.get('total_executions', 0):,} executions, "
                 f"{report.get('total_crashes', 0)} crashes ({report.get('mode')}, "
                 f"{report.get('seconds_per_target')} s per target, sanitizer "
                 f"{report.get('sanitizer')}, {report.get('toolchain')})",
                 "reproduce": report.get("reproduce_all", "scripts/fuzz.sh"),
                 "passed": report.get("total_crashes", 1) == 0})
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    directory, out_path = sys.argv[1:]
    known = [name for name, _, _ in SECTIONS]
    by_part, metas = {}, {}
    for part in known:
        by_part[part] = load_rows(os.path.join(directory, f"{part}.jsonl"))
        metas[part] = load_json(os.path.join(directory, f"{part}.meta.json"))
    if metas["fuzz"]:
        by_part["fuzz"] = fuzz_rows(load_json(os.path.join(directory, "fuzz-report.json"))) \
            + by_part["fuzz"]
    # Rows a part recorded under another part's name (a test may record "storms" figures).
    for part in known:
        for row in list(by_part[part]):
            other = row.get("part", part)
            if other != part and other in by_part:
                by_part[part].remove(row)
                by_part[other].append(row)

    all_rows = [r for rows in by_part.values() for r in rows]
    failed = sum(1 for r in all_rows if not r.get("passed", False))
    total = len(all_rows)
    missing = [p for p in known if not metas[p] and not by_part[p]]

    out = []
    out.append("# Reliability")
    out.append("")
    out.append("<!-- Generated by scripts/reliability.sh; do not edit by hand. -->")
    out.append("")
    out.append("What rmm-tunnel was put through, what it survived, and the command that "
               "reproduces each row. Generated by one script, `scripts/reliability.sh` "
               "(`--quick` for CI sizes, `--only PART` to rerun one part; see its header).")
    out.append("")
    out.append(f"**{total - failed} of {total} checks passed**"
               + (f", **{failed} FAILED** (marked ✗ below)" if failed else "")
               + (f"; not run: {', '.join(missing)}" if missing else "") + ".")
    out.append("")
    for part, title, intro in SECTIONS:
        part_rows = by_part.get(part, [])
        out.append(f"## {title}")
        out.append("")
        if intro:
            out.append(intro)
            out.append("")
        line = run_line(metas[part])
        if line is None and not part_rows:
            out.append("_This part has not run._")
            out.append("")
            continue
        if line is not None:
            out.append(line)
            out.append("")
        if not part_rows:
            out.append("_It recorded no rows._")
            out.append("")
            continue
        out.append("| | check | measured | reproduce |")
        out.append("|---|---|---|---|")
        for r in part_rows:
            mark = "✓" if r.get("passed", False) else "✗"
            out.append(f"| {mark} | {cell(r.get('check', ''))} | {cell(r.get('figure', ''))} "
                       f"| `{cell(r.get('reproduce', ''))}` |")
        out.append("")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"reliability-report: {out_path}: {total - failed}/{total} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
