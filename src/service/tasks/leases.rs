//! The heartbeat of the rate limits shared by instances (`service::lease`):
//! how many instances are alive sizes each one's lease chunks, and old
//! windows are swept once a window.

use std::sync::atomic::Ordering;

use super::super::lease::now_ms;
use super::super::lease::{window_of, window_start_ms, RateLeases, LEASE_TIMEOUT, LIVE_FOR_MS, UPKEEP_EVERY};

impl RateLeases {
    /// Until `stop`: the heartbeat (how many instances are alive sizes the
    /// chunks) every [`UPKEEP_EVERY`] and, once a window, the sweep of
    /// windows before the previous one; then [`RateLeases::leave`]. Run by
    /// `KeyService::run_upkeep`.
    pub async fn run_upkeep(&self, stop: impl std::future::Future<Output = ()>) {
        if !self.enabled {
            return;
        }
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                // A beat that cannot finish within a period is given up; the
                // next one tries again (a heartbeat lives three periods).
                _ = tick.tick() => if tokio::time::timeout(UPKEEP_EVERY, self.beat_and_sweep()).await.is_err() {
                    tracing::debug!("the database did not answer the rate-limit heartbeat in time");
                },
            }
        }
        self.leave().await;
    }

    async fn beat_and_sweep(&self) {
        let now = now_ms();
        match self.store.beat_instance(&self.instance_id, now, now - LIVE_FOR_MS).await {
            Ok(n) => {
                let before = self.instances.swap(n.max(1), Ordering::Relaxed);
                if before != n.max(1) {
                    tracing::debug!(instances = n, "instances sharing the rate limits");
                }
            }
            Err(e) => tracing::debug!(error = format!("{e:#}"), "failed to beat the rate-limit heartbeat"),
        }
        let window = window_of(now);
        if self.swept.swap(window, Ordering::Relaxed) != window {
            match self.store.delete_rate_leases_before(window_start_ms(window.saturating_sub(1))).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "deleted old rate-limit windows"),
                Ok(_) => {}
                Err(e) => {
                    self.swept.store(0, Ordering::Relaxed);
                    tracing::debug!(error = format!("{e:#}"), "failed to delete old rate-limit windows");
                }
            }
        }
    }

    /// Takes this instance's heartbeat away (it is stopping), so the others
    /// size their chunks for one fewer at once.
    pub async fn leave(&self) {
        if !self.enabled {
            return;
        }
        match tokio::time::timeout(LEASE_TIMEOUT, self.store.forget_instance(&self.instance_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = format!("{e:#}"), "failed to remove the rate-limit heartbeat"),
            Err(_) => tracing::debug!("the database did not answer; the rate-limit heartbeat expires by itself"),
        }
    }
}
