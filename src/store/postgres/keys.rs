//! SQL for `api_key` and `guild_setting` on PostgreSQL. Each change runs in
//! one transaction with its audit event. Where SQLite's single writer makes
//! a read-then-write safe, PostgreSQL takes a lock first: a per-guild
//! advisory lock for the key limit, the row itself for the rest.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::audit::NewAuditEvent;
use crate::keys::{KeyId, KeyRecord};
use crate::store::rows::{self, id_from_sql, id_to_sql, to_millis, KeyRow, KEY_COLUMNS};
use crate::store::{AuditChannelBefore, GuildSetting, IndexRow, KeyChanges, NewKeyRow, Rotation};

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl PgStore {
    /// Counts and inserts under a per-guild advisory lock held to commit:
    /// concurrent creates for one guild, from any instance, take turns, and
    /// each counts what the one before committed.
    pub async fn insert_key_within_limit(
        &self,
        row: &NewKeyRow<'_>,
        max_active: u32,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(2, ($1 % 2147483647)::int)")
            .bind(id_to_sql(row.guild_id))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "insert into api_key (api_key_id, guild_id, name, key_hash, prefix, environment, scopes, created_at, \
                 created_by, expires_at, rate_limit_per_minute, allowed_ips, allowed_roles, ban_budget, role_budget, \
                 updated_at) \
             select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15, $16, $8 \
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

    pub async fn count_active(&self, guild_id: u64, now: DateTime<Utc>) -> anyhow::Result<u32> {
        let (n,): (i64,) = sqlx::query_as(
            "select count(*) from api_key where guild_id = $1 and revoked_at is null \
             and (expires_at is null or expires_at > $2)",
        )
        .bind(id_to_sql(guild_id))
        .bind(to_millis(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u32)
    }

    pub async fn list_keys(&self, guild_id: u64) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "select {KEY_COLUMNS} from api_key where guild_id = $1 order by created_at, api_key_id"
        ))
        .bind(id_to_sql(guild_id))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    pub async fn find_keys(&self, guild_id: Option<u64>, reference: &str) -> anyhow::Result<Vec<KeyRecord>> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "select {KEY_COLUMNS} from api_key \
             where ($1::bigint is null or guild_id = $1) and (api_key_id = $2 or prefix = $2 or name = $2) \
             order by created_at, api_key_id"
        ))
        .bind(guild_id.map(id_to_sql))
        .bind(reference)
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    pub async fn get_key(&self, id: &KeyId) -> anyhow::Result<Option<KeyRecord>> {
        let row = sqlx::query_as::<_, KeyRow>(&format!("select {KEY_COLUMNS} from api_key where api_key_id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    pub async fn count_keys(&self) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from api_key").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    /// Pages of rows in key id order (the primary key's index, in the
    /// database's collation throughout), all from one repeatable-read
    /// snapshot.
    /// Streams one snapshot of every key as typed rows (no sort, no JSON:
    /// the driver decodes each row as it arrives; with a million keys this
    /// is several times faster than pages of JSON by id).
    pub async fn scan_index_rows(&self, mut each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
        use futures_util::TryStreamExt;
        let mut tx = self.pool.begin().await?;
        sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *tx).await?;
        {
            let sql = format!("select {} from api_key", rows::INDEX_COLUMNS);
            let mut stream = sqlx::query_as::<_, rows::TypedIndexRow>(&sql).fetch(&mut *tx);
            while let Some(row) = stream.try_next().await? {
                each(IndexRow::try_from(row)?);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn index_row(&self, id: &KeyId) -> anyhow::Result<Option<IndexRow>> {
        let sql = format!("select {} from api_key where api_key_id = $1", rows::INDEX_COLUMNS);
        let row = sqlx::query_as::<_, rows::TypedIndexRow>(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?;
        row.map(IndexRow::try_from).transpose()
    }

    pub async fn key_change_head(&self) -> anyhow::Result<i64> {
        let (seq,): (i64,) =
            sqlx::query_as("select coalesce(max(seq), 0) from key_change").fetch_one(&self.pool).await?;
        Ok(seq)
    }

    /// As SQLite's; the log's entries commit in the order of their numbers
    /// (see the migration), so nothing read later can fall behind `through`.
    pub async fn key_changes_since(&self, after: i64, limit: usize) -> anyhow::Result<Option<KeyChanges>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *tx).await?;
        let (oldest,): (Option<i64>,) = sqlx::query_as("select min(seq) from key_change").fetch_one(&mut *tx).await?;
        let rows: Vec<(i64, String)> =
            sqlx::query_as("select seq, api_key_id from key_change where seq > $1 order by seq limit $2")
                .bind(after)
                .bind(limit as i64 + 1)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(KeyChanges::from_log(after, oldest, rows, limit))
    }

    pub async fn set_leak_guard_rule(
        &self,
        guild_id: u64,
        rule_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::set_guild_setting_in(&mut tx, guild_id, GuildSetting::LeakGuardRule, rule_id, now).await?;
        Self::insert_audit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_guild_setting_in(
        tx: &mut sqlx::PgConnection,
        guild_id: u64,
        column: GuildSetting,
        value: Option<u64>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let column = column.as_str();
        sqlx::query(&format!(
            "insert into guild_setting (guild_id, {column}, created_at, updated_at) values ($1, $2, $3, $3) \
             on conflict (guild_id) do update set {column} = $2, updated_at = $3"
        ))
        .bind(id_to_sql(guild_id))
        .bind(value.map(id_to_sql))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    pub async fn guild_setting(&self, guild_id: u64, column: GuildSetting) -> anyhow::Result<Option<u64>> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as(&format!("select {} from guild_setting where guild_id = $1", column.as_str()))
                .bind(id_to_sql(guild_id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(v,)| v).map(id_from_sql))
    }

    /// One conditional write and, when it changed a row, its audit event,
    /// in one transaction. Returns whether a row changed.
    async fn write_audited(
        &self,
        write: PgQuery<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = write.execute(&mut *tx).await?.rows_affected() == 1;
        if done {
            Self::insert_audit_in(&mut tx, event, now).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    pub async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set revoked_at = $1, updated_at = $1, previous_hash = null, \
             previous_hash_expires_at = null where api_key_id = $2 and revoked_at is null",
        )
        .bind(to_millis(now))
        .bind(id.as_str());
        self.write_audited(write, now, event).await
    }

    pub async fn set_suspended(
        &self,
        id: &KeyId,
        suspend: bool,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set suspended_at = case when $3 then $1 else null end, updated_at = $1 \
             where api_key_id = $2 and revoked_at is null and (expires_at is null or expires_at > $1) \
             and (suspended_at is null) = $3",
        )
        .bind(to_millis(now))
        .bind(id.as_str())
        .bind(suspend);
        self.write_audited(write, now, event).await
    }

    pub async fn delete_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "delete from api_key where api_key_id = $1 \
             and (revoked_at is not null or (expires_at is not null and expires_at <= $2))",
        )
        .bind(id.as_str())
        .bind(to_millis(now));
        self.write_audited(write, now, event).await
    }

    pub async fn rotate_key(
        &self,
        r: &Rotation<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let write = sqlx::query(
            "update api_key set \
                 previous_hash = case when $4::bigint is null then null else key_hash end, \
                 previous_hash_expires_at = $4, \
                 key_hash = $2, prefix = $3, updated_at = $5 \
             where api_key_id = $1 and revoked_at is null and (expires_at is null or expires_at > $5)",
        )
        .bind(r.id.as_str())
        .bind(&r.hash.0[..])
        .bind(r.prefix)
        .bind(r.previous_until.map(to_millis))
        .bind(to_millis(now));
        self.write_audited(write, now, event).await
    }

    /// One statement for the whole batch. The rows are locked first in key
    /// id order, so two instances flushing the same keys at once wait for
    /// each other instead of deadlocking; `greatest` keeps the later time.
    pub async fn record_usage(&self, batch: &[(KeyId, DateTime<Utc>, u64)]) -> anyhow::Result<()> {
        let ids: Vec<&str> = batch.iter().map(|(id, _, _)| id.as_str()).collect();
        let ats: Vec<i64> = batch.iter().map(|(_, at, _)| to_millis(*at)).collect();
        let counts: Vec<i64> = batch.iter().map(|(_, _, n)| *n as i64).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("select 1 from api_key where api_key_id = any($1) order by api_key_id for update")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update api_key k set last_used_at = greatest(coalesce(k.last_used_at, 0), u.at), \
                 use_count = k.use_count + u.n \
             from unnest($1::text[], $2::bigint[], $3::bigint[]) as u(id, at, n) where k.api_key_id = u.id",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As SQLite's; the upsert locks the guild's setting row, so changes of
    /// one guild's channel take turns.
    pub async fn set_audit_channel(
        &self,
        guild_id: u64,
        channel_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        recent: u32,
        details: impl FnOnce(&AuditChannelBefore) -> serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let (previous,): (Option<i64>,) = sqlx::query_as(
            "insert into guild_setting (guild_id, audit_channel_id, created_at, updated_at) values ($1, null, $2, $2) \
             on conflict (guild_id) do update set updated_at = $2 returning audit_channel_id",
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
