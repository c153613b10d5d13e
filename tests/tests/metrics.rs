//! `/metrics` end to end: the real server with `RMM_METRICS_LISTEN` on a loopback port, a real
//! agent, logins, a tunnel, a command and a file each way; the scrape parsed by Prometheus'
//! own parser (`prometheus_client`, from the venv scripts/ensure-py-tools.sh makes), and the
//! values checked. On PostgreSQL and on SQLite. Also: the main listener answers 404 for
//! /metrics, and with `RMM_METRICS_LISTEN` unset the server listens on one port only.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::pseudo_random;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{StartOptions, TestServer};
use serde_json::{Value, json};

/// One parsed sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the one sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one sample {name}{labels:?}, found {found:?}"
        );
        found[0].value
    }
}

/// The Python of the test tools' venv: `$RMM_TEST_PYTHON`, else the workspace's
/// target/py-venv.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("RMM_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with prometheus_client: run scripts/ensure-py-tools.sh (or set RMM_TEST_PYTHON)"
    );
    venv
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(samples))
"#;

/// Parses Prometheus text with `prometheus_client`'s parser.
async fn parse(text: &str) -> Scrape {
    let mut child = tokio::process::Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    Scrape(
        parsed
            .into_iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_owned(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect(),
    )
}

/// `GET http://addr/metrics`, parsed.
async fn scrape(server: &TestServer, addr: SocketAddr) -> Scrape {
    let r = server
        .http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse(&r.text().await.unwrap()).await
}

/// Scrapes until `check` holds (gauges follow the agent's messages), within 10 s.
async fn scrape_until(
    server: &TestServer,
    addr: SocketAddr,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let started = Instant::now();
    loop {
        let scrape = scrape(server, addr).await;
        if check(&scrape) || started.elapsed() > Duration::from_secs(10) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The TCP ports process `pid` listens on (its sockets in LISTEN in /proc/net/tcp{,6}).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT, hex), st field 3 (0A = LISTEN), inode 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (code, answer) = server.call(method, path, Some(token), body).await.unwrap();
    assert!(
        (200..300).contains(&code),
        "{path} answered {code}: {answer}"
    );
    answer
}

/// The whole scenario on the database at `db`.
async fn scenario(db: &str) {
    let metrics = free_port();
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let server =
        TestServer::start_with(db, &[("RMM_METRICS_LISTEN", &metrics.to_string())], options)
            .await
            .unwrap();
    server
        .wait_for_log(
            &[&format!("metrics at http://{metrics}/metrics")],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let pid = server.pid().unwrap();
    assert_eq!(
        listening_ports(pid),
        BTreeSet::from([server.addr.port(), metrics.port()])
    );
    // The API's clients never see the metrics.
    let main = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);

    let admin = server.admin_token().await.unwrap();
    let wrong = server.login("admin", "not-the-password").await;
    assert!(wrong.is_err(), "a wrong password logged in");
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let _agent = spawn_agent(&server, &key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let opened = call(
        &server,
        Method::POST,
        "/api/v1/tunnel/open",
        &tech,
        Some(json!({ "agent_id": agent_id })),
    )
    .await;
    let session = opened["session_id"].as_str().unwrap().to_owned();

    let open = scrape_until(&server, metrics, |s| {
        s.value("rmm_sessions_open", &[]) == 1.0
    })
    .await;
    assert_eq!(open.value("rmm_sessions_open", &[]), 1.0);
    assert_eq!(
        open.value("rmm_agents_connected", &[("mode", "tunnel")]),
        1.0
    );
    assert_eq!(
        open.value("rmm_agents_connected", &[("mode", "heartbeat")]),
        0.0
    );

    // A command to its end: 12 bytes on stdout, 5 on stderr.
    let started = call(
        &server,
        Method::POST,
        &format!("/api/v1/tunnel/{session}/command"),
        &tech,
        Some(json!({ "command": "printf 'hello-stdout'; printf 'oops!' >&2" })),
    )
    .await;
    let command = started["command_id"].as_str().unwrap();
    let ended = call(
        &server,
        Method::GET,
        &format!("/api/v1/tunnel/{session}/commands/{command}?wait=30"),
        &tech,
        None,
    )
    .await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // A file up and back down.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.bin");
    let size = 300_000;
    let files = server.url(&format!(
        "/api/v1/tunnel/{session}/files?path={}",
        path.display()
    ));
    let up = server
        .http()
        .put(&files)
        .bearer_auth(&tech)
        .body(pseudo_random(16, size))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 201);
    let down = server
        .http()
        .get(&files)
        .bearer_auth(&tech)
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 200);
    assert_eq!(down.bytes().await.unwrap().len(), size);

    let during = scrape(&server, metrics).await;
    assert_eq!(
        during.value("rmm_commands_total", &[("status", "completed")]),
        1.0
    );
    assert_eq!(
        during.value("rmm_commands_total", &[("status", "failed")]),
        0.0
    );
    assert_eq!(
        during.value("rmm_logins_total", &[("outcome", "bad_credentials")]),
        1.0
    );
    // admin and tina.
    assert_eq!(during.value("rmm_logins_total", &[("outcome", "ok")]), 2.0);
    assert_eq!(
        during.value("rmm_logins_total", &[("outcome", "throttled")]),
        0.0
    );
    let stdout = during.value("rmm_command_output_bytes_total", &[("stream", "stdout")]);
    let stderr = during.value("rmm_command_output_bytes_total", &[("stream", "stderr")]);
    assert!(
        stdout >= 12.0 && stderr >= 5.0,
        "stdout {stdout}, stderr {stderr}"
    );
    let upload = during.value("rmm_file_transfer_bytes_total", &[("direction", "upload")]);
    let download = during.value(
        "rmm_file_transfer_bytes_total",
        &[("direction", "download")],
    );
    assert!(
        upload >= size as f64 && download >= size as f64,
        "upload {upload}, download {download}"
    );
    assert_eq!(
        during.value(
            "rmm_ws_frames_dropped_total",
            &[("queue", "session_stream")]
        ),
        0.0
    );
    let finishes = during.value(
        "rmm_store_query_seconds_count",
        &[("op", "commands.finish_command")],
    );
    assert_eq!(finishes, 1.0);
    let inserts = during.value(
        "rmm_store_query_seconds_count",
        &[("op", "commands.insert_command")],
    );
    assert!(inserts >= 1.0, "{inserts}");
    let le_inf = during.value(
        "rmm_store_query_seconds_bucket",
        &[("op", "commands.finish_command"), ("le", "+Inf")],
    );
    assert_eq!(le_inf, 1.0);
    assert_eq!(
        during.value("rmm_password_hashes", &[("state", "waiting")]),
        0.0
    );
    assert_eq!(
        during.value("rmm_password_hashes", &[("state", "running")]),
        0.0
    );

    call(
        &server,
        Method::POST,
        "/api/v1/tunnel/close",
        &tech,
        Some(json!({ "session_id": session })),
    )
    .await;
    let closed = scrape_until(&server, metrics, |s| {
        s.value("rmm_sessions_open", &[]) == 0.0
            && s.value("rmm_agents_connected", &[("mode", "heartbeat")]) == 1.0
    })
    .await;
    assert_eq!(closed.value("rmm_sessions_open", &[]), 0.0);
    assert_eq!(
        closed.value("rmm_agents_connected", &[("mode", "heartbeat")]),
        1.0
    );
    assert_eq!(
        closed.value("rmm_agents_connected", &[("mode", "tunnel")]),
        0.0
    );
}

#[tokio::test]
async fn metrics_on_postgres_count_agents_sessions_commands_logins_bytes_and_store_calls() {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    scenario(&db).await;
}

#[tokio::test]
async fn metrics_on_sqlite_count_agents_sessions_commands_logins_bytes_and_store_calls() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&rmm_e2e::pg::sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn without_metrics_listen_the_server_says_so_and_listens_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let options = StartOptions {
        capture_log: true,
        ..StartOptions::default()
    };
    let server = TestServer::start_with(&rmm_e2e::pg::sqlite_url(dir.path()), &[], options)
        .await
        .unwrap();
    server
        .wait_for_log(&["metrics off"], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        listening_ports(server.pid().unwrap()),
        BTreeSet::from([server.addr.port()])
    );
    let main = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
}
