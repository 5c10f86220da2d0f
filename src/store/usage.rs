//! What the store keeps of usage: per-key request counters by minute and by
//! hour, requests per client IP and hour, the request log, and the
//! refusal-spike alert's state. The calls both backends answer are the usage
//! block of `impl Store` at the end of `store/mod.rs`. The rules (what is
//! counted, what is logged, buckets, retention, when a spike is alerted) are
//! the service's (`service::usage`, `service::usage_report`,
//! `service::spike`); the store adds up, keeps and drops.

use chrono::{DateTime, Utc};

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
