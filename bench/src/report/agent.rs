//! The idle agent part of the report: its RSS and binary size against the targets, with an
//! idle sshd connection's memory beside them.

use std::fmt::Write as _;

use super::{commands, not_available, part, verdict};
use crate::agent_idle::{AgentIdleFigures, PREVIOUS_SSHD_RSS_KIB};
use crate::measure::{Figures, Measurement, Part};

/// Idle `rmm-agent` RSS, KiB (4 MiB).
const TARGET_RSS_KIB: u64 = 4 * 1024;
/// `rmm-agent` binary, bytes (6 MB).
const TARGET_BINARY_BYTES: u64 = 6_000_000;

fn figures(rows: &[Measurement]) -> Option<&AgentIdleFigures> {
    part(rows, Part::Agent)
        .into_iter()
        .find_map(|m| match &m.figures {
            Figures::AgentIdle(f) => Some(f),
            _ => None,
        })
}

fn sshd(f: &AgentIdleFigures) -> String {
    match (f.sshd_rss_kib, PREVIOUS_SSHD_RSS_KIB) {
        (Some(kib), _) => format!(
            "idle sshd connection: {kib} KiB ({} processes)",
            f.sshd_processes
        ),
        (None, Some(kib)) => {
            format!("idle sshd connection: {kib} KiB (an earlier run; no sshd in this one)")
        }
        (None, None) => "idle sshd connection: not measured".to_owned(),
    }
}

/// The targets table's rows of this part (each starts `| idle rmm-agent` or `| rmm-agent
/// binary`, which is how a merge tells them apart).
pub(super) fn targets(out: &mut String, rows: &[Measurement]) {
    let Some(f) = figures(rows) else {
        let _ = writeln!(
            out,
            "| idle rmm-agent RSS ≤ 4 MiB | not measured (see below) | — |\n\
             | rmm-agent binary ≤ 6 MB | not measured (see below) | — |"
        );
        return;
    };
    let _ = writeln!(
        out,
        "| idle rmm-agent RSS ≤ 4 MiB | {} KiB ({} thread(s)); {} | {} |",
        f.rss_kib,
        f.threads,
        sshd(f),
        verdict(f.rss_kib <= TARGET_RSS_KIB)
    );
    let _ = writeln!(
        out,
        "| rmm-agent binary ≤ 6 MB | {:.2} MB ({} bytes) | {} |",
        f.binary_bytes as f64 / 1e6,
        f.binary_bytes,
        verdict(f.binary_bytes <= TARGET_BINARY_BYTES)
    );
}

/// Section 7.
pub(super) fn section(out: &mut String, rows: &[Measurement]) {
    let _ = writeln!(out, "## 7. The idle agent\n");
    let measured = part(rows, Part::Agent);
    match figures(rows) {
        Some(f) => {
            let _ = writeln!(
                out,
                "| | RSS | threads | binary |\n|---|---|---|---|\n| rmm-agent, connected and idle | {} KiB | {} | {} bytes |",
                f.rss_kib, f.threads, f.binary_bytes
            );
            let _ = writeln!(out, "\n{}.\n", sshd(f));
        }
        None => {
            let _ = writeln!(out, "Not measured in this run.");
        }
    }
    commands(out, &measured);
    not_available(out, &measured);
}
