//! The service layer: every rule about keys, in one place.
//!
//! Adapters (HTTP, bot, CLI) call [`KeyService`] and translate its [`Error`]
//! once each; none of them touches SQL or decides a rule. Every change writes
//! its audit event in the same transaction (see `store`), refreshes the
//! in-memory [`index::KeyIndex`] before returning, and wakes the audit-channel
//! poster. Verification ([`KeyService::authenticate`]) reads only memory.
//!
//! One concern a file, each an `impl KeyService` block: `error.rs` (the
//! error enum), `drafts.rs` (what a person types), `keys.rs` (the
//! lifecycle), `verify.rs` (admission: [`KeyService::admit`]), `leaks.rs`,
//! `audit.rs`, `usage/` (the tracker, its flush, the usage reads),
//! `spike.rs`, `lease.rs` (rate limits shared by instances), `makers.rs`
//! (no key outranks its maker), `actions.rs`, `guard.rs` and `breaker.rs`
//! (Discord writes and their budgets), `webhooks/`, [`clock`], and `index.rs`
//! (the in-memory key index). The background loops are in [`tasks`], one
//! file a loop.

pub mod actions;
mod audit;
pub mod ban_lists;
mod breaker;
pub mod clock;
pub mod credentials;
mod drafts;
mod error;
pub mod features;
pub mod github_keys;
pub mod guard;
pub mod health;
pub mod index;
mod keys;
mod leaks;
pub mod lease;
pub mod makers;
pub mod roblox;
pub mod spike;
pub mod tasks;
pub mod usage;
pub mod usage_report;
mod verify;
pub mod webhooks;

pub use audit::{PENDING_FOR, SUMMARY_LINES};
pub use clock::Clock;
pub use drafts::{
    parse_grace, parse_grace_until_unused, IssuedKey, KeyDraft, KeyRequest, OldSecret, MAX_GRACE_SECONDS,
    MAX_UNUSED_GRACE_SECONDS,
};
pub use error::{Error, Result};
pub use leaks::{find_tokens, LeakReport};
pub use tasks::{outbox, reconcile, reminders};
pub use verify::{Admission, Authenticated, Budget};

/// Store rows the adapters show as they are (a request-log line, a webhook
/// delivery), so no adapter imports the store.
pub use crate::store::{DeliveryRecord, DeliveryState, RequestLogEntry};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::config::{KeysConfig, UsageConfig};
use crate::keys::{KeyId, KeyRecord};
use crate::store::Store;

use index::KeyIndex;
use spike::SpikeWatch;
use usage::UsageTracker;

/// The rules, shared by every adapter. Cheap to clone.
#[derive(Clone)]
pub struct KeyService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cfg: KeysConfig,
    usage_cfg: UsageConfig,
    index: KeyIndex,
    usage: UsageTracker,
    spikes: SpikeWatch,
    /// The minute from which the next usage upkeep (retention) is due.
    usage_upkeep_due: std::sync::atomic::AtomicI64,
    audit_posted: Notify,
    /// Rate-limit budgets shared with other instances (`lease`).
    leases: Arc<lease::RateLeases>,
    /// What time it is for keys (see [`Clock`]).
    clock: Clock,
    /// The circuit breaker's turns per key in this process (`breaker`).
    breaker_turns: breaker::Turns,
    /// Old secrets presented and not yet written (`tasks::rotations`).
    sightings: tasks::rotations::Sightings,
    /// The keys guilds' third-party credentials are sealed under
    /// ([`Self::set_secrets`]; none until set).
    secrets: std::sync::OnceLock<Arc<credentials::SecretsKeys>>,
    /// What resolving `roblox:` ids keeps in memory (`roblox::links`).
    links: roblox::links::LinkState,
    /// Where keys are delivered into Roblox Secrets from (`roblox::delivery`).
    roblox_delivery: std::sync::OnceLock<roblox::delivery::DeliverySettings>,
}

impl KeyService {
    /// Builds the service and loads the key index, with the default usage
    /// settings.
    pub async fn new(store: Store, cfg: KeysConfig) -> anyhow::Result<Self> {
        Self::with_usage(store, cfg, UsageConfig::default()).await
    }

    /// [`Self::new`] with these usage settings (retention, the request log).
    pub async fn with_usage(store: Store, cfg: KeysConfig, usage_cfg: UsageConfig) -> anyhow::Result<Self> {
        Self::with_clock(store, cfg, usage_cfg, Clock::system()).await
    }

    /// [`Self::with_usage`] on `clock`: a test passes [`Clock::at`] and
    /// moves time rather than sleep for an expiry or a grace period.
    pub async fn with_clock(
        store: Store,
        cfg: KeysConfig,
        usage_cfg: UsageConfig,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let svc = Self {
            inner: Arc::new(Inner {
                leases: Arc::new(lease::RateLeases::new(store.clone())),
                breaker_turns: breaker::Turns::default(),
                sightings: tasks::rotations::Sightings::default(),
                store,
                cfg,
                usage_cfg,
                index: KeyIndex::default(),
                usage: UsageTracker::new(usage_cfg.request_log_per_key),
                spikes: SpikeWatch::default(),
                usage_upkeep_due: std::sync::atomic::AtomicI64::new(i64::MIN),
                audit_posted: Notify::new(),
                clock,
                secrets: std::sync::OnceLock::new(),
                links: roblox::links::LinkState::default(),
                roblox_delivery: std::sync::OnceLock::new(),
            }),
        };
        svc.inner.index.reload(&svc.inner.store).await?;
        Ok(svc)
    }

    /// Sets the keys credentials are sealed under (`secrets.key`); once,
    /// at start. Later calls are ignored.
    pub fn set_secrets(&self, keys: credentials::SecretsKeys) {
        let _ = self.inner.secrets.set(Arc::new(keys));
    }

    /// Sets what delivering keys into Roblox Secrets needs (the Open Cloud
    /// base URL, `http.public_url`); once, at start.
    pub fn set_delivery_settings(&self, settings: roblox::delivery::DeliverySettings) {
        let _ = self.inner.roblox_delivery.set(settings);
    }

    /// What delivering keys into Roblox Secrets uses.
    pub fn delivery_settings(&self) -> roblox::delivery::DeliverySettings {
        self.inner.roblox_delivery.get().cloned().unwrap_or_default()
    }

    /// Guilds' third-party credentials, sealed under the keys set with
    /// [`Self::set_secrets`] (storing one without them is refused, saying
    /// what to set).
    pub fn credentials(&self) -> credentials::Credentials {
        let keys = self.inner.secrets.get().cloned().unwrap_or_default();
        credentials::Credentials::new(self.inner.store.clone(), keys, self.inner.clock.clone())
    }

    /// What resolving `roblox:` ids keeps in memory.
    pub(crate) fn links(&self) -> &roblox::links::LinkState {
        &self.inner.links
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &KeysConfig {
        &self.inner.cfg
    }

    /// Wakes when a change wrote an audit event (for the audit poster).
    pub fn audit_notifier(&self) -> &Notify {
        &self.inner.audit_posted
    }

    /// Runs a change of key `id` and applies it to the index before
    /// returning (no reload: see `index`), then wakes the audit poster.
    async fn change_key<T>(
        &self,
        id: &KeyId,
        write: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Result<T> {
        let outcome = self.inner.index.change(&self.inner.store, id, write).await?;
        self.inner.audit_posted.notify_one();
        Ok(outcome)
    }

    /// Key hashes in the index (a metric).
    pub fn indexed_keys(&self) -> usize {
        self.inner.index.len()
    }

    /// How the key index has followed other processes' commits.
    pub fn index_stats(&self) -> index::IndexStats {
        self.inner.index.stats()
    }

    /// The time now on the service's clock (see [`Clock`]), for adapters
    /// rendering statuses consistently.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The service's clock: a test holding a test clock moves it.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
}

/// Now in milliseconds since the epoch, without building a `DateTime`.
fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A key as named in messages: name and prefix, never the secret.
pub fn describe(key: &KeyRecord) -> String {
    describe_named(&key.name, &key.prefix)
}

fn describe_named(name: &str, prefix: &str) -> String {
    format!("'{name}' ({prefix})")
}
