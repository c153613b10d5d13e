//! `groups` and `user_groups` on PostgreSQL: which agents each technician may see.

use std::collections::BTreeSet;

use rmm_application::{AuditEvent, GroupDeleteOutcome, GroupRecord, GroupRepository, StoreError};
use rmm_domain::{AgentId, GroupName, UserId};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::audit::insert_audit;
use super::{PgStore, from_db, rolled_back, to_db};
use crate::{RowError, store_error};

fn group_name(row: &PgRow, column: &'static str) -> Result<GroupName, StoreError> {
    let name: String = row.try_get(column).map_err(store_error)?;
    GroupName::parse(&name).map_err(|e| RowError::bad("groups", format!("{name:?}"), column, e))
}

fn group_from_row(row: &PgRow) -> Result<GroupRecord, StoreError> {
    let id: Uuid = row.try_get("group_id").map_err(store_error)?;
    let agents: i64 = row.try_get("agents").map_err(store_error)?;
    Ok(GroupRecord {
        id: id.hyphenated().to_string(),
        name: group_name(row, "name")?,
        created_at: from_db(row.try_get("created_at").map_err(store_error)?),
        agents: u64::try_from(agents).map_err(|e| RowError::bad("groups", id, "agents", e))?,
    })
}

/// Grants `user` exactly `groups`, on `conn` (the caller's transaction); the first group that
/// does not exist, if any (then the caller rolls back).
pub(super) async fn replace_grants(
    conn: &mut PgConnection,
    user: UserId,
    groups: &[GroupName],
) -> Result<Option<GroupName>, StoreError> {
    sqlx::query("delete from user_groups where user_id = $1")
        .bind(user.as_uuid())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    // Each once: the old grants are gone, so every insert adds one row or names no group.
    for group in groups.iter().collect::<BTreeSet<_>>() {
        let added = sqlx::query(
            "insert into user_groups (user_id, group_id) \
             select $1, group_id from groups where name = $2",
        )
        .bind(user.as_uuid())
        .bind(group.as_str())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
        if added.rows_affected() == 0 {
            return Ok(Some(group.clone()));
        }
    }
    Ok(None)
}

impl GroupRepository for PgStore {
    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        let rows = sqlx::query(
            "select g.group_id, g.name, g.created_at, \
             (select count(*) from agents a where a.group_id = g.group_id) as agents \
             from groups g order by g.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(group_from_row).collect()
    }

    async fn insert_group(
        &self,
        group: &GroupRecord,
        entry: &AuditEvent,
    ) -> Result<(), StoreError> {
        let id = Uuid::parse_str(&group.id).map_err(StoreError::backend)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("insert into groups (group_id, name, created_at) values ($1, $2, $3)")
            .bind(id)
            .bind(group.name.as_str())
            .bind(to_db(group.created_at)?)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)
    }

    async fn delete_group(
        &self,
        name: &GroupName,
        entry: &AuditEvent,
    ) -> Result<GroupDeleteOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // The row lock makes a concurrent move of an agent into the group wait (its foreign
        // key check locks the row too), so "no agents" holds until the commit.
        let id: Option<Uuid> =
            sqlx::query_scalar("select group_id from groups where name = $1 for update")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
        let Some(id) = id else {
            return rolled_back(tx, GroupDeleteOutcome::NotFound).await;
        };
        let used: bool =
            sqlx::query_scalar("select exists (select 1 from agents where group_id = $1)")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
        if used {
            return rolled_back(tx, GroupDeleteOutcome::NotEmpty).await;
        }
        // Its grants and its enrollment tokens (which could only enroll into nothing) go
        // with it.
        for statement in [
            "delete from user_groups where group_id = $1",
            "delete from enrollment_tokens where group_id = $1",
            "delete from groups where group_id = $1",
        ] {
            sqlx::query(statement)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(GroupDeleteOutcome::Deleted)
    }

    async fn user_groups(&self, user: UserId) -> Result<Vec<GroupName>, StoreError> {
        let rows = sqlx::query(
            "select g.name from user_groups ug join groups g on g.group_id = ug.group_id \
             where ug.user_id = $1 order by g.name",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(|row| group_name(row, "name")).collect()
    }

    async fn all_user_groups(&self) -> Result<Vec<(UserId, GroupName)>, StoreError> {
        let rows = sqlx::query(
            "select ug.user_id, g.name from user_groups ug \
             join groups g on g.group_id = ug.group_id order by g.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let user: Uuid = row.try_get("user_id").map_err(store_error)?;
                Ok((UserId::from_uuid(user), group_name(row, "name")?))
            })
            .collect()
    }

    async fn may_see_agent(&self, user: UserId, agent: AgentId) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "select exists (select 1 from agents a join user_groups ug \
             on ug.group_id = a.group_id where a.agent_id = $1 and ug.user_id = $2)",
        )
        .bind(agent.as_uuid())
        .bind(user.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)
    }

    async fn open_sessions_of(&self, user: UserId) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from tech_sessions where tech_id = $1 \
             and status in ('pending', 'active')",
        )
        .bind(user.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        u64::try_from(n).map_err(StoreError::backend)
    }
}
