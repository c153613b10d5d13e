//! Terminals seen by others, and command stdin (issue 13), end to end with the real
//! `rmm-server` and `rmm-agent`:
//!
//! - a recording (asciicast v2) plays back, through Debian's `asciinema cat`, exactly the
//!   bytes the client received, multibyte characters split across frames included; who may
//!   list and download it (SQLite and PostgreSQL);
//! - an admin watches a technician's terminal read-only, audited, unseen by the owner; other
//!   technicians and auditors may not;
//! - a command's stdin fed with a streamed PUT, once.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::terminal::{Rig, rig};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const ENV: &[(&str, &str)] = &[("RMM_TERMINAL_GRACE_SECS", "3")];

/// The technician's recording `id` once finished (listed with `ended_at`).
async fn finished_recording(r: &Rig, id: &str) -> Value {
    let path = format!("/api/v1/recordings?agent_id={}", r.agent_id);
    let started = Instant::now();
    loop {
        let (code, body) = r
            .server
            .call(Method::GET, &path, Some(&r.tech), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let found = body["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rec| rec["recording_id"] == id)
            .cloned();
        if let Some(rec) = found.filter(|rec| rec["ended_at"].is_string()) {
            return rec;
        }
        assert!(
            started.elapsed() < WAIT,
            "recording {id} not finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/v1/recordings/{id}` with `token`: status, content type, body.
async fn download(r: &Rig, id: &str, token: &str) -> (u16, String, Vec<u8>) {
    let response = r
        .server
        .http()
        .get(r.server.url(&format!("/api/v1/recordings/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

/// The output `asciinema cat` prints for a cast file (run in a pseudo-terminal, as it
/// wants one, its stdout redirected to a file).
async fn asciinema_cat(cast: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (file, out) = (dir.path().join("t.cast"), dir.path().join("out"));
    std::fs::write(&file, cast).unwrap();
    let line = format!("asciinema cat '{}' > '{}'", file.display(), out.display());
    let status = tokio::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("script(1) and asciinema installed (apt-get install asciinema)");
    assert!(status.success(), "asciinema cat failed: {status}");
    std::fs::read(out).unwrap()
}

async fn a_recording_replays_exactly_the_bytes_the_client_received(on_sqlite: bool) {
    let r = rig(on_sqlite, ENV).await.unwrap();
    // Waits for a line (so the client is attached before any output), then UTF-8 text and
    // 300 000 three-byte check marks in one write (about 14 frames): frames split some.
    let command = r"read go; printf 'h\303\251llo w\303\266rld \342\234\223\n'; printf '\342\234\223%.0s' $(seq 1 300000); printf '\nend-of-output\n'";
    let body = json!({"cols": 100, "rows": 30, "term": "vt100", "command": command});
    let (code, opened) = r.open_raw(&r.tech, body).await.unwrap();
    assert_eq!(code, 201, "{opened}");
    let tid = opened["terminal_id"].as_str().unwrap().to_owned();
    let mut sock = r.attach(&tid, &r.tech, false).await.unwrap();
    sock.input(b"go\r").await.unwrap();
    let (texts, close) = sock.until_closed(WAIT).await.unwrap();
    assert_eq!(texts, vec![json!({"type": "exit", "exit_code": 0})]);
    assert_eq!(close, Some((1000, "terminal ended".to_owned())));
    let received = sock.output.clone();
    let text = String::from_utf8(received.clone()).expect("the client got valid UTF-8");
    assert!(text.contains("héllo wörld ✓\r\n"), "{text:?}");
    assert_eq!(text.matches('✓').count(), 300_001);
    assert!(text.ends_with("\r\nend-of-output\r\n"), "{text:?}");
    // The risk was real: some frame ended inside a character.
    let splits = sock
        .frame_ends
        .iter()
        .filter(|end| !text.is_char_boundary(**end))
        .count();
    eprintln!(
        "recording: {} frames, {splits} ending inside a character",
        sock.frame_ends.len()
    );
    assert!(
        splits > 0,
        "no frame split a character: {:?}",
        sock.frame_ends
    );

    let listed = finished_recording(&r, &tid).await;
    let tina = r.user_id("tina").await.unwrap();
    assert_eq!(listed["user_id"], tina.as_str(), "{listed}");
    assert_eq!(listed["session_id"], r.session.as_str(), "{listed}");
    assert_eq!(
        (listed["cols"].as_u64(), listed["rows"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(listed["term"], "vt100", "{listed}");
    assert_eq!(listed["truncated"], false, "{listed}");

    let (status, content_type, cast) = download(&r, &tid, &r.tech).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-asciicast");
    assert_eq!(listed["size"].as_u64(), Some(cast.len() as u64), "{listed}");
    let cast_text = String::from_utf8(cast.clone()).unwrap();
    let mut lines = cast_text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(header["env"]["TERM"], "vt100", "{header}");
    assert!(header["timestamp"].as_u64().is_some(), "{header}");
    // Every event is output, in time order, and together they are what the client got.
    let mut last = 0.0;
    let mut joined = String::new();
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap();
        let at = event[0].as_f64().unwrap();
        assert!(at >= last, "{line}");
        last = at;
        assert_eq!(event[1], "o", "{line}");
        joined.push_str(event[2].as_str().unwrap());
    }
    assert_eq!(joined, text);
    assert!(
        asciinema_cat(&cast).await == received,
        "asciinema cat differs"
    );

    // Technicians see their own recordings only; auditors and admins see all.
    let bob = r.server.tech_token("bob").await.unwrap();
    let (status, _, body) = download(&r, &tid, &bob).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("recording_not_found"))
    );
    let of_tina = format!("/api/v1/recordings?user_id={tina}");
    let (code, body) = r
        .server
        .call(Method::GET, &of_tina, Some(&bob), None)
        .await
        .unwrap();
    assert_eq!(
        (code, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (code, body) = r
        .server
        .call(Method::GET, "/api/v1/recordings", Some(&bob), None)
        .await
        .unwrap();
    assert_eq!(
        (code, body["recordings"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let auditor = r.user_with_role("audrey", "auditor").await.unwrap();
    for token in [&auditor, &r.admin] {
        let (code, body) = r
            .server
            .call(Method::GET, &of_tina, Some(token), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["recordings"][0]["recording_id"],
            tid.as_str(),
            "{body}"
        );
        assert_eq!(
            download(&r, &tid, token).await,
            (200, content_type.clone(), cast.clone())
        );
    }
}

#[tokio::test]
async fn a_recording_replays_exactly_the_bytes_the_client_received_on_sqlite() {
    a_recording_replays_exactly_the_bytes_the_client_received(true).await;
}

#[tokio::test]
async fn a_recording_replays_exactly_the_bytes_the_client_received_on_postgres() {
    a_recording_replays_exactly_the_bytes_the_client_received(false).await;
}

#[tokio::test]
async fn an_admin_watches_read_only_and_unseen_others_may_not_watch() {
    let r = rig(true, ENV).await.unwrap();
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    let mut owner = r.attach(&tid, &r.tech, false).await.unwrap();
    owner.input(b"before\r").await.unwrap();
    owner
        .read_until("before\r\nbefore\r\n", WAIT)
        .await
        .unwrap();

    let mut watcher = r.attach(&tid, &r.admin, true).await.unwrap();
    // The replay first: what the owner saw so far.
    watcher
        .read_until("before\r\nbefore\r\n", WAIT)
        .await
        .unwrap();
    watcher.input(b"WATCHER-TYPED\r").await.unwrap();
    watcher.resize(33, 11).await.unwrap();
    // The owner hears nothing of it.
    let seen = owner.output.len();
    let quiet = owner.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(quiet, None, "the owner got a frame");

    owner.input(b"after\r").await.unwrap();
    owner.read_until("after\r\nafter\r\n", WAIT).await.unwrap();
    watcher
        .read_until("after\r\nafter\r\n", WAIT)
        .await
        .unwrap();
    assert_eq!(&owner.output[seen..], b"after\r\nafter\r\n");
    // The watcher's resize was ignored too: the recording has no resize event (below).
    owner.input(&[0x04]).await.unwrap();
    let (texts, close) = owner.until_closed(WAIT).await.unwrap();
    assert_eq!(texts, vec![json!({"type": "exit", "exit_code": 0})]);
    assert_eq!(close, Some((1000, "terminal ended".to_owned())));
    let (texts, close) = watcher.until_closed(WAIT).await.unwrap();
    assert_eq!(texts, vec![json!({"type": "exit", "exit_code": 0})]);
    assert_eq!(close, Some((1000, "terminal ended".to_owned())));
    assert!(!owner.text().contains("WATCHER"), "{}", owner.text());
    assert!(!watcher.text().contains("WATCHER"), "{}", watcher.text());
    assert_eq!(owner.output, watcher.output);

    let (_, _, cast) = download(&r, &tid, &r.admin).await;
    let cast = String::from_utf8(cast).unwrap();
    assert!(
        !cast.contains("WATCHER") && !cast.contains("\"r\""),
        "{cast}"
    );
    let owner_id = r.user_id("tina").await.unwrap();
    let detail = r
        .wait_audit(
            "terminal_watch",
            &[&format!("terminal_id={tid}"), &format!("owner={owner_id}")],
        )
        .await
        .unwrap();
    let admin_id = r.user_id("admin").await.unwrap();
    let entries = r.audit("terminal_watch").await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["tech_id"], admin_id.as_str(), "{detail}");
}

#[tokio::test]
async fn other_technicians_and_auditors_may_not_attach_or_watch() {
    let r = rig(true, ENV).await.unwrap();
    let tid = r.open(80, 24, Some("cat")).await.unwrap();
    let bob = r.server.tech_token("bob").await.unwrap();
    let auditor = r.user_with_role("audrey", "auditor").await.unwrap();
    assert_eq!(r.attach_status(&tid, &bob, true).await, Some(403));
    assert_eq!(r.attach_status(&tid, &bob, false).await, Some(403));
    assert_eq!(r.attach_status(&tid, &auditor, true).await, Some(403));
    assert_eq!(r.attach_status(&tid, &auditor, false).await, Some(403));
    // The owner still can; no watch was audited.
    let mut owner = r.attach(&tid, &r.tech, false).await.unwrap();
    owner.input(b"mine\r").await.unwrap();
    owner.read_until("mine\r\nmine\r\n", WAIT).await.unwrap();
    assert!(r.audit("terminal_watch").await.unwrap().is_empty());
}

/// 1 MiB of random-looking bytes (xorshift): every byte value, no line structure.
fn random_mib() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

#[tokio::test]
async fn a_commands_stdin_is_fed_once_by_a_streamed_put() {
    let r = rig(true, ENV).await.unwrap();
    let start = |command: &str, stdin: bool| {
        let path = format!("/api/v1/tunnel/{}/command", r.session);
        let body = json!({"command": command, "stdin": stdin});
        let server = &r.server;
        let tech = r.tech.clone();
        async move {
            let (code, started) = server
                .call(Method::POST, &path, Some(&tech), Some(body))
                .await
                .unwrap();
            assert_eq!(code, 202, "{started}");
            started["command_id"].as_str().unwrap().to_owned()
        }
    };
    let put = |cid: String, data: Vec<u8>| {
        let url = r.server.url(&format!(
            "/api/v1/tunnel/{}/commands/{cid}/stdin",
            r.session
        ));
        let request = r
            .server
            .http()
            .put(url)
            .bearer_auth(&r.tech)
            .header("content-type", "application/octet-stream")
            .body(data);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let data = random_mib();
    let cid = start("cat", true).await;
    let (status, body) = put(cid.clone(), data.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"command_id": cid, "bytes": 1_048_576}));
    let path = format!("/api/v1/tunnel/{}/commands/{cid}?wait=20", r.session);
    let (code, done) = r
        .server
        .call(Method::GET, &path, Some(&r.tech), None)
        .await
        .unwrap();
    assert_eq!((code, done["exit_code"].as_i64()), (200, Some(0)), "{done}");
    let (code, _, stdout) = r
        .server
        .raw_output(&r.tech, &r.session, &cid, "stdout")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(stdout.len(), data.len());
    assert!(stdout == data, "cat's stdout differs from its stdin");

    let (status, body) = put(cid.clone(), b"again".to_vec()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("stdin_closed")),
        "{body}"
    );
    let without = start("sleep 5", false).await;
    let (status, body) = put(without, b"nobody reads".to_vec()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("stdin_closed")),
        "{body}"
    );
    r.wait_audit(
        "command_stdin",
        &[&format!("command_id={cid}"), "bytes=1048576"],
    )
    .await
    .unwrap();
    assert_eq!(r.audit("command_stdin").await.unwrap().len(), 1);
}
