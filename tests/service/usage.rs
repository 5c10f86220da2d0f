//! Usage: counters, the request log, retention, refusal spikes.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::{Action, Actor, AuditEvent};
use guildkey::service::{IssuedKey, KeyService};
use guildkey::store::Store;

use guildkey::config::UsageConfig;
use guildkey::service::usage::{RequestFacts, UNMATCHED_ROUTE};
use guildkey::service::usage_report::Period;

/// A fixed time well inside a UTC hour, for tests that move time by hand.
fn usage_epoch() -> chrono::DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(2026, 3, 4, 13, 20, 10).unwrap()
}

fn usage_minute(at: chrono::DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// One request of `method route` answered `status` (`reason`) at `at`.
fn request(
    at: chrono::DateTime<Utc>,
    method: &'static str,
    route: &'static str,
    status: u16,
    reason: Option<&'static str>,
    from: &str,
) -> RequestFacts {
    RequestFacts {
        at_ms: at.timestamp_millis(),
        method,
        route,
        status,
        reason,
        ip: ip(from),
        latency_us: 42,
        target_user: None,
        target_role: None,
    }
}

const BANS: &str = "/v1/guilds/{guild_id}/bans/{user_id}";

/// 7 verifications, 3 refused for scope, 2 rate-limited and 1 to no route,
/// one second apart from `at`.
fn known_traffic(at: chrono::DateTime<Utc>) -> Vec<RequestFacts> {
    let mut sent = Vec::new();
    for _ in 0..7 {
        sent.push(request(at, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    }
    for _ in 0..3 {
        sent.push(request(at, "GET", BANS, 403, Some("insufficient_scope"), "203.0.113.2"));
    }
    for _ in 0..2 {
        sent.push(request(at, "GET", "/v1/verify", 429, Some("rate_limited"), "203.0.113.1"));
    }
    sent.push(request(at, "GET", UNMATCHED_ROUTE, 404, Some("not_found"), "203.0.113.3"));
    for (i, r) in sent.iter_mut().enumerate() {
        r.at_ms += i as i64 * 1000;
    }
    sent
}

async fn usage_service(db: &Db, usage: UsageConfig) -> (Store, KeyService) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let service = KeyService::with_usage(store.clone(), config(3), usage).await.expect("build the service");
    (store, service)
}

#[tokio::test]
async fn usage_counts_each_outcome_exactly_before_and_after_the_flush() {
    // Arrange
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "counted").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();

    // Act
    for r in known_traffic(t0) {
        service.record_request(&caller.key, &r);
    }
    let pending = service.usage(&key.record.id, Period::Day, t0 + chrono::Duration::seconds(30)).await.unwrap();
    // The first flush after the minute ended writes its counters.
    service.flush_usage_at(t0 + chrono::Duration::seconds(70), false).await.unwrap();
    let written = service.usage(&key.record.id, Period::Day, t0 + chrono::Duration::seconds(80)).await.unwrap();
    service.flush_usage_at(t0 + chrono::Duration::seconds(90), false).await.unwrap();
    let week = service.usage(&key.record.id, Period::Week, t0 + chrono::Duration::seconds(95)).await.unwrap();

    // Assert
    let expected: std::collections::BTreeMap<String, u64> =
        [("ok", 7), ("insufficient_scope", 3), ("rate_limited", 2), ("not_found", 1)]
            .into_iter()
            .map(|(o, n)| (o.to_owned(), n))
            .collect();
    for report in [&pending, &written, &week] {
        assert_eq!(report.outcomes, expected, "{:?}", report.period);
        assert_eq!(report.total, 13);
        assert!((report.error_share - 6.0 / 13.0).abs() < 1e-9);
        let last = report.buckets.last().unwrap();
        assert_eq!((last.ok, last.client_error, last.rate_limited, last.server_error), (7, 4, 2, 0));
        assert_eq!(report.top_routes[0].route, "GET /v1/verify");
        assert_eq!((report.top_routes[0].count, report.top_routes[0].errors), (9, 2));
        assert_eq!(report.top_ips[0].ip, "203.0.113.1");
        assert_eq!((report.top_ips[0].count, report.distinct_ips), (9, 3));
    }
    assert_eq!((pending.buckets.len(), week.buckets.len()), (24, 28));
}

#[tokio::test]
async fn the_request_log_keeps_every_request_but_successful_verifications_newest_first_per_key() {
    // Arrange: a log of 5 per key.
    let db = Db::new();
    let (_, service) = usage_service(&db, UsageConfig { request_log_per_key: 5, ..UsageConfig::default() }).await;
    let key = issue(&service, GUILD, "logged").await;
    let other = issue(&service, GUILD, "other").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let others = service.authenticate(other.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();

    // Act
    let traffic = known_traffic(t0);
    for r in &traffic {
        service.record_request(&caller.key, r);
    }
    let mut ban = request(t0 + chrono::Duration::seconds(20), "PUT", BANS, 200, None, "203.0.113.9");
    ban.target_user = Some(ADMIN);
    service.record_request(&others.key, &ban);
    let page = service.requests(&key.record.id, None, 100).await.unwrap();
    let first = service.requests(&key.record.id, None, 2).await.unwrap();
    let second = service.requests(&key.record.id, first.next_before, 2).await.unwrap();
    let theirs = service.requests(&other.record.id, None, 10).await.unwrap();

    // Assert: the 6 refusals of 13 requests are logged: the newest 5 of
    // the rest (3 here), and the notable refusals (scope) apart from them.
    let seen: Vec<(String, String, u16, Option<String>, String)> = page
        .entries
        .iter()
        .map(|e| (e.method.clone(), e.route.clone(), e.status, e.reason.clone(), e.ip.clone()))
        .collect();
    let row = |route: &str, status, reason: &str, ip: &str| {
        ("GET".to_owned(), route.to_owned(), status, Some(reason.to_owned()), ip.to_owned())
    };
    assert_eq!(
        seen,
        [
            row(UNMATCHED_ROUTE, 404, "not_found", "203.0.113.3"),
            row("/v1/verify", 429, "rate_limited", "203.0.113.1"),
            row("/v1/verify", 429, "rate_limited", "203.0.113.1"),
            row(BANS, 403, "insufficient_scope", "203.0.113.2"),
            row(BANS, 403, "insufficient_scope", "203.0.113.2"),
            row(BANS, 403, "insufficient_scope", "203.0.113.2"),
        ]
    );
    assert_eq!(page.entries[0].at.timestamp_millis(), traffic[12].at_ms);
    assert_eq!(page.entries[0].latency_us, 42);
    assert!(page.next_before.is_none());
    assert_eq!(first.entries.len(), 2);
    assert_eq!(second.entries.iter().map(|e| e.status).collect::<Vec<_>>(), [429, 403]);
    assert_eq!(second.entries[0].id, page.entries[2].id, "pages continue where the last ended");
    assert_eq!(theirs.entries.len(), 1);
    let put = &theirs.entries[0];
    assert_eq!((put.method.as_str(), put.status, put.target_user_id.clone()), ("PUT", 200, Some(ADMIN.to_string())));
}

#[tokio::test]
async fn retention_drops_minute_buckets_after_48_hours_and_hour_buckets_after_90_days() {
    // Arrange
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "kept").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    for r in known_traffic(t0) {
        service.record_request(&caller.key, &r);
    }
    service.flush_usage_at(at(1), false).await.unwrap();

    // Act and assert: each hour row holds its total and its minutes.
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert!(held.with_minutes > 0 && held.with_minutes == held.hour_rows, "{held:?}");
    let report = service.usage(&key.record.id, Period::Week, at(2)).await.unwrap();
    assert_eq!(report.total, 13);
    let refusals = store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap();
    assert_eq!(refusals, [("insufficient_scope".to_owned(), 3), ("rate_limited".to_owned(), 2)]);
    // A flush late for its minute still adds to the hour and the minute.
    service.record_request(&caller.key, &request(t0, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    service.flush_usage_at(at(60 + 42), false).await.unwrap();
    assert_eq!(service.usage(&key.record.id, Period::Week, at(60 + 43)).await.unwrap().total, 14);
    let nothing = service.maintain_usage(at(47 * 60)).await.unwrap();
    assert_eq!(nothing, Default::default(), "nothing is old enough to drop yet");

    // Past 48 hours the minutes go, the hours stay (and still count).
    let dropped = service.maintain_usage(at(49 * 60)).await.unwrap();
    assert!(dropped.minutes_dropped > 0, "{dropped:?}");
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!(held.with_minutes, 0, "{held:?}");
    assert!(held.hour_rows > 0 && held.ip_rows > 0 && held.log_rows > 0, "{held:?}");
    assert!(store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap().is_empty());
    let report = service.usage(&key.record.id, Period::Week, at(49 * 60)).await.unwrap();
    assert_eq!((report.total, report.outcomes["insufficient_scope"]), (14, 3));
    assert_eq!(report.distinct_ips, 3);
    // A batch held back past the minutes' retention still adds to its
    // hour's total, and brings no minute buckets back.
    service.record_request(&caller.key, &request(t0, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    service.flush_usage_at(at(49 * 60 + 1), false).await.unwrap();
    assert_eq!(store.usage_rows_held(&key.record.id).await.unwrap().with_minutes, 0);
    assert!(store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap().is_empty());
    assert_eq!(service.usage(&key.record.id, Period::Week, at(49 * 60 + 2)).await.unwrap().total, 15);

    // Past 90 days the hours, the addresses and the log go too.
    let dropped = service.maintain_usage(at(91 * 24 * 60)).await.unwrap();
    assert!(dropped.hour_rows_dropped > 0 && dropped.log_rows_dropped > 0, "{dropped:?}");
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!((held.with_minutes, held.hour_rows, held.ip_rows, held.log_rows), (0, 0, 0, 0));

    // Deleting a key forgets what is left of its usage.
    service.record_request(
        &caller.key,
        &request(at(91 * 24 * 60), "GET", "/v1/verify", 429, Some("rate_limited"), "203.0.113.1"),
    );
    service.flush_usage_at(at(91 * 24 * 60 + 2), false).await.unwrap();
    assert!(store.usage_rows_held(&key.record.id).await.unwrap().hour_rows > 0);
    service.revoke(Some(GUILD), "kept", &Actor::Cli).await.unwrap();
    service.delete(Some(GUILD), "kept", &Actor::Cli).await.unwrap();
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!((held.hour_rows, held.log_rows), (0, 0));
}

fn spike_alerts(events: &[AuditEvent], key: &IssuedKey) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.action == Action::UsageSpike && e.key_id.as_deref() == Some(key.record.id.as_str()))
        .cloned()
        .collect()
}

/// `n` refusals for scope of `caller`'s key at `at`.
fn refuse(service: &KeyService, caller: &guildkey::service::Authenticated, at: chrono::DateTime<Utc>, n: usize) {
    for _ in 0..n {
        service.record_request(&caller.key, &request(at, "GET", BANS, 403, Some("insufficient_scope"), "203.0.113.66"));
    }
}

#[tokio::test]
async fn a_refusal_spike_is_alerted_once_per_spike_and_at_most_hourly() {
    // Arrange
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "hammered").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);

    // Act and assert: 49 refusals are not a spike; the 50th is.
    refuse(&service, &caller, at(0), 49);
    service.flush_usage_at(at(1), false).await.unwrap();
    assert!(spike_alerts(&events(&service, GUILD).await, &key).is_empty());
    refuse(&service, &caller, at(30), 1);
    service.flush_usage_at(at(65), false).await.unwrap();
    let alerts = spike_alerts(&events(&service, GUILD).await, &key);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!((alert.actor.as_str(), alert.actor_kind.as_str()), ("guildkey", "system"));
    assert_eq!(alert.details["refusals"], 50);
    assert_eq!(alert.details["reasons"]["insufficient_scope"], 50);
    assert_eq!(alert.details["top_ips"]["203.0.113.66"], 50);

    // The spike goes on: no second alert.
    for minute in 2..8 {
        refuse(&service, &caller, at(minute * 60), 60);
        service.flush_usage_at(at(minute * 60 + 5), false).await.unwrap();
    }
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 1);

    // A new spike after a quiet spell, within the hour of the first: none.
    refuse(&service, &caller, at(40 * 60), 60);
    service.flush_usage_at(at(40 * 60 + 5), false).await.unwrap();
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 1, "at most one an hour");

    // A new spike after a quiet spell, over an hour after the alert: one more.
    refuse(&service, &caller, at(120 * 60), 60);
    service.flush_usage_at(at(120 * 60 + 5), false).await.unwrap();
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 2);
}

#[tokio::test]
async fn a_key_refused_all_day_needs_ten_times_its_usual_rate_to_spike() {
    // Arrange: 120 refusals an hour for the 24 hours before (10 per 5
    // minutes), then a quiet spell.
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "noisy").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    for hour in 0..24 {
        refuse(&service, &caller, at(hour * 60), 120);
        service.flush_usage_at(at(hour * 60 + 1), false).await.unwrap();
    }
    let before = spike_alerts(&events(&service, GUILD).await, &key).len();

    // Act: 99 refusals in five minutes is not ten times the usual 10…
    let later = 24 * 60 + 30;
    refuse(&service, &caller, at(later), 99);
    service.flush_usage_at(at(later) + chrono::Duration::seconds(10), false).await.unwrap();
    let after_99 = spike_alerts(&events(&service, GUILD).await, &key).len();
    // …100 is.
    refuse(&service, &caller, at(later + 1), 1);
    service.flush_usage_at(at(later + 2), false).await.unwrap();
    let after_100 = spike_alerts(&events(&service, GUILD).await, &key).len();

    // Assert
    assert_eq!(after_99, before);
    assert_eq!(after_100, before + 1);
}

#[tokio::test]
async fn addresses_count_by_ipv6_64_and_each_keys_hour_keeps_its_busiest_hundred_and_sums_the_rest() {
    // Arrange
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "botnet").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();

    // Act: three minutes, each from 150 addresses never seen before (one of
    // them busier each minute), plus 300 addresses of one IPv6 /64.
    let mut sent = 0u64;
    for minute in 0..3u32 {
        let at = t0 + chrono::Duration::minutes(i64::from(minute));
        for i in 0..150u32 {
            let n = if i == 0 { 5 } else { 1 };
            for _ in 0..n {
                let from = format!("10.{minute}.{}.{}", i / 256, i % 256);
                service.record_request(&caller.key, &request(at, "GET", "/v1/verify", 200, None, &from));
                sent += 1;
            }
        }
        for i in 0..100u32 {
            let from = format!("2001:db8:1:2:{minute:x}:{i:x}::1");
            service.record_request(&caller.key, &request(at, "GET", "/v1/verify", 200, None, &from));
            sent += 1;
        }
        service.flush_usage_at(at + chrono::Duration::seconds(60), false).await.unwrap();
    }

    // Assert: at most 100 addresses and `other` for the hour, nothing lost,
    // the /64 one address, and the busiest kept.
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert!(held.ip_rows <= 101, "{held:?}");
    let hour = usage_minute(t0).div_euclid(60);
    let ips = store.usage_ips(&key.record.id, hour, hour + 1).await.unwrap();
    assert_eq!(ips.iter().map(|(_, n)| n).sum::<u64>(), sent);
    assert_eq!(ips.iter().find(|(ip, _)| ip == "2001:db8:1:2::/64").map(|(_, n)| *n), Some(300), "{ips:?}");
    for minute in 0..3 {
        assert!(ips.iter().any(|(ip, n)| *ip == format!("10.{minute}.0.0") && *n == 5), "{minute}: {ips:?}");
    }
    assert!(ips.iter().any(|(ip, n)| ip == "other" && *n > 0));
    let report = service.usage(&key.record.id, Period::Day, t0 + chrono::Duration::minutes(4)).await.unwrap();
    assert!(report.distinct_ips <= 100, "{}", report.distinct_ips);
    let busiest = report.top_ips.iter().find(|i| i.ip != "other").unwrap();
    assert_eq!((busiest.ip.as_str(), busiest.count), ("2001:db8:1:2::/64", 300));
}

#[tokio::test]
async fn usage_reads_over_thirty_days_bring_back_a_bounded_number_of_rows_whatever_the_key_did() {
    // Arrange: 32 days, each hour from 120 address blocks, written as the
    // flush writes them (at most 100 and `other` per hour and per day).
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "busy").await;
    let now = usage_epoch();
    let now_hour = usage_minute(now).div_euclid(60);
    let mut ips = Vec::new();
    for hour in now_hour - 32 * 24..=now_hour {
        for i in 0..120u64 {
            let ip = format!("2001:db8:{:x}:{i:x}::/64", hour.rem_euclid(65_536));
            ips.push(guildkey::store::IpCount { key_id: key.record.id.clone(), hour, ip, count: 200 - i });
        }
    }
    let minutes: Vec<guildkey::store::MinuteCount> = (now_hour - 32 * 24..=now_hour)
        .flat_map(|hour| {
            let id = key.record.id.clone();
            [(200, "ok"), (404, "not_found"), (401, "key_revoked")].map(move |(status, outcome)| {
                guildkey::store::MinuteCount {
                    key_id: id.clone(),
                    minute: hour * 60,
                    method: "GET",
                    route: "/v1/verify",
                    status,
                    outcome,
                    count: 10,
                }
            })
        })
        .collect();
    store.record_counters(&minutes, &ips).await.unwrap();
    let hours: Vec<(guildkey::keys::KeyId, i64)> =
        (now_hour - 32 * 24..=now_hour).map(|h| (key.record.id.clone(), h)).collect();
    let days: Vec<(guildkey::keys::KeyId, i64)> =
        (now_hour.div_euclid(24) - 33..=now_hour.div_euclid(24)).map(|d| (key.record.id.clone(), d)).collect();
    store.trim_usage_ips(&hours, &days, 100).await.unwrap();

    // Act
    let (from, to) = Period::Month.hours(now);
    let buckets = store.usage_buckets(&key.record.id, from, to, Period::Month.bucket_hours()).await.unwrap();
    let (top, distinct) = store.usage_top_ips(&key.record.id, from, to, 50).await.unwrap();
    let report = service.usage(&key.record.id, Period::Month, now).await.unwrap();

    // Assert: 30 buckets of 3 kinds, 50 blocks, whatever the hours held.
    assert!(buckets.len() <= 30 * 3, "{} bucket rows", buckets.len());
    assert_eq!(top.len(), 50);
    assert!(distinct > 100, "{distinct}");
    assert_eq!(report.total, (now_hour + 1 - from) as u64 * 30, "every hour of the period counted once");
    assert_eq!(report.buckets.len(), 30);
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert!(held.ip_rows <= 33 * 24 * 101, "{held:?}");
}
