//! `GET /api/v1/audit/export` end to end (issue 16): the real `rmm-server` (SQLite and
//! PostgreSQL), the real agent, and over 500 entries so the export spans store pages.
//!
//! - As the admin, the NDJSON export is exactly the entries `GET /api/v1/audit` lists (paged
//!   through), field for field, newest first; the CSV export parsed by Python's `csv` module
//!   has the header row and the same entries (a command with a comma, quotes and a line
//!   break in it survives the quoting).
//! - With a filter (`session_id`) both equal the filtered list.
//! - A technician's export holds only their entries, the same as their list; naming another
//!   user is 403, as in the list.
//! - An unknown format is 400 JSON `invalid_request`; the content types are right.
//! - `rmm audit --export ndjson` writes the same lines.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::Method;
use rmm_e2e::terminal::{Rig, rig};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

const COLUMNS: [&str; 20] = [
    "id",
    "at",
    "event",
    "tech_id",
    "username",
    "agent_id",
    "session_id",
    "detail",
    "command_id",
    "command",
    "status",
    "exit_code",
    "stdout_bytes",
    "stderr_bytes",
    "duration_ms",
    "path",
    "direction",
    "size",
    "sha256",
    "result",
];

/// The test tools' Python (scripts/ensure-py-tools.sh makes it).
fn python() -> PathBuf {
    let path = std::env::var_os("RMM_TEST_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Python for the tests at {}: run scripts/ensure-py-tools.sh (or set RMM_TEST_PYTHON)",
        path.display()
    );
    path
}

/// Every entry the list endpoint gives for `query` (paged through with `before`).
async fn listed(r: &Rig, token: &str, query: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut path = format!("/api/v1/audit?limit=200{query}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let (code, body) = r
            .server
            .call(Method::GET, &path, Some(token), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        entries.extend(body["entries"].as_array().unwrap().iter().cloned());
        match body["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => return entries,
        }
    }
}

/// The export's status, content type and body.
async fn export(r: &Rig, token: &str, query: &str) -> (u16, String, String) {
    let response = r
        .server
        .http()
        .get(r.server.url(&format!("/api/v1/audit/export?{query}")))
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
    (status, content_type, response.text().await.unwrap())
}

async fn ndjson(r: &Rig, token: &str, filters: &str) -> Vec<Value> {
    let (code, content_type, body) = export(r, token, &format!("format=ndjson{filters}")).await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "application/x-ndjson"),
        "{body}"
    );
    assert!(body.is_empty() || body.ends_with('\n'));
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The CSV export parsed by Python's csv module: its header and rows.
async fn csv(r: &Rig, token: &str, filters: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let (code, content_type, body) = export(r, token, &format!("format=csv{filters}")).await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "text/csv; charset=utf-8"),
        "{body}"
    );
    let script = "import csv, io, json, sys\n\
                  rows = list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))\n\
                  json.dump(rows, sys.stdout)\n";
    let mut child = tokio::process::Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!rows.is_empty(), "no header row");
    let header = rows.remove(0);
    (header, rows)
}

/// What the CSV holds for a listed entry: each column as text, absent ones empty.
fn as_csv_row(entry: &Value) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| match entry.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect()
}

async fn assert_exports_equal_list(r: &Rig, token: &str, filters: &str) -> Vec<Value> {
    let list = listed(r, token, filters).await;
    assert!(!list.is_empty());
    assert_eq!(ndjson(r, token, filters).await, list, "ndjson{filters}");
    let (header, rows) = csv(r, token, filters).await;
    assert_eq!(header, COLUMNS.map(str::to_owned).to_vec());
    let expected: Vec<Vec<String>> = list.iter().map(as_csv_row).collect();
    assert_eq!(rows, expected, "csv{filters}");
    list
}

async fn exports_equal_the_list_with_its_filters_and_visibility(on_sqlite: bool) {
    let r = rig(on_sqlite, &[]).await.unwrap();
    // Over 500 entries (the export's page): groups made by the admin.
    for i in 0..505 {
        let (code, body) = r
            .server
            .call(
                Method::POST,
                "/api/v1/groups",
                Some(&r.admin),
                Some(json!({ "name": format!("site-{i}") })),
            )
            .await
            .unwrap();
        assert_eq!(code, 201, "{body}");
    }
    // The technician's command: a comma, quotes and a line break for the CSV to quote.
    let (code, started) = r
        .server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{}/command", r.session),
            Some(&r.tech),
            Some(json!({ "command": "printf 'a,\"b\"\\n'\necho c" })),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{started}");
    let id = started["command_id"].as_str().unwrap();
    let path = format!("/api/v1/tunnel/{}/commands/{id}?wait=30", r.session);
    let (code, ended) = r
        .server
        .call(Method::GET, &path, Some(&r.tech), None)
        .await
        .unwrap();
    assert_eq!(
        (code, ended["status"].as_str()),
        (200, Some("completed")),
        "{ended}"
    );

    let all = assert_exports_equal_list(&r, &r.admin, "").await;
    assert!(all.len() > 505, "{}", all.len());
    assert!(
        all.iter()
            .any(|e| e["command"].as_str() == Some("printf 'a,\"b\"\\n'\necho c")),
        "the command's entry is exported: {:?}",
        all.iter()
            .filter(|e| e["command"].is_string())
            .collect::<Vec<_>>()
    );
    let session = format!("&session_id={}", r.session);
    let of_session = assert_exports_equal_list(&r, &r.admin, &session).await;
    assert!(
        of_session
            .iter()
            .all(|e| e["session_id"] == r.session.as_str())
    );

    // A technician: only their own entries, as in their list.
    let tina = r.user_id("tina").await.unwrap();
    let theirs = assert_exports_equal_list(&r, &r.tech, "").await;
    assert!(theirs.len() >= 3, "{theirs:?}");
    assert!(
        theirs.iter().all(|e| e["tech_id"] == tina.as_str()),
        "{theirs:?}"
    );
    let admin_id = r.user_id("admin").await.unwrap();
    let (code, _, body) = export(&r, &r.tech, &format!("format=csv&tech_id={admin_id}")).await;
    assert_eq!(code, 403, "{body}");

    let (code, content_type, body) = export(&r, &r.admin, "format=xml").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            code,
            content_type.starts_with("application/json"),
            body["code"].as_str()
        ),
        (400, true, Some("invalid_request")),
        "{body}"
    );

    // The CLI writes the same lines.
    let home = tempfile::tempdir().unwrap();
    let url = r.server.url("");
    let mut login = rmm_e2e::server::rmm_command(
        &url,
        home.path(),
        &["login", "--username", "tina", "--password-stdin"],
    )
    .unwrap()
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = login.stdin.take().unwrap();
    stdin.write_all(b"tina-password\n").await.unwrap();
    drop(stdin);
    assert!(login.wait_with_output().await.unwrap().status.success());
    let out = rmm_e2e::server::rmm_command(&url, home.path(), &["audit", "--export", "ndjson"])
        .unwrap()
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, listed(&r, &r.tech, "").await);
}

#[tokio::test]
async fn exports_equal_the_list_with_its_filters_and_visibility_sqlite() {
    exports_equal_the_list_with_its_filters_and_visibility(true).await;
}

#[tokio::test]
async fn exports_equal_the_list_with_its_filters_and_visibility_postgres() {
    exports_equal_the_list_with_its_filters_and_visibility(false).await;
}
