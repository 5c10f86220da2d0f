//! The port: what the service asks of Discord ([`GuildOps`]), the facts
//! it gets back ([`GuildInfo`]) and why Discord may not have done it
//! ([`DiscordError`], [`codes`]). No serenity types cross it.

use async_trait::async_trait;

use super::{InvalidAnswers, Standing};
use crate::audit::AuditEvent;

/// A guild as the API shows it (from the gateway cache, or Discord's REST
/// API on an `--only http` listener).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GuildInfo {
    #[schema(example = "1000000000000000001")]
    pub id: String,
    pub name: String,
    pub member_count: u64,
    /// Icon hash, if the guild has an icon.
    pub icon: Option<String>,
}

/// One page of a guild's ban list (`GET /guilds/{id}/bans`), and what the
/// answer's rate-limit headers said of the route's bucket, so a sync paces
/// its next page by them.
#[derive(Debug, Clone, Default)]
pub struct BansPage {
    /// Banned user ids with Discord's reason, ascending by id.
    pub bans: Vec<(u64, Option<String>)>,
    /// `X-RateLimit-Remaining`, when Discord sent it.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset-After`, when Discord sent it.
    pub reset_after: Option<std::time::Duration>,
}

/// Why Discord did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscordError {
    /// Discord answered with an error (Missing Permissions, Unknown Role…).
    #[error("{message} (Discord error {code}, HTTP {status})")]
    Refused { status: u16, code: i64, message: String },
    /// Discord could not be reached or kept failing.
    #[error("Discord is unavailable: {0}")]
    Unavailable(String),
}

impl DiscordError {
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Unavailable(_) => None,
        }
    }
}

/// Discord's error codes guildkey reacts to.
pub mod codes {
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    pub const UNKNOWN_MEMBER: i64 = 10007;
    pub const UNKNOWN_ROLE: i64 = 10011;
    pub const UNKNOWN_BAN: i64 = 10026;
    pub const MISSING_ACCESS: i64 = 50001;
    pub const MISSING_PERMISSIONS: i64 = 50013;
}

/// Discord as the service uses it. The guild facts (`guild_info`,
/// `standing`, `role_exists`) come from the gateway cache in a process that
/// runs the bot, and from Discord's REST API, cached for
/// [`super::rest::GUILD_VIEW_TTL`], in an `--only http` listener; the guard's rules
/// are applied to either the same way.
#[async_trait]
pub trait GuildOps: Send + Sync {
    /// The guild's name, icon and member count; `Ok(None)` if the bot is
    /// not in it; `Err` if Discord could not be asked (REST only).
    async fn guild_info(&self, guild_id: u64) -> Result<Option<GuildInfo>, DiscordError>;
    /// One page of the guild's bans: users after `after` (0: from the
    /// first), ascending, at most `limit` (Discord's most: 1,000).
    async fn bans_page(&self, _guild_id: u64, _after: u64, _limit: u32) -> Result<BansPage, DiscordError> {
        Err(DiscordError::Unavailable("ban lists are not available".into()))
    }
    /// `Some(reason)` if the user is banned, `None` if not.
    async fn ban_status(&self, guild_id: u64, user_id: u64) -> Result<Option<Option<String>>, DiscordError>;
    async fn ban(
        &self,
        guild_id: u64,
        user_id: u64,
        delete_message_seconds: u32,
        audit_reason: &str,
    ) -> Result<(), DiscordError>;
    async fn unban(&self, guild_id: u64, user_id: u64, audit_reason: &str) -> Result<(), DiscordError>;
    /// Whether the guild has this role; `None` if this cannot tell (guild
    /// not cached, no cache, or Discord could not be asked).
    async fn role_exists(&self, _guild_id: u64, _role_id: u64) -> Option<bool> {
        None
    }
    /// The member's role ids; `None` if the user is not a member.
    async fn member_roles(&self, guild_id: u64, user_id: u64) -> Result<Option<Vec<u64>>, DiscordError>;
    /// Gives the member the role (`add`) or takes it away.
    async fn set_role(
        &self,
        guild_id: u64,
        user_id: u64,
        role_id: u64,
        add: bool,
        audit_reason: &str,
    ) -> Result<(), DiscordError>;
    /// Posts an audit event as an embed to a channel.
    async fn post_audit(&self, channel_id: u64, event: &AuditEvent) -> Result<(), DiscordError>;
    /// Creates the leak guard's AutoMod rule: messages matching `pattern`
    /// are blocked and, with `alert_channel`, reported there. Returns the
    /// rule's id.
    async fn create_leak_rule(
        &self,
        _guild_id: u64,
        _pattern: &str,
        _alert_channel: Option<u64>,
    ) -> Result<u64, DiscordError> {
        Err(DiscordError::Unavailable("AutoMod is not available".into()))
    }
    /// Deletes an AutoMod rule (gone already counts as done).
    async fn delete_automod_rule(&self, _guild_id: u64, _rule_id: u64) -> Result<(), DiscordError> {
        Err(DiscordError::Unavailable("AutoMod is not available".into()))
    }
    /// The guild's hierarchy. `Ok(None)`: not known yet, worth asking again
    /// in a moment (the gateway cache has not received the guild: the bot is
    /// starting or reconnecting, or is not in it). `Err`: Discord said the
    /// bot is not in the guild, or could not be asked (REST only).
    async fn standing(&self, _guild_id: u64) -> Result<Option<Standing>, DiscordError> {
        Ok(None)
    }
    /// The invalid answers Discord has given these operations.
    fn invalid_answers(&self) -> Option<&InvalidAnswers> {
        None
    }
}
