//! The in-memory key index: every key by the hash of its secret, so that
//! verifying a token reads no database row.
//!
//! It is built from the store at start. A change this process makes is
//! applied to it incrementally before that change returns (the store hands
//! back the changed row). A commit by another connection or process (the
//! operator CLI, a second instance), which a background task checks for
//! several times a second, is applied key by key from the store's key
//! change log; only when the log cannot say what changed (too much, or
//! entries already dropped) is the index reloaded whole.
//!
//! It must stay small with many keys (a million keys in well under 200 MB):
//! - each key is one [`Slot`] in a slab (a `Vec`, no allocation per key),
//!   holding a compact [`KeyInfo`]: inline id, name and prefix, a scope
//!   bitset, an `i64` expiry;
//! - the hash table holds 4-byte slot numbers only (the full hash is in the
//!   slot; the table's own hash is the first 8 bytes of the SHA-256, already
//!   uniform);
//! - what a key needs once it is used — its rate limiter and the cached
//!   rendering of its description ([`LiveKey`]) — is made on first use.
//!
//! It must never fail open: a revocation the index has not seen would keep
//! working. So it records until when it counts as current
//! ([`KeyIndex::fresh_until_ms`]): while a watcher runs, the last time it
//! caught up with the database plus [`STALE_AFTER_MS`]. Past that (the
//! checks keep failing), verification refuses every key until a check
//! succeeds. A change this process committed but could not apply marks the
//! index stale at once and forces a full reload.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, TimeZone, Utc};
use governor::clock::DefaultClock;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hashbrown::HashTable;
use tokio::sync::Mutex;

use super::lease::{KeyLease, LeasedKey};
use super::usage::KeyUsage;
use crate::audit::KeyRef;
use crate::keys::{AllowedIps, AllowedRoles, Environment, KeyHash, KeyId, KeyStatus, Scopes, SmallStr};
use crate::store::{IndexRow, Store};

/// A key's request budget (GCRA), shared by every request with the key.
pub type KeyLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// What verification needs about a key and what its callers read, compactly
/// (see the module docs). Built from a [`KeyRecord`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub name: SmallStr,
    pub prefix: SmallStr,
    pub guild_id: u64,
    /// Milliseconds since the epoch; `i64::MAX` for never.
    expires_at_ms: i64,
    pub rate_limit_per_minute: u32,
    pub environment: Environment,
    pub scopes: Scopes,
    revoked: bool,
    suspended: bool,
    /// `None` for a key with neither an IP allow-list nor a role list (most
    /// keys): 8 bytes, not two empty lists' 32.
    lists: Option<Box<KeyLists>>,
}

/// A key's optional allow-lists, kept apart from [`KeyInfo`] so a key
/// without any costs one null pointer.
#[derive(Debug, Clone, PartialEq, Default)]
struct KeyLists {
    ips: AllowedIps,
    roles: AllowedRoles,
    ban_budget: Option<u32>,
    role_budget: Option<u32>,
}

impl KeyInfo {
    pub fn from_row(k: &IndexRow) -> Self {
        Self {
            id: k.id.clone(),
            name: SmallStr::from(k.name.as_str()),
            prefix: SmallStr::from(k.prefix.as_str()),
            guild_id: k.guild_id,
            expires_at_ms: k.expires_at.map_or(i64::MAX, |at| at.timestamp_millis()),
            rate_limit_per_minute: k.rate_limit_per_minute,
            environment: k.environment,
            scopes: k.scopes,
            revoked: k.revoked_at.is_some(),
            suspended: k.suspended,
            lists: (!k.allowed_ips.is_empty()
                || !k.allowed_roles.is_empty()
                || k.ban_budget.is_some()
                || k.role_budget.is_some())
            .then(|| {
                Box::new(KeyLists {
                    ips: k.allowed_ips.clone(),
                    roles: k.allowed_roles.clone(),
                    ban_budget: k.ban_budget,
                    role_budget: k.role_budget,
                })
            }),
        }
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        (self.expires_at_ms != i64::MAX).then(|| Utc.timestamp_millis_opt(self.expires_at_ms).single()).flatten()
    }

    /// As [`crate::keys::KeyRecord::status`].
    pub fn status(&self, now: DateTime<Utc>) -> KeyStatus {
        self.status_at_ms(now.timestamp_millis())
    }

    /// [`Self::status`] at `now_ms` milliseconds since the epoch (no
    /// calendar arithmetic: every request asks).
    pub fn status_at_ms(&self, now_ms: i64) -> KeyStatus {
        KeyStatus::of(self.revoked, self.expires_at_ms <= now_ms, self.suspended)
    }

    /// Whether the key's own role list lets it touch `role_id` (the safety
    /// rules apply on top: `service::guard`).
    pub fn allows_role(&self, role_id: u64) -> bool {
        self.lists.as_ref().is_none_or(|lists| lists.roles.allows(role_id))
    }

    /// The key's own breaker budgets (bans, role changes per 10 minutes);
    /// `None` for the configured default.
    pub fn budgets(&self) -> (Option<u32>, Option<u32>) {
        self.lists.as_ref().map_or((None, None), |l| (l.ban_budget, l.role_budget))
    }

    /// Whether a request from `ip` may use this key (its allow-list).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.lists.as_ref().is_none_or(|lists| lists.ips.allows(ip))
    }

    pub fn key_ref(&self) -> KeyRef {
        KeyRef { id: self.id.clone(), name: self.name.to_string(), prefix: self.prefix.to_string() }
    }
}

/// A key in use: its description, its rate limiter, its share of the
/// budget leased from a shared database (`service::lease`), and an
/// adapter's cached rendering of it (the verify response body: the response
/// for a key hardly changes, so it is built once). One per key, made on
/// first use, shared by every request with that key; replaced when the key
/// changes. Derefs to [`KeyInfo`].
pub struct LiveKey {
    info: KeyInfo,
    limiter: Arc<KeyLimiter>,
    lease: Arc<KeyLease>,
    usage: Arc<KeyUsage>,
    rendered: OnceLock<bytes::Bytes>,
}

impl LiveKey {
    fn new(info: KeyInfo, budget: Option<(Arc<KeyLimiter>, Arc<KeyLease>)>, usage: Option<Arc<KeyUsage>>) -> Self {
        let (limiter, lease) =
            budget.unwrap_or_else(|| (Arc::new(new_limiter(info.rate_limit_per_minute)), Arc::default()));
        Self { info, limiter, lease, usage: usage.unwrap_or_default(), rendered: OnceLock::new() }
    }

    /// The key's uses not yet written to the database.
    pub fn usage(&self) -> &Arc<KeyUsage> {
        &self.usage
    }

    /// The key's request budget at its own `rate_limit_per_minute`.
    pub fn limiter(&self) -> &KeyLimiter {
        &self.limiter
    }

    /// The key's rendering, made by `render` the first time only.
    /// Cloning the result shares it (no copy).
    pub fn rendered(&self, render: impl FnOnce(&KeyInfo) -> Vec<u8>) -> bytes::Bytes {
        self.rendered.get_or_init(|| render(&self.info).into()).clone()
    }

    /// The same key with a new description, keeping its pending usage, and
    /// its budget (local and leased) if its rate limit is unchanged (a
    /// rotation does not refill it).
    fn successor(old: &Arc<Self>, info: KeyInfo) -> Arc<Self> {
        if old.info == info {
            return old.clone();
        }
        let same_rate = old.info.rate_limit_per_minute == info.rate_limit_per_minute;
        let budget = same_rate.then(|| (old.limiter.clone(), old.lease.clone()));
        Arc::new(Self::new(info, budget, Some(old.usage.clone())))
    }
}

impl Deref for LiveKey {
    type Target = KeyInfo;
    fn deref(&self) -> &KeyInfo {
        &self.info
    }
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.info.fmt(f)
    }
}

fn new_limiter(per_minute: u32) -> KeyLimiter {
    let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least 1"));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// What a hash maps to.
#[derive(Clone)]
pub struct IndexEntry {
    pub key: Arc<LiveKey>,
    /// Set for a rotated-out secret: it works until then (milliseconds
    /// since the epoch), not after.
    pub valid_until_ms: Option<i64>,
}

/// One key in the slab.
struct Slot {
    hash: KeyHash,
    /// A rotated-out secret's hash and when it stops (ms), during the grace.
    previous: Option<Box<(KeyHash, i64)>>,
    info: KeyInfo,
    /// Made on first use (under the write lock, once).
    live: Option<Arc<LiveKey>>,
}

impl Slot {
    fn from_row(k: IndexRow) -> Self {
        let previous = k.previous.map(|(prev, until)| Box::new((prev, until.timestamp_millis())));
        Self { hash: k.hash, previous, info: KeyInfo::from_row(&k), live: None }
    }
}

/// Marks a table entry that stands for a slot's previous hash.
const PREVIOUS: u32 = 1 << 31;

/// The slab and its hash tables.
#[derive(Default)]
struct Table {
    /// Slot numbers, `| PREVIOUS` for a previous hash.
    entries: HashTable<u32>,
    /// Slot numbers by key id: applying a change finds the key's slot
    /// without a scan (about 10 bytes per key).
    by_id: HashTable<u32>,
    id_hasher: hashbrown::DefaultHashBuilder,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

/// The `by_id` table's hash of a key id.
fn id_hash(hasher: &hashbrown::DefaultHashBuilder, id: &KeyId) -> u64 {
    std::hash::BuildHasher::hash_one(hasher, id.as_str())
}

fn table_hash(h: &KeyHash) -> u64 {
    u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes"))
}

impl Table {
    fn with_capacity(n: usize) -> Self {
        Self {
            entries: HashTable::with_capacity(n),
            by_id: HashTable::with_capacity(n),
            id_hasher: Default::default(),
            slots: Vec::with_capacity(n),
            free: Vec::new(),
        }
    }

    /// The slot number of key `id`, if the table holds it.
    fn find_id(&self, id: &KeyId) -> Option<u32> {
        let slots = &self.slots;
        let holds = |&n: &u32| slots[n as usize].as_ref().is_some_and(|s| s.info.id == *id);
        self.by_id.find(id_hash(&self.id_hasher, id), holds).copied()
    }

    fn slot(&self, entry: u32) -> &Slot {
        self.slots[(entry & !PREVIOUS) as usize].as_ref().expect("table entries point at live slots")
    }

    fn hash_of(slots: &[Option<Slot>], entry: u32) -> &KeyHash {
        let slot = slots[(entry & !PREVIOUS) as usize].as_ref().expect("table entries point at live slots");
        match (&slot.previous, entry & PREVIOUS != 0) {
            (Some(prev), true) => &prev.0,
            _ => &slot.hash,
        }
    }

    fn find(&self, hash: &KeyHash) -> Option<u32> {
        self.entries.find(table_hash(hash), |&e| Self::hash_of(&self.slots, e) == hash).copied()
    }

    fn insert(&mut self, slot: Slot) {
        let hashes = (slot.hash, slot.previous.as_ref().map(|p| p.0));
        let by_id = id_hash(&self.id_hasher, &slot.info.id);
        let n = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize] = Some(slot);
                n
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        let rehash = |&e: &u32| table_hash(Self::hash_of(slots, e));
        self.entries.insert_unique(table_hash(&hashes.0), n, rehash);
        if let Some(prev) = hashes.1 {
            self.entries.insert_unique(table_hash(&prev), n | PREVIOUS, rehash);
        }
        let (hasher, slots) = (&self.id_hasher, &self.slots);
        let rehash_id = |&e: &u32| {
            let slot = slots[e as usize].as_ref().expect("by_id entries point at live slots");
            id_hash(hasher, &slot.info.id)
        };
        self.by_id.insert_unique(by_id, n, rehash_id);
    }

    /// Takes out slot `n`.
    fn remove_slot(&mut self, n: u32) -> Option<Slot> {
        let slot = self.slots[n as usize].as_ref()?;
        if let Ok(found) = self.by_id.find_entry(id_hash(&self.id_hasher, &slot.info.id), |&e| e == n) {
            found.remove();
        }
        for (h, entry) in [(Some(slot.hash), n), (slot.previous.as_ref().map(|p| p.0), n | PREVIOUS)] {
            if let Some(h) = h {
                if let Ok(found) = self.entries.find_entry(table_hash(&h), |&e| e == entry) {
                    found.remove();
                }
            }
        }
        self.free.push(n);
        self.slots[n as usize].take()
    }

    fn live_slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().flatten()
    }

    /// Puts key `id`'s row `after` (or, with `None`, its absence) in place
    /// of the key's slot and of whatever the row's own hashes point at,
    /// keeping the key's [`LiveKey`] through the change.
    fn replace(&mut self, id: &KeyId, after: Option<IndexRow>) {
        let mut old = None;
        if let Some(slot) = self.find_id(id).and_then(|n| self.remove_slot(n)) {
            old = slot.live;
        }
        let after_hashes = after.as_ref().map(|a| [Some(a.hash), a.previous.map(|p| p.0)]).unwrap_or_default();
        for hash in after_hashes.iter().flatten() {
            if let Some(slot) = self.find(hash).and_then(|e| self.remove_slot(e & !PREVIOUS)) {
                old = old.or(slot.live.filter(|l| l.id == *id));
            }
        }
        if let Some(row) = after {
            let mut slot = Slot::from_row(row);
            slot.live = old.map(|old| LiveKey::successor(&old, slot.info.clone()));
            self.insert(slot);
        }
    }
}

/// Where the index stands against the store: the store's change counter
/// and the last key change log entry applied.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    counter: i64,
    log: i64,
}

/// Every this many rows a reload counts as progress (see
/// [`KeyIndex::still_current`]).
const RELOAD_PROGRESS_ROWS: u32 = 16_384;

/// More keys changed at once by another process than this are loaded by a
/// full reload rather than one row at a time.
const MAX_APPLIED_CHANGES: usize = 2048;

/// How long a watched index may go without catching up with the database
/// (checks run every 250 ms) before verification refuses every key: the
/// most a revocation made elsewhere can go unseen while the database cannot
/// be read.
pub const STALE_AFTER_MS: i64 = 5_000;

/// How the index has followed other processes' commits, for `/metrics`,
/// tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Loads of every key (the first at start).
    pub full_loads: u64,
    /// Keys applied one by one from the change log.
    pub keys_applied: u64,
}

#[derive(Default)]
pub struct KeyIndex {
    table: RwLock<Table>,
    /// Serialises reloads, applied foreign changes and this process's own
    /// changes, so that an older state never replaces a newer; holds where
    /// the index stands (`None` before the first load).
    reload: Mutex<Option<Seen>>,
    full_loads: AtomicU64,
    keys_applied: AtomicU64,
    /// Until when (milliseconds since the epoch) the index counts as
    /// current; see [`Self::fresh_until_ms`]. Written only by holders of
    /// `reload` (and by [`Self::watch`], which only lowers it).
    fresh_until_ms: AtomicI64,
    /// Whether a watcher (`KeyService::run_upkeep`) keeps the index current;
    /// without one nothing could notice other processes' commits anyway, and
    /// the index never goes stale by age.
    watched: AtomicBool,
}

impl KeyIndex {
    /// Looks a hash up; no I/O. The first lookup of a key makes its
    /// [`LiveKey`].
    pub fn get(&self, hash: &KeyHash) -> Option<IndexEntry> {
        {
            let table = self.table.read().expect("index lock poisoned");
            let entry = table.find(hash)?;
            let slot = table.slot(entry);
            if let Some(live) = &slot.live {
                return Some(IndexEntry { key: live.clone(), valid_until_ms: valid_until_ms(slot, entry) });
            }
        }
        let mut table = self.table.write().expect("index lock poisoned");
        let entry = table.find(hash)?;
        let slot = table.slots[(entry & !PREVIOUS) as usize].as_mut().expect("live slot");
        let key = slot.live.get_or_insert_with(|| Arc::new(LiveKey::new(slot.info.clone(), None, None))).clone();
        Some(IndexEntry { key, valid_until_ms: valid_until_ms(slot, entry) })
    }

    /// Indexed hashes (a key has two during a rotation's grace period).
    pub fn len(&self) -> usize {
        self.table.read().expect("index lock poisoned").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            full_loads: self.full_loads.load(Ordering::Relaxed),
            keys_applied: self.keys_applied.load(Ordering::Relaxed),
        }
    }

    /// Until when (milliseconds since the epoch) the index may be trusted:
    /// at or after it, verification must refuse every key. One atomic load
    /// (the verify hot path reads it).
    pub fn fresh_until_ms(&self) -> i64 {
        self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// Whether the index is stale at `now_ms`.
    pub fn is_stale_at(&self, now_ms: i64) -> bool {
        now_ms >= self.fresh_until_ms()
    }

    /// A watcher now keeps the index current: from here on it goes stale
    /// [`STALE_AFTER_MS`] after it last caught up.
    pub fn watch(&self, now_ms: i64) {
        self.watched.store(true, Ordering::Release);
        self.fresh_until_ms.fetch_min(now_ms.saturating_add(STALE_AFTER_MS), Ordering::AcqRel);
    }

    /// The index caught up with the database as of `as_of_ms`.
    fn caught_up(&self, as_of_ms: i64) {
        let until =
            if self.watched.load(Ordering::Acquire) { as_of_ms.saturating_add(STALE_AFTER_MS) } else { i64::MAX };
        self.fresh_until_ms.store(until, Ordering::Release);
    }

    /// The index is still as current at `now_ms` as when it last caught up
    /// (a reload is streaming in): a current index's freshness moves on, a
    /// stale one's does not.
    fn still_current(&self, now_ms: i64) {
        if self.watched.load(Ordering::Acquire) && !self.is_stale_at(now_ms) {
            self.fresh_until_ms.fetch_max(now_ms.saturating_add(STALE_AFTER_MS), Ordering::AcqRel);
        }
    }

    /// The shared database is unreachable as of `now_ms`: nobody can commit
    /// a change, so what the index holds stays the latest there is (see
    /// `KeyService::watch_index`).
    pub fn bridge_outage(&self, now_ms: i64) {
        self.caught_up(now_ms);
    }

    /// Rebuilds the index from the store, keeping the rate limiters of keys
    /// in use.
    pub async fn reload(&self, store: &Store) -> anyhow::Result<()> {
        let mut seen = self.reload.lock().await;
        let as_of = now_ms();
        self.reload_locked(&mut seen, store).await?;
        self.caught_up(as_of);
        Ok(())
    }

    async fn reload_locked(&self, seen: &mut Option<Seen>, store: &Store) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        // Read the counter and the log's head first: a commit landing during
        // the load bumps them again, and the next check applies it (once
        // more, if the load already saw it: applying a row is idempotent).
        let counter = store.change_counter().await?;
        let log = store.key_change_head().await?;
        let mut live: HashMap<KeyId, Arc<LiveKey>> = {
            let table = self.table.read().expect("index lock poisoned");
            table.live_slots().filter_map(|s| Some((s.info.id.clone(), s.live.clone()?))).collect()
        };
        let mut table = Table::with_capacity(store.count_keys().await? as usize + 64);
        let mut scanned = 0u32;
        store
            .scan_index_rows(|row| {
                // The database answering a reload row after row is as good
                // as a check that succeeds: a current index stays current
                // while a long reload runs (what was committed meanwhile
                // is applied right after it, from the log's head read
                // above). A stale one stays stale until the reload is in.
                scanned = scanned.wrapping_add(1);
                if scanned % RELOAD_PROGRESS_ROWS == 0 {
                    self.still_current(now_ms());
                }
                let mut slot = Slot::from_row(row);
                if let Some(old) = live.remove(&slot.info.id) {
                    slot.live = Some(LiveKey::successor(&old, slot.info.clone()));
                }
                table.insert(slot);
            })
            .await?;
        let keys = table.slots.len() - table.free.len();
        let old = std::mem::replace(&mut *self.table.write().expect("index lock poisoned"), table);
        drop(old); // outside the lock
        let first = seen.is_none();
        *seen = Some(Seen { counter, log });
        self.full_loads.fetch_add(1, Ordering::Relaxed);
        if !first {
            tracing::info!(keys, ms = started.elapsed().as_millis() as u64, "reloaded the whole key index");
        }
        Ok(())
    }

    /// Catches up with another connection's commits, if there were any
    /// since the index last looked: the keys the change log names are
    /// applied one by one, or, when it cannot say (see
    /// [`Store::key_changes_since`]), everything is reloaded. Returns
    /// whether anyone else committed.
    ///
    /// Each success counts as catching up (see [`Self::fresh_until_ms`]); a
    /// failure changes nothing, so failures in a row make the index stale.
    pub async fn refresh_if_changed(&self, store: &Store) -> anyhow::Result<bool> {
        let mut seen = self.reload.lock().await;
        let as_of = now_ms();
        let changed = self.refresh_locked(&mut seen, store).await?;
        self.caught_up(as_of);
        Ok(changed)
    }

    async fn refresh_locked(&self, seen: &mut Option<Seen>, store: &Store) -> anyhow::Result<bool> {
        let Some(last) = *seen else {
            self.reload_locked(seen, store).await?;
            return Ok(true);
        };
        let counter = store.change_counter().await?;
        if counter == last.counter {
            return Ok(false);
        }
        let Some(changes) = store.key_changes_since(last.log, MAX_APPLIED_CHANGES).await? else {
            self.reload_locked(seen, store).await?;
            return Ok(true);
        };
        let mut rows = Vec::with_capacity(changes.keys.len());
        for id in changes.keys {
            let row = store.index_row(&id).await?;
            rows.push((id, row));
        }
        if !rows.is_empty() {
            let mut table = self.table.write().expect("index lock poisoned");
            for (id, row) in rows.iter_mut() {
                table.replace(id, row.take());
            }
            self.keys_applied.fetch_add(rows.len() as u64, Ordering::Relaxed);
            tracing::debug!(keys = rows.len(), "applied another process's key changes");
        }
        *seen = Some(Seen { counter, log: changes.through });
        Ok(true)
    }

    /// Runs `write`, a change of key `id` by this process, then applies the
    /// key's new row (or its absence) to the index: no reload. Changes and
    /// reloads run one at a time, so each applies the latest committed row.
    ///
    /// This process's own commits do not move the store's change counter,
    /// so a change it cannot apply would otherwise go unseen: if the new row
    /// cannot be read after the write, the index is stale at once (every key
    /// refused) until a full reload, which the next check makes. A failed
    /// write (which may yet have committed) also makes the next check a full
    /// reload.
    pub async fn change<T>(
        &self,
        store: &Store,
        id: &KeyId,
        write: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let mut seen = self.reload.lock().await;
        let outcome = match write.await {
            Ok(outcome) => outcome,
            Err(e) => {
                *seen = None;
                return Err(e);
            }
        };
        let after = match store.index_row(id).await {
            Ok(after) => after,
            Err(e) => {
                *seen = None;
                self.fresh_until_ms.store(0, Ordering::Release);
                tracing::error!(
                    key_id = %id,
                    error = format!("{e:#}"),
                    "failed to apply a committed key change to the in-memory index; refusing every key \
                     (503 index_stale) until the index is reloaded"
                );
                return Err(e.context("failed to apply a committed key change to the key index"));
            }
        };
        self.table.write().expect("index lock poisoned").replace(id, after);
        Ok(outcome)
    }
}

impl LeasedKey for LiveKey {
    /// What this instance holds of the key's budget leased from a shared
    /// database (`service::lease`).
    fn lease(&self) -> &KeyLease {
        &self.lease
    }

    fn key_id(&self) -> &KeyId {
        &self.info.id
    }

    fn limit_per_minute(&self) -> u32 {
        self.info.rate_limit_per_minute
    }
}

/// Now in milliseconds since the epoch.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn valid_until_ms(slot: &Slot, entry: u32) -> Option<i64> {
    match &slot.previous {
        Some(prev) if entry & PREVIOUS != 0 => Some(prev.1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        // The memory budget (bench/README.md) rests on this.
        assert!(std::mem::size_of::<Option<Slot>>() <= 152, "{}", std::mem::size_of::<Option<Slot>>());
        assert!(std::mem::size_of::<KeyInfo>() <= 104, "{}", std::mem::size_of::<KeyInfo>());
    }

    fn slot(byte: u8, previous: Option<u8>) -> Slot {
        Slot::from_row(row(byte, previous))
    }

    /// Key `key_<byte>`'s row, its secret's hash `[byte; 32]`.
    fn row(byte: u8, previous: Option<u8>) -> IndexRow {
        IndexRow {
            id: KeyId::from_stored(format!("key_{byte:016}")),
            guild_id: 1,
            name: format!("k{byte}"),
            prefix: "gk_live_Ab3d".into(),
            environment: Environment::Live,
            scopes: Scopes::parse("bans.read").unwrap(),
            expires_at: None,
            revoked_at: None,
            rate_limit_per_minute: 60,
            allowed_ips: AllowedIps::default(),
            allowed_roles: AllowedRoles::default(),
            suspended: false,
            ban_budget: None,
            role_budget: None,
            hash: KeyHash([byte; 32]),
            previous: previous.map(|b| (KeyHash([b; 32]), Utc::now())),
        }
    }

    #[test]
    fn the_table_finds_current_and_previous_hashes_and_forgets_removed_ones() {
        let mut t = Table::default();
        for b in 1..=200u8 {
            t.insert(slot(b, None));
        }
        t.insert(slot(201, Some(202)));
        assert_eq!(t.entries.len(), 202);
        assert_eq!(t.slot(t.find(&KeyHash([7; 32])).unwrap()).info.name, "k7");
        let prev = t.find(&KeyHash([202; 32])).unwrap();
        assert!(prev & PREVIOUS != 0 && t.slot(prev).info.name == "k201");
        assert!(t.find(&KeyHash([250; 32])).is_none());

        let removed = t.remove_slot(t.find(&KeyHash([202; 32])).unwrap() & !PREVIOUS).unwrap();
        assert_eq!(removed.info.name, "k201");
        assert!(t.find(&KeyHash([201; 32])).is_none() && t.find(&KeyHash([202; 32])).is_none());
        assert!(t.find_id(&removed.info.id).is_none(), "nor is it found by id");
        t.insert(slot(203, None));
        assert_eq!(t.slots.len(), 201, "the freed slot is reused");
        assert_eq!(t.slot(t.find(&KeyHash([203; 32])).unwrap()).info.name, "k203");
        assert_eq!(t.entries.len(), 201);
        assert_eq!((t.by_id.len(), t.find_id(&slot(203, None).info.id)), (201, t.find(&KeyHash([203; 32]))));
    }

    #[test]
    fn a_reload_streaming_in_keeps_a_current_index_current_but_never_revives_a_stale_one() {
        let index = KeyIndex::default();
        index.watch(1_000);
        index.caught_up(1_000); // the first load
        assert_eq!(index.fresh_until_ms(), 1_000 + STALE_AFTER_MS);
        // Rows still arriving 4 s on: fresh for another STALE_AFTER_MS.
        index.still_current(5_000);
        assert_eq!(index.fresh_until_ms(), 5_000 + STALE_AFTER_MS);
        // Past its freshness (or made stale at once by a failed own write),
        // progress alone does not make it current again.
        index.still_current(5_000 + STALE_AFTER_MS);
        assert!(index.is_stale_at(5_000 + STALE_AFTER_MS));
        index.fresh_until_ms.store(0, Ordering::Release);
        index.still_current(6_000);
        assert!(index.is_stale_at(6_000));
        // An unwatched index never goes stale by age, so nothing moves.
        let unwatched = KeyIndex::default();
        unwatched.still_current(7_000);
        assert_eq!(unwatched.fresh_until_ms(), 0);
    }

    #[test]
    fn replacing_a_key_by_id_drops_its_old_hash_even_when_the_new_row_does_not_name_it() {
        // A rotation without a grace period, seen from another process:
        // the new row holds only the new hash; the old must go all the same.
        let mut t = Table::default();
        for b in 1..=50u8 {
            t.insert(slot(b, None));
        }
        let id = slot(7, None).info.id.clone();
        let rotated = IndexRow { hash: KeyHash([99; 32]), ..row(7, None) };
        t.replace(&id, Some(rotated));
        assert!(t.find(&KeyHash([7; 32])).is_none(), "the old secret no longer works");
        assert_eq!(t.find(&KeyHash([99; 32])), t.find_id(&id));
        assert_eq!((t.entries.len(), t.by_id.len()), (50, 50));
        t.replace(&id, None);
        assert!(t.find(&KeyHash([99; 32])).is_none() && t.find_id(&id).is_none(), "a deleted key is gone");
        assert_eq!((t.entries.len(), t.by_id.len()), (49, 49));
    }
}
