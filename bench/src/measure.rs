//! What one benchmark measured, as a JSON file in the results folder, and the statistics that
//! make its figures. The report reads these files back; nothing else is shared between runs.
//!
//! Percentiles are nearest-rank over every sample (no histogram buckets, no interpolation):
//! sample counts are small enough to keep, and a p99 then is a latency that really happened.
//! MB/s is decimal (10^6 bytes per second), as `scp` and most tools print it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The parts of the suite, in report order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Roundtrip,
    Stream,
    Files,
    Sim,
    Opens,
    Terminal,
    /// The real agent, idle: its memory and binary size.
    Agent,
    /// Cluster mode: the hop between nodes (the same agent through its own node and through
    /// another).
    Cluster,
}

impl Part {
    /// Every part, in report order (section `## N.` of the report is `ALL[N - 1]`).
    pub const ALL: [Self; 8] = [
        Self::Roundtrip,
        Self::Stream,
        Self::Files,
        Self::Sim,
        Self::Opens,
        Self::Terminal,
        Self::Agent,
        Self::Cluster,
    ];

    /// The file-name prefix and flag name of the part.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Roundtrip => "roundtrip",
            Self::Stream => "stream",
            Self::Files => "files",
            Self::Sim => "sim",
            Self::Opens => "opens",
            Self::Terminal => "terminal",
            Self::Agent => "agent",
            Self::Cluster => "cluster",
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub part: Part,
    /// What was measured, e.g. `ssh (ControlMaster)` or `HTTP API ?wait=`.
    pub name: String,
    /// The exact command or request sequence, for the report.
    pub command: String,
    pub figures: Figures,
}

/// The figures of a row, by kind of measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figures {
    Latency(Latency),
    Throughput(Throughput),
    Sim(Box<SimFigures>),
    Opens(OpensFigures),
    AgentIdle(crate::agent_idle::AgentIdleFigures),
    /// A fleet spread over a cluster's nodes (`rmm-bench cluster-fleet`).
    ClusterFleet(crate::cluster_fleet::FleetFigures),
    /// The part could not run here; the reason says why and what would make it run.
    NotAvailable {
        reason: String,
    },
}

impl Figures {
    /// Whether the row carries numbers (not a "not available").
    #[must_use]
    pub fn has_figures(&self) -> bool {
        !matches!(self, Self::NotAvailable { .. })
    }
}

/// Latency of repeated runs of one operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    /// Runs that failed (not counted in the percentiles).
    pub failures: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The statistics of `samples`; `None` when there are none.
    #[must_use]
    pub fn from_samples(samples: &[Duration], failures: usize) -> Option<Self> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let (first, last) = (ms.first()?, ms.last()?);
        Some(Self {
            samples: ms.len(),
            failures,
            p50_ms: percentile(&ms, 50.0),
            p99_ms: percentile(&ms, 99.0),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            min_ms: *first,
            max_ms: *last,
        })
    }
}

/// Bytes moved per second by one transfer (the median run when there were several).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    pub runs: usize,
    /// Seconds of every run, so rows of interleaved runs can be merged exactly.
    #[serde(default)]
    pub run_secs: Vec<f64>,
}

impl Throughput {
    /// The median of `runs` (each the seconds one transfer of `bytes` took).
    #[must_use]
    pub fn from_runs(bytes: u64, runs: &[Duration]) -> Option<Self> {
        Self::from_secs(bytes, runs.iter().map(Duration::as_secs_f64).collect())
    }

    fn from_secs(bytes: u64, mut secs: Vec<f64>) -> Option<Self> {
        secs.sort_by(f64::total_cmp);
        let median = *secs.get(secs.len() / 2)?;
        Some(Self {
            bytes,
            secs: median,
            mb_per_s: if median > 0.0 {
                bytes as f64 / median / 1e6
            } else {
                0.0
            },
            runs: secs.len(),
            run_secs: secs,
        })
    }

    /// Both rows' runs as one row (same transfer size), or `None` when the sizes differ.
    #[must_use]
    pub fn merged(&self, other: &Self) -> Option<Self> {
        if self.bytes != other.bytes {
            return None;
        }
        let mut secs = self.run_secs.clone();
        secs.extend_from_slice(&other.run_secs);
        Self::from_secs(self.bytes, secs)
    }
}

/// What the agent simulator saw and what the server paid for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimFigures {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    /// Connections the server dropped during the run.
    pub dropped: usize,
    pub bind_ips: usize,
    pub ramp_per_sec: f64,
    /// From the first connect to the last completed handshake.
    pub connect_secs: f64,
    pub connect_rate_per_s: f64,
    pub handshake_p50_ms: f64,
    pub handshake_p99_ms: f64,
    pub heartbeat_secs: u64,
    pub window_secs: f64,
    pub server_rss_baseline_kib: u64,
    pub server_rss_loaded_kib: u64,
    pub server_rss_per_agent_kib: f64,
    /// Percent of one core, while connecting.
    pub server_cpu_ramp_pct: f64,
    /// Percent of one core, during the measurement window at full load.
    pub server_cpu_window_pct: f64,
    pub rtt_samples: usize,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_method: String,
    pub server_nofile_limit: Option<u64>,
    pub notes: Vec<String>,
    /// Percent of one core while the sampled connections ping (the round-trip window);
    /// `server_cpu_window_pct` is measured with no pings (idle agents, heartbeats only).
    #[serde(default)]
    pub server_cpu_pinging_pct: Option<f64>,
    /// The server restarted with the fleet connected (`--storm-dir`).
    #[serde(default)]
    pub storm: Option<StormFigures>,
}

/// All agents back after a server restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormFigures {
    /// How the server was stopped (`SIGKILL`, `SIGTERM`).
    pub signal: String,
    /// Agents connected before the restart.
    pub agents: usize,
    /// Agents connected again by the deadline.
    pub back: usize,
    /// From the first lost connection to the last agent back; `None` if not all came back.
    pub all_back_secs: Option<f64>,
    /// From the first lost connection to the new server's start.
    pub restart_secs: f64,
    pub deadline_secs: f64,
    /// Upgrades answered 503 with Retry-After, and other failed dials, during the storm.
    pub busy: u64,
    pub failed_dials: u64,
    /// Answered 401 (an agent refused for good would show here).
    pub rejected: u64,
    /// The new server's peak RSS and its CPU from its start to the last agent back.
    pub server_peak_rss_kib: u64,
    pub server_cpu_pct: f64,
}

/// Tunnel opens and closes through the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpensFigures {
    pub backend: String,
    pub agents: usize,
    pub concurrency: usize,
    pub secs: f64,
    /// Completed open + close pairs.
    pub pairs: usize,
    pub pairs_per_s: f64,
    pub open_p50_ms: f64,
    pub open_p99_ms: f64,
    pub close_p50_ms: f64,
    pub close_p99_ms: f64,
    pub errors: usize,
    pub first_error: Option<String>,
    /// The server's CPU over the run, percent of one core (when its pid was given).
    #[serde(default)]
    pub server_cpu_pct: Option<f64>,
    /// Opens one at a time after the concurrent run (none in rows from before).
    #[serde(default)]
    pub single: Option<SingleOpens>,
}

/// Tunnel opens one at a time: the latency of an open alone (its close is not timed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SingleOpens {
    pub opens: usize,
    pub open_p50_ms: f64,
    pub open_p99_ms: f64,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Nearest-rank percentile of an ascending slice; 0 when empty.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil();
    // `rank` is in 0..=len, so the conversion is exact.
    let index = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// p50 and p99 of durations, in milliseconds.
#[must_use]
pub fn p50_p99_ms(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 50.0), percentile(&ms, 99.0))
}

/// Writes `m` to `path` as pretty JSON.
///
/// # Errors
/// When the file cannot be written.
pub fn write(path: &Path, m: &Measurement) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(m)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `m` to `path`; with `append`, a throughput row already there gains `m`'s runs
/// (runs of two tools are interleaved so a change of load on a shared machine hits both).
///
/// # Errors
/// When the file cannot be read or written, or the rows do not merge.
pub fn write_appending(path: &Path, m: &Measurement, append: bool) -> anyhow::Result<Measurement> {
    let merged = match (append, std::fs::read_to_string(path)) {
        (true, Ok(text)) => {
            let old: Measurement = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a measurement", path.display()))?;
            match (&old.figures, &m.figures) {
                (Figures::Throughput(a), Figures::Throughput(b)) => Measurement {
                    figures: Figures::Throughput(
                        a.merged(b)
                            .context("cannot merge runs of different sizes")?,
                    ),
                    ..m.clone()
                },
                // A failed run is kept as the reason only when nothing was measured before.
                (Figures::Throughput(_), Figures::NotAvailable { .. }) => old,
                _ => m.clone(),
            }
        }
        (true, Err(_)) | (false, _) => m.clone(),
    };
    write(path, &merged)?;
    Ok(merged)
}

/// Every measurement in `dir` (files ending in `.json`), in part then file-name order.
///
/// # Errors
/// When the folder cannot be read or a file is not a measurement.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Measurement>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Measurement = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a measurement", path.display()))?;
        out.push(m);
    }
    out.sort_by_key(|m| m.part);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.0), 1.0);
    }

    #[test]
    fn latency_and_throughput_summaries() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let l = Latency::from_samples(&samples, 2).unwrap();
        assert_eq!((l.samples, l.failures), (10, 2));
        assert_eq!(
            (l.p50_ms, l.p99_ms, l.min_ms, l.max_ms),
            (5.0, 10.0, 1.0, 10.0)
        );
        assert!(Latency::from_samples(&[], 0).is_none());
        let t = Throughput::from_runs(
            2_000_000,
            &[
                Duration::from_secs(4),
                Duration::from_secs(1),
                Duration::from_secs(2),
            ],
        )
        .unwrap();
        assert_eq!((t.secs, t.mb_per_s, t.runs), (2.0, 1.0, 3));
        let one = Throughput::from_runs(2_000_000, &[Duration::from_secs(8)]).unwrap();
        let all = t.merged(&one).unwrap();
        assert_eq!((all.runs, all.secs), (4, 4.0));
        assert!(
            t.merged(&Throughput::from_runs(1, &[Duration::from_secs(1)]).unwrap())
                .is_none()
        );
    }

    #[test]
    fn measurements_round_trip_through_json() {
        let m = Measurement {
            part: Part::Files,
            name: "upload".into(),
            command: "PUT".into(),
            figures: Figures::NotAvailable {
                reason: "no".into(),
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""kind":"not_available""#), "{text}");
        let back: Measurement = serde_json::from_str(&text).unwrap();
        assert!(!back.figures.has_figures());
    }
}
