//! SQL for `audit_event`: writing events inside a change's transaction,
//! reading a guild's events newest first, and the audit-channel outbox.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::SqliteStore;
use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};
use crate::store::rows::{self, id_to_sql, to_millis, EventRow, EVENT_COLUMNS};
use crate::store::PostsOff;

impl SqliteStore {
    pub(super) async fn insert_audit_in(
        conn: &mut SqliteConnection,
        e: &NewAuditEvent,
        now: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let user = match &e.actor {
            Actor::User(id) => Some(id_to_sql(*id)),
            _ => None,
        };
        let id = sqlx::query(
            "insert into audit_event (guild_id, created_at, action, actor_kind, actor_user_id, api_key_id, \
                 key_name, key_prefix, test, details) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&mut *conn)
        .await?
        .last_insert_rowid();
        Ok(id)
    }

    /// Writes an event that goes with no other change (an API write to
    /// Discord, recorded once Discord accepted it).
    pub async fn insert_audit(&self, e: &NewAuditEvent, now: DateTime<Utc>) -> anyhow::Result<i64> {
        let mut writer = self.writer.lock().await;
        Self::insert_audit_in(&mut writer, e, now).await
    }

    /// A guild's events, newest first, older than `before` when given.
    pub async fn audit_events(
        &self,
        guild_id: u64,
        limit: u32,
        before: Option<i64>,
    ) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ?1 and (?2 is null or audit_event_id < ?2) \
             order by audit_event_id desc limit ?3"
        ))
        .bind(id_to_sql(guild_id))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::events(rows)
    }

    /// The most recent events a key made or received.
    pub async fn audit_events_for_key(&self, key_id: &str, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where api_key_id = ? order by audit_event_id desc limit ?"
        ))
        .bind(key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::events(rows)
    }

    /// Events not yet posted to an audit channel and not claimed by an
    /// outbox right now, oldest first.
    pub async fn unposted_audit_events(&self, limit: u32, now: DateTime<Utc>) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where posted_at is null \
             and (claimed_until is null or claimed_until <= ?) order by audit_event_id limit ?"
        ))
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::events(rows)
    }

    /// Claims an event for posting until `until`. Returns false if it was
    /// posted or another outbox holds an unexpired claim.
    pub async fn claim_audit_post(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "update audit_event set claimed_until = ?1 where audit_event_id = ?2 and posted_at is null \
             and (claimed_until is null or claimed_until <= ?3)",
        )
        .bind(to_millis(until))
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *self.writer.lock().await)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Marks a claimed event as handled (posted, or nowhere to post).
    pub async fn mark_audit_posted(&self, id: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query("update audit_event set posted_at = ? where audit_event_id = ? and posted_at is null")
            .bind(to_millis(now))
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
}

impl SqliteStore {
    /// If the guild's latest audit-channel event turned posts off: that
    /// event, and the events recorded since (up to `recent` of them).
    pub(super) async fn posts_off_in(
        conn: &mut SqliteConnection,
        guild_id: u64,
        recent: u32,
    ) -> anyhow::Result<Option<PostsOff>> {
        let row = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ? and action = ? \
             order by audit_event_id desc limit 1"
        ))
        .bind(id_to_sql(guild_id))
        .bind(Action::AuditChannelSet.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(turned_off) = row.map(AuditEvent::try_from).transpose()? else { return Ok(None) };
        if !turned_off.details.get("channel_id").is_none_or(serde_json::Value::is_null) {
            return Ok(None);
        }
        let (count,): (i64,) =
            sqlx::query_as("select count(*) from audit_event where guild_id = ? and audit_event_id > ?")
                .bind(id_to_sql(guild_id))
                .bind(turned_off.id)
                .fetch_one(&mut *conn)
                .await?;
        let rows = sqlx::query_as::<_, EventRow>(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ? and audit_event_id > ? \
             order by audit_event_id desc limit ?"
        ))
        .bind(id_to_sql(guild_id))
        .bind(turned_off.id)
        .bind(i64::from(recent))
        .fetch_all(&mut *conn)
        .await?;
        let recent = rows::events(rows)?;
        Ok(Some(PostsOff { turned_off, count: count as u64, recent }))
    }
}
