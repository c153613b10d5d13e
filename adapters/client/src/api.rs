//! The calls of the API other than file transfer and the stream: logging in, agents, tunnels,
//! commands and their stored output, the audit log.

use std::time::Duration;

use chrono::SecondsFormat;
use futures_util::Stream;
use reqwest::Method;
use rmm_domain::{AgentId, CommandId, SessionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::classify::About;
use crate::error::root_cause;
use crate::{
    AgentDto, ApiClient, AuditFilter, AuditPage, ClientError, ClosedResponse, CommandDto,
    CommandStartedResponse, OpenedResponse, OutputKind, REQUEST_TIMEOUT, StatusDto, TokenResponse,
    UserDto,
};

/// Added to a long poll's `wait`: the server holds the request that long, then answers.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct OpenBody {
    agent_id: Uuid,
}

#[derive(Serialize)]
struct CloseBody {
    session_id: Uuid,
}

#[derive(Serialize)]
struct CommandBody<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
    /// Sent only when set: a server that predates command stdin accepts the body as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stdin: bool,
}

/// The answer to `PUT .../commands/{command_id}/stdin`: the bytes delivered to the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StdinWritten {
    pub command_id: Uuid,
    pub bytes: u64,
}

impl ApiClient {
    /// Logs in.
    ///
    /// # Errors
    /// [`ClientError::InvalidCredentials`] on a wrong username or password; transport and
    /// server errors as for every call.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/auth/login", false)?
            .json(&LoginBody { username, password });
        self.json(request, About::Login, REQUEST_TIMEOUT).await
    }

    /// Every registered agent, by name.
    ///
    /// # Errors
    /// [`ClientError::NotLoggedIn`], [`ClientError::TokenExpired`], transport and server
    /// errors.
    pub async fn agents(&self) -> Result<Vec<AgentDto>, ClientError> {
        let request = self.request(Method::GET, "api/v1/agents", true)?;
        self.json(request, About::Agents, REQUEST_TIMEOUT).await
    }

    /// Opens a tunnel; answers once the agent has confirmed it.
    ///
    /// # Errors
    /// [`ClientError::AgentOffline`] (404), [`ClientError::AgentBusy`] (409),
    /// [`ClientError::OpenTimedOut`] (504), [`ClientError::Unavailable`] (503), auth,
    /// transport and server errors. Name the agent with [`ClientError::naming_agent`].
    pub async fn open_tunnel(&self, agent: AgentId) -> Result<OpenedResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/tunnel/open", true)?
            .json(&OpenBody {
                agent_id: agent.as_uuid(),
            });
        self.json(request, About::Open(agent), REQUEST_TIMEOUT)
            .await
    }

    /// Closes a tunnel (idempotent).
    ///
    /// # Errors
    /// [`ClientError::SessionNotFound`], [`ClientError::SessionForbidden`], auth, transport
    /// and server errors.
    pub async fn close_tunnel(&self, session: SessionId) -> Result<ClosedResponse, ClientError> {
        let request = self
            .request(Method::POST, "api/v1/tunnel/close", true)?
            .json(&CloseBody {
                session_id: session.as_uuid(),
            });
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// A session's status, closed sessions included.
    ///
    /// # Errors
    /// [`ClientError::SessionNotFound`], [`ClientError::SessionForbidden`], auth, transport
    /// and server errors.
    pub async fn tunnel_status(&self, session: SessionId) -> Result<StatusDto, ClientError> {
        let path = format!("api/v1/tunnel/status/{session}");
        let request = self.request(Method::GET, &path, true)?;
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// Runs `command` (through the agent's shell) in the session; answers at once. With
    /// `stdin`, its standard input is a pipe fed by [`Self::command_stdin`] (else /dev/null).
    ///
    /// # Errors
    /// [`ClientError::BadRequest`] for an empty or too long command or a bad timeout,
    /// [`ClientError::SessionNotUsable`] (409: closed, agent gone, channel busy),
    /// [`ClientError::Unavailable`] (503: agent saturated or audit log unwritable), session,
    /// auth, transport and server errors.
    pub async fn run_command(
        &self,
        session: SessionId,
        command: &str,
        timeout_secs: Option<u64>,
        stdin: bool,
    ) -> Result<CommandStartedResponse, ClientError> {
        let path = format!("api/v1/tunnel/{session}/command");
        let request = self.request(Method::POST, &path, true)?.json(&CommandBody {
            command,
            timeout_secs,
            stdin,
        });
        self.json(request, About::Session(session), REQUEST_TIMEOUT)
            .await
    }

    /// Streams `body` to the standard input of a command started with `stdin`; its end is
    /// the end of the command's input (EOF). Answers once all of it is delivered, however
    /// long the body takes (no timeout on the whole request).
    ///
    /// # Errors
    /// [`ClientError::SessionNotUsable`] (409: started without stdin, its stdin already
    /// ended, or the command ended), [`ClientError::CommandNotFound`], session, auth,
    /// transport and server errors.
    pub async fn command_stdin<S>(
        &self,
        session: SessionId,
        command: CommandId,
        body: S,
    ) -> Result<StdinWritten, ClientError>
    where
        S: Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
    {
        let path = format!("api/v1/tunnel/{session}/commands/{command}/stdin");
        let request = self
            .request(Method::PUT, &path, true)?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let response = self
            .send(request, About::Command(session, command), None)
            .await?;
        self.read_json(response, REQUEST_TIMEOUT).await
    }

    /// A command's status and stored output; with `wait`, the server holds the request until
    /// the command ends or `wait` passes (it honours at most 300 s).
    ///
    /// # Errors
    /// [`ClientError::CommandNotFound`], session, auth, transport and server errors.
    pub async fn command(
        &self,
        session: SessionId,
        command: CommandId,
        wait: Option<Duration>,
    ) -> Result<CommandDto, ClientError> {
        let path = format!("api/v1/tunnel/{session}/commands/{command}");
        let mut url = self.url(&path)?;
        if let Some(wait) = wait {
            url.query_pairs_mut()
                .append_pair("wait", &wait.as_secs().to_string());
        }
        let request = self.authorized(self.http.get(url))?;
        let timeout = wait.map_or(REQUEST_TIMEOUT, |w| w + LONG_POLL_MARGIN);
        self.json(request, About::Command(session, command), timeout)
            .await
    }

    /// Cancels a running command (the agent kills its process group); answers with the
    /// command once it has ended, or after the server's wait (10 s).
    ///
    /// # Errors
    /// As [`Self::command`].
    pub async fn cancel_command(
        &self,
        session: SessionId,
        command: CommandId,
    ) -> Result<CommandDto, ClientError> {
        let path = format!("api/v1/tunnel/{session}/commands/{command}");
        let request = self.request(Method::DELETE, &path, true)?;
        self.json(request, About::Command(session, command), REQUEST_TIMEOUT)
            .await
    }

    /// The exact stored bytes of one output stream, streamed in chunks.
    ///
    /// # Errors
    /// As [`Self::command`].
    pub async fn command_output(
        &self,
        session: SessionId,
        command: CommandId,
        stream: OutputKind,
    ) -> Result<RawOutput, ClientError> {
        let path = format!(
            "api/v1/tunnel/{session}/commands/{command}/{}",
            stream.as_str()
        );
        let request = self.request(Method::GET, &path, true)?;
        // No timeout on the whole request: the body may be large. The answer's head and then
        // each chunk are awaited with one instead.
        let sending = self.send(request, About::Command(session, command), None);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sending)
            .await
            .map_err(|_| ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            })??;
        Ok(RawOutput {
            response,
            server: self.server.clone(),
        })
    }

    /// One page of the audit log, newest first.
    ///
    /// # Errors
    /// [`ClientError::Forbidden`] when a technician asks for other users' entries, auth,
    /// transport and server errors.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditPage, ClientError> {
        let url = self.audit_url("api/v1/audit", filter)?;
        let request = self.authorized(self.http.get(url))?;
        self.json(request, About::Audit, REQUEST_TIMEOUT).await
    }

    /// The audit log exported as `format` (`ndjson` or `csv`), as it arrives; the filter's
    /// `limit` is not used (every matching entry comes).
    ///
    /// # Errors
    /// As [`Self::audit`]; 400 for an unknown format.
    pub async fn audit_export(
        &self,
        filter: &AuditFilter,
        format: &str,
    ) -> Result<RawOutput, ClientError> {
        let mut url = self.audit_url("api/v1/audit/export", filter)?;
        url.query_pairs_mut().append_pair("format", format);
        let request = self.authorized(self.http.get(url))?;
        let sending = self.send(request, About::Audit, None);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sending)
            .await
            .map_err(|_| ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            })??;
        Ok(RawOutput::new(response, self.server.clone()))
    }

    fn audit_url(&self, path: &str, filter: &AuditFilter) -> Result<reqwest::Url, ClientError> {
        let mut url = self.url(path)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(agent) = filter.agent {
                query.append_pair("agent_id", &agent.to_string());
            }
            if let Some(session) = filter.session {
                query.append_pair("session_id", &session.to_string());
            }
            if let Some(since) = filter.since {
                query.append_pair("since", &since.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            if let Some(until) = filter.until {
                query.append_pair("until", &until.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(before) = filter.before {
                query.append_pair("before", &before.to_string());
            }
        }
        Ok(url)
    }

    /// Every user (admins only), by username.
    ///
    /// # Errors
    /// [`ClientError::Forbidden`] for non-admins, auth, transport and server errors.
    pub async fn users(&self) -> Result<Vec<UserDto>, ClientError> {
        let request = self.request(Method::GET, "api/v1/users", true)?;
        self.json(request, About::Users, REQUEST_TIMEOUT).await
    }
}

/// The stored bytes of one output stream, as they arrive.
#[derive(Debug)]
pub struct RawOutput {
    response: reqwest::Response,
    server: String,
}

impl RawOutput {
    pub(crate) fn new(response: reqwest::Response, server: String) -> Self {
        Self { response, server }
    }

    /// The next chunk; `None` at the end.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the connection fails mid-body,
    /// [`ClientError::TimedOut`] when no chunk arrives for a minute.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(ClientError::Unreachable {
                server: self.server.clone(),
                cause: root_cause(&e),
            }),
            Err(_) => Err(ClientError::TimedOut {
                server: self.server.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }
}
