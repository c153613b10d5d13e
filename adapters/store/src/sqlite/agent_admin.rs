//! Admins' changes to `agents` on SQLite: revoking, a new key, a new name or group. Each
//! runs in one `begin immediate` transaction with its audit entry.

use rmm_application::{AgentChange, AgentChangeOutcome, AuditEvent, KeyDigest, StoreError};
use rmm_domain::AgentId;
use sqlx::{Sqlite, Transaction};

use super::audit::insert_audit;
use super::{SqliteStore, id_text, micros, rolled_back};
use crate::store_error;

/// Locks the database for writing and reads whether the agent exists and is revoked.
async fn lock_agent(
    store: &SqliteStore,
    id: &str,
) -> Result<(Transaction<'static, Sqlite>, Option<bool>), StoreError> {
    let mut tx = store
        .pool
        .begin_with("begin immediate")
        .await
        .map_err(store_error)?;
    let revoked: Option<bool> =
        sqlx::query_scalar("select revoked_at is not null from agents where agent_id = ?1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
    Ok((tx, revoked))
}

/// Commits `tx` when `outcome` is a change; otherwise rolls it back now (not on drop: a
/// rollback left to the pool could run after the connection's next statements).
async fn settle(
    tx: Transaction<'static, Sqlite>,
    outcome: Result<AgentChangeOutcome, StoreError>,
) -> Result<AgentChangeOutcome, StoreError> {
    match outcome {
        Ok(AgentChangeOutcome::Changed) => {
            tx.commit().await.map_err(store_error)?;
            Ok(AgentChangeOutcome::Changed)
        }
        other => {
            rolled_back(tx, ()).await?;
            other
        }
    }
}

pub(super) async fn revoke_agent(
    store: &SqliteStore,
    id: AgentId,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let key = id_text(id.as_uuid());
    let (mut tx, revoked) = lock_agent(store, &key).await?;
    let outcome = match revoked {
        None => Ok(AgentChangeOutcome::NotFound),
        Some(true) => Ok(AgentChangeOutcome::Revoked),
        Some(false) => revoke_locked(&mut tx, &key, entry).await,
    };
    settle(tx, outcome).await
}

async fn revoke_locked(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    sqlx::query("update agents set revoked_at = ?1 where agent_id = ?2")
        .bind(micros(entry.at))
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    insert_audit(tx, entry).await?;
    Ok(AgentChangeOutcome::Changed)
}

pub(super) async fn set_agent_key(
    store: &SqliteStore,
    id: AgentId,
    digest: KeyDigest,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let key = id_text(id.as_uuid());
    let (mut tx, revoked) = lock_agent(store, &key).await?;
    let outcome = match revoked {
        None => Ok(AgentChangeOutcome::NotFound),
        Some(true) => Ok(AgentChangeOutcome::Revoked),
        Some(false) => set_key_locked(&mut tx, &key, digest, entry).await,
    };
    settle(tx, outcome).await
}

async fn set_key_locked(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    digest: KeyDigest,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    sqlx::query("update agents set key_digest = ?1 where agent_id = ?2")
        .bind(&digest.0[..])
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    insert_audit(tx, entry).await?;
    Ok(AgentChangeOutcome::Changed)
}

pub(super) async fn update_agent(
    store: &SqliteStore,
    id: AgentId,
    change: &AgentChange,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let key = id_text(id.as_uuid());
    let (mut tx, revoked) = lock_agent(store, &key).await?;
    let outcome = match revoked {
        None => Ok(AgentChangeOutcome::NotFound),
        Some(true) => Ok(AgentChangeOutcome::Revoked),
        Some(false) => update_locked(&mut tx, &key, change, entry).await,
    };
    settle(tx, outcome).await
}

async fn update_locked(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    change: &AgentChange,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let group_id: Option<String> = match &change.group {
        Some(group) => {
            let found: Option<String> =
                sqlx::query_scalar("select group_id from groups where name = ?1")
                    .bind(group.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?;
            if found.is_none() {
                return Ok(AgentChangeOutcome::UnknownGroup);
            }
            found
        }
        None => None,
    };
    sqlx::query(
        "update agents set name = coalesce(?1, name), group_id = coalesce(?2, group_id) \
         where agent_id = ?3",
    )
    .bind(change.name.as_ref().map(|n| n.as_str()))
    .bind(group_id)
    .bind(key)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    insert_audit(tx, entry).await?;
    Ok(AgentChangeOutcome::Changed)
}
