//! The audit trail (`audit_event`): writing events inside a change's
//! transaction, reading a guild's events newest first, the audit-channel
//! setting, the audit-channel outbox, and the pending events of API writes
//! to Discord (recorded before Discord is asked, settled after). Each
//! statement once, for both backends (see `db_run!`).

use chrono::{DateTime, Utc};

use super::keys::{set_guild_setting_in, GuildSetting};
use super::rows::{self, id_from_sql, id_to_sql, to_millis, EventRow, EVENT_COLUMNS};
use super::{Conn, Store};
use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};

/// The events that are in the audit log: every event but an API write still
/// pending or one that failed (`outcome`, see migration 0010). Only these are
/// listed, posted and sent to webhooks.
pub(super) const LOGGED: &str = "(outcome is null or outcome = 'done')";

/// What a guild's audit channel setting was when it was changed.
#[derive(Debug, Clone, Default)]
pub struct AuditChannelBefore {
    /// The channel it replaces; `None` when posts were off or never set.
    pub channel_id: Option<u64>,
    /// When posts had been turned off (rather than never set): since when,
    /// and what was recorded since.
    pub off: Option<PostsOff>,
}

/// The events a guild recorded while its audit posts were off.
#[derive(Debug, Clone)]
pub struct PostsOff {
    /// The event that turned posts off.
    pub turned_off: AuditEvent,
    /// Events recorded since (not counting that one).
    pub count: u64,
    /// The latest of them, newest first.
    pub recent: Vec<AuditEvent>,
}

impl Store {
    /// Sets (or with `None`, clears) the guild's audit channel, and writes
    /// `event` with the details `details` makes from what the setting was
    /// ([`AuditChannelBefore`], with up to `recent` of the events recorded
    /// while posts were off), all in one transaction: no event can slip in
    /// between what is read and what is written.
    pub async fn set_audit_channel(
        &self,
        guild_id: u64,
        channel_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        recent: u32,
        details: impl FnOnce(&AuditChannelBefore) -> serde_json::Value,
    ) -> anyhow::Result<()> {
        db_run!(transaction self, |tx| {
            // Write first: the transaction then holds SQLite's write lock, or
            // PostgreSQL's lock on the guild's setting row (changes of one
            // guild's channel take turns), and what it reads next is the
            // latest.
            let (previous,): (Option<i64>,) = sqlx::query_as(
                "insert into guild_setting (guild_id, audit_channel_id, created_at, updated_at) \
                 values ($1, null, $2, $2) \
                 on conflict (guild_id) do update set updated_at = $2 returning audit_channel_id",
            )
            .bind(id_to_sql(guild_id))
            .bind(to_millis(now))
            .fetch_one(&mut *tx)
            .await?;
            let previous = previous.map(id_from_sql);
            let off = match previous {
                None => posts_off_in(&mut *tx, guild_id, recent).await?,
                Some(_) => None,
            };
            let mut event = event.clone();
            event.details = details(&AuditChannelBefore { channel_id: previous, off });
            set_guild_setting_in(&mut *tx, guild_id, GuildSetting::AuditChannel, channel_id, now).await?;
            insert_audit_in(&mut *tx, &event, now).await?;
        });
        Ok(())
    }

    /// Writes an event that goes with no other change (an API write to
    /// Discord, recorded once Discord accepted it).
    pub async fn insert_audit(&self, e: &NewAuditEvent, now: DateTime<Utc>) -> anyhow::Result<i64> {
        Ok(db_run!(write self, |c| { insert_audit_in(c, e, now).await? }))
    }

    /// Records an API write to Discord before Discord is asked: a pending
    /// event, neither listed nor posted until [`Store::settle_write`] says
    /// it was done. The writer may settle it until `until`; after that the
    /// reconcile reads Discord and settles it (a process killed mid-write).
    pub async fn insert_pending_write(
        &self,
        e: &NewAuditEvent,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        Ok(db_run!(transaction self, |tx| {
            let id = insert_audit_in(&mut *tx, e, now).await?;
            sqlx::query("update audit_event set outcome = 'pending', pending_until = $1 where audit_event_id = $2")
                .bind(to_millis(until))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            id
        }))
    }

    /// Settles a pending API write: `done` (Discord made the change: the
    /// event joins the audit log, to be posted) or not (kept for the record,
    /// never listed, posted nor sent). Returns false if it was not pending
    /// (settled already, by the writer or the reconcile).
    pub async fn settle_write(&self, id: i64, done: bool, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let settled = db_run!(write self, |c| {
            sqlx::query(
                "update audit_event set outcome = case when $1 then 'done' else 'failed' end, pending_until = null, \
                     posted_at = case when $1 then posted_at else coalesce(posted_at, $2) end, \
                     webhook_checked_at = case when $1 then webhook_checked_at else coalesce(webhook_checked_at, $2) end \
                 where audit_event_id = $3 and outcome = 'pending'",
            )
            .bind(done)
            .bind(to_millis(now))
            .bind(id)
            .execute(c)
            .await?
            .rows_affected()
        });
        Ok(settled == 1)
    }

    /// Pending API writes whose writer's time to settle them ran out by
    /// `due_by`, oldest first.
    pub async fn pending_writes(&self, due_by: DateTime<Utc>, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event where outcome = 'pending' and pending_until <= $1 \
             order by audit_event_id limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql).bind(to_millis(due_by)).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        rows::events(rows)
    }

    /// A guild's events, newest first, older than `before` when given.
    pub async fn audit_events(
        &self,
        guild_id: u64,
        limit: u32,
        before: Option<i64>,
    ) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event \
             where guild_id = $1 and (cast($2 as bigint) is null or audit_event_id < $2) and {LOGGED} \
             order by audit_event_id desc limit $3"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql)
                .bind(id_to_sql(guild_id))
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        rows::events(rows)
    }

    /// The most recent events a key made or received.
    pub async fn audit_events_for_key(&self, key_id: &str, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event where api_key_id = $1 and {LOGGED} order by audit_event_id desc limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql).bind(key_id).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        rows::events(rows)
    }

    /// Events not yet posted to an audit channel and not claimed by an
    /// outbox right now, oldest first (an API write still pending is not
    /// due: its post waits for its outcome).
    pub async fn unposted_audit_events(&self, limit: u32, now: DateTime<Utc>) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event where posted_at is null and {LOGGED} \
             and (claimed_until is null or claimed_until <= $1) order by audit_event_id limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql).bind(to_millis(now)).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        rows::events(rows)
    }

    /// Claims an event for posting until `until`, so that however many
    /// instances run, one posts it; an outbox that dies holding a claim
    /// leaves the event to another once the claim runs out. Returns false
    /// if it was posted or another outbox holds it.
    pub async fn claim_audit_post(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        let claim = format!(
            "update audit_event set claimed_until = $1 where audit_event_id = $2 and posted_at is null and {LOGGED} \
             and (claimed_until is null or claimed_until <= $3)"
        );
        let claimed = db_run!(write self, |c| {
            sqlx::query(&claim)
                .bind(to_millis(until))
                .bind(id)
                .bind(to_millis(now))
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Marks a claimed event as handled (posted, or nowhere to post).
    pub async fn mark_audit_posted(&self, id: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query("update audit_event set posted_at = $1 where audit_event_id = $2 and posted_at is null")
                .bind(to_millis(now))
                .bind(id)
                .execute(c)
                .await?;
        });
        Ok(())
    }
}

/// Writes an audit event on `conn` (inside the transaction of the change it
/// records, or alone); returns its id.
pub(super) async fn insert_audit_in(
    conn: impl Into<Conn<'_>>,
    e: &NewAuditEvent,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    let user = match &e.actor {
        Actor::User(id) => Some(id_to_sql(*id)),
        _ => None,
    };
    let (id,): (i64,) = db_run!(conn conn, |c| {
        sqlx::query_as(
            "insert into audit_event (guild_id, created_at, action, actor_kind, actor_user_id, api_key_id, \
                 key_name, key_prefix, test, details) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             returning audit_event_id",
        )
        .bind(id_to_sql(e.guild_id))
        .bind(to_millis(now))
        .bind(e.action.as_str())
        .bind(e.actor.kind())
        .bind(user)
        .bind(e.key.as_ref().map(|k| k.id.as_str().to_owned()))
        .bind(e.key.as_ref().map(|k| k.name.clone()))
        .bind(e.key.as_ref().map(|k| k.prefix.clone()))
        .bind(e.test)
        .bind(e.details.to_string())
        .fetch_one(c)
        .await?
    });
    Ok(id)
}

/// If the guild's latest audit-channel event turned posts off: that event,
/// and the events recorded since (up to `recent` of them).
async fn posts_off_in(conn: impl Into<Conn<'_>>, guild_id: u64, recent: u32) -> anyhow::Result<Option<PostsOff>> {
    let latest = format!(
        "select {EVENT_COLUMNS} from audit_event where guild_id = $1 and action = $2 and {LOGGED} \
         order by audit_event_id desc limit 1"
    );
    let since = format!(
        "select {EVENT_COLUMNS} from audit_event where guild_id = $1 and audit_event_id > $2 and {LOGGED} \
         order by audit_event_id desc limit $3"
    );
    let count = format!("select count(*) from audit_event where guild_id = $1 and audit_event_id > $2 and {LOGGED}");
    db_run!(conn conn, |c| {
        let row = sqlx::query_as::<_, EventRow>(&latest)
            .bind(id_to_sql(guild_id))
            .bind(Action::AuditChannelSet.as_str())
            .fetch_optional(&mut *c)
            .await?;
        let Some(turned_off) = row.map(AuditEvent::try_from).transpose()? else { return Ok(None) };
        if !turned_off.details.get("channel_id").is_none_or(serde_json::Value::is_null) {
            return Ok(None);
        }
        let (count,): (i64,) =
            sqlx::query_as(&count)
                .bind(id_to_sql(guild_id))
                .bind(turned_off.id)
                .fetch_one(&mut *c)
                .await?;
        let rows = sqlx::query_as::<_, EventRow>(&since)
            .bind(id_to_sql(guild_id))
            .bind(turned_off.id)
            .bind(i64::from(recent))
            .fetch_all(&mut *c)
            .await?;
        let recent = rows::events(rows)?;
        Ok(Some(PostsOff { turned_off, count: count as u64, recent }))
    })
}
