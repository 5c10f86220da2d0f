//! SQL for the rate limit shared by instances: budgets leased per key and
//! minute window (`rate_lease`), and the instances' heartbeats
//! (`rate_instance`). Every lease is one statement: the upsert locks the
//! key's window row, so concurrent leases from any instance take turns and
//! `taken` never passes the limit.

use super::PgStore;
use crate::keys::KeyId;
use crate::store::RateGrant;

impl PgStore {
    /// One upsert: `taken` grows by up to `chunk`, never past `limit`;
    /// `granted` is what this statement added (SET reads the old row).
    pub async fn lease_rate(
        &self,
        key: &KeyId,
        window_start_ms: i64,
        limit: u32,
        chunk: u32,
    ) -> anyhow::Result<RateGrant> {
        let (taken, granted): (i64, i64) = sqlx::query_as(
            "insert into rate_lease (api_key_id, window_start, taken, granted) \
                 values ($1, $2, least($3, $4), least($3, $4)) \
             on conflict (api_key_id, window_start) do update set \
                 taken = greatest(rate_lease.taken, least($3, rate_lease.taken + $4)), \
                 granted = greatest(0, least($3, rate_lease.taken + $4) - rate_lease.taken) \
             returning taken, granted",
        )
        .bind(key.as_str())
        .bind(window_start_ms)
        .bind(i64::from(limit))
        .bind(i64::from(chunk))
        .fetch_one(&self.pool)
        .await?;
        Ok(RateGrant::from_row(taken, granted))
    }

    pub async fn beat_instance(&self, instance_id: &str, now_ms: i64, live_after_ms: i64) -> anyhow::Result<u32> {
        let (n,): (i64,) = sqlx::query_as(
            "with beat as ( \
                 insert into rate_instance (instance_id, seen_at) values ($1, $2) \
                 on conflict (instance_id) do update set seen_at = greatest(rate_instance.seen_at, $2) \
                 returning instance_id), \
             gone as (delete from rate_instance where seen_at < $3 and instance_id <> $1) \
             select 1 + count(*) from rate_instance where seen_at >= $3 and instance_id <> $1",
        )
        .bind(instance_id)
        .bind(now_ms)
        .bind(live_after_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub async fn forget_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        sqlx::query("delete from rate_instance where instance_id = $1").bind(instance_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn delete_rate_leases_before(&self, window_start_ms: i64) -> anyhow::Result<u64> {
        let done = sqlx::query("delete from rate_lease where window_start < $1")
            .bind(window_start_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
