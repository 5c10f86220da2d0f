//! Audit events: what changed, to what, and who did it.
//!
//! Every state change — a key created, revoked, deleted or rotated, the audit
//! channel or the webhook set, a ban or role change made through the API — is one
//! [`NewAuditEvent`], written by the store in the same transaction as the
//! change. The bot later posts unposted events to the guild's audit channel.
//! No field ever holds a secret: keys appear by id, name and display prefix.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Defined beside the key it names (`keys` sits below `audit`).
pub use crate::keys::KeyRef;

/// What happened. The wire names are part of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "key.deleted")]
    KeyDeleted,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "audit_channel.set")]
    AuditChannelSet,
    #[serde(rename = "ban.added")]
    BanAdded,
    #[serde(rename = "ban.removed")]
    BanRemoved,
    #[serde(rename = "role.added")]
    RoleAdded,
    #[serde(rename = "role.removed")]
    RoleRemoved,
    #[serde(rename = "key.suspended")]
    KeySuspended,
    #[serde(rename = "key.resumed")]
    KeyResumed,
    /// guildkey stopped calling Discord for the guild for a while.
    #[serde(rename = "discord.paused")]
    DiscordPaused,
    /// The leak guard (an AutoMod rule blocking pasted keys) on or off.
    #[serde(rename = "leak_guard.set")]
    LeakGuardSet,
    /// The guild's webhook set (or changed, or re-enabled).
    #[serde(rename = "webhook.set")]
    WebhookSet,
    #[serde(rename = "webhook.removed")]
    WebhookRemoved,
    /// guildkey turned the webhook off: its deliveries kept failing.
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// A key expires soon (within 7 days, then within 1 day): guildkey
    /// reminds the audit channel once per threshold.
    #[serde(rename = "key.expiring")]
    KeyExpiring,
    /// A key's refusals (401, 403, 429) spiked (`service::spike`).
    #[serde(rename = "usage.spike")]
    UsageSpike,
    /// The bot lost (or regained) a permission Discord requires before it
    /// sends a feature's events (`service::features`): actor guildkey.
    #[serde(rename = "feature.changed")]
    FeatureChanged,
    /// A rotation "until unused" ended: guildkey retired the old secret
    /// once it had gone unpresented long enough (or its 30 days were up).
    #[serde(rename = "key.rotation_completed")]
    KeyRotationCompleted,
    /// The guild's Roblox account linker set (its provider; never the key).
    #[serde(rename = "roblox.linker_set")]
    RobloxLinkerSet,
    #[serde(rename = "roblox.linker_removed")]
    RobloxLinkerRemoved,
    /// A ban or unban pushed into a Roblox universe (a MessagingService
    /// message, or a user restriction): actor guildkey.
    #[serde(rename = "roblox.push")]
    RobloxPush,
    /// guildkey gave up pushing a ban or unban into a Roblox universe.
    #[serde(rename = "roblox.push_failed")]
    RobloxPushFailed,
}

impl Action {
    pub const ALL: [Action; 24] = [
        Action::KeyCreated,
        Action::KeyRevoked,
        Action::KeyDeleted,
        Action::KeyRotated,
        Action::AuditChannelSet,
        Action::BanAdded,
        Action::BanRemoved,
        Action::RoleAdded,
        Action::RoleRemoved,
        Action::KeySuspended,
        Action::KeyResumed,
        Action::DiscordPaused,
        Action::LeakGuardSet,
        Action::WebhookSet,
        Action::WebhookRemoved,
        Action::WebhookDisabled,
        Action::KeyExpiring,
        Action::UsageSpike,
        Action::FeatureChanged,
        Action::KeyRotationCompleted,
        Action::RobloxLinkerSet,
        Action::RobloxLinkerRemoved,
        Action::RobloxPush,
        Action::RobloxPushFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::KeyDeleted => "key.deleted",
            Self::KeyRotated => "key.rotated",
            Self::AuditChannelSet => "audit_channel.set",
            Self::BanAdded => "ban.added",
            Self::BanRemoved => "ban.removed",
            Self::RoleAdded => "role.added",
            Self::RoleRemoved => "role.removed",
            Self::KeySuspended => "key.suspended",
            Self::KeyResumed => "key.resumed",
            Self::DiscordPaused => "discord.paused",
            Self::LeakGuardSet => "leak_guard.set",
            Self::WebhookSet => "webhook.set",
            Self::WebhookRemoved => "webhook.removed",
            Self::WebhookDisabled => "webhook.disabled",
            Self::KeyExpiring => "key.expiring",
            Self::UsageSpike => "usage.spike",
            Self::FeatureChanged => "feature.changed",
            Self::KeyRotationCompleted => "key.rotation_completed",
            Self::RobloxLinkerSet => "roblox.linker_set",
            Self::RobloxLinkerRemoved => "roblox.linker_removed",
            Self::RobloxPush => "roblox.push",
            Self::RobloxPushFailed => "roblox.push_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// A short sentence for the audit-channel embed's title.
    pub fn title(self) -> &'static str {
        match self {
            Self::KeyCreated => "API key created",
            Self::KeyRevoked => "API key revoked",
            Self::KeyDeleted => "API key deleted",
            Self::KeyRotated => "API key rotated",
            Self::AuditChannelSet => "Audit channel changed",
            Self::BanAdded => "Member banned",
            Self::BanRemoved => "Member unbanned",
            Self::RoleAdded => "Role added",
            Self::RoleRemoved => "Role removed",
            Self::KeySuspended => "API key suspended",
            Self::KeyResumed => "API key resumed",
            Self::DiscordPaused => "Discord calls paused for this server",
            Self::LeakGuardSet => "Leak guard changed",
            Self::WebhookSet => "Webhook set",
            Self::WebhookRemoved => "Webhook removed",
            Self::WebhookDisabled => "Webhook disabled: its deliveries kept failing",
            // The embed says within how long (see `discord::audit_embed`).
            Self::KeyExpiring => "API key expires soon",
            Self::UsageSpike => "API key refusals spiked",
            // The embed names the feature and its state (see `discord::audit_embed`).
            Self::FeatureChanged => "A feature switched by the bot's permissions",
            Self::KeyRotationCompleted => "API key rotation completed: the old secret stopped",
            Self::RobloxLinkerSet => "Roblox account linker set",
            Self::RobloxLinkerRemoved => "Roblox account linker removed",
            Self::RobloxPush => "Ban pushed into a Roblox game",
            Self::RobloxPushFailed => "Gave up pushing a ban into a Roblox game",
        }
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A server admin, through a slash command.
    User(u64),
    /// An external program, through the HTTP API.
    ApiKey(KeyRef),
    /// An operator, through `guildkey keys ...`.
    Cli,
    /// guildkey itself: guarding the guild (pausing Discord calls, the
    /// circuit breaker, a leaked key revoked) or reminding it of an expiry.
    System,
}

impl Actor {
    /// How the actor is shown: a mention, "An API key" or "The operator CLI".
    pub fn label(&self) -> String {
        match self {
            Self::User(id) => format!("<@{id}>"),
            Self::ApiKey(_) => "An API key".to_owned(),
            Self::Cli => "The operator CLI".to_owned(),
            Self::System => "guildkey".to_owned(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::ApiKey(_) => "api_key",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }

    /// The `created_by` value stored on a key this actor creates.
    pub fn created_by(&self) -> String {
        match self {
            Self::User(id) => id.to_string(),
            Self::ApiKey(k) => k.id.to_string(),
            Self::Cli => "cli".to_owned(),
            Self::System => "guildkey".to_owned(),
        }
    }
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub guild_id: u64,
    pub action: Action,
    pub actor: Actor,
    /// The key acted on (key.*) or the key acting (API writes).
    pub key: Option<KeyRef>,
    /// A test key's dry run: nothing was changed on Discord.
    pub test: bool,
    pub details: serde_json::Value,
}

/// A stored event, as the API and the audit channel show it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(skip)]
    pub guild_id: u64,
    pub at: DateTime<Utc>,
    pub action: Action,
    /// `<@user_id>`, `An API key` or `The operator CLI`.
    pub actor: String,
    #[serde(skip)]
    pub actor_kind: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub key_prefix: Option<String>,
    pub test: bool,
    pub details: serde_json::Value,
}
