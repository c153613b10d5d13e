//! Enrollment on the real binaries (PostgreSQL and SQLite): an admin's token lets
//! `rmm-agent enroll` register machines in the token's group and write their config files,
//! as many times as it allows; expired, used-up, revoked and unknown tokens are refused with
//! their reason, every enrollment is audited, and failures from one address are throttled.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use rmm_e2e::pg::{fresh_database, sqlite_url};
use rmm_e2e::server::{StartOptions, TestServer, binary};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// A server (log captured) on PostgreSQL, or on SQLite in a folder kept as long as it runs.
async fn server(on_sqlite: bool) -> (TestServer, Option<TempDir>) {
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    if on_sqlite {
        let dir = TempDir::new().unwrap();
        let url = sqlite_url(dir.path());
        (
            TestServer::start_with(&url, &[], options).await.unwrap(),
            Some(dir),
        )
    } else {
        let db = fresh_database().await.expect("test database");
        (
            TestServer::start_with(&db, &[], options).await.unwrap(),
            None,
        )
    }
}

/// Runs one statement on the server's database (`pg` on PostgreSQL, `lite` on SQLite).
async fn sql(s: &TestServer, pg: &str, lite: &str) {
    if s.database_url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(lite.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(pg.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// The group of the agent named `name`, read from the database.
async fn group_of(s: &TestServer, name: &str) -> String {
    let query = "select g.name from agents a join groups g on g.group_id = a.group_id \
                 where a.name = ";
    if s.database_url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{query}?1")))
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{query}$1")))
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

/// `rmm-agent ARGS`: (exit code, stdout, stderr).
async fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("rmm-agent").unwrap())
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rmm-agent enroll` against `s` with `token` as `name`, writing `config`.
async fn enroll(s: &TestServer, token: &str, name: &str, config: &Path) -> (i32, String, String) {
    let server = format!("http://{}", s.addr);
    agent(&[
        "enroll",
        "--server",
        &server,
        "--token",
        token,
        "--name",
        name,
        "--config",
        config.to_str().unwrap(),
    ])
    .await
}

/// Creates a token for `group` with `body`'s other fields: its id and secret.
async fn create_token(s: &TestServer, admin: &str, body: Value) -> (String, String) {
    let (status, created) = s
        .call(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(admin),
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    (
        created["enrollment_id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

/// The id of the agent named `name`, and whether it is connected.
async fn agent_listed(s: &TestServer, admin: &str, name: &str) -> Option<(String, bool)> {
    let (_, agents) = s
        .call(Method::GET, "/api/v1/agents", Some(admin), None)
        .await
        .unwrap();
    agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap().to_owned(),
                a["connected"] == true,
            )
        })
}

/// Runs `rmm-agent --config PATH` until dropped.
fn run_agent(config: &Path) -> Child {
    Command::new(binary("rmm-agent").unwrap())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--heartbeat-secs",
            "1",
        ])
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn scenario(on_sqlite: bool) {
    let (s, _db_dir) = server(on_sqlite).await;
    let dir = TempDir::new().unwrap();
    sql(
        &s,
        "insert into groups (group_id, name) values ('00000000-0000-0000-0000-0000000000aa', 'site-a')",
        "insert into groups (group_id, name) values ('00000000-0000-0000-0000-0000000000aa', 'site-a')",
    )
    .await;
    let admin = s.admin_token().await.unwrap();

    // Only admins, only existing groups, uses and expiry in bounds.
    let tech = s.tech_token("tess").await.unwrap();
    let body = json!({ "group": "site-a" });
    let (status, answer) = s
        .call(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(&tech),
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
    // A group that does not exist is not found; the request itself is well formed.
    let (status, answer) = s
        .call(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(&admin),
            Some(json!({ "group": "nowhere" })),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("group_not_found")),
        "{answer}"
    );
    assert!(
        answer["error"].as_str().unwrap().contains("nowhere"),
        "{answer}"
    );
    for (body, needle) in [
        (json!({ "group": "site-a", "uses": 0 }), "uses"),
        (
            json!({ "group": "site-a", "expires_in_secs": 59 }),
            "expires_in_secs",
        ),
    ] {
        let (status, answer) = s
            .call(
                Method::POST,
                "/api/v1/enrollment-tokens",
                Some(&admin),
                Some(body),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }

    // A 2-use token enrolls two machines into site-a.
    let (two_uses, token) = create_token(&s, &admin, json!({ "group": "site-a", "uses": 2 })).await;
    let first = dir.path().join("box-1.toml");
    let (code, out, err) = enroll(&s, &token, "box-1", &first).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(first.to_str().unwrap()) && out.contains("site-a"),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let written = std::fs::read_to_string(&first).unwrap();
    assert!(
        !written.contains(&token),
        "the enrollment token is not the agent's key"
    );
    // An existing config file is not overwritten (and the token's use is not spent).
    let (code, _, err) = enroll(&s, &token, "box-9", &first).await;
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&first).unwrap(), written);

    let _running = run_agent(&first);
    let (box1, _) = agent_listed(&s, &admin, "box-1").await.unwrap();
    s.wait_connected(&admin, &box1).await.unwrap();
    assert_eq!(
        agent_listed(&s, &admin, "box-1").await,
        Some((box1.clone(), true))
    );
    assert_eq!(group_of(&s, "box-1").await, "site-a");

    let second = dir.path().join("box-2.toml");
    let (code, out, err) = enroll(&s, &token, "box-2", &second).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(group_of(&s, "box-2").await, "site-a");
    let (code, out, err) = enroll(&s, &token, "box-3", &dir.path().join("box-3.toml")).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("used up"), "{err}");
    assert!(!dir.path().join("box-3.toml").exists());

    // Listed with its uses, never with the token.
    let (_, list) = s
        .call(Method::GET, "/api/v1/enrollment-tokens", Some(&admin), None)
        .await
        .unwrap();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["enrollment_id"] == two_uses.as_str())
        .unwrap();
    assert_eq!(
        (listed["uses"].as_u64(), listed["uses_allowed"].as_u64()),
        (Some(2), Some(2)),
        "{listed}"
    );
    assert_eq!(listed["group"], "site-a");
    assert!(!list.to_string().contains(&token));

    // Expired (its expiry moved into the past in the database) and revoked tokens.
    let (expired_id, expired) = create_token(&s, &admin, json!({ "group": "site-a" })).await;
    sql(
        &s,
        &format!("update enrollment_tokens set expires_at = now() - interval '1 second' where enrollment_id = '{expired_id}'"),
        &format!("update enrollment_tokens set expires_at = 1000000 where enrollment_id = '{expired_id}'"),
    )
    .await;
    let (code, _, err) = enroll(&s, &expired, "box-4", &dir.path().join("box-4.toml")).await;
    assert_ne!(code, 0);
    assert!(err.contains("expired"), "{err}");
    let (revoked_id, revoked) =
        create_token(&s, &admin, json!({ "group": "site-a", "uses": 5 })).await;
    let path = format!("/api/v1/enrollment-tokens/{revoked_id}");
    let (status, _) = s
        .call(Method::DELETE, &path, Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let unknown = format!("/api/v1/enrollment-tokens/{}", uuid::Uuid::new_v4());
    let (status, answer) = s
        .call(Method::DELETE, &unknown, Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("enrollment_not_found"))
    );
    let (code, _, err) = enroll(&s, &revoked, "box-5", &dir.path().join("box-5.toml")).await;
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");
    assert!(agent_listed(&s, &admin, "box-4").await.is_none());
    assert!(agent_listed(&s, &admin, "box-5").await.is_none());

    // The audit log names the enrollment and the agent.
    let (_, audit) = s
        .call(
            Method::GET,
            &format!("/api/v1/audit?agent_id={box1}"),
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    let enrolled = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "agent_enrolled");
    let detail = enrolled
        .and_then(|e| e["detail"].as_str())
        .unwrap_or_default();
    assert!(
        detail.contains(&format!("enrollment_id={two_uses}")) && detail.contains(&box1),
        "{audit}"
    );
    let (_, audit) = s
        .call(Method::GET, "/api/v1/audit?limit=200", Some(&admin), None)
        .await
        .unwrap();
    let events: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        events.contains(&"enrollment_created") && events.contains(&"enrollment_revoked"),
        "{events:?}"
    );

    // Unknown tokens: refused, logged with the address, and throttled after 5 failures a minute
    // (used-up, expired and revoked above count too).
    let (code, _, err) = enroll(&s, "no-such-token", "box-6", &dir.path().join("box-6.toml")).await;
    assert_ne!(code, 0);
    assert!(err.contains("unknown"), "{err}");
    s.wait_for_log(&["enrollment refused", "127.0.0.1"], Duration::from_secs(5))
        .await
        .unwrap();
    let body = json!({ "token": "no-such-token", "name": "box-7" });
    let (status, answer) = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(body.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("enrollment_invalid")),
        "{answer}"
    );
    let locked = s
        .http()
        .post(s.url("/api/v1/agents/enroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status().as_u16(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let answer: Value = locked.json().await.unwrap();
    assert_eq!(answer["code"], "too_many_requests", "{answer}");
}

#[tokio::test]
async fn enrollment_on_postgres() {
    scenario(false).await;
}

#[tokio::test]
async fn enrollment_on_sqlite() {
    scenario(true).await;
}

/// `rmm enroll-token ...` as the admin: (exit code, stdout, stderr).
async fn rmm(s: &TestServer, admin: &str, home: &TempDir, args: &[&str]) -> (i32, String, String) {
    let out = rmm_e2e::server::rmm_command(&s.url(""), home.path(), args)
        .unwrap()
        .env("RMM_TOKEN", admin)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_tokens_and_prints_the_install() {
    let (s, _db_dir) = server(true).await;
    let home = TempDir::new().unwrap();
    let admin = s.admin_token().await.unwrap();
    let (code, out, err) = rmm(
        &s,
        &admin,
        &home,
        &[
            "enroll-token",
            "create",
            "--group",
            "default",
            "--uses",
            "2",
            "--expires",
            "2h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = out.lines().nth(1).unwrap().trim().to_owned();
    assert!(
        out.contains(&format!(
            "rmm-agent enroll --server {} --token {token}",
            s.url("").trim_end_matches('/')
        )),
        "{out}"
    );
    assert!(out.contains("systemctl enable --now rmm-agent"), "{out}");
    // The printed token works.
    let config = home.path().join("agent.toml");
    let (code, out2, err) = enroll(&s, &token, "cli-box", &config).await;
    assert_eq!(code, 0, "{out2}{err}");

    let (code, out, err) = rmm(&s, &admin, &home, &["enroll-token", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (list[0]["uses"].as_u64(), list[0]["uses_allowed"].as_u64()),
        (Some(1), Some(2)),
        "{list}"
    );
    assert!(!out.contains(&token));
    let id = list[0]["enrollment_id"].as_str().unwrap().to_owned();
    let mut db = sqlx::SqliteConnection::connect(&s.database_url)
        .await
        .unwrap();
    let life: i64 = sqlx::query_scalar(
        "select expires_at - created_at from enrollment_tokens where enrollment_id = ?1",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(life, 7200 * 1_000_000, "--expires 2h");

    let (code, out, err) = rmm(&s, &admin, &home, &["enroll-token", "revoke", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let (code, out, _) = rmm(&s, &admin, &home, &["enroll-token", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("revoked") && out.contains("1/2"),
        "{out}"
    );
    let (code, _, err) = enroll(&s, &token, "cli-box-2", &home.path().join("b.toml")).await;
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");

    // Errors are one line: an unknown group, a non-admin.
    let (code, _, err) = rmm(
        &s,
        &admin,
        &home,
        &["enroll-token", "create", "--group", "nowhere", "--json"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("nowhere") && err.lines().count() == 1, "{err}");
    let tech = s.tech_token("tess").await.unwrap();
    let (code, _, err) = rmm(&s, &tech, &home, &["enroll-token", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("admins"), "{err}");
}
