//! The Roblox push worker: sends the queued pushes of bans and unbans
//! (`service::roblox::push`) to Open Cloud, each once (claimed), in order
//! per user. A guild's publish pushes due together are packed into one
//! MessagingService message of at most 1 KiB; a restriction is read first
//! and not re-applied when Roblox already holds it, and at most 2 updates
//! a minute go out per user. A refusal to wait (429, `Retry-After`) is
//! waited out; other failures are retried with a growing wait; a push is
//! given up `roblox.push_give_up_seconds` (an hour) after it was queued.
//! Each push and each give-up is an audit event (`roblox.push`,
//! `roblox.push_failed`). One per `guildkey run` with the bot; finished pushes
//! are pruned after 7 days.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use serde_json::json;

use crate::audit::Action;
use crate::roblox::open_cloud::OpenCloud;
use crate::roblox::OutsideError;
use crate::service::credentials::CredentialKind;
use crate::service::roblox::push::{pack, queued, restriction_slot};
use crate::service::KeyService;
use crate::store::{PushEvent, PushNext};

/// Finished pushes are kept this long (`roblox push show`), then pruned.
const KEEP_FINISHED_DAYS: i64 = 7;
/// How long a claim holds a push (longer than a call's 10 s budget).
const CLAIM: i64 = 30;
/// The longest wait between two looks at the outbox.
const POLL: Duration = Duration::from_millis(250);

/// The worker.
#[derive(Clone)]
pub struct PushWorker {
    keys: KeyService,
    cloud: OpenCloud,
    give_up: ChronoDuration,
}

impl PushWorker {
    pub fn new(keys: KeyService, open_cloud_base_url: &str, give_up: Duration) -> Self {
        Self {
            keys,
            cloud: OpenCloud::new(open_cloud_base_url),
            give_up: ChronoDuration::from_std(give_up).unwrap_or(ChronoDuration::hours(1)),
        }
    }

    /// One pass over the due pushes; what a test calls with a moved clock.
    pub async fn tick(&self) -> anyhow::Result<()> {
        let now = self.keys.now();
        let due = self.keys.store().due_roblox_pushes(now, 100).await?;
        let mut guilds_published = HashSet::new();
        for push in due {
            let outcome = match push.kind.as_str() {
                "publish" if guilds_published.insert(push.guild_id) => self.publish(push.guild_id).await,
                "publish" => Ok(()),
                _ => self.restrict(push).await,
            };
            if let Err(e) = outcome {
                tracing::warn!(error = format!("{e:#}"), "failed to record a Roblox push");
            }
        }
        Ok(())
    }

    /// Until the next push falls due, at most [`POLL`].
    async fn next_wait(&self) -> Duration {
        let due = self.keys.store().next_roblox_push_at().await.ok().flatten();
        let until = due.map(|at| (at - self.keys.now()).to_std().unwrap_or_default()).unwrap_or(POLL);
        until.clamp(Duration::from_millis(10), POLL)
    }

    /// Claims a push; `false` when another worker holds it.
    async fn claim(&self, id: i64) -> anyhow::Result<bool> {
        let now = self.keys.now();
        self.keys.store().claim_roblox_push(id, now, now + ChronoDuration::seconds(CLAIM)).await
    }

    /// Sends a guild's pending publish pushes, packed (up to 1 KiB each
    /// message, in order).
    async fn publish(&self, guild_id: u64) -> anyhow::Result<()> {
        let Some(setting) = self.keys.store().roblox_push(guild_id).await? else { return Ok(()) };
        let pending = self.keys.store().pending_publishes(guild_id, 200).await?;
        let mut claimed = Vec::new();
        for p in pending {
            if self.claim(p.id).await? {
                claimed.push(p);
            }
        }
        let mut rest = claimed.as_slice();
        while !rest.is_empty() {
            let (n, message) = pack(guild_id, rest);
            let (batch, after) = rest.split_at(n);
            rest = after;
            let result = match self.key(guild_id).await {
                Ok(key) => self.cloud.publish(&key, setting.universe_id, &setting.topic, &message).await,
                Err(e) => Err(e),
            };
            self.finish(batch, result, false, "publish", setting.universe_id).await?;
        }
        Ok(())
    }

    /// Applies (or lifts) one user's restriction, unless Roblox holds it
    /// already; paced at 2 updates a minute per user.
    async fn restrict(&self, push: PushEvent) -> anyhow::Result<()> {
        if !self.claim(push.id).await? {
            return Ok(());
        }
        let now = self.keys.now();
        let sent = self
            .keys
            .store()
            .restriction_updates_since(push.universe_id, push.roblox_id, now - ChronoDuration::seconds(60))
            .await?;
        let ban = push.action == "ban";
        let key = match self.key(push.guild_id).await {
            Ok(k) => k,
            Err(e) => {
                return self.finish(std::slice::from_ref(&push), Err(e), false, "restrict", push.universe_id).await
            }
        };
        let held = match self.cloud.restriction(&key, push.universe_id, push.roblox_id).await {
            Ok(r) => r.active,
            Err(e) => {
                return self.finish(std::slice::from_ref(&push), Err(e), false, "restrict", push.universe_id).await
            }
        };
        if held == ban {
            // Roblox holds it already: nothing to send, nothing to audit.
            self.keys.store().finish_roblox_push(push.id, PushNext::Done, None, false, now).await?;
            return Ok(());
        }
        if let Some(at) = restriction_slot(&sent, now) {
            let at = at.min(push.created_at + self.give_up);
            self.keys.store().finish_roblox_push(push.id, PushNext::RetryAt(at), None, false, now).await?;
            return Ok(());
        }
        let reason = format!("Banned in Discord server {} (guildkey, origin {})", push.guild_id, push.origin);
        let result = self.cloud.restrict(&key, push.universe_id, push.roblox_id, ban, &reason).await;
        self.finish(std::slice::from_ref(&push), result, true, "restrict", push.universe_id).await
    }

    async fn key(&self, guild_id: u64) -> Result<crate::config::Secret, OutsideError> {
        match self.keys.credentials().get(guild_id, CredentialKind::OpenCloud).await {
            Ok(Some(c)) => Ok(c.secret),
            Ok(None) => Err(OutsideError::Refused {
                service: "guildkey",
                status: 0,
                message: "the guild has no Open Cloud key (guildkey roblox push set)".into(),
            }),
            Err(e) => Err(OutsideError::Refused { service: "guildkey", status: 0, message: e.to_string() }),
        }
    }

    /// Records the outcome of one call for `batch` (one message, or one
    /// restriction), with its audit event.
    async fn finish(
        &self,
        batch: &[PushEvent],
        result: Result<(), OutsideError>,
        sent: bool,
        how: &str,
        universe_id: u64,
    ) -> anyhow::Result<()> {
        let Some(first) = batch.first() else { return Ok(()) };
        let now = self.keys.now();
        let events: Vec<_> = batch
            .iter()
            .map(|e| json!({"roblox_id": e.roblox_id, "discord_id": e.discord_id.to_string(), "action": e.action, "origin": e.origin}))
            .collect();
        let details = |error: Option<String>| {
            let mut d = json!({"universe_id": universe_id.to_string(), "push": how, "events": events});
            if let Some(e) = error {
                d["error"] = json!(e);
            }
            d
        };
        match result {
            Ok(()) => {
                for e in batch {
                    self.keys.store().finish_roblox_push(e.id, PushNext::Done, None, sent, now).await?;
                }
                self.keys.record_system_event(first.guild_id, Action::RobloxPush, details(None)).await?;
            }
            Err(err) => {
                let text = err.to_string();
                for e in batch {
                    let deadline = e.created_at + self.give_up;
                    let hopeless = matches!(err, OutsideError::Refused { status: 400 | 404, .. });
                    let wait = match &err {
                        OutsideError::Limited { retry_after_secs, .. } => {
                            ChronoDuration::seconds(i64::try_from(*retry_after_secs).unwrap_or(3600))
                        }
                        _ => ChronoDuration::seconds(1i64 << e.attempts.clamp(0, 8)),
                    };
                    let next = now + wait;
                    let give_up = hopeless || now >= deadline;
                    let outcome = if give_up { PushNext::GiveUp } else { PushNext::RetryAt(next.min(deadline)) };
                    self.keys.store().finish_roblox_push(e.id, outcome, Some(&text), sent, now).await?;
                }
                let gave_up = batch.iter().any(|e| {
                    matches!(err, OutsideError::Refused { status: 400 | 404, .. }) || now >= e.created_at + self.give_up
                });
                if gave_up {
                    self.keys
                        .record_system_event(first.guild_id, Action::RobloxPushFailed, details(Some(text)))
                        .await?;
                } else {
                    tracing::info!(guild_id = first.guild_id, universe_id, error = %text, "a Roblox push will be retried");
                }
            }
        }
        Ok(())
    }
}

/// The worker until `stop` resolves: what `guildkey run` spawns beside the
/// webhook dispatcher.
pub async fn run(worker: PushWorker, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if let Err(e) = worker.tick().await {
            tracing::warn!(error = format!("{e:#}"), "failed to read due Roblox pushes");
        }
        if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
            last_prune = Some(tokio::time::Instant::now());
            let before = worker.keys.now() - ChronoDuration::days(KEEP_FINISHED_DAYS);
            if let Err(e) = worker.keys.store().prune_roblox_pushes(before).await {
                tracing::warn!(error = format!("{e:#}"), "failed to prune old Roblox pushes");
            }
        }
        let wait = worker.next_wait().await;
        tokio::select! {
            () = &mut stop => break,
            () = queued().notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
