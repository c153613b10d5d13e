//! The agent behind an HTTP proxy: which proxy (if any) the server is reached through, from
//! the `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` values the binary read (curl's rules),
//! and the `CONNECT` tunnel through it that the TLS and the WebSocket then run over.
//!
//! The proxy's password never reaches a log: [`ProxyUrl`] shows itself without it.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The agent's WebSocket (the same type as the connection's).
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The proxy settings as the environment gave them (`https_proxy` before `HTTPS_PROXY`, as
/// curl reads them); the binary reads them, the runtime decides.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `https_proxy` / `HTTPS_PROXY`: for `wss://` servers.
    pub https: Option<String>,
    /// `http_proxy` / `HTTP_PROXY`: for `ws://` servers.
    pub http: Option<String>,
    /// `all_proxy` / `ALL_PROXY`: for either, when the scheme's own is unset.
    pub all: Option<String>,
    /// `no_proxy` / `NO_PROXY`: hosts reached directly.
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.as_deref().map(ProxyUrl::shown_of);
        f.debug_struct("ProxyEnv")
            .field("https", &shown(&self.https))
            .field("http", &shown(&self.http))
            .field("all", &shown(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Why a proxy setting is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy {0} is not a URL (http://[user:password@]host[:port])")]
    BadUrl(String),
    #[error(
        "proxy {0}: only http:// proxies (HTTP CONNECT) are supported; TLS to the proxy and SOCKS are not"
    )]
    Scheme(String),
}

/// An HTTP proxy: where it is, and the `Proxy-Authorization` its URL carries. `Display` and
/// `Debug` show `http://user:***@host:port`, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    host: String,
    port: u16,
    /// `Basic <base64(user:password)>`.
    authorization: Option<String>,
    shown: String,
}

impl ProxyUrl {
    /// Parses `http://[user[:password]@]host[:port]` (no scheme: `http://`; no port: 1080, as
    /// curl). User and password may be percent-encoded.
    ///
    /// # Errors
    /// [`ProxyError`] naming the (password-less) value.
    pub fn parse(value: &str) -> Result<Self, ProxyError> {
        let value = value.trim();
        let shown = Self::shown_of(value);
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(ProxyError::Scheme(shown)),
            None => value,
        };
        let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| ProxyError::BadUrl(shown.clone()))?;
        let authorization = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Self {
            host,
            port,
            authorization,
            shown,
        })
    }

    /// `value` as it may be logged: the password replaced by `***`.
    fn shown_of(value: &str) -> String {
        let value = value.trim();
        let (scheme, rest) = match value.split_once("://") {
            Some((scheme, rest)) => (format!("{scheme}://"), rest),
            None => ("http://".to_owned(), value),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, _) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((info, hostport)) => {
                let user = info.split_once(':').map_or(info, |(user, _)| user);
                format!("{scheme}{user}:***@{hostport}")
            }
            None => format!("{scheme}{authority}"),
        }
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

/// How the agent reaches its server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyRoute {
    /// No proxy is set for the server's scheme.
    #[default]
    Direct,
    /// A proxy is set, but this `NO_PROXY` entry names the server.
    Exempt(String),
    /// Through this proxy, with HTTP CONNECT.
    Via(ProxyUrl),
}

impl ProxyRoute {
    /// The route to the server (`wss://` when `tls`, at `host`) under `env`, by curl's rules:
    /// `https_proxy` for `wss://`, `http_proxy` for `ws://`, else `all_proxy`; unless
    /// `no_proxy` names the host (`*`; the host itself; a domain it is in, with or without a
    /// leading dot; an IP address).
    ///
    /// # Errors
    /// When the chosen proxy's URL is not usable.
    pub fn choose(env: &ProxyEnv, tls: bool, host: &str) -> Result<Self, ProxyError> {
        let own = if tls { &env.https } else { &env.http };
        let Some(proxy) = own
            .as_deref()
            .or(env.all.as_deref())
            .filter(|v| !v.trim().is_empty())
        else {
            return Ok(Self::Direct);
        };
        if let Some(entry) = env
            .no_proxy
            .as_deref()
            .and_then(|list| exempting(list, host))
        {
            return Ok(Self::Exempt(entry));
        }
        Ok(Self::Via(ProxyUrl::parse(proxy)?))
    }

    /// Logs, once at start, how the server is reached.
    pub(crate) fn log(&self, server: &dyn fmt::Display) {
        match self {
            Self::Direct => {}
            Self::Exempt(entry) => {
                tracing::info!(server = %server, no_proxy = %entry, "NO_PROXY exempts the server: connecting directly, not through the proxy");
            }
            Self::Via(proxy) => {
                tracing::info!(server = %server, proxy = %proxy, "connecting through the HTTP proxy (CONNECT)");
            }
        }
    }
}

/// The `no_proxy` entry (comma- or space-separated) that names `host`, if any.
fn exempting(list: &str, host: &str) -> Option<String> {
    let host = unbracket(host).trim_end_matches('.').to_ascii_lowercase();
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .find(|entry| names(entry, &host))
        .map(str::to_owned)
}

/// Whether one `no_proxy` entry names `host` (lowercase, no brackets, no trailing dot).
fn names(entry: &str, host: &str) -> bool {
    if entry == "*" {
        return true;
    }
    // An entry may carry a port (`host:8080`, `[::1]:8080`); curl ignores it for matching
    // names, and so do we.
    let entry = if entry.starts_with('[') {
        entry
            .split_once(']')
            .map_or(entry, |(inside, _)| inside.trim_start_matches('['))
    } else if entry.matches(':').count() == 1 {
        entry.split_once(':').map_or(entry, |(name, _)| name)
    } else {
        entry
    };
    let entry = entry.trim_end_matches('.').to_ascii_lowercase();
    if let (Ok(a), Ok(b)) = (
        entry.parse::<std::net::IpAddr>(),
        host.parse::<std::net::IpAddr>(),
    ) {
        return a == b;
    }
    let suffix = entry.trim_start_matches('.');
    if suffix.is_empty() {
        return false;
    }
    host == suffix
        || host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.'))
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `host[:port]` (IPv6 in brackets); port 1080 when absent.
fn split_host_port(hostport: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok().filter(|&p| p != 0)?,
        None => 1080,
    };
    Some((host.to_owned(), port))
}

/// `%XX` escapes decoded (a bad escape is kept as it is).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The WebSocket to the server, directly or through the configured proxy, within the
/// connect timeout. The outer error is a failure before the upgrade (a proxy refusing or out
/// of reach, or no answer in time), as a line naming the proxy without its password.
pub(crate) async fn websocket(
    route: &ProxyRoute,
    (host, port, within): (&str, u16, Duration),
    request: Request,
    (ws_config, connector): (WebSocketConfig, Option<Connector>),
) -> Result<Result<(Socket, Response), WsError>, String> {
    let attempt = async {
        match route {
            ProxyRoute::Via(proxy) => {
                let stream = tunnel(proxy, host, port).await?;
                let _ = stream.set_nodelay(true);
                Ok(tokio_tungstenite::client_async_tls_with_config(
                    request,
                    stream,
                    Some(ws_config),
                    connector,
                )
                .await)
            }
            ProxyRoute::Direct | ProxyRoute::Exempt(_) => {
                Ok(tokio_tungstenite::connect_async_tls_with_config(
                    request,
                    Some(ws_config),
                    true,
                    connector,
                )
                .await)
            }
        }
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(result) => result,
        Err(_) => Err(match route {
            ProxyRoute::Via(proxy) => format!(
                "no answer within {}s (through proxy {proxy})",
                within.as_secs()
            ),
            _ => format!("no answer within {}s", within.as_secs()),
        }),
    }
}

/// The largest answer head a proxy may send to a CONNECT.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// A TCP connection to `proxy`, tunnelled with `CONNECT host:port` to the server; the TLS (for
/// `wss://`) and the WebSocket go over it.
async fn tunnel(proxy: &ProxyUrl, host: &str, port: u16) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect((unbracket(&proxy.host), proxy.port))
        .await
        .map_err(|e| format!("cannot reach proxy {proxy}: {e}"))?;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("proxy {proxy}: sending CONNECT failed: {e}"))?;
    let head = read_head(&mut stream)
        .await
        .map_err(|e| format!("proxy {proxy}: {e}"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(stream),
        Some(code) => {
            let reason = status_line.splitn(3, ' ').nth(2).unwrap_or_default().trim();
            Err(format!(
                "proxy {proxy} refused CONNECT {target}: HTTP {code} {reason}"
            ))
        }
        None => Err(format!(
            "proxy {proxy} answered CONNECT with something other than HTTP: {:?}",
            status_line.chars().take(80).collect::<String>()
        )),
    }
}

/// The proxy's answer up to and including the empty line, read a byte at a time so nothing
/// of the tunnel after it is consumed; at most [`MAX_ANSWER_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_ANSWER_HEAD {
            return Err(format!(
                "the answer to CONNECT exceeds {MAX_ANSWER_HEAD} bytes of headers"
            ));
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("closed the connection without answering CONNECT".to_owned()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("reading the answer to CONNECT failed: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
