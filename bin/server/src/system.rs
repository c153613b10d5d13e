//! The system clock and id generator: the only places that read time or draw random ids.

use rmm_application::{Clock, IdGenerator};
use rmm_domain::{
    AgentId, CommandId, EnrollmentId, SessionId, TerminalId, Timestamp, TokenId, UserId,
};
use uuid::Uuid;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(chrono::Utc::now().timestamp_micros())
    }
}

/// Random (v4) UUIDs: session ids appear in URLs, so they must not be guessable.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn session_id(&self) -> SessionId {
        SessionId::from_uuid(Uuid::new_v4())
    }
    fn agent_id(&self) -> AgentId {
        AgentId::from_uuid(Uuid::new_v4())
    }
    fn user_id(&self) -> UserId {
        UserId::from_uuid(Uuid::new_v4())
    }
    fn command_id(&self) -> CommandId {
        CommandId::from_uuid(Uuid::new_v4())
    }
    fn token_id(&self) -> TokenId {
        TokenId::from_uuid(Uuid::new_v4())
    }
    fn terminal_id(&self) -> TerminalId {
        TerminalId::from_uuid(Uuid::new_v4())
    }

    fn enrollment_id(&self) -> EnrollmentId {
        EnrollmentId::from_uuid(Uuid::new_v4())
    }
}
