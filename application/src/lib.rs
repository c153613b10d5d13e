//! The use cases of the rmm tunnel, written against port traits.
//!
//! This crate decides *what* happens (open waits for the agent, a refusal leaves nothing
//! active, every session change and every file transfer is audited) and leaves *how* to the
//! adapters: it knows no database, socket, HTTP or serialization format. Time and ids come
//! from ports so the rules can be tested with mocks and paused time.
//!
//! Modules depend one way: [`ports`] and the state kept in memory (`presence`, `running`,
//! `spool`) and the shared session check (`access`) depend on nothing but the domain and the
//! ports; `app` bundles them; each use-case module builds on `app`.

mod access;
mod agent_admin;
mod agent_events;
mod agents;
mod app;
mod audit;
mod cluster;
mod command_ends;
mod commands;
mod enrollment;
mod files;
mod groups;
mod identity;
mod live_terminals;
mod maintenance;
mod open_gates;
mod ports;
mod presence;
mod recordings;
mod retention;
mod revocation;
mod running;
mod spool;
mod stdin;
mod terminals;
pub mod throttle;
mod tunnels;
mod users;
mod watch;

pub use agent_admin::{AgentAdminError, CLOSE_KEY_ROTATED, CLOSE_REVOKED};
pub use agent_events::{AgentWatch, MAX_AGENT_STREAMS_PER_USER, WatchAgentsError};
pub use agents::{
    AgentView, ConnectAgentError, ListAgentsError, RegisterAgentError, RegisteredAgent,
};
pub use app::{App, Config, Deps, Ports, Retention};
pub use audit::ListAuditError;
pub use cluster::sweep_lost_nodes;
pub use commands::{GetCommandError, RunCommandError};
pub use enrollment::{
    CreatedEnrollment, DEFAULT_ENROLLMENT_TTL, EnrollError, EnrolledAgent, EnrollmentAdminError,
    MAX_ENROLLMENT_TTL, MAX_ENROLLMENT_USES, MIN_ENROLLMENT_TTL,
};
pub use files::{ByteRange, Direction, Download, FileAccessError, TransferError};
pub use groups::GroupError;
pub use identity::{AuthenticateError, UserAdminError, UserUpdate};
pub use ports::{AgentChange, AgentChangeOutcome, LostNode, NodeLeases};
pub use ports::{
    AgentDownload, AgentGateway, AgentKey, AgentRecord, AgentRepository, AuditAction, AuditEntry,
    AuditEvent, AuditLog, AuditNote, AuditQuery, ByteStream, Clock, CommandAudit, CommandOutcome,
    CommandRecord, CommandRepository, Credentials, EnrollOutcome, EnrollmentRecord,
    EnrollmentRepository, FileAudit, FileBytes, FileEntry, FileOpError, GatewayError,
    GroupDeleteOutcome, GroupRecord, GroupRepository, HostFacts, IdGenerator, KeyDigest,
    NewEnrollment, OpenReply, OutputChunk, OutputStream, Pruned, RevokeReason, Seen,
    SessionRepository, SessionStreams, StoreError, StoredOutput, StreamEvent, TokenRecord,
    TokenState, UploadRequest, Uploaded, UserChange, UserChangeOutcome, UserRecord, UserRepository,
};
pub use ports::{HashingBusy, enrolled_detail};
#[cfg(feature = "mocks")]
pub use ports::{
    MockAgentGateway, MockAgentRepository, MockAuditLog, MockClock, MockCommandRepository,
    MockCredentials, MockEnrollmentRepository, MockGroupRepository, MockIdGenerator,
    MockNodeLeases, MockRecordingRepository, MockSessionRepository, MockSessionStreams,
    MockUserRepository,
};
pub use ports::{
    PtyControl, PtyEvent, PtyLink, PtySpec, RecordingQuery, RecordingRecord, RecordingRepository,
    StdinError,
};
pub use presence::Presence;
pub use recordings::RecordingError;
pub use retention::RetentionReport;
pub use stdin::WriteStdinError;
pub use terminals::{
    Attachment, NewTerminal, REPLAY_BYTES, TerminalError, TerminalExit, TerminalFrame,
    TerminalInput, TerminalView,
};
pub use tunnels::{CloseTunnelError, GetTunnelStatusError, OpenTunnelError, TunnelHolder};
pub use users::{CreateUserError, LoginError};
pub use watch::WatchSessionError;
