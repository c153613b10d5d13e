//! Figures of the processes under test, from `/proc`.

/// A figure of `/proc/<pid>/status` given in KiB (`VmRSS`, `VmHWM`, ...), in bytes.
///
/// # Panics
/// When the process or the field does not exist (a test's premise failed).
#[must_use]
pub fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses: it ends at the last `)`): state, ppid, pgrp, ...; `None` when the process is
/// gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` is a process still running (a zombie waiting for its reaper is not).
#[must_use]
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| !state.starts_with(['Z', 'X']))
}

/// The process group of `pid`, while it exists.
#[must_use]
pub fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The processes of group `pgid` still running (zombies left out), by pid.
#[must_use]
pub fn group_running(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| process_group(*pid) == Some(pgid) && is_running(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// The pids a command under test wrote to `files` (one number each, written whole by a
/// rename), once every file is there; `None` after `within`.
pub async fn pids_written(
    files: &[&std::path::Path],
    within: std::time::Duration,
) -> Option<Vec<u32>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let pids: Option<Vec<u32>> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
            .collect();
        if pids.is_some() || std::time::Instant::now() >= deadline {
            return pids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` for every one of `pids` to stop running; those still running then.
pub async fn still_running_after(pids: &[u32], within: std::time::Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let running: Vec<u32> = pids.iter().copied().filter(|&p| is_running(p)).collect();
        if running.is_empty() || std::time::Instant::now() >= deadline {
            return running;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
