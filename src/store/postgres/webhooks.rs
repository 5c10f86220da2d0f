//! SQL for `webhook` and `webhook_delivery` on PostgreSQL: the same
//! statements as SQLite's, on the pool. Claims (a conditional update) keep
//! two instances from attempting one delivery at once, and marking an audit
//! event looked at is conditional too, so each event is queued once.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::audit::{AuditEvent, NewAuditEvent};
use crate::store::rows::{
    self, id_to_sql, to_millis, DeliveryRow, DueRow, EventRow, WebhookRow, DELIVERY_COLUMNS, EVENT_COLUMNS,
    WEBHOOK_COLUMNS,
};
use crate::store::WebhookRecord;
use crate::store::{AttemptNext, AttemptRecord, DeliveryRecord, DeliveryState, DueDelivery, NewDelivery, NewWebhook};

/// Inserts `d` if the guild's webhook is enabled.
const QUEUE_DELIVERY: &str = "insert into webhook_delivery (message_id, guild_id, event_type, audit_event_id, body, \
         created_at, next_attempt_at) \
     select $1, $2, $3, $4, $5, $6, $6 where exists (select 1 from webhook where guild_id = $2 and enabled)";

impl PgStore {
    pub async fn set_webhook(
        &self,
        w: &NewWebhook<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        details: impl FnOnce(bool) -> serde_json::Value,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let (secret,): (String,) = sqlx::query_as(
            "insert into webhook (guild_id, url, secret, events, enabled, enabled_at, failed_messages, created_at, \
                 updated_at) values ($1, $2, $3, $4, true, $5, 0, $5, $5) \
             on conflict (guild_id) do update set url = excluded.url, events = excluded.events, \
                 secret = case when $6 then excluded.secret else webhook.secret end, \
                 enabled_at = case when webhook.enabled then webhook.enabled_at else excluded.enabled_at end, \
                 enabled = true, disabled_at = null, disabled_reason = null, failed_messages = 0, \
                 updated_at = excluded.updated_at \
             returning secret",
        )
        .bind(id_to_sql(w.guild_id))
        .bind(w.url)
        .bind(w.secret)
        .bind(w.events)
        .bind(to_millis(now))
        .bind(w.replace_secret)
        .fetch_one(&mut *tx)
        .await?;
        let new_secret = secret == w.secret;
        let mut event = event.clone();
        event.details = details(new_secret);
        Self::insert_audit_in(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(new_secret)
    }

    pub async fn remove_webhook(
        &self,
        guild_id: u64,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("delete from webhook where guild_id = $1")
            .bind(id_to_sql(guild_id))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Ok(false);
        }
        sqlx::query("delete from webhook_delivery where guild_id = $1")
            .bind(id_to_sql(guild_id))
            .execute(&mut *tx)
            .await?;
        Self::insert_audit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn disable_webhook(
        &self,
        guild_id: u64,
        reason: &str,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let disabled = sqlx::query(
            "update webhook set enabled = false, disabled_at = $1, disabled_reason = $2, updated_at = $1 \
             where guild_id = $3 and enabled",
        )
        .bind(to_millis(now))
        .bind(reason)
        .bind(id_to_sql(guild_id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if disabled == 0 {
            return Ok(false);
        }
        sqlx::query(
            "update webhook_delivery set state = $1, next_attempt_at = null, claimed_until = null, done_at = $2 \
             where guild_id = $3 and state = 'pending'",
        )
        .bind(DeliveryState::Dropped.as_str())
        .bind(to_millis(now))
        .bind(id_to_sql(guild_id))
        .execute(&mut *tx)
        .await?;
        Self::insert_audit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn webhook(&self, guild_id: u64) -> anyhow::Result<Option<WebhookRecord>> {
        let row =
            sqlx::query_as::<_, WebhookRow>(&format!("select {WEBHOOK_COLUMNS} from webhook where guild_id = $1"))
                .bind(id_to_sql(guild_id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(WebhookRecord::from))
    }

    pub async fn webhook_deliveries(&self, guild_id: u64, limit: u32) -> anyhow::Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query_as::<_, DeliveryRow>(&format!(
            "select {DELIVERY_COLUMNS} from webhook_delivery where guild_id = $1 \
             order by webhook_delivery_id desc limit $2"
        ))
        .bind(id_to_sql(guild_id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::deliveries(rows)
    }

    pub async fn skip_unhooked_audit_events(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        // A read first: most ticks find nothing, and lock no row.
        let (any,): (bool,) =
            sqlx::query_as("select exists (select 1 from audit_event where webhook_checked_at is null)")
                .fetch_one(&self.pool)
                .await?;
        if !any {
            return Ok(0);
        }
        let done = sqlx::query(
            "update audit_event set webhook_checked_at = $1 where webhook_checked_at is null and not exists \
                 (select 1 from webhook w where w.guild_id = audit_event.guild_id and w.enabled \
                  and w.enabled_at <= audit_event.created_at)",
        )
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done)
    }

    pub async fn unchecked_audit_events(&self, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where webhook_checked_at is null order by audit_event_id limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::events(rows)
    }

    pub async fn check_audit_event(
        &self,
        audit_event_id: i64,
        now: DateTime<Utc>,
        delivery: Option<&NewDelivery<'_>>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let checked = sqlx::query(
            "update audit_event set webhook_checked_at = $1 where audit_event_id = $2 and webhook_checked_at is null",
        )
        .bind(to_millis(now))
        .bind(audit_event_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if checked == 0 {
            return Ok(false);
        }
        if let Some(d) = delivery {
            bind_delivery(sqlx::query(QUEUE_DELIVERY), d).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn queue_delivery(&self, d: &NewDelivery<'_>) -> anyhow::Result<bool> {
        let done = bind_delivery(sqlx::query(QUEUE_DELIVERY), d).execute(&self.pool).await?.rows_affected();
        Ok(done == 1)
    }

    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> anyhow::Result<Vec<DueDelivery>> {
        let columns = DELIVERY_COLUMNS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query_as::<_, DueRow>(&format!(
            "select {columns}, d.body, w.url, w.secret from webhook_delivery d \
             join webhook w on w.guild_id = d.guild_id and w.enabled \
             where d.state = 'pending' and d.next_attempt_at <= $1 \
             and (d.claimed_until is null or d.claimed_until <= $1) \
             order by d.next_attempt_at limit $2"
        ))
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::due(rows)
    }

    pub async fn next_delivery_at(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let (at,): (Option<i64>,) = sqlx::query_as(
            "select min(case when claimed_until > next_attempt_at then claimed_until else next_attempt_at end) \
             from webhook_delivery where state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at.map(rows::from_millis))
    }

    pub async fn claim_delivery(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "update webhook_delivery set claimed_until = $1 where webhook_delivery_id = $2 and state = 'pending' \
             and (claimed_until is null or claimed_until <= $3)",
        )
        .bind(to_millis(until))
        .bind(id)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    pub async fn finish_attempt(&self, a: &AttemptRecord<'_>, now: DateTime<Utc>) -> anyhow::Result<Option<u32>> {
        let (state, next, done_at) = attempt_columns(a.next, now);
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "update webhook_delivery set attempts = attempts + 1, last_attempt_at = $1, last_status = $2, \
                 last_error = $3, state = $4, next_attempt_at = $5, done_at = $6, claimed_until = null \
             where webhook_delivery_id = $7 and claimed_until = $8 and state = 'pending'",
        )
        .bind(to_millis(now))
        .bind(a.status.map(i64::from))
        .bind(a.error)
        .bind(state.as_str())
        .bind(next)
        .bind(done_at)
        .bind(a.delivery_id)
        .bind(to_millis(a.claimed_until))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            return Ok(None);
        }
        let change = match a.next {
            AttemptNext::Delivered => "0",
            AttemptNext::GiveUp => "failed_messages + 1",
            AttemptNext::RetryAt(_) => "failed_messages",
        };
        let failed: Option<(i64,)> = sqlx::query_as(&format!(
            "update webhook set failed_messages = {change} where guild_id = $1 returning failed_messages"
        ))
        .bind(id_to_sql(a.guild_id))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(failed.map(|(n,)| n.clamp(0, i64::from(u32::MAX)) as u32))
    }

    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query("delete from webhook_delivery where state <> 'pending' and done_at < $1")
            .bind(to_millis(before))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done)
    }
}

fn bind_delivery<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    d: &'q NewDelivery<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(d.message_id)
        .bind(id_to_sql(d.guild_id))
        .bind(d.event_type)
        .bind(d.audit_event_id)
        .bind(d.body)
        .bind(to_millis(d.created_at))
}

/// The state, next attempt and finish time an attempt's outcome leaves.
fn attempt_columns(next: AttemptNext, now: DateTime<Utc>) -> (DeliveryState, Option<i64>, Option<i64>) {
    match next {
        AttemptNext::Delivered => (DeliveryState::Delivered, None, Some(to_millis(now))),
        AttemptNext::GiveUp => (DeliveryState::Failed, None, Some(to_millis(now))),
        AttemptNext::RetryAt(at) => (DeliveryState::Pending, Some(to_millis(at)), None),
    }
}
