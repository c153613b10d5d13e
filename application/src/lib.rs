//! The use cases of the rmm tunnel, written against port traits.
//!
//! This crate decides *what* happens (open waits for the agent, a refusal leaves nothing
//! active, every session change is audited) and leaves *how* to the adapters: it knows no
//! database, socket, HTTP or serialization format. Time and ids come from ports so the rules
//! can be tested with mocks and paused time.

mod agents;
mod app;
mod commands;
mod files;
mod ports;
mod tunnels;
mod users;

pub use agents::{
    AgentView, ConnectAgentError, ListAgentsError, Presence, RegisterAgentError, RegisteredAgent,
};
pub use app::{App, Config, Deps, Ports};
pub use commands::{GetCommandError, ListAuditError, RunCommandError, WatchSessionError};
pub use files::{Direction, FileAccessError};
pub use ports::{
    AgentGateway, AgentKey, AgentRecord, AgentRepository, AuditAction, AuditEntry, AuditEvent,
    AuditLog, AuditQuery, Clock, CommandAudit, CommandOutcome, CommandRecord, CommandRepository,
    Credentials, FileAudit, GatewayError, HostFacts, IdGenerator, KeyDigest, OpenReply,
    OutputChunk, OutputStream, Seen, SessionRepository, SessionStreams, StoreError, StreamEvent,
    UserRecord, UserRepository,
};
#[cfg(feature = "mocks")]
pub use ports::{
    MockAgentGateway, MockAgentRepository, MockAuditLog, MockClock, MockCommandRepository,
    MockCredentials, MockIdGenerator, MockSessionRepository, MockSessionStreams,
    MockUserRepository,
};
pub use tunnels::{CloseTunnelError, GetTunnelStatusError, OpenTunnelError};
pub use users::{CreateUserError, LoginError};
