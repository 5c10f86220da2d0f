//! SQL for `api_key` and `guild_setting`. Each change runs in one
//! transaction with its audit event; its first statement is the write, so the
//! transaction takes SQLite's write lock at once and concurrent changes are
//! serialised by the database itself.

use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::SqliteStore;
use crate::audit::NewAuditEvent;
use crate::keys::{KeyId, KeyRecord};
use crate::store::rows::{self, id_from_sql, id_to_sql, to_millis, KeyRow, KEY_COLUMNS};
use crate::store::{AuditChannelBefore, GuildSetting, IndexRow, KeyChanges, NewKeyRow, Rotation};

/// Index rows as one JSON array per query: sqlx hands rows over one at a
/// time between threads, which made loading a million keys take half a
/// minute; one text value per page of rows takes a few seconds.
const INDEX_JSON: &str = "json_group_array(json_array(api_key_id, guild_id, name, prefix, environment, scopes, \
     expires_at, revoked_at, rate_limit_per_minute, allowed_ips, hex(key_hash), hex(previous_hash), \
     previous_hash_expires_at, allowed_roles, suspended_at is not null, ban_budget, role_budget))";

impl SqliteStore {
    /// Inserts the key only if the guild has fewer than `max_active` active
    /// keys, in one statement, so concurrent creates can never exceed it.
    /// Returns false when the limit is reached.
    pub async fn insert_key_within_limit(
        &self,
        row: &NewKeyRow<'_>,
        max_active: u32,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        let inserted = sqlx::query(
            "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
                 created_by, expires_at, rate_limit_per_minute, allowed_ips, allowed_roles, ban_budget, role_budget, \
                 updated_at) \
             select ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?14, ?15, ?16, ?8 \
             where (select count(*) from api_key where guild_id = ?2 and revoked_at is null \
                    and (expires_at is null or expires_at > ?8)) < ?13",
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
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        Self::insert_audit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Active keys of a guild right now.
    pub async fn count_active(&self, guild_id: u64, now: DateTime<Utc>) -> anyhow::Result<u32> {
        let (n,): (i64,) = sqlx::query_as(
            "select count(*) from api_key where guild_id = ? and revoked_at is null \
             and (expires_at is null or expires_at > ?)",
        )
        .bind(id_to_sql(guild_id))
        .bind(to_millis(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u32)
    }

    /// A guild's keys, oldest first.
    pub async fn list_keys(&self, guild_id: u64) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "select {KEY_COLUMNS} from api_key where guild_id = ? order by created_at, api_key_id"
        ))
        .bind(id_to_sql(guild_id))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    /// Keys matching `reference` as an id, a display prefix or an exact name,
    /// within one guild or (for the operator CLI) all of them.
    pub async fn find_keys(&self, guild_id: Option<u64>, reference: &str) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "select {KEY_COLUMNS} from api_key \
             where (?1 is null or guild_id = ?1) and (api_key_id = ?2 or prefix = ?2 or name = ?2) \
             order by created_at, api_key_id"
        ))
        .bind(guild_id.map(id_to_sql))
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    pub async fn get_key(&self, id: &KeyId) -> anyhow::Result<Option<KeyRecord>> {
        let row = sqlx::query_as::<_, KeyRow>(&format!("select {KEY_COLUMNS} from api_key where api_key_id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    /// How many keys there are (to size the index).
    pub async fn count_keys(&self) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from api_key").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    /// Every key as the index keeps it, handed to `each` one at a time:
    /// pages of rows from one read transaction (one snapshot), so a million
    /// keys never sit in memory as rows all at once.
    pub async fn scan_index_rows(&self, mut each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
        const PAGE: i64 = 8192;
        let mut tx = self.pool.begin().await?;
        let mut after = i64::MIN;
        loop {
            let (n, last, json): (i64, Option<i64>, String) = sqlx::query_as(&format!(
                "select count(*), max(rid), {INDEX_JSON} from \
                 (select rowid as rid, * from api_key where rowid > ? order by rowid limit ?)"
            ))
            .bind(after)
            .bind(PAGE)
            .fetch_one(&mut *tx)
            .await?;
            for row in rows::index_rows(&json)? {
                each(row);
            }
            match last {
                Some(last) if n == PAGE => after = last,
                _ => break,
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// One key as the index keeps it (the index applies this process's
    /// changes from it).
    pub async fn index_row(&self, id: &KeyId) -> anyhow::Result<Option<IndexRow>> {
        let (json,): (String,) = sqlx::query_as(&format!("select {INDEX_JSON} from api_key where api_key_id = ?"))
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(rows::index_rows(&json)?.into_iter().next())
    }

    /// The newest entry of the key change log (0 when it is empty): where a
    /// full load of the index starts following it.
    pub async fn key_change_head(&self) -> anyhow::Result<i64> {
        let (seq,): (i64,) =
            sqlx::query_as("select coalesce(max(seq), 0) from key_change").fetch_one(&self.pool).await?;
        Ok(seq)
    }

    /// The keys changed after log entry `after`, oldest change first, each
    /// once, with the newest entry read. `None` when the log no longer
    /// holds every entry since `after` (the oldest were dropped) or holds
    /// more than `limit`: the caller reloads whole instead.
    pub async fn key_changes_since(&self, after: i64, limit: usize) -> anyhow::Result<Option<KeyChanges>> {
        let mut tx = self.pool.begin().await?;
        let (oldest,): (Option<i64>,) = sqlx::query_as("select min(seq) from key_change").fetch_one(&mut *tx).await?;
        let rows: Vec<(i64, String)> =
            sqlx::query_as("select seq, api_key_id from key_change where seq > ? order by seq limit ?")
                .bind(after)
                .bind(limit as i64 + 1)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
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
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        Self::set_guild_setting_in(&mut tx, guild_id, GuildSetting::LeakGuardRule, rule_id, now).await?;
        Self::insert_audit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets one id-valued column of the guild's `guild_setting` row.
    async fn set_guild_setting_in(
        tx: &mut sqlx::SqliteConnection,
        guild_id: u64,
        column: GuildSetting,
        value: Option<u64>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let column = column.as_str();
        sqlx::query(&format!(
            "insert into guild_setting (guild_id, {column}, created_at, updated_at) values (?1, ?2, ?3, ?3) \
             on conflict (guild_id) do update set {column} = ?2, updated_at = ?3"
        ))
        .bind(id_to_sql(guild_id))
        .bind(value.map(id_to_sql))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Reads one id-valued column of the guild's `guild_setting` row.
    pub async fn guild_setting(&self, guild_id: u64, column: GuildSetting) -> anyhow::Result<Option<u64>> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as(&format!("select {} from guild_setting where guild_id = ?", column.as_str()))
                .bind(id_to_sql(guild_id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(v,)| v).map(id_from_sql))
    }

    /// Runs one conditional write and, when it changed a row, its audit
    /// event, in one transaction (the write first, so the transaction holds
    /// the write lock at once). Returns whether a row changed.
    async fn write_audited<'q>(
        &self,
        write: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        let done = write.execute(&mut *tx).await?.rows_affected() == 1;
        if done {
            Self::insert_audit_in(&mut tx, event, now).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    /// Marks a key revoked unless it already is. Returns false if it was.
    pub async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set revoked_at = ?1, updated_at = ?1, previous_hash = null, \
             previous_hash_expires_at = null where api_key_id = ?2 and revoked_at is null",
        )
        .bind(to_millis(now))
        .bind(id.as_str());
        self.write_audited(write, now, event).await
    }

    /// Suspends (`Some(now)`) or resumes (`None`) a key that is not revoked
    /// or expired. Returns false when the key is not in a state to change
    /// (already so, revoked, expired or gone).
    pub async fn set_suspended(
        &self,
        id: &KeyId,
        suspend: bool,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set suspended_at = case when ?3 then ?1 else null end, updated_at = ?1 \
             where api_key_id = ?2 and revoked_at is null and (expires_at is null or expires_at > ?1) \
             and (suspended_at is null) = ?3",
        )
        .bind(to_millis(now))
        .bind(id.as_str())
        .bind(suspend);
        self.write_audited(write, now, event).await
    }

    /// Deletes a key only if it is revoked or expired. Returns false if not.
    pub async fn delete_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "delete from api_key where api_key_id = ?1 \
             and (revoked_at is not null or (expires_at is not null and expires_at <= ?2))",
        )
        .bind(id.as_str())
        .bind(to_millis(now));
        self.write_audited(write, now, event).await
    }

    /// Gives an active key a new secret. Returns false if it is not active.
    pub async fn rotate_key(
        &self,
        r: &Rotation<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set \
                 previous_hash = case when ?4 is null then null else key_hash end, \
                 previous_hash_expires_at = ?4, \
                 key_hash = ?2, prefix = ?3, updated_at = ?5 \
             where api_key_id = ?1 and revoked_at is null and (expires_at is null or expires_at > ?5)",
        )
        .bind(r.id.as_str())
        .bind(&r.hash.0[..])
        .bind(r.prefix)
        .bind(r.previous_until.map(to_millis))
        .bind(to_millis(now));
        self.write_audited(write, now, event).await
    }

    /// Adds batched request counts and last-used times, in one transaction.
    pub async fn record_usage(&self, batch: &[(KeyId, DateTime<Utc>, u64)]) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        for (id, at, count) in batch {
            sqlx::query(
                "update api_key set last_used_at = max(coalesce(last_used_at, 0), ?1), \
                 use_count = use_count + ?2 where api_key_id = ?3",
            )
            .bind(to_millis(*at))
            .bind(*count as i64)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

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
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        // Write first: the transaction then holds the write lock, and what
        // it reads next is the latest.
        let (previous,): (Option<i64>,) = sqlx::query_as(
            "insert into guild_setting (guild_id, audit_channel_id, created_at, updated_at) values (?1, null, ?2, ?2) \
             on conflict (guild_id) do update set updated_at = ?2 returning audit_channel_id",
        )
        .bind(id_to_sql(guild_id))
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await?;
        let previous = previous.map(id_from_sql);
        let off = match previous {
            None => Self::posts_off_in(&mut tx, guild_id, recent).await?,
            Some(_) => None,
        };
        let mut event = event.clone();
        event.details = details(&AuditChannelBefore { channel_id: previous, off });
        Self::set_guild_setting_in(&mut tx, guild_id, GuildSetting::AuditChannel, channel_id, now).await?;
        Self::insert_audit_in(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
