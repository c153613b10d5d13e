//! Enrollment: `POST /api/v1/agents/enroll` with an enrollment token, answered with this
//! machine's own agent key. One plain HTTP/1.1 request over the TLS stack the WebSocket uses
//! (rustls with the same roots and CA file), so the agent links no HTTP client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;

use rmm_protocol::api::ApiErrorCode;
use rmm_protocol::limits::AGENT_WS_PATH;

use crate::config::ServerUrl;
use crate::tls;

/// The enrollment endpoint, under the server's base URL.
const ENROLL_PATH: &str = "/api/v1/agents/enroll";
/// The largest answer read.
const MAX_ANSWER: u64 = 256 * 1024;

/// This machine's new identity.
#[derive(Debug)]
pub struct Enrolled {
    pub agent_id: String,
    /// The key, to write to the config file (never logged).
    pub agent_key: String,
    pub name: String,
    pub group: String,
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the enrollment token is unknown")]
    Invalid,
    #[error("the enrollment token has expired")]
    Expired,
    #[error("the enrollment token is used up")]
    UsedUp,
    #[error("the enrollment token was revoked")]
    Revoked,
    /// Another answer (a taken name, throttling): the server's status and message.
    #[error("the server refused the enrollment (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the server's answer is not understood: {0}")]
    BadAnswer(String),
}

/// The API's enrollment URL of the server named by `server` (its WebSocket URL).
#[must_use]
pub fn enroll_url(server: &ServerUrl) -> String {
    let url = server.as_str();
    let base = url.strip_suffix(AGENT_WS_PATH).unwrap_or(url);
    let base = base
        .strip_prefix("wss://")
        .map(|rest| format!("https://{rest}"))
        .or_else(|| {
            base.strip_prefix("ws://")
                .map(|rest| format!("http://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{base}{ENROLL_PATH}")
}

/// Enrolls this machine as `name` with `token`, trusting `ca_file` too for https.
///
/// # Errors
/// See [`EnrollError`].
pub async fn enroll(
    server: &ServerUrl,
    ca_file: Option<&Path>,
    token: &str,
    name: &str,
    timeout: Duration,
) -> Result<Enrolled, EnrollError> {
    let url = enroll_url(server);
    let unreachable = |reason: String| EnrollError::Unreachable {
        url: url.clone(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e| unreachable(format!("{e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| unreachable("no host".into()))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority
        .port_u16()
        .unwrap_or(if server.is_tls() { 443 } else { 80 });
    let body = serde_json::json!({ "token": token, "name": name }).to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
         User-Agent: rmm-agent/{}\r\n\r\n{body}",
        uri.path(),
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    let config = if server.is_tls() {
        Some(tls::client_config(ca_file)?)
    } else {
        None
    };
    let exchange = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match config {
            Some(config) => {
                let name =
                    ServerName::try_from(host.clone()).map_err(|e| unreachable(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                send(stream, &request)
                    .await
                    .map_err(|e| unreachable(e.to_string()))
            }
            None => send(tcp, &request)
                .await
                .map_err(|e| unreachable(e.to_string())),
        }
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))??;
    interpret(&answer)
}

/// Writes the request and reads the whole answer (the server closes after it).
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER);
    match limited.read_to_end(&mut answer).await {
        Ok(_) => Ok(answer),
        // Some servers close TLS without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

/// The enrollment's result from the raw HTTP answer.
fn interpret(answer: &[u8]) -> Result<Enrolled, EnrollError> {
    let bad = |what: &str| EnrollError::BadAnswer(what.to_owned());
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut raw_body = answer[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        raw_body = dechunk(&raw_body).ok_or_else(|| bad("malformed chunked body"))?;
    }
    let json: Value = serde_json::from_slice(&raw_body).unwrap_or(Value::Null);
    let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_owned);
    if status == 201 {
        return match (
            text("agent_id"),
            text("agent_key"),
            text("name"),
            text("group"),
        ) {
            (Some(agent_id), Some(agent_key), Some(name), Some(group)) => Ok(Enrolled {
                agent_id,
                agent_key,
                name,
                group,
            }),
            _ => Err(bad(
                "the 201 answer lacks agent_id, agent_key, name or group",
            )),
        };
    }
    let code = json
        .get("code")
        .cloned()
        .and_then(|c| serde_json::from_value::<ApiErrorCode>(c).ok());
    Err(match code {
        Some(ApiErrorCode::EnrollmentInvalid) => EnrollError::Invalid,
        Some(ApiErrorCode::EnrollmentExpired) => EnrollError::Expired,
        Some(ApiErrorCode::EnrollmentUsedUp) => EnrollError::UsedUp,
        Some(ApiErrorCode::EnrollmentRevoked) => EnrollError::Revoked,
        _ => EnrollError::Refused {
            status,
            message: text("error").unwrap_or_else(|| format!("HTTP {status}")),
        },
    })
}

/// The body of a chunked answer, or `None` when malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enroll_url_is_the_servers_base_with_the_api_path() {
        let url = |s: &str| enroll_url(&ServerUrl::parse(s).unwrap());
        assert_eq!(url("wss://h"), "https://h/api/v1/agents/enroll");
        assert_eq!(url("http://h:8080/"), "http://h:8080/api/v1/agents/enroll");
        assert_eq!(
            url("https://p.example/rmm/api/v1/agent/ws"),
            "https://p.example/rmm/api/v1/agents/enroll"
        );
    }

    #[test]
    fn answers_are_read_by_their_code_and_chunked_bodies_decoded() {
        let refused = |code: &str| {
            let body = format!(r#"{{"error":"x","code":"{code}"}}"#);
            interpret(format!("HTTP/1.1 401 Unauthorized\r\n\r\n{body}").as_bytes()).unwrap_err()
        };
        assert!(matches!(refused("enrollment_used_up"), EnrollError::UsedUp));
        assert!(matches!(
            refused("enrollment_expired"),
            EnrollError::Expired
        ));
        assert!(matches!(
            refused("enrollment_revoked"),
            EnrollError::Revoked
        ));
        assert!(matches!(
            refused("enrollment_invalid"),
            EnrollError::Invalid
        ));
        let ok = r#"{"agent_id":"a","agent_key":"k","name":"n","group":"g"}"#;
        let chunked = format!(
            "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{ok}\r\n0\r\n\r\n",
            ok.len()
        );
        let e = interpret(chunked.as_bytes()).unwrap();
        assert_eq!((e.agent_key.as_str(), e.group.as_str()), ("k", "g"));
    }
}
