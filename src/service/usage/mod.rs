//! Usage, kept in memory on the request path and written to the database in
//! batches — never one write per request:
//!
//! - **last-used times and request counts** of verified keys, in per-key
//!   atomics ([`KeyUsage`]), written every `keys.last_used_flush_seconds`;
//! - **counters** per key, minute, method, route template, status and
//!   outcome (`ok`, a 4xx reason such as `insufficient_scope`,
//!   `rate_limited`, `5xx`), and requests per key, minute and client IP, in
//!   sharded maps ([`UsageTracker::record`]): each thread of the runtime
//!   takes a shard of its own, so the lock a request takes is never shared
//!   with another request in flight (only the flush takes it besides, a
//!   swap once a minute). A minute's counts are written once, at the first
//!   flush after the minute ended (or at shutdown), into the hour's row:
//!   its minute bucket and its total at once, added to what other
//!   instances wrote (`store::usage`);
//! - **the request log**: every counted request except a successful
//!   `/v1/verify` (counted, not logged), at most [`MAX_LOG_PER_KEY_MINUTE`]
//!   of each kind per key and minute, taken at every flush; the newest
//!   `usage.request_log_per_key` kept per key, and apart from them its
//!   newest [`NOTABLE_KEPT_PER_KEY`] notable refusals ([`NOTABLE_REASONS`]),
//!   so a flood of other requests cannot push those out (a key is trimmed
//!   each time it wrote an eighth as many more). Never a token or a header.
//!
//! Requests are counted for the key they name when the listener can tell
//! which that is (any refusal after the key was found: revoked, suspended,
//! rate-limited, insufficient scope…). A token that is malformed or unknown
//! is counted by Prometheus only. Refusals (401, 403, 429) are also counted
//! per key in an atomic for the spike alert (`service::spike`).
//!
//! A batch that fails to be written is kept and tried again with the next
//! flush (counts added up, the log capped), so a database outage loses
//! nothing but memory's patience.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeZone, Utc};

use crate::keys::KeyId;
use crate::store::{IpCount, MinuteCount, NewRequestLog, REFUSAL_STATUSES};

mod flush;
mod queries;

/// One key's uses since the last flush, counted without a lock: every
/// verified request touches it. Lives with the key in the index (and
/// survives its changes, see `index::LiveKey`).
#[derive(Default)]
pub struct KeyUsage {
    /// Milliseconds since the epoch of the latest use; 0 for none yet.
    last_ms: AtomicI64,
    count: AtomicU64,
    /// Refusals (401, 403, 429) since the last flush, for the spike alert.
    refused: AtomicU64,
    /// In the tracker's list of keys to flush.
    listed: AtomicBool,
    /// The minute the log counts below are for.
    log_minute: AtomicI64,
    /// Requests logged in `log_minute`: [the rest, notable refusals].
    logged: [std::sync::atomic::AtomicU32; 2],
}

impl KeyUsage {
    /// Whether one more request of this key may be logged in `minute`: at
    /// most [`MAX_LOG_PER_KEY_MINUTE`] of each kind (a flood is counted,
    /// and logged only up to that).
    fn may_log(&self, minute: i64, notable: bool) -> bool {
        let seen = self.log_minute.load(Ordering::Acquire);
        if seen != minute && self.log_minute.compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            for n in &self.logged {
                n.store(0, Ordering::Release);
            }
        }
        self.logged[usize::from(notable)].fetch_add(1, Ordering::AcqRel) < MAX_LOG_PER_KEY_MINUTE
    }
}

/// The refusals that matter to a key's owner, kept apart in its request
/// log from the rest (so no flood of unknown paths, say, pushes them
/// out): an address outside the allow-list, a scope the key lacks, its
/// use against another guild, a suspended key, a revoked one (as a leaked
/// key is).
pub const NOTABLE_REASONS: [&str; 5] =
    ["ip_not_allowed", "insufficient_scope", "guild_mismatch", "key_suspended", "key_revoked"];

/// The newest notable refusals kept in each key's request log, beside
/// `usage.request_log_per_key` of the rest.
pub const NOTABLE_KEPT_PER_KEY: u32 = 50;

/// Requests of each kind (notable refusals, the rest) logged per key and
/// minute; more are counted, not logged.
pub const MAX_LOG_PER_KEY_MINUTE: u32 = 120;

/// Whether a request answered with `reason` is a notable refusal.
pub fn is_notable(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| NOTABLE_REASONS.contains(&r))
}

/// The route of a request that matched none (its path is never kept: it
/// is the client's text).
pub const UNMATCHED_ROUTE: &str = "(no route)";

/// The route whose successful requests are counted but not logged.
pub const VERIFY_ROUTE: &str = "/v1/verify";

/// Client IPs counted per key and minute before the rest count as `other`
/// (a leaked key used from a botnet must not grow memory or the database
/// without bound).
pub const MAX_IPS_PER_KEY_MINUTE: usize = 256;

/// Client address blocks kept per key and hour: the busiest ones, the rest
/// summed as `other` (in each flush, and in the database once a key's hour
/// holds more).
pub const MAX_IPS_PER_KEY_HOUR: usize = 100;

/// Log entries one shard holds between flushes; more are dropped (counted,
/// never logged). Flushes run every few seconds.
const MAX_LOG_PER_SHARD: usize = 20_000;

/// Log entries kept across failed flushes.
const MAX_RETRY_LOG: usize = 50_000;

/// One answered request, as the counters and the log keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    /// When it was answered, in milliseconds since the epoch.
    pub at_ms: i64,
    /// `GET`, `PUT`…, or `other` (never a client's made-up method).
    pub method: &'static str,
    /// The route template (`/v1/guilds/{guild_id}/bans/{user_id}`), or
    /// [`UNMATCHED_ROUTE`]; see [`intern`].
    pub route: &'static str,
    pub status: u16,
    /// The error reason of a refusal (`insufficient_scope`…).
    pub reason: Option<&'static str>,
    pub ip: IpAddr,
    pub latency_us: u32,
    /// The member a write is about (bans, roles).
    pub target_user: Option<u64>,
    /// The role a role write is about.
    pub target_role: Option<u64>,
}

/// What a request's outcome is counted as: `ok` (below 400),
/// `rate_limited` (429), `5xx`, or the 4xx reason.
pub fn outcome(status: u16, reason: Option<&'static str>) -> &'static str {
    match status {
        0..=399 => "ok",
        429 => "rate_limited",
        500.. => "5xx",
        _ => reason.unwrap_or("4xx"),
    }
}

/// `s` as a `&'static str`, each distinct text leaked once per process:
/// route templates (a few dozen, from the OpenAPI document) are kept in
/// counters for as long as a minute lasts, keyed by the text itself.
pub fn intern(s: &str) -> &'static str {
    static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = interned.iter().find(|i| **i == s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    interned.push(leaked);
    leaked
}

/// The minute (since the epoch) of `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// One count of a pending minute.
#[derive(Debug, Clone, Copy)]
struct Cell {
    minute: i64,
    method: &'static str,
    route: &'static str,
    status: u16,
    outcome: &'static str,
    count: u64,
}

/// One key's counts not yet taken by a flush, in one shard.
#[derive(Default)]
struct Pending {
    /// Few per key and minute (the routes and outcomes it used).
    cells: Vec<Cell>,
    /// By minute and client IP (`None`: past the cap).
    ips: hashbrown::HashMap<(i64, Option<IpAddr>), u64>,
}

impl Pending {
    fn count(&mut self, minute: i64, method: &'static str, route: &'static str, status: u16, outcome: &'static str) {
        // The newest minute is at the end.
        let found = self.cells.iter_mut().rev().find(|c| {
            c.minute == minute && c.status == status && c.route == route && c.method == method && c.outcome == outcome
        });
        match found {
            Some(cell) => cell.count += 1,
            None => self.cells.push(Cell { minute, method, route, status, outcome, count: 1 }),
        }
    }

    fn count_ip(&mut self, minute: i64, ip: IpAddr, n: u64) {
        let ip = crate::keys::address_block(ip);
        if let Some(count) = self.ips.get_mut(&(minute, Some(ip))) {
            *count += n;
            return;
        }
        let full = self.ips.len() >= MAX_IPS_PER_KEY_MINUTE * 2;
        *self.ips.entry((minute, (!full).then_some(ip))).or_default() += n;
    }

    fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.ips.is_empty()
    }

    /// Moves the counts of minutes before `before` to `out`.
    fn take_before(&mut self, id: &KeyId, before: i64, out: &mut Batch) {
        self.cells.retain(|c| {
            if c.minute < before {
                out.add_cell(id, c);
            }
            c.minute >= before
        });
        self.ips.retain(|&(minute, ip), n| {
            if minute < before {
                out.add_ip(id, minute.div_euclid(60), ip, *n);
            }
            minute >= before
        });
    }

    fn merge(&mut self, other: Pending) {
        for c in other.cells {
            match self.cells.iter_mut().find(|m| {
                m.minute == c.minute
                    && m.status == c.status
                    && m.route == c.route
                    && m.method == c.method
                    && m.outcome == c.outcome
            }) {
                Some(mine) => mine.count += c.count,
                None => self.cells.push(c),
            }
        }
        for ((minute, ip), n) in other.ips {
            *self.ips.entry((minute, ip)).or_default() += n;
        }
    }
}

/// The counts and the log one thread's requests made since they were last
/// taken.
#[derive(Default)]
struct Shard {
    keys: hashbrown::HashMap<KeyId, Pending>,
    log: Vec<(KeyId, RequestFacts)>,
}

/// A shard on a cache line of its own, so that threads counting in their
/// own shards do not slow each other down.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

type MinuteKey = (KeyId, i64, &'static str, &'static str, u16, &'static str);

/// Counts on their way to the database, added up by row.
#[derive(Default)]
struct Batch {
    minutes: HashMap<MinuteKey, u64>,
    ips: HashMap<(KeyId, i64, Option<IpAddr>), u64>,
}

impl Batch {
    fn add_cell(&mut self, id: &KeyId, c: &Cell) {
        *self.minutes.entry((id.clone(), c.minute, c.method, c.route, c.status, c.outcome)).or_default() += c.count;
    }

    fn add_ip(&mut self, id: &KeyId, hour: i64, ip: Option<IpAddr>, n: u64) {
        *self.ips.entry((id.clone(), hour, ip)).or_default() += n;
    }

    fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.ips.is_empty()
    }

    fn rows(&self) -> (Vec<MinuteCount>, Vec<IpCount>) {
        let minutes = self
            .minutes
            .iter()
            .map(|((key_id, minute, method, route, status, outcome), &count)| MinuteCount {
                key_id: key_id.clone(),
                minute: *minute,
                method,
                route,
                status: *status,
                outcome,
                count,
            })
            .collect();
        (minutes, self.ip_rows())
    }

    /// Requests per key, hour and address block, the busiest
    /// [`MAX_IPS_PER_KEY_HOUR`] of each key's hour kept and the rest added
    /// to its `other`.
    fn ip_rows(&self) -> Vec<IpCount> {
        type Blocks = Vec<(Option<IpAddr>, u64)>;
        let mut by_hour: HashMap<(&KeyId, i64), Blocks> = HashMap::new();
        for ((key_id, hour, ip), &count) in &self.ips {
            by_hour.entry((key_id, *hour)).or_default().push((*ip, count));
        }
        let mut rows = Vec::with_capacity(self.ips.len());
        for ((key_id, hour), mut blocks) in by_hour {
            let mut other: u64 = 0;
            blocks.retain(|(ip, n)| {
                ip.is_some() || {
                    other += n;
                    false
                }
            });
            if blocks.len() > MAX_IPS_PER_KEY_HOUR {
                blocks.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                other += blocks.drain(MAX_IPS_PER_KEY_HOUR..).map(|(_, n)| n).sum::<u64>();
            }
            if other > 0 {
                blocks.push((None, other));
            }
            rows.extend(blocks.into_iter().map(|(ip, count)| IpCount {
                key_id: key_id.clone(),
                hour,
                ip: block_text(ip),
                count,
            }));
        }
        rows
    }

    fn absorb(&mut self, other: Batch) {
        for (k, n) in other.minutes {
            *self.minutes.entry(k).or_default() += n;
        }
        for (k, n) in other.ips {
            *self.ips.entry(k).or_default() += n;
        }
    }
}

/// A client address block as counted: an IPv4 address (an IPv4-mapped
/// IPv6 one as its IPv4 address), an IPv6 /64 as `2001:db8:1:2::/64`, or
/// `other` for those past the cap.
fn block_text(block: Option<IpAddr>) -> String {
    block.map_or_else(|| "other".to_owned(), |b| crate::keys::block_text(crate::keys::address_block(b)))
}

/// A client IP as the request log shows it: canonical (an IPv4-mapped
/// IPv6 address as its IPv4 one).
fn ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// What failed to be written, kept for the next flush.
#[derive(Default)]
struct Retry {
    counts: Batch,
    log: Vec<NewRequestLog>,
}

/// The keys used since the last flush, and the counters and log of their
/// requests. The `used` lock is taken once per key per flush period (when
/// a key is first used in it), not per request; a shard's lock is taken by
/// the one thread that counts in it, and by the flush.
pub struct UsageTracker {
    /// Usually one entry per id; two if the key's record was replaced.
    used: Mutex<HashMap<KeyId, Vec<Arc<KeyUsage>>>>,
    shards: Box<[Padded]>,
    /// The newest log entries kept per key; 0 logs nothing.
    log_per_key: u32,
    /// The first minute whose counts have not been taken yet.
    counted_from: AtomicI64,
    retry: Mutex<Retry>,
    /// Log entries dropped since the last warning (a shard was full).
    log_dropped: AtomicU64,
    /// Log entries written per key since its log was last trimmed: a key is
    /// trimmed to `log_per_key` once it wrote an eighth as many more (one
    /// indexed delete per key now and then, not per flush).
    untrimmed: Mutex<HashMap<KeyId, u32>>,
    /// Address rows written per key and hour since its rows were last
    /// trimmed to [`MAX_IPS_PER_KEY_HOUR`] (see `store.trim_usage_ips`).
    ip_rows_written: Mutex<HashMap<(KeyId, i64), usize>>,
    /// The same per key and day (the day rows that reports over 7 and 30
    /// days read).
    ip_day_rows_written: Mutex<HashMap<(KeyId, i64), usize>>,
}

impl Default for UsageTracker {
    fn default() -> Self {
        Self::new(crate::config::UsageConfig::default().request_log_per_key)
    }
}

/// Which shard this thread counts in.
fn shard_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters only: what a panicking holder left is still worth counting on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl UsageTracker {
    /// A tracker keeping `log_per_key` log entries per key.
    pub fn new(log_per_key: u32) -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 2).next_power_of_two().clamp(8, 64);
        Self {
            used: Mutex::default(),
            shards: (0..shards).map(|_| Padded::default()).collect(),
            log_per_key,
            counted_from: AtomicI64::new(i64::MIN),
            retry: Mutex::default(),
            log_dropped: AtomicU64::new(0),
            untrimmed: Mutex::default(),
            ip_rows_written: Mutex::default(),
            ip_day_rows_written: Mutex::default(),
        }
    }

    /// Notes one use of key `id`, whose usage record is `usage` (the one
    /// its `index::LiveKey` holds), at `at_ms` (milliseconds since the epoch).
    pub fn touch(&self, id: &KeyId, usage: &Arc<KeyUsage>, at_ms: i64) {
        // Within one millisecond the time is already there: no write.
        if at_ms > usage.last_ms.load(Ordering::Relaxed) {
            usage.last_ms.fetch_max(at_ms, Ordering::Relaxed);
        }
        usage.count.fetch_add(1, Ordering::AcqRel);
        self.list_once(id, usage);
    }

    fn list_once(&self, id: &KeyId, usage: &Arc<KeyUsage>) {
        if !usage.listed.load(Ordering::Acquire) && !usage.listed.swap(true, Ordering::AcqRel) {
            self.list(id, usage);
        }
    }

    fn list(&self, id: &KeyId, usage: &Arc<KeyUsage>) {
        let mut used = lock(&self.used);
        let entries = used.entry(id.clone()).or_default();
        if !entries.iter().any(|u| Arc::ptr_eq(u, usage)) {
            entries.push(usage.clone());
        }
    }

    /// Counts one answered request of key `id` (whose usage record is
    /// `usage`) and logs it unless it is a successful verification. Takes
    /// this thread's shard lock, which no other request in flight shares.
    pub fn record(&self, id: &KeyId, usage: &Arc<KeyUsage>, r: &RequestFacts) {
        if REFUSAL_STATUSES.contains(&r.status) {
            usage.refused.fetch_add(1, Ordering::AcqRel);
            self.list_once(id, usage);
        }
        let minute = minute_of(r.at_ms);
        let outcome = outcome(r.status, r.reason);
        let logged = self.log_per_key > 0
            && !(r.route == VERIFY_ROUTE && r.status < 300)
            && usage.may_log(minute, is_notable(r.reason));
        let slot = shard_slot() & (self.shards.len() - 1);
        let mut shard = lock(&self.shards[slot].0);
        let shard = &mut *shard;
        let pending = shard.keys.entry_ref(id).or_default();
        pending.count(minute, r.method, r.route, r.status, outcome);
        pending.count_ip(minute, r.ip, 1);
        if logged {
            if shard.log.len() < MAX_LOG_PER_SHARD {
                shard.log.push((id.clone(), *r));
            } else {
                self.log_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The not-yet-flushed last use of a key and its count, if any.
    pub fn pending_last_use(&self, id: &KeyId) -> Option<(DateTime<Utc>, u64)> {
        let used = lock(&self.used);
        let (at, n) = totals(used.get(id)?.iter(), false);
        (n > 0).then(|| Some((millis(at)?, n))).flatten()
    }

    /// A key's counts not yet written (this process's: in the shards, or
    /// kept after a failed write), minute by minute, and its requests per
    /// hour and client IP likewise.
    pub fn pending_for(&self, id: &KeyId) -> (Vec<MinuteCount>, Vec<IpCount>) {
        let mut batch = Batch::default();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            if let Some(p) = shard.keys.get(id) {
                for c in &p.cells {
                    batch.add_cell(id, c);
                }
                for (&(minute, ip), &n) in &p.ips {
                    batch.add_ip(id, minute.div_euclid(60), ip, n);
                }
            }
        }
        let retry = lock(&self.retry);
        let (minutes, ips) = retry.counts.rows();
        drop(retry);
        let (mut mine, mut my_ips) = batch.rows();
        mine.extend(minutes.into_iter().filter(|m| m.key_id == *id));
        my_ips.extend(ips.into_iter().filter(|i| i.key_id == *id));
        (mine, my_ips)
    }
}

/// The latest use and the number of uses over `entries`; with `take`, the
/// counts are taken (reset to zero).
fn totals<'a>(entries: impl Iterator<Item = &'a Arc<KeyUsage>>, take: bool) -> (i64, u64) {
    entries.fold((0, 0), |(at, n), usage| {
        let count = if take { usage.count.swap(0, Ordering::AcqRel) } else { usage.count.load(Ordering::Acquire) };
        (at.max(usage.last_ms.load(Ordering::Acquire)), n + count)
    })
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_count_and_keep_the_latest_time_across_a_keys_usage_records() {
        let tracker = UsageTracker::default();
        let id = KeyId::generate();
        let first = Arc::new(KeyUsage::default());
        assert_eq!(tracker.pending_last_use(&id), None);
        for at in [5_000, 3_000, 9_000] {
            tracker.touch(&id, &first, at);
        }
        assert_eq!(tracker.pending_last_use(&id), Some((millis(9_000).unwrap(), 3)));
        // A replaced record of the same key counts beside the first.
        let second = Arc::new(KeyUsage::default());
        tracker.touch(&id, &second, 7_000);
        assert_eq!(tracker.pending_last_use(&id), Some((millis(9_000).unwrap(), 4)));
        assert_eq!(tracker.used.lock().unwrap()[&id].len(), 2, "each record listed once");
        // Taking the totals empties the counts.
        let taken = std::mem::take(&mut *tracker.used.lock().unwrap());
        assert_eq!(totals(taken[&id].iter(), true), (9_000, 4));
        assert_eq!(totals(taken[&id].iter(), false), (9_000, 0));
    }

    fn facts(at_ms: i64, status: u16, reason: Option<&'static str>, ip: &str) -> RequestFacts {
        RequestFacts {
            at_ms,
            method: "GET",
            route: VERIFY_ROUTE,
            status,
            reason,
            ip: ip.parse().unwrap(),
            latency_us: 10,
            target_user: None,
            target_role: None,
        }
    }

    #[test]
    fn requests_add_up_per_minute_outcome_and_ip_across_threads() {
        let tracker = Arc::new(UsageTracker::new(10));
        let id = KeyId::generate();
        let usage = Arc::new(KeyUsage::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (tracker, id, usage) = (tracker.clone(), id.clone(), usage.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        tracker.record(&id, &usage, &facts(60_000 + i, 200, None, "203.0.113.1"));
                    }
                    tracker.record(&id, &usage, &facts(125_000, 429, Some("rate_limited"), "::ffff:203.0.113.2"));
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let (minutes, ips) = tracker.pending_for(&id);
        let count = |minute, outcome| {
            minutes.iter().filter(|m| m.minute == minute && m.outcome == outcome).map(|m| m.count).sum::<u64>()
        };
        assert_eq!((count(1, "ok"), count(2, "rate_limited")), (400, 4));
        let ip = |ip: &str| ips.iter().filter(|i| i.ip == ip).map(|i| i.count).sum::<u64>();
        assert_eq!((ip("203.0.113.1"), ip("203.0.113.2")), (400, 4), "{ips:?}");
        assert_eq!(usage.refused.load(Ordering::Acquire), 4);
        // Only the refusals are logged: a successful verification is not.
        let logged: usize = tracker.shards.iter().map(|s| s.0.lock().unwrap().log.len()).sum();
        assert_eq!(logged, 4);
    }

    #[test]
    fn a_key_seen_from_too_many_addresses_counts_the_rest_as_other() {
        let mut pending = Pending::default();
        for i in 0..(MAX_IPS_PER_KEY_MINUTE * 3) as u32 {
            pending.count_ip(7, IpAddr::from(i.to_be_bytes()), 1);
        }
        assert_eq!(pending.ips.len(), MAX_IPS_PER_KEY_MINUTE * 2 + 1);
        assert_eq!(pending.ips[&(7, None)], MAX_IPS_PER_KEY_MINUTE as u64);
    }

    #[test]
    fn outcomes_are_ok_a_4xx_reason_rate_limited_or_5xx() {
        assert_eq!(outcome(200, None), "ok");
        assert_eq!(outcome(403, Some("insufficient_scope")), "insufficient_scope");
        assert_eq!(outcome(429, Some("rate_limited")), "rate_limited");
        assert_eq!(outcome(502, Some("discord_error")), "5xx");
        assert_eq!(outcome(418, None), "4xx");
        assert!(std::ptr::eq(intern("/v1/x"), intern(&String::from("/v1/x"))));
    }
}
