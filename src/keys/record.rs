//! A key as stored and shown: its id, its status and the changes each
//! status permits (the rules the service applies, once), the record
//! without its secret, and the reference audit events carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::*;

/// A key's public id: `key_` + 16 base62 characters. Safe to show and log.
/// Held inline (no allocation): the in-memory index keeps one per key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(SmallStr);

impl KeyId {
    pub fn generate() -> Self {
        Self(SmallStr::from(format!("key_{}", token::random_base62(16)).as_str()))
    }

    pub fn from_stored(s: String) -> Self {
        Self(SmallStr::from(s.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// For maps keyed by id that are looked up by reference and filled on a
/// miss (`hashbrown`'s `entry_ref`): the id is cloned only then.
impl From<&KeyId> for KeyId {
    fn from(id: &KeyId) -> Self {
        id.clone()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key's state, derived from its timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
    /// Stopped for now, reversibly (`/apikey resume` brings it back).
    Suspended,
}

impl KeyStatus {
    /// The one rule: revocation wins over expiry, expiry over suspension
    /// (resuming an expired key would not bring it back); a key is expired
    /// from its `expires_at` on.
    pub fn of(revoked: bool, expired: bool, suspended: bool) -> Self {
        if revoked {
            Self::Revoked
        } else if expired {
            Self::Expired
        } else if suspended {
            Self::Suspended
        } else {
            Self::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Suspended => "suspended",
        }
    }

    /// Whether the key still counts against the guild's active-key limit
    /// (a suspended key does: resuming it must not go over).
    pub fn holds_a_place(self) -> bool {
        matches!(self, Self::Active | Self::Suspended)
    }
}

/// A change a person may ask of a key, which its status may refuse (see
/// [`KeyStatus::permits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    Revoke,
    Delete,
    Rotate,
    Suspend,
    Resume,
    /// An admin takes the key over, becoming its maker (and lifting a
    /// suspension guildkey made when the maker lost their powers).
    Adopt,
}

/// Why a key's status refuses a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusConflict {
    /// The key is revoked (for good).
    Revoked,
    /// The key has expired.
    Expired,
    /// The key is suspended already.
    Suspended,
    /// Resuming a key that is not suspended.
    NotSuspended,
    /// Deleting needs a revoked or expired key.
    StillActive,
}

impl KeyStatus {
    /// The status preconditions, once: whether a key in this status may
    /// take `change`. Revoking needs a key not revoked yet (an expired key
    /// may be revoked); deleting needs one that no longer holds a place;
    /// rotating, suspending, resuming and adopting need one neither revoked nor
    /// expired (a suspended key keeps its suspension across a new secret),
    /// suspending one not suspended yet, resuming a suspended one.
    pub fn permits(self, change: KeyChange) -> Result<(), StatusConflict> {
        match (change, self) {
            (KeyChange::Revoke, Self::Revoked) => Err(StatusConflict::Revoked),
            (KeyChange::Revoke, _) => Ok(()),
            (KeyChange::Delete, status) if status.holds_a_place() => Err(StatusConflict::StillActive),
            (KeyChange::Delete, _) => Ok(()),
            (_, Self::Revoked) => Err(StatusConflict::Revoked),
            (_, Self::Expired) => Err(StatusConflict::Expired),
            (KeyChange::Suspend, Self::Suspended) => Err(StatusConflict::Suspended),
            (KeyChange::Resume, Self::Active) => Err(StatusConflict::NotSuspended),
            (
                KeyChange::Rotate | KeyChange::Suspend | KeyChange::Resume | KeyChange::Adopt,
                Self::Active | Self::Suspended,
            ) => Ok(()),
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything known about a key except its secret.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: KeyId,
    pub guild_id: u64,
    pub name: String,
    pub prefix: String,
    pub environment: Environment,
    pub scopes: Scopes,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// A Discord user id, or `cli`.
    pub created_by: String,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Requests authenticated with this key, as of the last flush.
    pub use_count: i64,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rate_limit_per_minute: u32,
    pub allowed_ips: AllowedIps,
    /// While a rotation's grace period runs, when the old secret stops.
    pub previous_secret_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The roles a `roles.write` key may touch (empty = any safe role).
    pub allowed_roles: AllowedRoles,
    /// When the key was suspended, while it is.
    pub suspended_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Bans per 10 minutes before the breaker suspends the key (`None`:
    /// the configured default).
    pub ban_budget: Option<u32>,
    /// Role changes per 10 minutes, likewise.
    pub role_budget: Option<u32>,
    /// The Discord user whose powers bound the key (its creator through
    /// the bot, or the admin who adopted it); `None` for a key made by the
    /// operator CLI, which has no maker's bound.
    pub maker_id: Option<u64>,
    /// For a rotation "until unused": how long the old secret may go
    /// unpresented before guildkey retires it (`previous_secret_expires_at`
    /// is then the latest it may work).
    pub previous_secret_until_unused: Option<crate::keys::Ttl>,
    /// When and from which client address a rotated-out secret was last
    /// presented (as of the latest write; `KeyService` folds in this
    /// instance's newer sightings).
    pub previous_secret_seen: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl KeyRecord {
    pub fn status(&self, now: chrono::DateTime<chrono::Utc>) -> KeyStatus {
        KeyStatus::of(
            self.revoked_at.is_some(),
            self.expires_at.is_some_and(|at| at <= now),
            self.suspended_at.is_some(),
        )
    }

    /// Whether the key may take `change` at `now` (see [`KeyStatus::permits`]).
    pub fn may(&self, change: KeyChange, now: chrono::DateTime<chrono::Utc>) -> Result<(), StatusConflict> {
        self.status(now).permits(change)
    }

    pub fn key_ref(&self) -> KeyRef {
        KeyRef { id: self.id.clone(), name: self.name.clone(), prefix: self.prefix.clone() }
    }
}

/// A key named safely: id, name and display prefix, never the secret (what
/// audit events and actors carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub id: KeyId,
    pub name: String,
    pub prefix: String,
}
