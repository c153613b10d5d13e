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
    let missed = judge(sim.requested, sim.connected, &storm, args.target_secs);
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

/// What the storm missed: nothing when every agent asked for was connected, all were back
/// within `target_secs` of the first lost connection, and none was answered 401.
fn judge(
    requested: usize,
    connected: usize,
    storm: &StormFigures,
    target_secs: f64,
) -> Vec<String> {
    let mut missed = Vec::new();
    if connected < requested {
        missed.push(format!(
            "only {} of {} agents connected before the restart",
            connected, requested
        ));
    }
    match storm.all_back_secs {
        Some(secs) if secs <= target_secs => {}
        Some(secs) => missed.push(format!(
            "all back in {secs:.1} s, over the {} s target",
            target_secs
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
    missed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn storm(agents: usize, back: usize, all_back_secs: Option<f64>) -> StormFigures {
        StormFigures {
            signal: "SIGKILL".into(),
            agents,
            back,
            all_back_secs,
            restart_secs: 0.5,
            deadline_secs: 120.0,
            busy: 10,
            failed_dials: 3,
            rejected: 0,
            server_peak_rss_kib: 1024,
            server_cpu_pct: 50.0,
        }
    }

    #[test]
    fn a_storm_passes_only_with_every_agent_back_in_time() {
        assert!(judge(100, 100, &storm(100, 100, Some(19.9)), 20.0).is_empty());
        let late = judge(100, 100, &storm(100, 100, Some(20.1)), 20.0);
        assert!(late[0].contains("over the 20 s target"), "{late:?}");
        let lost = judge(100, 100, &storm(100, 97, None), 20.0);
        assert!(
            lost[0].contains("3 of 100 agents were not back"),
            "{lost:?}"
        );
        let short = judge(100, 90, &storm(90, 90, Some(5.0)), 20.0);
        assert!(short[0].contains("only 90 of 100"), "{short:?}");
        let mut refused = storm(100, 100, Some(5.0));
        refused.rejected = 1;
        assert!(judge(100, 100, &refused, 20.0)[0].contains("401"));
        assert!(figure(&storm(100, 97, None), "1.5").contains("97/100 not all back"));
    }
}
