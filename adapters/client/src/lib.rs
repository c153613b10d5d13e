//! The technicians' API client, as the `rmm` CLI uses it: one typed method per HTTP operation
//! of the API (reqwest), the session stream WebSocket (tokio-tungstenite), and [`ClientError`],
//! whose messages name the cause and the fix in one line. An error answer is classified by its
//! stable `code` (`rmm_protocol::api::ApiErrorCode`), or by its HTTP status when a server sends
//! none; never by its message text, which is only echoed. File transfers stream both ways: an upload's body is pulled from the caller's stream
//! as the connection takes it, a download's body is read chunk by chunk, so memory stays
//! bounded whatever the file's size.
//!
//! The response types here are the reading side of the server's DTOs: those are poem-openapi
//! objects that only serialize, so the client declares what it reads, with the same field
//! names (the end-to-end tests of the CLI hold the two together). Stream frames are decoded
//! with the server's own [`rmm_protocol`] types, not a copy.
//!
//! It must not know about terminals, config files or exit codes: that is the CLI's.
//!
//! - this file: the client, its requests and their authorization;
//! - `api`: the calls of sessions, commands, agents and the audit log;
//! - `files`: file transfer, streamed both ways;
//! - `stream`: the session stream WebSocket (and the connector every WebSocket shares);
//! - `terminal`: interactive terminals and their WebSocket; `recordings`: their recordings;
//! - `dto`: what the API answers; `token`: the JWT;
//! - `error`: [`ClientError`]; `classify`: how an error answer becomes one, by its `code`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};

mod agent_admin;
mod api;
mod classify;
mod dto;
mod enrollment;
mod error;
mod files;
mod recordings;
mod stream;
mod terminal;
mod tls;
mod token;

pub use agent_admin::{RotatedKeyResponse, UpdatedAgentResponse};
pub use api::{RawOutput, StdinWritten};
pub use dto::{
    AgentDto, AuditEntryDto, AuditFilter, AuditPage, ClosedResponse, CommandDto,
    CommandStartedResponse, OpenedResponse, OutputKind, StatusDto, TokenResponse,
    UploadStatusResponse, UploadedResponse, UserDto,
};
pub use enrollment::{CreatedEnrollmentDto, EnrollmentDto};
pub use error::ClientError;
pub use files::FileDownload;
pub use recordings::{RecordingDto, RecordingFilter};
#[doc(hidden)]
pub use stream::fuzzing as stream_fuzzing;
pub use stream::{OutputFrame, SessionStream, StreamFrame};
pub use terminal::{
    TerminalClosed, TerminalEvent, TerminalExit, TerminalOpened, TerminalSocket, TerminalSpec,
};
pub use token::{Token, TokenParseError};

use classify::{About, ErrorReply};
use error::root_cause;

/// How long to wait for a TCP (and TLS) connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are dropped before the server closes them (it closes a keep-alive
/// connection that sends nothing for its header-read timeout, 10 s by default): reusing one
/// the server is closing at that moment fails a request with a broken pipe, which a streamed
/// upload cannot retry.
const POOL_IDLE: Duration = Duration::from_secs(5);
/// How long an ordinary request may take. Opening a tunnel waits for the agent and
/// cancelling waits for the command's end (each at most 10 s by default on the server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct ApiClient {
    base: Url,
    /// The server as the user gave it, for messages.
    server: String,
    http: reqwest::Client,
    token: Option<Token>,
    /// The stream WebSocket's TLS when an extra CA is trusted; `None`: the system's roots.
    ws_tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server at `server` (`http://host:port`, optionally with a path prefix),
    /// sending `token` where the API needs one. A TLS crypto provider must be installed
    /// (`rustls::crypto::ring::default_provider().install_default()`) before this is called.
    ///
    /// # Errors
    /// [`ClientError::InvalidServer`] when `server` is not an http(s) URL;
    /// [`ClientError::Protocol`] when the HTTP client cannot be built.
    pub fn new(server: &str, token: Option<Token>) -> Result<Self, ClientError> {
        Self::with_ca_file(server, token, None)
    }

    /// As [`Self::new`], trusting the CA certificates of the PEM file `ca_file` beside the
    /// system's roots (a server whose certificate comes from a private CA).
    ///
    /// # Errors
    /// As [`Self::new`]; [`ClientError::CaFile`] when `ca_file` is unreadable or holds no
    /// certificate.
    pub fn with_ca_file(
        server: &str,
        token: Option<Token>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidServer {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(server.trim()).map_err(|e| invalid(&e.to_string()))?;
        // The agent's RMM_SERVER is ws(s)://: the same variable in a shared environment
        // names the same server.
        let scheme = match base.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            _ => return Err(invalid("the scheme must be http or https")),
        };
        base.set_scheme(scheme)
            .map_err(|()| invalid("the scheme must be http or https"))?;
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("no query or fragment allowed"));
        }
        // Endpoint paths are joined relative to the base, so a path prefix must end with '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            .user_agent(concat!("rmm/", env!("CARGO_PKG_VERSION")));
        let mut ws_tls = None;
        if scheme == "http" {
            // Plain HTTP never verifies a certificate: no roots, so none are loaded (the
            // system's take a quarter of a short command's CPU to parse). A CA file is still
            // checked, so a wrong one is said at once.
            if let Some(path) = ca_file {
                tls::ExtraCa::read(path)?;
            }
            http = http.tls_certs_only([]);
        } else if let Some(path) = ca_file {
            let ca = tls::ExtraCa::read(path)?;
            http = http.tls_certs_merge(ca.for_reqwest()?);
            ws_tls = Some(ca.client_config()?);
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            server: base.as_str().trim_end_matches('/').to_owned(),
            base,
            http,
            token,
            ws_tls,
        })
    }

    /// The server's base URL, as shown in messages.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path)
            .map_err(|e| ClientError::Protocol(format!("cannot form the URL of {path}: {e}")))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        authorized: bool,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let request = self.http.request(method, self.url(path)?);
        if authorized {
            self.authorized(request)
        } else {
            Ok(request)
        }
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let token = self.token.as_ref().ok_or(ClientError::NotLoggedIn)?;
        Ok(request.bearer_auth(token.expose()))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        about: About,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let response = self.send(request, about, Some(timeout)).await?;
        self.read_json(response, timeout).await
    }

    /// The JSON body of a successful answer, read within `timeout`.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = response.url().path().to_owned();
        let body = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| self.timed_out(timeout))?
            .map_err(|e| self.transport(&e, timeout))?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("cannot read the answer to {url}: {e}")))
    }

    fn timed_out(&self, after: Duration) -> ClientError {
        ClientError::TimedOut {
            server: self.server.clone(),
            secs: after.as_secs(),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        about: About,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let request = match timeout {
            Some(timeout) => request.timeout(timeout),
            None => request,
        };
        let (client, request) = request.build_split();
        let request = request.map_err(|e| {
            ClientError::Protocol(format!("cannot form the request: {}", root_cause(&e)))
        })?;
        // A GET that fails in transit is sent once more: a pooled connection the server has
        // just closed fails the first request sent on it, and a GET is safe to repeat.
        let again = if request.method() == Method::GET {
            request.try_clone()
        } else {
            None
        };
        let response = match (client.execute(request).await, again) {
            (Err(e), Some(again)) if !e.is_timeout() && !e.is_connect() => {
                client.execute(again).await
            }
            (sent, _) => sent,
        }
        .map_err(|e| self.transport(&e, timeout.unwrap_or(REQUEST_TIMEOUT)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(ErrorReply::parse(status.as_u16(), &body).into_error(about))
    }

    fn transport(&self, e: &reqwest::Error, timeout: Duration) -> ClientError {
        if e.is_timeout() {
            ClientError::TimedOut {
                server: self.server.clone(),
                secs: timeout.as_secs(),
            }
        } else if e.is_decode() {
            ClientError::Protocol(root_cause(e))
        } else {
            ClientError::Unreachable {
                server: self.server.clone(),
                cause: root_cause(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn server_urls_must_be_http_and_get_a_trailing_slash() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ApiClient::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(client.server(), "http://127.0.0.1:8080");
        assert_eq!(
            client.url("api/v1/agents").unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/agents"
        );
        let agent_style = ApiClient::new("wss://rmm.example:8443", None).unwrap();
        assert_eq!(agent_style.server(), "https://rmm.example:8443");
        let prefixed = ApiClient::new("https://rmm.example/base", None).unwrap();
        assert_eq!(
            prefixed.url("api/v1/agents").unwrap().as_str(),
            "https://rmm.example/base/api/v1/agents"
        );
        for bad in ["ftp://x", "not a url", "http://x/?q=1"] {
            assert!(
                matches!(
                    ApiClient::new(bad, None),
                    Err(ClientError::InvalidServer { .. })
                ),
                "{bad}"
            );
        }
    }
}
