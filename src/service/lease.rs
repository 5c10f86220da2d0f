//! A key's rate limit across instances that share one database: budgets
//! leased from the database per minute window, spent here without a lock.
//!
//! Each key's local GCRA limiter (`index::KeyLimiter`) smooths bursts and is
//! the only limiter on SQLite or a single instance. When the store is
//! shared ([`Store::is_shared`], PostgreSQL), a request must also take one
//! request from the key's budget for the current minute window (windows are
//! aligned to the epoch: `window_start = floor(now / 60 s) * 60 s`), which all
//! instances draw on together:
//!
//! - an instance takes the budget in chunks, each with one atomic statement
//!   ([`Store::lease_rate`]: `taken = least(limit, taken + chunk)`,
//!   returning what was granted), so however many instances lease at once,
//!   what they are granted in a window never adds up to more than the limit;
//! - it spends its chunk with a compare-and-swap on one `AtomicU64` per key
//!   (window and remaining, packed), no lock on the hot path;
//! - when what it holds falls below half a chunk it leases the next chunk in
//!   the background, so a request waits on the database only when the
//!   instance holds nothing at all (a key's first request in a window on
//!   this instance, or traffic faster than a lease comes back), and then for
//!   at most [`WAIT_FOR`];
//! - once the database says the window's budget is all taken, and this
//!   instance has spent what it holds, requests are refused (429) until the
//!   window ends, without asking the database again.
//!
//! The chunk is sized by how many instances are alive (their heartbeats,
//! [`Store::beat_instance`], every [`UPKEEP_EVERY`]): see [`chunk_for`].
//!
//! When the database cannot be reached (a lease fails, or does not come back
//! within [`WAIT_FOR`]), each instance falls back to its local limiter alone
//! rather than refuse requests: logged once at warn (at most once a minute),
//! the recovery at info; the database is tried again every
//! [`PROBE_EVERY_MS`].

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::keys::KeyId;
use crate::store::Store;

/// A key whose budget is leased: what this module needs of the index's
/// `LiveKey` (which holds a [`KeyLease`]), so the index depends on leases
/// and not the other way round.
pub trait LeasedKey: Send + Sync + 'static {
    /// The key's share of its leased budget on this instance.
    fn lease(&self) -> &KeyLease;
    /// The key's id, as the database knows it.
    fn key_id(&self) -> &KeyId;
    /// The key's rate limit, requests per minute.
    fn limit_per_minute(&self) -> u32;
}

/// A window's length: rate limits are per minute.
pub const WINDOW_MS: i64 = 60_000;

/// How often an instance beats its heartbeat (and sweeps old windows).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// An instance not seen for this long is no longer counted as alive.
pub(super) const LIVE_FOR_MS: i64 = 15_000;

/// The most a request waits for a lease before it is admitted on the local
/// limiter alone (and the database counts as unreachable).
pub const WAIT_FOR: Duration = Duration::from_secs(1);

/// The most one lease statement may take before it counts as failed.
pub(super) const LEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// While the database is unreachable, how often a lease is tried again.
pub const PROBE_EVERY_MS: i64 = 1_000;

/// A fall-back within this long of the last one logged is logged at debug.
const QUIET_FOR_MS: i64 = 60_000;

/// The chunk an instance leases of a key's per-minute `limit` when
/// `instances` are alive: `max(1, floor(limit / (15 × instances)))`.
///
/// An instance leases again when it holds fewer than half a chunk
/// (`ceil(chunk / 2)`), so it holds at most `ceil(chunk / 2) - 1 + chunk`,
/// under 1.5 chunks. At a window's end, what instances leased and did not
/// spend is at most `instances × 1.5 × chunk ≤ limit / 10`: requests over
/// the cluster stay within 10% under the limit, and never go over it (the
/// database caps what is granted). With `limit < 15 × instances` the chunk
/// is 1 and the shortfall at most one request per instance.
pub fn chunk_for(limit: u32, instances: u32) -> u32 {
    (limit / instances.max(1).saturating_mul(15)).max(1)
}

/// When a lease is due: below half a chunk, `ceil(chunk / 2)`.
fn low_water(chunk: u32) -> u32 {
    chunk.div_ceil(2)
}

/// The window (minutes since the epoch) at `now_ms`.
pub(super) fn window_of(now_ms: i64) -> u32 {
    u32::try_from(now_ms.max(0) / WINDOW_MS).unwrap_or(u32::MAX)
}

pub(super) fn window_start_ms(window: u32) -> i64 {
    i64::from(window) * WINDOW_MS
}

/// Whole seconds (at least 1) from `now_ms` to the end of `window`.
fn secs_to_end(window: u32, now_ms: i64) -> u64 {
    let left = (window_start_ms(window) + WINDOW_MS - now_ms).max(0) as u64;
    left.div_ceil(1000).max(1)
}

fn pack(window: u32, n: u32) -> u64 {
    (u64::from(window) << 32) | u64::from(n)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// What the shared budget says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// One request taken from what this instance leased for `window`;
    /// about `remaining` are left in the window over all instances, which
    /// ends in `reset_secs`.
    Taken { window: u32, remaining: u32, reset_secs: u64 },
    /// Every instance together has used the window's budget: refused until
    /// it ends, in `retry_after_secs`.
    Exhausted { retry_after_secs: u64 },
    /// No shared budget applies (the store is not shared, or the database
    /// cannot be reached): the local limiter alone decides.
    Local,
    /// Nothing left here and a lease is on its way: wait for it
    /// ([`RateLeases::wait`]).
    Wait,
}

/// One key's leased budget on this instance. Lives with the key in the
/// index (`index::LiveKey`) and is kept across its changes while its rate
/// limit stays the same.
#[derive(Default)]
pub struct KeyLease {
    /// The window this instance holds budget for and how much (packed).
    held: AtomicU64,
    /// The window and how much of it all instances had taken as of this
    /// instance's latest lease (packed): for `X-RateLimit-Remaining`.
    taken: AtomicU64,
    /// The window whose budget the database says is all taken (0: none).
    exhausted: AtomicU32,
    /// Lease again when holding fewer than this.
    low_water: AtomicU32,
    /// A lease is on its way (at most one per key at a time).
    refilling: AtomicBool,
    /// Woken when a lease came back (or failed).
    refilled: Notify,
}

impl KeyLease {
    /// About how many requests are left in `window` over all instances:
    /// what the window had left at the latest lease, plus what this one
    /// still holds (another instance may have spent some since).
    fn remaining(&self, window: u32, held: u32, limit: u32) -> u32 {
        // `taken` is written after `held`: if the new `taken` is seen, so is the new `held`.
        let (w, taken) = unpack(self.taken.load(Ordering::Acquire));
        if w == window {
            limit.saturating_sub(taken).saturating_add(held).min(limit)
        } else {
            held.min(limit)
        }
    }

    /// Adds what a lease for `window` granted.
    fn add(&self, window: u32, granted: u32, taken: u32, chunk: u32, limit: u32) {
        self.low_water.store(low_water(chunk), Ordering::Relaxed);
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            let (w, n) = unpack(held);
            let new = match w.cmp(&window) {
                std::cmp::Ordering::Equal => pack(w, n.saturating_add(granted)),
                // What was left of an older window is not carried over.
                std::cmp::Ordering::Less => pack(window, granted),
                // The window moved on while this lease was out: it is stale.
                std::cmp::Ordering::Greater => return,
            };
            match self.held.compare_exchange_weak(held, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => held = now,
            }
        }
        self.taken.fetch_max(pack(window, taken), Ordering::AcqRel);
        if taken >= limit {
            self.exhausted.fetch_max(window, Ordering::AcqRel);
        }
    }

    /// Puts back one request taken from `window` (the local limiter refused
    /// the request after all).
    fn give_back(&self, window: u32) {
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            let (w, n) = unpack(held);
            (w == window).then(|| pack(w, n.saturating_add(1)))
        });
    }
}

/// This instance's side of the shared budgets: the store, how many
/// instances are alive, whether the database can be reached. One per
/// service.
pub struct RateLeases {
    pub(super) store: Store,
    /// The store is shared: leases apply.
    pub(super) enabled: bool,
    pub(super) instance_id: String,
    /// Alive instances as of the latest heartbeat (at least 1).
    pub(super) instances: AtomicU32,
    /// Leases fail: the local limiter alone decides until one succeeds.
    down: AtomicBool,
    /// While down, when a lease is next tried (ms since the epoch).
    next_probe_ms: AtomicI64,
    /// When falling back was last logged at warn (ms since the epoch): a
    /// database that keeps coming and going is logged once a minute.
    warned_at_ms: AtomicI64,
    /// The latest fall-back was logged at warn (so its recovery is, at info).
    warned: AtomicBool,
    /// The window whose predecessors were last swept.
    pub(super) swept: AtomicU32,
    /// Lease statements that came back.
    leases: AtomicU64,
}

/// How the shared budgets stand, for tests and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases apply (the store is shared).
    pub enabled: bool,
    /// Alive instances as of the latest heartbeat.
    pub instances: u32,
    /// Lease statements that came back.
    pub leases: u64,
    /// The database could not be reached at the latest try.
    pub down: bool,
}

impl RateLeases {
    pub fn new(store: Store) -> Self {
        let enabled = store.is_shared();
        let instance_id = format!("{}-{}", std::process::id(), crate::keys::token::random_base62(12));
        Self {
            store,
            enabled,
            instance_id,
            instances: AtomicU32::new(1),
            down: AtomicBool::new(false),
            next_probe_ms: AtomicI64::new(0),
            warned_at_ms: AtomicI64::new(i64::MIN),
            warned: AtomicBool::new(false),
            swept: AtomicU32::new(0),
            leases: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> LeaseStats {
        LeaseStats {
            enabled: self.enabled,
            instances: self.instances.load(Ordering::Relaxed),
            leases: self.leases.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }

    /// The chunk this instance leases of a key with `limit` now.
    pub fn chunk(&self, limit: u32) -> u32 {
        chunk_for(limit, self.instances.load(Ordering::Relaxed))
    }

    /// Takes one request of `key`'s window budget at `now_ms`, from memory:
    /// the hot path. May start a lease in the background; never waits.
    pub fn take<K: LeasedKey>(self: &Arc<Self>, key: &Arc<K>, now_ms: i64) -> Take {
        if !self.enabled {
            return Take::Local;
        }
        let window = window_of(now_ms);
        let lease = key.lease();
        let mut held = lease.held.load(Ordering::Acquire);
        loop {
            let (w, n) = unpack(held);
            if w != window || n == 0 {
                break;
            }
            match lease.held.compare_exchange_weak(held, pack(w, n - 1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if n - 1 < lease.low_water.load(Ordering::Relaxed)
                        && lease.exhausted.load(Ordering::Relaxed) != window
                        && !self.down.load(Ordering::Relaxed)
                    {
                        self.refill(key);
                    }
                    let limit = key.limit_per_minute().max(1);
                    let remaining = lease.remaining(window, n - 1, limit);
                    return Take::Taken { window, remaining, reset_secs: secs_to_end(window, now_ms) };
                }
                Err(now) => held = now,
            }
        }
        if lease.exhausted.load(Ordering::Acquire) == window {
            return Take::Exhausted { retry_after_secs: secs_to_end(window, now_ms) };
        }
        if self.down.load(Ordering::Acquire) {
            self.probe(key, now_ms);
            return Take::Local;
        }
        if !self.refill(key) {
            return Take::Local; // no runtime to lease on
        }
        Take::Wait
    }

    /// [`Self::take`], waiting for a lease when it says to (at most
    /// [`WAIT_FOR`], then the local limiter alone decides). Never
    /// [`Take::Wait`].
    pub async fn wait<K: LeasedKey>(self: &Arc<Self>, key: &Arc<K>) -> Take {
        let deadline = tokio::time::Instant::now() + WAIT_FOR;
        loop {
            let refilled = key.lease().refilled.notified();
            tokio::pin!(refilled);
            // Registered before looking, so a lease landing in between wakes it.
            refilled.as_mut().enable();
            match self.take(key, now_ms()) {
                Take::Wait => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, refilled).await.is_err() {
                self.went_down(&format!("a lease took longer than {} ms", WAIT_FOR.as_millis()));
                return Take::Local;
            }
        }
    }

    /// Puts back a request [`Self::take`] took (the local limiter refused it).
    pub fn give_back(&self, key: &impl LeasedKey, taken: &Take) {
        if let Take::Taken { window, .. } = taken {
            key.lease().give_back(*window);
        }
    }

    /// While the database is unreachable, lets one lease try again every
    /// [`PROBE_EVERY_MS`].
    fn probe<K: LeasedKey>(self: &Arc<Self>, key: &Arc<K>, now_ms: i64) {
        let next = self.next_probe_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_probe_ms
                .compare_exchange(next, now_ms + PROBE_EVERY_MS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.refill(key);
        }
    }

    /// Starts a lease for `key` in the background unless one is on its way.
    /// False when there is no runtime to run it on.
    fn refill<K: LeasedKey>(self: &Arc<Self>, key: &Arc<K>) -> bool {
        let lease = key.lease();
        if lease.refilling.load(Ordering::Acquire) || lease.refilling.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lease.refilling.store(false, Ordering::Release);
            return false;
        };
        let (this, key) = (self.clone(), key.clone());
        runtime.spawn(async move { this.lease_now(&*key).await });
        true
    }

    /// One lease of `key`'s current window.
    async fn lease_now(&self, key: &impl LeasedKey) {
        let lease = key.lease();
        let window = window_of(now_ms());
        let limit = key.limit_per_minute().max(1);
        let chunk = self.chunk(limit);
        let leased = tokio::time::timeout(
            LEASE_TIMEOUT,
            self.store.lease_rate(key.key_id(), window_start_ms(window), limit, chunk),
        )
        .await;
        match leased {
            Ok(Ok(grant)) => {
                self.leases.fetch_add(1, Ordering::Relaxed);
                lease.add(window, grant.granted, grant.taken, chunk, limit);
                if self.down.swap(false, Ordering::AcqRel) && self.warned.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        "rate-limit budgets are leased from the database again; limits hold across instances"
                    );
                }
            }
            Ok(Err(e)) => self.went_down(&format!("{e:#}")),
            Err(_) => self.went_down(&format!("a lease took longer than {} ms", LEASE_TIMEOUT.as_millis())),
        }
        lease.refilling.store(false, Ordering::Release);
        lease.refilled.notify_waiters();
    }

    fn went_down(&self, error: &str) {
        let now = now_ms();
        self.next_probe_ms.store(now + PROBE_EVERY_MS, Ordering::Release);
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        let last = self.warned_at_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) < QUIET_FOR_MS
            || self.warned_at_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            tracing::debug!(error, "cannot lease rate-limit budgets from the database (again)");
            return;
        }
        self.warned.store(true, Ordering::Release);
        tracing::warn!(
            error,
            "cannot lease rate-limit budgets from the database; until it answers, each instance holds \
             its keys' limits on its own (the local limiter alone)"
        );
    }
}

/// The service's side: what the HTTP listener calls for each request.
impl super::KeyService {
    /// Takes one request of `caller`'s window budget shared with other
    /// instances, from memory (see [`RateLeases::take`]): [`Take::Local`]
    /// when no shared budget applies. Call after the key is verified.
    pub fn take_shared(&self, caller: &super::Authenticated) -> Take {
        let leases = &self.inner.leases;
        // Not shared (SQLite): not even the clock is read.
        if !leases.enabled {
            return Take::Local;
        }
        leases.take(&caller.key, now_ms())
    }

    /// What [`Self::take_shared`] answers once a lease is in, when it said
    /// [`Take::Wait`] (at most [`WAIT_FOR`]).
    pub async fn wait_shared(&self, caller: &super::Authenticated) -> Take {
        self.inner.leases.wait(&caller.key).await
    }

    /// Puts back what [`Self::take_shared`] took, for a request refused
    /// after all (by the local limiter).
    pub fn give_back_shared(&self, caller: &super::Authenticated, taken: &Take) {
        self.inner.leases.give_back(&*caller.key, taken);
    }

    /// How the shared budgets stand.
    pub fn lease_stats(&self) -> LeaseStats {
        self.inner.leases.stats()
    }

    /// The chunk this instance leases of a key with `limit` now.
    pub fn lease_chunk(&self, limit: u32) -> u32 {
        self.inner.leases.chunk(limit)
    }
}

pub(super) fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_the_unspent_leases_of_every_instance_within_a_tenth_of_the_limit() {
        for limit in [15, 60, 120, 600, 1000, 6000, 100_000] {
            for instances in 1..=20u32 {
                let chunk = chunk_for(limit, instances);
                assert!(chunk >= 1);
                // The most one instance can hold: just under low water, plus a chunk.
                let most_held = low_water(chunk) - 1 + chunk;
                if limit >= 15 * instances {
                    assert!(
                        u64::from(instances) * u64::from(most_held) * 10 <= u64::from(limit),
                        "limit {limit}, {instances} instances: chunk {chunk} holds up to {most_held} each"
                    );
                } else {
                    assert_eq!(most_held, 1, "limit {limit}, {instances} instances");
                }
            }
        }
        assert_eq!(chunk_for(120, 2), 4);
        assert_eq!(chunk_for(60, 1), 4);
        assert_eq!(chunk_for(5, 1), 1);
        assert_eq!(chunk_for(120, 0), 8, "no heartbeat yet counts as one instance");
    }

    #[test]
    fn a_lease_adds_to_its_window_replaces_an_older_one_and_is_dropped_for_a_newer_one() {
        let lease = KeyLease::default();
        lease.add(10, 4, 4, 4, 120);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (10, 4));
        lease.add(10, 4, 12, 4, 120);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (10, 8));
        assert_eq!(lease.remaining(10, 8, 120), 116, "120 - 12 taken + 8 held");
        lease.give_back(10);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (10, 9));
        lease.give_back(9);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (10, 9), "no give-back into another window");
        lease.add(11, 2, 120, 4, 120);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (11, 2), "an older window's rest is not carried over");
        assert_eq!(lease.exhausted.load(Ordering::Relaxed), 11);
        lease.add(10, 4, 16, 4, 120);
        assert_eq!(unpack(lease.held.load(Ordering::Relaxed)), (11, 2), "a stale lease is dropped");
        assert_eq!(lease.exhausted.load(Ordering::Relaxed), 11);
    }

    #[test]
    fn windows_are_minutes_since_the_epoch() {
        assert_eq!(window_of(0), 0);
        assert_eq!(window_of(59_999), 0);
        assert_eq!(window_of(60_000), 1);
        assert_eq!(secs_to_end(1, 60_000), 60);
        assert_eq!(secs_to_end(1, 119_001), 1);
        assert_eq!(secs_to_end(1, 119_999), 1);
        assert_eq!(secs_to_end(1, 100_500), 20);
    }
}
