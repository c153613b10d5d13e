//! `enrollment_tokens` on PostgreSQL: tokens that let machines enroll as agents, and the
//! enrollment itself (the use counted and the agent stored in one transaction).

use chrono::{DateTime, Utc};
use rmm_application::{
    AgentRecord, AuditEvent, EnrollOutcome, EnrollmentRecord, EnrollmentRepository, KeyDigest,
    NewEnrollment, StoreError, enrolled_detail,
};
use rmm_domain::{EnrollmentId, Timestamp};
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::audit::insert_audit;
use super::{PgStore, from_db, rolled_back, to_db};
use crate::enrollment::{EnrollmentRow, enrolled, enrollment_select, refusal};
use crate::{store_error, u64_to_db};

fn enrollment_from_row(row: &PgRow) -> Result<EnrollmentRecord, StoreError> {
    let decoded = EnrollmentRow {
        enrollment_id: row.try_get("enrollment_id").map_err(store_error)?,
        group_name: row.try_get("group_name").map_err(store_error)?,
        uses: i64::from(row.try_get::<i32, _>("uses").map_err(store_error)?),
        uses_allowed: i64::from(row.try_get::<i32, _>("uses_allowed").map_err(store_error)?),
        expires_at: from_db(row.try_get("expires_at").map_err(store_error)?),
        revoked: row.try_get("revoked").map_err(store_error)?,
        created_at: from_db(
            row.try_get::<DateTime<Utc>, _>("created_at")
                .map_err(store_error)?,
        ),
        created_by: row.try_get("created_by").map_err(store_error)?,
    };
    EnrollmentRecord::try_from(decoded)
}

impl EnrollmentRepository for PgStore {
    async fn insert_enrollment(
        &self,
        enrollment: &NewEnrollment,
        entry: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let e = &enrollment.record;
        let uses_allowed = i32::try_from(e.uses_allowed).unwrap_or(i32::MAX);
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let inserted = sqlx::query(
            "insert into enrollment_tokens (enrollment_id, token_digest, group_id, uses_allowed, \
             uses, expires_at, created_by, created_at, revoked_at) \
             select $1, $2, group_id, $3, 0, $4, $5, $6, null from groups where name = $7",
        )
        .bind(e.id.as_uuid())
        .bind(&enrollment.digest.0[..])
        .bind(uses_allowed)
        .bind(to_db(e.expires_at)?)
        .bind(e.created_by.map(|u| u.as_uuid()))
        .bind(to_db(e.created_at)?)
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
        .fetch_all(&self.pool)
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
            "update enrollment_tokens set revoked_at = coalesce(revoked_at, $2) \
             where enrollment_id = $1",
        )
        .bind(id.as_uuid())
        .bind(to_db(at)?)
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
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // `for update`: two enrollments racing for the token's last use take turns; the second
        // reads the use the first counted.
        let row = sqlx::query(concat!(
            "select ",
            enrollment_select!(),
            " where e.token_digest = $1 for update of e"
        ))
        .bind(&digest.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return rolled_back(tx, EnrollOutcome::Invalid).await;
        };
        let token = enrollment_from_row(&row)?;
        let group_id: Uuid = row.try_get("group_id").map_err(store_error)?;
        if let Some(refused) = refusal(&token, agent.created_at) {
            return rolled_back(tx, refused).await;
        }
        let inserted = sqlx::query(concat!(
            "insert into agents (",
            agent_columns!(),
            ", group_id, revoked_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, null)"
        ))
        .bind(agent.id.as_uuid())
        .bind(agent.name.as_str())
        .bind(&agent.key_digest.0[..])
        .bind(to_db(agent.created_at)?)
        .bind(agent.last_seen.map(to_db).transpose()?)
        .bind(agent.facts.version.as_deref())
        .bind(agent.facts.hostname.as_deref())
        .bind(agent.facts.os.as_deref())
        .bind(agent.facts.uptime_secs.map(u64_to_db))
        .bind(group_id)
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
        sqlx::query("update enrollment_tokens set uses = uses + 1 where enrollment_id = $1")
            .bind(token.id.as_uuid())
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
