//! The audit-channel outbox: posts stored audit events to each guild's audit
//! channel. Events come from this process and from others (the operator
//! CLI), since all are rows in `audit_event` with `posted_at` null.
//!
//! An event turning posts off goes to the channel it turns them off in; the
//! event setting a channel again carries a summary of what happened while
//! they were off (see `KeyService::set_audit_channel`).
//!
//! **Every guild alone.** Each guild's events are a queue of their own,
//! posted in order by a worker of their own; up to [`GUILDS_AT_ONCE`]
//! guilds are served at once, the one waiting longest first, and a guild
//! whose queue is emptied goes to the back of the line. So a guild whose
//! channel Discord answers slowly, or whose keys make a flood of events,
//! delays only its own posts. Each queue is bounded: when a guild has more
//! than [`BACKLOG`] events waiting, the older ones are not posted one by
//! one but summed up in one entry ("N more entries, see the audit log"),
//! then the newest [`BACKLOG`] are posted (a change of the audit channel is
//! never summed up: turning posts off is never silent). Every event stays
//! in the audit log. Each channel gets at most [`CHANNEL_POSTS`] posts per
//! [`CHANNEL_WINDOW`], Discord's rate for one channel; waiting for it holds
//! up that channel's posts only.
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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::time::Instant;

use super::super::actions::GuildActions;
use super::super::Error;
use crate::audit::{Action, AuditEvent};

/// How long a claim on an event keeps other instances from posting it:
/// longer than a post takes, short enough that an instance killed mid-post
/// delays its events by no more than this.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// The events of one guild posted one by one; more waiting are summed up.
pub const BACKLOG: u32 = 20;
/// Guilds whose posts are made at once.
pub const GUILDS_AT_ONCE: usize = 16;
/// Discord's rate of posts in one channel: this many per window.
pub const CHANNEL_POSTS: usize = 5;
pub const CHANNEL_WINDOW: Duration = Duration::from_secs(5);
/// How long the outbox waits for one of the guild's Discord places, and
/// how often it tries, before it gives a post up.
const PLACE_WAIT: Duration = Duration::from_secs(2);
const PLACE_TRIES: u32 = 10;

/// Posts pending events until `stop` resolves; then lets the posts being
/// made finish (for at most a few seconds).
pub async fn run(actions: Arc<GuildActions>, stop: impl std::future::Future<Output = ()>) {
    let keys = actions.keys().clone();
    let elsewhere = keys.store().audit_events_signal().unwrap_or_default();
    let pace = Arc::new(Pace::default());
    let mut workers = tokio::task::JoinSet::new();
    let mut serving: HashMap<tokio::task::Id, u64> = HashMap::new();
    tokio::pin!(stop);
    loop {
        if let Err(e) = start_guilds(&actions, &pace, &mut workers, &mut serving).await {
            tracing::warn!(error = format!("{e:#}"), "failed to read pending audit events");
        }
        tokio::select! {
            () = &mut stop => break,
            () = keys.audit_notifier().notified() => {}
            () = elsewhere.notified() => {}
            Some(done) = workers.join_next_with_id() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                serving.remove(&id);
                match done {
                    Ok((_, Err(e))) => tracing::warn!(error = format!("{e:#}"), "failed to post a guild's audit events"),
                    Err(e) => tracing::error!(error = %e, "an audit post worker crashed"),
                    Ok(_) => {}
                }
            }
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while workers.join_next().await.is_some() {} }).await;
    workers.shutdown().await;
}

/// Starts a worker for each guild with pending events, the one waiting
/// longest first, while fewer than [`GUILDS_AT_ONCE`] run.
async fn start_guilds(
    actions: &Arc<GuildActions>,
    pace: &Arc<Pace>,
    workers: &mut tokio::task::JoinSet<anyhow::Result<usize>>,
    serving: &mut HashMap<tokio::task::Id, u64>,
) -> anyhow::Result<()> {
    if serving.len() >= GUILDS_AT_ONCE {
        return Ok(());
    }
    let store = actions.keys().store();
    let wanted = (GUILDS_AT_ONCE * 2) as u32;
    for (guild_id, _) in store.guilds_with_unposted_audit_events(Utc::now(), wanted).await? {
        if serving.len() >= GUILDS_AT_ONCE {
            break;
        }
        if serving.values().any(|g| *g == guild_id) {
            continue;
        }
        let (actions, pace) = (actions.clone(), pace.clone());
        let handle = workers.spawn(async move { post_guild(&actions, &pace, guild_id).await });
        serving.insert(handle.id(), guild_id);
    }
    Ok(())
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
fn refused_as_written(e: &Error) -> bool {
    matches!(e, Error::Discord(m) if m.ends_with("HTTP 400)"))
}

/// Posts a guild's pending events: past [`BACKLOG`], one summary of the
/// older ones, then the newest one by one; returns how many were posted.
pub async fn post_guild(actions: &GuildActions, pace: &Pace, guild_id: u64) -> anyhow::Result<usize> {
    let store = actions.keys().store();
    let mut posted = 0;
    loop {
        let newest = store.unposted_audit_events(guild_id, Utc::now(), BACKLOG + 1, true).await?;
        if newest.len() > BACKLOG as usize {
            let through = newest[BACKLOG as usize].id;
            let (count, first, last) = store.summarise_audit_posts(guild_id, through, Utc::now()).await?;
            if let (Some(first), Some(last)) = (first, last) {
                let summary = summary(&newest[BACKLOG as usize], count, first, last);
                if post(actions, pace, &summary).await? == Posted::Yes {
                    posted += 1;
                }
            }
        }
        let events = store.unposted_audit_events(guild_id, Utc::now(), BACKLOG, false).await?;
        if events.is_empty() {
            return Ok(posted);
        }
        for event in events {
            let now = Utc::now();
            if !store.claim_audit_post(event.id, now, now + CLAIM_FOR).await? {
                continue; // another instance took it
            }
            match post(actions, pace, &event).await {
                Ok(Posted::Yes) => {
                    store.mark_audit_posted(event.id, Utc::now()).await?;
                    posted += 1;
                }
                Ok(Posted::NoChannel) => store.mark_audit_posted(event.id, Utc::now()).await?,
                // Recorded as not posted, with why: never taken for a posted entry.
                Ok(Posted::Failed(why)) => store.mark_audit_not_posted(event.id, Utc::now(), &why).await?,
                Err(e) => {
                    store.mark_audit_posted(event.id, Utc::now()).await?;
                    return Err(e);
                }
            }
        }
    }
}

/// What became of one post.
#[derive(Debug, PartialEq, Eq)]
enum Posted {
    Yes,
    /// The guild has no audit channel.
    NoChannel,
    /// Discord would not take it, even without its details: why.
    Failed(String),
}

/// Posts one event (or summary) to the guild's audit channel, at the
/// channel's pace. A post Discord refuses as written (400) is posted once
/// more without its details; a failure is logged and returned.
async fn post(actions: &GuildActions, pace: &Pace, event: &AuditEvent) -> anyhow::Result<Posted> {
    let store = actions.keys().store();
    let Some(channel) = store.audit_channel(event.guild_id).await?.or_else(|| turned_off_from(event)) else {
        return Ok(Posted::NoChannel);
    };
    let outcome = match send(actions, pace, channel, event).await {
        Err(e) if refused_as_written(&e) => {
            tracing::warn!(
                event_id = event.id,
                guild_id = event.guild_id,
                error = %e,
                "Discord refused an audit entry as written; posting it once more without its details"
            );
            send(actions, pace, channel, &crate::discord::plain_audit_event(event)).await
        }
        other => other,
    };
    match outcome {
        Ok(()) => Ok(Posted::Yes),
        Err(e) => {
            tracing::warn!(
                event_id = event.id,
                guild_id = event.guild_id,
                channel_id = channel,
                error = %e,
                "failed to post an audit entry to the audit channel; recorded as not posted; the change itself stands"
            );
            Ok(Posted::Failed(e.to_string()))
        }
    }
}

/// One post at the channel's pace, waiting for one of the guild's Discord
/// places a few times when its API calls hold them all.
async fn send(actions: &GuildActions, pace: &Pace, channel: u64, event: &AuditEvent) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        tokio::time::sleep_until(pace.next_slot(channel)).await;
        match actions.post_audit_within(channel, event, PLACE_WAIT).await {
            // The guild's API calls hold every place: wait for one.
            Err(Error::DiscordBusy { .. }) if tries + 1 < PLACE_TRIES => tries += 1,
            outcome => return outcome,
        }
    }
}

/// The entry that stands for `count` events (ids `first` to `last`) not
/// posted one by one; made from the last of them, posted, never stored.
fn summary(last_event: &AuditEvent, count: u64, first: i64, last: i64) -> AuditEvent {
    AuditEvent {
        id: last,
        guild_id: last_event.guild_id,
        at: last_event.at,
        action: last_event.action,
        actor: "guildkey".to_owned(),
        actor_kind: "system".to_owned(),
        key_id: None,
        key_name: None,
        key_prefix: None,
        test: false,
        details: json!({ "summarised": count, "first_event_id": first, "last_event_id": last }),
    }
}

/// When each channel may be posted to next: at most [`CHANNEL_POSTS`] in
/// any [`CHANNEL_WINDOW`].
#[derive(Default)]
pub struct Pace {
    channels: Mutex<HashMap<u64, VecDeque<Instant>>>,
}

impl Pace {
    /// Takes the channel's next slot and says when it is.
    pub fn next_slot(&self, channel: u64) -> Instant {
        let now = Instant::now();
        let mut channels = self.channels.lock().expect("pace lock poisoned");
        if channels.len() >= 10_000 {
            channels.retain(|_, slots| slots.back().is_some_and(|t| *t + CHANNEL_WINDOW > now));
        }
        let slots = channels.entry(channel).or_default();
        while slots.front().is_some_and(|t| *t + CHANNEL_WINDOW <= now) {
            slots.pop_front();
        }
        let at = if slots.len() >= CHANNEL_POSTS { slots[slots.len() - CHANNEL_POSTS] + CHANNEL_WINDOW } else { now };
        slots.push_back(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_gets_five_posts_in_five_seconds_and_others_are_not_held_up() {
        let pace = Pace::default();
        let now = Instant::now();
        let slots: Vec<Instant> = (0..11).map(|_| pace.next_slot(1)).collect();
        assert!(slots[..5].iter().all(|t| *t <= now + Duration::from_millis(100)), "the first five at once");
        assert!(slots[5] >= slots[0] + CHANNEL_WINDOW, "the sixth a window after the first");
        assert!(slots[10] >= slots[5] + CHANNEL_WINDOW);
        assert!(pace.next_slot(2) <= now + Duration::from_millis(100), "another channel posts at once");
    }
}
