//! `roblox:<userId>` member ids, resolved through the guild's account
//! linker (Bloxlink or RoVer: `roblox::linkers`), whose key is the guild's
//! [`CredentialKind::Linker`] credential (its label names the provider).
//!
//! - Pairs the linker answered are stored (`roblox_link`): a banned user has
//!   usually left the guild, and a guild-scoped linker then no longer finds
//!   them, so a stored pair keeps answering for them.
//! - The same id within [`LINK_TTL`] makes no linker call: pairs come from
//!   the store, and "not linked" is remembered in memory as long.
//! - After a 429 no call goes to the guild's linker until its
//!   `Retry-After` has passed (`linker_limited`, with the seconds left).
//! - When the linker cannot answer (limited, failing) an id with stored
//!   pairs is answered from them, however old.
//! - One Roblox account linked to several Discord accounts: a ban check
//!   answers banned if any is; a write is refused (`ambiguous_link`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::audit::{Action, Actor};
use crate::config::RobloxConfig;
use crate::config::{BLOXLINK_BASE_URL, ROVER_BASE_URL};
use crate::keys::Scope;
use crate::roblox::linkers::Linkers;
/// The linkers a guild may set (the CLI and the bot name them through here).
pub use crate::roblox::linkers::Provider;
use crate::roblox::OutsideError;
use crate::service::actions::{BanStatus, GuildActions};
use crate::service::credentials::CredentialKind;
use crate::service::{Authenticated, Error, KeyService, Result};

/// How long a linker's answer (a pair, or "not linked") is reused.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// The largest Roblox user id accepted (2^53: what a Luau number holds exactly).
pub const MAX_ROBLOX_ID: u64 = 1 << 53;
/// How many remembered "not linked" answers are kept at most.
const UNLINKED_MAX: usize = 100_000;

/// Who a member route is about: a Discord account, or a Roblox account
/// the guild's linker turns into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberId {
    Discord(u64),
    Roblox(u64),
}

impl MemberId {
    /// A Discord snowflake (`1100000000000000001`) or `roblox:<userId>`
    /// (decimal, 1 to 2^53). The error says what was expected and never
    /// quotes more than 40 characters.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let short: String = raw.chars().take(40).collect();
        let number = |digits: &str, max: u64| {
            let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
            plain.then(|| digits.parse::<u64>().ok()).flatten().filter(|&n| n <= max)
        };
        match raw.strip_prefix("roblox:") {
            Some(digits) => number(digits, MAX_ROBLOX_ID)
                .map(Self::Roblox)
                .ok_or_else(|| format!("must be roblox:<userId> with a Roblox user id from 1 to 2^53, not '{short}'")),
            None => number(raw, i64::MAX as u64)
                .map(Self::Discord)
                .ok_or_else(|| format!("must be a Discord id (a snowflake) or roblox:<userId>, not '{short}'")),
        }
    }

    /// The Roblox id, for a `roblox:` member.
    pub fn roblox_id(self) -> Option<u64> {
        match self {
            Self::Roblox(id) => Some(id),
            Self::Discord(_) => None,
        }
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Discord(id) => write!(f, "{id}"),
            Self::Roblox(id) => write!(f, "roblox:{id}"),
        }
    }
}

/// What the resolver keeps in memory: the linkers' client, the ids the
/// linker said are not linked (when), and each guild's wait after a 429.
#[derive(Default)]
pub struct LinkState {
    linkers: OnceLock<Linkers>,
    unlinked: Mutex<HashMap<(u64, u64), DateTime<Utc>>>,
    limited_until: Mutex<HashMap<u64, DateTime<Utc>>>,
    /// One resolution of an id at a time (striped), so a burst of checks of
    /// one player makes one linker call.
    stripes: Stripes,
}

struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Default for Stripes {
    fn default() -> Self {
        Self((0..256).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl Stripes {
    async fn lock(&self, guild_id: u64, roblox_id: u64) -> tokio::sync::MutexGuard<'_, ()> {
        let i = (guild_id ^ roblox_id.rotate_left(17)) % self.0.len() as u64;
        self.0[i as usize].lock().await
    }
}

impl LinkState {
    /// Points the linkers at `[roblox]`'s base URLs; once, at start.
    pub fn configure(&self, cfg: &RobloxConfig) {
        let _ = self.linkers.set(Linkers::new(&cfg.bloxlink_base_url, &cfg.rover_base_url));
    }

    fn linkers(&self) -> &Linkers {
        self.linkers.get_or_init(|| Linkers::new(BLOXLINK_BASE_URL, ROVER_BASE_URL))
    }

    fn unlinked_since(&self, guild_id: u64, roblox_id: u64) -> Option<DateTime<Utc>> {
        self.unlinked.lock().expect("unlinked poisoned").get(&(guild_id, roblox_id)).copied()
    }

    fn note_unlinked(&self, guild_id: u64, roblox_id: u64, now: DateTime<Utc>) {
        let mut map = self.unlinked.lock().expect("unlinked poisoned");
        if map.len() >= UNLINKED_MAX {
            let ttl = ttl();
            map.retain(|_, at| now - *at < ttl);
            if map.len() >= UNLINKED_MAX {
                map.clear();
            }
        }
        map.insert((guild_id, roblox_id), now);
    }

    fn forget_unlinked(&self, guild_id: u64, roblox_id: u64) {
        self.unlinked.lock().expect("unlinked poisoned").remove(&(guild_id, roblox_id));
    }

    /// Seconds left of the guild's wait, if it is waiting.
    fn limited_for(&self, guild_id: u64, now: DateTime<Utc>) -> Option<u64> {
        let until = *self.limited_until.lock().expect("limited poisoned").get(&guild_id)?;
        let left = (until - now).num_milliseconds();
        (left > 0).then(|| (left as u64).div_ceil(1000).max(1))
    }

    fn limit(&self, guild_id: u64, until: DateTime<Utc>) {
        self.limited_until.lock().expect("limited poisoned").insert(guild_id, until);
    }
}

fn ttl() -> chrono::Duration {
    chrono::Duration::from_std(LINK_TTL).unwrap_or_default()
}

fn limited(retry_after_secs: u64) -> Error {
    Error::LinkerLimited {
        message: format!("this server's account linker asked guildkey to wait; retry after {retry_after_secs} s"),
        retry_after_secs,
    }
}

fn not_linked(roblox_id: u64) -> Error {
    Error::NotLinked(format!("no Discord account in this server is linked to Roblox user {roblox_id}"))
}

/// The guild's linker setting as an admin reads it back: the provider,
/// never the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkerSetting {
    pub provider: Provider,
}

impl KeyService {
    /// Sets the `[roblox]` base URLs the linkers are called at; once, at
    /// start (unset, the providers' public URLs).
    pub fn set_roblox(&self, cfg: &RobloxConfig) {
        self.links().configure(cfg);
    }

    /// The Discord accounts `member` stands for in `guild_id`: itself for a
    /// Discord id; for a `roblox:` id, what the guild's linker links it to
    /// (at least one; `not_linked` otherwise), under the rules in the
    /// module docs. What the ban routes and the bulk check call.
    pub async fn resolve_member(&self, guild_id: u64, member: &MemberId) -> Result<Vec<u64>> {
        let roblox_id = match *member {
            MemberId::Discord(id) => return Ok(vec![id]),
            MemberId::Roblox(id) => id,
        };
        let state = self.links();
        let _one = state.stripes.lock(guild_id, roblox_id).await;
        let now = self.now();
        let stored = self.store().roblox_links(guild_id, roblox_id).await?;
        let stored_ids: Vec<u64> = stored.iter().map(|l| l.discord_id).collect();
        let fresh = stored.iter().map(|l| l.resolved_at).max().is_some_and(|at| now - at < ttl());
        if fresh {
            return Ok(stored_ids);
        }
        // What to answer when the linker is not asked, or cannot answer.
        let fallback = |e: Error| if stored_ids.is_empty() { Err(e) } else { Ok(stored_ids.clone()) };
        if state.unlinked_since(guild_id, roblox_id).is_some_and(|at| now - at < ttl()) {
            return fallback(not_linked(roblox_id));
        }
        if let Some(left) = state.limited_for(guild_id, now) {
            return fallback(limited(left));
        }
        let (provider, key) = match self.guild_linker(guild_id).await {
            Ok(found) => found,
            Err(e) => return fallback(e),
        };
        match state.linkers().roblox_to_discord(provider, key.expose(), guild_id, roblox_id).await {
            Ok(ids) if ids.is_empty() => {
                state.note_unlinked(guild_id, roblox_id, now);
                fallback(not_linked(roblox_id))
            }
            Ok(ids) => {
                state.forget_unlinked(guild_id, roblox_id);
                self.store().put_roblox_links(guild_id, roblox_id, &ids, now).await?;
                Ok(ids)
            }
            Err(OutsideError::Limited { retry_after_secs, .. }) => {
                let until = now + chrono::Duration::seconds(i64::try_from(retry_after_secs).unwrap_or(i64::MAX / 2));
                state.limit(guild_id, until);
                tracing::warn!(
                    guild_id,
                    provider = provider.as_str(),
                    retry_after_secs,
                    "the account linker is rate limiting this guild"
                );
                fallback(limited(retry_after_secs))
            }
            Err(e) => {
                tracing::warn!(guild_id, roblox_id, error = %e, "the account linker failed");
                fallback(Error::LinkerError(format!("this server's account linker failed: {e}")))
            }
        }
    }

    /// The guild's linker and its key, opened.
    async fn guild_linker(&self, guild_id: u64) -> Result<(Provider, crate::config::Secret)> {
        let credential = match self.credentials().get(guild_id, CredentialKind::Linker).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(Error::LinkerError(
                    "this server has no account linker set for roblox: ids; an admin sets one with /roblox linker \
                     (Bloxlink or RoVer)"
                        .to_owned(),
                ))
            }
            Err(Error::Missing(why)) => {
                tracing::error!(guild_id, why, "the guild's linker key cannot be opened");
                return Err(Error::LinkerError(
                    "guildkey cannot open this server's linker key; the operator must check GUILDKEY_SECRETS_KEY"
                        .to_owned(),
                ));
            }
            Err(e) => return Err(e),
        };
        let provider = Provider::parse(&credential.label).ok_or_else(|| {
            Error::LinkerError(format!("this server's linker '{}' is not one guildkey knows", credential.label))
        })?;
        Ok((provider, credential.secret))
    }

    /// Sets the guild's account linker (its key sealed, never shown back),
    /// audited `roblox.linker_set` without the key.
    pub async fn set_linker(&self, guild_id: u64, provider: &str, key: &str, actor: &Actor) -> Result<LinkerSetting> {
        let provider = Provider::parse(provider).ok_or_else(|| {
            Error::Invalid(crate::keys::InvalidInput::new(
                "provider",
                format!("must be bloxlink or rover, not '{}'", provider.chars().take(40).collect::<String>()),
            ))
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::Invalid(crate::keys::InvalidInput::new("key", "must not be empty".to_owned())));
        }
        if key.len() > 4096 || key.chars().any(char::is_control) {
            return Err(Error::Invalid(crate::keys::InvalidInput::new(
                "key",
                "must be one line of at most 4096 characters".to_owned(),
            )));
        }
        self.credentials().put(guild_id, CredentialKind::Linker, provider.as_str(), key).await?;
        // A new linker (or key) answers afresh.
        self.links().unlinked.lock().expect("unlinked poisoned").retain(|(g, _), _| *g != guild_id);
        self.links().limited_until.lock().expect("limited poisoned").remove(&guild_id);
        self.record_system_event_by(guild_id, Action::RobloxLinkerSet, actor, json!({ "provider": provider.as_str() }))
            .await?;
        tracing::info!(guild_id, provider = provider.as_str(), "account linker set");
        Ok(LinkerSetting { provider })
    }

    /// The guild's account linker, if set (the provider only).
    pub async fn linker(&self, guild_id: u64) -> Result<Option<LinkerSetting>> {
        let label = self.credentials().label(guild_id, CredentialKind::Linker).await?;
        Ok(label.and_then(|l| Provider::parse(&l)).map(|provider| LinkerSetting { provider }))
    }

    /// Removes the guild's account linker; whether it had one. Audited
    /// `roblox.linker_removed`.
    pub async fn remove_linker(&self, guild_id: u64, actor: &Actor) -> Result<bool> {
        let removed = self.credentials().delete(guild_id, CredentialKind::Linker).await?;
        if removed {
            self.record_system_event_by(guild_id, Action::RobloxLinkerRemoved, actor, json!({})).await?;
            tracing::info!(guild_id, "account linker removed");
        }
        Ok(removed)
    }
}

impl GuildActions {
    /// Whether `member` is banned: for a `roblox:` id linked to several
    /// Discord accounts, banned if any of them is (with that ban's reason).
    pub async fn member_ban_status(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        member: &MemberId,
    ) -> Result<BanStatus> {
        caller.authorize(guild_id, Scope::BansRead)?;
        let mut answer = BanStatus { banned: false, reason: None };
        for user_id in self.keys().resolve_member(guild_id, member).await? {
            let status = self.ban_status(caller, guild_id, user_id).await?;
            if status.banned {
                return Ok(status);
            }
            answer = status;
        }
        Ok(answer)
    }

    /// The one Discord account a write to `member` reaches, and its Roblox
    /// id when addressed by one. Checks `scope` first: a key that may not
    /// write makes no linker call. Several linked accounts: `ambiguous_link`.
    pub async fn write_target(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        scope: Scope,
        member: &MemberId,
    ) -> Result<(u64, Option<u64>)> {
        caller.authorize(guild_id, scope)?;
        let ids = self.keys().resolve_member(guild_id, member).await?;
        match (ids.as_slice(), member.roblox_id()) {
            ([one], roblox_id) => Ok((*one, roblox_id)),
            (_, Some(roblox_id)) => Err(Error::AmbiguousLink(format!(
                "Roblox user {roblox_id} is linked to {} Discord accounts in this server ({}); address the one you \
                 mean by its Discord id",
                ids.len(),
                ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ))),
            (_, None) => Err(Error::Internal(anyhow::anyhow!("a Discord id resolved to {} accounts", ids.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_discord_snowflakes_or_roblox_user_ids() {
        assert_eq!(MemberId::parse("1100000000000000001"), Ok(MemberId::Discord(1_100_000_000_000_000_001)));
        assert_eq!(MemberId::parse("roblox:1"), Ok(MemberId::Roblox(1)));
        assert_eq!(MemberId::parse("roblox:9007199254740992"), Ok(MemberId::Roblox(MAX_ROBLOX_ID)));
        for bad in [
            "roblox:9007199254740993",
            "roblox:0",
            "roblox:",
            "roblox:01",
            "roblox:-5",
            "roblox:1.5",
            "Roblox:5",
            "roblox: 5",
            "0",
            "abc",
            "9223372036854775808",
            "",
        ] {
            let err = MemberId::parse(bad).unwrap_err();
            assert!(err.contains("roblox:<userId>"), "{bad}: {err}");
        }
        assert_eq!(MemberId::Roblox(42).to_string(), "roblox:42");
        assert!(MemberId::parse("x".repeat(500).as_str()).unwrap_err().len() < 120);
    }
}
