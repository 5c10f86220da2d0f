//! What the store keeps of webhooks: one per guild ([`WebhookRecord`]) and
//! the queue of deliveries to it ([`DeliveryRecord`]), each statement once
//! for both backends (see `db_run!`). The rules (what is sent, when it is
//! retried, when a webhook is disabled) are the service's
//! (`service::webhooks`); the store only keeps and claims. Claims (a
//! conditional update) keep two instances from attempting one delivery at
//! once, and marking an audit event looked at is conditional too, so each
//! event is queued once.

use chrono::{DateTime, Utc};

use super::audit::{insert_audit_in, LOGGED};
use super::rows::{
    self, id_from_sql, id_to_sql, to_millis, DeliveryRow, DueRow, EventRow, WebhookRow, DELIVERY_COLUMNS,
    EVENT_COLUMNS, WEBHOOK_COLUMNS,
};
use super::{Conn, Store};
use crate::audit::{AuditEvent, NewAuditEvent};

/// A guild's webhook as stored. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct WebhookRecord {
    pub guild_id: u64,
    pub url: String,
    /// `whsec_` + base64 of the signing key: kept to sign, never shown
    /// after it was made, never logged.
    pub secret: String,
    /// Event types, space-separated.
    pub events: String,
    pub enabled: bool,
    /// Set, or last re-enabled: events recorded before are not sent.
    pub enabled_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Messages given up on in a row since the last success.
    pub failed_messages: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("guild_id", &self.guild_id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A webhook being set.
pub struct NewWebhook<'a> {
    pub guild_id: u64,
    pub url: &'a str,
    pub events: &'a str,
    /// The secret for a new webhook, or to replace the current one.
    pub secret: &'a str,
    /// Replace the secret of an existing webhook (otherwise it is kept).
    pub replace_secret: bool,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed; given up.
    Failed,
    /// Never finished: the webhook was disabled meanwhile.
    Dropped,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        [Self::Pending, Self::Delivered, Self::Failed, Self::Dropped]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("corrupt delivery state {s}"))
    }
}

/// A message about to be queued.
pub struct NewDelivery<'a> {
    /// The `webhook-id` header: unique, the same on every attempt.
    pub message_id: &'a str,
    pub guild_id: u64,
    pub event_type: &'a str,
    pub audit_event_id: Option<i64>,
    /// The JSON body, signed as is on every attempt.
    pub body: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A delivery and its attempts so far (no body).
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub message_id: String,
    pub guild_id: u64,
    pub event_type: String,
    pub audit_event_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last attempt, if it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, in a few words.
    pub last_error: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
}

/// What a backlog summary (`events.skipped`) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Events folded into it (not queued one by one).
    pub count: u64,
    /// The first and last audit events among them (`None` if all were
    /// gateway bans, which are not in the audit log).
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
    /// When the last one came.
    pub last_at: DateTime<Utc>,
}

/// A delivery due now, with what sending it needs.
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub body: String,
    pub url: String,
    pub secret: String,
}

/// How a webhook stands after an attempt.
#[derive(Debug, Clone, Copy)]
pub struct Failing {
    /// Messages given up on in a row since the last success.
    pub failed_messages: u32,
    /// When its attempts began to fail with no success since (`None`:
    /// the last one succeeded).
    pub since: Option<DateTime<Utc>>,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// One attempt's outcome, recorded by the dispatcher that claimed it.
pub struct AttemptRecord<'a> {
    pub delivery_id: i64,
    pub guild_id: u64,
    /// The claim the attempt was made under: a dispatcher whose claim ran
    /// out (another took the delivery over) records nothing.
    pub claimed_until: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub next: AttemptNext,
}

impl Store {
    /// Sets the guild's webhook (enabled, its failures forgotten), keeping
    /// its secret unless `replace_secret` or it is new, and writes the
    /// event `details` makes from whether the secret is `w.secret`, in one
    /// transaction. Returns whether it is.
    pub async fn set_webhook(
        &self,
        w: &NewWebhook<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        details: impl FnOnce(bool) -> serde_json::Value,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let (secret,): (String,) = sqlx::query_as(
                "insert into webhook (guild_id, url, secret, events, enabled, enabled_at, failed_messages, \
                     created_at, updated_at) values ($1, $2, $3, $4, true, $5, 0, $5, $5) \
                 on conflict (guild_id) do update set url = excluded.url, events = excluded.events, \
                     secret = case when $6 then excluded.secret else webhook.secret end, \
                     enabled_at = case when webhook.enabled then webhook.enabled_at else excluded.enabled_at end, \
                     enabled = true, disabled_at = null, disabled_reason = null, failed_messages = 0, \
                     failing_since = null, \
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
            insert_audit_in(&mut *tx, &event, now).await?;
            new_secret
        }))
    }

    /// Every webhook's stored signing secret (clear `whsec_…`, or sealed
    /// `v1:…`), by guild: what sealing and re-sealing walk.
    pub async fn webhook_secrets(&self) -> anyhow::Result<Vec<(u64, String)>> {
        let rows: Vec<(i64, String)> = db_run!(read self, |c| {
            sqlx::query_as("select guild_id, secret from webhook order by guild_id").fetch_all(&mut *c).await?
        });
        Ok(rows.into_iter().map(|(g, s)| (id_from_sql(g), s)).collect())
    }

    /// Stores `new` as the guild's webhook secret in place of `old` (the
    /// same secret, sealed anew); false if it changed meanwhile.
    pub async fn replace_webhook_secret(&self, guild_id: u64, old: &str, new: &str) -> anyhow::Result<bool> {
        let done = db_run!(write self, |c| {
            sqlx::query("update webhook set secret = $3 where guild_id = $1 and secret = $2")
                .bind(id_to_sql(guild_id))
                .bind(old)
                .bind(new)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Removes the guild's webhook and its deliveries, with `event`.
    /// Returns false if it had none.
    pub async fn remove_webhook(
        &self,
        guild_id: u64,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
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
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Disables an enabled webhook, drops its pending deliveries and
    /// writes `event`, in one transaction. Returns false if it was not
    /// enabled (another instance disabled it first, or it is gone).
    pub async fn disable_webhook(
        &self,
        guild_id: u64,
        reason: &str,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
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
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// The guild's webhook, if it has one.
    pub async fn webhook(&self, guild_id: u64) -> anyhow::Result<Option<WebhookRecord>> {
        let sql = format!("select {WEBHOOK_COLUMNS} from webhook where guild_id = $1");
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, WebhookRow>(&sql).bind(id_to_sql(guild_id)).fetch_optional(&mut *c).await?
        });
        Ok(row.map(WebhookRecord::from))
    }

    /// The guild's latest deliveries, newest first.
    pub async fn webhook_deliveries(&self, guild_id: u64, limit: u32) -> anyhow::Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "select {DELIVERY_COLUMNS} from webhook_delivery where guild_id = $1 \
             order by webhook_delivery_id desc limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, DeliveryRow>(&sql)
                .bind(id_to_sql(guild_id))
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        rows::deliveries(rows)
    }

    /// Marks every audit event not yet looked at whose guild has no enabled
    /// webhook (or one set after the event) as looked at, at once; returns
    /// how many.
    pub async fn skip_unhooked_audit_events(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        // A read first: most ticks find nothing, and take no write lock.
        // An API write still pending is left alone until it is settled.
        let any_unchecked =
            format!("select exists (select 1 from audit_event where webhook_checked_at is null and {LOGGED})");
        let skip = format!(
            "update audit_event set webhook_checked_at = $1 where webhook_checked_at is null and {LOGGED} \
             and not exists (select 1 from webhook w where w.guild_id = audit_event.guild_id and w.enabled \
                 and w.enabled_at <= audit_event.created_at)"
        );
        let (any,): (bool,) = db_run!(read self, |c| {
            sqlx::query_as(&any_unchecked)
                .fetch_one(&mut *c)
                .await?
        });
        if !any {
            return Ok(0);
        }
        Ok(db_run!(write self, |c| {
            sqlx::query(&skip).bind(to_millis(now)).execute(c).await?.rows_affected()
        }))
    }

    /// Audit events the webhook dispatcher has not looked at, oldest first
    /// (not an API write still pending: it goes out once settled).
    pub async fn unchecked_audit_events(&self, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event where webhook_checked_at is null and {LOGGED} \
             order by audit_event_id limit $1"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        rows::events(rows)
    }

    /// Marks an audit event looked at and queues `delivery` for it (if the
    /// guild's webhook is still enabled), in one transaction. Returns false
    /// if another dispatcher looked at it first (nothing queued).
    pub async fn check_audit_event(
        &self,
        audit_event_id: i64,
        now: DateTime<Utc>,
        delivery: Option<&NewDelivery<'_>>,
        max_pending: u32,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(@transaction self, delivery.map(|d| d.guild_id), |tx| {
            let checked = sqlx::query(
                "update audit_event set webhook_checked_at = $1 \
                 where audit_event_id = $2 and webhook_checked_at is null",
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
                queue_delivery_in(&mut *tx, d, max_pending).await?;
            }
            true
        }))
    }

    /// Queues a delivery if the guild's webhook is enabled, within its
    /// backlog of `max_pending` (see [`queue_delivery_in`]); returns whether.
    pub async fn queue_delivery(&self, d: &NewDelivery<'_>, max_pending: u32) -> anyhow::Result<bool> {
        Ok(db_run!(@transaction self, Some(d.guild_id), |tx| { queue_delivery_in(&mut *tx, d, max_pending).await? }))
    }

    /// A backlog summary's count, audit-event range and last event time
    /// (`None` for a message that is not one). Read once it is claimed,
    /// after which nothing more is folded into it.
    pub async fn skipped_of(&self, delivery_id: i64) -> anyhow::Result<Option<Skipped>> {
        type Columns = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Columns> = db_run!(read self, |c| {
            sqlx::query_as(
                "select skipped_count, skipped_first_event, skipped_last_event, skipped_last_at \
                 from webhook_delivery where webhook_delivery_id = $1",
            )
            .bind(delivery_id)
            .fetch_optional(&mut *c)
            .await?
        });
        Ok(row.and_then(|(count, first, last, at)| {
            Some(Skipped {
                count: count?.max(0) as u64,
                first_event: first,
                last_event: last,
                last_at: rows::from_millis(at?),
            })
        }))
    }

    /// Deliveries due at `now`, unclaimed, to enabled webhooks, the most
    /// overdue first; only each guild's oldest pending delivery, so that a
    /// guild's messages go out in event order, each after the one before it
    /// was delivered or given up (and one at a time per guild).
    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> anyhow::Result<Vec<DueDelivery>> {
        let columns = DELIVERY_COLUMNS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "select {columns}, d.body, w.url, w.secret from webhook_delivery d \
             join webhook w on w.guild_id = d.guild_id and w.enabled \
             where d.state = 'pending' and d.next_attempt_at <= $1 \
             and (d.claimed_until is null or d.claimed_until <= $1) \
             and not exists (select 1 from webhook_delivery e where e.guild_id = d.guild_id \
                 and e.state = 'pending' and e.webhook_delivery_id < d.webhook_delivery_id) \
             order by d.next_attempt_at limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, DueRow>(&sql).bind(to_millis(now)).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        rows::due(rows)
    }

    /// When the next pending delivery [`Self::due_deliveries`] would give
    /// is due and unclaimed, if any is (a guild's later messages wait for
    /// its oldest).
    pub async fn next_delivery_at(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let (at,): (Option<i64>,) = db_run!(read self, |c| {
            sqlx::query_as(
                "select min(case when claimed_until > next_attempt_at then claimed_until else next_attempt_at end) \
                 from webhook_delivery d where state = 'pending' \
                 and not exists (select 1 from webhook_delivery e where e.guild_id = d.guild_id \
                     and e.state = 'pending' and e.webhook_delivery_id < d.webhook_delivery_id)",
            )
            .fetch_one(&mut *c)
            .await?
        });
        Ok(at.map(rows::from_millis))
    }

    /// Claims a due delivery until `until`, so that however many instances
    /// run, one attempts it. Returns false if another holds it or it is no
    /// longer pending.
    pub async fn claim_delivery(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        let claimed = db_run!(write self, |c| {
            sqlx::query(
                "update webhook_delivery set claimed_until = $1 \
                 where webhook_delivery_id = $2 and state = 'pending' \
                 and (claimed_until is null or claimed_until <= $3)",
            )
            .bind(to_millis(until))
            .bind(id)
            .bind(to_millis(now))
            .execute(c)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Records an attempt under its claim; on success the webhook's failed
    /// messages go back to 0 and it is no longer failing, on giving up they
    /// count one more, on any failure it is failing since then unless it
    /// already was. Returns how the webhook stands after it (`None` if
    /// nothing was recorded: the claim was lost, the webhook removed).
    pub async fn finish_attempt(&self, a: &AttemptRecord<'_>, now: DateTime<Utc>) -> anyhow::Result<Option<Failing>> {
        let (state, next, done_at) = attempt_columns(a.next, now);
        let change = match a.next {
            AttemptNext::Delivered => "0",
            AttemptNext::GiveUp => "failed_messages + 1",
            AttemptNext::RetryAt(_) => "failed_messages",
        };
        let count_failed = format!(
            "update webhook set failed_messages = {change}, \
                 failing_since = case when $3 then coalesce(failing_since, $2) else null end \
             where guild_id = $1 returning failed_messages, failing_since"
        );
        let failed: Option<(i64, Option<i64>)> = db_run!(transaction self, |tx| {
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
            sqlx::query_as(&count_failed)
                .bind(id_to_sql(a.guild_id))
                .bind(to_millis(now))
                .bind(a.next != AttemptNext::Delivered)
                .fetch_optional(&mut *tx)
                .await?
        });
        Ok(failed.map(|(n, since)| Failing {
            failed_messages: n.clamp(0, i64::from(u32::MAX)) as u32,
            since: since.map(rows::from_millis),
        }))
    }

    /// Deletes finished deliveries done before `before`; returns how many.
    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(db_run!(write self, |c| {
            sqlx::query("delete from webhook_delivery where state <> 'pending' and done_at < $1")
                .bind(to_millis(before))
                .execute(c)
                .await?
                .rows_affected()
        }))
    }
}

/// The event type of a guild's backlog summary (see [`queue_delivery_in`]).
pub const SKIPPED_EVENT_TYPE: &str = "events.skipped";

/// Queues `d` if the guild's webhook is enabled, within its backlog:
/// with fewer than `max_pending` messages pending for the guild, as itself;
/// past that, folded into the summary at the end of the guild's queue
/// (one `events.skipped` message, opened by the first event past the
/// backlog and counting every one after it until it is first claimed), so
/// a guild never has more than `max_pending + 1` messages pending. Runs in
/// the caller's transaction, which holds the guild's lock on PostgreSQL
/// (concurrent queuers count what the one before committed). Returns
/// whether the event was queued or folded.
async fn queue_delivery_in(conn: impl Into<Conn<'_>>, d: &NewDelivery<'_>, max_pending: u32) -> anyhow::Result<bool> {
    const ENABLED: &str = "exists (select 1 from webhook where guild_id = $2 and enabled)";
    const PENDING: &str = "(select count(*) from webhook_delivery where guild_id = $2 and state = 'pending')";
    let as_itself = format!(
        "insert into webhook_delivery (message_id, guild_id, event_type, audit_event_id, body, created_at, \
             next_attempt_at) \
         select $1, $2, $3, $4, $5, $6, $6 where {ENABLED} and {PENDING} < $7"
    );
    let folded = "update webhook_delivery set skipped_count = skipped_count + 1, \
             skipped_first_event = coalesce(skipped_first_event, cast($3 as bigint)), \
             skipped_last_event = coalesce(cast($3 as bigint), skipped_last_event), skipped_last_at = $4 \
         where webhook_delivery_id = (select max(webhook_delivery_id) from webhook_delivery \
                 where guild_id = $2 and state = 'pending') \
         and guild_id = $2 and event_type = $1 and attempts = 0 and claimed_until is null";
    let summary = format!(
        "insert into webhook_delivery (message_id, guild_id, event_type, audit_event_id, body, created_at, \
             next_attempt_at, skipped_count, skipped_first_event, skipped_last_event, skipped_last_at) \
         select $1, $2, $3, null, '', $5, $5, 1, $4, $4, $5 where {ENABLED} and {PENDING} < $6"
    );
    let max = i64::from(max_pending);
    db_run!(conn conn, |c| {
        let queued = sqlx::query(&as_itself)
            .bind(d.message_id)
            .bind(id_to_sql(d.guild_id))
            .bind(d.event_type)
            .bind(d.audit_event_id)
            .bind(d.body)
            .bind(to_millis(d.created_at))
            .bind(max)
            .execute(&mut *c)
            .await?
            .rows_affected();
        if queued == 1 {
            return Ok(true);
        }
        let into_summary = sqlx::query(folded)
            .bind(SKIPPED_EVENT_TYPE)
            .bind(id_to_sql(d.guild_id))
            .bind(d.audit_event_id)
            .bind(to_millis(d.created_at))
            .execute(&mut *c)
            .await?
            .rows_affected();
        if into_summary == 1 {
            return Ok(true);
        }
        let opened = sqlx::query(&summary)
            .bind(d.message_id)
            .bind(id_to_sql(d.guild_id))
            .bind(SKIPPED_EVENT_TYPE)
            .bind(d.audit_event_id)
            .bind(to_millis(d.created_at))
            .bind(max + 1)
            .execute(&mut *c)
            .await?
            .rows_affected();
        Ok(opened == 1)
    })
}

/// The state, next attempt and finish time an attempt's outcome leaves.
fn attempt_columns(next: AttemptNext, now: DateTime<Utc>) -> (DeliveryState, Option<i64>, Option<i64>) {
    match next {
        AttemptNext::Delivered => (DeliveryState::Delivered, None, Some(to_millis(now))),
        AttemptNext::GiveUp => (DeliveryState::Failed, None, Some(to_millis(now))),
        AttemptNext::RetryAt(at) => (DeliveryState::Pending, Some(to_millis(at)), None),
    }
}
