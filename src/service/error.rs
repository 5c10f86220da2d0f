//! The service's one error enum, in the domain's words: each adapter
//! (`http/error.rs`, `bot/error.rs`, `cli/mod.rs`) maps it once. Storage
//! failures arrive as `anyhow::Error` and become [`Error::DatabaseUnavailable`]
//! or an opaque [`Error::Internal`].

use crate::keys::{InvalidInput, KeyRecord, Malformed, Scope, StatusConflict};

/// What went wrong, in the domain's words. Each adapter maps it once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value typed by a person is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// No key matches the reference (or the token is unknown).
    #[error("no key matches '{0}'")]
    NotFound(String),
    /// More than one key matches; the message lists them.
    #[error("'{reference}' matches more than one key ({candidates}); use the key's id")]
    Ambiguous { reference: String, candidates: String },
    /// The key has been revoked.
    #[error("the key {0} is revoked")]
    Revoked(String),
    /// The key has expired.
    #[error("the key {0} has expired")]
    Expired(String),
    /// Deleting needs a revoked or expired key.
    #[error("the key {0} is still active; revoke it first, then delete it")]
    StillActive(String),
    /// The guild already has as many active keys as allowed.
    #[error("this server already has {max} active keys, the most allowed; revoke one (for example with /apikey revoke or `guildkey keys revoke`) and try again")]
    LimitReached { max: u32 },
    /// The presented token is not shaped like one of ours.
    #[error("malformed key: {0}")]
    Malformed(Malformed),
    /// The key belongs to another guild.
    #[error("this key belongs to another guild")]
    GuildMismatch,
    /// The key lacks the scope the operation needs.
    #[error("this key lacks the {0} scope")]
    InsufficientScope(Scope),
    /// The caller's IP is outside the key's allow-list.
    #[error("requests from this IP address are not allowed for this key")]
    IpNotAllowed,
    /// Too many requests.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Discord refused or failed a write.
    #[error("Discord refused the request: {0}")]
    Discord(String),
    /// The thing asked about does not exist (a guild the bot is not in).
    #[error("{0}")]
    Missing(String),
    /// Anything else: storage, I/O. Logged in full, shown as a generic message.
    #[error("internal error")]
    Internal(anyhow::Error),
    /// The database cannot be reached (PostgreSQL down or restarting, the
    /// pool out of connections for seconds). Verification goes on from
    /// memory; changes wait until it is back. 503, worth retrying.
    #[error("the key database is unreachable right now; try again shortly")]
    DatabaseUnavailable,
    /// The key is suspended (reversibly); `/apikey resume` brings it back.
    #[error("the key {0} is suspended; an admin can resume it with /apikey resume")]
    Suspended(String),
    /// Resuming a key that is not suspended.
    #[error("the key {0} is not suspended")]
    NotSuspended(String),
    /// A role a key may never touch, or one outside the key's own list.
    #[error("{0}")]
    RoleNotAllowed(String),
    /// A member no key may ban (the owner, a moderator, one above the bot).
    #[error("{0}")]
    MemberProtected(String),
    /// A key would do more than its maker may (`service::makers`): a scope
    /// needs a power the member making or adopting it lacks, or its roles
    /// sit at or above theirs. Only the bot asks (the CLI is trusted).
    #[error("{0}")]
    OutranksMaker(String),
    /// The circuit breaker suspended the key making this write.
    #[error("{0}")]
    BreakerTripped(String),
    /// Discord calls for this guild are paused: Discord refused too many
    /// of them lately, and more would risk the bot's access for every guild.
    #[error("{message}")]
    DiscordPaused { message: String, retry_after_secs: u64 },
    /// Every one of the guild's places for Discord calls stayed taken for
    /// as long as a request may wait for one (`guard::PLACE_WAIT`): its
    /// Discord is slow, or its keys send more than it answers. 503.
    #[error("{message}")]
    DiscordBusy { message: String, retry_after_secs: u64 },
    /// A reference across all guilds that only a guild can settle: a name
    /// (names are unique, if at all, only within a guild) or a prefix
    /// shared by keys of several guilds. Lists the guilds to choose from.
    #[error("'{reference}' {} {}", if guilds.len() == 1 { "is a key name in guild" } else { "matches keys in guilds" }, list_guilds(guilds))]
    GuildNeeded { reference: String, guilds: Vec<u64> },
    /// A `roblox:` id the guild's account linker links to no Discord
    /// account (and none is remembered). 404.
    #[error("{0}")]
    NotLinked(String),
    /// A write to a `roblox:` id linked to several Discord accounts: which
    /// one is meant is not guildkey's to guess. 409.
    #[error("{0}")]
    AmbiguousLink(String),
    /// The guild's account linker failed (refused its key, an error, a
    /// timeout), or the guild has none set. 502.
    #[error("{0}")]
    LinkerError(String),
    /// The guild's account linker asked guildkey to wait: no call until
    /// `retry_after_secs` have passed. 503.
    #[error("{message}")]
    LinkerLimited { message: String, retry_after_secs: u64 },
    /// The key index could not confirm it is current (see `index`): every
    /// key is refused rather than one revoked elsewhere accepted. 503.
    #[error("guildkey cannot confirm keys are current; retrying")]
    IndexStale,
}

impl From<anyhow::Error> for Error {
    /// A storage failure: the database being out of reach is said as such,
    /// anything else is internal.
    fn from(e: anyhow::Error) -> Self {
        if crate::store::is_unavailable(&e) {
            tracing::debug!(error = format!("{e:#}"), "the database is unreachable");
            Self::DatabaseUnavailable
        } else {
            Self::Internal(e)
        }
    }
}

impl Error {
    /// Why `key`'s status refused a change, naming the key.
    pub fn conflict(conflict: StatusConflict, key: &KeyRecord) -> Self {
        let key = super::describe(key);
        match conflict {
            StatusConflict::Revoked => Self::Revoked(key),
            StatusConflict::Expired => Self::Expired(key),
            StatusConflict::Suspended => Self::Suspended(key),
            StatusConflict::NotSuspended => Self::NotSuspended(key),
            StatusConflict::StillActive => Self::StillActive(key),
        }
    }
}

fn list_guilds(guilds: &[u64]) -> String {
    guilds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
