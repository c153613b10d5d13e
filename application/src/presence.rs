//! Presence noted since the last flush. Heartbeats and session activity arrive far more often
//! than they are worth writing, so they are kept here (bounded by the number of agents and
//! open sessions) and written in one batch per flush.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rmm_domain::{AgentId, SessionId, Timestamp};

use crate::ports::{HostFacts, Seen};

/// Last-seen times and host facts of agents, and sessions with activity, not yet written.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<PresenceBuffer>,
}

#[derive(Debug, Default)]
struct PresenceBuffer {
    seen: HashMap<AgentId, (Timestamp, Option<HostFacts>)>,
    active: HashSet<SessionId>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, PresenceBuffer> {
        // A panic while holding this lock cannot leave the maps inconsistent (each update is a
        // single insert), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn note_seen(&self, agent: AgentId, at: Timestamp, facts: Option<HostFacts>) {
        let mut buf = self.lock();
        let entry = buf.seen.entry(agent).or_insert((at, None));
        entry.0 = entry.0.max(at);
        if let Some(new) = facts {
            // Field by field, as the store merges: a heartbeat that omits a fact keeps it.
            let merged = entry.1.get_or_insert_with(HostFacts::default);
            merged.version = new.version.or(merged.version.take());
            merged.hostname = new.hostname.or(merged.hostname.take());
            merged.os = new.os.or(merged.os.take());
            merged.uptime_secs = new.uptime_secs.or(merged.uptime_secs);
        }
    }

    pub(crate) fn note_activity(&self, session: SessionId) {
        self.lock().active.insert(session);
    }

    /// Everything noted, emptying the buffer.
    pub(crate) fn take(&self) -> (Vec<Seen>, Vec<SessionId>) {
        let mut buf = self.lock();
        let seen = buf.seen.drain().map(|(a, (t, f))| (a, t, f)).collect();
        let active = buf.active.drain().collect();
        (seen, active)
    }

    pub(crate) fn last_seen(&self, agent: AgentId) -> Option<Timestamp> {
        self.lock().seen.get(&agent).map(|(t, _)| *t)
    }
}
