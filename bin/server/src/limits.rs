//! The front door's limits, so that no unauthenticated client can exhaust the server: the size
//! of JSON bodies, how long a client may take to send a request's head, how many connections
//! are open at once (below the open-file limit, which is raised to its hard limit at start),
//! and how many password hashes run and wait at once.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use rmm_auth::HashLimits;

/// Descriptors kept for everything but client connections: the database pool, the runtime,
/// logs, the demo agent's pipes.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// The fewest connections worth serving: a lower open-file limit refuses the start.
pub const MIN_CONNECTIONS: u64 = 64;
/// The open-file limit is raised at most this far (Linux's default `fs.nr_open`).
const MAX_OPEN_FILES: u64 = 1 << 20;

/// The front door's settings (flags and environment variables of `rmm-server`).
#[derive(Debug, Clone, Args)]
pub struct FrontDoorSettings {
    /// Largest JSON request body, bytes; larger ones are answered 413 unread. File uploads
    /// are streamed and not limited by it.
    #[arg(long, env = "RMM_MAX_JSON_BODY", default_value_t = 1024 * 1024, global = true)]
    pub max_json_body: usize,
    /// Seconds a client has to send a request's head (and a JSON body), counted from the
    /// connection's start or the end of its previous response; so it is also how long an idle
    /// keep-alive connection stays open.
    #[arg(
        long,
        env = "RMM_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub header_read_timeout_secs: u64,
    /// Connections open at once, agents' included; beyond it new ones wait to be accepted.
    /// Default: the open-file limit (raised to its hard limit at start) less 256.
    #[arg(long, env = "RMM_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<NonZeroUsize>,
    /// Password hashes (argon2, 19 MiB each) computed at once; default: the number of
    /// cores, at most 4.
    #[arg(long, env = "RMM_MAX_CONCURRENT_HASHES", global = true)]
    pub max_concurrent_hashes: Option<NonZeroUsize>,
    /// Logins waiting for a hashing slot, at most; more, or a wait over 2 s, are answered
    /// 503 with Retry-After.
    #[arg(long, env = "RMM_HASH_QUEUE", default_value_t = 64, global = true)]
    pub hash_queue: usize,
}

impl FrontDoorSettings {
    /// The password-hashing limits these settings give.
    #[must_use]
    pub fn hash_limits(&self) -> HashLimits {
        HashLimits {
            concurrent: self
                .max_concurrent_hashes
                .unwrap_or_else(HashLimits::default_concurrent),
            queue: self.hash_queue,
            ..HashLimits::default()
        }
    }

    /// The request limits these settings give, with the connection cap the open-file limit
    /// allows (raising it where the hard limit lets us); logs the cap.
    ///
    /// # Errors
    /// When the open-file limit is too low for the cap, saying how to raise it.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        Ok(Limits {
            max_json_body: self.max_json_body,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            max_connections: connection_cap(self.max_connections)?,
        })
    }
}

/// The limits the server applies to requests and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_json_body: usize,
    /// For a request's head (and its JSON body), and for an idle keep-alive connection.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_body: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// The connection cap: `requested`, or what the open-file limit allows. The soft open-file
/// limit is raised first, to what `requested` needs or else to the hard limit.
fn connection_cap(requested: Option<NonZeroUsize>) -> anyhow::Result<usize> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let requested = requested.map(|n| u64::try_from(n.get()).unwrap_or(u64::MAX));
    let wanted = requested
        .map_or(hard, |cap| cap.saturating_add(RESERVED_DESCRIPTORS))
        .min(hard)
        .min(MAX_OPEN_FILES);
    let mut limit = soft;
    if wanted > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
            Ok(()) => limit = wanted,
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        }
    }
    let cap = match requested {
        Some(cap) => {
            let needed = cap.saturating_add(RESERVED_DESCRIPTORS);
            if needed > limit {
                bail!(
                    "RMM_MAX_CONNECTIONS={cap} needs an open-file limit of {needed}, but it is {limit} \
                     (hard limit {hard}): raise it (systemd: LimitNOFILE={needed} in the unit; a shell: \
                     `ulimit -n {needed}`, as root for more than the hard limit), or lower RMM_MAX_CONNECTIONS"
                );
            }
            cap
        }
        None => {
            let cap = limit.saturating_sub(RESERVED_DESCRIPTORS);
            if cap < MIN_CONNECTIONS {
                let needed = MIN_CONNECTIONS + RESERVED_DESCRIPTORS;
                bail!(
                    "the open-file limit is {limit} (hard limit {hard}), too low to serve: at least \
                     {needed} is needed ({RESERVED_DESCRIPTORS} kept for the database and the rest, \
                     {MIN_CONNECTIONS} connections). Raise it (systemd: LimitNOFILE=65536 in the unit; \
                     a shell: `ulimit -n 65536`)"
                );
            }
            cap
        }
    };
    tracing::info!(
        max_connections = cap,
        open_files = limit,
        raised_from = soft,
        "connection cap set below the open-file limit (RMM_MAX_CONNECTIONS)"
    );
    Ok(usize::try_from(cap).unwrap_or(usize::MAX))
}
