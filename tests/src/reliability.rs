//! Figures for RELIABILITY.md. A fault or load test that has passed its assertions calls
//! [`record`] with what it injected and what it measured; when `RMM_RELIABILITY_OUT` names a
//! file (`scripts/reliability.sh` sets it), one JSON line is appended to it, and
//! `scripts/reliability-report.py` turns the lines into the document's tables. Without the
//! variable, or with it empty (a plain `cargo test`), nothing is written, as in rmm-bench.

use std::io::Write as _;

/// One checked outcome: `part` groups rows into a table (`faults`, `storms`, ...), `check`
/// says what was injected and what must hold, `figure` what was measured (e.g. `503 in 0.31
/// s`), `reproduce` the command that runs this check alone.
///
/// # Panics
/// When the variable names a file that cannot be appended to: a report that silently loses
/// rows would claim less than was checked.
pub fn record(part: &str, check: &str, figure: &str, reproduce: &str) {
    let Some(path) = std::env::var_os("RMM_RELIABILITY_OUT").filter(|p| !p.is_empty()) else {
        return;
    };
    let line = serde_json::json!({
        "part": part,
        "check": check,
        "figure": figure,
        "reproduce": reproduce,
        "passed": true,
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("RMM_RELIABILITY_OUT {}: {e}", path.to_string_lossy()));
    // One write per line: concurrent tests append whole lines.
    let text = format!("{line}\n");
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("RMM_RELIABILITY_OUT {}: {e}", path.to_string_lossy()));
}
