//! The mocked ports and fixtures shared by the use-case tests.

#![allow(dead_code)] // Each test crate uses its own part of the fixtures.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

pub struct Mocks;
impl Ports for Mocks {
    type Sessions = MockSessionRepository;
    type Agents = MockAgentRepository;
    type Users = MockUserRepository;
    type Groups = MockGroupRepository;
    type Audit = MockAuditLog;
    type Commands = MockCommandRepository;
    type Enrollment = MockEnrollmentRepository;
    type Recordings = MockRecordingRepository;
    type Streams = MockSessionStreams;
    type Gateway = MockAgentGateway;
    type Clock = MockClock;
    type Ids = MockIdGenerator;
    type Credentials = MockCredentials;
}

#[derive(Default)]
pub struct Setup {
    pub sessions: MockSessionRepository,
    pub agents: MockAgentRepository,
    pub users: MockUserRepository,
    /// `None`: [`permissive_groups`].
    pub groups: Option<MockGroupRepository>,
    pub audit: MockAuditLog,
    pub commands: MockCommandRepository,
    pub enrollment: MockEnrollmentRepository,
    pub recordings: MockRecordingRepository,
    pub streams: MockSessionStreams,
    pub gateway: MockAgentGateway,
    pub credentials: MockCredentials,
    pub max_stored_output: Option<u64>,
    pub max_output_spool: Option<u64>,
    pub terminal_grace: Option<Duration>,
    pub max_recording_bytes: Option<u64>,
    pub retention: Retention,
}

pub const AGENT: AgentId = AgentId::from_uuid(Uuid::from_u128(0xA));
pub const SESSION: SessionId = SessionId::from_uuid(Uuid::from_u128(0x5));
pub const COMMAND: CommandId = CommandId::from_uuid(Uuid::from_u128(0xC));
pub const TOKEN: TokenId = TokenId::from_uuid(Uuid::from_u128(0x70));
pub const TERMINAL: TerminalId = TerminalId::from_uuid(Uuid::from_u128(0x7E));
pub const TECH: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x1)),
    role: Role::Tech,
};
pub const OTHER_TECH: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x2)),
    role: Role::Tech,
};
pub const ADMIN: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x3)),
    role: Role::Admin,
};

pub fn now() -> Timestamp {
    Timestamp::from_unix_micros(1_000_000)
}

/// Groups as on a fresh server: everyone in `default`, every agent visible, nobody holding
/// sessions (for tests about something else).
pub fn permissive_groups() -> MockGroupRepository {
    let mut groups = MockGroupRepository::new();
    groups
        .expect_may_see_agent()
        .returning(|_, _| Box::pin(async { Ok(true) }));
    groups
        .expect_open_sessions_of()
        .returning(|_| Box::pin(async { Ok(0) }));
    groups
        .expect_user_groups()
        .returning(|_| Box::pin(async { Ok(vec![GroupName::default_group()]) }));
    groups
        .expect_all_user_groups()
        .returning(|| Box::pin(async { Ok(vec![]) }));
    groups.expect_list_groups().returning(|| {
        Box::pin(async {
            Ok(vec![GroupRecord {
                id: "00000000-0000-0000-0000-000000000001".to_owned(),
                name: GroupName::default_group(),
                created_at: Timestamp::from_unix_micros(0),
                agents: 0,
            }])
        })
    });
    groups
}

impl Setup {
    pub fn build(self) -> App<Mocks> {
        let mut clock = MockClock::new();
        clock.expect_now().returning(now);
        let mut ids = MockIdGenerator::new();
        ids.expect_session_id().returning(|| SESSION);
        ids.expect_agent_id().returning(|| AGENT);
        ids.expect_user_id().returning(|| TECH.id);
        ids.expect_command_id().returning(|| COMMAND);
        ids.expect_token_id().returning(|| TOKEN);
        ids.expect_terminal_id().returning(|| TERMINAL);
        // Sessions ending tell their watchers; not the subject of these tests.
        let mut streams = self.streams;
        streams.expect_end_session().return_const(());
        App::new(
            Deps {
                sessions: Arc::new(self.sessions),
                agents: Arc::new(self.agents),
                users: Arc::new(self.users),
                groups: Arc::new(self.groups.unwrap_or_else(permissive_groups)),
                audit: Arc::new(self.audit),
                commands: Arc::new(self.commands),
                enrollment: Arc::new(self.enrollment),
                recordings: Arc::new(self.recordings),
                streams: Arc::new(streams),
                gateway: Arc::new(self.gateway),
                clock: Arc::new(clock),
                ids: Arc::new(ids),
                credentials: Arc::new(self.credentials),
            },
            Config {
                open_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_stored_output: self
                    .max_stored_output
                    .unwrap_or(Config::default().max_stored_output),
                max_output_spool: self
                    .max_output_spool
                    .unwrap_or(Config::default().max_output_spool),
                terminal_grace: self
                    .terminal_grace
                    .unwrap_or(Config::default().terminal_grace),
                max_recording_bytes: self
                    .max_recording_bytes
                    .unwrap_or(Config::default().max_recording_bytes),
                retention: self.retention,
                ..Config::default()
            },
        )
    }

    pub fn agent_connected(mut self) -> Self {
        self.gateway
            .expect_mode()
            .with(eq(AGENT))
            .return_const(Some(AgentMode::Heartbeat));
        self
    }
}

/// No session is open (what the maintenance sweep finds).
pub fn no_open_sessions(s: &mut Setup) {
    s.sessions
        .expect_list_open()
        .returning(|| Box::pin(async { Ok(vec![]) }));
}

pub fn stored(owner: Actor) -> Session {
    let mut s = Session::open(SESSION, AGENT, owner.id, now());
    s.activate(now()).unwrap();
    s
}

pub fn closed(owner: Actor, reason: CloseReason) -> Session {
    let mut s = stored(owner);
    s.close(reason, now()).unwrap();
    s
}

pub fn active_session_store(s: &mut Setup) {
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Ok(Some(stored(TECH))) }));
}
