//! SQLite query plans of the statements on the hot paths: each must seek an index that holds
//! only what it counts, so its cost does not grow with history (closed sessions pile up for
//! ever). The statements are written here as the store sends them.

use rmm_store::SqliteStore;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Row as _};

/// The plan of the per-user cap's count in `insert_pending_capped` (sqlite/sessions.rs).
const OPEN_SESSIONS_OF_TECH: &str = "explain query plan select count(*) from tech_sessions \
     where tech_id = ?1 and status in ('pending', 'active')";

#[tokio::test]
async fn the_session_caps_count_seeks_the_open_sessions_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rmm.sqlite3");
    // Connecting runs every migration.
    drop(SqliteStore::connect(&format!("sqlite://{}", file.display())).await?);
    let mut conn = SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await?;
    let plan: Vec<String> = sqlx::query(OPEN_SESSIONS_OF_TECH)
        .bind("0a0a0a0a-0000-0000-0000-000000000001")
        .fetch_all(&mut conn)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("detail"))
        .collect::<Result<_, _>>()?;
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INDEX idx_tech_sessions_open_by_tech")),
        "the count reads every session the technician ever had: {plan:?}"
    );
    Ok(())
}
