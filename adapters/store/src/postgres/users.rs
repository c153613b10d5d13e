//! `users` and `auth_tokens` on PostgreSQL: who logs in, and which of their tokens are live.

use chrono::{DateTime, Utc};
use rmm_application::{
    AuditEvent, RevokeReason, StoreError, TokenRecord, TokenState, UserChange, UserChangeOutcome,
    UserRecord, UserRepository,
};
use rmm_domain::{GroupName, Role, Timestamp, TokenId, UserId, Username};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

use super::audit::insert_audit;
use super::groups::replace_grants;
use super::{PgStore, from_db, rolled_back, to_db};
use crate::{UserRow, loses_admin, store_error};

fn user_from_row(row: &PgRow) -> Result<UserRecord, StoreError> {
    let decoded = UserRow {
        user_id: row.try_get("user_id").map_err(store_error)?,
        username: row.try_get("username").map_err(store_error)?,
        password_hash: row.try_get("password_hash").map_err(store_error)?,
        role: row.try_get("role").map_err(store_error)?,
        created_at: from_db(row.try_get("created_at").map_err(store_error)?),
        disabled: row.try_get("disabled").map_err(store_error)?,
        last_login_at: row
            .try_get::<Option<DateTime<Utc>>, _>("last_login_at")
            .map_err(store_error)?
            .map(from_db),
    };
    UserRecord::try_from(decoded)
}

/// Whether another enabled admin than `id` exists.
async fn other_admin(conn: &mut PgConnection, id: uuid::Uuid) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "select exists (select 1 from users where role = 'admin' and not disabled \
         and deleted_at is null and user_id <> $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .map_err(store_error)
}

/// Begins a change to users (one at a time: the checks below read what no other change can
/// alter before the commit) and reads a live user's role and state.
async fn lock_user(
    store: &PgStore,
    id: uuid::Uuid,
) -> Result<
    (
        sqlx::Transaction<'static, sqlx::Postgres>,
        Option<(String, bool)>,
    ),
    StoreError,
> {
    let mut tx = store.pool.begin().await.map_err(store_error)?;
    // Changes to users take turns, so two cannot each leave the other as the last admin.
    sqlx::query("select pg_advisory_xact_lock(7201001)")
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    let row =
        sqlx::query("select role, disabled from users where user_id = $1 and deleted_at is null")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
    let current = match row {
        Some(row) => Some((
            row.try_get::<String, _>("role").map_err(store_error)?,
            row.try_get::<bool, _>("disabled").map_err(store_error)?,
        )),
        None => None,
    };
    Ok((tx, current))
}

/// Revokes the user's live tokens except `keep`.
async fn revoke_user_tokens(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    reason: RevokeReason,
    keep: Option<TokenId>,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "update auth_tokens set revoked_at = $1, revoke_reason = $2 \
         where user_id = $3 and revoked_at is null and ($4::uuid is null or token_id <> $4)",
    )
    .bind(to_db(at)?)
    .bind(reason.as_str())
    .bind(id)
    .bind(keep.map(|t| t.as_uuid()))
    .execute(conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

impl UserRepository for PgStore {
    async fn insert_user(
        &self,
        user: &UserRecord,
        groups: &[GroupName],
        entry: &AuditEvent,
    ) -> Result<UserChangeOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(concat!(
            "insert into users (",
            user_columns!(),
            ") values ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(user.id.as_uuid())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.role.as_str())
        .bind(to_db(user.created_at)?)
        .bind(user.disabled)
        .bind(user.last_login_at.map(to_db).transpose()?)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if let Some(unknown) = replace_grants(&mut tx, user.id, groups).await? {
            return rolled_back(tx, UserChangeOutcome::UnknownGroup(unknown)).await;
        }
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(UserChangeOutcome::Changed)
    }

    async fn find_user(&self, username: &Username) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where username = $1 and deleted_at is null"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where user_id = $1 and deleted_at is null"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where deleted_at is null order by username"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("select count(*) from users where deleted_at is null")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        u64::try_from(n).map_err(StoreError::backend)
    }

    async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        revoke: Option<(RevokeReason, Option<TokenId>)>,
        entry: &AuditEvent,
    ) -> Result<UserChangeOutcome, StoreError> {
        let key = id.as_uuid();
        let (mut tx, current) = lock_user(self, key).await?;
        let Some((role, disabled)) = current else {
            return rolled_back(tx, UserChangeOutcome::NotFound).await;
        };
        if loses_admin(&role, disabled, Some(change)) && !other_admin(&mut tx, key).await? {
            return rolled_back(tx, UserChangeOutcome::LastAdmin).await;
        }
        sqlx::query(
            "update users set role = coalesce($1, role), disabled = coalesce($2, disabled), \
             password_hash = coalesce($3, password_hash) where user_id = $4",
        )
        .bind(change.role.map(Role::as_str))
        .bind(change.disabled)
        .bind(change.password_hash.as_deref())
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if let Some(groups) = &change.groups
            && let Some(unknown) = replace_grants(&mut tx, id, groups).await?
        {
            return rolled_back(tx, UserChangeOutcome::UnknownGroup(unknown)).await;
        }
        if let Some((reason, keep)) = revoke {
            revoke_user_tokens(&mut tx, key, reason, keep, entry.at).await?;
        }
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(UserChangeOutcome::Changed)
    }

    async fn delete_user(
        &self,
        id: UserId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> Result<UserChangeOutcome, StoreError> {
        let key = id.as_uuid();
        let (mut tx, current) = lock_user(self, key).await?;
        let Some((role, disabled)) = current else {
            return rolled_back(tx, UserChangeOutcome::NotFound).await;
        };
        if loses_admin(&role, disabled, None) && !other_admin(&mut tx, key).await? {
            return rolled_back(tx, UserChangeOutcome::LastAdmin).await;
        }
        sqlx::query("update users set deleted_at = $1 where user_id = $2")
            .bind(to_db(at)?)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        revoke_user_tokens(&mut tx, key, RevokeReason::UserDeleted, None, at).await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(UserChangeOutcome::Changed)
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let user = token.user.as_uuid();
        sqlx::query(
            "insert into auth_tokens (token_id, user_id, issued_at, expires_at) \
             values ($1, $2, $3, $4)",
        )
        .bind(token.id.as_uuid())
        .bind(user)
        .bind(to_db(token.issued_at)?)
        .bind(to_db(token.expires_at)?)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query("update users set last_login_at = $1 where user_id = $2")
            .bind(to_db(token.issued_at)?)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn token_state(&self, id: TokenId) -> Result<Option<TokenState>, StoreError> {
        let row = sqlx::query(
            "select t.user_id, u.role, t.expires_at, \
             (t.revoked_at is null and not u.disabled and u.deleted_at is null) as live \
             from auth_tokens t join users u on u.user_id = t.user_id where t.token_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role").map_err(store_error)?;
        Ok(Some(TokenState {
            user: UserId::from_uuid(row.try_get("user_id").map_err(store_error)?),
            role: Role::parse(&role).map_err(StoreError::backend)?,
            expires_at: from_db(row.try_get("expires_at").map_err(store_error)?),
            live: row.try_get("live").map_err(store_error)?,
        }))
    }

    async fn revoke_token(
        &self,
        id: TokenId,
        reason: RevokeReason,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let changed = sqlx::query(
            "update auth_tokens set revoked_at = $1, revoke_reason = $2 \
             where token_id = $3 and revoked_at is null",
        )
        .bind(to_db(at)?)
        .bind(reason.as_str())
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if changed == 0 {
            return rolled_back(tx, false).await;
        }
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn prune_tokens(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query("delete from auth_tokens where expires_at < $1")
            .bind(to_db(before)?)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
