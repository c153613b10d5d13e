//! Groups on the real `rmm-server` (PostgreSQL and SQLite): admins manage groups and grant
//! them to users; a technician sees only the agents of their groups, and every endpoint that
//! names an agent (or a session to one) outside them answers 404 exactly as for a missing
//! one; admins still see everything; a group with agents cannot be deleted; a user holds at
//! most `RMM_MAX_SESSIONS_PER_USER` open sessions. And `rmm users` lists users with groups.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::server::{TestServer, rmm_command};
use serde_json::{Value, json};
use tempfile::TempDir;

const CAP: &str = "2";

/// A server on PostgreSQL, or on SQLite in a folder kept as long as it runs, with a session
/// cap of [`CAP`].
async fn server(on_sqlite: bool) -> (TestServer, Option<TempDir>) {
    let env = [("RMM_MAX_SESSIONS_PER_USER", CAP)];
    if on_sqlite {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(&sqlite_url(dir.path()), &env)
            .await
            .unwrap();
        (server, Some(dir))
    } else {
        let db = fresh_database().await.expect("test database");
        (TestServer::start(&db, &env).await.unwrap(), None)
    }
}

/// Runs one SQL statement on the server's database (what no endpoint does yet: moving an
/// agent to another group).
async fn sql(database_url: &str, statement: &str) {
    if database_url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

async fn move_agent(s: &TestServer, agent: &str, group: &str) {
    let statement = format!(
        "update agents set group_id = (select group_id from groups where name = '{group}') \
         where name = '{agent}'"
    );
    sql(&s.database_url, &statement).await;
}

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.call(method, path, Some(token), body).await.unwrap()
}

/// Every status and the code of a non-2xx answer, for messages.
fn expect(answer: &(u16, Value), status: u16, code: Option<&str>, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    if let Some(code) = code {
        assert_eq!(answer.1["code"], code, "{what}: {}", answer.1);
    }
}

/// Opens a tunnel to `agent_id` as `token`, the scripted agent confirming it.
async fn open(s: &TestServer, token: &str, agent_id: &str, agent: &mut ScriptedAgent) -> String {
    let body = json!({ "agent_id": agent_id });
    let request = call(s, Method::POST, "/api/v1/tunnel/open", token, Some(body));
    let answer = async {
        let session = agent.expect_open().await.unwrap();
        agent.ready(&session).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(request, answer);
    assert_eq!(status, 200, "{body}");
    body["session_id"].as_str().unwrap().to_owned()
}

/// The names `token` sees in `GET path`, sorted.
async fn names(s: &TestServer, token: &str, path: &str) -> Vec<String> {
    let (status, list) = call(s, Method::GET, path, token, None).await;
    assert_eq!(status, 200, "{list}");
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The user `username` as `GET /api/v1/users` lists them.
async fn listed_user(s: &TestServer, admin: &str, username: &str) -> Value {
    let (status, users) = call(s, Method::GET, "/api/v1/users", admin, None).await;
    assert_eq!(status, 200, "{users}");
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .cloned()
        .unwrap()
}

/// Groups are created, granted and deleted by admins; the answers of every group endpoint.
async fn groups_are_managed_and_granted(s: &TestServer, admin: &str, tech: &str) {
    for name in ["acme", "globex"] {
        let created = call(
            s,
            Method::POST,
            "/api/v1/groups",
            admin,
            Some(json!({ "name": name })),
        )
        .await;
        expect(&created, 201, None, "create");
        assert_eq!(created.1["name"], name);
        assert!(
            created.1["group_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        );
    }
    let again = call(
        s,
        Method::POST,
        "/api/v1/groups",
        admin,
        Some(json!({"name": "acme"})),
    )
    .await;
    expect(&again, 409, Some("group_exists"), "second acme");
    let by_tech = call(
        s,
        Method::POST,
        "/api/v1/groups",
        tech,
        Some(json!({"name": "x"})),
    )
    .await;
    expect(&by_tech, 403, Some("forbidden"), "tech creates");

    // A user the console created is granted `default`; a PATCH replaces the grants.
    let tina = listed_user(s, admin, "tina").await;
    assert_eq!(tina["groups"], json!(["default"]), "{tina}");
    let path = format!("/api/v1/users/{}", tina["user_id"].as_str().unwrap());
    let unknown = call(
        s,
        Method::PATCH,
        &path,
        admin,
        Some(json!({"groups": ["initech"]})),
    )
    .await;
    expect(&unknown, 409, Some("group_not_found"), "unknown group");
    assert!(
        unknown.1["error"].as_str().unwrap().contains("initech"),
        "{}",
        unknown.1
    );
    let granted = call(
        s,
        Method::PATCH,
        &path,
        admin,
        Some(json!({"groups": ["acme"]})),
    )
    .await;
    expect(&granted, 200, None, "grant acme");
    assert_eq!(granted.1["groups"], json!(["acme"]));
    assert_eq!(
        listed_user(s, admin, "tina").await["groups"],
        json!(["acme"])
    );

    // Created over the API: with the groups named, or `default` without.
    let body = json!({"username": "gus", "password": "gus-password", "role": "technician",
                      "groups": ["globex", "acme"]});
    let created = call(s, Method::POST, "/api/v1/users", admin, Some(body)).await;
    expect(&created, 201, None, "create gus");
    assert_eq!(
        listed_user(s, admin, "gus").await["groups"],
        json!(["acme", "globex"])
    );
    let body = json!({"username": "dora", "password": "dora-password", "role": "auditor"});
    expect(
        &call(s, Method::POST, "/api/v1/users", admin, Some(body)).await,
        201,
        None,
        "dora",
    );
    assert_eq!(
        listed_user(s, admin, "dora").await["groups"],
        json!(["default"])
    );
    let body = json!({"username": "ned", "password": "ned-password", "role": "technician",
                      "groups": ["nowhere"]});
    let refused = call(s, Method::POST, "/api/v1/users", admin, Some(body)).await;
    expect(
        &refused,
        409,
        Some("group_not_found"),
        "unknown group on create",
    );
    assert!(
        refused.1["error"].as_str().unwrap().contains("nowhere"),
        "{}",
        refused.1
    );
}

/// Every endpoint naming `agent_id` or `session` (a session of it) answers 404 to `tech`.
async fn everything_about_it_is_not_found(
    s: &TestServer,
    tech: &str,
    agent_id: &str,
    session: &str,
    command: &str,
) {
    let nf = Some("session_not_found");
    let open = call(
        s,
        Method::POST,
        "/api/v1/tunnel/open",
        tech,
        Some(json!({ "agent_id": agent_id })),
    )
    .await;
    expect(&open, 404, Some("agent_not_connected"), "open");
    let status = call(
        s,
        Method::GET,
        &format!("/api/v1/tunnel/status/{session}"),
        tech,
        None,
    )
    .await;
    expect(&status, 404, nf, "status");
    let close = call(
        s,
        Method::POST,
        "/api/v1/tunnel/close",
        tech,
        Some(json!({ "session_id": session })),
    )
    .await;
    expect(&close, 404, nf, "close");
    let base = format!("/api/v1/tunnel/{session}");
    let run = call(
        s,
        Method::POST,
        &format!("{base}/command"),
        tech,
        Some(json!({"command": "id"})),
    )
    .await;
    expect(&run, 404, nf, "command run");
    let one = format!("{base}/commands/{command}");
    expect(
        &call(s, Method::GET, &one, tech, None).await,
        404,
        nf,
        "command get",
    );
    expect(
        &call(s, Method::DELETE, &one, tech, None).await,
        404,
        nf,
        "command cancel",
    );
    let (code, _, body) = s
        .raw_output(tech, session, command, "stdout")
        .await
        .unwrap();
    assert_eq!(code, 404, "stdout: {}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "session_not_found", "stdout: {body}");
    for (method, path) in [
        (Method::GET, "files?path=/etc/hostname"),
        (Method::GET, "files/list?path=/"),
        (Method::GET, "files/upload-status?path=/tmp/x"),
    ] {
        let answer = call(s, method, &format!("{base}/{path}"), tech, None).await;
        expect(&answer, 404, nf, path);
    }
    let put = s
        .http()
        .put(s.url(&format!("{base}/files?path=/tmp/x")))
        .bearer_auth(tech)
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 404, "files put");
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["code"], "session_not_found", "files put: {put}");
    let stream = format!("ws://{}/api/v1/tunnel/{session}/stream", s.addr);
    assert_eq!(
        ScriptedAgent::connect_status(&stream, Some(tech)).await,
        Some(404),
        "stream"
    );
}

async fn a_technician_sees_and_uses_only_their_groups_agents(on_sqlite: bool) {
    let (s, _dir) = server(on_sqlite).await;
    let admin = s.admin_token().await.unwrap();
    let tech = s.tech_token("tina").await.unwrap();
    groups_are_managed_and_granted(&s, &admin, &tech).await;

    let mut ids = Vec::new();
    let mut agents = Vec::new();
    for name in ["a1", "a2", "a3", "g1", "d1"] {
        let (id, key) = s.register_agent(&admin, name).await.unwrap();
        agents.push(
            ScriptedAgent::connect(&s.ws_url(), Some(&key))
                .await
                .unwrap(),
        );
        s.wait_connected(&admin, &id).await.unwrap();
        ids.push(id);
        if name != "d1" {
            move_agent(&s, name, "acme").await;
        }
    }
    assert_eq!(
        names(&s, &tech, "/api/v1/agents").await,
        ["a1", "a2", "a3", "g1"]
    );
    assert_eq!(
        names(&s, &admin, "/api/v1/agents").await,
        ["a1", "a2", "a3", "d1", "g1"]
    );
    let dora = s.login("dora", "dora-password").await.unwrap();
    assert_eq!(
        names(&s, &dora, "/api/v1/agents").await.len(),
        5,
        "auditors see all"
    );
    assert_eq!(names(&s, &tech, "/api/v1/groups").await, ["acme"]);
    let (_, groups) = call(&s, Method::GET, "/api/v1/groups", &admin, None).await;
    let counts: Vec<_> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].clone(), g["agents"].clone()))
        .collect();
    assert_eq!(
        counts,
        [
            (json!("acme"), json!(4)),
            (json!("default"), json!(1)),
            (json!("globex"), json!(0))
        ]
    );

    // A session and a command of tina's on g1 while it is hers; then g1 moves to globex.
    let session = open(&s, &tech, &ids[3], &mut agents[3]).await;
    let run = call(
        &s,
        Method::POST,
        &format!("/api/v1/tunnel/{session}/command"),
        &tech,
        Some(json!({"command": "sleep 100"})),
    )
    .await;
    expect(&run, 202, None, "command while visible");
    let command = run.1["command_id"].as_str().unwrap().to_owned();
    let status_path = format!("/api/v1/tunnel/status/{session}");
    expect(
        &call(&s, Method::GET, &status_path, &tech, None).await,
        200,
        None,
        "visible",
    );
    // A stream she watches now closes once the agent leaves her groups.
    let stream_url = format!("ws://{}/api/v1/tunnel/{session}/stream", s.addr);
    let mut stream = ScriptedAgent::connect(&stream_url, Some(&tech))
        .await
        .unwrap();
    move_agent(&s, "g1", "globex").await;
    let moved_at = std::time::Instant::now();
    loop {
        match stream
            .recv(std::time::Duration::from_secs(5))
            .await
            .unwrap()
        {
            rmm_e2e::agent::Received::Json(_) => {}
            rmm_e2e::agent::Received::Closed(frame) => {
                let frame = frame.expect("a close frame");
                assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
                assert!(frame.reason.contains("no longer allowed"), "{frame:?}");
                break;
            }
        }
    }
    assert!(moved_at.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(names(&s, &tech, "/api/v1/agents").await, ["a1", "a2", "a3"]);
    everything_about_it_is_not_found(&s, &tech, &ids[3], &session, &command).await;
    // The default agent was never hers once she was moved to acme.
    let open_d1 = call(
        &s,
        Method::POST,
        "/api/v1/tunnel/open",
        &tech,
        Some(json!({ "agent_id": ids[4] })),
    )
    .await;
    expect(&open_d1, 404, Some("agent_not_connected"), "open d1");
    // Admins see g1 and close tina's session to it, and open d1, which tina could not.
    let all = names(&s, &admin, "/api/v1/agents").await;
    assert_eq!(all, ["a1", "a2", "a3", "d1", "g1"]);
    let close = call(
        &s,
        Method::POST,
        "/api/v1/tunnel/close",
        &admin,
        Some(json!({ "session_id": session })),
    )
    .await;
    expect(&close, 200, None, "admin close");
    let mine = open(&s, &admin, &ids[4], &mut agents[4]).await;
    let path = format!("/api/v1/tunnel/status/{mine}");
    expect(
        &call(&s, Method::GET, &path, &admin, None).await,
        200,
        None,
        "admin's own",
    );

    // The per-user cap: two open sessions, the third open is refused, one closed frees a slot.
    let first = open(&s, &tech, &ids[0], &mut agents[0]).await;
    open(&s, &tech, &ids[1], &mut agents[1]).await;
    let third = call(
        &s,
        Method::POST,
        "/api/v1/tunnel/open",
        &tech,
        Some(json!({ "agent_id": ids[2] })),
    )
    .await;
    expect(&third, 429, Some("too_many_sessions"), "cap + 1");
    let close = call(
        &s,
        Method::POST,
        "/api/v1/tunnel/close",
        &tech,
        Some(json!({ "session_id": first })),
    )
    .await;
    expect(&close, 200, None, "close one");
    open(&s, &tech, &ids[2], &mut agents[2]).await;

    // Deleting: refused while agents are in it, then allowed once empty.
    let delete = |name: &str, token: &str| {
        let path = format!("/api/v1/groups/{name}");
        let token = token.to_owned();
        let s = &s;
        async move { call(s, Method::DELETE, &path, &token, None).await }
    };
    expect(
        &delete("globex", &tech).await,
        403,
        Some("forbidden"),
        "tech deletes",
    );
    expect(
        &delete("globex", &admin).await,
        409,
        Some("group_not_empty"),
        "globex with g1",
    );
    move_agent(&s, "g1", "acme").await;
    expect(&delete("globex", &admin).await, 204, None, "empty globex");
    expect(
        &delete("globex", &admin).await,
        404,
        Some("group_not_found"),
        "gone",
    );
    assert_eq!(
        listed_user(&s, &admin, "gus").await["groups"],
        json!(["acme"])
    );
    let (_, audit) = call(&s, Method::GET, "/api/v1/audit?limit=500", &admin, None).await;
    let actions: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "group_created").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "group_deleted").count(),
        1,
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_technician_sees_and_uses_only_their_groups_agents_on_postgres() {
    a_technician_sees_and_uses_only_their_groups_agents(false).await;
}

#[tokio::test]
async fn a_technician_sees_and_uses_only_their_groups_agents_on_sqlite() {
    a_technician_sees_and_uses_only_their_groups_agents(true).await;
}

#[tokio::test]
async fn rmm_users_lists_users_with_their_groups_for_admins() {
    let (s, _dir) = server(true).await;
    let admin = s.admin_token().await.unwrap();
    let tech = s.tech_token("tina").await.unwrap();
    let home = TempDir::new().unwrap();
    let rmm = |token: &str, args: &[&str]| {
        let mut cmd = rmm_command(&s.url(""), home.path(), args).unwrap();
        cmd.env("RMM_TOKEN", token);
        cmd.output()
    };
    let out = rmm(&admin, &["users"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "USERNAME  ROLE        STATE    GROUPS\n\
         admin     admin       enabled  default\n\
         tina      technician  enabled  default\n"
    );
    let out = rmm(&admin, &["users", "--json"]).await.unwrap();
    let users: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users[1]["username"], "tina");
    assert_eq!(users[1]["groups"], json!(["default"]));
    let out = rmm(&tech, &["users"]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("rmm: ") && err.contains("admins"), "{err}");
}
