//! The idle agent (issue 15): the resident memory of a real `rmm-agent` connected to the real
//! server and doing nothing, and the size of its binary, beside the memory an idle OpenSSH
//! connection costs on the server side (its per-connection `sshd` processes).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::procfs;

/// The figures of the idle agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentIdleFigures {
    /// The agent's `VmRSS`, KiB: the largest of the samples.
    pub rss_kib: u64,
    /// The agent's threads at the last sample.
    pub threads: u64,
    /// The agent binary's size, bytes.
    pub binary_bytes: u64,
    /// The sshd processes of one idle connection (the ControlMaster's), their summed `VmRSS`
    /// in KiB; `None` when no sshd ran in this run.
    pub sshd_rss_kib: Option<u64>,
    /// How many sshd processes that sum is of.
    pub sshd_processes: usize,
}

/// The idle sshd connection's RSS when it was last measured here (OpenSSH 9.2p1, Debian 12,
/// bench/run.sh --agent on 2026-12-01: `sshd: rmmbench [priv]` plus `sshd: rmmbench@notty`),
/// shown when a run has no sshd.
pub const PREVIOUS_SSHD_RSS_KIB: Option<u64> = Some(15_244);

/// `Threads:` of `/proc/<pid>/status`.
///
/// # Errors
/// When the process is gone.
pub fn threads(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Threads in /proc/{pid}/status"))
}

/// Waits `settle` (the agent's blocking threads end, nothing is in flight), then samples the
/// agent's memory `samples` times 200 ms apart; the sshd processes are read once.
///
/// # Errors
/// When the agent is gone or its binary cannot be read.
pub async fn measure(
    pid: u32,
    binary: &Path,
    settle: Duration,
    samples: usize,
    sshd_pids: &[u32],
) -> anyhow::Result<AgentIdleFigures> {
    tokio::time::sleep(settle).await;
    let mut rss_kib = 0;
    for i in 0..samples.max(1) {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rss_kib = rss_kib.max(procfs::rss_kib(pid)?);
    }
    let binary_bytes = std::fs::metadata(binary)
        .with_context(|| format!("cannot stat {}", binary.display()))?
        .len();
    let sshd: Vec<u64> = sshd_pids
        .iter()
        .filter_map(|&p| procfs::rss_kib(p).ok())
        .collect();
    Ok(AgentIdleFigures {
        rss_kib,
        threads: threads(pid)?,
        binary_bytes,
        sshd_rss_kib: (!sshd.is_empty()).then(|| sshd.iter().sum()),
        sshd_processes: sshd.len(),
    })
}
