//! SQL for the usage tables on PostgreSQL (as `sqlite/usage.rs`). Rows go
//! in as arrays (`unnest`), sorted, so concurrent flushes from several
//! instances lock rows in one order; a minute's count is added to its hour
//! row's total and to the hour's array of minute buckets in one upsert, so
//! instances adding to one row take turns on its lock and never lose one
//! another's counts.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;
use crate::store::rows::{self, id_to_sql, to_millis, HourRow, RequestLogRow, HOUR_COLUMNS, REQUEST_LOG_COLUMNS};
use crate::store::usage::{count_to_sql, minute_of_hour, waves};
use crate::store::{HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep};

/// Rows per statement: large batches go in several, bounding the arrays.
const ROWS_PER_STATEMENT: usize = 20_000;

/// Whether a row still holds its 60 minute buckets. Retention sets them to
/// null; a minute added in place to such a row afterwards (a batch held
/// back past retention) makes a one-element array, which counts as dropped
/// too: its hour's total holds the count.
const MINUTES_KEPT: &str = "(array_lower(minutes, 1) = 1 and array_length(minutes, 1) = 60)";

impl PgStore {
    pub async fn record_counters(&self, minutes: &[MinuteCount], ips: &[IpCount]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for wave in waves(minutes) {
            for chunk in wave.chunks(ROWS_PER_STATEMENT) {
                let hours: Vec<i64> = chunk.iter().map(|r| r.minute.div_euclid(60)).collect();
                let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
                let methods: Vec<&str> = chunk.iter().map(|r| r.method).collect();
                let routes: Vec<&str> = chunk.iter().map(|r| r.route).collect();
                let statuses: Vec<i64> = chunk.iter().map(|r| i64::from(r.status)).collect();
                let outcomes: Vec<&str> = chunk.iter().map(|r| r.outcome).collect();
                let counts: Vec<i64> = chunk.iter().map(|r| count_to_sql(r.count)).collect();
                let of_hour: Vec<i64> = chunk.iter().map(|r| minute_of_hour(r.minute)).collect();
                sqlx::query(
                    "insert into usage_hour (hour, api_key_id, method, route, status, outcome, count, last_minute, \
                         minutes) \
                     select h, k, me, ro, s, o, n, m, \
                         array_fill(0, array[m::integer]) || n::integer || array_fill(0, array[59 - m::integer]) \
                     from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                         $7::bigint[], $8::bigint[]) with ordinality as r(h, k, me, ro, s, o, n, m, ord) order by ord \
                     on conflict (hour, api_key_id, method, route, status, outcome) do update set \
                         count = usage_hour.count + excluded.count, last_minute = excluded.last_minute, \
                         minutes[excluded.last_minute + 1] = \
                             (usage_hour.minutes[excluded.last_minute + 1] + excluded.count)::integer",
                )
                .bind(&hours)
                .bind(&keys)
                .bind(&methods)
                .bind(&routes)
                .bind(&statuses)
                .bind(&outcomes)
                .bind(&counts)
                .bind(&of_hour)
                .execute(&mut *tx)
                .await?;
            }
        }
        let mut ips: Vec<&IpCount> = ips.iter().collect();
        ips.sort_by(|a, b| (a.hour, &a.key_id, &a.ip).cmp(&(b.hour, &b.key_id, &b.ip)));
        for chunk in ips.chunks(ROWS_PER_STATEMENT) {
            let hours: Vec<i64> = chunk.iter().map(|r| r.hour).collect();
            let keys: Vec<&str> = chunk.iter().map(|r| r.key_id.as_str()).collect();
            let addrs: Vec<&str> = chunk.iter().map(|r| r.ip.as_str()).collect();
            let counts: Vec<i64> = chunk.iter().map(|r| count_to_sql(r.count)).collect();
            sqlx::query(
                "insert into usage_ip_hour (hour, api_key_id, ip, count) \
                 select h, k, i, n from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                     with ordinality as r(h, k, i, n, ord) order by ord \
                 on conflict (hour, api_key_id, ip) do update set count = usage_ip_hour.count + excluded.count",
            )
            .bind(&hours)
            .bind(&keys)
            .bind(&addrs)
            .bind(&counts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_requests(
        &self,
        rows: &[NewRequestLog],
        trim: &[KeyId],
        keep_per_key: u32,
    ) -> anyhow::Result<()> {
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
        // Per key, all but the newest: one index range each.
        let keys: Vec<&str> = trim.iter().map(KeyId::as_str).collect();
        sqlx::query(
            "delete from request_log r using ( \
                 select k, (select request_log_id from request_log where api_key_id = k \
                            order by request_log_id desc offset $2 limit 1) as cut \
                 from unnest($1::text[]) as k) c \
             where r.api_key_id = c.k and r.request_log_id <= c.cut",
        )
        .bind(&keys)
        .bind(i64::from(keep_per_key))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_hours(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<HourCount>> {
        let rows = sqlx::query_as::<_, HourRow>(&format!(
            "select {HOUR_COLUMNS}, case when {MINUTES_KEPT} then array_to_json(minutes)::text end as minutes \
             from usage_hour where api_key_id = $1 and hour >= $2 and hour < $3"
        ))
        .bind(key.as_str())
        .bind(from_hour)
        .bind(to_hour)
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

    pub async fn prune_usage(
        &self,
        minutes_before: i64,
        hours_before: i64,
        log_before: DateTime<Utc>,
        alerts_before: DateTime<Utc>,
    ) -> anyhow::Result<UsageUpkeep> {
        let mut tx = self.pool.begin().await?;
        let minutes = sqlx::query("update usage_hour set minutes = null where hour < $1 and minutes is not null")
            .bind(minutes_before.div_euclid(60))
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
            minutes_dropped: minutes,
            hour_rows_dropped: hours,
            ip_rows_dropped: ips,
            log_rows_dropped: log,
        })
    }

    pub async fn forget_usage(&self, key: &KeyId) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["usage_hour", "usage_ip_hour", "request_log", "usage_alert"] {
            sqlx::query(&format!("delete from {table} where api_key_id = $1"))
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_rows_held(&self, key: &KeyId) -> anyhow::Result<UsageRowsHeld> {
        let (with_minutes, hour_rows, ip_rows, log_rows): (i64, i64, i64, i64) = sqlx::query_as(&format!(
            "select (select count(*) from usage_hour where api_key_id = $1 and {MINUTES_KEPT}), \
                 (select count(*) from usage_hour where api_key_id = $1), \
                 (select count(*) from usage_ip_hour where api_key_id = $1), \
                 (select count(*) from request_log where api_key_id = $1)"
        ))
        .bind(key.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(UsageRowsHeld {
            with_minutes: with_minutes as u64,
            hour_rows: hour_rows as u64,
            ip_rows: ip_rows as u64,
            log_rows: log_rows as u64,
        })
    }
}
