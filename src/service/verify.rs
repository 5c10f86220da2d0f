//! Admission: one call ([`KeyService::admit`]) decides whether a request
//! presenting a key is admitted, from memory alone: the token checked
//! against the index, the key's rate limit (its budget shared with other
//! instances, when the database is shared, then the local GCRA limiter),
//! and the budget for the `X-RateLimit-*` headers. The answer
//! ([`Admission`]) is the adapter's to translate; the verified caller
//! ([`Authenticated`]) is whom the adapters act for.

use std::net::IpAddr;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};

use super::index::{KeyLimiter, LiveKey};
use super::lease::Take;
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
        // The index's freshness is real time (see `clock`); the key's
        // expiry and grace are the service's clock, in production the same
        // reading.
        let wall_ms = unix_millis();
        if wall_ms >= self.inner.index.fresh_until_ms() {
            return Err(Error::IndexStale);
        }
        let now_ms = self.inner.clock.now_ms_or(|| wall_ms);
        let hash = crate::keys::KeyHash::of(presented);
        let found = self.inner.index.get(&hash).filter(|e| e.valid_until_ms.is_none_or(|until| until > now_ms));
        let Some(entry) = found else { return Err(Error::NotFound("the presented key".to_owned())) };
        let key = entry.key;
        match key.status_at_ms(now_ms) {
            KeyStatus::Revoked => return Err(Error::Revoked(describe_named(&key.name, &key.prefix))),
            KeyStatus::Expired => return Err(Error::Expired(describe_named(&key.name, &key.prefix))),
            KeyStatus::Suspended => return Err(Error::Suspended(describe_named(&key.name, &key.prefix))),
            KeyStatus::Active => {}
        }
        if !key.allows(ip) {
            return Err(Error::IpNotAllowed);
        }
        self.inner.usage.touch(&key.id, key.usage(), now_ms);
        if entry.valid_until_ms.is_some() {
            // A rotated-out secret: when and where, for its rotation
            // (`tasks::rotations`); memory only, written in the background.
            self.inner.sightings.note(&key.id, hash, now_ms, ip);
        }
        Ok(Authenticated { key })
    }

    /// The key a presented token names, if the index holds it, whatever its
    /// state (revoked, suspended, a rotated-out secret in its grace): the
    /// key a refused request is counted for. `None` for a malformed or
    /// unknown token, or a rotated-out secret past its grace.
    pub fn identify(&self, presented: &str) -> Option<Arc<LiveKey>> {
        token::parse(&self.inner.cfg.prefix, presented).ok()?;
        self.find_secret(presented, self.inner.clock.now_ms())
    }

    /// The key whose secret `presented` is, by hash: its current secret, or
    /// a rotated-out one still in its grace. A rotated-out secret past its
    /// grace matches nothing, anywhere (verification, the request log, a
    /// leak report): it is no longer the key's, and reporting it must not
    /// revoke the secret that replaced it.
    pub(super) fn find_secret(&self, presented: &str, now_ms: i64) -> Option<Arc<LiveKey>> {
        let entry = self.inner.index.get(&crate::keys::KeyHash::of(presented))?;
        if entry.valid_until_ms.is_some_and(|until| until <= now_ms) {
            return None;
        }
        Some(entry.key)
    }
}

/// A key's request budget after a request: the `X-RateLimit-*` values.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is full again.
    pub reset_secs: u64,
    /// Set when this request was refused: seconds to wait.
    pub retry_after_secs: Option<u64>,
}

/// The service's answer to a request presenting a key
/// ([`KeyService::admit`]): what the adapter needs for its answer, headers
/// and error envelope.
#[derive(Debug)]
pub enum Admission {
    /// Admitted: act for the caller; the budget goes in the headers.
    Admitted(Authenticated, Budget),
    /// Verified, but the key's budget shared with other instances is being
    /// leased from the database (rare: a key's first request of a window on
    /// this instance): [`KeyService::admit_leased`] decides once it is in.
    Leasing(Authenticated),
    /// The token does not verify: malformed, unknown, revoked, expired,
    /// suspended, outside the key's allow-list, or the index is stale.
    Unverified(Error),
    /// Verified, but over the key's rate limit (every instance together, or
    /// this one's limiter): refused for `retry_after_secs`, with the budget
    /// for the headers.
    Limited { retry_after_secs: u64, budget: Budget },
}

impl KeyService {
    /// Decides whether a request presenting `presented` from `ip` is
    /// admitted, from memory alone: the token ([`Self::authenticate`]),
    /// then the key's rate limit, its budget shared with other instances
    /// first (when the database is shared, see `lease`), then the local
    /// limiter (a refusal there puts the shared request back).
    pub fn admit(&self, presented: &str, ip: IpAddr) -> Admission {
        let caller = match self.authenticate(presented, ip) {
            Ok(caller) => caller,
            Err(e) => return Admission::Unverified(e),
        };
        match self.take_shared(&caller) {
            Take::Wait => Admission::Leasing(caller),
            shared => self.limit(caller, shared),
        }
    }

    /// Finishes [`Self::admit`] for a request it answered
    /// [`Admission::Leasing`]: waits for the key's lease (at most
    /// `lease::WAIT_FOR`). Never [`Admission::Leasing`] again.
    pub async fn admit_leased(&self, caller: Authenticated) -> Admission {
        let shared = self.wait_shared(&caller).await;
        self.limit(caller, shared)
    }

    /// The key's rate limit, once the shared budget has answered: refused
    /// when every instance together has used the window's budget; else the
    /// local limiter decides.
    fn limit(&self, caller: Authenticated, shared: Take) -> Admission {
        let per_minute = caller.key.rate_limit_per_minute;
        if let Take::Exhausted { retry_after_secs } = shared {
            return Admission::Limited { retry_after_secs, budget: window_spent(per_minute, retry_after_secs) };
        }
        let mut budget = check(caller.key.limiter(), per_minute);
        if let Some(retry_after_secs) = budget.retry_after_secs {
            self.give_back_shared(&caller, &shared);
            return Admission::Limited { retry_after_secs, budget };
        }
        if let Take::Taken { remaining, reset_secs, .. } = shared {
            within_window(&mut budget, remaining, reset_secs);
        }
        Admission::Admitted(caller, budget)
    }
}

/// Takes one request from a key's budget. The limiter is the key's own
/// (made on its first use, kept across its rotations, see
/// `service::index::LiveKey`), so this touches no shared map.
fn check(limiter: &KeyLimiter, per_minute: u32) -> Budget {
    let per_minute = per_minute.max(1);
    let per_cell = 60.0 / f64::from(per_minute);
    match limiter.check() {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            Budget {
                limit: per_minute,
                remaining,
                reset_secs: (f64::from(per_minute - remaining) * per_cell).ceil() as u64,
                retry_after_secs: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let wait_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Budget {
                limit: per_minute,
                remaining: 0,
                reset_secs: (f64::from(per_minute) * per_cell).ceil() as u64,
                retry_after_secs: Some(wait_secs),
            }
        }
    }
}

/// The budget of a request refused because every instance together has
/// used the key's window: nothing remains until the window ends, in
/// `retry_after_secs`.
fn window_spent(per_minute: u32, retry_after_secs: u64) -> Budget {
    Budget {
        limit: per_minute.max(1),
        remaining: 0,
        reset_secs: retry_after_secs,
        retry_after_secs: Some(retry_after_secs),
    }
}

/// Narrows an admitted request's local budget to the key's shared window:
/// about `remaining` left over all instances, full again at the window's
/// end in `reset_secs` (whichever of the two budgets is the tighter).
fn within_window(budget: &mut Budget, remaining: u32, reset_secs: u64) {
    budget.remaining = budget.remaining.min(remaining);
    budget.reset_secs = budget.reset_secs.max(reset_secs);
}
