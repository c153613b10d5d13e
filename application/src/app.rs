//! The application service: the ports bundled, the settings, and nothing else.

use std::sync::Arc;
use std::time::Duration;

use crate::agents::Presence;
use crate::ports::{
    AgentGateway, AgentRepository, AuditLog, Clock, Credentials, IdGenerator, SessionRepository,
    UserRepository,
};

/// The concrete types behind each port, chosen once when the program is wired (a store per
/// database, mocks in tests). One type parameter instead of eight keeps signatures readable.
pub trait Ports: Send + Sync + 'static {
    type Sessions: SessionRepository;
    type Agents: AgentRepository;
    type Users: UserRepository;
    type Audit: AuditLog;
    type Gateway: AgentGateway;
    type Clock: Clock;
    type Ids: IdGenerator;
    type Credentials: Credentials;
}

/// Tunables of the use cases.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an open waits for the agent's `tunnel_ready`.
    pub open_timeout: Duration,
    /// Active sessions with no activity for this long are closed.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            open_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The use cases, each a method with its own error type.
pub struct App<P: Ports> {
    pub(crate) sessions: Arc<P::Sessions>,
    pub(crate) agents: Arc<P::Agents>,
    pub(crate) users: Arc<P::Users>,
    pub(crate) audit: Arc<P::Audit>,
    pub(crate) gateway: Arc<P::Gateway>,
    pub(crate) clock: Arc<P::Clock>,
    pub(crate) ids: Arc<P::Ids>,
    pub(crate) credentials: Arc<P::Credentials>,
    pub(crate) presence: Presence,
    pub(crate) config: Config,
}

impl<P: Ports> std::fmt::Debug for App<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: Ports> App<P> {
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn new(
        sessions: Arc<P::Sessions>,
        agents: Arc<P::Agents>,
        users: Arc<P::Users>,
        audit: Arc<P::Audit>,
        gateway: Arc<P::Gateway>,
        clock: Arc<P::Clock>,
        ids: Arc<P::Ids>,
        credentials: Arc<P::Credentials>,
        config: Config,
    ) -> Self {
        Self {
            sessions,
            agents,
            users,
            audit,
            gateway,
            clock,
            ids,
            credentials,
            presence: Presence::default(),
            config,
        }
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[must_use]
    pub fn gateway(&self) -> &P::Gateway {
        &self.gateway
    }

    #[must_use]
    pub fn clock(&self) -> &P::Clock {
        &self.clock
    }
}
