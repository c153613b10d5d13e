//! `users` and `auth_tokens` on SQLite: who logs in, and which of their tokens are live.

use rmm_application::{
    AuditEvent, RevokeReason, StoreError, TokenRecord, TokenState, UserChange, UserChangeOutcome,
    UserRecord, UserRepository,
};
use rmm_domain::{GroupName, Role, Timestamp, TokenId, UserId, Username};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::audit::insert_audit;
use super::groups::replace_grants;
use super::{SqliteStore, id_text, micros, opt_time_column, rolled_back, time_column, uuid_column};
use crate::{UserRow, loses_admin, store_error};

fn user_from_row(row: &SqliteRow) -> Result<UserRecord, StoreError> {
    let decoded = UserRow {
        user_id: uuid_column(row, "users", "user_id")?,
        username: row.try_get("username").map_err(store_error)?,
        password_hash: row.try_get("password_hash").map_err(store_error)?,
        role: row.try_get("role").map_err(store_error)?,
        created_at: time_column(row, "created_at")?,
        disabled: row.try_get("disabled").map_err(store_error)?,
        last_login_at: opt_time_column(row, "last_login_at")?,
    };
    UserRecord::try_from(decoded)
}

/// Whether another enabled admin than `id` exists.
async fn other_admin(conn: &mut SqliteConnection, id: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "select exists (select 1 from users where role = 'admin' and disabled = 0 \
         and deleted_at is null and user_id <> ?1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .map_err(store_error)
}

/// Locks the database for writing (`begin immediate`: the checks below read what no one else
/// can change before the commit) and reads a live user's role and state.
async fn lock_user(
    store: &SqliteStore,
    id: &str,
) -> Result<
    (
        sqlx::Transaction<'static, sqlx::Sqlite>,
        Option<(String, bool)>,
    ),
    StoreError,
> {
    let mut tx = store
        .pool
        .begin_with("begin immediate")
        .await
        .map_err(store_error)?;
    let row =
        sqlx::query("select role, disabled from users where user_id = ?1 and deleted_at is null")
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
    conn: &mut SqliteConnection,
    id: &str,
    reason: RevokeReason,
    keep: Option<TokenId>,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "update auth_tokens set revoked_at = ?1, revoke_reason = ?2 \
         where user_id = ?3 and revoked_at is null and (?4 is null or token_id <> ?4)",
    )
    .bind(micros(at))
    .bind(reason.as_str())
    .bind(id)
    .bind(keep.map(|t| id_text(t.as_uuid())))
    .execute(conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

impl UserRepository for SqliteStore {
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
            ") values (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))
        .bind(id_text(user.id.as_uuid()))
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.role.as_str())
        .bind(micros(user.created_at))
        .bind(user.disabled)
        .bind(user.last_login_at.map(micros))
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
            " from users where username = ?1 and deleted_at is null"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "select ",
            user_columns!(),
            " from users where user_id = ?1 and deleted_at is null"
        ))
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.reader)
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
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("select count(*) from users where deleted_at is null")
            .fetch_one(&self.reader)
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
        let key = id_text(id.as_uuid());
        let (mut tx, current) = lock_user(self, &key).await?;
        let Some((role, disabled)) = current else {
            return rolled_back(tx, UserChangeOutcome::NotFound).await;
        };
        if loses_admin(&role, disabled, Some(change)) && !other_admin(&mut tx, &key).await? {
            return rolled_back(tx, UserChangeOutcome::LastAdmin).await;
        }
        sqlx::query(
            "update users set role = coalesce(?1, role), disabled = coalesce(?2, disabled), \
             password_hash = coalesce(?3, password_hash) where user_id = ?4",
        )
        .bind(change.role.map(Role::as_str))
        .bind(change.disabled)
        .bind(change.password_hash.as_deref())
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        if let Some(groups) = &change.groups
            && let Some(unknown) = replace_grants(&mut tx, id, groups).await?
        {
            return rolled_back(tx, UserChangeOutcome::UnknownGroup(unknown)).await;
        }
        if let Some((reason, keep)) = revoke {
            revoke_user_tokens(&mut tx, &key, reason, keep, entry.at).await?;
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
        let key = id_text(id.as_uuid());
        let (mut tx, current) = lock_user(self, &key).await?;
        let Some((role, disabled)) = current else {
            return rolled_back(tx, UserChangeOutcome::NotFound).await;
        };
        if loses_admin(&role, disabled, None) && !other_admin(&mut tx, &key).await? {
            return rolled_back(tx, UserChangeOutcome::LastAdmin).await;
        }
        sqlx::query("update users set deleted_at = ?1 where user_id = ?2")
            .bind(micros(at))
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        revoke_user_tokens(&mut tx, &key, RevokeReason::UserDeleted, None, at).await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(UserChangeOutcome::Changed)
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let user = id_text(token.user.as_uuid());
        sqlx::query(
            "insert into auth_tokens (token_id, user_id, issued_at, expires_at) \
             values (?1, ?2, ?3, ?4)",
        )
        .bind(id_text(token.id.as_uuid()))
        .bind(&user)
        .bind(micros(token.issued_at))
        .bind(micros(token.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        sqlx::query("update users set last_login_at = ?1 where user_id = ?2")
            .bind(micros(token.issued_at))
            .bind(&user)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn token_state(&self, id: TokenId) -> Result<Option<TokenState>, StoreError> {
        let row = sqlx::query(
            "select t.user_id, u.role, t.expires_at, \
             (t.revoked_at is null and u.disabled = 0 and u.deleted_at is null) as live \
             from auth_tokens t join users u on u.user_id = t.user_id where t.token_id = ?1",
        )
        .bind(id_text(id.as_uuid()))
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role").map_err(store_error)?;
        Ok(Some(TokenState {
            user: UserId::from_uuid(uuid_column(&row, "auth_tokens", "user_id")?),
            role: Role::parse(&role).map_err(StoreError::backend)?,
            expires_at: time_column(&row, "expires_at")?,
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
            "update auth_tokens set revoked_at = ?1, revoke_reason = ?2 \
             where token_id = ?3 and revoked_at is null",
        )
        .bind(micros(at))
        .bind(reason.as_str())
        .bind(id_text(id.as_uuid()))
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
        let done = sqlx::query("delete from auth_tokens where expires_at < ?1")
            .bind(micros(before))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
