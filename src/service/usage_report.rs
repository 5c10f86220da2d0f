//! What a key's usage looks like over a period: buckets by outcome class
//! for a chart, totals per outcome, top routes, top client IPs and the
//! error share. Built from the store's hour counts (every instance's
//! written minutes, added up per hour) and this process's counts not yet
//! written,
//! so a request shows at once.
//!
//! Periods end with the current bucket, aligned to UTC:
//! - `24h`: the current hour and the 23 before it, one bucket an hour;
//! - `7d`: 28 buckets of 6 hours (from 00:00, 06:00, 12:00, 18:00);
//! - `30d`: the current day and the 29 before it, one bucket a day.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::keys::InvalidInput;
use crate::store::{HourCount, IpCount, MinuteCount, RequestLogEntry};

/// How far back a usage report looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum Period {
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    /// `24h`, `7d` or `30d` (surrounding space ignored).
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let s = s.trim();
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let shown: String = s.chars().filter(|c| !c.is_control()).take(20).collect();
            InvalidInput::new("period", format!("'{shown}' is not a period; use 24h, 7d or 30d"))
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    /// Hours per bucket.
    pub fn bucket_hours(self) -> i64 {
        match self {
            Self::Day => 1,
            Self::Week => 6,
            Self::Month => 24,
        }
    }

    pub fn buckets(self) -> i64 {
        match self {
            Self::Day => 24,
            Self::Week => 28,
            Self::Month => 30,
        }
    }

    /// What one bucket is, in words (a chart's axis).
    pub fn bucket_label(self) -> &'static str {
        match self {
            Self::Day => "hour",
            Self::Week => "6 hours",
            Self::Month => "day",
        }
    }

    /// The hours `[from, to)` (since the epoch) the period covers at `now`.
    pub fn hours(self, now: DateTime<Utc>) -> (i64, i64) {
        let hour = now.timestamp().div_euclid(3600);
        let size = self.bucket_hours();
        let to = (hour.div_euclid(size) + 1) * size;
        (to - size * self.buckets(), to)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome classes each bucket counts, in order: below 400; 4xx but
/// 429; 429; 5xx.
pub const CLASSES: [&str; 4] = ["ok", "client_error", "rate_limited", "server_error"];

/// The same classes as a chart's legend shows them (the README's words).
pub const CLASS_LABELS: [&str; 4] = ["ok", "4xx", "429", "5xx"];

fn class_of(status: u16) -> usize {
    match status {
        0..=399 => 0,
        429 => 2,
        500.. => 3,
        _ => 1,
    }
}

/// Routes and IPs a report names, the busiest first.
pub const TOP: usize = 5;

/// A key's usage over a period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    #[schema(example = "key_7kJbQWk3evOIrhMP")]
    pub key_id: String,
    pub period: Period,
    /// The first bucket's start.
    pub from: DateTime<Utc>,
    /// The end of the last (current) bucket.
    pub to: DateTime<Utc>,
    #[schema(example = 3600)]
    pub bucket_seconds: i64,
    /// Requests per bucket by outcome class, oldest first (every bucket, empty ones too).
    pub buckets: Vec<UsageBucket>,
    pub total: u64,
    /// Requests per outcome: `ok`, each 4xx reason, `rate_limited`, `5xx`.
    #[schema(example = json!({"ok": 7, "insufficient_scope": 3, "rate_limited": 2}))]
    pub outcomes: BTreeMap<String, u64>,
    /// Requests that were not `ok`, as a share of all (0 with no requests).
    #[schema(example = 0.36)]
    pub error_share: f64,
    /// The busiest routes ("METHOD template"), with their requests that were not `ok`.
    pub top_routes: Vec<RouteUsage>,
    /// The busiest client IPs (`other`: those past the cap of addresses
    /// kept per minute).
    pub top_ips: Vec<IpUsage>,
    pub distinct_ips: u64,
}

/// One bucket of a [`UsageReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageBucket {
    pub start: DateTime<Utc>,
    pub ok: u64,
    /// 4xx other than 429.
    pub client_error: u64,
    pub rate_limited: u64,
    pub server_error: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RouteUsage {
    #[schema(example = "GET /v1/guilds/{guild_id}/bans/{user_id}")]
    pub route: String,
    pub count: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IpUsage {
    #[schema(example = "203.0.113.7")]
    pub ip: String,
    pub count: u64,
}

impl UsageReport {
    /// The chart's series, as `crate::chart::UsageChart` takes them: the
    /// outcome classes' labels ([`CLASS_LABELS`]), and each bucket's start
    /// with its counts in that order.
    pub fn chart_series(&self) -> (Vec<&'static str>, Vec<ChartBucket>) {
        let buckets = self
            .buckets
            .iter()
            .map(|b| (b.start, vec![b.ok, b.client_error, b.rate_limited, b.server_error]))
            .collect();
        (CLASS_LABELS.to_vec(), buckets)
    }

    /// Requests that were not `ok`.
    pub fn errors(&self) -> u64 {
        self.total - self.outcomes.get("ok").copied().unwrap_or(0)
    }
}

/// One bucket of a chart: its start and its counts per outcome class.
pub type ChartBucket = (DateTime<Utc>, Vec<u64>);

fn hour_start(hour: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(hour * 3600, 0).single().unwrap_or_default()
}

/// Builds the report for `key_id` over `period` at `now` from the store's
/// hour counts and IP counts over [`Period::hours`], and this process's
/// counts not yet written (`pending`, `pending_ips`; those outside the
/// period are left out).
/// The busiest address blocks read from the store for a report: enough
/// that this process's unwritten counts rarely change which five lead.
pub const IPS_READ: u32 = 50;

/// A key's written address counts over a period, as the store adds them
/// up: the busiest blocks (at most [`IPS_READ`]), and how many distinct
/// blocks there were besides `other`.
#[derive(Debug, Clone, Copy)]
pub struct StoredIps<'a> {
    pub top: &'a [(String, u64)],
    pub distinct: u64,
}

pub fn build(
    key_id: &str,
    period: Period,
    now: DateTime<Utc>,
    hours: &[HourCount],
    stored: StoredIps<'_>,
    pending: &[MinuteCount],
    pending_ips: &[IpCount],
) -> UsageReport {
    let (from, to) = period.hours(now);
    let size = period.bucket_hours();
    let mut buckets: Vec<UsageBucket> = (0..period.buckets())
        .map(|i| UsageBucket {
            start: hour_start(from + i * size),
            ok: 0,
            client_error: 0,
            rate_limited: 0,
            server_error: 0,
        })
        .collect();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut routes: HashMap<String, (u64, u64)> = HashMap::new();
    let mut total = 0;
    let counts = hours
        .iter()
        .map(|h| (h.hour, h.method.as_str(), h.route.as_str(), h.status, h.outcome.as_str(), h.count))
        .chain(pending.iter().map(|m| (m.minute.div_euclid(60), m.method, m.route, m.status, m.outcome, m.count)));
    for (hour, method, route, status, outcome, n) in counts {
        if hour < from || hour >= to || n == 0 {
            continue;
        }
        let bucket = &mut buckets[((hour - from) / size) as usize];
        let class = match class_of(status) {
            0 => &mut bucket.ok,
            1 => &mut bucket.client_error,
            2 => &mut bucket.rate_limited,
            _ => &mut bucket.server_error,
        };
        *class += n;
        total += n;
        *outcomes.entry(outcome.to_owned()).or_default() += n;
        let route = routes.entry(format!("{method} {route}")).or_default();
        route.0 += n;
        if outcome != "ok" {
            route.1 += n;
        }
    }
    let mut by_ip: HashMap<&str, u64> = stored.top.iter().map(|(ip, n)| (ip.as_str(), *n)).collect();
    // Blocks only this process has counted so far add to the distinct
    // count (one the store holds beyond those read may count twice until
    // the next flush).
    let mut distinct_ips = stored.distinct;
    for p in pending_ips.iter().filter(|p| p.hour >= from && p.hour < to) {
        let entry = by_ip.entry(p.ip.as_str()).or_insert_with(|| {
            distinct_ips += u64::from(p.ip != "other");
            0
        });
        *entry += p.count;
    }
    let mut top_ips: Vec<IpUsage> = by_ip.into_iter().map(|(ip, count)| IpUsage { ip: ip.to_owned(), count }).collect();
    top_ips.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.ip.cmp(&b.ip)));
    top_ips.truncate(TOP);
    let mut top_routes: Vec<RouteUsage> =
        routes.into_iter().map(|(route, (count, errors))| RouteUsage { route, count, errors }).collect();
    top_routes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.route.cmp(&b.route)));
    top_routes.truncate(TOP);
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    UsageReport {
        key_id: key_id.to_owned(),
        period,
        from: hour_start(from),
        to: hour_start(to),
        bucket_seconds: size * 3600,
        buckets,
        total,
        error_share: if total == 0 { 0.0 } else { (total - ok) as f64 / total as f64 },
        outcomes,
        top_routes,
        top_ips,
        distinct_ips,
    }
}

/// One page of a key's request log, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RequestPage {
    pub entries: Vec<RequestLogEntry>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// Requests and those that were not `ok`, over some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
}

/// What `/apikey info` shows of a key's usage.
#[derive(Debug, Clone, Serialize)]
pub struct UsageSummary {
    pub last_24h: Totals,
    pub last_7d: Totals,
    /// The latest requests that were refused or failed, newest first.
    pub recent_errors: Vec<RequestLogEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_end_with_the_current_bucket() {
        assert_eq!(Period::parse(" 7D ").unwrap(), Period::Week);
        let e = Period::parse("1y").unwrap_err();
        assert_eq!(e.to_string(), "period: '1y' is not a period; use 24h, 7d or 30d");
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 13, 30, 0).unwrap();
        let hour = now.timestamp() / 3600;
        assert_eq!(Period::Day.hours(now), (hour - 23, hour + 1));
        let (from, to) = Period::Week.hours(now);
        assert_eq!((to - from, hour_start(to)), (168, Utc.with_ymd_and_hms(2026, 3, 4, 18, 0, 0).unwrap()));
        let (from, to) = Period::Month.hours(now);
        assert_eq!(
            (hour_start(from), hour_start(to)),
            (Utc.with_ymd_and_hms(2026, 2, 3, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_report_adds_stored_and_pending_counts_into_buckets_outcomes_routes_and_ips() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 13, 30, 0).unwrap();
        let hour = now.timestamp() / 3600;
        let row = |hour, status, outcome: &str, count| HourCount {
            hour,
            method: "GET".into(),
            route: "/v1/verify".into(),
            status,
            outcome: outcome.into(),
            count,
            minutes: None,
        };
        let hours =
            [row(hour - 2, 200, "ok", 5), row(hour, 403, "insufficient_scope", 3), row(hour - 30, 200, "ok", 9)];
        let pending = [MinuteCount {
            key_id: crate::keys::KeyId::generate(),
            minute: hour * 60 + 29,
            method: "GET",
            route: "/v1/verify",
            status: 429,
            outcome: "rate_limited",
            count: 2,
        }];
        let ips = [("203.0.113.1".to_owned(), 8)];
        let pending_ips = [IpCount { key_id: pending[0].key_id.clone(), hour, ip: "203.0.113.2".into(), count: 2 }];
        let r = build("key_x", Period::Day, now, &hours, StoredIps { top: &ips, distinct: 1 }, &pending, &pending_ips);
        assert_eq!(r.buckets.len(), 24);
        assert_eq!(r.total, 10, "the hour outside the period is left out");
        assert_eq!((r.buckets[21].ok, r.buckets[23].client_error, r.buckets[23].rate_limited), (5, 3, 2));
        assert_eq!(
            r.outcomes,
            BTreeMap::from([("ok".into(), 5), ("insufficient_scope".into(), 3), ("rate_limited".into(), 2)])
        );
        assert!((r.error_share - 0.5).abs() < 1e-9);
        assert_eq!(r.top_routes, [RouteUsage { route: "GET /v1/verify".into(), count: 10, errors: 5 }]);
        assert_eq!((r.distinct_ips, r.top_ips[0].ip.as_str()), (2, "203.0.113.1"));
        let (classes, series) = r.chart_series();
        assert_eq!((classes, series.len(), &series[23].1), (CLASS_LABELS.to_vec(), 24, &vec![0, 3, 2, 0]));
    }
}
