//! The ports: what the use cases need from the outside world, and nothing about how. One
//! module per port; everything is re-exported here.

mod agents;
mod audit;
mod cluster;
mod commands;
mod enrollment;
mod files;
mod gateway;
mod groups;
mod recordings;
mod sessions;
mod streams;
mod system;
mod terminals;
mod users;

pub use agents::{
    AgentChange, AgentChangeOutcome, AgentKey, AgentRecord, AgentRepository, HostFacts, KeyDigest,
    Seen,
};
pub use audit::{
    AuditAction, AuditEntry, AuditEvent, AuditLog, AuditNote, AuditQuery, CommandAudit, FileAudit,
};
pub use cluster::{LostNode, NodeLeases};
pub use commands::{
    CommandOutcome, CommandRecord, CommandRepository, OutputStream, Pruned, StoredOutput,
};
pub use enrollment::{
    EnrollOutcome, EnrollmentRecord, EnrollmentRepository, NewEnrollment, enrolled_detail,
};
pub use files::{
    AgentDownload, ByteStream, FileBytes, FileEntry, FileOpError, UploadRequest, Uploaded,
};
pub use gateway::{AgentGateway, GatewayError, OpenReply};
pub use groups::{GroupDeleteOutcome, GroupRecord, GroupRepository};
pub use recordings::{RecordingQuery, RecordingRecord, RecordingRepository};
pub use sessions::SessionRepository;
pub use streams::{OutputChunk, SessionStreams, StreamEvent};
pub use system::{Clock, Credentials, HashingBusy, IdGenerator};
pub use terminals::{PtyControl, PtyEvent, PtyLink, PtySpec, StdinError};
pub use users::{
    RevokeReason, TokenRecord, TokenState, UserChange, UserChangeOutcome, UserRecord,
    UserRepository,
};

#[cfg(feature = "mocks")]
pub use agents::MockAgentRepository;
#[cfg(feature = "mocks")]
pub use audit::MockAuditLog;
#[cfg(feature = "mocks")]
pub use cluster::MockNodeLeases;
#[cfg(feature = "mocks")]
pub use commands::MockCommandRepository;
#[cfg(feature = "mocks")]
pub use enrollment::MockEnrollmentRepository;
#[cfg(feature = "mocks")]
pub use gateway::MockAgentGateway;
#[cfg(feature = "mocks")]
pub use groups::MockGroupRepository;
#[cfg(feature = "mocks")]
pub use recordings::MockRecordingRepository;
#[cfg(feature = "mocks")]
pub use sessions::MockSessionRepository;
#[cfg(feature = "mocks")]
pub use streams::MockSessionStreams;
#[cfg(feature = "mocks")]
pub use system::{MockClock, MockCredentials, MockIdGenerator};
#[cfg(feature = "mocks")]
pub use users::MockUserRepository;

/// A storage failure, as the use cases see it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit (an active session for the agent, a taken name).
    #[error("conflict with existing data")]
    Conflict,
    /// The backend failed (connection lost, disk full, corrupt row). The cause is kept for
    /// logs and never shown to clients.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}
