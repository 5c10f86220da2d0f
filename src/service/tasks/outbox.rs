//! The audit-channel outbox: posts stored audit events to each guild's audit
//! channel. Events come from this process and from others (the operator
//! CLI), since all are rows in `audit_event` with `posted_at` null.
//!
//! An event turning posts off goes to the channel it turns them off in; the
//! event setting a channel again carries a summary of what happened while
//! they were off (see `KeyService::set_audit_channel`).
//!
//! Each event is claimed before it is posted, and marked posted after, so
//! however many instances run, one posts it; an instance that dies between
//! claim and post leaves the event to another once its claim runs out
//! ([`CLAIM_FOR`]). A post Discord refuses as written (400) is posted once
//! more without its details; a post that still fails (or failed otherwise:
//! channel deleted, missing permission, Discord down) is recorded as not
//! posted, with Discord's answer (`audit_event.post_failure`), logged, and
//! never undoes the change it describes.
//!
//! Posts go through the guard ([`GuildActions::post_audit`]), as every other
//! Discord call does: a channel that refused a post is not posted to again
//! for a while, and nothing is posted while the guild's Discord calls are
//! paused (but the pause's own announcement), so a flood of audit events
//! into a channel the bot may not write in earns Discord's refusals a
//! bounded number of times.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::super::actions::GuildActions;
use crate::audit::{Action, AuditEvent};

/// How long a claim on an event keeps other instances from posting it:
/// longer than a post takes, short enough that an instance killed mid-post
/// delays its events by no more than this.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);

/// Posts pending events until `stop` resolves.
pub async fn run(actions: Arc<GuildActions>, stop: impl std::future::Future<Output = ()>) {
    let keys = actions.keys().clone();
    let elsewhere = keys.store().audit_events_signal().unwrap_or_default();
    tokio::pin!(stop);
    loop {
        if let Err(e) = post_pending(&actions).await {
            tracing::warn!(error = format!("{e:#}"), "failed to read pending audit events");
        }
        tokio::select! {
            () = &mut stop => break,
            () = keys.audit_notifier().notified() => {}
            () = elsewhere.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The channel an event turning audit posts off turned them off in: it is
/// posted there, so turning posts off is never silent.
fn turned_off_from(event: &AuditEvent) -> Option<u64> {
    let d = &event.details;
    if event.action != Action::AuditChannelSet || !d["channel_id"].is_null() {
        return None;
    }
    d["previous_channel_id"].as_str()?.parse().ok()
}

/// Discord's 400 (Bad Request): it refused the message as written (an
/// embed text it would not take), so the same post would be refused again.
/// The service error carries [`crate::discord::DiscordError`]'s text, which
/// ends with the HTTP status.
fn refused_as_written(e: &crate::service::Error) -> bool {
    matches!(e, crate::service::Error::Discord(m) if m.ends_with("HTTP 400)"))
}

/// Posts every pending event once; returns how many were posted.
pub async fn post_pending(actions: &GuildActions) -> anyhow::Result<usize> {
    let store = actions.keys().store();
    let mut posted = 0;
    loop {
        let events = store.unposted_audit_events(50, Utc::now()).await?;
        if events.is_empty() {
            return Ok(posted);
        }
        for event in events {
            let now = Utc::now();
            if !store.claim_audit_post(event.id, now, now + CLAIM_FOR).await? {
                continue; // another instance took it
            }
            let Some(channel) = store.audit_channel(event.guild_id).await?.or_else(|| turned_off_from(&event)) else {
                store.mark_audit_posted(event.id, Utc::now()).await?;
                continue;
            };
            let outcome = match actions.post_audit(channel, &event).await {
                Err(e) if refused_as_written(&e) => {
                    tracing::warn!(
                        event_id = event.id,
                        guild_id = event.guild_id,
                        error = %e,
                        "Discord refused an audit entry as written; posting it once more without its details"
                    );
                    actions.post_audit(channel, &crate::discord::plain_audit_event(&event)).await
                }
                other => other,
            };
            match outcome {
                Ok(()) => {
                    store.mark_audit_posted(event.id, Utc::now()).await?;
                    posted += 1;
                }
                Err(e) => {
                    // Recorded as not posted, with why: never taken for a posted entry.
                    store.mark_audit_not_posted(event.id, Utc::now(), &e.to_string()).await?;
                    tracing::warn!(
                        event_id = event.id,
                        guild_id = event.guild_id,
                        channel_id = channel,
                        error = %e,
                        "failed to post an audit entry to the audit channel; recorded as not posted; the change itself stands"
                    );
                }
            }
        }
    }
}
