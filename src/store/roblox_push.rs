//! What the store keeps for bans pushed into live Roblox games and keys
//! delivered into Secrets (migration 0044): each guild's push setting
//! (`roblox_push`), the push outbox (`roblox_push_event`: written before
//! anything is sent, claimed by one worker, sent once) and the universe and
//! secret each key is delivered into (`roblox_key_delivery`). Each
//! statement once, for both backends (see `db_run!`).

use chrono::{DateTime, Utc};

use super::rows::{self, from_millis, id_from_sql, id_to_sql, to_millis, EventRow, EVENT_COLUMNS};
use super::Store;
use crate::audit::AuditEvent;

/// A guild's push setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSetting {
    pub guild_id: u64,
    pub universe_id: u64,
    /// `publish`, `restrict` or `both`.
    pub mode: String,
    pub topic: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SettingRow {
    guild_id: i64,
    universe_id: i64,
    mode: String,
    topic: String,
    updated_at: i64,
}

impl From<SettingRow> for PushSetting {
    fn from(r: SettingRow) -> Self {
        Self {
            guild_id: id_from_sql(r.guild_id),
            universe_id: id_from_sql(r.universe_id),
            mode: r.mode,
            topic: r.topic,
            updated_at: from_millis(r.updated_at),
        }
    }
}

/// A push about to be queued.
#[derive(Debug, Clone)]
pub struct NewPush<'a> {
    pub guild_id: u64,
    pub universe_id: u64,
    /// `publish` or `restrict`.
    pub kind: &'a str,
    pub roblox_id: u64,
    pub discord_id: u64,
    /// `ban` or `unban`.
    pub action: &'a str,
    /// `discord` or `api`.
    pub origin: &'a str,
    pub key_prefix: Option<&'a str>,
    pub created_at: DateTime<Utc>,
    /// When it is first due.
    pub due_at: DateTime<Utc>,
}

/// A queued push.
#[derive(Debug, Clone)]
pub struct PushEvent {
    pub id: i64,
    pub guild_id: u64,
    pub universe_id: u64,
    pub kind: String,
    pub roblox_id: u64,
    pub discord_id: u64,
    pub action: String,
    pub origin: String,
    pub key_prefix: Option<String>,
    pub created_at: DateTime<Utc>,
    pub state: String,
    pub next_attempt_at: DateTime<Utc>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRowP {
    roblox_push_event_id: i64,
    guild_id: i64,
    universe_id: i64,
    kind: String,
    roblox_id: i64,
    discord_id: i64,
    action: String,
    origin: String,
    key_prefix: Option<String>,
    created_at: i64,
    state: String,
    next_attempt_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl From<EventRowP> for PushEvent {
    fn from(r: EventRowP) -> Self {
        Self {
            id: r.roblox_push_event_id,
            guild_id: id_from_sql(r.guild_id),
            universe_id: id_from_sql(r.universe_id),
            kind: r.kind,
            roblox_id: id_from_sql(r.roblox_id),
            discord_id: id_from_sql(r.discord_id),
            action: r.action,
            origin: r.origin,
            key_prefix: r.key_prefix,
            created_at: from_millis(r.created_at),
            state: r.state,
            next_attempt_at: from_millis(r.next_attempt_at),
            attempts: r.attempts,
            last_error: r.last_error,
        }
    }
}

const PUSH_COLUMNS: &str = "roblox_push_event_id, guild_id, universe_id, kind, roblox_id, discord_id, action, origin, \
     key_prefix, created_at, state, next_attempt_at, cast(attempts as bigint) as attempts, last_error";

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushNext {
    Done,
    GiveUp,
    RetryAt(DateTime<Utc>),
}

/// The universe and secret a key is delivered into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDelivery {
    pub guild_id: u64,
    pub universe_id: u64,
    pub secret_name: String,
}

impl Store {
    /// Sets (or replaces) a guild's push setting.
    pub async fn put_roblox_push(
        &self,
        guild_id: u64,
        universe_id: u64,
        mode: &str,
        topic: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query(
                "insert into roblox_push (guild_id, universe_id, mode, topic, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $5) \
                 on conflict (guild_id) do update set universe_id = excluded.universe_id, mode = excluded.mode, \
                 topic = excluded.topic, updated_at = excluded.updated_at",
            )
            .bind(id_to_sql(guild_id))
            .bind(id_to_sql(universe_id))
            .bind(mode)
            .bind(topic)
            .bind(to_millis(now))
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }

    /// A guild's push setting.
    pub async fn roblox_push(&self, guild_id: u64) -> anyhow::Result<Option<PushSetting>> {
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, SettingRow>(
                "select guild_id, universe_id, mode, topic, updated_at from roblox_push where guild_id = $1",
            )
            .bind(id_to_sql(guild_id))
            .fetch_optional(&mut *c)
            .await?
        });
        Ok(row.map(PushSetting::from))
    }

    /// Removes a guild's push setting (its pending pushes are dropped);
    /// whether it had one.
    pub async fn delete_roblox_push(&self, guild_id: u64) -> anyhow::Result<bool> {
        let done = db_run!(transaction self, |c| {
            sqlx::query("delete from roblox_push_event where guild_id = $1 and state = 'pending'")
                .bind(id_to_sql(guild_id))
                .execute(&mut *c)
                .await?;
            sqlx::query("delete from roblox_push where guild_id = $1")
                .bind(id_to_sql(guild_id))
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Queues pushes (all or none).
    pub async fn queue_roblox_pushes(&self, pushes: &[NewPush<'_>]) -> anyhow::Result<()> {
        db_run!(transaction self, |c| {
            for p in pushes {
                sqlx::query(
                    "insert into roblox_push_event (guild_id, universe_id, kind, roblox_id, discord_id, action, origin, \
                         key_prefix, created_at, next_attempt_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(id_to_sql(p.guild_id))
                .bind(id_to_sql(p.universe_id))
                .bind(p.kind)
                .bind(id_to_sql(p.roblox_id))
                .bind(id_to_sql(p.discord_id))
                .bind(p.action)
                .bind(p.origin)
                .bind(p.key_prefix)
                .bind(to_millis(p.created_at))
                .bind(to_millis(p.due_at))
                .execute(&mut *c)
                .await?;
            }
        });
        Ok(())
    }

    /// Pushes due at `now` and unclaimed, oldest first. A restriction waits
    /// behind an older pending one for the same user (they go in order).
    pub async fn due_roblox_pushes(&self, now: DateTime<Utc>, limit: u32) -> anyhow::Result<Vec<PushEvent>> {
        let sql = format!(
            "select {PUSH_COLUMNS} from roblox_push_event e where state = 'pending' and next_attempt_at <= $1 \
             and (claimed_until is null or claimed_until <= $1) \
             and not exists (select 1 from roblox_push_event o where o.state = 'pending' and o.kind = e.kind \
                 and e.kind = 'restrict' and o.universe_id = e.universe_id and o.roblox_id = e.roblox_id \
                 and o.roblox_push_event_id < e.roblox_push_event_id) \
             order by roblox_push_event_id limit $2"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRowP>(&sql).bind(to_millis(now)).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        Ok(rows.into_iter().map(PushEvent::from).collect())
    }

    /// A guild's pending publish pushes (due or not), oldest first: what one
    /// message may pack.
    pub async fn pending_publishes(&self, guild_id: u64, limit: u32) -> anyhow::Result<Vec<PushEvent>> {
        self.guild_pushes(guild_id, "and kind = 'publish' and state = 'pending' order by roblox_push_event_id", limit)
            .await
    }

    /// A guild's pushes matching `rest` (more conditions, then the order).
    async fn guild_pushes(&self, guild_id: u64, rest: &str, limit: u32) -> anyhow::Result<Vec<PushEvent>> {
        let sql = format!("select {PUSH_COLUMNS} from roblox_push_event where guild_id = $1 {rest} limit $2");
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRowP>(&sql)
                .bind(id_to_sql(guild_id))
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows.into_iter().map(PushEvent::from).collect())
    }

    /// When the next pending push falls due (claimed ones when their claim
    /// runs out).
    pub async fn next_roblox_push_at(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = db_run!(read self, |c| {
            sqlx::query_scalar(
                "select min(case when claimed_until > next_attempt_at then claimed_until else next_attempt_at end) \
                 from roblox_push_event where state = 'pending'",
            )
            .fetch_one(&mut *c)
            .await?
        });
        Ok(at.map(from_millis))
    }

    /// Claims a pending push until `until`; whether this caller got it.
    pub async fn claim_roblox_push(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        let claimed = db_run!(write self, |c| {
            sqlx::query(
                "update roblox_push_event set claimed_until = $1 where roblox_push_event_id = $2 \
                 and state = 'pending' and (claimed_until is null or claimed_until <= $3)",
            )
            .bind(to_millis(until))
            .bind(id)
            .bind(to_millis(now))
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Records an attempt's outcome and releases the claim; `sent`: a
    /// restriction update was sent now (it counts against Roblox's 2 a minute).
    pub async fn finish_roblox_push(
        &self,
        id: i64,
        next: PushNext,
        error: Option<&str>,
        sent: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let (state, next_at, done_at) = match next {
            PushNext::Done => ("done", None, Some(to_millis(now))),
            PushNext::GiveUp => ("failed", None, Some(to_millis(now))),
            PushNext::RetryAt(at) => ("pending", Some(to_millis(at)), None),
        };
        db_run!(write self, |c| {
            sqlx::query(
                "update roblox_push_event set state = $1, next_attempt_at = coalesce($2, next_attempt_at), \
                 done_at = $3, claimed_until = null, attempts = attempts + 1, last_error = $4, \
                 sent_at = case when $5 then $6 else sent_at end where roblox_push_event_id = $7",
            )
            .bind(state)
            .bind(next_at)
            .bind(done_at)
            .bind(error)
            .bind(sent)
            .bind(to_millis(now))
            .bind(id)
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }

    /// When restriction updates of a user in a universe were sent since
    /// `since`, oldest first.
    pub async fn restriction_updates_since(
        &self,
        universe_id: u64,
        roblox_id: u64,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DateTime<Utc>>> {
        let rows: Vec<i64> = db_run!(read self, |c| {
            sqlx::query_scalar(
                "select sent_at from roblox_push_event where universe_id = $1 and roblox_id = $2 \
                 and kind = 'restrict' and sent_at is not null and sent_at > $3 order by sent_at",
            )
            .bind(id_to_sql(universe_id))
            .bind(id_to_sql(roblox_id))
            .bind(to_millis(since))
            .fetch_all(&mut *c)
            .await?
        });
        Ok(rows.into_iter().map(from_millis).collect())
    }

    /// Removes pushes finished (sent or given up) before `before`.
    pub async fn prune_roblox_pushes(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(db_run!(write self, |c| {
            sqlx::query("delete from roblox_push_event where state <> 'pending' and done_at < $1")
                .bind(to_millis(before))
                .execute(c)
                .await?
                .rows_affected()
        }))
    }

    /// A guild's recent pushes, newest first (`roblox push show`).
    pub async fn recent_roblox_pushes(&self, guild_id: u64, limit: u32) -> anyhow::Result<Vec<PushEvent>> {
        self.guild_pushes(guild_id, "order by roblox_push_event_id desc", limit).await
    }

    /// A guild's ban and unban audit events since `since`, newest first,
    /// pending API writes included (the gateway may report the ban before
    /// the writer settles its event): how a push names its origin.
    pub async fn recent_ban_events(&self, guild_id: u64, since: DateTime<Utc>) -> anyhow::Result<Vec<AuditEvent>> {
        let sql = format!(
            "select {EVENT_COLUMNS} from audit_event where guild_id = $1 and created_at >= $2 \
             and action in ('ban.added', 'ban.removed') and (outcome is null or outcome <> 'failed') \
             order by audit_event_id desc limit 200"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, EventRow>(&sql)
                .bind(id_to_sql(guild_id))
                .bind(to_millis(since))
                .fetch_all(&mut *c)
                .await?
        });
        rows::events(rows)
    }

    /// Records the universe and secret a key is delivered into.
    pub async fn put_key_delivery(&self, key_id: &str, d: &KeyDelivery, now: DateTime<Utc>) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query(
                "insert into roblox_key_delivery (api_key_id, guild_id, universe_id, secret_name, delivered_at) \
                 values ($1, $2, $3, $4, $5) on conflict (api_key_id) do update set universe_id = excluded.universe_id, \
                 secret_name = excluded.secret_name, delivered_at = excluded.delivered_at",
            )
            .bind(key_id)
            .bind(id_to_sql(d.guild_id))
            .bind(id_to_sql(d.universe_id))
            .bind(&d.secret_name)
            .bind(to_millis(now))
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }

    /// Where a key is delivered, if it is.
    pub async fn key_delivery(&self, key_id: &str) -> anyhow::Result<Option<KeyDelivery>> {
        let row: Option<(i64, i64, String)> = db_run!(read self, |c| {
            sqlx::query_as(
                "select guild_id, universe_id, secret_name from roblox_key_delivery where api_key_id = $1",
            )
            .bind(key_id)
            .fetch_optional(&mut *c)
            .await?
        });
        Ok(row.map(|(g, u, s)| KeyDelivery { guild_id: id_from_sql(g), universe_id: id_from_sql(u), secret_name: s }))
    }
}
