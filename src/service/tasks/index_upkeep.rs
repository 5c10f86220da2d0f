//! The upkeep's own loop: the index watch (every 250 ms, or at once when
//! another instance signals a change) and its [`Watch`] state machine, and
//! the usage flush beside it (hourly, the retention).
use std::time::Duration;

use super::super::{index, unix_millis, usage, KeyService, Result};

/// What the upkeep's index watch last found (see `KeyService::watch_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Current,
    /// Checks failed for too long: every key is refused.
    Stale,
    /// The shared database is unreachable: keys verified from memory.
    Outage,
}

impl KeyService {
    /// Brings the index up to date if another process committed (called on
    /// a timer); returns whether one did.
    pub async fn refresh_index(&self) -> Result<bool> {
        let changed = self.inner.index.refresh_if_changed(&self.inner.store).await?;
        if changed {
            self.inner.audit_posted.notify_one();
        }
        Ok(changed)
    }

    /// The index watch and the last-used flush (see [`Self::run_upkeep`]).
    pub(super) async fn run_index_upkeep(&self, stop: impl std::future::Future<Output = ()>) {
        self.inner.index.watch(unix_millis());
        let mut state = Watch::Current;
        let flush_every = Duration::from_secs(self.inner.cfg.last_used_flush_seconds.max(1));
        let mut watch = tokio::time::interval(Duration::from_millis(250));
        let mut flush = tokio::time::interval(flush_every);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Another instance's change wakes the watch at once (PostgreSQL);
        // the tick is the fallback, and SQLite's only signal.
        let woken = self.inner.store.key_changes_signal().unwrap_or_default();
        let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = woken.notified() => state = self.watch_index(state).await,
                _ = watch.tick() => state = self.watch_index(state).await,
                _ = flush.tick() => {
                    // Off this loop: a slow write must never hold up the
                    // index watch (which would then go stale). One at a time.
                    if flushing.as_ref().is_none_or(|f| f.is_finished()) {
                        let svc = self.clone();
                        flushing = Some(tokio::spawn(async move { svc.flush_and_maintain().await }));
                    }
                }
            }
        }
        if let Some(flushing) = flushing {
            let _ = flushing.await;
        }
        if let Err(e) = self.flush_usage_at(self.now(), true).await {
            tracing::error!(error = %e, "failed to write usage (last-used times, counters, request log) at shutdown");
        }
    }

    /// One tick of the usage flush, and the hourly upkeep when it is due.
    async fn flush_and_maintain(&self) {
        if let Err(e) = self.flush_usage().await {
            tracing::warn!(error = %e, "failed to write usage (last-used times, counters, request log); will retry");
        }
        let now = self.now();
        let minute = usage::minute_of(now.timestamp_millis());
        let due = &self.inner.usage_upkeep_due;
        if minute >= due.load(std::sync::atomic::Ordering::Acquire) {
            // Hourly, a few minutes past the hour.
            let next = (minute.div_euclid(60) + 1) * 60 + 3;
            due.store(next, std::sync::atomic::Ordering::Release);
            if let Err(e) = self.maintain_usage(now).await {
                tracing::warn!(error = %e, "failed to prune usage counters; will retry next hour");
            }
        }
    }

    /// One check of the index against the database, and what it means:
    /// - a failure past [`index::STALE_AFTER_MS`] refuses every key (503
    ///   `index_stale`) until a check succeeds, so a key revoked elsewhere
    ///   is never served from a memory that cannot confirm it;
    /// - but when the database is *shared* (PostgreSQL) and unreachable,
    ///   no instance can commit a change either, so the index is as current
    ///   as the database can be: verification goes on from memory, and
    ///   changes are refused (503 `database_unavailable`) until it is back.
    async fn watch_index(&self, state: Watch) -> Watch {
        let index = &self.inner.index;
        let outcome = index.refresh_if_changed(&self.inner.store).await;
        if matches!(outcome, Ok(true)) {
            self.inner.audit_posted.notify_one();
        }
        match (outcome, state) {
            (Ok(_), Watch::Current) => Watch::Current,
            (Ok(_), Watch::Stale) => {
                tracing::info!("the key index caught up with the database again; keys are accepted again");
                Watch::Current
            }
            (Ok(_), Watch::Outage) => {
                tracing::info!("the database is reachable again; changes are accepted again");
                Watch::Current
            }
            (Err(e), state) if self.inner.store.is_shared() && crate::store::is_unavailable(&e) => {
                index.bridge_outage(unix_millis());
                if state != Watch::Outage {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "the database is unreachable; verifying keys from memory, refusing changes \
                         (503 database_unavailable) until it is back"
                    );
                }
                Watch::Outage
            }
            (Err(e), Watch::Stale) => {
                tracing::debug!(error = format!("{e:#}"), "the key index still cannot catch up");
                Watch::Stale
            }
            (Err(e), _) if index.is_stale_at(unix_millis()) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    stale_after_ms = index::STALE_AFTER_MS,
                    "the key index cannot catch up with the database; refusing every key \
                     (503 index_stale) until it does"
                );
                Watch::Stale
            }
            (Err(e), state) => {
                tracing::warn!(error = format!("{e:#}"), "failed to check the database for changes");
                state
            }
        }
    }
}
