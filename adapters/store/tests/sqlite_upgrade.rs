//! Upgrading a SQLite database made before identity (migrations 0001-0002 only) keeps its
//! data: migration 0003 rebuilds `users` (its role check changed) with foreign keys off, and
//! the sessions naming those users must survive, still checked by their foreign keys.

use std::path::Path;

use rmm_application::{SessionRepository, UserRepository};
use rmm_domain::{GroupName, Role, SessionId, SessionStatus, Username};
use rmm_store::SqliteStore;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use uuid::Uuid;

const TECH: &str = "0a0a0a0a-0000-0000-0000-000000000001";
const AGENT: &str = "0b0b0b0b-0000-0000-0000-000000000002";
const SESSION: &str = "0c0c0c0c-0000-0000-0000-000000000003";

/// Applies only the first two migrations (copied from the tree), as an older server did.
async fn old_database(file: &Path, migrations: &Path) -> anyhow::Result<()> {
    for name in ["0001_init.sql", "0002_commands_audit.sql"] {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite");
        std::fs::copy(source.join(name), migrations.join(name))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .connect_with(options.clone())
        .await?;
    sqlx::migrate::Migrator::new(migrations)
        .await?
        .run(&pool)
        .await?;
    let mut conn = options.connect().await?;
    sqlx::query(
        "insert into users (user_id, username, password_hash, role, created_at) \
         values (?1, 'tina', 'hash', 'tech', 1)",
    )
    .bind(TECH)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into agents (agent_id, name, key_digest, created_at) \
         values (?1, 'web-01', zeroblob(32), 1)",
    )
    .bind(AGENT)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, \
         status, closed_at, close_reason) values (?1, ?2, ?3, 1, 1, 'closed', 2, 'idle')",
    )
    .bind(SESSION)
    .bind(TECH)
    .bind(AGENT)
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    pool.close().await;
    Ok(())
}

#[tokio::test]
async fn an_older_database_upgrades_with_its_users_sessions_and_foreign_keys_intact()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let migrations = dir.path().join("old-migrations");
    std::fs::create_dir(&migrations)?;
    let file = dir.path().join("rmm.db");
    old_database(&file, &migrations).await?;

    let store = SqliteStore::connect(&format!("sqlite://{}", file.display())).await?;
    let tina = store
        .find_user(&Username::parse("tina")?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("tina is gone"))?;
    assert_eq!((tina.role, tina.disabled), (Role::Tech, false));
    let session = store
        .get(SessionId::from_uuid(Uuid::parse_str(SESSION)?))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the session is gone"))?;
    assert_eq!(session.status(), SessionStatus::Closed);
    assert_eq!(
        rmm_application::GroupRepository::user_groups(&store, tina.id).await?,
        vec![GroupName::default_group()],
        "users from before groups are granted default"
    );
    let problems: Vec<(String,)> = sqlx::query_as("select \"table\" from pragma_foreign_key_check")
        .fetch_all(store.pool())
        .await?;
    assert!(problems.is_empty(), "{problems:?}");
    // Foreign keys are on again and point at the rebuilt table.
    let orphan = sqlx::query(
        "insert into tech_sessions (session_id, tech_id, agent_id, opened_at, last_activity, \
         status) values ('0d0d0d0d-0000-0000-0000-000000000004', 'nobody', ?1, 1, 1, 'pending')",
    )
    .bind(AGENT)
    .execute(store.pool())
    .await;
    assert!(orphan.is_err(), "a session of no user was accepted");
    Ok(())
}
