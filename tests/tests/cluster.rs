//! Cluster mode end to end: PostgreSQL (testcontainers), Debian's `nats-server` and HAProxy,
//! three real `rmm-server` nodes and real agents that connect through the balancer. A
//! technician on node A works with an agent connected to node C; node C is killed and comes
//! back.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::agent::ScriptedAgent;
use rmm_e2e::cluster::{Haproxy, Nats, Reach, start_node, start_node_with};
use rmm_e2e::real_agent::agent_command_to;
use rmm_e2e::server::TestServer;
use rmm_e2e::terminal::TermSocket;
use serde_json::{Value, json};
use tokio::process::Child;

/// The nodes' lease: node C's death is noticed within it (plus a sweep).
const LEASE_SECS: u64 = 6;

/// Waits until `check` holds, polling; fails naming `what`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {within:?}");
}

async fn connected_ids(node: &TestServer, token: &str) -> Vec<String> {
    let (code, agents) = node
        .call(Method::GET, "/api/v1/agents", Some(token), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{agents}");
    agents
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["connected"] == true)
        .map(|a| a["agent_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The agents whose connection node `node` logged since byte `from` of its log.
fn connected_here(node: &TestServer, ids: &[String], from: usize) -> Vec<String> {
    let log = node.log_text().unwrap_or_default();
    let log = log.get(from..).unwrap_or("");
    ids.iter()
        .filter(|id| {
            log.lines()
                .any(|l| l.contains("agent connected") && l.contains(id.as_str()))
        })
        .cloned()
        .collect()
}

/// The session's `close_reason` as `node` reads it (null while it is open, or when the
/// node cannot say).
async fn close_reason(node: &TestServer, tech: &str, session: &str) -> Value {
    let (_, status) = node
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/status/{session}"),
            Some(tech),
            None,
        )
        .await
        .unwrap();
    status["close_reason"].clone()
}

/// The cross-node streams `node` dialled to `peer` by `path` ("direct" or "nats"), by its log.
fn streams_to(node: &TestServer, peer: &str, path: &str) -> usize {
    let log = node.log_text().unwrap_or_default();
    let (peer, path) = (format!("node={peer}"), format!("path=\"{path}\""));
    log.lines()
        .filter(|l| l.contains("new cross-node stream") && l.contains(&peer) && l.contains(&path))
        .count()
}

fn spawn_agent(balancer: &Haproxy, key: &str) -> Child {
    agent_command_to(&format!("ws://{}", balancer.addr), key, &[])
        .unwrap()
        .spawn()
        .unwrap()
}

async fn open(node: &TestServer, tech: &str, agent: &str) -> (u16, Value) {
    node.call(
        Method::POST,
        "/api/v1/tunnel/open",
        Some(tech),
        Some(json!({ "agent_id": agent })),
    )
    .await
    .unwrap()
}

/// Opens a tunnel to `agent` through `node` in a task: a scripted agent answers meanwhile.
fn open_in_background(
    node: &TestServer,
    tech: &str,
    agent: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let (url, http) = (node.url("/api/v1/tunnel/open"), node.http().clone());
    let body = json!({ "agent_id": agent });
    let tech = tech.to_owned();
    tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(tech)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    })
}

async fn run(node: &TestServer, tech: &str, session: &str, command: &str) -> Value {
    let (code, started) = node
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(tech),
            Some(json!({ "command": command })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    let id = started["command_id"].as_str().unwrap();
    let (code, done) = node
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/{session}/commands/{id}?wait=30"),
            Some(tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{done}");
    done
}

#[tokio::test]
async fn a_technician_on_one_node_works_with_an_agent_on_another_and_survives_its_loss() {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let a = start_node(&db, &nats, "node-a", LEASE_SECS).await.unwrap();
    let b = start_node(&db, &nats, "node-b", LEASE_SECS).await.unwrap();
    let mut c = start_node(&db, &nats, "node-c", LEASE_SECS).await.unwrap();
    let balancer = Haproxy::start(&[a.addr, b.addr, c.addr]).await.unwrap();

    let admin = a.admin_token().await.unwrap();
    let tech = a.tech_token("tina").await.unwrap();
    let mut ids = Vec::new();
    let mut agents = Vec::new();
    for i in 0..3 {
        let (id, key) = a.register_agent(&admin, &format!("pc-{i}")).await.unwrap();
        agents.push(spawn_agent(&balancer, &key));
        ids.push(id);
    }
    // Presence across nodes: every node lists every agent as connected.
    for node in [&a, &b, &c] {
        eventually(
            Duration::from_secs(15),
            "all agents listed as connected on every node",
            || async {
                let listed = connected_ids(node, &admin).await;
                ids.iter().all(|id| listed.contains(id))
            },
        )
        .await;
    }
    let on_c = connected_here(&c, &ids, 0);
    assert_eq!(
        on_c.len(),
        1,
        "round-robin gives node C one of three agents: {on_c:?}"
    );
    let agent_c = on_c[0].clone();

    // A tunnel through node A to the agent on node C; a command through A.
    let (code, opened) = open(&a, &tech, &agent_c).await;
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    let done = run(&a, &tech, &session, "echo hello from $((6 * 7))").await;
    assert_eq!(
        (done["status"].as_str(), done["stdout"].as_str()),
        (Some("completed"), Some("hello from 42\n")),
        "{done}"
    );
    // The same session's status through node B (forwarded to C as well).
    let (code, status) = b
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/status/{session}"),
            Some(&tech),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, status["status"].as_str()),
        (200, Some("active")),
        "{status}"
    );

    // Two watchers on different nodes see the same output.
    let mut watch_a = ScriptedAgent::connect(
        &format!("ws://{}/api/v1/tunnel/{session}/stream", a.addr),
        Some(&tech),
    )
    .await
    .unwrap();
    let mut watch_b = ScriptedAgent::connect(
        &format!("ws://{}/api/v1/tunnel/{session}/stream", b.addr),
        Some(&tech),
    )
    .await
    .unwrap();
    let done = run(&b, &tech, &session, "echo watched").await;
    assert_eq!(done["stdout"], "watched\n", "{done}");
    for watcher in [&mut watch_a, &mut watch_b] {
        // A watcher first gets what the session already output, then the live output.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = watcher.recv_json(left).await.unwrap();
            if frame["payload"]["data"]["payload"]["stdout"] == "watched\n" {
                break;
            }
        }
    }

    // A terminal through node A.
    let (code, terminal) = a
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/terminals"),
            Some(&tech),
            Some(json!({ "cols": 80, "rows": 24, "command": "sh" })),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{terminal}");
    let terminal_id = terminal["terminal_id"].as_str().unwrap();
    let mut term = TermSocket::connect(&format!(
        "ws://{}/api/v1/tunnel/{session}/terminals/{terminal_id}/ws?access_token={tech}",
        a.addr
    ))
    .await
    .unwrap();
    term.input(b"echo term-$((40 + 2))\n").await.unwrap();
    term.read_until("term-42", Duration::from_secs(10))
        .await
        .unwrap();
    term.close().await;

    // A file there and back through node A: 3 MiB, more than the cross-node window.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved.bin");
    let bytes = rmm_e2e::pseudo_random(18, 3 * 1024 * 1024);
    let url = a.url(&format!(
        "/api/v1/tunnel/{session}/files?path={}",
        path.display()
    ));
    let r = a
        .http()
        .put(&url)
        .bearer_auth(&tech)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "the uploaded file differs"
    );
    let r = a.http().get(&url).bearer_auth(&tech).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap().as_ref() == bytes.as_slice(),
        "the downloaded file differs"
    );
    // All of it went over TCP to node C's cluster address, none over NATS.
    assert!(streams_to(&a, "node-c", "direct") > 0);
    assert!(streams_to(&b, "node-c", "direct") > 0);
    assert_eq!(streams_to(&a, "node-c", "nats"), 0);

    // Node C dies: its session closes as node_lost within the lease (plus a sweep), its
    // agent comes back through the balancer on A or B, and a new tunnel works.
    let killed = Instant::now();
    c.kill().await.unwrap();
    eventually(
        Duration::from_secs(LEASE_SECS + 10),
        "the session closed as node_lost",
        || async { close_reason(&a, &tech, &session).await == "node_lost" },
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(LEASE_SECS + 5),
        "took {:?}",
        killed.elapsed()
    );
    let (code, audit) = a
        .call(
            Method::GET,
            "/api/v1/audit?action=tunnel_close",
            Some(&admin),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(audit.to_string().contains("node_lost"), "{audit}");

    eventually(
        Duration::from_secs(60),
        "the agent of node C reconnected",
        || async {
            connected_ids(&a, &admin).await.contains(&agent_c)
                && connected_ids(&b, &admin).await.contains(&agent_c)
        },
    )
    .await;
    let (code, opened) = open(&a, &tech, &agent_c).await;
    assert_eq!(code, 200, "{opened}");
    let session2 = opened["session_id"].as_str().unwrap().to_owned();
    let done = run(&a, &tech, &session2, "echo back").await;
    assert_eq!(done["stdout"], "back\n", "{done}");
    let (code, closed) = a
        .call(
            Method::POST,
            "/api/v1/tunnel/close",
            Some(&tech),
            Some(json!({ "session_id": session2 })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{closed}");

    // Node C restarts and takes agents again: new agents through the balancer reach it.
    let log_mark = c.log_len().unwrap_or(0);
    c.restart().await.unwrap();
    // HAProxy checks every 300 ms and takes a node back after one good check.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut more = Vec::new();
    for i in 3..6 {
        let (id, key) = a.register_agent(&admin, &format!("pc-{i}")).await.unwrap();
        agents.push(spawn_agent(&balancer, &key));
        more.push(id);
    }
    eventually(
        Duration::from_secs(20),
        "node C took one of the new agents",
        || async { !connected_here(&c, &more, log_mark).is_empty() },
    )
    .await;
    let on_c = connected_here(&c, &more, log_mark)[0].clone();
    eventually(
        Duration::from_secs(10),
        "node A lists the agent on the restarted node",
        || async { connected_ids(&a, &admin).await.contains(&on_c) },
    )
    .await;
    let (code, opened) = open(&a, &tech, &on_c).await;
    assert_eq!(code, 200, "{opened}");
    let session3 = opened["session_id"].as_str().unwrap().to_owned();
    let done = run(&a, &tech, &session3, "echo restarted").await;
    assert_eq!(done["stdout"], "restarted\n", "{done}");
}

/// Two nodes, `node-a` and `second`, on a fresh database and their own NATS, with the
/// admin's and a technician's tokens (the technician `tina`).
struct Pair {
    nats: Nats,
    a: TestServer,
    other: TestServer,
    admin: String,
    tech: String,
}

/// A real agent `name` connected to `other`, once node A lists it, and a tunnel to it
/// opened through A: the agent's process and the session's id.
async fn tunnel_through_a(
    a: &TestServer,
    other: &TestServer,
    admin: &str,
    tech: &str,
    name: &str,
) -> (Child, String) {
    let (agent, key) = a.register_agent(admin, name).await.unwrap();
    let process = rmm_e2e::real_agent::spawn_agent(other, &key).unwrap();
    eventually(
        Duration::from_secs(15),
        "node A lists the agent on the other node",
        || async { connected_ids(a, admin).await.contains(&agent) },
    )
    .await;
    let (code, opened) = open(a, tech, &agent).await;
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    (process, session)
}

/// Node A and node `second`, both reached by `reach`, with `extra` settings for `second`.
async fn pair(second: &str, reach: Reach, extra: &[(&str, &str)]) -> Pair {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let a = start_node_with(&db, &nats, "node-a", LEASE_SECS, reach, &[])
        .await
        .unwrap();
    let other = start_node_with(&db, &nats, second, LEASE_SECS, reach, extra)
        .await
        .unwrap();
    let admin = a.admin_token().await.unwrap();
    let tech = a.tech_token("tina").await.unwrap();
    Pair {
        nats,
        a,
        other,
        admin,
        tech,
    }
}

#[tokio::test]
async fn without_nats_other_nodes_agents_answer_503_and_everything_returns_with_it() {
    let Pair {
        mut nats,
        a,
        other: c,
        admin,
        tech,
    } = pair("node-c", Reach::Direct, &[]).await;
    let (on_a, key_a) = a.register_agent(&admin, "here").await.unwrap();
    let (on_c, key_c) = a.register_agent(&admin, "there").await.unwrap();
    let _agent_a = rmm_e2e::real_agent::spawn_agent(&a, &key_a).unwrap();
    let _agent_c = rmm_e2e::real_agent::spawn_agent(&c, &key_c).unwrap();
    eventually(
        Duration::from_secs(15),
        "both agents listed on node A",
        || async {
            let listed = connected_ids(&a, &admin).await;
            listed.contains(&on_a) && listed.contains(&on_c)
        },
    )
    .await;

    // A request another node forwarded is served where it arrives, never forwarded again
    // (here: node A has no connection to that agent, so it cannot open a tunnel to it).
    let r = a
        .http()
        .post(a.url("/api/v1/tunnel/open"))
        .bearer_auth(&tech)
        .header("x-rmm-forwarded-by", "node-c")
        .json(&json!({ "agent_id": on_c }))
        .send()
        .await
        .unwrap();
    let (code, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("agent_not_connected")),
        "{body}"
    );

    nats.stop();
    let asked = Instant::now();
    let (code, body) = open(&a, &tech, &on_c).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("node_unreachable")),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    // The agent on the node that serves the request keeps working, and the other is still
    // listed where it was last heard of (a retry later, not "not connected").
    let (code, opened) = open(&a, &tech, &on_a).await;
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        run(&a, &tech, &session, "echo local").await["stdout"],
        "local\n"
    );
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 3)).await;
    assert!(connected_ids(&a, &admin).await.contains(&on_c));
    let (code, body) = open(&a, &tech, &on_c).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("node_unreachable")),
        "{body}"
    );

    nats.restart().await.unwrap();
    let back = Instant::now();
    let opened = loop {
        let (code, body) = open(&a, &tech, &on_c).await;
        if code == 200 {
            break body;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "still {code} 30 s after NATS returned: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "cross-node requests work again {:?} after NATS returned",
        back.elapsed()
    );
    let session = opened["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        run(&a, &tech, &session, "echo again").await["stdout"],
        "again\n"
    );
}

#[tokio::test]
async fn an_agent_that_reconnects_to_another_node_keeps_no_session_on_the_first() {
    let Pair {
        nats: _nats,
        a,
        other: b,
        admin,
        tech,
    } = pair("node-b", Reach::Direct, &[]).await;
    let (agent, key) = a.register_agent(&admin, "roamer").await.unwrap();

    // Connected to A, with a tunnel open through B.
    let ws = |node: &TestServer| format!("ws://{}/api/v1/agent/ws", node.addr);
    let mut first = ScriptedAgent::connect(&ws(&a), Some(&key)).await.unwrap();
    eventually(Duration::from_secs(10), "B lists the agent", || async {
        connected_ids(&b, &admin).await.contains(&agent)
    })
    .await;
    let opening = open_in_background(&b, &tech, &agent);
    let session = first.expect_open().await.unwrap();
    first.ready(&session).await.unwrap();
    let (code, opened) = opening.await.unwrap();
    assert_eq!(
        (code, opened["session_id"].as_str()),
        (200, Some(session.as_str())),
        "{opened}"
    );

    // The agent connects to B while its connection to A still stands (a half-open socket
    // A has not noticed): A drops its connection and closes the tunnel, and a new tunnel
    // opens on B.
    let mut second = ScriptedAgent::connect(&ws(&b), Some(&key)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the stale session closed",
        || async { close_reason(&b, &tech, &session).await == "agent_reconnected" },
    )
    .await;
    let opening = open_in_background(&a, &tech, &agent);
    let session2 = second.expect_open().await.unwrap();
    second.ready(&session2).await.unwrap();
    let (code, opened) = opening.await.unwrap();
    assert_eq!(code, 200, "{opened}");
    // The first connection was closed by A.
    let closed = first.recv(Duration::from_secs(5)).await;
    assert!(
        matches!(&closed, Ok(rmm_e2e::agent::Received::Closed(_)) | Err(_)),
        "A kept the stale connection: {closed:?}"
    );
    // An open whose body is over the JSON limit is refused by the node it reached, as a
    // single node refuses it, before anything is forwarded.
    let padded = json!({ "agent_id": agent, "pad": "x".repeat(1_100_000) });
    let (code, body) = a
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(padded),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
}

/// Runs `rmm-server` to its exit (at most 30 s) with `env`; its exit status and stderr.
async fn start_refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(rmm_e2e::server::binary("rmm-server").unwrap())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RMM_JWT_SECRET", rmm_e2e::server::JWT_SECRET)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("rmm-server did not exit")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cluster_mode_refuses_sqlite_and_an_unreachable_or_refusing_nats_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    // SQLite (the default, and named).
    for db in [None, Some(format!("sqlite://{data}/rmm.db"))] {
        let mut env = vec![
            ("RMM_NATS_URL", "nats://127.0.0.1:4222"),
            ("RMM_DATA_DIR", data.as_str()),
        ];
        if let Some(db) = &db {
            env.push(("DATABASE_URL", db.as_str()));
        }
        let (code, log) = start_refused(&env).await;
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains("needs PostgreSQL") && log.contains("DATABASE_URL=postgres://"),
            "{log}"
        );
        assert!(
            !dir.path().join("rmm.db").exists(),
            "a refused start created the database"
        );
    }

    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    // No NATS there.
    let closed = rmm_e2e::cluster::free_addr().unwrap();
    let url = format!("nats://{closed}");
    let (code, log) = start_refused(&[
        ("DATABASE_URL", &db),
        ("RMM_NATS_URL", &url),
        ("RMM_NODE_ID", "node-x"),
        (
            "RMM_LISTEN",
            &rmm_e2e::cluster::free_addr().unwrap().to_string(),
        ),
    ])
    .await;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("cannot connect to NATS") && log.contains("RMM_NATS_URL"),
        "{log}"
    );
    // A bad node id.
    let (code, log) = start_refused(&[
        ("DATABASE_URL", &db),
        ("RMM_NATS_URL", &url),
        ("RMM_NODE_ID", "node.x"),
    ])
    .await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("RMM_NODE_ID"), "{log}");
}

#[tokio::test]
async fn a_node_without_an_id_makes_one_and_keeps_it() {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let env = [
        ("RMM_NATS_URL", nats.url()),
        ("RMM_DATA_DIR", data.clone()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let options = rmm_e2e::server::StartOptions {
        capture_log: true,
        ..Default::default()
    };
    let mut node = TestServer::start_with(&db, &env, options).await.unwrap();
    let id = std::fs::read_to_string(dir.path().join("node-id")).unwrap();
    assert!(id.starts_with("node-") && id.len() > 8, "{id:?}");
    node.wait_for_log(
        &[&format!("joined the cluster node={id}")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    node.terminate().await.unwrap();
    node.restart().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node-id")).unwrap(),
        id
    );
    let log = node.log_text().unwrap();
    assert_eq!(
        log.matches(&format!("joined the cluster node={id}"))
            .count(),
        2,
        "{log}"
    );
}

#[tokio::test]
async fn a_user_disabled_on_one_node_loses_the_tunnel_held_by_another() {
    let Pair {
        nats: _nats,
        a,
        other: c,
        admin,
        tech,
    } = pair("node-c", Reach::Nats, &[]).await;
    let (_agent, session) = tunnel_through_a(&a, &c, &admin, &tech, "far").await;
    // Node C has no cluster address: A reached it over NATS.
    assert!(streams_to(&a, "node-c", "nats") > 0);
    assert_eq!(streams_to(&a, "node-c", "direct"), 0);
    let mut watcher = ScriptedAgent::connect(
        &format!("ws://{}/api/v1/tunnel/{session}/stream", a.addr),
        Some(&tech),
    )
    .await
    .unwrap();

    let (_, users) = a
        .call(Method::GET, "/api/v1/users", Some(&admin), None)
        .await
        .unwrap();
    let tina = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "tina")
        .and_then(|u| u["user_id"].as_str())
        .unwrap()
        .to_owned();
    let (code, body) = a
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{tina}"),
            Some(&admin),
            Some(json!({ "disabled": true })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    eventually(
        Duration::from_secs(5),
        "the session on node C closed user_disabled",
        || async {
            let (_, audit) = a
                .call(
                    Method::GET,
                    &format!("/api/v1/audit?session_id={session}"),
                    Some(&admin),
                    None,
                )
                .await
                .unwrap();
            audit["entries"].as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e["event"] == "tunnel_close" && e["detail"] == "user_disabled")
            })
        },
    )
    .await;
    // The stream forwarded through A ends with the session.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match watcher
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(rmm_e2e::agent::Received::Closed(_)) | Err(_) => break,
            Ok(rmm_e2e::agent::Received::Json(_)) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the watcher's stream stayed open"
        );
    }
    // Their token is refused on every node.
    for node in [&a, &c] {
        let (code, _) = node
            .call(Method::GET, "/api/v1/agents", Some(&tech), None)
            .await
            .unwrap();
        assert_eq!(code, 401);
    }
}

#[tokio::test]
async fn a_node_whose_cluster_address_cannot_be_reached_is_reached_over_nats() {
    // Node C listens on one port and advertises another, where nothing listens.
    let nowhere = rmm_e2e::cluster::free_addr().unwrap().to_string();
    let Pair {
        nats: _nats,
        a,
        other: c,
        admin,
        tech,
    } = pair(
        "node-c",
        Reach::Direct,
        &[("RMM_CLUSTER_ADVERTISE", nowhere.as_str())],
    )
    .await;
    let (_agent, session) = tunnel_through_a(&a, &c, &admin, &tech, "behind").await;
    let done = run(&a, &tech, &session, "echo still here").await;
    assert_eq!(done["stdout"], "still here\n", "{done}");
    let log = a.log_text().unwrap_or_default();
    assert!(
        log.contains("cannot connect to the node's cluster address") && log.contains(&nowhere),
        "node A did not say why it fell back to NATS"
    );
    assert!(streams_to(&a, "node-c", "nats") > 0);
    assert_eq!(streams_to(&a, "node-c", "direct"), 0);
}

#[tokio::test]
async fn a_cluster_address_that_cannot_serve_refuses_the_start_naming_the_setting() {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let listen = |addr: &str| {
        [
            ("DATABASE_URL", db.clone()),
            ("RMM_NATS_URL", nats.url()),
            ("RMM_NODE_ID", "node-x".to_owned()),
            (
                "RMM_LISTEN",
                rmm_e2e::cluster::free_addr().unwrap().to_string(),
            ),
            ("RMM_CLUSTER_LISTEN", addr.to_owned()),
        ]
    };
    // Every address, and no word on which one other nodes reach.
    let env = listen("0.0.0.0:7700");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, log) = start_refused(&env).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("RMM_CLUSTER_ADVERTISE"), "{log}");
    // An address already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let env = listen(&taken.local_addr().unwrap().to_string());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, log) = start_refused(&env).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("cannot listen on the cluster address") && log.contains("RMM_CLUSTER_LISTEN"),
        "{log}"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to a node's process.
fn signal(node: &TestServer, signal: &str) {
    let pid = node.pid().expect("the node runs").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test]
async fn a_node_cut_off_longer_than_its_lease_stops_once_another_closed_its_sessions() {
    let Pair {
        nats: _nats,
        a,
        other: mut b,
        admin,
        tech,
    } = pair("node-b", Reach::Direct, &[]).await;
    let (_agent, session) = tunnel_through_a(&a, &b, &admin, &tech, "stranded").await;

    // Node B freezes (SIGSTOP) for longer than its lease: node A claims the lease and closes
    // B's session as node_lost, while B cannot say a word.
    signal(&b, "STOP");
    eventually(
        Duration::from_secs(LEASE_SECS + 10),
        "node A closed B's session as node_lost",
        || async { close_reason(&a, &tech, &session).await == "node_lost" },
    )
    .await;
    // B wakes up to a lease that is no longer its own: it stops serving and exits non-zero,
    // saying why, rather than serve sessions the cluster has closed.
    signal(&b, "CONT");
    let code = b.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, Some(1), "{:?}", b.log_text());
    let log = b.log_text().unwrap_or_default();
    assert!(
        log.contains("this node's lease ran out"),
        "node B did not say why it stopped"
    );
    // The cluster goes on without it: the session stays closed as node_lost (node A may
    // answer 503 for the moment it still counts B as within reach, until its sweep sees B's
    // lease gone).
    eventually(
        Duration::from_secs(10),
        "the session reads closed node_lost after B stopped",
        || async { close_reason(&a, &tech, &session).await == "node_lost" },
    )
    .await;
}
