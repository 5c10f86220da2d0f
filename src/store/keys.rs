//! The keys (`api_key`), their change log (`key_change`) and the guild
//! settings (`guild_setting`): each statement once, for both backends (see
//! `db_run!`). Each change runs in one write transaction with its audit
//! event; its first statement is the write, so SQLite's transaction takes
//! the write lock at once, and PostgreSQL's locks the row it changes.

use chrono::{DateTime, Utc};

use super::audit::insert_audit_in;
use super::rows::{self, id_from_sql, id_to_sql, to_millis, KeyRow, TypedIndexRow, INDEX_COLUMNS, KEY_COLUMNS};
use super::{Conn, Store};
use crate::audit::NewAuditEvent;
use crate::keys::{AllowedIps, AllowedRoles, Environment, KeyHash, KeyId, KeyRecord, Scopes};

/// The id-valued columns of `guild_setting` (named here, never from input).
#[derive(Clone, Copy)]
pub(crate) enum GuildSetting {
    AuditChannel,
    LeakGuardRule,
}

impl GuildSetting {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AuditChannel => "audit_channel_id",
            Self::LeakGuardRule => "leak_guard_rule_id",
        }
    }
}

/// A key about to be inserted.
pub struct NewKeyRow<'a> {
    pub id: &'a KeyId,
    pub guild_id: u64,
    pub name: &'a str,
    pub hash: KeyHash,
    pub prefix: &'a str,
    pub environment: Environment,
    pub scopes: &'a Scopes,
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: u32,
    pub allowed_ips: &'a AllowedIps,
    pub allowed_roles: &'a AllowedRoles,
    pub ban_budget: Option<u32>,
    pub role_budget: Option<u32>,
    /// The Discord user whose powers bound the key (`None`: the operator CLI).
    pub maker_id: Option<u64>,
}

/// A new secret for an existing key.
pub struct Rotation<'a> {
    pub id: &'a KeyId,
    pub hash: KeyHash,
    pub prefix: &'a str,
    /// When the old secret stops working; `None` stops it now.
    pub previous_until: Option<DateTime<Utc>>,
    /// For a rotation "until unused": how long the old secret may go
    /// unpresented (milliseconds) before it is retired, `previous_until`
    /// being the latest it may work.
    pub previous_idle_ms: Option<i64>,
}

/// An old secret's latest presentation seen by this instance, to write
/// (`Store::record_previous_seen`).
pub struct PreviousSeen {
    pub id: KeyId,
    /// The old secret presented: a later rotation's old secret is another.
    pub hash: KeyHash,
    pub at: DateTime<Utc>,
    /// The client address it came from.
    pub ip: String,
}

/// Keys changed since a point in the key change log.
#[derive(Debug)]
pub struct KeyChanges {
    /// Each changed key once.
    pub keys: Vec<KeyId>,
    /// The newest log entry these cover.
    pub through: i64,
}

impl KeyChanges {
    /// What a read of the log says: `rows` are the entries after `after`
    /// (up to `limit + 1` of them, oldest first), `oldest` the oldest entry
    /// the log still holds. `None` when the caller must reload whole.
    pub(super) fn from_log(after: i64, oldest: Option<i64>, rows: Vec<(i64, String)>, limit: usize) -> Option<Self> {
        if rows.len() > limit || (!rows.is_empty() && oldest.is_some_and(|oldest| oldest > after + 1)) {
            return None;
        }
        let through = rows.last().map_or(after, |r| r.0);
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let keys = rows.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| KeyId::from_stored(id));
        Some(KeyChanges { keys: keys.collect(), through })
    }
}

/// What the in-memory index keeps of a key: what verification and its
/// callers need (no bookkeeping columns), with the hashes presented tokens
/// are matched against.
pub struct IndexRow {
    pub id: KeyId,
    pub guild_id: u64,
    pub name: String,
    pub prefix: String,
    pub environment: Environment,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: u32,
    pub allowed_ips: AllowedIps,
    pub allowed_roles: AllowedRoles,
    pub suspended: bool,
    pub ban_budget: Option<u32>,
    pub role_budget: Option<u32>,
    pub hash: KeyHash,
    /// A rotated-out secret's hash and when it stops working.
    pub previous: Option<(KeyHash, DateTime<Utc>)>,
}

impl Store {
    /// Inserts the key only if the guild has fewer than `max_active` active
    /// keys, atomically: concurrent creates (from any instance) can never
    /// exceed it. Returns false when the limit is reached.
    ///
    /// The count and the insert are one statement; on PostgreSQL it runs
    /// under a per-guild advisory lock held to commit, so concurrent
    /// creates for one guild take turns and each counts what the one before
    /// committed (SQLite's single writer serialises them already).
    pub async fn insert_key_within_limit(
        &self,
        row: &NewKeyRow<'_>,
        max_active: u32,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, lock_guild_keys = row.guild_id, |tx| {
            let inserted = sqlx::query(
                "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, \
                     created_at, created_by, expires_at, rate_limit_per_minute, allowed_ips, allowed_roles, \
                     ban_budget, role_budget, maker_id, updated_at) \
                 select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15, $16, $17, $8 \
                 where (select count(*) from api_key where guild_id = $2 and revoked_at is null \
                        and (expires_at is null or expires_at > $8)) < $13",
            )
            .bind(row.id.as_str())
            .bind(id_to_sql(row.guild_id))
            .bind(row.name)
            .bind(&row.hash.0[..])
            .bind(row.prefix)
            .bind(row.environment.as_str())
            .bind(row.scopes.to_storage())
            .bind(to_millis(now))
            .bind(row.created_by)
            .bind(row.expires_at.map(to_millis))
            .bind(i64::from(row.rate_limit_per_minute))
            .bind(row.allowed_ips.to_storage())
            .bind(i64::from(max_active))
            .bind(row.allowed_roles.to_storage())
            .bind(row.ban_budget.map(i64::from))
            .bind(row.role_budget.map(i64::from))
            .bind(row.maker_id.map(id_to_sql))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Active keys of a guild right now.
    pub async fn count_active(&self, guild_id: u64, now: DateTime<Utc>) -> anyhow::Result<u32> {
        let (n,): (i64,) = db_run!(read self, |c| {
            sqlx::query_as(
                "select count(*) from api_key where guild_id = $1 and revoked_at is null \
                 and (expires_at is null or expires_at > $2)",
            )
            .bind(id_to_sql(guild_id))
            .bind(to_millis(now))
            .fetch_one(&mut *c)
            .await?
        });
        Ok(n as u32)
    }

    /// A guild's keys, oldest first.
    pub async fn list_keys(&self, guild_id: u64) -> anyhow::Result<Vec<KeyRecord>> {
        let sql = format!("select {KEY_COLUMNS} from api_key where guild_id = $1 order by created_at, api_key_id");
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, KeyRow>(&sql).bind(id_to_sql(guild_id)).fetch_all(&mut *c).await?
        });
        rows::records(rows)
    }

    /// Keys matching `reference` as an id, a display prefix or an exact name,
    /// within one guild or (for the operator CLI) all of them.
    pub async fn find_keys(&self, guild_id: Option<u64>, reference: &str) -> anyhow::Result<Vec<KeyRecord>> {
        let sql = format!(
            "select {KEY_COLUMNS} from api_key \
             where (cast($1 as bigint) is null or guild_id = $1) and (api_key_id = $2 or prefix = $2 or name = $2) \
             order by created_at, api_key_id"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, KeyRow>(&sql).bind(guild_id.map(id_to_sql)).bind(reference).fetch_all(&mut *c).await?
        });
        rows::records(rows)
    }

    /// One key, if it exists.
    pub async fn get_key(&self, id: &KeyId) -> anyhow::Result<Option<KeyRecord>> {
        let sql = format!("select {KEY_COLUMNS} from api_key where api_key_id = $1");
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, KeyRow>(&sql).bind(id.as_str()).fetch_optional(&mut *c).await?
        });
        row.map(KeyRecord::try_from).transpose()
    }

    /// How many keys there are (to size the index).
    pub async fn count_keys(&self) -> anyhow::Result<u64> {
        let (n,): (i64,) = db_run!(read self, |c| {
            sqlx::query_as("select count(*) from api_key").fetch_one(&mut *c).await?
        });
        Ok(n as u64)
    }

    /// Every key as the index keeps it, handed to `each` one at a time,
    /// all from one snapshot, so a million keys never sit in memory as rows
    /// all at once. How is each backend's own (its `dialect`): SQLite reads
    /// pages of rows as one JSON text each, PostgreSQL streams typed rows.
    pub async fn scan_index_rows(&self, each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
        db_run!(snapshot self, |tx| { dialect::scan_index_rows(tx, each).await? });
        Ok(())
    }

    /// One key as the index keeps it (the index applies changes from it).
    pub async fn index_row(&self, id: &KeyId) -> anyhow::Result<Option<IndexRow>> {
        let sql = format!("select {INDEX_COLUMNS} from api_key where api_key_id = $1");
        let row = db_run!(read self, |c| {
            sqlx::query_as::<_, TypedIndexRow>(&sql).bind(id.as_str()).fetch_optional(&mut *c).await?
        });
        row.map(IndexRow::try_from).transpose()
    }

    /// The newest entry of the key change log (0 when it is empty): where a
    /// full load of the index starts following it.
    pub async fn key_change_head(&self) -> anyhow::Result<i64> {
        let (seq,): (i64,) = db_run!(read self, |c| {
            sqlx::query_as("select coalesce(max(seq), 0) from key_change").fetch_one(&mut *c).await?
        });
        Ok(seq)
    }

    /// The keys changed after log entry `after`, oldest change first, each
    /// once, with the newest entry read. `None` when the log no longer
    /// holds every entry since `after` (the oldest were dropped) or holds
    /// more than `limit`: the caller reloads whole instead. One snapshot;
    /// on PostgreSQL the log's entries commit in the order of their numbers
    /// (see the migration), so nothing read later can fall behind `through`.
    pub async fn key_changes_since(&self, after: i64, limit: usize) -> anyhow::Result<Option<KeyChanges>> {
        let (oldest, rows) = db_run!(snapshot self, |tx| {
            let (oldest,): (Option<i64>,) =
                sqlx::query_as("select min(seq) from key_change").fetch_one(&mut *tx).await?;
            let rows: Vec<(i64, String)> =
                sqlx::query_as("select seq, api_key_id from key_change where seq > $1 order by seq limit $2")
                    .bind(after)
                    .bind(limit as i64 + 1)
                    .fetch_all(&mut *tx)
                    .await?;
            (oldest, rows)
        });
        Ok(KeyChanges::from_log(after, oldest, rows, limit))
    }

    /// Records the guild's leak-guard AutoMod rule (`None`: the guard is off)
    /// with its audit event.
    pub async fn set_leak_guard_rule(
        &self,
        guild_id: u64,
        rule_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<()> {
        db_run!(transaction self, |tx| {
            set_guild_setting_in(&mut *tx, guild_id, GuildSetting::LeakGuardRule, rule_id, now).await?;
            insert_audit_in(&mut *tx, event, now).await?;
        });
        Ok(())
    }

    /// The guild's leak-guard AutoMod rule, if the guard is on.
    pub async fn leak_guard_rule(&self, guild_id: u64) -> anyhow::Result<Option<u64>> {
        self.guild_setting(guild_id, GuildSetting::LeakGuardRule).await
    }

    /// The guild's audit channel, if posts are on.
    pub async fn audit_channel(&self, guild_id: u64) -> anyhow::Result<Option<u64>> {
        self.guild_setting(guild_id, GuildSetting::AuditChannel).await
    }

    /// Reads one id-valued column of the guild's `guild_setting` row.
    async fn guild_setting(&self, guild_id: u64, column: GuildSetting) -> anyhow::Result<Option<u64>> {
        let sql = format!("select {} from guild_setting where guild_id = $1", column.as_str());
        let row: Option<(Option<i64>,)> = db_run!(read self, |c| {
            sqlx::query_as(&sql).bind(id_to_sql(guild_id)).fetch_optional(&mut *c).await?
        });
        Ok(row.and_then(|(v,)| v).map(id_from_sql))
    }

    /// Marks a key revoked unless it already is. Returns false if it was.
    pub async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let revoked = sqlx::query(
                "update api_key set revoked_at = $1, updated_at = $1, previous_hash = null, \
                 previous_hash_expires_at = null, previous_idle_ms = null \
                 where api_key_id = $2 and revoked_at is null",
            )
            .bind(to_millis(now))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            if revoked.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Suspends (`true`) or resumes (`false`) a key that is not revoked or
    /// expired. Returns false when the key is not in a state to change
    /// (already so, revoked, expired or gone).
    pub async fn set_suspended(
        &self,
        id: &KeyId,
        suspend: bool,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let changed = sqlx::query(
                "update api_key set suspended_at = case when $3 then $1 else null end, updated_at = $1 \
                 where api_key_id = $2 and revoked_at is null and (expires_at is null or expires_at > $1) \
                 and (suspended_at is null) = $3",
            )
            .bind(to_millis(now))
            .bind(id.as_str())
            .bind(suspend)
            .execute(&mut *tx)
            .await?;
            if changed.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// The keys bounded by a maker that still hold a place (neither revoked
    /// nor expired at `now`; suspended ones included): in one guild, of one
    /// maker there when `maker_id` is given, or everywhere (the periodic
    /// check), in guild order.
    pub async fn maker_bound_keys(
        &self,
        guild_id: Option<u64>,
        maker_id: Option<u64>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<KeyRecord>> {
        let sql = format!(
            "select {KEY_COLUMNS} from api_key \
             where maker_id is not null and revoked_at is null and (expires_at is null or expires_at > $3) \
             and (cast($1 as bigint) is null or guild_id = $1) and (cast($2 as bigint) is null or maker_id = $2) \
             order by guild_id, maker_id, created_at, api_key_id"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, KeyRow>(&sql)
                .bind(guild_id.map(id_to_sql))
                .bind(maker_id.map(id_to_sql))
                .bind(to_millis(now))
                .fetch_all(&mut *c)
                .await?
        });
        rows::records(rows)
    }

    /// Gives a key a new maker and lifts its suspension (an admin adopting
    /// it), unless it is revoked or expired. Returns false if it is.
    pub async fn adopt_key(
        &self,
        id: &KeyId,
        maker_id: u64,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let adopted = sqlx::query(
                "update api_key set maker_id = $2, suspended_at = null, updated_at = $3 \
                 where api_key_id = $1 and revoked_at is null and (expires_at is null or expires_at > $3)",
            )
            .bind(id.as_str())
            .bind(id_to_sql(maker_id))
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
            if adopted.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Deletes a key only if it is revoked or expired. Returns false if not.
    pub async fn delete_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let deleted = sqlx::query(
                "delete from api_key where api_key_id = $1 \
                 and (revoked_at is not null or (expires_at is not null and expires_at <= $2))",
            )
            .bind(id.as_str())
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Gives an active key a new secret. Returns false if it is not active.
    pub async fn rotate_key(
        &self,
        r: &Rotation<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let rotated = sqlx::query(
                "update api_key set \
                     previous_hash = case when cast($4 as bigint) is null then null else key_hash end, \
                     previous_hash_expires_at = $4, \
                     previous_idle_ms = $6, \
                     previous_rotated_at = case when cast($6 as bigint) is null then null else $5 end, \
                     previous_seen_at = null, previous_seen_ip = null, \
                     key_hash = $2, prefix = $3, updated_at = $5 \
                 where api_key_id = $1 and revoked_at is null and (expires_at is null or expires_at > $5)",
            )
            .bind(r.id.as_str())
            .bind(&r.hash.0[..])
            .bind(r.prefix)
            .bind(r.previous_until.map(to_millis))
            .bind(to_millis(now))
            .bind(r.previous_idle_ms)
            .execute(&mut *tx)
            .await?;
            if rotated.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Writes when (and from where) old secrets were last presented, one
    /// update a key, in one transaction. A time never moves backwards,
    /// whichever instance writes last; a presentation of an old secret
    /// that a later rotation replaced (or that was retired) changes nothing.
    pub async fn record_previous_seen(&self, batch: &[PreviousSeen]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        db_run!(transaction self, |tx| {
            for seen in batch {
                sqlx::query(
                    "update api_key set previous_seen_at = $3, previous_seen_ip = $4 \
                     where api_key_id = $1 and previous_hash = $2 \
                     and (previous_seen_at is null or previous_seen_at < $3)",
                )
                .bind(seen.id.as_str())
                .bind(&seen.hash.0[..])
                .bind(to_millis(seen.at))
                .bind(&seen.ip)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    /// The keys in a rotation "until unused" whose old secret is due to be
    /// retired at `now` (as [`Self::complete_rotation`] decides). Reads
    /// only such keys (a handful: a partial index, see migration 0245).
    pub async fn rotations_due(&self, now: DateTime<Utc>, margin_ms: i64) -> anyhow::Result<Vec<KeyRecord>> {
        let sql = format!(
            "select {KEY_COLUMNS} from api_key \
             where previous_idle_ms is not null and previous_hash is not null \
             and (previous_hash_expires_at <= $1 \
                  or coalesce(previous_seen_at, previous_rotated_at) + previous_idle_ms + $2 <= $1) \
             order by api_key_id"
        );
        let rows: Vec<KeyRow> = db_run!(read self, |c| {
            sqlx::query_as(&sql).bind(to_millis(now)).bind(margin_ms).fetch_all(&mut *c).await?
        });
        rows::records(rows)
    }

    /// Retires a rotation's old secret if it is still due at `now`: not
    /// presented for its idle time plus `margin_ms` (since the rotation,
    /// if never), or past its latest time. One conditional update with its
    /// audit event, so of two instances deciding at once one records it.
    /// Returns whether this call retired it.
    pub async fn complete_rotation(
        &self,
        id: &KeyId,
        now: DateTime<Utc>,
        margin_ms: i64,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |tx| {
            let retired = sqlx::query(
                "update api_key set previous_hash = null, previous_hash_expires_at = null, \
                     previous_idle_ms = null, updated_at = $2 \
                 where api_key_id = $1 and previous_idle_ms is not null and previous_hash is not null \
                 and (previous_hash_expires_at <= $2 \
                      or coalesce(previous_seen_at, previous_rotated_at) + previous_idle_ms + $3 <= $2)",
            )
            .bind(id.as_str())
            .bind(to_millis(now))
            .bind(margin_ms)
            .execute(&mut *tx)
            .await?;
            if retired.rows_affected() != 1 {
                return Ok(false);
            }
            insert_audit_in(&mut *tx, event, now).await?;
            true
        }))
    }

    /// Adds batched request counts and last-used times, in one transaction.
    /// A last-used time never moves backwards, whichever instance flushes
    /// last. The statements are each backend's own (its `dialect`): one
    /// update a key on SQLite, one `unnest` for the batch on PostgreSQL.
    pub async fn record_usage(&self, batch: &[(KeyId, DateTime<Utc>, u64)]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        db_run!(transaction self, |tx| { dialect::record_usage(tx, batch).await? });
        Ok(())
    }
}

/// Sets one id-valued column of the guild's `guild_setting` row.
pub(super) async fn set_guild_setting_in(
    conn: impl Into<Conn<'_>>,
    guild_id: u64,
    column: GuildSetting,
    value: Option<u64>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let column = column.as_str();
    let sql = format!(
        "insert into guild_setting (guild_id, {column}, created_at, updated_at) values ($1, $2, $3, $3) \
         on conflict (guild_id) do update set {column} = $2, updated_at = $3"
    );
    db_run!(conn conn, |c| {
        sqlx::query(&sql).bind(id_to_sql(guild_id)).bind(value.map(id_to_sql)).bind(to_millis(now)).execute(c).await?;
    });
    Ok(())
}
