//! The live agent list, `GET /api/v1/agents/events` (Server-Sent Events), on the real
//! `rmm-server` with real `rmm-agent`s (SQLite): the first `agents` event lists every agent
//! the caller may see, offline; starting an agent produces an event with it connected within
//! 2 s and stopping it one with it disconnected; a technician whose groups exclude an agent
//! never sees it in any event; a fifth stream of one user is 429 `too_many_requests`; logging
//! out ends the stream; no token is 401.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::TestServer;
use serde_json::{Value, json};
use tempfile::TempDir;

/// One open event stream.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(s: &TestServer, token: &str) -> reqwest::Response {
        s.http()
            .get(s.url(&format!("/api/v1/agents/events?access_token={token}")))
            .send()
            .await
            .unwrap()
    }

    async fn start(s: &TestServer, token: &str) -> Self {
        let resp = Self::open(s, token).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next `agents` event's list, or `None` when the stream ended or `within` passed.
    async fn next(&mut self, within: Duration) -> Option<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(data) = block
                    .strip_prefix("event: agents\ndata: ")
                    .map(str::trim_end)
                {
                    let list: Value = serde_json::from_str(data).unwrap();
                    return Some(list.as_array().unwrap().clone());
                }
                assert!(block.starts_with(':'), "unexpected block {block:?}");
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None) | Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Waits for an event in which `name` is listed with `connected`; every event seen on the
    /// way is checked by `each`.
    async fn until(
        &mut self,
        name: &str,
        connected: bool,
        within: Duration,
        each: impl Fn(&[Value]),
    ) -> Duration {
        let started = Instant::now();
        loop {
            let left = within.saturating_sub(started.elapsed());
            let list = self.next(left).await.unwrap_or_else(|| {
                panic!("no event with {name} connected={connected} within {within:?}")
            });
            each(&list);
            if state(&list, name) == Some(connected) {
                return started.elapsed();
            }
        }
    }
}

/// Whether `name` is listed connected; `None` when not listed.
fn state(list: &[Value], name: &str) -> Option<bool> {
    list.iter()
        .find(|a| a["name"] == name)
        .map(|a| a["connected"] == true)
}

fn names(list: &[Value]) -> Vec<&str> {
    let mut names: Vec<&str> = list.iter().filter_map(|a| a["name"].as_str()).collect();
    names.sort_unstable();
    names
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

#[tokio::test]
async fn the_live_agent_list_follows_agents_and_respects_groups_caps_and_logout() {
    let dir = TempDir::new().unwrap();
    let s = TestServer::start(&sqlite_url(dir.path()), &[])
        .await
        .unwrap();
    let admin = s.admin_token().await.unwrap();
    let (_, alpha_key) = s.register_agent(&admin, "alpha").await.unwrap();
    let (bravo_id, bravo_key) = s.register_agent(&admin, "bravo").await.unwrap();
    let created = call(
        &s,
        Method::POST,
        "/api/v1/groups",
        &admin,
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let moved = call(
        &s,
        Method::PATCH,
        &format!("/api/v1/agents/{bravo_id}"),
        &admin,
        Some(json!({"group": "acme"})),
    )
    .await;
    assert_eq!(moved.0, 200, "{}", moved.1);
    // A technician granted `default` only: alpha is theirs, bravo is not.
    let tech = s.tech_token("tina").await.unwrap();

    let no_token = s
        .http()
        .get(s.url("/api/v1/agents/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);

    let mut admin_events = Events::start(&s, &admin).await;
    let first = admin_events.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(names(&first), ["alpha", "bravo"]);
    assert_eq!(state(&first, "bravo"), Some(false));
    // The same list GET /api/v1/agents answers.
    let (_, listed) = call(&s, Method::GET, "/api/v1/agents", &admin, None).await;
    assert_eq!(Value::from(first.clone()), listed);

    let mut tech_events = Events::start(&s, &tech).await;
    let tech_first = tech_events.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(names(&tech_first), ["alpha"]);
    let never_bravo =
        |list: &[Value]| assert_eq!(state(list, "bravo"), None, "tech saw bravo: {list:?}");

    // Bravo starts: the admin sees it online within 2 s of starting the agent.
    let mut bravo = spawn_agent(&s, &bravo_key).unwrap();
    let took = admin_events
        .until("bravo", true, Duration::from_secs(2), |_| {})
        .await;
    println!("bravo listed online {took:?} after its agent was started");
    // Alpha starts: the technician sees it, and never bravo on the way.
    let mut alpha = spawn_agent(&s, &alpha_key).unwrap();
    tech_events
        .until("alpha", true, Duration::from_secs(2), never_bravo)
        .await;
    // Bravo stops: the admin sees it offline; the technician still never sees it.
    bravo.kill().await.unwrap();
    admin_events
        .until("bravo", false, Duration::from_secs(3), |_| {})
        .await;
    alpha.kill().await.unwrap();
    tech_events
        .until("alpha", false, Duration::from_secs(3), never_bravo)
        .await;

    // Four streams per user at most: the admin holds one, three more open, the fifth is 429.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(Events::start(&s, &admin).await);
    }
    let fifth = Events::open(&s, &admin).await;
    assert_eq!(fifth.status(), 429);
    let body: Value = fifth.json().await.unwrap();
    assert_eq!(body["code"], "too_many_requests", "{body}");
    // Another user is not affected.
    let mut tech_second = Events::start(&s, &tech).await;
    assert!(tech_second.next(Duration::from_secs(2)).await.is_some());

    // Logout ends the technician's streams within a few seconds.
    let out = s
        .http()
        .post(s.url("/api/v1/auth/logout"))
        .bearer_auth(&tech)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let started = Instant::now();
    while tech_events.next(Duration::from_secs(5)).await.is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stream outlived logout by {:?}",
        started.elapsed()
    );
    let refused = Events::open(&s, &tech).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "token_revoked", "{body}");
    drop(more);
}
