//! What Linux tells about a process and the machine, from `/proc`: resident memory, CPU time,
//! the open-file limit, cores and memory.
//!
//! CPU time in `/proc/<pid>/stat` is in clock ticks of `USER_HZ`, which the kernel fixes at
//! 100 per second for every user-visible interface on the architectures this runs on.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`).
pub const TICKS_PER_SEC: f64 = 100.0;

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Resident set size of `pid`, KiB (`VmRSS` of `/proc/<pid>/status`).
///
/// # Errors
/// When the process is gone or the line is missing.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = read(Path::new(&format!("/proc/{pid}/status")))?;
    kib_field(&status, "VmRSS:").with_context(|| format!("no VmRSS for pid {pid}"))
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// User plus system CPU time of `pid`, in ticks ([`TICKS_PER_SEC`]).
///
/// # Errors
/// When the process is gone or its stat line does not parse.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

/// utime and stime are fields 14 and 15; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The soft "Max open files" limit of `pid`; `None` when unlimited.
///
/// # Errors
/// When `/proc/<pid>/limits` cannot be read or has no such line.
pub fn max_open_files(pid: u32) -> anyhow::Result<Option<u64>> {
    let limits = read(Path::new(&format!("/proc/{pid}/limits")))?;
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else {
        bail!("no open-file limit in /proc/{pid}/limits");
    };
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .unwrap_or("unlimited");
    Ok(soft.parse().ok())
}

/// The machine, for the report.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
}

/// Reads the machine's cores, memory, CPU model and kernel; unknowns are left empty.
#[must_use]
pub fn machine() -> Machine {
    let meminfo = read(Path::new("/proc/meminfo")).unwrap_or_default();
    let cpuinfo = read(Path::new("/proc/cpuinfo")).unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        memory_gib: kib_field(&meminfo, "MemTotal:").unwrap_or(0) as f64 / (1024.0 * 1024.0),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_default(),
        kernel: read(Path::new("/proc/sys/kernel/osrelease"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_past_a_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (rmm (x) srv) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 9 1 2";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        max_open_files(pid).unwrap();
        assert!(machine().cores > 0);
    }
}
