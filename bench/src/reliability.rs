//! Rows for RELIABILITY.md from the long runs (`scripts/storms.sh`, `scripts/soak.sh`): a
//! check that passed appends one JSON line to the file named by `RMM_RELIABILITY_OUT`, the
//! format of `rmm_e2e::reliability::record` (tests/src/reliability.rs), which the end-to-end
//! tests write. Without the variable nothing is written.

use std::io::Write as _;

use anyhow::Context as _;

/// Appends `{"part", "check", "figure", "reproduce", "passed": true}` when the variable is
/// set: `part` is `storms` or `soak`, `check` what was injected and what must hold, `figure`
/// what was measured, `reproduce` the command that runs this check alone.
///
/// # Errors
/// When the variable names a file that cannot be appended to (a report that silently loses
/// rows would claim less than was checked).
pub fn record(part: &str, check: &str, figure: &str, reproduce: &str) -> anyhow::Result<()> {
    // Set but empty counts as unset (`RMM_RELIABILITY_OUT= scripts/storms.sh`).
    let Some(path) = std::env::var_os("RMM_RELIABILITY_OUT").filter(|p| !p.is_empty()) else {
        return Ok(());
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
        .with_context(|| format!("RMM_RELIABILITY_OUT {}", path.to_string_lossy()))?;
    // One write per line: concurrent writers append whole lines.
    file.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("RMM_RELIABILITY_OUT {}", path.to_string_lossy()))
}

/// The 1-minute load average from `/proc/loadavg` (`?` when unreadable), for the figures
/// of the long runs: a figure from a busy machine is pessimistic.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
