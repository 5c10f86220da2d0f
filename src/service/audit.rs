//! The audit log from the service's side: the audit channel and the leak
//! guard's settings (both audited), reading the log, and the events API
//! writes and guildkey itself record.

use super::{Authenticated, KeyService, Result};
use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};
use crate::keys::KeyRecord;
use crate::store::{AuditChannelBefore, PostsOff};

impl KeyService {
    /// Sets or (with `None`) turns off the guild's audit channel.
    ///
    /// Turning posts off must not hide what follows, so the event records
    /// the channel it turns off (`previous_channel_id`: the outbox posts the
    /// event there), and setting a channel while posts are off records a
    /// summary of what happened meanwhile (`while_off`: how many events,
    /// since when and by whom posts were off, and the latest
    /// [`SUMMARY_LINES`]), which the new channel gets with this event.
    #[tracing::instrument(skip_all, fields(guild_id))]
    pub async fn set_audit_channel(&self, guild_id: u64, channel_id: Option<u64>, actor: &Actor) -> Result<()> {
        let event = NewAuditEvent {
            guild_id,
            action: Action::AuditChannelSet,
            actor: actor.clone(),
            key: None,
            test: false,
            details: serde_json::json!({}),
        };
        let details = |before: &AuditChannelBefore| {
            let mut details = serde_json::json!({ "channel_id": channel_id.map(|c| c.to_string()) });
            if let Some(previous) = before.channel_id {
                details["previous_channel_id"] = previous.to_string().into();
            }
            if let (Some(_), Some(off)) = (channel_id, &before.off) {
                details["while_off"] = while_off(off);
            }
            details
        };
        self.inner.store.set_audit_channel(guild_id, channel_id, self.now(), &event, SUMMARY_LINES, details).await?;
        self.inner.audit_posted.notify_one();
        Ok(())
    }

    /// Records the leak guard's AutoMod rule (`None`: off), audited.
    pub async fn record_leak_guard(&self, guild_id: u64, rule_id: Option<u64>, actor: &Actor) -> Result<()> {
        let event = NewAuditEvent {
            guild_id,
            action: Action::LeakGuardSet,
            actor: actor.clone(),
            key: None,
            test: false,
            details: serde_json::json!({ "enabled": rule_id.is_some(), "rule_id": rule_id.map(|r| r.to_string()) }),
        };
        self.inner.store.set_leak_guard_rule(guild_id, rule_id, self.now(), &event).await?;
        self.inner.audit_posted.notify_one();
        Ok(())
    }

    /// The guild's leak-guard AutoMod rule, while the guard is on.
    pub async fn leak_guard_rule(&self, guild_id: u64) -> Result<Option<u64>> {
        Ok(self.inner.store.leak_guard_rule(guild_id).await?)
    }

    pub async fn audit_channel(&self, guild_id: u64) -> Result<Option<u64>> {
        Ok(self.inner.store.audit_channel(guild_id).await?)
    }

    /// A guild's audit events, newest first; `limit` is clamped to 1–100.
    pub async fn audit_log(&self, guild_id: u64, limit: u32, before: Option<i64>) -> Result<Vec<AuditEvent>> {
        Ok(self.inner.store.audit_events(guild_id, limit.clamp(1, 100), before).await?)
    }

    /// One page of a guild's audit events, newest first (`limit` clamped to
    /// 1–100), and the `before` for the next, older page (`None` on the last).
    pub async fn audit_page(
        &self,
        guild_id: u64,
        limit: u32,
        before: Option<i64>,
    ) -> Result<(Vec<AuditEvent>, Option<i64>)> {
        let limit = limit.clamp(1, 100);
        // One more than asked tells whether an older page exists (so this
        // must not go through `audit_log`, whose clamp would eat it at 100).
        let mut events = self.inner.store.audit_events(guild_id, limit + 1, before).await?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_before = if more { events.last().map(|e| e.id) } else { None };
        Ok((events, next_before))
    }

    /// The latest events about or by one key (for `/apikey info`).
    pub async fn recent_key_events(&self, key: &KeyRecord, limit: u32) -> Result<Vec<AuditEvent>> {
        Ok(self.inner.store.audit_events_for_key(key.id.as_str(), limit).await?)
    }

    /// Records a write made through the API (after Discord accepted it, or
    /// as a test key's dry run).
    pub async fn record_api_write(
        &self,
        caller: &Authenticated,
        action: Action,
        details: serde_json::Value,
    ) -> Result<AuditEvent> {
        let event = api_write_event(caller, action, details);
        let now = self.now();
        let id = self.inner.store.insert_audit(&event, now).await?;
        self.inner.audit_posted.notify_one();
        Ok(AuditEvent {
            id,
            guild_id: event.guild_id,
            at: now,
            action,
            actor: event.actor.label(),
            actor_kind: event.actor.kind().to_owned(),
            key_id: Some(caller.key.id.to_string()),
            key_name: Some(caller.key.name.to_string()),
            key_prefix: Some(caller.key.prefix.to_string()),
            test: event.test,
            details: event.details,
        })
    }

    /// Records an API write to Discord before Discord is asked (record
    /// first, then act): a pending event, not listed nor posted until
    /// [`Self::settle_write`]. An error here (the database out of reach)
    /// means Discord must not be asked. Returns the event's id.
    pub async fn record_pending_write(
        &self,
        caller: &Authenticated,
        action: Action,
        details: serde_json::Value,
    ) -> Result<i64> {
        let event = api_write_event(caller, action, details);
        let now = self.now();
        let until = now + chrono::Duration::from_std(PENDING_FOR).unwrap_or_default();
        Ok(self.inner.store.insert_pending_write(&event, now, until).await?)
    }

    /// Settles a pending API write with what Discord did: `done` puts it in
    /// the audit log (and wakes the outbox to post it); not done keeps it
    /// out. False if it was settled already.
    pub async fn settle_write(&self, id: i64, done: bool) -> Result<bool> {
        let settled = self.inner.store.settle_write(id, done, self.now()).await?;
        if settled && done {
            self.inner.audit_posted.notify_one();
        }
        Ok(settled)
    }

    /// Pending API writes whose writer's time to settle them ran out by
    /// `due_by` (see [`PENDING_FOR`]), oldest first.
    pub async fn pending_writes(&self, due_by: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<AuditEvent>> {
        Ok(self.inner.store.pending_writes(due_by, limit).await?)
    }

    /// Records an event guildkey itself caused (actor `guildkey`), such as
    /// pausing Discord calls for a guild.
    pub async fn record_system_event(&self, guild_id: u64, action: Action, details: serde_json::Value) -> Result<i64> {
        let event = NewAuditEvent { guild_id, action, actor: Actor::System, key: None, test: false, details };
        let id = self.inner.store.insert_audit(&event, self.now()).await?;
        self.inner.audit_posted.notify_one();
        Ok(id)
    }

    /// Records a settings change by `actor` that concerns no key (a
    /// guild's Roblox linker set or removed).
    pub(crate) async fn record_system_event_by(
        &self,
        guild_id: u64,
        action: Action,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Result<i64> {
        let event = NewAuditEvent { guild_id, action, actor: actor.clone(), key: None, test: false, details };
        let id = self.inner.store.insert_audit(&event, self.now()).await?;
        self.inner.audit_posted.notify_one();
        Ok(id)
    }

    pub(super) fn key_event(
        &self,
        key: &KeyRecord,
        action: Action,
        actor: &Actor,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            guild_id: key.guild_id,
            action,
            actor: actor.clone(),
            key: Some(key.key_ref()),
            test: false,
            details,
        }
    }
}

/// The event of a write made through the API with `caller`'s key.
fn api_write_event(caller: &Authenticated, action: Action, details: serde_json::Value) -> NewAuditEvent {
    NewAuditEvent {
        guild_id: caller.key.guild_id,
        action,
        actor: caller.actor(),
        key: Some(caller.key.key_ref()),
        test: caller.is_test(),
        details,
    }
}

/// How long the process making an API write has to settle its pending
/// event itself (the Discord call, then the outcome, retried while the
/// database is out of reach); after it, the reconcile reads Discord and
/// settles the event. Far longer than a Discord write takes, rate-limit
/// waits included, so a write in flight is never settled under its writer.
pub const PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// How many of the changes made while audit posts were off the summary
/// lists, newest first (the rest are in the audit log).
pub const SUMMARY_LINES: u32 = 10;

/// The `while_off` summary of an `audit_channel.set` event's details.
fn while_off(off: &PostsOff) -> serde_json::Value {
    let recent: Vec<_> = off
        .recent
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "at": e.at,
                "action": e.action,
                "actor": e.actor,
                "key_name": e.key_name,
                "key_prefix": e.key_prefix,
                "test": e.test,
            })
        })
        .collect();
    serde_json::json!({
        "count": off.count,
        "since": off.turned_off.at,
        "turned_off_by": off.turned_off.actor,
        "recent": recent,
    })
}
