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
