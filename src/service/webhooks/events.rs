//! What a webhook is sent: the event types (their wire names are part of
//! the contract), the set a webhook wants, and a message's body.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::audit::{Action, AuditEvent};
use crate::keys::InvalidInput;

/// What a webhook can be sent. The wire names are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    KeyCreated,
    KeyRevoked,
    KeyRotated,
    KeyDeleted,
    KeySuspended,
    KeyResumed,
    KeyExpiring,
    KeyRotationCompleted,
    BanAdded,
    BanRemoved,
    RoleAdded,
    RoleRemoved,
    GatewayBanAdded,
    GatewayBanRemoved,
}

impl EventType {
    pub const ALL: [EventType; 14] = [
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::KeyRotated,
        Self::KeyDeleted,
        Self::KeySuspended,
        Self::KeyResumed,
        Self::KeyExpiring,
        Self::KeyRotationCompleted,
        Self::BanAdded,
        Self::BanRemoved,
        Self::RoleAdded,
        Self::RoleRemoved,
        Self::GatewayBanAdded,
        Self::GatewayBanRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::KeyRotated => "key.rotated",
            Self::KeyDeleted => "key.deleted",
            Self::KeySuspended => "key.suspended",
            Self::KeyResumed => "key.resumed",
            Self::KeyExpiring => "key.expiring",
            Self::KeyRotationCompleted => "key.rotation_completed",
            Self::BanAdded => "ban.added",
            Self::BanRemoved => "ban.removed",
            Self::RoleAdded => "role.added",
            Self::RoleRemoved => "role.removed",
            Self::GatewayBanAdded => "gateway.ban.added",
            Self::GatewayBanRemoved => "gateway.ban.removed",
        }
    }

    /// The event type an audit action is sent as, if it is sent at all
    /// (settings changes such as the audit channel or the webhook itself
    /// are not).
    pub fn of_action(action: Action) -> Option<Self> {
        Some(match action {
            Action::KeyCreated => Self::KeyCreated,
            Action::KeyRevoked => Self::KeyRevoked,
            Action::KeyRotated => Self::KeyRotated,
            Action::KeyDeleted => Self::KeyDeleted,
            Action::KeySuspended => Self::KeySuspended,
            Action::KeyResumed => Self::KeyResumed,
            Action::KeyExpiring => Self::KeyExpiring,
            Action::KeyRotationCompleted => Self::KeyRotationCompleted,
            Action::BanAdded => Self::BanAdded,
            Action::BanRemoved => Self::BanRemoved,
            Action::RoleAdded => Self::RoleAdded,
            Action::RoleRemoved => Self::RoleRemoved,
            Action::AuditChannelSet
            | Action::DiscordPaused
            | Action::LeakGuardSet
            | Action::WebhookSet
            | Action::WebhookRemoved
            | Action::WebhookDisabled
            | Action::UsageSpike
            | Action::FeatureChanged
            | Action::RobloxLinkerSet
            | Action::RobloxLinkerRemoved
            | Action::RobloxPush
            | Action::RobloxPushFailed => return None,
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event types a webhook wants: `all` (types added later included) or
/// a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSet {
    All,
    Some(Vec<EventType>),
}

impl EventSet {
    /// A comma- or space-separated list of event types, or `all`. The
    /// error names the first value that is not one.
    pub fn parse(input: &str) -> std::result::Result<Self, InvalidInput> {
        let words: Vec<&str> = input.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            return Err(InvalidInput::new("events", format!("give event types ({}) or all", names())));
        }
        let mut types = Vec::new();
        for word in words {
            if word.eq_ignore_ascii_case("all") {
                return Ok(Self::All);
            }
            let Some(t) = EventType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(word)) else {
                let shown: String = word.chars().filter(|c| !c.is_control()).take(40).collect();
                return Err(InvalidInput::new(
                    "events",
                    format!("'{shown}' is not an event type; use all, or some of: {}", names()),
                ));
            };
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(Self::Some(types))
    }

    /// Reads what [`Self::to_storage`] wrote.
    pub fn from_storage(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Some(Vec::new()))
    }

    pub fn to_storage(&self) -> String {
        self.to_string()
    }

    pub fn contains(&self, t: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Some(types) => types.contains(&t),
        }
    }

    /// The names, for JSON.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["all"],
            Self::Some(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

impl std::fmt::Display for EventSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

fn names() -> String {
    EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// A message body: `{"type", "timestamp", "data"}`.
pub(super) fn body(kind: EventType, at: DateTime<Utc>, data: serde_json::Value) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// A guild's backlog summary (`events.skipped`, see `store::webhooks`):
/// the events past `webhooks.max_pending_per_guild` that were not queued
/// one by one, and where to find them. Its timestamp is when the first of
/// them came (the summary's own queue time), so every attempt sends the
/// same body.
pub(super) fn skipped_body(guild_id: u64, first_at: DateTime<Utc>, s: &crate::store::Skipped) -> String {
    json!({
        "type": crate::store::SKIPPED_EVENT_TYPE,
        "timestamp": first_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": {
            "guild_id": guild_id.to_string(),
            "count": s.count,
            "message": format!("{} more events, see the audit log", s.count),
            "first_audit_event_id": s.first_event,
            "last_audit_event_id": s.last_event,
            "from": first_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "until": s.last_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        },
    })
    .to_string()
}

/// An audit event's `data`: the event as `GET /v1/guilds/{id}/audit-log`
/// shows it, with its guild.
pub(super) fn audit_data(event: &AuditEvent) -> serde_json::Value {
    let mut data = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    data["guild_id"] = event.guild_id.to_string().into();
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_a_list_or_all_and_a_bad_one_is_named() {
        assert_eq!(EventSet::parse("all").unwrap(), EventSet::All);
        let set = EventSet::parse("key.created, ban.added gateway.ban.added,key.created").unwrap();
        assert_eq!(set.to_string(), "key.created ban.added gateway.ban.added");
        assert!(set.contains(EventType::BanAdded) && !set.contains(EventType::KeyRevoked));
        assert_eq!(EventSet::from_storage(&set.to_storage()), set);
        let e = EventSet::parse("key.created, key.exploded").unwrap_err();
        assert!(e.message.starts_with("'key.exploded' is not an event type"), "{}", e.message);
        assert!(EventSet::parse(" , ").is_err());
    }

    #[test]
    fn a_completed_rotation_is_sent_as_its_own_type() {
        assert_eq!(EventType::of_action(Action::KeyRotationCompleted), Some(EventType::KeyRotationCompleted));
        assert_eq!(EventType::KeyRotationCompleted.as_str(), "key.rotation_completed");
        assert!(EventSet::parse("key.rotation_completed").unwrap().contains(EventType::KeyRotationCompleted));
    }
}
