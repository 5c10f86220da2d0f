//! What the store keeps of usage: per-key request counters by minute and by
//! hour, requests per client IP and hour, the request log, and the
//! refusal-spike alert's state; each statement once for both backends (see
//! `db_run!`), except the batched writes of counters and log rows and the
//! minute buckets' type, which are each backend's own (`dialect`: SQLite
//! adds to a JSON array with `json_set`, PostgreSQL to an `integer[]`, and
//! takes rows in as arrays through `unnest`). The rules (what is counted,
//! what is logged, buckets, retention, when a spike is alerted) are the
//! service's (`service::usage`, `service::usage_report`, `service::spike`);
//! the store adds up, keeps and drops.

use chrono::{DateTime, Utc};

use super::audit::insert_audit_in;
use super::rows::{self, to_millis, HourRow, RequestLogRow, HOUR_COLUMNS, REQUEST_LOG_COLUMNS};
use super::Store;
use crate::audit::NewAuditEvent;
use crate::keys::KeyId;

/// Requests of one key in one minute with one method, route, status and
/// outcome. Rows with the same key add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    pub key_id: KeyId,
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
    pub outcome: &'static str,
    pub count: u64,
}

/// Requests of one key in one hour from one client IP (`ip` is `other` for
/// those past the cap of addresses kept per key and minute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCount {
    pub key_id: KeyId,
    /// Hours since the Unix epoch (UTC).
    pub hour: i64,
    pub ip: String,
    pub count: u64,
}

/// One request for the log, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequestLog {
    pub key_id: KeyId,
    pub at: DateTime<Utc>,
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
    pub reason: Option<&'static str>,
    pub ip: String,
    pub latency_us: u32,
    pub target_user_id: Option<u64>,
    pub target_role_id: Option<u64>,
    /// A refusal that matters (see `service::usage::NOTABLE_REASONS`),
    /// kept apart from the rest: trimmed to its own newest rows.
    pub notable: bool,
}

/// One request as the log keeps it, read back. Never a token or a header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RequestLogEntry {
    /// Increasing: pass the last one's id as `before` for the next page.
    pub id: i64,
    pub at: DateTime<Utc>,
    #[schema(example = "GET")]
    pub method: String,
    /// The route template, or `(no route)`.
    #[schema(example = "/v1/guilds/{guild_id}/bans/{user_id}")]
    pub route: String,
    pub status: u16,
    /// The error reason; null for a success.
    #[schema(example = "insufficient_scope")]
    pub reason: Option<String>,
    #[schema(example = "203.0.113.7")]
    pub ip: String,
    pub latency_us: u64,
    /// The member a write was about (bans, roles), as a string.
    pub target_user_id: Option<String>,
    /// The role a role write was about, as a string.
    pub target_role_id: Option<String>,
}

/// A key's requests in one hour with one method, route, status and
/// outcome, read back: the hour's total, and its minute buckets while they
/// are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    /// Hours since the Unix epoch (UTC).
    pub hour: i64,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub outcome: String,
    pub count: u64,
    /// The 60 minute buckets, or `None` once dropped.
    pub minutes: Option<Vec<u64>>,
}

/// What the hourly upkeep dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageUpkeep {
    /// Hour rows whose minute buckets were dropped (their totals stay).
    pub minutes_dropped: u64,
    pub hour_rows_dropped: u64,
    pub ip_rows_dropped: u64,
    pub log_rows_dropped: u64,
}

/// Rows held for one key (tests and operations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageRowsHeld {
    /// Hour rows that still hold their minute buckets.
    pub with_minutes: u64,
    pub hour_rows: u64,
    pub ip_rows: u64,
    pub log_rows: u64,
}

/// The statuses that count as refusals for the spike alert.
pub const REFUSAL_STATUSES: [u16; 3] = [401, 403, 429];

impl Store {
    /// Adds counted requests, in one transaction: each minute's counts to
    /// its hour row's total and minute bucket at once (so an hour always
    /// holds the sum of its minutes, whichever instance flushed them), and
    /// requests per client address block and hour, and per block and day
    /// (what reports over 7 and 30 days read). Counts with the same key must have
    /// been added up already. Rows go in sorted, so concurrent flushes from
    /// several instances lock rows in one order.
    pub async fn record_counters(&self, minutes: &[MinuteCount], ips: &[IpCount]) -> anyhow::Result<()> {
        if minutes.is_empty() && ips.is_empty() {
            return Ok(());
        }
        let days = ip_days(ips);
        db_run!(transaction self, |tx| { dialect::record_counters(tx, minutes, ips, &days).await? });
        Ok(())
    }

    /// Appends requests to the log and trims each key in `trim` to its
    /// newest `keep[0]` rows that are not notable and its newest `keep[1]`
    /// notable ones, in one transaction.
    pub async fn record_requests(&self, rows: &[NewRequestLog], trim: &[KeyId], keep: [u32; 2]) -> anyhow::Result<()> {
        if rows.is_empty() && trim.is_empty() {
            return Ok(());
        }
        db_run!(transaction self, |tx| { dialect::record_requests(tx, rows, trim, keep).await? });
        Ok(())
    }

    /// Keeps, for each (key, hour) in `pairs`, the `keep` busiest client
    /// addresses' rows and adds the rest into the hour's `other` row, in one
    /// transaction: a key used from endless addresses holds at most
    /// `keep + 1` rows an hour, whatever each flush brought.
    /// The same for `day_pairs` (key, day since the epoch) in the day rows.
    pub async fn trim_usage_ips(
        &self,
        pairs: &[(KeyId, i64)],
        day_pairs: &[(KeyId, i64)],
        keep: u32,
    ) -> anyhow::Result<()> {
        if pairs.is_empty() && day_pairs.is_empty() {
            return Ok(());
        }
        let statements = |table: &str, unit: &str| {
            // The rows past the busiest `keep`, the busiest first (ties by address).
            let beyond = format!(
                "select ip from {table} where {unit} = $1 and api_key_id = $2 and ip <> 'other' \
                 order by count desc, ip limit 1000000000 offset $3"
            );
            let fold = format!(
                "insert into {table} ({unit}, api_key_id, ip, count) \
                 select $1, $2, 'other', cast(sum(count) as bigint) from {table} \
                 where {unit} = $1 and api_key_id = $2 and ip in ({beyond}) group by api_key_id \
                 on conflict ({unit}, api_key_id, ip) do update set count = {table}.count + excluded.count"
            );
            let drop = format!("delete from {table} where {unit} = $1 and api_key_id = $2 and ip in ({beyond})");
            [fold, drop]
        };
        let sorted = |pairs: &[(KeyId, i64)]| {
            let mut sorted = pairs.to_vec();
            sorted.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            sorted
        };
        let work = [
            (statements("usage_ip_hour", "hour"), sorted(pairs)),
            (statements("usage_ip_day", "day"), sorted(day_pairs)),
        ];
        db_run!(transaction self, |tx| {
            for (sqls, pairs) in &work {
                for (key, unit) in pairs {
                    for sql in sqls {
                        sqlx::query(sql).bind(*unit).bind(key.as_str()).bind(i64::from(keep)).execute(&mut *tx).await?;
                    }
                }
            }
        });
        Ok(())
    }

    /// A key's requests per hour in `[from_hour, to_hour)`, by method,
    /// route, status and outcome, with the minute buckets still kept.
    pub async fn usage_hours(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<HourCount>> {
        let rows = db_run!(read self, |c| {
            let sql = format!(
                "select {HOUR_COLUMNS}, case when {} then {} end as minutes \
                 from usage_hour where api_key_id = $1 and hour >= $2 and hour < $3",
                dialect::MINUTES_KEPT,
                dialect::MINUTES_AS_JSON,
            );
            sqlx::query_as::<_, HourRow>(&sql)
                .bind(key.as_str())
                .bind(from_hour)
                .bind(to_hour)
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows::hours(rows))
    }

    /// A key's requests per client IP over `[from_hour, to_hour)`, most first.
    pub async fn usage_ips(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = db_run!(read self, |c| {
            sqlx::query_as(
                "select ip, cast(sum(count) as bigint) as n from usage_ip_hour \
                 where api_key_id = $1 and hour >= $2 and hour < $3 \
                 group by ip order by n desc, ip",
            )
            .bind(key.as_str())
            .bind(from_hour)
            .bind(to_hour)
            .fetch_all(&mut *c)
            .await?
        });
        Ok(rows::counted(rows))
    }

    /// A key's requests over `[from_hour, to_hour)` added up per bucket of
    /// `bucket_hours` (each returned with its first hour), method, route,
    /// status and outcome, without minute buckets: what a usage report
    /// reads. However much a key did, at most the period's buckets times
    /// its (method, route, status, outcome) combinations come back.
    pub async fn usage_buckets(
        &self,
        key: &KeyId,
        from_hour: i64,
        to_hour: i64,
        bucket_hours: i64,
    ) -> anyhow::Result<Vec<HourCount>> {
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, HourRow>(
                "select $2 + (hour - $2) / $4 * $4 as hour, method, route, status, outcome, \
                     cast(sum(count) as bigint) as count, cast(null as text) as minutes \
                 from usage_hour where api_key_id = $1 and hour >= $2 and hour < $3 \
                 group by (hour - $2) / $4, method, route, status, outcome",
            )
            .bind(key.as_str())
            .bind(from_hour)
            .bind(to_hour)
            .bind(bucket_hours.max(1))
            .fetch_all(&mut *c)
            .await?
        });
        Ok(rows::hours(rows))
    }

    /// A key's `limit` busiest client address blocks over `[from_hour,
    /// to_hour)`, most first (`other` among them when it is), and how many
    /// distinct blocks there were besides `other`: added up in the
    /// database, so the process holds `limit` rows whatever the data.
    ///
    /// Over more than 24 hours, the day rows of every day the period
    /// touches are read (at most 101 a day), not its hour rows.
    pub async fn usage_top_ips(
        &self,
        key: &KeyId,
        from_hour: i64,
        to_hour: i64,
        limit: u32,
    ) -> anyhow::Result<(Vec<(String, u64)>, u64)> {
        let (table, unit, from, to) = if to_hour - from_hour > 24 {
            ("usage_ip_day", "day", from_hour.div_euclid(24), (to_hour - 1).div_euclid(24) + 1)
        } else {
            ("usage_ip_hour", "hour", from_hour, to_hour)
        };
        let sql = format!(
            "select ip, cast(sum(count) as bigint) as n, \
                 cast(sum(case when ip = 'other' then 0 else 1 end) over () as bigint) as blocks \
             from {table} where api_key_id = $1 and {unit} >= $2 and {unit} < $3 \
             group by ip order by n desc, ip limit $4"
        );
        let rows: Vec<(String, i64, i64)> = db_run!(read self, |c| {
            sqlx::query_as(&sql).bind(key.as_str()).bind(from).bind(to).bind(i64::from(limit)).fetch_all(&mut *c).await?
        });
        let distinct = rows.first().map_or(0, |r| r.2.max(0) as u64);
        Ok((rows.into_iter().map(|(ip, n, _)| (ip, n.max(0) as u64)).collect(), distinct))
    }

    /// A key's refusals (401, 403, 429) by outcome over minutes
    /// `[from_minute, to_minute)` (flushed minutes only, while kept).
    pub async fn refusals(&self, key: &KeyId, from_minute: i64, to_minute: i64) -> anyhow::Result<Vec<(String, u64)>> {
        let hours = self.usage_hours(key, from_minute.div_euclid(60), to_minute.div_euclid(60) + 1).await?;
        let mut by_outcome: std::collections::BTreeMap<String, u64> = Default::default();
        for h in hours.iter().filter(|h| REFUSAL_STATUSES.contains(&h.status)) {
            let Some(minutes) = &h.minutes else { continue };
            let n: u64 = (0..60i64)
                .filter(|m| (from_minute..to_minute).contains(&(h.hour * 60 + m)))
                .map(|m| minutes[m as usize])
                .sum();
            if n > 0 {
                *by_outcome.entry(h.outcome.clone()).or_default() += n;
            }
        }
        let mut out: Vec<(String, u64)> = by_outcome.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// A page of a key's request log, newest first, older than the entry
    /// `before` when given; with `errors_only`, statuses 400 and up only.
    pub async fn request_log(
        &self,
        key: &KeyId,
        before: Option<i64>,
        limit: u32,
        errors_only: bool,
    ) -> anyhow::Result<Vec<RequestLogEntry>> {
        let sql = format!(
            "select {REQUEST_LOG_COLUMNS} from request_log where api_key_id = $1 \
             and (cast($2 as bigint) is null or request_log_id < $2) and (not $3 or status >= 400) \
             order by request_log_id desc limit $4"
        );
        let rows = db_run!(read self, |c| {
            sqlx::query_as::<_, RequestLogRow>(&sql)
                .bind(key.as_str())
                .bind(before)
                .bind(errors_only)
                .bind(i64::from(limit))
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows::request_log(rows))
    }

    /// Records that `key` is spiking at `now` and, when this is a new spike
    /// (none seen in the `quiet_ms` before) and the last alert is at least
    /// `every_ms` old, that it is alerted, writing `event` in the same
    /// transaction. Returns whether it was: however many instances see the
    /// spike, one alert is written (the upsert locks the key's alert row, so
    /// they take turns and the second sees it alerted).
    pub async fn claim_usage_alert(
        &self,
        key: &KeyId,
        now: DateTime<Utc>,
        quiet_ms: i64,
        every_ms: i64,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        let now_ms = to_millis(now);
        Ok(db_run!(transaction self, |tx| {
            let (alerted_at,): (i64,) = sqlx::query_as(
                "insert into usage_alert (api_key_id, alerted_at, spiking_at) values ($1, $2, $2) \
                 on conflict (api_key_id) do update set \
                     alerted_at = case when $2 - usage_alert.spiking_at >= $3 and $2 - usage_alert.alerted_at >= $4 \
                         then $2 else usage_alert.alerted_at end, \
                     spiking_at = case when usage_alert.spiking_at > $2 then usage_alert.spiking_at else $2 end \
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
                insert_audit_in(&mut *tx, event, now).await?;
            }
            alerted
        }))
    }

    /// Drops the minute buckets of hours before `minutes_before` (their
    /// totals stay), hour and IP buckets before `hours_before`, log entries
    /// before `log_before`, and alert states older than `alerts_before`.
    pub async fn prune_usage(
        &self,
        minutes_before: i64,
        hours_before: i64,
        log_before: DateTime<Utc>,
        alerts_before: DateTime<Utc>,
    ) -> anyhow::Result<UsageUpkeep> {
        Ok(db_run!(transaction self, |tx| {
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
            sqlx::query("delete from usage_ip_day where day < $1")
                .bind(hours_before.div_euclid(24))
                .execute(&mut *tx)
                .await?;
            let log = sqlx::query("delete from request_log where at < $1")
                .bind(to_millis(log_before))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("delete from usage_alert where spiking_at < $1 and alerted_at < $1")
                .bind(to_millis(alerts_before))
                .execute(&mut *tx)
                .await?;
            UsageUpkeep { minutes_dropped: minutes, hour_rows_dropped: hours, ip_rows_dropped: ips, log_rows_dropped: log }
        }))
    }

    /// Forgets a deleted key's counters, log and alert state.
    pub async fn forget_usage(&self, key: &KeyId) -> anyhow::Result<()> {
        db_run!(transaction self, |tx| {
            for table in ["usage_hour", "usage_ip_hour", "usage_ip_day", "request_log", "usage_alert"] {
                sqlx::query(&format!("delete from {table} where api_key_id = $1"))
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// How many usage rows the store holds for a key (tests, operations).
    pub async fn usage_rows_held(&self, key: &KeyId) -> anyhow::Result<UsageRowsHeld> {
        let (with_minutes, hour_rows, ip_rows, log_rows): (i64, i64, i64, i64) = db_run!(read self, |c| {
            let sql = format!(
                "select (select count(*) from usage_hour where api_key_id = $1 and {}), \
                     (select count(*) from usage_hour where api_key_id = $1), \
                     (select count(*) from usage_ip_hour where api_key_id = $1), \
                     (select count(*) from request_log where api_key_id = $1)",
                dialect::MINUTES_KEPT
            );
            sqlx::query_as(&sql).bind(key.as_str()).fetch_one(&mut *c).await?
        });
        Ok(UsageRowsHeld {
            with_minutes: with_minutes as u64,
            hour_rows: hour_rows as u64,
            ip_rows: ip_rows as u64,
            log_rows: log_rows as u64,
        })
    }
}

/// Minute counts grouped into statements in which each hour row (key,
/// hour, method, route, status, outcome) appears once (PostgreSQL refuses
/// one row twice in an upsert, and a statement adds to one minute of each
/// row): usually one wave, more when a batch holds several minutes of one
/// row (a shutdown flush, a retried batch). Each wave is sorted, so that
/// concurrent flushes lock rows in one order.
pub(super) fn waves(minutes: &[MinuteCount]) -> Vec<Vec<&MinuteCount>> {
    let mut sorted: Vec<&MinuteCount> = minutes.iter().collect();
    sorted.sort_by(|a, b| {
        (a.minute.div_euclid(60), &a.key_id, a.method, a.route, a.status, a.outcome, a.minute).cmp(&(
            b.minute.div_euclid(60),
            &b.key_id,
            b.method,
            b.route,
            b.status,
            b.outcome,
            b.minute,
        ))
    });
    let mut waves: Vec<Vec<&MinuteCount>> = Vec::new();
    let mut nth = 0;
    for (i, m) in sorted.iter().enumerate() {
        let same_row = i > 0 && {
            let p = sorted[i - 1];
            (p.minute.div_euclid(60), &p.key_id, p.method, p.route, p.status, p.outcome)
                == (m.minute.div_euclid(60), &m.key_id, m.method, m.route, m.status, m.outcome)
        };
        nth = if same_row { nth + 1 } else { 0 };
        if waves.len() <= nth {
            waves.push(Vec::new());
        }
        waves[nth].push(m);
    }
    waves
}

/// Requests per key, day and address block, added up from `ips` (per
/// hour): the rows of `usage_ip_day`, each once (`hour` holds the day).
pub(super) fn ip_days(ips: &[IpCount]) -> Vec<IpCount> {
    let mut days: std::collections::HashMap<(&KeyId, i64, &str), u64> = std::collections::HashMap::new();
    for r in ips {
        *days.entry((&r.key_id, r.hour.div_euclid(24), r.ip.as_str())).or_default() += r.count;
    }
    days.into_iter()
        .map(|((key_id, day, ip), count)| IpCount { key_id: key_id.clone(), hour: day, ip: ip.to_owned(), count })
        .collect()
}

/// A new hour row's minute buckets: `count` in minute `m` of 60, as JSON.
pub(super) fn minutes_json(m: usize, count: i64) -> String {
    let mut out = String::with_capacity(130);
    out.push('[');
    for i in 0..60 {
        if i > 0 {
            out.push(',');
        }
        if i == m {
            out.push_str(&count.to_string());
        } else {
            out.push('0');
        }
    }
    out.push(']');
    out
}

/// The minute of its hour (0–59) a minute count is in.
pub(super) fn minute_of_hour(minute: i64) -> i64 {
    minute.rem_euclid(60)
}

/// Saturating `u64` to the databases' signed 64-bit integers.
pub(super) fn count_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(key: &KeyId, minute: i64, route: &'static str) -> MinuteCount {
        MinuteCount { key_id: key.clone(), minute, method: "GET", route, status: 200, outcome: "ok", count: 1 }
    }

    #[test]
    fn each_hour_row_appears_once_per_wave() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        let minutes =
            [count(&a, 61, "/x"), count(&a, 62, "/x"), count(&b, 61, "/x"), count(&a, 61, "/y"), count(&a, 1, "/x")];
        let waves = waves(&minutes);
        assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), [4, 1]);
        assert_eq!(waves[1][0].minute, 62);
        assert_eq!(minutes_json(2, 7), format!("[0,0,7{}]", ",0".repeat(57)));
    }
}
