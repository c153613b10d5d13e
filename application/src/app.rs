//! The application service: the ports bundled, the settings, and nothing else.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::{
    AgentGateway, AgentRepository, AuditLog, Clock, CommandRepository, Credentials,
    EnrollmentRepository, GroupRepository, IdGenerator, RecordingRepository, SessionRepository,
    SessionStreams, UserRepository,
};
use crate::presence::Presence;
use crate::running::Running;
use crate::spool::{AuditSpool, OutputSpool};

/// File-transfer audit entries kept to write again, at most.
const AUDIT_SPOOL_ENTRIES: usize = 10_000;

/// The concrete types behind each port, chosen once when the program is wired (a store per
/// database, mocks in tests). One type parameter instead of eight keeps signatures readable.
pub trait Ports: Send + Sync + 'static {
    type Sessions: SessionRepository;
    type Agents: AgentRepository;
    type Users: UserRepository;
    type Groups: GroupRepository;
    type Audit: AuditLog;
    type Commands: CommandRepository;
    type Enrollment: EnrollmentRepository;
    type Recordings: RecordingRepository;
    type Streams: SessionStreams;
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
    /// A command's timeout when the request names none.
    pub command_timeout: Duration,
    /// The longest timeout a request may ask for.
    pub max_command_timeout: Duration,
    /// Stored output per stream of one command; what is written beyond is counted, streamed
    /// live, and reported as truncated, but not stored.
    pub max_stored_output: u64,
    /// Output the store refused, kept in memory to write again, all commands together,
    /// bytes; beyond it a stream gives up and its command is stored as truncated.
    pub max_output_spool: u64,
    /// Pending or active tunnel sessions one user may hold at once.
    pub max_sessions_per_user: u64,
    /// How long a terminal whose client's socket dropped waits for a reattach.
    pub terminal_grace: Duration,
    /// The largest terminal recording, bytes of cast; then a marker and no more.
    pub max_recording_bytes: u64,
    /// What the retention sweep prunes (default: nothing).
    pub retention: Retention,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            open_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30 * 60),
            command_timeout: Duration::from_secs(300),
            max_command_timeout: Duration::from_secs(24 * 3600),
            max_stored_output: 16 * 1024 * 1024,
            max_output_spool: 16 * 1024 * 1024,
            max_sessions_per_user: 20,
            terminal_grace: Duration::from_secs(60),
            max_recording_bytes: 64 * 1024 * 1024,
            retention: Retention::default(),
        }
    }
}

/// What to keep. `None`: keep forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Command output whose command ended longer ago than this is pruned.
    pub output_age: Option<Duration>,
    /// Stored command output above this many bytes in all: the oldest ended commands'
    /// output is pruned first until the total is within it.
    pub output_bytes: Option<u64>,
    /// Recordings of terminals that ended longer ago than this are pruned.
    pub recording_age: Option<Duration>,
}

impl Retention {
    /// Whether anything is ever pruned.
    #[must_use]
    pub fn prunes(&self) -> bool {
        self.output_age.is_some() || self.output_bytes.is_some() || self.recording_age.is_some()
    }
}

/// The use cases, each a method with its own error type.
pub struct App<P: Ports> {
    pub(crate) sessions: Arc<P::Sessions>,
    pub(crate) agents: Arc<P::Agents>,
    pub(crate) users: Arc<P::Users>,
    pub(crate) groups: Arc<P::Groups>,
    pub(crate) audit: Arc<P::Audit>,
    pub(crate) commands: Arc<P::Commands>,
    pub(crate) enrollment: Arc<P::Enrollment>,
    pub(crate) recordings: Arc<P::Recordings>,
    pub(crate) streams: Arc<P::Streams>,
    pub(crate) gateway: Arc<P::Gateway>,
    pub(crate) clock: Arc<P::Clock>,
    pub(crate) ids: Arc<P::Ids>,
    pub(crate) credentials: Arc<P::Credentials>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) running: Running,
    /// Output chunks the store refused, to write again.
    pub(crate) output_spool: OutputSpool,
    /// File-transfer entries the store refused, to write again.
    pub(crate) audit_spool: Arc<AuditSpool>,
    pub(crate) login_throttle: crate::throttle::LoginThrottle,
    /// Failed enrollments, per client address (the endpoint faces the internet).
    pub(crate) enroll_throttle: crate::throttle::LoginThrottle,
    /// Each user's opens in flight, so racing opens cannot both pass the per-user cap.
    pub(crate) open_gates: crate::open_gates::OpenGates,
    /// The live terminals.
    pub(crate) terminals: crate::live_terminals::Terminals,
    /// Live agent lists: what changed, and how many each user holds.
    pub(crate) agent_events: crate::agent_events::AgentEvents,
    pub(crate) config: Config,
}

/// The ports an [`App`] is built from.
pub struct Deps<P: Ports> {
    pub sessions: Arc<P::Sessions>,
    pub agents: Arc<P::Agents>,
    pub users: Arc<P::Users>,
    pub groups: Arc<P::Groups>,
    pub audit: Arc<P::Audit>,
    pub commands: Arc<P::Commands>,
    pub enrollment: Arc<P::Enrollment>,
    pub recordings: Arc<P::Recordings>,
    pub streams: Arc<P::Streams>,
    pub gateway: Arc<P::Gateway>,
    pub clock: Arc<P::Clock>,
    pub ids: Arc<P::Ids>,
    pub credentials: Arc<P::Credentials>,
}

impl<P: Ports> std::fmt::Debug for Deps<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

impl<P: Ports> std::fmt::Debug for App<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: Ports> App<P> {
    #[must_use]
    pub fn new(deps: Deps<P>, config: Config) -> Self {
        Self {
            sessions: deps.sessions,
            agents: deps.agents,
            users: deps.users,
            groups: deps.groups,
            audit: deps.audit,
            commands: deps.commands,
            enrollment: deps.enrollment,
            recordings: deps.recordings,
            streams: deps.streams,
            gateway: deps.gateway,
            clock: deps.clock,
            ids: deps.ids,
            credentials: deps.credentials,
            presence: Arc::default(),
            open_gates: crate::open_gates::OpenGates::default(),
            terminals: crate::live_terminals::Terminals::default(),
            agent_events: crate::agent_events::AgentEvents::default(),
            running: Running::default(),
            output_spool: OutputSpool::new(config.max_output_spool),
            audit_spool: Arc::new(AuditSpool::new(AUDIT_SPOOL_ENTRIES)),
            login_throttle: crate::throttle::LoginThrottle::default(),
            enroll_throttle: crate::throttle::LoginThrottle::default(),
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
    pub fn streams(&self) -> &P::Streams {
        &self.streams
    }

    #[must_use]
    pub fn clock(&self) -> &P::Clock {
        &self.clock
    }
}
