//! `rmm-server backup --to FILE` (issue 16, point 5), on the real binaries: a snapshot of a
//! running server's SQLite database, taken while it runs, serves a second server with the
//! same users, sessions and audit; an existing file is refused; a PostgreSQL database is
//! refused with a pointer to the pg_dump recipe.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Output;

use reqwest::Method;
use rmm_e2e::pg::sqlite_url;
use rmm_e2e::real_agent::spawn_agent;
use rmm_e2e::server::{TestServer, binary};
use serde_json::{Value, json};
use tokio::process::Command;

/// `rmm-server backup --to <to>` on `database_url`.
async fn backup(database_url: &str, to: &Path) -> Output {
    Command::new(binary("rmm-server").unwrap())
        .args(["backup", "--to"])
        .arg(to)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

/// The newest audit entries (at most 500), newest first.
async fn audit(server: &TestServer, admin: &str) -> Vec<Value> {
    let (code, body) = server
        .call(Method::GET, "/api/v1/audit?limit=500", Some(admin), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body["entries"].as_array().cloned().unwrap()
}

#[tokio::test]
async fn a_backup_of_a_running_server_serves_a_second_server_with_the_same_users_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&sqlite_url(dir.path()), &[])
        .await
        .unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let _agent = spawn_agent(&server, &key).unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let (code, opened) = server
        .call(
            Method::POST,
            "/api/v1/tunnel/open",
            Some(&tech),
            Some(json!({ "agent_id": agent_id })),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{opened}");
    let session = opened["session_id"].as_str().unwrap().to_owned();
    let before = audit(&server, &admin).await;
    assert!(
        before
            .iter()
            .any(|e| e["session_id"].as_str() == Some(session.as_str())),
        "the open is audited: {before:?}"
    );

    // Taken while the server runs (and its agent heartbeats into the database).
    let file = dir.path().join("snapshot.db");
    let out = backup(&server.database_url, &file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("snapshot.db"), "{stdout}");
    let meta = std::fs::metadata(&file).unwrap();
    assert!(meta.len() > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "it holds password hashes"
        );
    }

    // A second backup to the same file is refused, the first left as it was.
    let again = backup(&server.database_url, &file).await;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(
        stderr.contains("already exists") && stderr.contains("--to"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), meta.len());

    // A second server on the snapshot: the same technician logs in, and every audit entry
    // of before the backup is there as it was, the session's included.
    let copy = TestServer::start(&format!("sqlite://{}", file.display()), &[])
        .await
        .unwrap();
    let tech2 = copy.login("tina", "tina-password").await.unwrap();
    let admin2 = copy.admin_token().await.unwrap();
    let after = audit(&copy, &admin2).await;
    for entry in &before {
        assert!(
            after.contains(entry),
            "{entry} is missing from the restored audit: {after:?}"
        );
    }
    let (code, status) = copy
        .call(
            Method::GET,
            &format!("/api/v1/tunnel/status/{session}"),
            Some(&tech2),
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "tina's session is in the snapshot: {status}");
    assert_eq!(status["session_id"], session.as_str(), "{status}");
}

#[tokio::test]
async fn a_postgresql_database_is_refused_with_the_pg_dump_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.db");
    // Refused before any connection: no database needs to run at this address.
    let out = backup("postgres://rmm:s3cret-pw@127.0.0.1:1/rmm", &file).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pg_dump") && stderr.contains("docs/deploy.md"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password is never shown: {stderr}"
    );
    assert!(!file.exists());
}
