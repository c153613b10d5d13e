//! Interactive terminals: a PTY on the agent, opened in a tunnel session, attached to by its
//! owner's client (and watched read-only by admins), living on for a grace period when the
//! client's socket drops, recorded from its first byte, audited when it opens, when it is
//! watched and when it ends.
//!
//! Each terminal is run by one task (`actor`): it takes the agent's output, records it,
//! keeps the last [`REPLAY_BYTES`] for a reattach, hands it to the attached client and grants
//! the agent credit only for what was handed on, so a client that stops reading holds the
//! agent's output, not the server's memory.

use std::sync::Arc;
use std::time::Duration;

use rmm_domain::{
    Actor, ChannelId, CommandText, SessionAction, SessionId, SessionStatus, TermName, TermSize,
    TerminalEnd, TerminalId, Timestamp, UserId,
};
use tokio::sync::{mpsc, oneshot};

use crate::access::{SessionUseError, session_for};
use crate::app::{App, Ports};
use crate::ports::{
    AgentGateway, AuditAction, AuditEvent, AuditLog, Clock, GatewayError, IdGenerator, PtyEvent,
    PtyLink, PtySpec, RecordingRecord, RecordingRepository, StoreError,
};

mod actor;
mod recorder;

pub use crate::live_terminals::{
    Attachment, TerminalExit, TerminalFrame, TerminalInput, TerminalView,
};
use crate::live_terminals::{Cmd, Entry};
use actor::TerminalActor;

/// Output kept for a client that reattaches.
pub const REPLAY_BYTES: usize = 64 * 1024;

/// How long a terminal may take to end after it was asked to (the agent sends HUP, TERM
/// after 2 s, KILL after 2 more).
const CLOSE_WAIT: Duration = Duration::from_secs(8);

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTerminal {
    pub cols: u16,
    pub rows: u16,
    pub term: Option<String>,
    pub command: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("{0}")]
    Invalid(String),
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is owned by another user")]
    Forbidden(SessionId),
    #[error("session {0} is not active")]
    NotActive(SessionId),
    #[error("terminal {0} not found in this session")]
    TerminalNotFound(TerminalId),
    #[error("the agent of session {0} is not connected")]
    AgentOffline(SessionId),
    #[error("the agent does not support terminals (upgrade the agent)")]
    Unsupported,
    #[error("the tunnel has too many terminals, transfers and commands open")]
    Busy,
    #[error("the agent is overloaded; try again")]
    Overloaded,
    #[error("the agent did not start the terminal in time")]
    Timeout,
    #[error("the agent could not start the terminal: {0}")]
    Refused(String),
    /// The terminal could not be audited or its recording created, so it was not started:
    /// terminals never run unrecorded.
    #[error("the terminal cannot be audited and recorded, so it was not started")]
    AuditUnavailable(#[source] StoreError),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
}

impl From<SessionUseError> for TerminalError {
    fn from(e: SessionUseError) -> Self {
        match e {
            SessionUseError::NotFound(id) => Self::NotFound(id),
            SessionUseError::Forbidden(id) => Self::Forbidden(id),
            SessionUseError::Store(e) => Self::Store(e),
        }
    }
}

impl<P: Ports> App<P> {
    /// Starts a terminal on the session's agent: audited and its recording created before
    /// the agent is asked, then waits for the agent to start it.
    ///
    /// # Errors
    /// See [`TerminalError`].
    pub async fn open_terminal(
        self: &Arc<Self>,
        actor: Actor,
        session_id: SessionId,
        request: NewTerminal,
    ) -> Result<TerminalView, TerminalError> {
        let spec = spec_of(&request)?;
        let session = session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        if session.status() != SessionStatus::Active {
            return Err(TerminalError::NotActive(session_id));
        }
        let view = TerminalView {
            id: self.ids.terminal_id(),
            session: session_id,
            agent: session.agent(),
            owner: actor.id,
            size: spec.size,
            term: spec.term.as_str().to_owned(),
            command: spec.command.clone(),
            started_at: self.clock.now(),
            attached: false,
        };
        self.record_open(&view).await?;
        let channel = ChannelId::for_terminal(view.id);
        let link = match self
            .gateway
            .open_pty(view.agent, session_id, &channel, &spec)
        {
            Ok(link) => link,
            Err(e) => {
                self.end_unstarted(&view).await;
                return Err(match e {
                    GatewayError::NotConnected | GatewayError::Disconnected => {
                        TerminalError::AgentOffline(session_id)
                    }
                    GatewayError::Busy => TerminalError::Busy,
                    GatewayError::Overloaded => TerminalError::Overloaded,
                    GatewayError::Unsupported => TerminalError::Unsupported,
                });
            }
        };
        let link = self.await_ready(&view, link).await?;
        self.start_actor(view.clone(), link);
        self.session_activity(session_id);
        tracing::info!(terminal_id = %view.id, session_id = %session_id, agent_id = %view.agent, user_id = %actor.id, size = %view.size, "terminal started");
        Ok(view)
    }

    /// The audit entry and the empty recording, before anything runs.
    async fn record_open(&self, view: &TerminalView) -> Result<(), TerminalError> {
        let entry = audit_entry(
            view,
            view.started_at,
            AuditAction::TerminalOpen,
            view.owner,
            open_detail(view),
        );
        self.audit
            .append(&entry)
            .await
            .map_err(TerminalError::AuditUnavailable)?;
        let recording = RecordingRecord {
            id: view.id,
            session: view.session,
            agent: view.agent,
            user: view.owner,
            started_at: view.started_at,
            ended_at: None,
            cols: view.size.cols(),
            rows: view.size.rows(),
            term: view.term.clone(),
            command: view.command.clone(),
            size: 0,
            truncated: false,
            pruned: false,
        };
        if let Err(e) = self.recordings.create(&recording).await {
            self.end_unstarted(view).await;
            return Err(TerminalError::AuditUnavailable(e));
        }
        Ok(())
    }

    /// Waits for the agent's `pty_ready`.
    async fn await_ready(
        &self,
        view: &TerminalView,
        mut link: PtyLink,
    ) -> Result<PtyLink, TerminalError> {
        let first = tokio::time::timeout(self.config.open_timeout, link.events.recv()).await;
        let error = match first {
            Ok(Some(PtyEvent::Ready)) => return Ok(link),
            Ok(Some(PtyEvent::Failed(why))) => TerminalError::Refused(why),
            Ok(Some(other)) => TerminalError::Refused(format!("unexpected first event {other:?}")),
            Ok(None) => TerminalError::AgentOffline(view.session),
            Err(_) => TerminalError::Timeout,
        };
        let _ = link.close.send(true);
        self.end_unstarted(view).await;
        Err(error)
    }

    /// A terminal that never started: its end entry and its (empty) recording closed.
    async fn end_unstarted(&self, view: &TerminalView) {
        let now = self.clock.now();
        let failed = TerminalExit {
            end: TerminalEnd::Failed,
            exit_code: None,
            signal: None,
        };
        let entry = audit_entry(
            view,
            now,
            AuditAction::TerminalClose,
            view.owner,
            end_detail(view, &failed, 0),
        );
        if let Err(e) = self.audit.append(&entry).await {
            tracing::error!(terminal_id = %view.id, error = %e, "could not audit the end of a terminal that did not start");
        }
        if let Err(e) = self.recordings.finish(view.id, now, false).await {
            tracing::warn!(terminal_id = %view.id, error = %e, "could not close the recording of a terminal that did not start");
        }
    }

    fn start_actor(self: &Arc<Self>, view: TerminalView, link: PtyLink) {
        let (cmds_tx, cmds_rx) = mpsc::channel(64);
        let attached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.terminals.lock().insert(
            view.id,
            Entry {
                view: view.clone(),
                attached: Arc::clone(&attached),
                cmds: cmds_tx.clone(),
            },
        );
        let actor = TerminalActor::new(Arc::clone(self), view, link, cmds_rx, cmds_tx, attached);
        tokio::spawn(actor.run());
    }

    /// The live terminals of a session, for its owner.
    ///
    /// # Errors
    /// See [`TerminalError`].
    pub async fn list_terminals(
        &self,
        actor: Actor,
        session_id: SessionId,
    ) -> Result<Vec<TerminalView>, TerminalError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        let mut views: Vec<TerminalView> = self
            .terminals
            .of_session(session_id)
            .into_iter()
            .map(|e| TerminalView {
                attached: e.attached.load(std::sync::atomic::Ordering::Relaxed),
                ..e.view
            })
            .collect();
        views.sort_by_key(|v| v.started_at);
        Ok(views)
    }

    /// Ends a terminal (HUP to its process group, then TERM, then KILL) and waits for its
    /// end: the owner only.
    ///
    /// # Errors
    /// See [`TerminalError`].
    pub async fn close_terminal(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: TerminalId,
    ) -> Result<TerminalExit, TerminalError> {
        session_for(
            &*self.sessions,
            &*self.groups,
            actor,
            session_id,
            SessionAction::Use,
        )
        .await?;
        let entry = self
            .terminals
            .get(session_id, id)
            .ok_or(TerminalError::TerminalNotFound(id))?;
        let (reply, exit) = oneshot::channel();
        let asked = entry.cmds.send(Cmd::Close {
            end: TerminalEnd::Closed,
            reply: Some(reply),
        });
        if asked.await.is_err() {
            return Err(TerminalError::TerminalNotFound(id));
        }
        exit.await.map_err(|_| TerminalError::TerminalNotFound(id))
    }

    /// Attaches a client: the owner (taking over any earlier attach of theirs) or, with
    /// `watch`, an admin read-only (audited when it is not the owner). The replay starts at
    /// output position `since` when the server still holds it (a client reattaching after
    /// what it already shows), else at the oldest output held.
    ///
    /// # Errors
    /// See [`TerminalError`].
    pub async fn attach_terminal(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: TerminalId,
        watch: bool,
        since: Option<u64>,
    ) -> Result<Attachment, TerminalError> {
        self.authorize_terminal(actor, session_id, id, watch)
            .await?;
        let entry = self
            .terminals
            .get(session_id, id)
            .ok_or(TerminalError::TerminalNotFound(id))?;
        if watch && actor.id != entry.view.owner {
            self.audit_watch(actor, &entry.view).await?;
        }
        let (reply, attachment) = oneshot::channel();
        let attach = Cmd::Attach {
            watch,
            since,
            reply,
        };
        if entry.cmds.send(attach).await.is_err() {
            return Err(TerminalError::TerminalNotFound(id));
        }
        attachment
            .await
            .map_err(|_| TerminalError::TerminalNotFound(id))
    }

    /// Whether `actor` may (still) be attached to the terminal: checked at attach and again
    /// while the socket lives (a revoked token, an agent moved out of the user's groups).
    ///
    /// # Errors
    /// See [`TerminalError`].
    pub async fn authorize_terminal(
        &self,
        actor: Actor,
        session_id: SessionId,
        id: TerminalId,
        watch: bool,
    ) -> Result<(), TerminalError> {
        let action = if watch {
            SessionAction::Watch
        } else {
            SessionAction::Use
        };
        let session =
            session_for(&*self.sessions, &*self.groups, actor, session_id, action).await?;
        if session.status() != SessionStatus::Active {
            return Err(TerminalError::NotActive(session_id));
        }
        if self.terminals.get(session_id, id).is_none() {
            return Err(TerminalError::TerminalNotFound(id));
        }
        Ok(())
    }

    async fn audit_watch(&self, actor: Actor, view: &TerminalView) -> Result<(), TerminalError> {
        let entry = audit_entry(
            view,
            self.clock.now(),
            AuditAction::TerminalWatch,
            actor.id,
            format!("terminal_id={} owner={}", view.id, view.owner),
        );
        self.audit
            .append(&entry)
            .await
            .map_err(TerminalError::AuditUnavailable)
    }

    /// A session ended: its terminals end too (`why`: session_closed or agent_disconnected).
    pub(crate) async fn end_session_terminals(&self, session: SessionId, why: TerminalEnd) {
        for entry in self.terminals.of_session(session) {
            let _ = entry
                .cmds
                .send(Cmd::Close {
                    end: why,
                    reply: None,
                })
                .await;
        }
    }

    /// How many terminals are live in this process.
    #[must_use]
    pub fn live_terminals(&self) -> usize {
        self.terminals.len()
    }
}

fn spec_of(request: &NewTerminal) -> Result<PtySpec, TerminalError> {
    let size = TermSize::new(request.cols, request.rows)
        .map_err(|e| TerminalError::Invalid(e.to_string()))?;
    let term = match &request.term {
        Some(term) => TermName::parse(term).map_err(|e| TerminalError::Invalid(e.to_string()))?,
        None => TermName::default(),
    };
    let command = match &request.command {
        Some(command) => Some(
            CommandText::parse(command)
                .map_err(|e| TerminalError::Invalid(format!("command: {e}")))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    Ok(PtySpec {
        size,
        term,
        command,
    })
}

fn open_detail(view: &TerminalView) -> String {
    let mut detail = format!(
        "terminal_id={} size={} term={}",
        view.id, view.size, view.term
    );
    match &view.command {
        Some(command) => detail.push_str(&format!(" command={command}")),
        None => detail.push_str(" command=(login shell)"),
    }
    detail
}

/// A terminal's audit entry: by `user`, on its agent and session.
fn audit_entry(
    view: &TerminalView,
    at: Timestamp,
    action: AuditAction,
    user: UserId,
    detail: String,
) -> AuditEvent {
    let mut entry = AuditEvent::new(at, action);
    entry.user = Some(user);
    entry.agent = Some(view.agent);
    entry.session = Some(view.session);
    entry.detail = Some(detail);
    entry
}

/// The detail of a terminal's end: why, its exit code or signal, its output bytes.
fn end_detail(view: &TerminalView, exit: &TerminalExit, output: u64) -> String {
    let mut detail = format!("terminal_id={} reason={}", view.id, exit.end.as_str());
    if let Some(code) = exit.exit_code {
        detail.push_str(&format!(" exit_code={code}"));
    }
    if let Some(signal) = exit.signal {
        detail.push_str(&format!(" signal={signal}"));
    }
    detail.push_str(&format!(" output_bytes={output}"));
    detail
}
