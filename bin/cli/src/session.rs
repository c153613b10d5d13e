//! The session a one-shot command (`exec`, `cp`) works in, and Ctrl-C while it does: the
//! caller's open session to the agent when there is one, else a session opened for the command
//! and closed after it (unless `--keep`, which remembers it for the next command).
//!
//! Ctrl-C is caught from before the session is opened, so rmm is never killed between opening
//! a session and closing it.

use std::io::Write as _;

use rmm_client::{AgentDto, ApiClient, ClientError};
use rmm_domain::SessionId;

use super::CliError;
use super::commands::{remember, remembered_active};
use super::config::ConfigDir;

/// A session held for one command.
#[derive(Debug)]
pub struct Lease {
    session: SessionId,
    /// Opened for this command and not kept: [`Lease::release`] closes it.
    close_after: bool,
}

impl Lease {
    /// The caller's active session to `agent`, else a new one (remembered when `keep`).
    /// `None` when Ctrl-C came before a session was there; a session the server opens after
    /// that is closed again (unless Ctrl-C comes a second time).
    ///
    /// # Errors
    /// Client errors (agent offline, busy, ...; naming the agent), config errors.
    pub async fn acquire(
        client: &ApiClient,
        dir: &ConfigDir,
        agent: &AgentDto,
        keep: bool,
        interrupts: &mut Interrupts,
    ) -> Result<Option<Self>, CliError> {
        if let Some(session) = remembered_active(client, dir, agent.id()).await? {
            return Ok(Some(Self {
                session,
                close_after: false,
            }));
        }
        let opening = client.open_tunnel(agent.id());
        tokio::pin!(opening);
        let opened = tokio::select! {
            opened = &mut opening => opened.map_err(|e| e.naming_agent(&agent.name))?,
            () = interrupts.recv() => {
                // The server may still complete the open: close what it opens, unless
                // interrupted again.
                tokio::select! {
                    opened = &mut opening => if let Ok(opened) = opened {
                        let _ = client.close_tunnel(opened.session()).await;
                    },
                    () = interrupts.recv() => {}
                }
                return Ok(None);
            }
        };
        let lease = Self {
            session: opened.session(),
            close_after: !keep,
        };
        if keep && let Err(e) = remember(client, dir, agent, lease.session) {
            // Not remembered, it could not be found again: do not leave it open.
            let _ = client.close_tunnel(lease.session).await;
            return Err(e);
        }
        Ok(Some(lease))
    }

    /// The caller's remembered session, trusted without asking the server (a session that
    /// is gone shows as an error of the first call, and the caller then looks again).
    #[must_use]
    pub fn remembered(session: SessionId) -> Self {
        Self {
            session,
            close_after: false,
        }
    }

    #[must_use]
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Whether [`Self::release`] closes the session.
    #[must_use]
    pub fn closes_after(&self) -> bool {
        self.close_after
    }

    /// Closes the session if it was opened for this command and not kept; says so on stderr
    /// when that fails. A close that fails in transit is sent once more (closing is
    /// idempotent): a session left open would keep the agent from every other tunnel.
    pub async fn release(self, client: &ApiClient) {
        let session = self.session;
        if !self.close_after {
            return;
        }
        let closed = match client.close_tunnel(session).await {
            Err(ClientError::Unreachable { .. } | ClientError::TimedOut { .. }) => {
                client.close_tunnel(session).await
            }
            closed => closed,
        };
        if let Err(e) = closed {
            let _ = writeln!(
                std::io::stderr(),
                "rmm: could not close session {session} ({e}); close it with `rmm close {session}`"
            );
        }
    }
}

/// Ctrl-C (SIGINT), caught from the moment [`Interrupts::listen`] is called: a Ctrl-C that
/// comes while rmm is busy waits for the next [`Interrupts::recv`]. In the exec mux, the
/// Ctrl-Cs of the `rmm exec` it runs a command for, sent over its socket
/// ([`Interrupts::relayed`]).
#[derive(Debug)]
pub struct Interrupts {
    source: Source,
}

#[derive(Debug)]
enum Source {
    #[cfg(unix)]
    Signal(tokio::signal::unix::Signal),
    #[cfg(windows)]
    Signal(tokio::signal::windows::CtrlC),
    Relayed(tokio::sync::mpsc::UnboundedReceiver<()>),
}

impl Interrupts {
    /// # Errors
    /// [`CliError::Local`] when the signal handler cannot be installed.
    pub fn listen() -> Result<Self, CliError> {
        let failed = |e: std::io::Error| CliError::Local(format!("cannot catch Ctrl-C: {e}"));
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(failed)?;
        #[cfg(windows)]
        let signal = tokio::signal::windows::ctrl_c().map_err(failed)?;
        Ok(Self {
            source: Source::Signal(signal),
        })
    }

    /// Ctrl-Cs sent down a channel (one `()` each).
    #[must_use]
    pub fn relayed(receiver: tokio::sync::mpsc::UnboundedReceiver<()>) -> Self {
        Self {
            source: Source::Relayed(receiver),
        }
    }

    /// Resolves on the next Ctrl-C (at once for one that came since the last).
    pub async fn recv(&mut self) {
        let received = match &mut self.source {
            Source::Signal(signal) => signal.recv().await.is_some(),
            Source::Relayed(receiver) => receiver.recv().await.is_some(),
        };
        if !received {
            std::future::pending::<()>().await;
        }
    }

    /// Whether a Ctrl-C has come, without waiting.
    pub async fn pending(&mut self) -> bool {
        tokio::select! {
            biased;
            () = self.recv() => true,
            () = std::future::ready(()) => false,
        }
    }
}
