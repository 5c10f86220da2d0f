//! The rate limit shared by instances (see `service::lease`): budgets
//! leased per key and minute window (`rate_lease`), and the instances'
//! heartbeats (`rate_instance`), and the circuit breaker's counts of each
//! key's destructive writes (`breaker_key`, `breaker_write`; shared by every
//! instance and kept across restarts). Only a shared database (PostgreSQL) leases
//! in production; SQLite answers the same calls so it runs and tests them.
//! Each statement once, for both backends (see `db_run!`); where one
//! database says `max`/`min` and the other `greatest`/`least`, a `case`
//! says it for both.

use super::Store;
use crate::keys::KeyId;

/// What one lease of a key's window budget handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    /// Requests this lease added to the instance's budget (0 when the
    /// window's budget was already all taken).
    pub granted: u32,
    /// How much of the window's budget every instance has taken, this
    /// lease included (at most the limit).
    pub taken: u32,
}

impl RateGrant {
    fn from_row(taken: i64, granted: i64) -> Self {
        let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        Self { granted: clamp(granted), taken: clamp(taken) }
    }
}

impl Store {
    /// Takes up to `chunk` requests of key `key`'s budget of `limit` for
    /// the minute window starting at `window_start_ms` (milliseconds since
    /// the epoch), in one atomic statement: however many instances lease at
    /// once, what they are granted in a window never adds up to more than
    /// `limit`.
    ///
    /// One upsert (it locks the key's window row, so concurrent leases take
    /// turns): `taken` grows by up to `chunk`, never past `limit` (nor back
    /// when the limit was lowered below it); `granted` is what this
    /// statement added (SET reads the old row).
    pub async fn lease_rate(
        &self,
        key: &KeyId,
        window_start_ms: i64,
        limit: u32,
        chunk: u32,
    ) -> anyhow::Result<RateGrant> {
        let (taken, granted): (i64, i64) = db_run!(write self, |c| {
            sqlx::query_as(
                "insert into rate_lease (api_key_id, window_start, taken, granted) values ($1, $2, \
                     case when $4 < $3 then $4 else $3 end, case when $4 < $3 then $4 else $3 end) \
                 on conflict (api_key_id, window_start) do update set \
                     taken = case when rate_lease.taken >= $3 then rate_lease.taken \
                                  when rate_lease.taken + $4 > $3 then $3 \
                                  else rate_lease.taken + $4 end, \
                     granted = case when rate_lease.taken >= $3 then 0 \
                                    when rate_lease.taken + $4 > $3 then $3 - rate_lease.taken \
                                    else $4 end \
                 returning taken, granted",
            )
            .bind(key.as_str())
            .bind(window_start_ms)
            .bind(i64::from(limit))
            .bind(i64::from(chunk))
            .fetch_one(c)
            .await?
        });
        Ok(RateGrant::from_row(taken, granted))
    }

    /// Records that instance `instance_id` is alive at `now_ms`, forgets
    /// instances not seen since `live_after_ms`, and returns how many are
    /// alive (this one included).
    pub async fn beat_instance(&self, instance_id: &str, now_ms: i64, live_after_ms: i64) -> anyhow::Result<u32> {
        let (n,): (i64,) = db_run!(write self, |c| {
            // A heartbeat never moves back (an instance's clock may lag
            // another's write of its row).
            sqlx::query(
                "insert into rate_instance (instance_id, seen_at) values ($1, $2) \
                 on conflict (instance_id) do update set \
                     seen_at = case when rate_instance.seen_at > $2 then rate_instance.seen_at else $2 end",
            )
            .bind(instance_id)
            .bind(now_ms)
            .execute(&mut *c)
            .await?;
            sqlx::query("delete from rate_instance where seen_at < $1").bind(live_after_ms).execute(&mut *c).await?;
            sqlx::query_as("select count(*) from rate_instance where seen_at >= $1")
                .bind(live_after_ms)
                .fetch_one(&mut *c)
                .await?
        });
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Removes an instance's heartbeat (it is stopping).
    pub async fn forget_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        db_run!(write self, |c| {
            sqlx::query("delete from rate_instance where instance_id = $1").bind(instance_id).execute(c).await?;
        });
        Ok(())
    }

    /// Deletes the leases of windows that started before `window_start_ms`;
    /// returns how many.
    pub async fn delete_rate_leases_before(&self, window_start_ms: i64) -> anyhow::Result<u64> {
        Ok(db_run!(write self, |c| {
            sqlx::query("delete from rate_lease where window_start < $1")
                .bind(window_start_ms)
                .execute(c)
                .await?
                .rows_affected()
        }))
    }
}

impl Store {
    /// Adds Discord's invalid answers counted by instance `instance_id`,
    /// as (guild, minute since the epoch, count), to what it wrote before.
    /// Rows go in sorted, so concurrent writers lock rows in one order.
    pub async fn record_discord_refusals(&self, instance_id: &str, cells: &[(u64, i64, u64)]) -> anyhow::Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        let mut sorted = cells.to_vec();
        sorted.sort_unstable_by_key(|&(guild, minute, _)| (minute, guild));
        db_run!(transaction self, |tx| {
            for (guild, minute, n) in &sorted {
                sqlx::query(
                    "insert into discord_refusal (minute, instance_id, guild_id, count) values ($1, $2, $3, $4) \
                     on conflict (minute, instance_id, guild_id) do update set \
                         count = discord_refusal.count + excluded.count",
                )
                .bind(*minute)
                .bind(instance_id)
                .bind(i64::try_from(*guild).unwrap_or(i64::MAX))
                .bind(i64::try_from(*n).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    /// The invalid answers every instance but `instance_id` counted since
    /// minute `from_minute`, per guild (0 for none), the most first; at most
    /// `limit` guilds (the rest count in the total alone). The second value
    /// is the total of every guild.
    pub async fn discord_refusals_elsewhere(
        &self,
        instance_id: &str,
        from_minute: i64,
        limit: u32,
    ) -> anyhow::Result<(Vec<(u64, u64)>, u64)> {
        let rows: Vec<(i64, i64, i64)> = db_run!(read self, |c| {
            sqlx::query_as(
                "select guild_id, cast(sum(count) as bigint) as n, \
                     cast(sum(sum(count)) over () as bigint) as total \
                 from discord_refusal where minute >= $1 and instance_id <> $2 \
                 group by guild_id order by n desc, guild_id limit $3",
            )
            .bind(from_minute)
            .bind(instance_id)
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await?
        });
        let total = rows.first().map_or(0, |r| u64::try_from(r.2).unwrap_or(0));
        let guilds =
            rows.into_iter().map(|(g, n, _)| (u64::try_from(g).unwrap_or(0), u64::try_from(n).unwrap_or(0))).collect();
        Ok((guilds, total))
    }

    /// Deletes the invalid-answer counts of minutes before `minute`;
    /// returns how many rows.
    pub async fn delete_discord_refusals_before(&self, minute: i64) -> anyhow::Result<u64> {
        Ok(db_run!(write self, |c| {
            sqlx::query("delete from discord_refusal where minute < $1").bind(minute).execute(c).await?.rows_affected()
        }))
    }
}

impl Store {
    /// Spends one of key `key`'s destructive writes of `kind` at `now_ms`
    /// if fewer than `budget` were spent since `window_start_ms`; false
    /// (nothing spent) otherwise. Shared by every instance on the database
    /// and kept across restarts.
    ///
    /// One transaction: the upsert of the key's `breaker_key` row locks it
    /// (PostgreSQL; SQLite's one writer serialises anyway), so two spends of
    /// one key take turns and the second counts what the first committed;
    /// then the window's older rows go, the rest are counted, and the write
    /// is added if the budget allows.
    pub async fn spend_write(
        &self,
        key: &KeyId,
        kind: &str,
        now_ms: i64,
        window_start_ms: i64,
        budget: u32,
    ) -> anyhow::Result<bool> {
        Ok(db_run!(transaction self, |c| {
            sqlx::query(
                "insert into breaker_key (api_key_id, kind, touched_at) values ($1, $2, $3) \
                 on conflict (api_key_id, kind) do update set touched_at = $3",
            )
            .bind(key.as_str())
            .bind(kind)
            .bind(now_ms)
            .execute(&mut *c)
            .await?;
            sqlx::query("delete from breaker_write where api_key_id = $1 and kind = $2 and spent_at <= $3")
                .bind(key.as_str())
                .bind(kind)
                .bind(window_start_ms)
                .execute(&mut *c)
                .await?;
            let (spent,): (i64,) =
                sqlx::query_as("select count(*) from breaker_write where api_key_id = $1 and kind = $2")
                    .bind(key.as_str())
                    .bind(kind)
                    .fetch_one(&mut *c)
                    .await?;
            if spent >= i64::from(budget) {
                false
            } else {
                sqlx::query("insert into breaker_write (api_key_id, kind, spent_at) values ($1, $2, $3)")
                    .bind(key.as_str())
                    .bind(kind)
                    .bind(now_ms)
                    .execute(&mut *c)
                    .await?;
                true
            }
        }))
    }
}
