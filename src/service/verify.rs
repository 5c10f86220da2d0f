//! Verification: a presented token checked from memory alone (the index),
//! and the verified caller ([`Authenticated`]) the adapters act for.

use std::net::IpAddr;
use std::sync::Arc;

use super::index::LiveKey;
use super::{describe_named, unix_millis, Error, KeyService, Result};
use crate::audit::Actor;
use crate::keys::{token, Environment, KeyStatus, Scope};

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

impl KeyService {
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

    /// The key a presented token names, if the index holds it, whatever its
    /// state (revoked, suspended, a rotated-out secret): the key a refused
    /// request is counted for. `None` for a malformed or unknown token.
    pub fn identify(&self, presented: &str) -> Option<Arc<LiveKey>> {
        token::parse(&self.inner.cfg.prefix, presented).ok()?;
        self.inner.index.get(&crate::keys::KeyHash::of(presented)).map(|e| e.key)
    }
}
