//! The agent's runtime and logging, sized for what an agent does: it waits on one socket and
//! a few pipes, PTYs and files, almost always idle. Its idle memory is set here (see
//! bench/notes.md, "The agent's size").
//!
//! - One thread runs every task (tokio's current-thread scheduler): commands, terminals and
//!   transfers are I/O waits and interleave on it; a thread per core would add a stack and a
//!   malloc arena each on a many-core machine for no work.
//! - Blocking file work (reads, writes, hashing passes, renames) and name resolution go to the
//!   blocking pool, at most [`BLOCKING_THREADS`] threads that end after [`BLOCKING_KEEP_ALIVE`]
//!   idle, so a finished transfer leaves no threads behind.
//! - The log filter is tracing's `Targets` (`RUST_LOG=warn`, `RUST_LOG=info,rmm_agent_runtime=debug`):
//!   the regex engine of `EnvFilter` would add about a quarter of a megabyte to the binary.

use std::time::Duration;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Blocking-pool threads at most: enough for several transfers at once (each holds one only
/// for one chunk's read, write or hash at a time), few enough to bound the stacks and arenas.
pub const BLOCKING_THREADS: usize = 4;

/// How long an idle blocking-pool thread lives.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// The agent's runtime (see the module's documentation).
///
/// # Errors
/// When the runtime's I/O driver cannot be created (no epoll, no file descriptors left).
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
}

/// Logs to stderr (text, colour only on a terminal; or JSON lines with
/// `RMM_LOG_FORMAT=json`, as the server does) filtered by `RUST_LOG` (`level` or
/// `target=level` items, comma-separated), `default_filter` when it is unset or unreadable.
///
/// # Errors
/// When `RMM_LOG_FORMAT` is neither `text` nor `json`.
pub fn init_logging(default_filter: &str) -> anyhow::Result<()> {
    let json = rmm_process::json_logs()?;
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // try_init only fails when a subscriber is already installed (it never is here).
    if json {
        let fmt = fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        let _ = tracing_subscriber::registry()
            .with(fmt)
            .with(filter)
            .try_init();
    } else {
        let fmt = fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let _ = tracing_subscriber::registry()
            .with(fmt)
            .with(filter)
            .try_init();
    }
    Ok(())
}

fn filter(rust_log: Option<&str>, default_filter: &str) -> Targets {
    rust_log
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| s.parse().ok())
        .or_else(|| default_filter.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_levels_and_targets_are_read_and_bad_ones_fall_back() {
        let f = filter(Some("warn"), "info");
        assert_eq!(f.default_level(), Some(LevelFilter::WARN));
        let f = filter(Some("info,rmm_agent_runtime=debug"), "info");
        assert!(f.would_enable("rmm_agent_runtime::connection", &tracing::Level::DEBUG));
        assert!(!f.would_enable("tungstenite", &tracing::Level::DEBUG));
        let f = filter(Some("=?bad"), "error");
        assert_eq!(f.default_level(), Some(LevelFilter::ERROR));
        assert_eq!(
            filter(None, "info").default_level(),
            Some(LevelFilter::INFO)
        );
    }
}
