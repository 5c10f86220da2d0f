//! The background loops, one file per loop (as crates.io's
//! `src/worker/jobs/`): the index watch and usage flush
//! ([`index_upkeep`]), the expiry reminders ([`reminders`]), the heartbeat
//! of the shared rate limits ([`leases`]), the periodic check of key
//! makers ([`makers`]), the audit-channel outbox ([`outbox`]), the
//! reconcile of API writes left pending ([`reconcile`]), the webhook
//! dispatcher ([`webhook_dispatch`]), the refresh of GitHub's signing
//! keys ([`github_keys`]), the sharing of Discord's refusal counts
//! between instances ([`refusals`]), the completion of rotations
//! "until unused" ([`rotations`]) and the Roblox push worker ([`roblox_push`]).
//! [`KeyService::run_upkeep`] runs the first three; `guildkey run` spawns
//! the outbox, the reconcile and the dispatcher beside it.

pub mod github_keys;
pub mod index_upkeep;
pub mod leases;
pub mod makers;
pub mod outbox;
pub mod reconcile;
pub mod refusals;
pub mod reminders;
pub mod roblox_push;
pub mod rotations;
pub mod webhook_dispatch;

use super::KeyService;

impl KeyService {
    /// Runs the background upkeep until `stop` resolves: the index watch
    /// (every 250 ms) and the usage flush (last-used times, the request log,
    /// the counters of ended minutes, spike alerts; hourly the retention),
    /// in a task of its own; beside them, the expiry reminders
    /// ([`reminders`], every `keys.expiry_check_seconds`) and the heartbeat
    /// of the shared rate limits, and the rotations "until unused"
    /// ([`rotations`]). Flushes everything once more at the end.
    ///
    /// While it runs the index must keep up: when its checks have failed
    /// for [`index::STALE_AFTER_MS`], [`Self::authenticate`] refuses every
    /// key (logged at error once) until a check succeeds (logged at info).
    pub async fn run_upkeep(&self, stop: impl std::future::Future<Output = ()>) {
        let (stopped, stopping) = tokio::sync::watch::channel(false);
        let stopped_too = || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            }
        };
        let reminders = self.run_expiry_reminders(stopped_too());
        let rotations = self.run_rotations(stopped_too());
        // The heartbeat of the shared rate limits runs beside the index's
        // upkeep, so a slow database answer to one never holds up the other.
        let leases = self.inner.leases.run_upkeep(stopped_too());
        let upkeep = async move {
            self.run_index_upkeep(stop).await;
            let _ = stopped.send(true);
        };
        tokio::join!(upkeep, reminders, leases, rotations);
    }
}
