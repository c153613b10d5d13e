//! Live agent lists: a counter bumped whenever what `list_agents_for` shows may have changed
//! (an agent connected or disconnected, a tunnel opened or closed, an agent registered,
//! enrolled, revoked, given a new key, renamed or moved, presence written), and the cap on
//! how many live lists one user may hold open at once. The use cases are in `agents`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rmm_domain::UserId;
use tokio::sync::watch;

/// Live agent lists one user may hold open at once.
pub const MAX_AGENT_STREAMS_PER_USER: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchAgentsError {
    #[error(
        "at most {MAX_AGENT_STREAMS_PER_USER} live agent lists per user are open at once; close one (another tab?) and try again"
    )]
    TooMany,
}

/// The change counter and the open lists per user.
#[derive(Debug)]
pub(crate) struct AgentEvents {
    changes: watch::Sender<u64>,
    open: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Default for AgentEvents {
    fn default() -> Self {
        Self {
            changes: watch::Sender::new(0),
            open: Arc::default(),
        }
    }
}

impl AgentEvents {
    /// Something a listed agent shows may have changed.
    pub(crate) fn changed(&self) {
        // Unconditional (`send` would not store the value while nobody listens).
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A new live list of `user`'s, under the per-user cap.
    pub(crate) fn watch(&self, user: UserId) -> Result<AgentWatch, WatchAgentsError> {
        {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(user).or_insert(0);
            if *n >= MAX_AGENT_STREAMS_PER_USER {
                return Err(WatchAgentsError::TooMany);
            }
            *n += 1;
        }
        Ok(AgentWatch {
            changes: self.changes.subscribe(),
            _slot: Slot {
                open: Arc::clone(&self.open),
                user,
            },
        })
    }
}

/// One open live list: its change notifications, and its place under the per-user cap
/// (given back when dropped).
#[derive(Debug)]
pub struct AgentWatch {
    pub changes: watch::Receiver<u64>,
    _slot: Slot,
}

#[derive(Debug)]
struct Slot {
    open: Arc<Mutex<HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}
