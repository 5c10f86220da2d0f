//! What guildkey asks of Discord on behalf of the API and the audit log,
//! behind one trait ([`GuildOps`]) so the service never sees serenity, and
//! its two implementations: on serenity's `Http` and gateway cache
//! ([`SerenityGuildOps`], a process running the bot), and on `Http` alone
//! with guild facts read over REST and cached briefly ([`rest::RestGuildOps`],
//! a listener started with `--only http`, which has no gateway connection).
//!
//! [`SerenityGuildOps`] sends its requests itself, so a 429 reaches it:
//! it waits and retries a few times within a bounded time, or answers at
//! once that nothing was done. With serenity's ratelimiter on (Discord
//! itself, or anything reached as discord.com: [`client`]) each request
//! also goes through serenity's bucket for its route. Through a proxy
//! (`discord.api_base_url`) the ratelimiter is off: the proxy owns limits.
//!
//! One file per concern:
//! - `port`: the [`GuildOps`] trait, [`GuildInfo`], [`DiscordError`] and
//!   Discord's error [`codes`];
//! - [`permissions`]: permission bits and the guild hierarchy
//!   ([`Standing`], [`RoleFacts`]), pure rules;
//! - `shield`: [`InvalidAnswers`], the count of Discord's 401/403/429
//!   answers that the service's guard reads;
//! - `serenity_ops`: [`SerenityGuildOps`], retries and 429 handling;
//! - [`rest`]: [`rest::RestGuildOps`] for a listener without a gateway;
//! - `embeds`: the audit channel's embed and buttons;
//! - `escape`: user-typed text shown as typed ([`escape`], [`escape_within`]),
//!   or in a code span ([`code_span`]).

pub mod client;
mod embeds;
mod escape;
pub mod permissions;
mod port;
pub mod rest;
mod serenity_ops;
mod shield;

pub use embeds::{audit_embed, discord_chars, plain_audit_event, within_discord_limits, AUDIT_BUTTON_PREFIX, BLANK};
pub use escape::{code_span, escape, escape_within};
pub use permissions::{Overwrite, RoleFacts, Standing};
pub use port::{codes, BansPage, DiscordError, GuildInfo, GuildOps};
pub use serenity_ops::{SerenityGuildOps, DISCORD_TIMEOUT, MAX_RETRY_WAIT};
pub use shield::{epoch_minute, Elsewhere, InvalidAnswers, Spent, INVALID_WINDOW, NO_GUILD};
