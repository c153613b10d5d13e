//! Host facts for heartbeats: agent version, hostname, OS, uptime. Read fresh for every
//! heartbeat (cheap: a couple of small /proc reads) so a renamed host shows up without a
//! restart. A fact that cannot be read is omitted, never invented.
//!
//! Linux is tested here. Windows reads the hostname from `COMPUTERNAME` and sends no uptime
//! yet (GetTickCount64 needs a Windows API crate); other Unixes send neither. Untested.

use rmm_protocol::HeartbeatPayload;

/// The heartbeat payload describing this host now.
#[must_use]
pub fn facts() -> HeartbeatPayload {
    HeartbeatPayload {
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        hostname: hostname(),
        os: Some(std::env::consts::OS.to_owned()),
        uptime_secs: uptime_secs(),
    }
}

#[cfg(target_os = "linux")]
fn hostname() -> Option<String> {
    // The kernel's own name, not $HOSTNAME: a shell variable that services do not inherit.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|name| clean(&name))
}

#[cfg(windows)]
fn hostname() -> Option<String> {
    std::env::var("COMPUTERNAME")
        .ok()
        .and_then(|name| clean(&name))
}

#[cfg(not(any(target_os = "linux", windows)))]
fn hostname() -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
fn uptime_secs() -> Option<u64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| parse_uptime(&text))
}

#[cfg(not(target_os = "linux"))]
fn uptime_secs() -> Option<u64> {
    None
}

/// `/proc/uptime` is "<seconds since boot> <idle seconds>", both with decimals.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_uptime(text: &str) -> Option<u64> {
    let whole = text.split_whitespace().next()?.split('.').next()?;
    whole.parse().ok()
}

/// Trimmed, non-empty, bounded: the server stores what we send.
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
fn clean(name: &str) -> Option<String> {
    let name = name.trim();
    (!name.is_empty()).then(|| name.chars().take(253).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_whole_seconds_of_the_first_field() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(12345));
        assert_eq!(parse_uptime("7 1"), Some(7));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("abc 1"), None);
    }

    #[test]
    fn names_are_trimmed_and_empty_ones_dropped() {
        assert_eq!(clean("web-01\n"), Some("web-01".into()));
        assert_eq!(clean(" \n"), None);
        assert_eq!(clean(&"a".repeat(400)).map(|n| n.len()), Some(253));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_every_fact_is_present() {
        let f = facts();
        assert_eq!(f.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(f.os.as_deref(), Some("linux"));
        assert!(f.hostname.is_some());
        assert!(f.uptime_secs.is_some());
    }
}
