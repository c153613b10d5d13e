//! `GET /api/v1/tunnel/{id}/files/list`: 200 with the entries, and the error rows.

use poem::http::StatusCode;
use rmm_application::FileEntry;
use serde_json::json;

use super::super::{AGENT, SESSION, Setup, TECH, active, assert_ok};
use super::Op;

error_rows!(Op::List);

#[tokio::test]
async fn answers_200_with_the_directorys_entries_unaudited() {
    let mut s = Setup::default();
    s.stored_session(active(TECH));
    s.gateway
        .expect_list_files()
        .withf(|agent, session, path| (*agent, *session, path) == (AGENT, SESSION, "/srv"))
        .times(1)
        .returning(|_, _, _| {
            let entries = vec![
                FileEntry {
                    name: "app.conf".into(),
                    kind: "file".into(),
                    size: 12,
                    mode: Some(0o644),
                    modified: Some(1_700_000_000),
                },
                FileEntry {
                    name: "logs".into(),
                    kind: "dir".into(),
                    size: 4096,
                    mode: None,
                    modified: None,
                },
            ];
            Box::pin(async move { Ok(entries) })
        });
    s.audit.expect_append().never();
    let resp = Op::List.send(&s.serve(), TECH, "/srv").await;
    let body = assert_ok(resp, StatusCode::OK).await;
    // What the agent does not know is left out, not sent as null.
    assert_eq!(
        body,
        json!({
            "path": "/srv",
            "entries": [
                { "name": "app.conf", "type": "file", "size": 12, "mode": 0o644, "modified": 1_700_000_000 },
                { "name": "logs", "type": "dir", "size": 4096 },
            ],
        })
    );
}
