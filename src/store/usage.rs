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
/// outcome, read back (the hour's rolled-up bucket and its minutes not yet
/// rolled up, added together by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    /// Hours since the Unix epoch (UTC).
    pub hour: i64,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub outcome: String,
    pub count: u64,
}

/// What the hourly upkeep dropped and rolled up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageUpkeep {
    /// Minutes added to the hour buckets.
    pub minutes_rolled: i64,
    pub minute_rows_dropped: u64,
    pub hour_rows_dropped: u64,
    pub ip_rows_dropped: u64,
    pub log_rows_dropped: u64,
}

/// Rows held for one key (tests and operations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageRowsHeld {
    pub minute_rows: u64,
    pub hour_rows: u64,
    pub ip_rows: u64,
    pub log_rows: u64,
}

/// The statuses that count as refusals for the spike alert.
pub const REFUSAL_STATUSES: [u16; 3] = [401, 403, 429];

/// The name of the rollup mark in `usage_rollup`: the first minute not yet
/// added to the hour buckets.
pub(super) const ROLLUP_MARK: &str = "minutes_through";

/// The minutes among `minutes` that were rolled up already (before the mark
/// `through`), added up per hour: a flush adds these to the hour buckets
/// too (each row's `minute` holds its hour). Sorted, so that concurrent
/// flushes lock rows in one order.
pub(super) fn late_hours(minutes: &[MinuteCount], through: Option<i64>) -> Vec<MinuteCount> {
    let Some(through) = through else { return Vec::new() };
    let mut hours: std::collections::BTreeMap<(KeyId, i64, &str, &str, u16, &str), u64> = Default::default();
    for m in minutes.iter().filter(|m| m.minute < through) {
        *hours
            .entry((m.key_id.clone(), m.minute.div_euclid(60), m.method, m.route, m.status, m.outcome))
            .or_default() += m.count;
    }
    hours
        .into_iter()
        .map(|((key_id, hour, method, route, status, outcome), count)| MinuteCount {
            key_id,
            minute: hour,
            method,
            route,
            status,
            outcome,
            count,
        })
        .collect()
}

/// Saturating `u64` to the databases' signed 64-bit integers.
pub(super) fn count_to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
