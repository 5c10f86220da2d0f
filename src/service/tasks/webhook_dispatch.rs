//! The webhook dispatcher: queues messages for new audit events, starts an
//! attempt for each due delivery (at most [`IN_FLIGHT`] at once), prunes
//! the delivery log hourly; one per `guildkey run`, however many instances
//! (each attempt is claimed).
//!
//! Every guild alone: only each guild's oldest pending message is ever due
//! (its messages go out in event order), so a guild has at most one attempt
//! in flight, and the due ones are started the most overdue first, one per
//! guild: the guilds are served in turn. A receiver that never answers
//! costs its own guild 5 s an attempt (`ATTEMPT_TIMEOUT`) and holds one of
//! the [`IN_FLIGHT`] places meanwhile; it takes that many such guilds at
//! once to hold up another's messages.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;

use super::super::webhooks::{client, WebhookService};

/// Finished deliveries are kept this long (the delivery log), then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(7 * 86_400);
/// Attempts in flight at once, per instance (one per guild at most).
const IN_FLIGHT: usize = 64;

impl WebhookService {
    /// Queues and sends until `stop` resolves, then lets attempts in flight
    /// finish (each within [`ATTEMPT_TIMEOUT`]).
    pub async fn dispatch(&self, stop: impl std::future::Future<Output = ()>) {
        let client = match client(&self.inner.cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot build the webhook client; webhooks are not delivered"
                );
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut in_flight = tokio::task::JoinSet::new();
        let mut last_prune = tokio::time::Instant::now();
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.queue_audit_events().await {
                tracing::warn!(error = format!("{e:#}"), "failed to queue webhook messages for audit events");
            }
            if let Err(e) = self.start_due(&client, &slots, &mut in_flight).await {
                tracing::warn!(error = format!("{e:#}"), "failed to read due webhook deliveries");
            }
            while let Some(done) = in_flight.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a webhook attempt crashed");
                }
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = tokio::time::Instant::now();
                let before = Utc::now() - chrono::Duration::from_std(KEEP_FINISHED).unwrap_or_default();
                if let Err(e) = self.store().prune_deliveries(before).await {
                    tracing::warn!(error = format!("{e:#}"), "failed to prune old webhook deliveries");
                }
            }
            let wait = self.next_wait().await;
            tokio::select! {
                () = &mut stop => break,
                () = self.inner.queued.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Until the next tick: at most [`POLL`], sooner if a retry is due
    /// sooner (audit events are noticed by polling, within [`POLL`]).
    async fn next_wait(&self) -> Duration {
        let due = self.store().next_delivery_at().await.ok().flatten();
        let until = due.map(|at| (at - Utc::now()).to_std().unwrap_or_default()).unwrap_or(POLL);
        until.clamp(Duration::from_millis(20), POLL)
    }

    /// Starts an attempt for each due delivery there is room for.
    async fn start_due(
        &self,
        client: &reqwest::Client,
        slots: &Arc<Semaphore>,
        in_flight: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<()> {
        let room = slots.available_permits();
        if room == 0 {
            return Ok(());
        }
        for due in self.store().due_deliveries(Utc::now(), room as u32).await? {
            let Ok(slot) = slots.clone().try_acquire_owned() else { break };
            let (service, client) = (self.clone(), client.clone());
            in_flight.spawn(async move {
                let (id, guild_id) = (due.delivery.id, due.delivery.guild_id);
                if let Err(e) = service.attempt(&client, due).await {
                    tracing::warn!(
                        delivery_id = id,
                        guild_id,
                        error = format!("{e:#}"),
                        "failed to record a webhook attempt"
                    );
                }
                drop(slot);
                service.inner.queued.notify_one(); // the next retry's time, or room for another
            });
        }
        Ok(())
    }
}

/// The dispatcher ([`WebhookService::dispatch`]) until `stop` resolves: what
/// `guildkey run` spawns beside the audit outbox.
pub async fn run(service: WebhookService, stop: impl std::future::Future<Output = ()>) {
    service.dispatch(stop).await;
}

/// How often the dispatcher looks for new audit events at most.
const POLL: Duration = Duration::from_millis(500);
