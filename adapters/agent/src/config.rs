//! What the runtime is given to run: the server's URL, the agent's key, the timings of the
//! connection loop. The binary builds an [`AgentConfig`] from its flags, environment and config
//! file; this module only checks the values.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};

use rmm_protocol::limits::AGENT_WS_PATH;

use crate::proxy::ProxyRoute;

/// How long an upload's partial file may sit untouched before the agent removes it: a day.
pub const DEFAULT_PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a server URL or key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("server URL {0:?} is not a URL")]
    BadUrl(String),
    #[error("server URL must start with ws://, wss://, http:// or https:// (got {0:?})")]
    BadScheme(String),
    #[error("server URL {0:?} has no host")]
    NoHost(String),
    #[error("server URL must not carry a query or fragment")]
    QueryOrFragment,
    #[error("the agent key is empty")]
    EmptyKey,
    #[error("the agent key contains characters that cannot go in an HTTP header")]
    BadKey,
}

/// The agents' WebSocket URL of a server: `ws://` or `wss://`, with [`AGENT_WS_PATH`] appended
/// when the given URL does not already end with it (a path prefix of a reverse proxy is kept).
/// The server's `http://` and `https://` URL (the `rmm` CLI's `RMM_SERVER`) are accepted too
/// and become `ws://` and `wss://`: one setting serves both programs.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: String,
    tls: bool,
    loopback: bool,
    /// The host as the URL writes it (IPv6 in brackets) and the port (the scheme's default
    /// when absent): what an HTTP proxy is asked to CONNECT to.
    host: String,
    port: u16,
}

impl ServerUrl {
    /// # Errors
    /// [`ConfigError`] naming what is wrong with `value`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        let uri: Uri = value
            .parse()
            .map_err(|_| ConfigError::BadUrl(value.chars().take(200).collect()))?;
        let tls = match uri.scheme_str() {
            Some("wss" | "https") => true,
            Some("ws" | "http") => false,
            other => return Err(ConfigError::BadScheme(other.unwrap_or("").to_owned())),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| ConfigError::NoHost(value.chars().take(200).collect()))?;
        if uri.query().is_some() || value.contains('#') {
            return Err(ConfigError::QueryOrFragment);
        }
        let path = uri.path().trim_end_matches('/');
        let path = if path.ends_with(AGENT_WS_PATH) {
            path.to_owned()
        } else {
            format!("{path}{AGENT_WS_PATH}")
        };
        let scheme = if tls { "wss" } else { "ws" };
        Ok(Self {
            url: format!("{scheme}://{authority}{path}"),
            tls,
            loopback: is_loopback_host(authority.host()),
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        })
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The server's host (an IPv6 address in brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port (443 or 80 when the URL names none).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is this machine: the name `localhost`, or an address in 127.0.0.0/8
    /// or `::1`. Plain `ws://` is only safe there.
    #[must_use]
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }
}

/// `localhost`, or a loopback address (IPv6 in brackets, as in a URL).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.url)
    }
}

/// The agent's secret key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey(String);

impl AgentKey {
    /// # Errors
    /// [`ConfigError::EmptyKey`], or [`ConfigError::BadKey`] when it cannot be sent in a header.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadKey);
        }
        Ok(Self(value.to_owned()))
    }

    pub(crate) fn bearer(&self) -> Result<HeaderValue, ConfigError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| ConfigError::BadKey)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey([redacted])")
    }
}

/// Timings of the connection loop. Fields so tests (and unusual networks) can shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimings {
    /// How often a heartbeat is sent (also once right after connecting).
    pub heartbeat_interval: Duration,
    /// First backoff ceiling after a failure.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_cap: Duration,
    /// A connection up at least this long resets the backoff.
    pub stable_after: Duration,
    /// No inbound frame (pings included) for this long: the peer is dead, redial.
    pub read_idle: Duration,
    /// Roughly how often to retry after the server rejected the key.
    pub rejected_retry: Duration,
    /// Bound on a TCP + TLS + HTTP upgrade.
    pub connect_timeout: Duration,
    /// Bound on one write; longer means the server stopped reading.
    pub write_timeout: Duration,
    /// A killed command's time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl Default for AgentTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            // The server pings every 20 s by default: 90 s is four missed pings.
            read_idle: Duration::from_secs(90),
            rejected_retry: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server: ServerUrl,
    pub key: AgentKey,
    /// Extra PEM CA certificates to trust for `wss://` (self-signed deployments).
    pub ca_file: Option<PathBuf>,
    /// One connection only: fail instead of retrying, and end when it ends.
    pub once: bool,
    /// The limit on a command whose frame carries no `timeout_secs` (a server that predates
    /// the extension); `None`: no limit.
    pub command_timeout: Option<Duration>,
    /// Direct, or through an HTTP proxy (see [`ProxyRoute::choose`]).
    pub proxy: ProxyRoute,
    /// The file that records where this agent made upload partial files, so old ones can be
    /// removed wherever they are; `None`: they are not tracked (and never removed).
    pub partial_journal: Option<PathBuf>,
    /// Partial files older than this (untouched for this long) are removed.
    pub partial_max_age: Duration,
    pub timings: AgentTimings,
}

impl AgentConfig {
    /// A configuration with the default timings, retrying forever, system roots only.
    #[must_use]
    pub fn new(server: ServerUrl, key: AgentKey) -> Self {
        Self {
            server,
            key,
            ca_file: None,
            once: false,
            command_timeout: None,
            proxy: ProxyRoute::Direct,
            partial_journal: None,
            partial_max_age: DEFAULT_PARTIAL_MAX_AGE,
            timings: AgentTimings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_get_the_agent_path_when_missing() {
        let cases = [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/api/v1/agent/ws"),
            ("ws://h:1/", "ws://h:1/api/v1/agent/ws"),
            (
                "wss://rmm.example.com",
                "wss://rmm.example.com/api/v1/agent/ws",
            ),
            (
                "wss://rmm.example.com/api/v1/agent/ws",
                "wss://rmm.example.com/api/v1/agent/ws",
            ),
            (
                "wss://proxy.example.com/rmm/",
                "wss://proxy.example.com/rmm/api/v1/agent/ws",
            ),
            (" ws://[::1]:9000 ", "ws://[::1]:9000/api/v1/agent/ws"),
        ];
        for (given, want) in cases {
            assert_eq!(ServerUrl::parse(given).unwrap().as_str(), want, "{given}");
        }
        assert!(ServerUrl::parse("wss://x").unwrap().is_tls());
        assert!(!ServerUrl::parse("ws://x").unwrap().is_tls());
    }

    #[test]
    fn http_and_https_server_urls_become_ws_and_wss() {
        let cases = [
            (
                "http://127.0.0.1:8080",
                "ws://127.0.0.1:8080/api/v1/agent/ws",
                false,
            ),
            (
                "https://rmm.example.com",
                "wss://rmm.example.com/api/v1/agent/ws",
                true,
            ),
            (
                "https://proxy.example.com/rmm/",
                "wss://proxy.example.com/rmm/api/v1/agent/ws",
                true,
            ),
            (
                "http://h:1/api/v1/agent/ws",
                "ws://h:1/api/v1/agent/ws",
                false,
            ),
        ];
        for (given, want, tls) in cases {
            let url = ServerUrl::parse(given).unwrap();
            assert_eq!((url.as_str(), url.is_tls()), (want, tls), "{given}");
        }
    }

    #[test]
    fn only_localhost_and_loopback_addresses_are_loopback() {
        for local in [
            "ws://localhost:8080",
            "http://LOCALHOST",
            "ws://127.0.0.1:8080",
            "ws://127.3.2.1",
            "ws://[::1]:9000",
            "wss://localhost",
        ] {
            assert!(ServerUrl::parse(local).unwrap().is_loopback(), "{local}");
        }
        for remote in [
            "ws://rmm.example.com",
            "ws://10.0.0.1:8080",
            "ws://[2001:db8::1]",
            "ws://localhost.example.com",
            "ws://128.0.0.1",
            "http://0.0.0.0:8080",
        ] {
            assert!(!ServerUrl::parse(remote).unwrap().is_loopback(), "{remote}");
        }
    }

    #[test]
    fn ws_and_wss_server_urls_are_kept_as_they_are() {
        let ws = ServerUrl::parse("ws://h:8080").unwrap();
        assert_eq!(
            (ws.as_str(), ws.is_tls()),
            ("ws://h:8080/api/v1/agent/ws", false)
        );
        let wss = ServerUrl::parse("wss://h").unwrap();
        assert_eq!(
            (wss.as_str(), wss.is_tls()),
            ("wss://h/api/v1/agent/ws", true)
        );
    }

    #[test]
    fn server_urls_of_other_schemes_are_refused_naming_the_accepted_ones() {
        for (given, scheme) in [("ftp://h", "ftp"), ("unix://h/run/rmm.sock", "unix")] {
            let e = ServerUrl::parse(given).unwrap_err();
            assert_eq!(e, ConfigError::BadScheme(scheme.to_owned()), "{given}");
            let message = e.to_string();
            for accepted in ["ws://", "wss://", "http://", "https://"] {
                assert!(message.contains(accepted), "{message}");
            }
        }
        assert!(matches!(
            ServerUrl::parse("h:8080"),
            Err(ConfigError::BadScheme(_))
        ));
        assert!(matches!(
            ServerUrl::parse("not a url"),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            ServerUrl::parse("ws://h/?a=1"),
            Err(ConfigError::QueryOrFragment)
        ));
        assert!(ServerUrl::parse("").is_err());
    }

    #[test]
    fn keys_are_redacted_in_debug_and_must_fit_a_header() {
        let key = AgentKey::parse("s3cret-key").unwrap();
        assert_eq!(format!("{key:?}"), "AgentKey([redacted])");
        let config = AgentConfig::new(ServerUrl::parse("ws://h").unwrap(), key.clone());
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(key.bearer().unwrap().is_sensitive());
        assert_eq!(AgentKey::parse("  "), Err(ConfigError::EmptyKey));
        assert_eq!(AgentKey::parse("a b"), Err(ConfigError::BadKey));
        assert_eq!(AgentKey::parse("é"), Err(ConfigError::BadKey));
    }

    #[test]
    fn the_default_timings_are_the_documented_ones() {
        let t = AgentTimings::default();
        assert_eq!(t.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(
            (t.backoff_base, t.backoff_cap),
            (Duration::from_secs(1), Duration::from_secs(60))
        );
        assert_eq!(t.stable_after, Duration::from_secs(60));
        assert_eq!(t.read_idle, Duration::from_secs(90));
        assert_eq!(t.kill_grace, Duration::from_secs(2));
    }
}
