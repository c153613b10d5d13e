//! `enrollment_tokens` on SQLite: tokens that let machines enroll as agents, and the
//! enrollment itself (the use counted and the agent stored in one transaction).

use rmm_application::{
    AgentRecord, AuditEvent, EnrollOutcome, EnrollmentRecord, EnrollmentRepository, KeyDigest,
    NewEnrollment, StoreError, enrolled_detail,
};
use rmm_domain::{EnrollmentId, Timestamp};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::audit::insert_audit;
use super::{SqliteStore, id_text, micros, opt_uuid_column, rolled_back, time_column, uuid_column};
use crate::enrollment::{EnrollmentRow, enrolled, enrollment_select, refusal};
use crate::{store_error, u64_to_db};

fn enrollment_from_row(row: &SqliteRow) -> Result<EnrollmentRecord, StoreError> {
    let decoded = EnrollmentRow {
        enrollment_id: uuid_column(row, "enrollment_tokens", "enrollment_id")?,
        group_name: row.try_get("group_name").map_err(store_error)?,
        uses: row.try_get("uses").map_err(store_error)?,
        uses_allowed: row.try_get("uses_allowed").map_err(store_error)?,
        expires_at: time_column(row, "expires_at")?,
        revoked: row.try_get("revoked").map_err(store_error)?,
        created_at: time_column(row, "created_at")?,
        created_by: opt_uuid_column(row, "enrollment_tokens", "created_by")?,
    };
    EnrollmentRecord::try_from(decoded)
}

impl EnrollmentRepository for SqliteStore {
    async fn insert_enrollment(
        &self,
        enrollment: &NewEnrollment,
        entry: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let e = &enrollment.record;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let inserted = sqlx::query(
            "insert into enrollment_tokens (enrollment_id, token_digest, group_id, uses_allowed, \
             uses, expires_at, created_by, created_at, revoked_at) \
             select ?1, ?2, group_id, ?3, 0, ?4, ?5, ?6, null from groups where name = ?7",
        )
        .bind(id_text(e.id.as_uuid()))
        .bind(&enrollment.digest.0[..])
        .bind(i64::from(e.uses_allowed))
        .bind(micros(e.expires_at))
        .bind(e.created_by.map(|u| id_text(u.as_uuid())))
        .bind(micros(e.created_at))
        .bind(e.group.as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if inserted == 0 {
            return rolled_back(tx, false).await;
        }
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn list_enrollments(&self) -> Result<Vec<EnrollmentRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "select ",
            enrollment_select!(),
            " order by e.created_at desc, e.enrollment_id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter().map(enrollment_from_row).collect()
    }

    async fn revoke_enrollment(
        &self,
        id: EnrollmentId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let changed = sqlx::query(
            "update enrollment_tokens set revoked_at = coalesce(revoked_at, ?2) \
             where enrollment_id = ?1",
        )
        .bind(id_text(id.as_uuid()))
        .bind(micros(at))
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

    async fn enroll(
        &self,
        digest: KeyDigest,
        agent: &AgentRecord,
        entry: &AuditEvent,
    ) -> Result<EnrollOutcome, StoreError> {
        // `begin immediate`: the write lock is held from the read of the token's uses to the
        // commit, so two enrollments racing for its last use take turns.
        let mut tx = self
            .pool
            .begin_with("begin immediate")
            .await
            .map_err(store_error)?;
        let row = sqlx::query(concat!(
            "select ",
            enrollment_select!(),
            " where e.token_digest = ?1"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return rolled_back(tx, EnrollOutcome::Invalid).await;
        };
        let token = enrollment_from_row(&row)?;
        let group_id: String = row.try_get("group_id").map_err(store_error)?;
        if let Some(refused) = refusal(&token, agent.created_at) {
            return rolled_back(tx, refused).await;
        }
        let inserted = sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ", group_id, revoked_at) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, null)"
        ))
        .bind(id_text(agent.id.as_uuid()))
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(micros(agent.created_at))
        .bind(agent.last_seen.map(micros))
        .bind(agent.facts.version.as_deref())
        .bind(agent.facts.hostname.as_deref())
        .bind(agent.facts.os.as_deref())
        .bind(agent.facts.uptime_secs.map(u64_to_db))
        .bind(&group_id)
        .execute(&mut *tx)
        .await
        .map_err(store_error);
        match inserted {
            Ok(_) => {}
            Err(StoreError::Conflict) => {
                return rolled_back(tx, EnrollOutcome::NameTaken).await;
            }
            Err(e) => return Err(e),
        }
        sqlx::query("update enrollment_tokens set uses = uses + 1 where enrollment_id = ?1")
            .bind(id_text(token.id.as_uuid()))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut entry = entry.clone();
        entry.agent = Some(agent.id);
        entry.detail = Some(enrolled_detail(token.id, agent.id, &token.group));
        insert_audit(&mut tx, &entry).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(enrolled(agent, token.group, token.id))
    }
}
