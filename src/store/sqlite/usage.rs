//! SQL for the usage tables on SQLite (see `store/usage.rs`). Writes go
//! through the one writer connection, as every other write does (so they
//! never look like another process's commit to the key index), many rows
//! to a statement.

use chrono::{DateTime, Utc};
use sqlx::{Connection, QueryBuilder, Sqlite};

use super::SqliteStore;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;
use crate::store::rows::{self, id_to_sql, to_millis, HourRow, RequestLogRow, HOUR_COLUMNS, REQUEST_LOG_COLUMNS};
use crate::store::usage::{count_to_sql, minute_of_hour, minutes_json, waves};
use crate::store::{HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep};

/// Rows per insert statement (each binds at most 10 values; SQLite allows
/// 32,766 per statement).
const ROWS_PER_STATEMENT: usize = 1000;

impl SqliteStore {
    pub async fn record_counters(&self, minutes: &[MinuteCount], ips: &[IpCount]) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        for wave in waves(minutes) {
            for chunk in wave.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "insert into usage_hour (hour, api_key_id, method, route, status, outcome, count, last_minute, \
                     minutes) ",
                );
                q.push_values(chunk, |mut b, r| {
                    let (m, n) = (minute_of_hour(r.minute), count_to_sql(r.count));
                    b.push_bind(r.minute.div_euclid(60))
                        .push_bind(r.key_id.as_str())
                        .push_bind(r.method)
                        .push_bind(r.route)
                        .push_bind(i64::from(r.status))
                        .push_bind(r.outcome)
                        .push_bind(n)
                        .push_bind(m)
                        .push_bind(minutes_json(m as usize, n));
                });
                q.push(
                    " on conflict (hour, api_key_id, method, route, status, outcome) do update set \
                     count = usage_hour.count + excluded.count, last_minute = excluded.last_minute, \
                     minutes = json_set(usage_hour.minutes, '$[' || excluded.last_minute || ']', \
                         json_extract(usage_hour.minutes, '$[' || excluded.last_minute || ']') + excluded.count)",
                );
                q.build().execute(&mut *tx).await?;
            }
        }
        let mut ips: Vec<&IpCount> = ips.iter().collect();
        ips.sort_by(|a, b| (a.hour, &a.key_id, &a.ip).cmp(&(b.hour, &b.key_id, &b.ip)));
        for chunk in ips.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("insert into usage_ip_hour (hour, api_key_id, ip, count) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.hour)
                    .push_bind(r.key_id.as_str())
                    .push_bind(r.ip.as_str())
                    .push_bind(count_to_sql(r.count));
            });
            q.push(" on conflict (hour, api_key_id, ip) do update set count = usage_ip_hour.count + excluded.count");
            q.build().execute(&mut *tx).await?;
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
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "insert into request_log (api_key_id, at, method, route, status, reason, ip, latency_us, \
                 target_user_id, target_role_id) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.key_id.as_str())
                    .push_bind(to_millis(r.at))
                    .push_bind(r.method)
                    .push_bind(r.route)
                    .push_bind(i64::from(r.status))
                    .push_bind(r.reason)
                    .push_bind(r.ip.as_str())
                    .push_bind(i64::from(r.latency_us))
                    .push_bind(r.target_user_id.map(id_to_sql))
                    .push_bind(r.target_role_id.map(id_to_sql));
            });
            q.build().execute(&mut *tx).await?;
        }
        // One indexed delete per key (cheap in-process): all but the newest.
        for key in trim {
            sqlx::query(
                "delete from request_log where api_key_id = ?1 and request_log_id <= (select request_log_id \
                 from request_log where api_key_id = ?1 order by request_log_id desc limit 1 offset ?2)",
            )
            .bind(key.as_str())
            .bind(i64::from(keep_per_key))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_hours(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<HourCount>> {
        let rows = sqlx::query_as::<_, HourRow>(&format!(
            "select {HOUR_COLUMNS}, minutes from usage_hour where api_key_id = ?1 and hour >= ?2 and hour < ?3"
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
            "select ip, sum(count) as n from usage_ip_hour where api_key_id = ?1 and hour >= ?2 and hour < ?3 \
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
            "select {REQUEST_LOG_COLUMNS} from request_log where api_key_id = ?1 \
             and (?2 is null or request_log_id < ?2) and (not ?3 or status >= 400) \
             order by request_log_id desc limit ?4"
        ))
        .bind(key.as_str())
        .bind(before)
        .bind(errors_only)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows::request_log(rows))
    }

    pub async fn claim_usage_alert(
        &self,
        key: &KeyId,
        now: DateTime<Utc>,
        quiet_ms: i64,
        every_ms: i64,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        let now_ms = to_millis(now);
        let (alerted_at,): (i64,) = sqlx::query_as(
            "insert into usage_alert (api_key_id, alerted_at, spiking_at) values (?1, ?2, ?2) \
             on conflict (api_key_id) do update set \
                 alerted_at = case when ?2 - usage_alert.spiking_at >= ?3 and ?2 - usage_alert.alerted_at >= ?4 \
                     then ?2 else usage_alert.alerted_at end, \
                 spiking_at = max(usage_alert.spiking_at, ?2) \
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
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        let minutes = sqlx::query("update usage_hour set minutes = null where hour < ?1 and minutes is not null")
            .bind(minutes_before.div_euclid(60))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let hours = sqlx::query("delete from usage_hour where hour < ?1")
            .bind(hours_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let ips = sqlx::query("delete from usage_ip_hour where hour < ?1")
            .bind(hours_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let log = sqlx::query("delete from request_log where at < ?1")
            .bind(to_millis(log_before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("delete from usage_alert where spiking_at < ?1 and alerted_at < ?1")
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
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin().await?;
        for table in ["usage_hour", "usage_ip_hour", "request_log", "usage_alert"] {
            sqlx::query(&format!("delete from {table} where api_key_id = ?1"))
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn usage_rows_held(&self, key: &KeyId) -> anyhow::Result<UsageRowsHeld> {
        let (with_minutes, hour_rows, ip_rows, log_rows): (i64, i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from usage_hour where api_key_id = ?1 and minutes is not null), \
                 (select count(*) from usage_hour where api_key_id = ?1), \
                 (select count(*) from usage_ip_hour where api_key_id = ?1), \
                 (select count(*) from request_log where api_key_id = ?1)",
        )
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
