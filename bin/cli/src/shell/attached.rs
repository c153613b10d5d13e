//! One attached terminal: output to our stdout, our input (through the `~.` escape) to it,
//! our window size on SIGWINCH, and reattaching by itself when the connection is lost.
//!
//! A lost connection (an error, or a close other than the server's normal ends: 1000, 1008
//! and 4000) is retried with a short backoff for up to [`REATTACH_FOR`], inside the server's
//! grace period; the server replays the recent output on attach, so the screen is drawn
//! again. Input typed meanwhile is held (up to [`HELD_INPUT`]) and sent on reattach; `~.`
//! still disconnects.

use std::io::Write as _;
use std::time::Duration;

use rmm_client::{ApiClient, ClientError, TerminalEvent, TerminalSocket};
use rmm_domain::SessionId;
use tokio::time::Instant;
use uuid::Uuid;

use super::escape::Escape;
use super::{Outcome, tty};
use crate::CliError;
use crate::input::Input;
use crate::session::Interrupts;

/// How long to keep trying to reattach after a lost connection.
const REATTACH_FOR: Duration = Duration::from_secs(60);
/// The first pause between attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Input kept while reattaching; beyond it, typed bytes are dropped.
const HELD_INPUT: usize = 64 * 1024;

/// The close codes that end a terminal's socket on purpose: ended or closed (1000), refused
/// by policy (1008: token revoked, ...), taken over by another attach (4000).
const NORMAL_CLOSES: [u16; 3] = [1000, 1008, 4000];

/// How an attachment ended.
enum Attachment {
    Ended(Outcome),
    Lost(String),
}

/// A terminal being used.
pub(super) struct Attached<'a> {
    pub client: &'a ApiClient,
    pub session: SessionId,
    pub terminal: Uuid,
    pub input: Input,
    /// Our stdin has not ended.
    pub input_open: bool,
    /// `~.` is recognised (our stdin is a terminal).
    pub escape: Option<Escape>,
    pub signals: Signals,
    pub interrupts: &'a mut Interrupts,
    /// Input typed while the connection was lost, sent on reattach.
    pub held: Vec<u8>,
}

/// What one input chunk came to.
enum Typed {
    Nothing,
    Send(Vec<u8>),
    Disconnect(Vec<u8>),
}

impl Attached<'_> {
    /// Runs the terminal until it ends, is left, or cannot be reattached.
    ///
    /// # Errors
    /// [`CliError::Local`] when our stdout cannot be written.
    pub async fn run(mut self, mut socket: TerminalSocket) -> Result<Outcome, CliError> {
        loop {
            match self.attachment(&mut socket).await? {
                Attachment::Ended(outcome) => {
                    socket.close().await;
                    return Ok(outcome);
                }
                Attachment::Lost(why) => match self.reattach(&why, socket.position()).await? {
                    Ok(again) => socket = again,
                    Err(outcome) => return Ok(outcome),
                },
            }
        }
    }

    async fn attachment(&mut self, socket: &mut TerminalSocket) -> Result<Attachment, CliError> {
        loop {
            tokio::select! {
                event = socket.next_event() => match event {
                    TerminalEvent::Output(bytes) => show(&bytes)?,
                    TerminalEvent::Exit(exit) => return Ok(Attachment::Ended(Outcome::Exited(exit))),
                    TerminalEvent::Closed { code, reason } if NORMAL_CLOSES.contains(&code) => {
                        return Ok(Attachment::Ended(Outcome::Closed { code, reason }));
                    }
                    TerminalEvent::Closed { code, reason } => {
                        return Ok(Attachment::Lost(format!("closed with {code} {reason}")));
                    }
                    TerminalEvent::Lost(why) => return Ok(Attachment::Lost(why)),
                },
                chunk = self.input.recv(), if self.input_open => match self.typed(chunk) {
                    Typed::Nothing => {}
                    Typed::Send(bytes) => {
                        if let Err(e) = socket.send_input(&bytes).await {
                            self.hold(&bytes);
                            return Ok(Attachment::Lost(e.to_string()));
                        }
                    }
                    Typed::Disconnect(bytes) => {
                        let _ = socket.send_input(&bytes).await;
                        return Ok(Attachment::Ended(Outcome::Detached));
                    }
                },
                signal = self.signals.next() => match signal {
                    Signal::Resize => {
                        let (cols, rows) = tty::size();
                        if let Err(e) = socket.send_resize(cols, rows).await {
                            return Ok(Attachment::Lost(e.to_string()));
                        }
                    }
                    Signal::Stop(number) => return Ok(Attachment::Ended(Outcome::Signalled(number))),
                },
                () = self.interrupts.recv() => return Ok(Attachment::Ended(Outcome::Signalled(SIGINT))),
            }
        }
    }

    /// Our input, through the escape.
    fn typed(&mut self, chunk: Option<std::io::Result<Vec<u8>>>) -> Typed {
        let Some(Ok(bytes)) = chunk else {
            self.input_open = false;
            return Typed::Nothing;
        };
        match self.escape.as_mut() {
            None => Typed::Send(bytes),
            Some(escape) => {
                let filtered = escape.feed(&bytes);
                if filtered.disconnect {
                    Typed::Disconnect(filtered.send)
                } else if filtered.send.is_empty() {
                    Typed::Nothing
                } else {
                    Typed::Send(filtered.send)
                }
            }
        }
    }

    fn hold(&mut self, bytes: &[u8]) {
        let room = HELD_INPUT.saturating_sub(self.held.len());
        self.held
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    /// Attaches again, with backoff, for up to [`REATTACH_FOR`]; `Err` with how it ended
    /// when it cannot (or the user left meanwhile).
    /// `position` is the output we already show: the server replays only what follows when
    /// it still holds it, so nothing shows twice.
    async fn reattach(
        &mut self,
        why: &str,
        position: Option<u64>,
    ) -> Result<Result<TerminalSocket, Outcome>, CliError> {
        notice("connection lost, reattaching...");
        let deadline = Instant::now() + REATTACH_FOR;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(outcome) = self.wait(backoff).await {
                return Ok(Err(outcome));
            }
            match self
                .client
                .attach_terminal(self.session, self.terminal, position)
                .await
            {
                Ok(mut socket) => {
                    notice("reattached");
                    let (cols, rows) = tty::size();
                    let held = std::mem::take(&mut self.held);
                    let sent = match socket.send_resize(cols, rows).await {
                        Ok(()) => socket.send_input(&held).await,
                        Err(e) => Err(e),
                    };
                    if sent.is_err() {
                        self.hold(&held);
                        continue;
                    }
                    return Ok(Ok(socket));
                }
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    return Ok(Err(Outcome::Lost(format!(
                        "{why}; reattaching failed: {e}"
                    ))));
                }
            }
        }
    }

    /// Waits `pause`, still reading input (held for later; `~.` leaves) and signals.
    async fn wait(&mut self, pause: Duration) -> Option<Outcome> {
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return None,
                chunk = self.input.recv(), if self.input_open => match self.typed(chunk) {
                    Typed::Nothing => {}
                    Typed::Send(bytes) => self.hold(&bytes),
                    Typed::Disconnect(_) => return Some(Outcome::Detached),
                },
                signal = self.signals.next() => match signal {
                    Signal::Resize => {}
                    Signal::Stop(number) => return Some(Outcome::Signalled(number)),
                },
                () = self.interrupts.recv() => return Some(Outcome::Signalled(SIGINT)),
            }
        }
    }
}

/// Whether attaching may succeed on a later try: the server or the way to it is down for a
/// moment. A terminal or session that is gone, or a token refused, is final.
fn retryable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { .. }
            | ClientError::TimedOut { .. }
            | ClientError::Unavailable(_)
            | ClientError::Server(_)
    )
}

/// Writes output as it arrives.
fn show(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Local(format!("cannot write to stdout: {e}")))
}

/// A line of our own on stderr, on a line of its own even in raw mode.
pub(super) fn notice(text: &str) {
    let _ = write!(std::io::stderr(), "\r\n[rmm: {text}]\r\n");
}

/// SIGINT's number: a shell reports 128 + it.
pub(super) const SIGINT: i32 = 2;

/// A signal the shell acts on.
pub(super) enum Signal {
    /// The window changed size (SIGWINCH).
    Resize,
    /// rmm is asked to stop (SIGTERM, SIGHUP): leave, restoring the terminal.
    Stop(i32),
}

/// SIGWINCH, SIGTERM and SIGHUP, caught for the length of the shell.
pub(super) struct Signals {
    #[cfg(unix)]
    caught: Vec<(tokio::signal::unix::Signal, Option<i32>)>,
}

impl Signals {
    /// # Errors
    /// [`CliError::Local`] when a handler cannot be installed.
    pub fn listen() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut caught = Vec::new();
            for (kind, stop) in [
                (SignalKind::window_change(), None),
                (SignalKind::terminate(), Some(15)),
                (SignalKind::hangup(), Some(1)),
            ] {
                let handler = signal(kind)
                    .map_err(|e| CliError::Local(format!("cannot catch signals: {e}")))?;
                caught.push((handler, stop));
            }
            Ok(Self { caught })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let waits = self.caught.iter_mut().map(|(handler, stop)| {
                let stop = *stop;
                Box::pin(async move {
                    if handler.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                    stop
                })
            });
            let (stop, _, _) = futures_util::future::select_all(waits).await;
            match stop {
                Some(number) => Signal::Stop(number),
                None => Signal::Resize,
            }
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }
}
