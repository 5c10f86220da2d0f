//! The service layer: every rule about keys, in one place.
//!
//! Adapters (HTTP, bot, CLI) call [`KeyService`] and translate its [`Error`]
//! once each; none of them touches SQL or decides a rule. Every change writes
//! its audit event in the same transaction (see `store`), refreshes the
//! in-memory [`index::KeyIndex`] before returning, and wakes the audit-channel
//! poster. Verification ([`KeyService::authenticate`]) reads only memory.

pub mod actions;
pub mod guard;
pub mod health;
pub mod index;
pub mod lease;
pub mod outbox;
pub mod reminders;
pub mod spike;
pub mod usage;
pub mod usage_report;
pub mod webhooks;

/// Store rows the adapters show as they are (a request-log line, a webhook
/// delivery), so no adapter imports the store.
pub use crate::store::{DeliveryRecord, DeliveryState, RequestLogEntry};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};
use crate::config::{KeysConfig, UsageConfig};
use crate::keys::{
    parse_budget, parse_rate_limit, token, AllowedIps, AllowedRoles, Environment, InvalidInput, KeyId, KeyName,
    KeyRecord, KeyStatus, Malformed, PlainKey, Scope, Scopes, Ttl,
};
use crate::store::{AuditChannelBefore, NewKeyRow, PostsOff, Rotation, Store};

use index::{KeyIndex, LiveKey};
use spike::SpikeWatch;
use usage::{RequestFacts, UsageTracker};
use usage_report::{Period, RequestPage, Totals, UsageReport, UsageSummary};

/// The longest grace period a rotation may give the old secret.
pub const MAX_GRACE_SECONDS: i64 = 7 * 86_400;

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
    /// The circuit breaker suspended the key making this write.
    #[error("{0}")]
    BreakerTripped(String),
    /// Discord calls for this guild are paused: Discord refused too many
    /// of them lately, and more would risk the bot's access for every guild.
    #[error("{message}")]
    DiscordPaused { message: String, retry_after_secs: u64 },
    /// A reference across all guilds that only a guild can settle: a name
    /// (names are unique, if at all, only within a guild) or a prefix
    /// shared by keys of several guilds. Lists the guilds to choose from.
    #[error("'{reference}' {} {}", if guilds.len() == 1 { "is a key name in guild" } else { "matches keys in guilds" }, list_guilds(guilds))]
    GuildNeeded { reference: String, guilds: Vec<u64> },
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

/// What the upkeep's index watch last found (see `KeyService::watch_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Current,
    /// Checks failed for too long: every key is refused.
    Stale,
    /// The shared database is unreachable: keys verified from memory.
    Outage,
}

fn list_guilds(guilds: &[u64]) -> String {
    guilds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A key as typed by a person, before parsing.
#[derive(Debug, Default, Clone)]
pub struct KeyRequest<'a> {
    pub name: &'a str,
    pub scopes: &'a str,
    pub environment: Option<&'a str>,
    pub expires_in: Option<&'a str>,
    pub rate_limit: Option<i64>,
    pub allowed_ips: Option<&'a str>,
    pub allowed_roles: Option<&'a str>,
    pub ban_budget: Option<i64>,
    pub role_budget: Option<i64>,
}

/// A key request that passed every check.
#[derive(Debug, Clone)]
pub struct KeyDraft {
    pub name: KeyName,
    pub scopes: Scopes,
    pub environment: Environment,
    pub expires_in: Option<Ttl>,
    pub rate_limit: Option<u32>,
    pub allowed_ips: AllowedIps,
    pub allowed_roles: AllowedRoles,
    pub ban_budget: Option<u32>,
    pub role_budget: Option<u32>,
}

impl KeyDraft {
    pub fn parse(r: &KeyRequest<'_>) -> Result<Self, InvalidInput> {
        Ok(Self {
            name: KeyName::parse(r.name)?,
            scopes: Scopes::parse(r.scopes)?,
            environment: r.environment.map(str::parse).transpose()?.unwrap_or(Environment::Live),
            expires_in: r.expires_in.map(|s| Ttl::parse("expires_in", s)).transpose()?,
            rate_limit: r.rate_limit.map(parse_rate_limit).transpose()?,
            allowed_ips: r.allowed_ips.map(AllowedIps::parse).transpose()?.unwrap_or_default(),
            allowed_roles: r.allowed_roles.map(AllowedRoles::parse).transpose()?.unwrap_or_default(),
            ban_budget: r.ban_budget.map(|n| parse_budget("ban_budget", n)).transpose()?,
            role_budget: r.role_budget.map(|n| parse_budget("role_budget", n)).transpose()?,
        })
    }
}

/// A report that a token leaked: GitHub secret scanning's body item
/// (`{"token", "type", "url", "source"}`), or a Discord message the leak
/// guard caught.
#[derive(Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct LeakReport {
    /// The whole token as found.
    #[schema(example = "gk_live_…")]
    pub token: String,
    /// Where it was found (a commit, a message link).
    #[serde(default)]
    #[schema(example = "https://github.com/octo/repo/blob/abc/config.env")]
    pub url: Option<String>,
    /// What found it (`content`, `commit`, `discord`…).
    #[serde(default)]
    pub source: Option<String>,
    /// The reporter's token type; not needed to find the key.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl std::fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("LeakReport")
            .field("token", &"<redacted>")
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// A key and its secret, shown once.
#[derive(Debug)]
pub struct IssuedKey {
    pub record: KeyRecord,
    pub secret: PlainKey,
}

/// A verified caller. `key` derefs to [`index::KeyInfo`] (`caller.key.name`,
/// `.prefix`, `.guild_id`, `.scopes`, ...) and carries the key's rate limiter.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key: Arc<LiveKey>,
}

impl Authenticated {
    /// Checks the key may act on `guild_id` with `scope`.
    pub fn authorize(&self, guild_id: u64, scope: Scope) -> Result<()> {
        if self.key.guild_id != guild_id {
            return Err(Error::GuildMismatch);
        }
        if !self.key.scopes.contains(scope) {
            return Err(Error::InsufficientScope(scope));
        }
        Ok(())
    }

    pub fn actor(&self) -> Actor {
        Actor::ApiKey(self.key.key_ref())
    }

    pub fn is_test(&self) -> bool {
        self.key.environment == Environment::Test
    }
}

/// Parses a rotation's grace period (at most 7 days).
pub fn parse_grace(input: &str) -> Result<Ttl, InvalidInput> {
    let ttl = Ttl::parse("grace", input)?;
    if ttl.seconds() > MAX_GRACE_SECONDS {
        return Err(InvalidInput::new("grace", format!("'{}' is longer than the most allowed, 7d", input.trim())));
    }
    Ok(ttl)
}

/// The rules, shared by every adapter. Cheap to clone.
#[derive(Clone)]
pub struct KeyService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cfg: KeysConfig,
    usage_cfg: UsageConfig,
    index: KeyIndex,
    usage: UsageTracker,
    spikes: SpikeWatch,
    /// The minute from which the next usage upkeep (retention) is due.
    usage_upkeep_due: std::sync::atomic::AtomicI64,
    audit_posted: Notify,
    /// Rate-limit budgets shared with other instances (`lease`).
    leases: Arc<lease::RateLeases>,
}

impl KeyService {
    /// Builds the service and loads the key index, with the default usage
    /// settings.
    pub async fn new(store: Store, cfg: KeysConfig) -> anyhow::Result<Self> {
        Self::with_usage(store, cfg, UsageConfig::default()).await
    }

    /// [`Self::new`] with these usage settings (retention, the request log).
    pub async fn with_usage(store: Store, cfg: KeysConfig, usage_cfg: UsageConfig) -> anyhow::Result<Self> {
        let svc = Self {
            inner: Arc::new(Inner {
                leases: Arc::new(lease::RateLeases::new(store.clone())),
                store,
                cfg,
                usage_cfg,
                index: KeyIndex::default(),
                usage: UsageTracker::new(usage_cfg.request_log_per_key),
                spikes: SpikeWatch::default(),
                usage_upkeep_due: std::sync::atomic::AtomicI64::new(i64::MIN),
                audit_posted: Notify::new(),
            }),
        };
        svc.inner.index.reload(&svc.inner.store).await?;
        Ok(svc)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &KeysConfig {
        &self.inner.cfg
    }

    /// Wakes when a change wrote an audit event (for the audit poster).
    pub fn audit_notifier(&self) -> &Notify {
        &self.inner.audit_posted
    }

    /// Runs a change of key `id` and applies it to the index before
    /// returning (no reload: see `index`), then wakes the audit poster.
    async fn change_key<T>(
        &self,
        id: &KeyId,
        write: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Result<T> {
        let outcome = self.inner.index.change(&self.inner.store, id, write).await?;
        self.inner.audit_posted.notify_one();
        Ok(outcome)
    }

    /// Creates a key within the guild's active-key limit.
    #[tracing::instrument(skip_all, fields(guild_id, key_id))]
    pub async fn issue(&self, guild_id: u64, draft: KeyDraft, actor: &Actor) -> Result<IssuedKey> {
        let now = Utc::now();
        let secret = token::generate(&self.inner.cfg.prefix, draft.environment);
        let id = KeyId::generate();
        tracing::Span::current().record("guild_id", guild_id).record("key_id", id.as_str());
        let prefix = secret.display_prefix();
        let expires_at = draft.expires_in.map(|t| now + t.as_chrono());
        let rate_limit = draft.rate_limit.unwrap_or(self.inner.cfg.default_rate_limit_per_minute);
        let created_by = actor.created_by();
        let row = NewKeyRow {
            id: &id,
            guild_id,
            name: draft.name.as_str(),
            hash: secret.hash(),
            prefix: &prefix,
            environment: draft.environment,
            scopes: &draft.scopes,
            created_by: &created_by,
            expires_at,
            rate_limit_per_minute: rate_limit,
            allowed_ips: &draft.allowed_ips,
            allowed_roles: &draft.allowed_roles,
            ban_budget: draft.ban_budget,
            role_budget: draft.role_budget,
        };
        let event = NewAuditEvent {
            guild_id,
            action: Action::KeyCreated,
            actor: actor.clone(),
            key: Some(crate::audit::KeyRef { id: id.clone(), name: draft.name.to_string(), prefix: prefix.clone() }),
            test: false,
            details: serde_json::json!({
                "scopes": draft.scopes.names(),
                "environment": draft.environment,
                "expires_at": expires_at,
                "rate_limit_per_minute": rate_limit,
                "allowed_ips": draft.allowed_ips.entries(),
                "allowed_roles": draft.allowed_roles.ids().iter().map(u64::to_string).collect::<Vec<_>>(),
                "ban_budget": draft.ban_budget.unwrap_or(self.inner.cfg.default_ban_budget),
                "role_budget": draft.role_budget.unwrap_or(self.inner.cfg.default_role_budget),
            }),
        };
        let max = self.inner.cfg.max_per_guild;
        if !self.change_key(&id, self.inner.store.insert_key_within_limit(&row, max, now, &event)).await? {
            return Err(Error::LimitReached { max });
        }
        let record = self.inner.store.get_key(&id).await?.ok_or_else(|| anyhow::anyhow!("created key vanished"))?;
        tracing::info!(key_id = %id, guild_id, "key created");
        Ok(IssuedKey { record, secret })
    }

    /// A guild's keys, with last-used times not yet flushed folded in.
    pub async fn list(&self, guild_id: u64) -> Result<Vec<KeyRecord>> {
        let keys = self.inner.store.list_keys(guild_id).await?;
        Ok(keys.into_iter().map(|k| self.with_pending_usage(k)).collect())
    }

    /// Active keys of a guild and the most allowed.
    pub async fn active_count(&self, guild_id: u64) -> Result<(u32, u32)> {
        let n = self.inner.store.count_active(guild_id, Utc::now()).await?;
        Ok((n, self.inner.cfg.max_per_guild))
    }

    fn with_pending_usage(&self, mut k: KeyRecord) -> KeyRecord {
        if let Some((at, n)) = self.inner.usage.pending_last_use(&k.id) {
            k.last_used_at = Some(k.last_used_at.map_or(at, |old| old.max(at)));
            k.use_count += n as i64;
        }
        k
    }

    /// Finds one key by id, display prefix or exact name; within a guild,
    /// or across all guilds when `guild_id` is `None` (the operator CLI).
    ///
    /// Across all guilds only an id (unique everywhere) or a prefix whose
    /// keys are all in one guild is accepted; a name, or a prefix shared by
    /// several guilds, is refused with [`Error::GuildNeeded`], listing the
    /// guilds, rather than act on whichever guild's key happens to match.
    pub async fn find(&self, guild_id: Option<u64>, reference: &str) -> Result<KeyRecord> {
        let reference = reference.trim();
        let mut found = self.inner.store.find_keys(guild_id, reference).await?;
        if guild_id.is_none() && !found.iter().any(|k| k.id.as_str() == reference) {
            let by_prefix: Vec<_> = found.iter().filter(|k| k.prefix == reference).cloned().collect();
            let candidates = if by_prefix.is_empty() { &found } else { &by_prefix };
            let mut guilds: Vec<u64> = candidates.iter().map(|k| k.guild_id).collect();
            guilds.sort_unstable();
            guilds.dedup();
            if (by_prefix.is_empty() && !found.is_empty()) || guilds.len() > 1 {
                return Err(Error::GuildNeeded { reference: reference.to_owned(), guilds });
            }
            found = by_prefix;
        }
        let now = Utc::now();
        // Most specific first: id, then prefix, then one active key by name.
        for pick in [
            &(|k: &KeyRecord| k.id.as_str() == reference) as &dyn Fn(&KeyRecord) -> bool,
            &|k: &KeyRecord| k.prefix == reference,
            &|k: &KeyRecord| k.status(now).holds_a_place(),
        ] {
            if found.len() > 1 {
                let narrowed: Vec<_> = found.iter().filter(|k| pick(k)).cloned().collect();
                if !narrowed.is_empty() {
                    found = narrowed;
                }
            }
        }
        match found.len() {
            0 => Err(Error::NotFound(reference.to_owned())),
            1 => Ok(self.with_pending_usage(found.remove(0))),
            _ => Err(Error::Ambiguous {
                reference: reference.to_owned(),
                candidates: found.iter().map(|k| k.id.to_string()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Revokes a key, at once and for good.
    pub async fn revoke(&self, guild_id: Option<u64>, reference: &str, actor: &Actor) -> Result<KeyRecord> {
        self.revoke_with(guild_id, reference, actor, serde_json::json!({})).await
    }

    /// [`Self::revoke`], with details for its audit entry (why, when guildkey
    /// itself revokes).
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn revoke_with(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let event = self.key_event(&key, Action::KeyRevoked, actor, details);
        if !self.change_key(&key.id, self.inner.store.revoke_key(&key.id, Utc::now(), &event)).await? {
            return Err(Error::Revoked(describe(&key)));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key revoked");
        Ok(self.inner.store.get_key(&key.id).await?.unwrap_or(key))
    }

    /// Revokes every key whose secret (current, or rotated out and still in
    /// its grace period) is among `reports`: a secret that turned up where it
    /// should not (a public repository, a Discord message) is compromised,
    /// whoever reports it. The caller answers the same whatever this finds,
    /// so a report never tells whether a token was valid. Returns the keys
    /// revoked, for the log.
    pub async fn revoke_leaked(&self, reports: &[LeakReport]) -> usize {
        let mut revoked = 0;
        for report in reports {
            if token::parse(&self.inner.cfg.prefix, &report.token).is_err() {
                continue;
            }
            let Some(entry) = self.inner.index.get(&crate::keys::KeyHash::of(&report.token)) else { continue };
            let key = entry.key;
            if key.status_at_ms(unix_millis()) == KeyStatus::Revoked {
                continue;
            }
            let details = serde_json::json!({
                "why": "its secret was reported as leaked; guildkey revoked it at once",
                "source": report.source.as_deref().map(|s| clip(s, 100)),
                "url": report.url.as_deref().filter(|u| u.starts_with("https://") || u.starts_with("http://")).map(|u| clip(u, 500)),
            });
            match self.revoke_with(Some(key.guild_id), key.id.as_str(), &Actor::System, details).await {
                Ok(_) => {
                    revoked += 1;
                    tracing::warn!(key_id = %key.id, guild_id = key.guild_id, "revoked a key whose secret was reported as leaked");
                }
                Err(Error::Revoked(_)) => {}
                Err(e) => tracing::error!(error = %e, key_id = %key.id, "failed to revoke a leaked key"),
            }
        }
        revoked
    }

    /// Suspends a key (`suspend`) or resumes a suspended one: reversible,
    /// unlike a revocation. A suspended key is refused (401 `key_suspended`)
    /// and still counts against the guild's active-key limit.
    #[tracing::instrument(skip_all, fields(key_id, suspend))]
    pub async fn set_suspended(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        suspend: bool,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = Utc::now();
        match (key.status(now), suspend) {
            (KeyStatus::Revoked, _) => return Err(Error::Revoked(describe(&key))),
            (KeyStatus::Expired, _) => return Err(Error::Expired(describe(&key))),
            (KeyStatus::Suspended, true) => return Err(Error::Suspended(describe(&key))),
            (KeyStatus::Active, false) => return Err(Error::NotSuspended(describe(&key))),
            _ => {}
        }
        let action = if suspend { Action::KeySuspended } else { Action::KeyResumed };
        let event = self.key_event(&key, action, actor, details);
        if !self.change_key(&key.id, self.inner.store.set_suspended(&key.id, suspend, now, &event)).await? {
            // Raced with another change: say what the key is now.
            let now_key = self.find(guild_id, key.id.as_str()).await?;
            return Err(match now_key.status(now) {
                KeyStatus::Revoked => Error::Revoked(describe(&now_key)),
                KeyStatus::Expired => Error::Expired(describe(&now_key)),
                KeyStatus::Suspended => Error::Suspended(describe(&now_key)),
                KeyStatus::Active => Error::NotSuspended(describe(&now_key)),
            });
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, suspend, "key suspension changed");
        Ok(self.inner.store.get_key(&key.id).await?.map_or(key, |k| self.with_pending_usage(k)))
    }

    /// Deletes a revoked or expired key for good.
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn delete(&self, guild_id: Option<u64>, reference: &str, actor: &Actor) -> Result<KeyRecord> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = Utc::now();
        if key.status(now).holds_a_place() {
            return Err(Error::StillActive(describe(&key)));
        }
        let event = self.key_event(&key, Action::KeyDeleted, actor, serde_json::json!({}));
        if !self.change_key(&key.id, self.inner.store.delete_key(&key.id, now, &event)).await? {
            return Err(Error::NotFound(reference.to_owned()));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key deleted");
        // Its counters and log mean nothing now; retention would drop them anyway.
        if let Err(e) = self.inner.store.forget_usage(&key.id).await {
            tracing::warn!(key_id = %key.id, error = format!("{e:#}"), "failed to forget a deleted key's usage");
        }
        Ok(key)
    }

    /// Gives a key a new secret; the old one stops now or after `grace`.
    #[tracing::instrument(skip_all, fields(key_id))]
    pub async fn rotate(
        &self,
        guild_id: Option<u64>,
        reference: &str,
        grace: Option<Ttl>,
        actor: &Actor,
    ) -> Result<IssuedKey> {
        let key = self.find(guild_id, reference).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        let now = Utc::now();
        match key.status(now) {
            KeyStatus::Revoked => return Err(Error::Revoked(describe(&key))),
            KeyStatus::Expired => return Err(Error::Expired(describe(&key))),
            // A suspended key keeps its suspension across a new secret.
            KeyStatus::Active | KeyStatus::Suspended => {}
        }
        let secret = token::generate(&self.inner.cfg.prefix, key.environment);
        let prefix = secret.display_prefix();
        let previous_until = grace.map(|g| now + g.as_chrono());
        let mut event = self.key_event(
            &key,
            Action::KeyRotated,
            actor,
            serde_json::json!({
                "previous_prefix": key.prefix,
                "new_prefix": prefix,
                "grace_seconds": grace.map_or(0, Ttl::seconds),
                "previous_secret_valid_until": previous_until,
            }),
        );
        if let Some(k) = event.key.as_mut() {
            k.prefix = prefix.clone();
        }
        let rotation = Rotation { id: &key.id, hash: secret.hash(), prefix: &prefix, previous_until };
        if !self.change_key(&key.id, self.inner.store.rotate_key(&rotation, now, &event)).await? {
            return Err(Error::Revoked(describe(&key)));
        }
        tracing::info!(key_id = %key.id, guild_id = key.guild_id, "key rotated");
        let record = self.inner.store.get_key(&key.id).await?.ok_or_else(|| Error::NotFound(reference.to_owned()))?;
        Ok(IssuedKey { record: self.with_pending_usage(record), secret })
    }

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
        self.inner.store.set_audit_channel(guild_id, channel_id, Utc::now(), &event, SUMMARY_LINES, details).await?;
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
        self.inner.store.set_leak_guard_rule(guild_id, rule_id, Utc::now(), &event).await?;
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
        let event = NewAuditEvent {
            guild_id: caller.key.guild_id,
            action,
            actor: caller.actor(),
            key: Some(caller.key.key_ref()),
            test: caller.is_test(),
            details,
        };
        let now = Utc::now();
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

    /// Records an event guildkey itself caused (actor `guildkey`), such as
    /// pausing Discord calls for a guild.
    pub async fn record_system_event(&self, guild_id: u64, action: Action, details: serde_json::Value) -> Result<i64> {
        let event = NewAuditEvent { guild_id, action, actor: Actor::System, key: None, test: false, details };
        let id = self.inner.store.insert_audit(&event, Utc::now()).await?;
        self.inner.audit_posted.notify_one();
        Ok(id)
    }

    /// Verifies a presented token from memory alone: shape and checksum
    /// first (no lookup for a malformed token), then the index by hash,
    /// then status and IP allow-list. Notes the use for the batched flush.
    pub fn authenticate(&self, presented: &str, ip: IpAddr) -> Result<Authenticated> {
        token::parse(&self.inner.cfg.prefix, presented).map_err(Error::Malformed)?;
        let now_ms = unix_millis();
        if now_ms >= self.inner.index.fresh_until_ms() {
            return Err(Error::IndexStale);
        }
        let entry = self
            .inner
            .index
            .get(&crate::keys::KeyHash::of(presented))
            .ok_or_else(|| Error::NotFound("the presented key".to_owned()))?;
        let key = entry.key;
        match key.status_at_ms(now_ms) {
            KeyStatus::Revoked => return Err(Error::Revoked(describe_named(&key.name, &key.prefix))),
            KeyStatus::Expired => return Err(Error::Expired(describe_named(&key.name, &key.prefix))),
            KeyStatus::Suspended => return Err(Error::Suspended(describe_named(&key.name, &key.prefix))),
            KeyStatus::Active => {}
        }
        if entry.valid_until_ms.is_some_and(|until| until <= now_ms) {
            // A rotated-out secret whose grace period has ended.
            return Err(Error::NotFound("the presented key".to_owned()));
        }
        if !key.allows(ip) {
            return Err(Error::IpNotAllowed);
        }
        self.inner.usage.touch(&key.id, key.usage(), now_ms);
        Ok(Authenticated { key })
    }

    /// Writes pending last-used times, the request log and the counters of
    /// minutes that have ended (called on a timer), then alerts refusal
    /// spikes; see [`Self::flush_usage_at`].
    pub async fn flush_usage(&self) -> Result<usize> {
        self.flush_usage_at(Utc::now(), false).await
    }

    /// What [`Self::flush_usage`] does, at `now` (tests inject it); with
    /// `all`, the counters of the current minute too (at shutdown). Returns
    /// how many keys' last-used times were written.
    pub async fn flush_usage_at(&self, now: DateTime<Utc>, all: bool) -> Result<usize> {
        let now_ms = now.timestamp_millis();
        let mut refused = Vec::new();
        let flushed = self.inner.usage.flush(&self.inner.store, now_ms, all, &mut refused).await;
        for (id, local) in self.inner.spikes.note(now_ms, &refused) {
            if let Err(e) = self.check_spike(&id, local, now).await {
                tracing::warn!(key_id = %id, error = format!("{e:#}"), "failed to check a key's refusals for a spike");
            }
        }
        Ok(flushed?)
    }

    /// Counts one answered request of `key` and logs it (unless it is a
    /// successful verification): memory only, the request path's one call
    /// (see `usage`).
    pub fn record_request(&self, key: &LiveKey, facts: &RequestFacts) {
        self.inner.usage.record(&key.id, key.usage(), facts);
    }

    /// The key a presented token names, if the index holds it, whatever its
    /// state (revoked, suspended, a rotated-out secret): the key a refused
    /// request is counted for. `None` for a malformed or unknown token.
    pub fn identify(&self, presented: &str) -> Option<Arc<LiveKey>> {
        token::parse(&self.inner.cfg.prefix, presented).ok()?;
        self.inner.index.get(&crate::keys::KeyHash::of(presented)).map(|e| e.key)
    }

    /// A key's usage over `period` at `now` (see `usage_report`): written
    /// counts from every instance plus this process's not yet written.
    pub async fn usage(&self, key: &KeyId, period: Period, now: DateTime<Utc>) -> Result<UsageReport> {
        let (from, to) = period.hours(now);
        let hours = self.inner.store.usage_hours(key, from, to).await?;
        let ips = self.inner.store.usage_ips(key, from, to).await?;
        let (pending, pending_ips) = self.inner.usage.pending_for(key);
        Ok(usage_report::build(key.as_str(), period, now, &hours, &ips, &pending, &pending_ips))
    }

    /// One page of a key's request log, newest first (`limit` clamped to
    /// 1–100), older than the entry `before` when given. This process's
    /// entries not yet written are written first, so a request shows at once.
    pub async fn requests(&self, key: &KeyId, before: Option<i64>, limit: u32) -> Result<RequestPage> {
        self.write_request_log().await;
        let limit = limit.clamp(1, 100);
        let mut entries = self.inner.store.request_log(key, before, limit + 1, false).await?;
        let more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        let next_before = if more { entries.last().map(|e| e.id) } else { None };
        Ok(RequestPage { entries, next_before })
    }

    /// Writes this process's request log entries not yet written (before a
    /// read of the log); a failure leaves them for the next flush.
    async fn write_request_log(&self) {
        if let Err(e) = self.inner.usage.flush_log(&self.inner.store).await {
            tracing::warn!(error = format!("{e:#}"), "failed to write the request log; will retry");
        }
    }

    /// What `/apikey info` shows of a key's usage at `now`: requests and
    /// errors over 24 hours and 7 days, and the latest `errors` refused or
    /// failed requests.
    pub async fn usage_summary(&self, key: &KeyId, now: DateTime<Utc>, errors: u32) -> Result<UsageSummary> {
        let totals = |r: &UsageReport| Totals { requests: r.total, errors: r.errors() };
        let day = self.usage(key, Period::Day, now).await?;
        let week = self.usage(key, Period::Week, now).await?;
        self.write_request_log().await;
        let recent_errors = self.inner.store.request_log(key, None, errors.clamp(1, 100), true).await?;
        Ok(UsageSummary { last_24h: totals(&day), last_7d: totals(&week), recent_errors })
    }

    /// Checks a key this listener refused `local` times in the spike window
    /// against every instance's written counts, and alerts once per spike
    /// (see `spike`).
    async fn check_spike(&self, id: &KeyId, local: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let now_minute = usage::minute_of(now.timestamp_millis());
        let since = now_minute - spike::WINDOW_MINUTES + 1;
        // Written minutes (every instance) and this process's not yet written.
        let mut reasons: std::collections::BTreeMap<String, u64> =
            store.refusals(id, since, now_minute + 1).await?.into_iter().collect();
        let (pending, pending_ips) = self.inner.usage.pending_for(id);
        for m in pending.iter().filter(|m| m.minute >= since && crate::store::REFUSAL_STATUSES.contains(&m.status)) {
            *reasons.entry(m.outcome.to_owned()).or_default() += m.count;
        }
        let recent = local.max(reasons.values().sum());
        let hour = now_minute.div_euclid(60);
        let baseline: u64 = store
            .usage_hours(id, hour - spike::BASELINE_HOURS, hour)
            .await?
            .iter()
            .filter(|h| crate::store::REFUSAL_STATUSES.contains(&h.status))
            .map(|h| h.count)
            .sum();
        if !spike::is_spike(recent, baseline) {
            return Ok(());
        }
        let Some(key) = store.get_key(id).await? else { return Ok(()) };
        let mut ips: std::collections::HashMap<String, u64> =
            store.usage_ips(id, hour, hour + 1).await?.into_iter().collect();
        for p in pending_ips.iter().filter(|p| p.hour == hour) {
            *ips.entry(p.ip.clone()).or_default() += p.count;
        }
        let mut ips: Vec<(String, u64)> = ips.into_iter().collect();
        ips.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let usual = spike::usual_per_window(baseline);
        let event = self.key_event(
            &key,
            Action::UsageSpike,
            &Actor::System,
            serde_json::json!({
                "refusals": recent,
                "window_minutes": spike::WINDOW_MINUTES,
                "usual_per_window": (usual * 10.0).round() / 10.0,
                "reasons": reasons.into_iter().take(5).map(|(r, n)| (r, n.into())).collect::<serde_json::Map<_, _>>(),
                "top_ips": ips.into_iter().take(3).map(|(ip, n)| (ip, n.into())).collect::<serde_json::Map<_, _>>(),
            }),
        );
        if store.claim_usage_alert(id, now, spike::QUIET_MS, spike::ALERT_EVERY_MS, &event).await? {
            tracing::warn!(key_id = %id, guild_id = key.guild_id, refusals = recent, "a key's refusals spiked; alerted");
            self.inner.audit_posted.notify_one();
        }
        Ok(())
    }

    /// The usage upkeep at `now`: drops the minute buckets of hours past
    /// `usage.minute_retention_hours` (their totals stay: the hour buckets),
    /// and hour and IP buckets and log entries past
    /// `usage.hour_retention_days`, and day-old alert states. Run hourly by
    /// the upkeep; idempotent, so every instance may run it.
    pub async fn maintain_usage(&self, now: DateTime<Utc>) -> Result<crate::store::UsageUpkeep> {
        let cfg = &self.inner.usage_cfg;
        let now_minute = usage::minute_of(now.timestamp_millis());
        let days = i64::from(cfg.hour_retention_days);
        let upkeep = self
            .inner
            .store
            .prune_usage(
                now_minute - i64::from(cfg.minute_retention_hours) * 60,
                now_minute.div_euclid(60) - days * 24,
                now - chrono::Duration::days(days),
                now - chrono::Duration::days(1),
            )
            .await?;
        tracing::debug!(?upkeep, "usage upkeep");
        Ok(upkeep)
    }

    /// Brings the index up to date if another process committed (called on
    /// a timer); returns whether one did.
    pub async fn refresh_index(&self) -> Result<bool> {
        let changed = self.inner.index.refresh_if_changed(&self.inner.store).await?;
        if changed {
            self.inner.audit_posted.notify_one();
        }
        Ok(changed)
    }

    /// Runs the background upkeep until `stop` resolves: the index watch
    /// (every 250 ms) and the usage flush (last-used times, the request log,
    /// the counters of ended minutes, spike alerts; hourly the retention),
    /// in a task of its own; beside them, the expiry reminders
    /// ([`reminders`], every `keys.expiry_check_seconds`) and the heartbeat
    /// of the shared rate limits. Flushes everything once more at the end.
    ///
    /// While it runs the index must keep up: when its checks have failed
    /// for [`index::STALE_AFTER_MS`], [`Self::authenticate`] refuses every
    /// key (logged at error once) until a check succeeds (logged at info).
    pub async fn run_upkeep(&self, stop: impl std::future::Future<Output = ()>) {
        let (stopped, stopping) = tokio::sync::watch::channel(false);
        let stopped_too = || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            }
        };
        let reminders = self.run_expiry_reminders(stopped_too());
        // The heartbeat of the shared rate limits runs beside the index's
        // upkeep, so a slow database answer to one never holds up the other.
        let leases = self.inner.leases.run_upkeep(stopped_too());
        let upkeep = async move {
            self.run_index_upkeep(stop).await;
            let _ = stopped.send(true);
        };
        tokio::join!(upkeep, reminders, leases);
    }

    /// The index watch and the last-used flush (see [`Self::run_upkeep`]).
    async fn run_index_upkeep(&self, stop: impl std::future::Future<Output = ()>) {
        self.inner.index.watch(unix_millis());
        let mut state = Watch::Current;
        let flush_every = Duration::from_secs(self.inner.cfg.last_used_flush_seconds.max(1));
        let mut watch = tokio::time::interval(Duration::from_millis(250));
        let mut flush = tokio::time::interval(flush_every);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Another instance's change wakes the watch at once (PostgreSQL);
        // the tick is the fallback, and SQLite's only signal.
        let woken = self.inner.store.key_changes_signal().unwrap_or_default();
        let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = woken.notified() => state = self.watch_index(state).await,
                _ = watch.tick() => state = self.watch_index(state).await,
                _ = flush.tick() => {
                    // Off this loop: a slow write must never hold up the
                    // index watch (which would then go stale). One at a time.
                    if flushing.as_ref().is_none_or(|f| f.is_finished()) {
                        let svc = self.clone();
                        flushing = Some(tokio::spawn(async move { svc.flush_and_maintain().await }));
                    }
                }
            }
        }
        if let Some(flushing) = flushing {
            let _ = flushing.await;
        }
        if let Err(e) = self.flush_usage_at(Utc::now(), true).await {
            tracing::error!(error = %e, "failed to write usage (last-used times, counters, request log) at shutdown");
        }
    }

    /// One tick of the usage flush, and the hourly upkeep when it is due.
    async fn flush_and_maintain(&self) {
        if let Err(e) = self.flush_usage().await {
            tracing::warn!(error = %e, "failed to write usage (last-used times, counters, request log); will retry");
        }
        let now = Utc::now();
        let minute = usage::minute_of(now.timestamp_millis());
        let due = &self.inner.usage_upkeep_due;
        if minute >= due.load(std::sync::atomic::Ordering::Acquire) {
            // Hourly, a few minutes past the hour.
            let next = (minute.div_euclid(60) + 1) * 60 + 3;
            due.store(next, std::sync::atomic::Ordering::Release);
            if let Err(e) = self.maintain_usage(now).await {
                tracing::warn!(error = %e, "failed to prune usage counters; will retry next hour");
            }
        }
    }

    /// One check of the index against the database, and what it means:
    /// - a failure past [`index::STALE_AFTER_MS`] refuses every key (503
    ///   `index_stale`) until a check succeeds, so a key revoked elsewhere
    ///   is never served from a memory that cannot confirm it;
    /// - but when the database is *shared* (PostgreSQL) and unreachable,
    ///   no instance can commit a change either, so the index is as current
    ///   as the database can be: verification goes on from memory, and
    ///   changes are refused (503 `database_unavailable`) until it is back.
    async fn watch_index(&self, state: Watch) -> Watch {
        let index = &self.inner.index;
        let outcome = index.refresh_if_changed(&self.inner.store).await;
        if matches!(outcome, Ok(true)) {
            self.inner.audit_posted.notify_one();
        }
        match (outcome, state) {
            (Ok(_), Watch::Current) => Watch::Current,
            (Ok(_), Watch::Stale) => {
                tracing::info!("the key index caught up with the database again; keys are accepted again");
                Watch::Current
            }
            (Ok(_), Watch::Outage) => {
                tracing::info!("the database is reachable again; changes are accepted again");
                Watch::Current
            }
            (Err(e), state) if self.inner.store.is_shared() && crate::store::is_unavailable(&e) => {
                index.bridge_outage(unix_millis());
                if state != Watch::Outage {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "the database is unreachable; verifying keys from memory, refusing changes \
                         (503 database_unavailable) until it is back"
                    );
                }
                Watch::Outage
            }
            (Err(e), Watch::Stale) => {
                tracing::debug!(error = format!("{e:#}"), "the key index still cannot catch up");
                Watch::Stale
            }
            (Err(e), _) if index.is_stale_at(unix_millis()) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    stale_after_ms = index::STALE_AFTER_MS,
                    "the key index cannot catch up with the database; refusing every key \
                     (503 index_stale) until it does"
                );
                Watch::Stale
            }
            (Err(e), state) => {
                tracing::warn!(error = format!("{e:#}"), "failed to check the database for changes");
                state
            }
        }
    }

    fn key_event(&self, key: &KeyRecord, action: Action, actor: &Actor, details: serde_json::Value) -> NewAuditEvent {
        NewAuditEvent {
            guild_id: key.guild_id,
            action,
            actor: actor.clone(),
            key: Some(key.key_ref()),
            test: false,
            details,
        }
    }

    /// Key hashes in the index (a metric).
    pub fn indexed_keys(&self) -> usize {
        self.inner.index.len()
    }

    /// How the key index has followed other processes' commits.
    pub fn index_stats(&self) -> index::IndexStats {
        self.inner.index.stats()
    }

    /// The time now, for adapters rendering statuses consistently.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

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

/// Now in milliseconds since the epoch, without building a `DateTime`.
fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Every substring of `text` shaped like one of our tokens (SPEC §3, with
/// the checksum right), each once: what a leak report or a caught message
/// holds.
pub fn find_tokens(prefix: &str, text: &str) -> Vec<String> {
    let head = format!("{prefix}_");
    let mut found: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&head) {
        let candidate = &rest[at..];
        // `live` and `test` are both four characters.
        let len = head.len() + "live_".len() + token::RANDOM_LEN + token::CHECKSUM_LEN;
        if let Some(t) = candidate.get(..len) {
            if token::parse(prefix, t).is_ok() && !found.iter().any(|f| f == t) {
                found.push(t.to_owned());
            }
        }
        rest = &candidate[head.len()..];
    }
    found
}

/// At most `max` characters of untrusted text.
fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A key as named in messages: name and prefix, never the secret.
pub fn describe(key: &KeyRecord) -> String {
    describe_named(&key.name, &key.prefix)
}

fn describe_named(name: &str, prefix: &str) -> String {
    format!("'{name}' ({prefix})")
}
