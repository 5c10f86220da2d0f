//! SQL for the expiry reminders on PostgreSQL (`key_expiry_reminder`,
//! migration 0005): finding keys that expire soon, and claiming a reminder
//! with its audit event in one transaction.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;
use crate::store::rows::{to_millis, ExpiringRow, EXPIRING_COLUMNS};
use crate::store::{ExpiringKey, ExpiryReminder};

impl PgStore {
    pub async fn expiring_keys(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, &KeyId)>,
        limit: u32,
    ) -> anyhow::Result<Vec<ExpiringKey>> {
        let rows = sqlx::query_as::<_, ExpiringRow>(&format!(
            "select {EXPIRING_COLUMNS}, (select min(r.threshold_seconds) from key_expiry_reminder r \
                 where r.api_key_id = api_key.api_key_id) as reminded \
             from api_key where revoked_at is null and expires_at is not null \
             and expires_at > $1 and expires_at <= $2 \
             and ($3::bigint is null or expires_at > $3 or (expires_at = $3 and api_key_id > $4::text)) \
             order by expires_at, api_key_id limit $5"
        ))
        .bind(to_millis(now))
        .bind(to_millis(until))
        .bind(after.map(|(at, _)| to_millis(at)))
        .bind(after.map(|(_, id)| id.as_str().to_owned()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ExpiringKey::from).collect())
    }

    pub async fn claim_expiry_reminder(
        &self,
        r: &ExpiryReminder<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        // The claim first: a concurrent claim of the same row waits on its
        // primary key until this transaction ends, then finds it taken.
        const CLAIM: &str = "insert into key_expiry_reminder \
                 (api_key_id, threshold_seconds, expires_at, sent_at, audit_event_id) \
             select api_key_id, $2, expires_at, $3, null from api_key \
             where api_key_id = $1 and revoked_at is null and expires_at = $4 and expires_at > $3 \
             on conflict do nothing";
        let mut tx = self.pool.begin().await?;
        let claim = |threshold: i64| {
            sqlx::query(CLAIM)
                .bind(r.key_id.as_str())
                .bind(threshold)
                .bind(to_millis(now))
                .bind(to_millis(r.expires_at))
        };
        if claim(r.threshold_seconds).execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        for &threshold in r.passed_over {
            claim(threshold).execute(&mut *tx).await?;
        }
        let event_id = Self::insert_audit_in(&mut tx, event, now).await?;
        sqlx::query(
            "update key_expiry_reminder set audit_event_id = $1 where api_key_id = $2 and threshold_seconds = $3",
        )
        .bind(event_id)
        .bind(r.key_id.as_str())
        .bind(r.threshold_seconds)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
