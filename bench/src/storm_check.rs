//! The restart storm as a reliability check: reads the simulator's measurement of
//! `bench/run.sh --sim` (part 4: the fleet connected, the server SIGKILLed and started again
//! on the same port and database) and judges it against issue 15's target — every agent back
//! within 20 s, none refused for good — recording the row when it holds.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::measure::{Figures, Measurement, StormFigures};
use crate::reliability;

#[derive(Debug, Clone, clap::Args)]
pub struct StormCheckArgs {
    /// The simulator's row (`bench/run.sh --sim --results DIR` writes DIR/sim-1.json).
    #[arg(long)]
    pub measurement: PathBuf,
    /// Every agent must be back within this many seconds of the first lost connection.
    #[arg(long, default_value_t = 20.0)]
    pub target_secs: f64,
    /// The 1-minute load average when the run started (`/proc/loadavg`).
    #[arg(long, default_value = "?")]
    pub load: String,
    /// The command that runs this check alone, for the reliability row.
    #[arg(long, default_value = "scripts/storms.sh --parts restart")]
    pub reproduce: String,
}

/// Judges the storm; records the row when it passed.
///
/// # Errors
/// When the measurement cannot be read or has no storm, or the storm missed a target (the
/// error says which).
pub fn run(args: &StormCheckArgs) -> anyhow::Result<()> {
    let path = &args.measurement;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let m: Measurement = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a measurement", path.display()))?;
    let sim = match m.figures {
        Figures::Sim(sim) => sim,
        Figures::NotAvailable { reason } => bail!("the simulator did not run: {reason}"),
        other => bail!("{} is not the simulator's row: {other:?}", path.display()),
    };
    let storm = sim
        .storm
        .context("the simulator's row has no restart storm")?;
    let figure = figure(&storm, &args.load);
    let mut missed = Vec::new();
    if sim.connected < sim.requested {
        missed.push(format!(
            "only {} of {} agents connected before the restart",
            sim.connected, sim.requested
        ));
    }
    match storm.all_back_secs {
        Some(secs) if secs <= args.target_secs => {}
        Some(secs) => missed.push(format!(
            "all back in {secs:.1} s, over the {} s target",
            args.target_secs
        )),
        None => missed.push(format!(
            "{} of {} agents were not back within {} s",
            storm.agents - storm.back.min(storm.agents),
            storm.agents,
            storm.deadline_secs
        )),
    }
    if storm.rejected > 0 {
        missed.push(format!("{} upgrades answered 401", storm.rejected));
    }
    if !missed.is_empty() {
        bail!("the restart storm failed ({}): {figure}", missed.join("; "));
    }
    eprintln!("restart storm: passed: {figure}");
    let check = format!(
        "restart storm: {} simulated agents connected, the server SIGKILLed and started again: all back within {} s, none given up",
        storm.agents, args.target_secs
    );
    reliability::record("storms", &check, &figure, &args.reproduce)
}

fn figure(storm: &StormFigures, load: &str) -> String {
    let back = storm.all_back_secs.map_or_else(
        || "not all back".to_owned(),
        |s| format!("back in {s:.1} s"),
    );
    format!(
        "{}/{} {back} (from the first lost connection; the new server was up {:.1} s after it); new server's peak RSS {} MiB, CPU {:.0}% of a core until all were back; {} upgrades answered 503 and retried, {} other failed dials retried, {} given up; load {load} at start",
        storm.back,
        storm.agents,
        storm.restart_secs,
        storm.server_peak_rss_kib / 1024,
        storm.server_cpu_pct,
        storm.busy,
        storm.failed_dials,
        storm.agents - storm.back.min(storm.agents),
    )
}
