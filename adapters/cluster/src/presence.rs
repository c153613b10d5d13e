//! Presence across nodes: which agents are connected to which node, in which mode.
//!
//! Each node compares its connections with what it last announced every [`TICK`] and
//! publishes the difference on `<prefix>.presence` (ids and modes only), numbered: a receiver
//! that sees a gap in a node's numbers, or hears a node for the first time, asks it to announce
//! everything again (a `reset` announcement, in chunks, seen by every node). With nothing to
//! say, a node still announces its current number every [`HEARTBEAT`], so a gap is found
//! within a second and a silent node is known to be out of reach after [`SILENT_AFTER`].
//!
//! When a node hears that an agent connected to another node after it connected here, the
//! connection here is stale (the agent cannot hold two): it is dropped and its tunnel closed
//! as `agent_reconnected`, so an agent that moved keeps no session anywhere but where it is.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt as _;
use rmm_application::{AgentGateway as _, App, Ports};
use rmm_domain::{AgentId, AgentMode, SessionId};
use rmm_gateway::agents::{Elsewhere, WsAgentGateway};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JoinError, Subjects};

/// How often a node compares its connections with what it announced.
pub const TICK: Duration = Duration::from_millis(200);
/// How often a node with nothing new announces its number.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is out of reach (NATS lost, or the node is gone).
pub const SILENT_AFTER: Duration = Duration::from_secs(4);
/// Agents per announcement: well under NATS's default 1 MiB payload.
const CHUNK: usize = 2_000;
/// A node asks another to announce everything again at most this often.
const RESEND_EVERY: Duration = Duration::from_secs(1);
/// What a dropped stale connection is told.
pub const MOVED: &str = "the agent connected to another node";

/// One announcement of a node's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Announcement {
    node: String,
    seq: u64,
    /// Everything again, from this chunk on: what was known of the node is dropped first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    up: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    down: Vec<Uuid>,
}

/// An agent connected to the announcing node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    agent: Uuid,
    /// The open tunnel's session; none in heartbeat mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<Uuid>,
    /// When it connected there, milliseconds since the Unix epoch.
    since: u64,
}

fn mode_of(entry: &Entry) -> AgentMode {
    entry
        .session
        .map_or(AgentMode::Heartbeat, |s| AgentMode::Tunnel {
            session: SessionId::from_uuid(s),
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What this node knows of the other nodes' agents.
#[derive(Debug)]
pub struct ClusterView {
    me: String,
    inner: Mutex<Peers>,
}

#[derive(Debug, Default)]
struct Peers {
    nodes: HashMap<String, Peer>,
    /// Nodes forgotten (lease gone) and not heard from since.
    gone: HashSet<String>,
    agents: HashMap<AgentId, (Arc<str>, AgentMode, u64)>,
}

impl Peers {
    /// Forgets `agent` if it is where `node` said it was.
    fn drop_if_at(&mut self, agent: AgentId, node: &Arc<str>) {
        if self.agents.get(&agent).is_some_and(|(n, _, _)| n == node) {
            self.agents.remove(&agent);
        }
    }
}

#[derive(Debug)]
struct Peer {
    name: Arc<str>,
    /// The last number applied; `None` until a reset arrives.
    seq: Option<u64>,
    heard: Instant,
    asked: Option<Instant>,
    agents: HashSet<AgentId>,
}

/// Where an agent is, as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whereabouts {
    pub node: Arc<str>,
    pub mode: AgentMode,
    /// Heard from within [`SILENT_AFTER`].
    pub reachable: bool,
}

impl ClusterView {
    #[must_use]
    pub fn new(me: String) -> Self {
        Self {
            me,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Peers> {
        // Each update leaves both maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's id.
    #[must_use]
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Where `agent` is connected, when it is connected to another node.
    #[must_use]
    pub fn whereabouts(&self, agent: AgentId) -> Option<Whereabouts> {
        let peers = self.lock();
        let (node, mode, _) = peers.agents.get(&agent)?;
        let reachable = peers
            .nodes
            .get(&**node)
            .is_some_and(|p| p.heard.elapsed() < SILENT_AFTER);
        Some(Whereabouts {
            node: Arc::clone(node),
            mode: *mode,
            reachable,
        })
    }

    /// Whether `node` went quiet: heard from before, but not within [`SILENT_AFTER`], or
    /// forgotten since (its lease is gone). A node never heard of is not silent (it may have
    /// just started): a cross-node stream from it lives until it goes quiet.
    #[must_use]
    pub fn silent(&self, node: &str) -> bool {
        let peers = self.lock();
        peers.gone.contains(node)
            || peers
                .nodes
                .get(node)
                .is_some_and(|p| p.heard.elapsed() >= SILENT_AFTER)
    }

    /// Whether `node` was heard from within [`SILENT_AFTER`].
    #[must_use]
    pub fn reachable(&self, node: &str) -> bool {
        self.lock()
            .nodes
            .get(node)
            .is_some_and(|p| p.heard.elapsed() < SILENT_AFTER)
    }

    /// The other nodes heard from, and whether each is within reach.
    #[must_use]
    pub fn nodes(&self) -> Vec<(String, bool)> {
        let peers = self.lock();
        let mut nodes: Vec<_> = peers
            .nodes
            .values()
            .map(|p| (p.name.to_string(), p.heard.elapsed() < SILENT_AFTER))
            .collect();
        nodes.sort();
        nodes
    }

    /// Forgets the nodes heard from whose lease is gone (another node claimed it, or it
    /// left); their names. A node that is only silent (NATS down) keeps its agents listed
    /// where they were last heard of, so requests for them answer 503, not 404.
    pub fn forget_all_but(&self, live: &[String]) -> Vec<String> {
        let gone: Vec<String> = self
            .lock()
            .nodes
            .keys()
            .filter(|n| !live.contains(n))
            .cloned()
            .collect();
        for node in &gone {
            self.forget(node);
        }
        gone
    }

    /// Forgets `node` and its agents (its lease ran out: it is gone).
    pub fn forget(&self, node: &str) {
        let mut peers = self.lock();
        peers.gone.insert(node.to_owned());
        if let Some(peer) = peers.nodes.remove(node) {
            for agent in peer.agents {
                peers.drop_if_at(agent, &peer.name);
            }
        }
    }

    /// Applies an announcement. What to do next: ask for a resend, and which agents
    /// connected elsewhere (with when).
    fn apply(&self, a: &Announcement) -> Applied {
        let mut guard = self.lock();
        let peers = &mut *guard;
        peers.gone.remove(&a.node);
        let peer = peers.nodes.entry(a.node.clone()).or_insert_with(|| Peer {
            name: Arc::from(a.node.as_str()),
            seq: None,
            heard: Instant::now(),
            asked: None,
            agents: HashSet::new(),
        });
        peer.heard = Instant::now();
        let in_order = match peer.seq {
            _ if a.reset => true,
            Some(seq) if a.seq == seq => return Applied::default(),
            Some(seq) => a.seq == seq + 1,
            None => false,
        };
        if !in_order {
            peer.seq = None;
            let ask = peer.asked.is_none_or(|at| at.elapsed() >= RESEND_EVERY);
            if ask {
                peer.asked = Some(Instant::now());
            }
            return Applied {
                resend: ask,
                ..Applied::default()
            };
        }
        peer.seq = Some(a.seq);
        let name = Arc::clone(&peer.name);
        if a.reset {
            for agent in std::mem::take(&mut peer.agents) {
                if peers.agents.get(&agent).is_some_and(|(n, _, _)| *n == name) {
                    peers.agents.remove(&agent);
                }
            }
        }
        for agent in &a.down {
            let agent = AgentId::from_uuid(*agent);
            peer.agents.remove(&agent);
            if peers.agents.get(&agent).is_some_and(|(n, _, _)| *n == name) {
                peers.agents.remove(&agent);
            }
        }
        let mut arrived = Vec::new();
        let mut moved_from = Vec::new();
        for entry in &a.up {
            let agent = AgentId::from_uuid(entry.agent);
            peer.agents.insert(agent);
            let previous = peers
                .agents
                .insert(agent, (Arc::clone(&name), mode_of(entry), entry.since));
            if previous.as_ref().is_none_or(|(n, _, _)| *n != name) {
                arrived.push((agent, entry.since));
            }
            if let Some((from, _, _)) = previous.filter(|(n, _, _)| *n != name) {
                moved_from.push((agent, from));
            }
        }
        // An agent that moved is no longer the node it left's.
        for (agent, from) in moved_from {
            if let Some(old) = peers.nodes.get_mut(&*from) {
                old.agents.remove(&agent);
            }
        }
        Applied {
            resend: false,
            arrived,
            changed: a.reset || !a.up.is_empty() || !a.down.is_empty(),
        }
    }
}

#[derive(Debug, Default)]
struct Applied {
    resend: bool,
    /// Agents that connected to the announcing node (new there), and since when.
    arrived: Vec<(AgentId, u64)>,
    /// Something listed changed (an agent came, went or changed mode).
    changed: bool,
}

impl Elsewhere for ClusterView {
    fn mode(&self, agent: AgentId) -> Option<AgentMode> {
        self.lock().agents.get(&agent).map(|(_, mode, _)| *mode)
    }
}

/// What this node announced last: the agents connected here, their modes and since when.
#[derive(Debug, Default)]
struct Announced {
    seq: u64,
    agents: HashMap<AgentId, (AgentMode, u64)>,
    /// Someone asked for everything again.
    resend: bool,
}

fn entry(agent: AgentId, mode: AgentMode, since: u64) -> Entry {
    Entry {
        agent: agent.as_uuid(),
        session: mode.session().map(|s| s.as_uuid()),
        since,
    }
}

impl Announced {
    /// The announcements that bring the others from what was announced to `now`.
    fn update(&mut self, node: &str, now: Vec<(AgentId, AgentMode)>) -> Vec<Announcement> {
        let stamp = now_ms();
        let mut current = HashMap::with_capacity(now.len());
        let mut up = Vec::new();
        for (agent, mode) in now {
            let since = match self.agents.get(&agent) {
                Some((old, since)) => {
                    if *old != mode {
                        up.push(entry(agent, mode, *since));
                    }
                    *since
                }
                None => {
                    up.push(entry(agent, mode, stamp));
                    stamp
                }
            };
            current.insert(agent, (mode, since));
        }
        let down: Vec<Uuid> = self
            .agents
            .keys()
            .filter(|a| !current.contains_key(a))
            .map(AgentId::as_uuid)
            .collect();
        self.agents = current;
        if std::mem::take(&mut self.resend) {
            let all: Vec<Entry> = self
                .agents
                .iter()
                .map(|(a, (m, s))| entry(*a, *m, *s))
                .collect();
            return self.chunks(node, all, Vec::new(), true);
        }
        if up.is_empty() && down.is_empty() {
            return Vec::new();
        }
        self.chunks(node, up, down, false)
    }

    fn chunks(
        &mut self,
        node: &str,
        up: Vec<Entry>,
        down: Vec<Uuid>,
        reset: bool,
    ) -> Vec<Announcement> {
        let mut out = Vec::new();
        let mut first = true;
        let mut up = up.into_iter().peekable();
        let mut down = down.into_iter().peekable();
        while first || up.peek().is_some() || down.peek().is_some() {
            self.seq += 1;
            out.push(Announcement {
                node: node.to_owned(),
                seq: self.seq,
                reset: reset && first,
                up: up.by_ref().take(CHUNK).collect(),
                down: down.by_ref().take(CHUNK).collect(),
            });
            first = false;
        }
        out
    }

    fn heartbeat(&self, node: &str) -> Announcement {
        Announcement {
            node: node.to_owned(),
            seq: self.seq,
            reset: false,
            up: Vec::new(),
            down: Vec::new(),
        }
    }
}

/// Starts announcing this node's agents and hearing the others'.
///
/// # Errors
/// [`JoinError::Subscribe`].
pub(crate) async fn start<P>(
    client: async_nats::Client,
    subjects: Subjects,
    view: Arc<ClusterView>,
    app: Arc<App<P>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, JoinError>
where
    P: Ports<Gateway = WsAgentGateway>,
{
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| JoinError::Subscribe { subject, source })
        }
    };
    let announcements = subscribe(subjects.presence()).await?;
    let mut resend_requests = subscribe(subjects.my_snapshot()).await?;
    let announced = Arc::new(Mutex::new(Announced {
        // Everything, first: the others may know an earlier process of this node.
        resend: true,
        ..Announced::default()
    }));
    let announcer = tokio::spawn(announce(
        client.clone(),
        subjects.clone(),
        Arc::clone(&announced),
        Arc::clone(&app),
        view.me().to_owned(),
    ));
    let resends = tokio::spawn({
        let announced = Arc::clone(&announced);
        async move {
            while resend_requests.next().await.is_some() {
                announced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .resend = true;
            }
        }
    });
    let hearer = tokio::spawn(hear(client, subjects, announcements, view, app, announced));
    Ok(vec![announcer, resends, hearer])
}

/// Every [`TICK`]: what changed here since the last announcement, or every [`HEARTBEAT`]
/// the current number.
async fn announce<P>(
    client: async_nats::Client,
    subjects: Subjects,
    announced: Arc<Mutex<Announced>>,
    app: Arc<App<P>>,
    me: String,
) where
    P: Ports<Gateway = WsAgentGateway>,
{
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = Instant::now();
    loop {
        tick.tick().await;
        let modes = app.gateway().modes();
        let out = {
            let mut announced = announced.lock().unwrap_or_else(PoisonError::into_inner);
            let mut out = announced.update(&me, modes);
            if out.is_empty() && last_sent.elapsed() >= HEARTBEAT {
                out.push(announced.heartbeat(&me));
            }
            out
        };
        for announcement in &out {
            publish(&client, subjects.presence(), announcement).await;
            last_sent = Instant::now();
        }
    }
}

/// The other nodes' announcements: applied to the view; a gap asks for everything again; an
/// agent that arrived elsewhere drops its stale connection here.
async fn hear<P>(
    client: async_nats::Client,
    subjects: Subjects,
    mut announcements: async_nats::Subscriber,
    view: Arc<ClusterView>,
    app: Arc<App<P>>,
    announced: Arc<Mutex<Announced>>,
) where
    P: Ports<Gateway = WsAgentGateway>,
{
    while let Some(message) = announcements.next().await {
        let announcement: Announcement = match serde_json::from_slice(&message.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, subject = %message.subject, "ignored a presence announcement that does not parse");
                continue;
            }
        };
        if announcement.node == view.me() {
            continue;
        }
        let applied = view.apply(&announcement);
        if applied.resend {
            tracing::debug!(node = %announcement.node, "asking a node for its whole presence");
            if let Err(e) = client
                .publish(subjects.snapshot_of(&announcement.node), Bytes::new())
                .await
            {
                tracing::warn!(error = %e, "could not ask a node for its presence");
            }
        }
        if applied.changed {
            app.note_agents_changed();
        }
        for (agent, since) in applied.arrived {
            drop_if_stale(&app, &announced, agent, since, &announcement.node).await;
        }
    }
}

async fn publish(client: &async_nats::Client, subject: String, announcement: &Announcement) {
    match serde_json::to_vec(announcement) {
        Ok(payload) => {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::warn!(error = %e, "could not announce presence");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not encode a presence announcement"),
    }
}

/// `agent` connected to `node` at `since`: a connection here from before then is stale.
async fn drop_if_stale<P>(
    app: &Arc<App<P>>,
    announced: &Mutex<Announced>,
    agent: AgentId,
    since: u64,
    node: &str,
) where
    P: Ports<Gateway = WsAgentGateway>,
{
    let here_since = announced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .agents
        .get(&agent)
        .map(|(_, s)| *s);
    if here_since.is_none_or(|here| here > since) {
        return;
    }
    let Some(mode) = app.gateway().disconnect(agent, MOVED) else {
        return;
    };
    tracing::info!(agent_id = %agent, %node, "agent connected to another node: dropped its stale connection here");
    if let Err(e) = app.agent_connected(agent, mode.session()).await {
        tracing::warn!(agent_id = %agent, error = %e, "could not close the stale connection's tunnel; the sweep closes it");
    }
}

#[cfg(test)]
mod tests;
