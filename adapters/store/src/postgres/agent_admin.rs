//! Admins' changes to `agents` on PostgreSQL: revoking, a new key, a new name or group. Each
//! runs in one transaction with its audit entry, the agent's row locked first.

use rmm_application::{AgentChange, AgentChangeOutcome, AuditEvent, KeyDigest, StoreError};
use rmm_domain::AgentId;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::audit::insert_audit;
use super::{PgStore, rolled_back, to_db};
use crate::store_error;

/// Locks the agent's row and reads whether it exists and is revoked.
async fn lock_agent(
    store: &PgStore,
    id: Uuid,
) -> Result<(Transaction<'static, Postgres>, Option<bool>), StoreError> {
    let mut tx = store.pool.begin().await.map_err(store_error)?;
    let revoked: Option<bool> = sqlx::query_scalar(
        "select revoked_at is not null from agents where agent_id = $1 for update",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(store_error)?;
    Ok((tx, revoked))
}

pub(super) async fn revoke_agent(
    store: &PgStore,
    id: AgentId,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let (mut tx, revoked) = lock_agent(store, id.as_uuid()).await?;
    match revoked {
        None => return rolled_back(tx, AgentChangeOutcome::NotFound).await,
        Some(true) => return rolled_back(tx, AgentChangeOutcome::Revoked).await,
        Some(false) => {}
    }
    sqlx::query("update agents set revoked_at = $1 where agent_id = $2")
        .bind(to_db(entry.at)?)
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    insert_audit(&mut tx, entry).await?;
    tx.commit().await.map_err(store_error)?;
    Ok(AgentChangeOutcome::Changed)
}

pub(super) async fn set_agent_key(
    store: &PgStore,
    id: AgentId,
    digest: KeyDigest,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let (mut tx, revoked) = lock_agent(store, id.as_uuid()).await?;
    match revoked {
        None => return rolled_back(tx, AgentChangeOutcome::NotFound).await,
        Some(true) => return rolled_back(tx, AgentChangeOutcome::Revoked).await,
        Some(false) => {}
    }
    sqlx::query("update agents set key_digest = $1 where agent_id = $2")
        .bind(&digest.0[..])
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    insert_audit(&mut tx, entry).await?;
    tx.commit().await.map_err(store_error)?;
    Ok(AgentChangeOutcome::Changed)
}

pub(super) async fn update_agent(
    store: &PgStore,
    id: AgentId,
    change: &AgentChange,
    entry: &AuditEvent,
) -> Result<AgentChangeOutcome, StoreError> {
    let (mut tx, revoked) = lock_agent(store, id.as_uuid()).await?;
    match revoked {
        None => return rolled_back(tx, AgentChangeOutcome::NotFound).await,
        Some(true) => return rolled_back(tx, AgentChangeOutcome::Revoked).await,
        Some(false) => {}
    }
    let group_id: Option<Uuid> = match &change.group {
        Some(group) => {
            let found: Option<Uuid> =
                sqlx::query_scalar("select group_id from groups where name = $1")
                    .bind(group.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
            if found.is_none() {
                return rolled_back(tx, AgentChangeOutcome::UnknownGroup).await;
            }
            found
        }
        None => None,
    };
    sqlx::query(
        "update agents set name = coalesce($1, name), group_id = coalesce($2, group_id) \
         where agent_id = $3",
    )
    .bind(change.name.as_ref().map(|n| n.as_str()))
    .bind(group_id)
    .bind(id.as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    insert_audit(&mut tx, entry).await?;
    tx.commit().await.map_err(store_error)?;
    Ok(AgentChangeOutcome::Changed)
}
