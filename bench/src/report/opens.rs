//! The tunnel-opens part of the report: opens (each with its close) per second at 32
//! concurrent on each database, the other database of the same run as the peer, and the open
//! latency one at a time.

use std::fmt::Write as _;

use super::{commands, ms, not_available, part, verdict};
use crate::measure::{Figures, Measurement, OpensFigures, Part};

/// Opens (each with its close) per second, per database (issue 15).
const TARGET_OPENS_PER_S: f64 = 2000.0;
/// One open at a time, p50 (issue 15).
const TARGET_SINGLE_OPEN_P50_MS: f64 = 3.0;
/// The figures before issue 15, for context only (not the peer).
const BEFORE: &[(&str, f64)] = &[("postgres", 898.0), ("sqlite", 961.0)];

fn figures(rows: &[Measurement]) -> Vec<&OpensFigures> {
    part(rows, Part::Opens)
        .into_iter()
        .filter_map(|m| match &m.figures {
            Figures::Opens(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// The targets table's rows of this part (each contains `tunnel opens/s` or starts `tunnel
/// open,`, which is how a merge tells them apart).
pub(super) fn targets(out: &mut String, rows: &[Measurement]) {
    let opens = figures(rows);
    if opens.is_empty() {
        let _ = writeln!(
            out,
            "| ≥ {TARGET_OPENS_PER_S} tunnel opens/s (each with its close) on each database | not measured (see below) | — |"
        );
        let _ = writeln!(
            out,
            "| tunnel open, one at a time, p50 ≤ {TARGET_SINGLE_OPEN_P50_MS} ms | not measured (see below) | — |"
        );
        return;
    }
    for o in &opens {
        let peer = opens
            .iter()
            .find(|p| p.backend != o.backend)
            .map_or_else(String::new, |p| {
                format!("; {} in the same run: {:.0}/s", p.backend, p.pairs_per_s)
            });
        let before = BEFORE
            .iter()
            .find(|(b, _)| *b == o.backend)
            .map_or_else(String::new, |(_, n)| format!("; before: {n:.0}/s"));
        let _ = writeln!(
            out,
            "| ≥ {TARGET_OPENS_PER_S} tunnel opens/s (each with its close), {} concurrent | {}: {:.0}/s{peer}{before} | {} |",
            o.concurrency,
            o.backend,
            o.pairs_per_s,
            verdict(o.errors == 0 && o.pairs_per_s >= TARGET_OPENS_PER_S)
        );
    }
    for o in &opens {
        let _ = match &o.single {
            Some(s) if s.opens > 0 => writeln!(
                out,
                "| tunnel open, one at a time, p50 ≤ {TARGET_SINGLE_OPEN_P50_MS} ms | {}: p50 {} ms, p99 {} ms over {} opens | {} |",
                o.backend,
                ms(s.open_p50_ms),
                ms(s.open_p99_ms),
                s.opens,
                verdict(s.errors == 0 && s.open_p50_ms <= TARGET_SINGLE_OPEN_P50_MS)
            ),
            _ => writeln!(
                out,
                "| tunnel open, one at a time, p50 ≤ {TARGET_SINGLE_OPEN_P50_MS} ms | {}: not measured (see below) | — |",
                o.backend
            ),
        };
    }
}

/// Section 5.
pub(super) fn section(out: &mut String, rows: &[Measurement]) {
    let rows = part(rows, Part::Opens);
    let _ = writeln!(out, "## 5. Tunnel opens\n");
    if rows.is_empty() {
        let _ = writeln!(out, "Not run (`--opens`).\n");
        return;
    }
    let _ = writeln!(
        out,
        "| database | agents | concurrent | seconds | opens (+ closes) | opens/s | open p50 / p99 ms | close p50 / p99 ms | errors | server CPU | one at a time: open p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut errors = Vec::new();
    for m in &rows {
        let Figures::Opens(o) = &m.figures else {
            continue;
        };
        let single = o.single.as_ref().map_or_else(
            || "—".to_owned(),
            |s| {
                format!(
                    "{} / {} ({} opens)",
                    ms(s.open_p50_ms),
                    ms(s.open_p99_ms),
                    s.opens
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {:.0} | {} / {} | {} / {} | {} | {} | {single} |",
            o.backend,
            o.agents,
            o.concurrency,
            o.secs,
            o.pairs,
            o.pairs_per_s,
            ms(o.open_p50_ms),
            ms(o.open_p99_ms),
            ms(o.close_p50_ms),
            ms(o.close_p99_ms),
            o.errors,
            o.server_cpu_pct
                .map_or_else(|| "—".to_owned(), |c| format!("{c:.0}% of a core"))
        );
        if let Some(e) = &o.first_error {
            errors.push(format!("- {}: first error: {e}", o.backend));
        }
        if let Some(e) = o.single.as_ref().and_then(|s| s.first_error.as_ref()) {
            errors.push(format!("- {} (one at a time): first error: {e}", o.backend));
        }
    }
    let _ = writeln!(out);
    for e in errors {
        let _ = writeln!(out, "{e}");
    }
    not_available(out, &rows);
    commands(out, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::SingleOpens;
    use crate::report::merge::target_part;

    fn row(backend: &str, per_s: f64, single_p50: f64) -> Measurement {
        Measurement {
            part: Part::Opens,
            name: backend.to_owned(),
            command: String::new(),
            figures: Figures::Opens(OpensFigures {
                backend: backend.to_owned(),
                agents: 1000,
                concurrency: 32,
                secs: 20.0,
                pairs: 1,
                pairs_per_s: per_s,
                open_p50_ms: 1.0,
                open_p99_ms: 2.0,
                close_p50_ms: 1.0,
                close_p99_ms: 2.0,
                errors: 0,
                first_error: None,
                server_cpu_pct: None,
                single: Some(SingleOpens {
                    opens: 300,
                    open_p50_ms: single_p50,
                    open_p99_ms: 9.0,
                    errors: 0,
                    first_error: None,
                }),
            }),
        }
    }

    #[test]
    fn each_database_has_its_rows_with_the_other_as_peer_and_computed_verdicts() {
        let mut out = String::new();
        targets(
            &mut out,
            &[row("sqlite", 2500.0, 2.5), row("postgres", 1500.0, 3.5)],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines.iter().all(|l| target_part(l) == Some(Part::Opens)),
            "{out}"
        );
        assert!(
            lines[0].contains("sqlite: 2500/s; postgres in the same run: 1500/s; before: 961/s")
        );
        assert!(lines[0].ends_with("| **met** |"), "{}", lines[0]);
        assert!(lines[1].ends_with("| **not met** |"), "{}", lines[1]);
        assert!(lines[2].contains("sqlite: p50 2.50 ms") || lines[2].contains("sqlite: p50 2.5"));
        assert!(lines[2].ends_with("| **met** |"), "{}", lines[2]);
        assert!(lines[3].ends_with("| **not met** |"), "{}", lines[3]);
    }
}
