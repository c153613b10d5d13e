//! Reliability (issue 17): PostgreSQL killed (`docker kill`) under the real server and agent,
//! mid-command and mid-upload, then started again.
//!
//! While it is down the API answers 503 `database_unavailable` (JSON, with `Retry-After`)
//! within 2 s, never hangs; a command asked for then is refused and never runs (commands are
//! not dispatched unaudited); the agent stays connected (its session stays active: a
//! reconnect would have closed it). Once it is back every command that ran has all its output
//! stored, byte for byte what it wrote, and exactly one `command_end`; the upload that was
//! under way ends either as a success that is recorded, or a failure that is recorded, never
//! a success without its entry; and a new upload and command work.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use rmm_e2e::ops::{open_session, run_command, start_command, wait_command_end, wait_session};
use rmm_e2e::pg_own::OwnPostgres;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{StartOptions, TestServer};
use rmm_e2e::{pseudo_random, reliability};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// What the issue allows an answer to take while the database is down.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
const KIB: usize = 1024;

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How many lines command A writes on each stream, 0.1 s apart: it outlives the set-up
/// before the kill and ends during the outage.
const A_LINES: usize = 50;

/// What command A writes on stdout.
fn a_stdout() -> String {
    (0..A_LINES).map(|i| format!("a-out {i}\n")).collect()
}

/// What command A writes on stderr.
fn a_stderr() -> String {
    (0..A_LINES).map(|i| format!("a-err {i}\n")).collect()
}

/// One request made while the database is down: it must be a 503 `database_unavailable`
/// with a JSON body and a `Retry-After`, answered within [`ANSWER_WITHIN`]; how long it took.
async fn unavailable(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Duration {
    let started = Instant::now();
    let mut request = server
        .http()
        .request(method.clone(), server.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let took = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let json: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status, 503,
        "{method} {path} with the database down: {json}"
    );
    assert_eq!(
        json["code"], "database_unavailable",
        "{method} {path}: {json}"
    );
    assert!(json["error"].is_string(), "{method} {path}: {json}");
    assert!(
        retry_after.is_some(),
        "{method} {path}: 503 without Retry-After"
    );
    assert!(
        took < ANSWER_WITHIN,
        "{method} {path} took {took:?} to answer with the database down"
    );
    took
}

/// The audit entries of `session`, oldest first.
async fn audit_of(server: &TestServer, admin: &str, session: &str) -> Vec<Value> {
    let r = server
        .http()
        .get(server.url(&format!(
            "/api/v1/audit/export?format=ndjson&session_id={session}"
        )))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut entries: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    entries.reverse();
    entries
}

fn count(entries: &[Value], event: &str, key: &str, value: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["event"] == event && e[key] == value)
        .count()
}

async fn stored(
    server: &TestServer,
    token: &str,
    session: &str,
    id: &str,
    stream: &str,
) -> Vec<u8> {
    let (code, _, bytes) = server.raw_output(token, session, id, stream).await.unwrap();
    assert_eq!(code, 200, "{stream} of {id}");
    bytes
}

#[tokio::test]
async fn a_killed_database_loses_nothing_and_runs_nothing_unaudited() {
    let pg = OwnPostgres::start().await.unwrap();
    // The test waits for the server's INFO line of a command's end, whatever RUST_LOG the
    // run has.
    let server = TestServer::start_with(
        &pg.url(),
        &[("RUST_LOG", "info")],
        StartOptions {
            capture_log: true,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let _agent = spawn_agent(&server, &key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let session = open_session(&server, &tech, &agent_id).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();

    // A: ends while the database is down. C: runs across the whole outage, until told to
    // stop; `tee` keeps what it wrote to compare with what is stored.
    let (code, a) = start_command(
        &server,
        &tech,
        &session,
        &format!(
            "i=0; while [ $i -lt {A_LINES} ]; do echo \"a-out $i\"; echo \"a-err $i\" >&2; i=$((i+1)); sleep 0.1; done; touch {}",
            at("a.done")
        ),
    )
    .await
    .unwrap();
    assert_eq!(code, 202, "{a}");
    let a = a["command_id"].as_str().unwrap().to_owned();
    let (code, c) = start_command(
        &server,
        &tech,
        &session,
        &format!(
            "i=0; while [ ! -e {stop} ]; do echo \"c-out $i\"; i=$((i+1)); sleep 0.05; done | tee {out}; echo c-end",
            stop = at("c.stop"),
            out = at("c.out")
        ),
    )
    .await
    .unwrap();
    assert_eq!(code, 202, "{c}");
    let c = c["command_id"].as_str().unwrap().to_owned();
    // Both are under way, with output already stored, before the database goes.
    for id in [&a, &c] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, record) = server
                .call(
                    Method::GET,
                    &format!("/api/v1/tunnel/{session}/commands/{id}"),
                    Some(&tech),
                    None,
                )
                .await
                .unwrap();
            if !record["stdout"].as_str().unwrap_or("").is_empty() {
                assert_eq!(record["status"], "running", "{record}");
                break;
            }
            assert!(Instant::now() < deadline, "no output stored: {record}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // An upload under way: its first part is streamed, the rest comes after the kill.
    let upload_data = pseudo_random(21, 512 * KIB);
    let (feed, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(body_rx));
    let upload_path = at("mid.bin");
    let upload = tokio::spawn(
        server
            .http()
            .put(server.url(&format!(
                "/api/v1/tunnel/{session}/files?path={upload_path}"
            )))
            .bearer_auth(&tech)
            .body(body)
            .send(),
    );
    feed.send(Ok(Bytes::copy_from_slice(&upload_data[..128 * KIB])))
        .await
        .unwrap();
    // Under way on the agent: its partial file holds the first bytes.
    let partial = dir.path().join(".mid.bin.rmm-partial");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload did not reach the agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pg.kill().unwrap();
    let killed = Instant::now();
    assert!(
        !Path::new(&at("a.done")).exists(),
        "A ended before the database was killed: the machine is too slow for this test's plan"
    );

    // Every answer is a quick 503, reads and writes alike.
    let mut slowest = Duration::ZERO;
    for (method, path) in [
        (
            Method::GET,
            format!("/api/v1/tunnel/{session}/commands/{a}"),
        ),
        (Method::GET, format!("/api/v1/tunnel/status/{session}")),
        (Method::GET, "/api/v1/agents".to_owned()),
    ] {
        slowest = slowest.max(unavailable(&server, method, &path, &tech, None).await);
    }
    // A command asked for now is refused, and never runs.
    let refused = unavailable(
        &server,
        Method::POST,
        &format!("/api/v1/tunnel/{session}/command"),
        &tech,
        Some(serde_json::json!({ "command": format!("touch {}", at("b.ran")) })),
    )
    .await;
    slowest = slowest.max(refused);
    // A new upload is refused before a byte reaches the agent.
    let r = server
        .http()
        .put(server.url(&format!(
            "/api/v1/tunnel/{session}/files?path={}",
            at("refused.bin")
        )))
        .bearer_auth(&tech)
        .body(vec![7_u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let (code, _) = server
        .call(Method::GET, "/readyz", None, None)
        .await
        .unwrap();
    assert_eq!(code, 503);

    // The upload under way goes on while the database is away.
    for chunk in upload_data[128 * KIB..].chunks(128 * KIB) {
        feed.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    drop(feed);
    let answer = upload.await.unwrap().unwrap();
    let upload_status = answer.status().as_u16();
    let upload_body: Value = answer.json().await.unwrap_or(Value::Null);

    // A ends on the agent, and its end reaches the server, while the database is down.
    server
        .wait_for_log(&["command ended", &a], Duration::from_secs(20))
        .await
        .unwrap();
    assert!(Path::new(&at("a.done")).exists());
    let down_for = killed.elapsed();

    pg.restart().await.unwrap();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .call(Method::GET, "/readyz", None, None)
        .await
        .unwrap()
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = restarted.elapsed();

    // The agent stayed connected: its session is still active (a reconnect closes it).
    let status = wait_session(&server, &tech, &session, Duration::from_secs(10), |_| true)
        .await
        .unwrap();
    assert_eq!(status["status"], "active", "{status}");

    // A: its end and all its output, stored once the database was back.
    let a_record = wait_command_end(&server, &tech, &session, &a, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(a_record["status"], "completed", "{a_record}");
    assert_eq!(a_record["exit_code"], 0, "{a_record}");
    assert_eq!(a_record["stdout_truncated"], false, "{a_record}");
    assert_eq!(
        String::from_utf8(stored(&server, &tech, &session, &a, "stdout").await).unwrap(),
        a_stdout()
    );
    assert_eq!(
        String::from_utf8(stored(&server, &tech, &session, &a, "stderr").await).unwrap(),
        a_stderr()
    );

    // C: stopped now; everything it wrote, before, during and after the outage, is stored.
    std::fs::write(at("c.stop"), b"").unwrap();
    let c_record = wait_command_end(&server, &tech, &session, &c, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(c_record["status"], "completed", "{c_record}");
    assert_eq!(c_record["stdout_truncated"], false, "{c_record}");
    let mut c_wrote = std::fs::read(at("c.out")).unwrap();
    c_wrote.extend_from_slice(b"c-end\n");
    let c_stored = stored(&server, &tech, &session, &c, "stdout").await;
    assert_eq!(
        c_stored.len(),
        c_wrote.len(),
        "C wrote {} bytes, {} are stored",
        c_wrote.len(),
        c_stored.len()
    );
    assert!(
        c_stored == c_wrote,
        "C's stored output differs from what it wrote"
    );
    assert_eq!(c_record["stdout_bytes"], c_wrote.len(), "{c_record}");

    // The refused command never ran.
    assert!(
        !Path::new(&at("b.ran")).exists(),
        "a command refused with the database down ran"
    );
    assert!(!Path::new(&at("refused.bin")).exists());

    // The audit: each command that ran once, with exactly one end; nothing else.
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = audit_of(&server, &admin, &session).await;
        if entries.iter().any(|e| e["event"] == "file_upload") || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in [&a, &c] {
        assert_eq!(
            count(&entries, "command", "command_id", id),
            1,
            "{entries:#?}"
        );
        assert_eq!(
            count(&entries, "command_end", "command_id", id),
            1,
            "{entries:#?}"
        );
    }
    assert_eq!(
        entries.iter().filter(|e| e["event"] == "command").count(),
        2,
        "a command was audited that should not have run: {entries:#?}"
    );

    // The upload under way: a recorded success (the file in place, exact) or a recorded
    // failure (no file), one entry either way: never a success without its entry.
    let upload_entries: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"] == "file_upload" && e["path"] == upload_path.as_str())
        .collect();
    assert_eq!(upload_entries.len(), 1, "{entries:#?}");
    let entry = upload_entries[0];
    let upload_outcome = if upload_status == 201 {
        assert_eq!(std::fs::read(&upload_path).unwrap(), upload_data);
        assert_eq!(entry["result"], "ok", "{entry}");
        assert_eq!(entry["sha256"], sha256_hex(&upload_data), "{entry}");
        assert_eq!(entry["size"], upload_data.len(), "{entry}");
        "completed (201), its ok entry stored once the database was back"
    } else {
        assert!(
            !Path::new(&upload_path).exists(),
            "{upload_status} {upload_body}"
        );
        assert_ne!(entry["result"], "ok", "{entry}");
        "failed, its entry stored once the database was back"
    };

    // Everything works again in the same session.
    let fresh = pseudo_random(22, 64 * KIB);
    let r = server
        .http()
        .put(server.url(&format!(
            "/api/v1/tunnel/{session}/files?path={}",
            at("after.bin")
        )))
        .bearer_auth(&tech)
        .body(fresh.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(std::fs::read(at("after.bin")).unwrap(), fresh);
    let after = run_command(
        &server,
        &tech,
        &session,
        "echo after",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(after["stdout"], "after\n", "{after}");

    reliability::record(
        "faults",
        "PostgreSQL killed mid-command and mid-upload, then restarted: quick 503s, no command run unaudited, agent stays connected, no output or command_end lost or duplicated",
        &format!(
            "503 database_unavailable in at most {:.2} s while down ({:.1} s outage); refused command never ran; 2 commands across the outage: every stored byte equal to what they wrote ({} bytes for the longest), 1 command_end each; upload under way {upload_outcome}; ready {:.2} s after the database returned",
            slowest.as_secs_f64(),
            down_for.as_secs_f64(),
            c_wrote.len(),
            ready_after.as_secs_f64(),
        ),
        "cargo build --workspace --bins && cargo test -p rmm-e2e --test faults_database",
    );
}

/// The receiving end of a channel as a stream of body chunks.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
