//! SQL for the usage tables on PostgreSQL (as `sqlite/usage.rs`). Rows go
//! in as arrays (`unnest`), sorted, so concurrent flushes from several
//! instances lock rows in one order. A flush and a rollup take one advisory
//! lock, shared by flushes and exclusive for the rollup: a minute flushed
//! late is either seen by the rollup or added to its hour by the flush,
//! never neither.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;
use crate::store::rows::{self, id_to_sql, to_millis, HourRow, RequestLogRow, REQUEST_LOG_COLUMNS};
use crate::store::usage::{count_to_sql, late_hours, ROLLUP_MARK};
use crate::store::{HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep};

/// The advisory lock between flushes (shared) and the rollup (exclusive):
/// class 16, object 1 (the key limit's per-guild locks are class 2).
const ROLLUP_LOCK: (i32, i32) = (16, 1);

/// Rows per statement: large batches go in several, bounding the arrays.
const ROWS_PER_STATEMENT: usize = 20_000;

impl PgStore {
    pub async fn record_counters(&self, minutes: &[MinuteCount], ips: &[IpCount]) -> anyhow::Result<()> {
        let mut sorted: Vec<&MinuteCount> = minutes.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.key_id, a.minute, a.method, a.route, a.status, a.outcome)
                .cmp(&(&b.key_id, b.minute, b.method, b.route, b.status, b.outcome))
        });
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock_shared($1, $2)")
            .bind(ROLLUP_LOCK.0)
            .bind(ROLLUP_LOCK.1)
            .execute(&mut *tx)
            .await?;
        for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
            add_counts(&mut tx, "usage_minute", "minute", chunk).await?;
        }
        let (through,): (Option<i64>,) = sqlx::query_as("select (select value from usage_rollup where name = $1)")
            .bind(ROLLUP_MARK)
            .fetch_one(&mut *tx)
            .await?;
        let late = late_hours(minutes, through);
        for chunk in late.iter().collect::<Vec<_>>().chunks(ROWS_PER_STATEMENT) {
            add_counts(&mut tx, "usage_hour", "hour", chunk).await?;
        }
        let mut ips: Vec<&IpCount> = ips.iter().collect();
        ips.sort_by(|a, b| (&a.key_id, a.hour, &a.ip).cmp(&(&b.key_id, b.hour, &b.ip)));
        for chunk in ips.chunks(ROWS_PER_STATEMENT) {
            let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let hours: Vec<i64> = chunk.iter().map(|r| r.hour).collect();
            let addrs: Vec<&str> = chunk.iter().map(|r| r.ip.as_str()).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| count_to_sql(r.count)).collect();
            sqlx::query(
                "insert into usage_ip_hour (api_key_id, hour, ip, count) \
                 select * from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) \
                 on conflict (api_key_id, hour, ip) do update set count = usage_ip_hour.count + excluded.count",
            )
            .bind(&keys)
            .bind(&hours)
            .bind(&addrs)
            .bind(&counts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_requests(&self, rows: &[NewRequestLog], keep_per_key: u32) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let ats: Vec<i64> = chunk.iter().map(|r| to_millis(r.at)).collect();
            let methods: Vec<&str> = chunk.iter().map(|r| r.method).collect();
            let routes: Vec<&str> = chunk.iter().map(|r| r.route).collect();
            let statuses: Vec<i64> = chunk.iter().map(|r| i64::from(r.status)).collect();
            let reasons: Vec<Option<&str>> = chunk.iter().map(|r| r.reason).collect();
            let ips: Vec<&str> = chunk.iter().map(|r| r.ip.as_str()).collect();
            let latencies: Vec<i64> = chunk.iter().map(|r| i64::from(r.latency_us)).collect();
            let users: Vec<Option<i64>> = chunk.iter().map(|r| r.target_user_id.map(id_to_sql)).collect();
            let roles: Vec<Option<i64>> = chunk.iter().map(|r| r.target_role_id.map(id_to_sql)).collect();
            sqlx::query(
                "insert into request_log (api_key_id, at, method, route, status, reason, ip, latency_us, \
                     target_user_id, target_role_id) \
                 select k, a, m, ro, s, re, i, l, u, rl \
                 from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                     $7::text[], $8::bigint[], $9::bigint[], $10::bigint[]) \
                 with ordinality as r(k, a, m, ro, s, re, i, l, u, rl, n) order by n",
            )
            .bind(&keys)
            .bind(&ats)
            .bind(&methods)
            .bind(&routes)
            .bind(&statuses)
            .bind(&reasons)
            .bind(&ips)
            .bind(&latencies)
            .bind(&users)
            .bind(&roles)
            .execute(&mut *tx)
            .await?;
        }
        let mut keys: Vec<&str> = rows.iter().map(|r| r.key_id.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        sqlx::query(
            "delete from request_log where request_log_id in (select request_log_id from ( \
                 select request_log_id, row_number() over (partition by api_key_id order by request_log_id desc) as n \
                 from request_log where api_key_id = any($1)) ranked where n > $2)",
        )
        .bind(&keys)
        .bind(i64::from(keep_per_key))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_hours(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<HourCount>> {
        let rows = sqlx::query_as::<_, HourRow>(
            "select hour, method, route, status, outcome, sum(count)::bigint as count from ( \
                 select hour, method, route, status, outcome, count from usage_hour \
                 where api_key_id = $1 and hour >= $2 and hour < $3 \
                 union all \
                 select minute / 60 as hour, method, route, status, outcome, count from usage_minute \
                 where api_key_id = $1 and minute < $3 * 60 \
                 and minute >= greatest($2 * 60, coalesce((select value from usage_rollup where name = $4), 0))) u \
             group by hour, method, route, status, outcome",
        )
        .bind(key.as_str())
        .bind(from_hour)
        .bind(to_hour)
        .bind(ROLLUP_MARK)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::hours(rows))
    }

    pub async fn usage_ips(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select ip, sum(count)::bigint as n from usage_ip_hour where api_key_id = $1 and hour >= $2 and hour < $3 \
             group by ip order by n desc, ip",
        )
        .bind(key.as_str())
        .bind(from_hour)
        .bind(to_hour)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::counted(rows))
    }

    pub async fn refusals(&self, key: &KeyId, from_minute: i64, to_minute: i64) -> anyhow::Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select outcome, sum(count)::bigint as n from usage_minute where api_key_id = $1 and minute >= $2 \
             and minute < $3 and status in (401, 403, 429) group by outcome order by n desc, outcome",
        )
        .bind(key.as_str())
        .bind(from_minute)
        .bind(to_minute)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::counted(rows))
    }

    pub async fn request_log(
        &self,
        key: &KeyId,
        before: Option<i64>,
        limit: u32,
        errors_only: bool,
    ) -> anyhow::Result<Vec<RequestLogEntry>> {
        let rows = sqlx::query_as::<_, RequestLogRow>(&format!(
            "select {REQUEST_LOG_COLUMNS} from request_log where api_key_id = $1 \
             and ($2::bigint is null or request_log_id < $2) and (not $3 or status >= 400) \
             order by request_log_id desc limit $4"
        ))
        .bind(key.as_str())
        .bind(before)
        .bind(errors_only)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::request_log(rows))
    }

    /// As SQLite's; the upsert locks the key's alert row, so instances
    /// seeing one spike take turns and the second sees it alerted.
    pub async fn claim_usage_alert(
        &self,
        key: &KeyId,
        now: DateTime<Utc>,
        quiet_ms: i64,
        every_ms: i64,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let now_ms = to_millis(now);
        let (alerted_at,): (i64,) = sqlx::query_as(
            "insert into usage_alert (api_key_id, alerted_at, spiking_at) values ($1, $2, $2) \
             on conflict (api_key_id) do update set \
                 alerted_at = case when $2 - usage_alert.spiking_at >= $3 and $2 - usage_alert.alerted_at >= $4 \
                     then $2 else usage_alert.alerted_at end, \
                 spiking_at = greatest(usage_alert.spiking_at, $2) \
             returning alerted_at",
        )
        .bind(key.as_str())
        .bind(now_ms)
        .bind(quiet_ms)
        .bind(every_ms)
        .fetch_one(&mut *tx)
        .await?;
        let alerted = alerted_at == now_ms;
        if alerted {
            Self::insert_audit_in(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        Ok(alerted)
    }

    pub async fn roll_up_usage(&self, through_minute: i64, max_minutes: i64) -> anyhow::Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1, $2)")
            .bind(ROLLUP_LOCK.0)
            .bind(ROLLUP_LOCK.1)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into usage_rollup (name, value) \
             values ($1, coalesce((select min(minute) from usage_minute), $2)) on conflict (name) do nothing",
        )
        .bind(ROLLUP_MARK)
        .bind(through_minute)
        .execute(&mut *tx)
        .await?;
        let (from,): (i64,) = sqlx::query_as("select value from usage_rollup where name = $1")
            .bind(ROLLUP_MARK)
            .fetch_one(&mut *tx)
            .await?;
        let to = through_minute.min(from.saturating_add(max_minutes));
        if to <= from {
            tx.commit().await?;
            return Ok(0);
        }
        sqlx::query(
            "insert into usage_hour (api_key_id, hour, method, route, status, outcome, count) \
             select api_key_id, minute / 60, method, route, status, outcome, sum(count)::bigint from usage_minute \
             where minute >= $1 and minute < $2 group by api_key_id, minute / 60, method, route, status, outcome \
             order by 1, 2, 3, 4, 5, 6 \
             on conflict (api_key_id, hour, method, route, status, outcome) \
             do update set count = usage_hour.count + excluded.count",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        sqlx::query("update usage_rollup set value = $2 where name = $1")
            .bind(ROLLUP_MARK)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(to - from)
    }

    pub async fn prune_usage(
        &self,
        minutes_before: i64,
        hours_before: i64,
        log_before: DateTime<Utc>,
        alerts_before: DateTime<Utc>,
    ) -> anyhow::Result<UsageUpkeep> {
        let mut tx = self.pool.begin().await?;
        let minutes = sqlx::query(
            "delete from usage_minute \
             where minute < least($1, coalesce((select value from usage_rollup where name = $2), $1))",
        )
        .bind(minutes_before)
        .bind(ROLLUP_MARK)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let hours = sqlx::query("delete from usage_hour where hour < $1")
            .bind(hours_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let ips = sqlx::query("delete from usage_ip_hour where hour < $1")
            .bind(hours_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let log = sqlx::query("delete from request_log where at < $1")
            .bind(to_millis(log_before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("delete from usage_alert where spiking_at < $1 and alerted_at < $1")
            .bind(to_millis(alerts_before))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UsageUpkeep {
            minutes_rolled: 0,
            minute_rows_dropped: minutes,
            hour_rows_dropped: hours,
            ip_rows_dropped: ips,
            log_rows_dropped: log,
        })
    }

    pub async fn forget_usage(&self, key: &KeyId) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["usage_minute", "usage_hour", "usage_ip_hour", "request_log", "usage_alert"] {
            sqlx::query(&format!("delete from {table} where api_key_id = $1"))
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_rows_held(&self, key: &KeyId) -> anyhow::Result<UsageRowsHeld> {
        let (minute_rows, hour_rows, ip_rows, log_rows): (i64, i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from usage_minute where api_key_id = $1), \
                 (select count(*) from usage_hour where api_key_id = $1), \
                 (select count(*) from usage_ip_hour where api_key_id = $1), \
                 (select count(*) from request_log where api_key_id = $1)",
        )
        .bind(key.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(UsageRowsHeld {
            minute_rows: minute_rows as u64,
            hour_rows: hour_rows as u64,
            ip_rows: ip_rows as u64,
            log_rows: log_rows as u64,
        })
    }
}

/// Adds counts to `table` (`time` is its minute or hour column), rows that
/// exist added to.
async fn add_counts(tx: &mut sqlx::PgConnection, table: &str, time: &str, rows: &[&MinuteCount]) -> anyhow::Result<()> {
    let keys: Vec<&str> = rows.iter().map(|r| r.key_id.as_str()).collect();
    let times: Vec<i64> = rows.iter().map(|r| r.minute).collect();
    let methods: Vec<&str> = rows.iter().map(|r| r.method).collect();
    let routes: Vec<&str> = rows.iter().map(|r| r.route).collect();
    let statuses: Vec<i64> = rows.iter().map(|r| i64::from(r.status)).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let counts: Vec<i64> = rows.iter().map(|r| count_to_sql(r.count)).collect();
    sqlx::query(&format!(
        "insert into {table} (api_key_id, {time}, method, route, status, outcome, count) \
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[]) \
         on conflict (api_key_id, {time}, method, route, status, outcome) \
         do update set count = {table}.count + excluded.count"
    ))
    .bind(&keys)
    .bind(&times)
    .bind(&methods)
    .bind(&routes)
    .bind(&statuses)
    .bind(&outcomes)
    .bind(&counts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
