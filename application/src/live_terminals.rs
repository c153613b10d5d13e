//! The live terminals of this process and what crosses between a terminal's task and its
//! clients: the registry the use cases look terminals up in, the frames a client receives,
//! the owner's way in, and the requests a terminal's task takes. (The task itself and the use
//! cases are in `terminals`.)

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rmm_domain::{AgentId, SessionId, TermSize, TerminalEnd, TerminalId, Timestamp, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::ports::PtyControl;

/// A live terminal, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalView {
    pub id: TerminalId,
    pub session: SessionId,
    pub agent: AgentId,
    pub owner: UserId,
    pub size: TermSize,
    pub term: String,
    pub command: Option<String>,
    pub started_at: Timestamp,
    pub attached: bool,
}

/// How a terminal ended, for `DELETE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalExit {
    pub end: TerminalEnd,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// What an attached client receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalFrame {
    Output(Bytes),
    /// The process ended; nothing follows.
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// The terminal ended without an exit status (closed, its session closed, the agent
    /// gone); nothing follows.
    Ended(TerminalEnd),
    /// Another attach of the owner took over this one; nothing follows.
    Replaced,
}

/// A client attached to a terminal: frames in order, ending with `Exit`, `Ended` or
/// `Replaced` — or ending without one when the client fell too far behind (a watcher) —
/// and, for the owner, the way in.
#[derive(Debug)]
pub struct Attachment {
    pub frames: mpsc::Receiver<TerminalFrame>,
    pub input: Option<TerminalInput>,
    /// The position in the terminal's output (bytes from its first) of the first byte
    /// `frames` carries: a client that counts what it receives from there can reattach
    /// asking for what follows only.
    pub start: u64,
}

/// The owner's way in: input bytes and resizes, in order. Input waits while the agent has
/// not taken the earlier bytes, which slows the client's socket down.
#[derive(Debug, Clone)]
pub struct TerminalInput {
    pub(crate) control: mpsc::Sender<PtyControl>,
    pub(crate) cmds: mpsc::Sender<Cmd>,
}

impl TerminalInput {
    /// False when the terminal has ended.
    pub async fn input(&self, bytes: Bytes) -> bool {
        self.control.send(PtyControl::Input(bytes)).await.is_ok()
    }

    /// Resizes the terminal (and records the resize). False when it has ended.
    pub async fn resize(&self, size: TermSize) -> bool {
        // Recorded best effort: a flood of resizes may skip some in the recording.
        let _ = self.cmds.try_send(Cmd::Resized(size));
        self.control.send(PtyControl::Resize(size)).await.is_ok()
    }
}

/// The live terminals of this process.
#[derive(Debug, Default)]
pub(crate) struct Terminals {
    live: Mutex<HashMap<TerminalId, Entry>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) view: TerminalView,
    pub(crate) attached: Arc<AtomicBool>,
    pub(crate) cmds: mpsc::Sender<Cmd>,
}

impl Terminals {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TerminalId, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, session: SessionId, id: TerminalId) -> Option<Entry> {
        self.lock()
            .get(&id)
            .filter(|e| e.view.session == session)
            .cloned()
    }

    pub(crate) fn of_session(&self, session: SessionId) -> Vec<Entry> {
        self.lock()
            .values()
            .filter(|e| e.view.session == session)
            .cloned()
            .collect()
    }

    pub(crate) fn remove(&self, id: TerminalId) {
        self.lock().remove(&id);
    }

    /// How many terminals are live.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What the use cases ask of a terminal's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Attach {
        watch: bool,
        since: Option<u64>,
        reply: oneshot::Sender<Attachment>,
    },
    Resized(TermSize),
    Close {
        end: TerminalEnd,
        reply: Option<oneshot::Sender<TerminalExit>>,
    },
}
