//! SQL for `audit_event`: writing events inside a change's transaction,
//! reading a guild's events newest first, and the audit-channel outbox.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::{from_millis, id_from_sql, id_to_sql, to_millis, Store};
use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};

const EVENT_COLUMNS: &str = "audit_event_id, guild_id, created_at, action, actor_kind, actor_user_id, \
     api_key_id, key_name, key_prefix, test, details";

impl Store {
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
        let rows = sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ?1 and (?2 is null or audit_event_id < ?2) \
             order by audit_event_id desc limit ?3"
        ))
        .bind(id_to_sql(guild_id))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The most recent events a key made or received.
    pub async fn audit_events_for_key(&self, key_id: &str, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where api_key_id = ? order by audit_event_id desc limit ?"
        ))
        .bind(key_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Events not yet posted to an audit channel, oldest first.
    pub async fn unposted_audit_events(&self, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where posted_at is null order by audit_event_id limit ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Marks an event as handled by the outbox (posted, or nowhere to post).
    /// Returns false if another process already claimed it.
    pub async fn mark_audit_posted(&self, id: i64, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let done = sqlx::query("update audit_event set posted_at = ? where audit_event_id = ? and posted_at is null")
            .bind(to_millis(now))
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?
            .rows_affected();
        Ok(done == 1)
    }
}

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
    /// If the guild's latest audit-channel event turned posts off: that
    /// event, and the events recorded since (up to `recent` of them).
    pub(super) async fn posts_off_in(
        conn: &mut SqliteConnection,
        guild_id: u64,
        recent: u32,
    ) -> anyhow::Result<Option<PostsOff>> {
        let row = sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ? and action = ? \
             order by audit_event_id desc limit 1"
        ))
        .bind(id_to_sql(guild_id))
        .bind(Action::AuditChannelSet.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(turned_off) = row.as_ref().map(event_from_row).transpose()? else { return Ok(None) };
        if !turned_off.details.get("channel_id").is_none_or(serde_json::Value::is_null) {
            return Ok(None);
        }
        let (count,): (i64,) =
            sqlx::query_as("select count(*) from audit_event where guild_id = ? and audit_event_id > ?")
                .bind(id_to_sql(guild_id))
                .bind(turned_off.id)
                .fetch_one(&mut *conn)
                .await?;
        let rows = sqlx::query(&format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = ? and audit_event_id > ? \
             order by audit_event_id desc limit ?"
        ))
        .bind(id_to_sql(guild_id))
        .bind(turned_off.id)
        .bind(i64::from(recent))
        .fetch_all(&mut *conn)
        .await?;
        let recent = rows.iter().map(event_from_row).collect::<anyhow::Result<_>>()?;
        Ok(Some(PostsOff { turned_off, count: count as u64, recent }))
    }
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<AuditEvent> {
    let action: String = row.try_get("action")?;
    let kind: String = row.try_get("actor_kind")?;
    let user: Option<i64> = row.try_get("actor_user_id")?;
    let actor = match (kind.as_str(), user) {
        ("user", Some(id)) => Actor::User(id_from_sql(id)).label(),
        ("api_key", _) => "An API key".to_owned(),
        ("system", _) => Actor::System.label(),
        _ => "The operator CLI".to_owned(),
    };
    let details: String = row.try_get("details")?;
    Ok(AuditEvent {
        id: row.try_get("audit_event_id")?,
        guild_id: id_from_sql(row.try_get("guild_id")?),
        at: from_millis(row.try_get("created_at")?),
        action: Action::parse(&action).ok_or_else(|| anyhow::anyhow!("unknown audit action {action}"))?,
        actor,
        actor_kind: kind,
        key_id: row.try_get("api_key_id")?,
        key_name: row.try_get("key_name")?,
        key_prefix: row.try_get("key_prefix")?,
        test: row.try_get("test")?,
        details: serde_json::from_str(&details).unwrap_or_else(|_| serde_json::json!({})),
    })
}
