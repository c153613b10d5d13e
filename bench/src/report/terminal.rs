//! The terminal part of the report: keystroke echo and output throughput, each beside
//! `ssh -tt` over the ControlMaster.

use std::fmt::Write as _;

use super::{
    commands, latency, ms, not_available, part, rate_ratio, throughput, throughput_table,
    time_ratio, verdict,
};
use crate::measure::{Measurement, Part};
use crate::report::is_ssh;

const TARGET_ECHO_RATIO: f64 = 0.5;
const TARGET_OUTPUT_RATIO: f64 = 1.0;

/// The targets table's rows of this part (each starts `| keystroke echo` or `| terminal
/// output`, which is how a merge tells them apart).
pub(super) fn targets(out: &mut String, rows: &[Measurement]) {
    let rows = part(rows, Part::Terminal);
    let ssh = rows.iter().filter(|m| is_ssh(m)).find_map(|m| latency(m));
    let ours = rows.iter().filter(|m| !is_ssh(m)).find_map(|m| latency(m));
    match (ours, ssh) {
        (Some(o), Some(s)) => {
            for (label, ours, theirs) in [("p50", o.p50_ms, s.p50_ms), ("p99", o.p99_ms, s.p99_ms)]
            {
                let r = ours / theirs;
                let _ = writeln!(
                    out,
                    "| keystroke echo {label} ≤ {TARGET_ECHO_RATIO}× ssh -tt | {label} {} ms vs ssh {} ms = {} | {} |",
                    ms(ours),
                    ms(theirs),
                    time_ratio(r),
                    verdict(r <= TARGET_ECHO_RATIO)
                );
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "| keystroke echo ≤ {TARGET_ECHO_RATIO}× ssh -tt | not measured (see below) | — |"
            );
        }
    }
    let ssh = rows
        .iter()
        .filter(|m| is_ssh(m))
        .find_map(|m| throughput(m));
    let ours = rows
        .iter()
        .filter(|m| !is_ssh(m))
        .find_map(|m| throughput(m));
    match (ours, ssh) {
        (Some(o), Some(s)) if s.mb_per_s > 0.0 => {
            let r = o.mb_per_s / s.mb_per_s;
            let _ = writeln!(
                out,
                "| terminal output ≥ {TARGET_OUTPUT_RATIO}× ssh -tt | {:.1} MB/s vs ssh {:.1} MB/s = {} | {} |",
                o.mb_per_s,
                s.mb_per_s,
                rate_ratio(r),
                verdict(r >= TARGET_OUTPUT_RATIO)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "| terminal output ≥ {TARGET_OUTPUT_RATIO}× ssh -tt | not measured (see below) | — |"
            );
        }
    }
}

/// Section 6.
pub(super) fn section(out: &mut String, rows: &[Measurement]) {
    let rows = part(rows, Part::Terminal);
    let _ = writeln!(out, "## 6. Terminals (against `ssh -tt`)\n");
    if rows.is_empty() {
        let _ = writeln!(out, "Not run (`--terminal`).\n");
        return;
    }
    let _ = writeln!(
        out,
        "Keystroke echo: one byte sent, timed until it comes back, through a PTY in raw mode \
         without echo running `cat` (each byte comes back once, from `cat`).\n"
    );
    let _ = writeln!(
        out,
        "| client | echoes | p50 ms | p99 ms | mean ms | max ms | p50 vs ssh | p99 vs ssh |\n|---|---|---|---|---|---|---|---|"
    );
    let ssh = rows.iter().filter(|m| is_ssh(m)).find_map(|m| latency(m));
    for m in &rows {
        let Some(l) = latency(m) else { continue };
        let (r50, r99) = match ssh {
            Some(s) if !is_ssh(m) => (
                time_ratio(l.p50_ms / s.p50_ms),
                time_ratio(l.p99_ms / s.p99_ms),
            ),
            Some(_) | None => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {r50} | {r99} |",
            m.name,
            l.samples,
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.mean_ms),
            ms(l.max_ms)
        );
    }
    let _ = writeln!(
        out,
        "\nOutput: `cat` of the base64 file on a cooked PTY (every `\\n` arrives as `\\r\\n`, on \
         both sides: the bytes below are the bytes received), read as fast as possible, timed \
         from the start of the request to the end. Runs alternate between ssh and rmm.\n"
    );
    throughput_table(out, &rows, |_| String::new());
    not_available(out, &rows);
    commands(out, &rows);
}
