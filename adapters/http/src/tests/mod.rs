//! Handler tests: every row of each operation's status-code contract, driven through the
//! use cases over mocked ports (never by stubbing a use case), served the way the server
//! mounts the API (`.data(jwt)`, `.catch_all_error(error_as_json)`) so that framework
//! answers (400, 401, 404, 405) carry their real bodies.

mod agent_admin;
mod agent_events;
mod agents;
mod audit;
mod auth;
mod commands_inline;
mod commands_read;
mod commands_run;
mod cross_cutting;
mod docs;
mod enrollment;
mod files;
mod groups;
mod tunnels;
mod users;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::http::StatusCode;
use poem::test::{TestClient, TestRequestBuilder, TestResponse};
use poem::{EndpointExt, Route};
use poem_openapi::OpenApiService;
use rmm_application::{
    App, Config, Deps, GroupRecord, MockAgentGateway, MockAgentRepository, MockAuditLog, MockClock,
    MockCommandRepository, MockCredentials, MockEnrollmentRepository, MockGroupRepository,
    MockIdGenerator, MockRecordingRepository, MockSessionRepository, MockSessionStreams,
    MockUserRepository, Ports, StoreError, TokenState,
};
use rmm_auth::{IssuedToken, Jwt, JwtSecret};
use rmm_domain::{
    Actor, AgentId, CloseReason, CommandId, GroupName, Role, Session, SessionId, Timestamp,
    TokenId, UserId,
};
use rmm_protocol::api::ApiErrorCode;
use serde_json::Value;
use uuid::Uuid;

/// The ports, all mocked.
struct Mocks;

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

const AGENT: AgentId = AgentId::from_uuid(Uuid::from_u128(0xA));
const OTHER_AGENT: AgentId = AgentId::from_uuid(Uuid::from_u128(0xB));
const SESSION: SessionId = SessionId::from_uuid(Uuid::from_u128(0x5));
const OTHER_SESSION: SessionId = SessionId::from_uuid(Uuid::from_u128(0x6));
const COMMAND: CommandId = CommandId::from_uuid(Uuid::from_u128(0xC));
const TECH: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x1)),
    role: Role::Tech,
};
const OTHER_TECH: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x2)),
    role: Role::Tech,
};
const ADMIN: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x3)),
    role: Role::Admin,
};
const AUDITOR: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(0x4)),
    role: Role::Auditor,
};

/// The role of each test user, as the store has it (what the token check answers).
fn role_of(user: UserId) -> Role {
    [TECH, OTHER_TECH, ADMIN, AUDITOR]
        .into_iter()
        .find(|a| a.id == user)
        .map_or(Role::Tech, |a| a.role)
}

/// The id of `actor`'s tokens in these tests: their user id's uuid, so the mocked store can
/// say whose a token is.
fn token_id_of(actor: Actor) -> TokenId {
    TokenId::from_uuid(actor.id.as_uuid())
}

/// A token of `actor` signed with `jwt`, issued at `issued_at`.
fn signed(jwt: &Jwt, actor: Actor, issued_at: Timestamp) -> IssuedToken {
    jwt.issue(
        actor,
        token_id_of(actor),
        issued_at,
        issued_at.plus(TOKEN_TTL),
    )
    .expect("HMAC signing does not fail")
}

/// How long tokens live.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The mocked clock's time: fixed for the whole run, and near the system's time so that the
/// tokens login signs with it verify.
fn now() -> Timestamp {
    static NOW: OnceLock<Timestamp> = OnceLock::new();
    *NOW.get_or_init(wall_clock)
}

/// The system's time, which the token check reads.
fn wall_clock() -> Timestamp {
    Timestamp::from_unix_micros(chrono::Utc::now().timestamp_micros())
}

fn backend_error() -> StoreError {
    StoreError::backend(std::io::Error::other("disk on fire"))
}

/// The mocked ports of one test: set expectations on them, then [`Setup::serve`].
#[derive(Default)]
struct Setup {
    sessions: MockSessionRepository,
    agents: MockAgentRepository,
    users: MockUserRepository,
    /// `None`: [`permissive_groups`].
    groups: Option<MockGroupRepository>,
    audit: MockAuditLog,
    commands: MockCommandRepository,
    enrollment: MockEnrollmentRepository,
    recordings: MockRecordingRepository,
    streams: MockSessionStreams,
    gateway: MockAgentGateway,
    ids: MockIdGenerator,
    credentials: MockCredentials,
    /// Every token is revoked (the token check answers not live).
    revoked_tokens: bool,
}

/// A request to the test server.
type Request<'a> = TestRequestBuilder<'a, BoxEndpoint<'static>>;

/// The API over the mocks, and the key its tokens are signed with.
struct Server {
    client: TestClient<BoxEndpoint<'static>>,
    jwt: Arc<Jwt>,
}

/// Groups as on a fresh server: everyone in `default`, every agent visible, nobody holding
/// sessions (for tests about something else).
fn permissive_groups() -> MockGroupRepository {
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
    fn serve(mut self) -> Server {
        let live = !self.revoked_tokens;
        self.users.expect_token_state().returning(move |id| {
            let user = UserId::from_uuid(id.as_uuid());
            let state = TokenState {
                user,
                role: role_of(user),
                expires_at: now().plus(TOKEN_TTL),
                live,
            };
            Box::pin(async move { Ok(Some(state)) })
        });
        let mut clock = MockClock::new();
        clock.expect_now().returning(now);
        let app = Arc::new(App::<Mocks>::new(
            Deps {
                sessions: Arc::new(self.sessions),
                agents: Arc::new(self.agents),
                users: Arc::new(self.users),
                groups: Arc::new(self.groups.unwrap_or_else(permissive_groups)),
                audit: Arc::new(self.audit),
                commands: Arc::new(self.commands),
                enrollment: Arc::new(self.enrollment),
                recordings: Arc::new(self.recordings),
                streams: Arc::new(self.streams),
                gateway: Arc::new(self.gateway),
                clock: Arc::new(clock),
                ids: Arc::new(self.ids),
                credentials: Arc::new(self.credentials),
            },
            Config::default(),
        ));
        let secret = JwtSecret::parse(&"t".repeat(JwtSecret::MIN_LEN)).expect("a long secret");
        let jwt = Arc::new(Jwt::new(&secret, TOKEN_TTL));
        // Every section, as bin/server mounts the API.
        let api = OpenApiService::new(
            crate::api(Arc::clone(&app), Arc::clone(&jwt)),
            "rmm-tunnel tests",
            "1",
        );
        let names = crate::PathParamNames::from_spec(&api.spec());
        let allow = crate::AllowHeader::from_spec(&api.spec());
        let endpoint = Route::new()
            .nest("/", poem::IntoEndpoint::into_endpoint(api).with(names))
            .at(
                "/api/v1/agents/events",
                poem::get(crate::agent_events::agent_events::<Mocks>::default()),
            )
            .data(Arc::clone(&app))
            .data(crate::authenticator(Arc::clone(&app)))
            .data(Arc::clone(&jwt))
            .catch_all_error(crate::error_as_json)
            .with(allow)
            .boxed();
        Server {
            client: TestClient::new(endpoint),
            jwt,
        }
    }

    /// The store holds `session`, read as often as the use case needs.
    fn stored_session(&mut self, session: Session) {
        let id = session.id();
        self.sessions
            .expect_get()
            .withf(move |s| *s == id)
            .returning(move |_| {
                let session = session.clone();
                Box::pin(async move { Ok(Some(session)) })
            });
    }

    /// The store has no session of that id.
    fn no_session(&mut self) {
        self.sessions
            .expect_get()
            .returning(|_| Box::pin(async { Ok(None) }));
    }
}

impl Server {
    /// A valid token for `actor`.
    fn token(&self, actor: Actor) -> String {
        signed(&self.jwt, actor, wall_clock()).token
    }

    fn get(&self, path: &str, actor: Actor) -> Request<'_> {
        self.client
            .get(path)
            .header("Authorization", format!("Bearer {}", self.token(actor)))
    }

    fn post(&self, path: &str, actor: Actor, body: &Value) -> Request<'_> {
        self.client
            .post(path)
            .header("Authorization", format!("Bearer {}", self.token(actor)))
            .body_json(body)
    }

    fn delete(&self, path: &str, actor: Actor) -> Request<'_> {
        self.client
            .delete(path)
            .header("Authorization", format!("Bearer {}", self.token(actor)))
    }
}

/// An active session of `owner`'s to `AGENT`.
fn active(owner: Actor) -> Session {
    let mut s = Session::open(SESSION, AGENT, owner.id, now());
    s.activate(now()).expect("a pending session activates");
    s
}

/// `active(owner)`, closed for `reason`.
fn closed(owner: Actor, reason: CloseReason) -> Session {
    let mut s = active(owner);
    s.close(reason, now()).expect("an active session closes");
    s
}

/// The response's status and JSON body.
async fn json(resp: TestResponse) -> (StatusCode, Value) {
    let status = resp.0.status();
    let body = resp
        .0
        .into_body()
        .into_json::<Value>()
        .await
        .expect("the body is JSON");
    (status, body)
}

/// Asserts an error answer: its status, its `code`, and a message for people. Returns the
/// message.
async fn assert_error(resp: TestResponse, status: StatusCode, code: ApiErrorCode) -> String {
    let (got, body) = json(resp).await;
    assert_eq!(got, status, "status of {body}");
    assert_eq!(body["code"], code.as_str(), "code of {body}");
    let message = body["error"].as_str().expect("`error` is a string");
    assert!(!message.is_empty(), "an empty message in {body}");
    message.to_owned()
}

/// Asserts a 500: code `internal`, and nothing of the cause leaks.
async fn assert_internal(resp: TestResponse) {
    let message = assert_error(
        resp,
        StatusCode::INTERNAL_SERVER_ERROR,
        ApiErrorCode::Internal,
    )
    .await;
    assert!(
        !message.contains("disk on fire"),
        "the cause leaked: {message}"
    );
}

/// Asserts a 503 `database_unavailable` (a change the database could not record), and that
/// nothing of the cause leaks.
async fn assert_unavailable(resp: TestResponse) {
    let message = assert_error(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::DatabaseUnavailable,
    )
    .await;
    assert!(
        !message.contains("disk on fire"),
        "the cause leaked: {message}"
    );
}

/// Asserts a success answer's status; returns its body.
async fn assert_ok(resp: TestResponse, status: StatusCode) -> Value {
    let (got, body) = json(resp).await;
    assert_eq!(got, status, "status of {body}");
    body
}
