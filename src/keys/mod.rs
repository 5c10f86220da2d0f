//! The key domain, without I/O: identifiers, names, scopes, environments,
//! durations and IP allow-lists, each parsed once from user input into a type
//! that can only hold a valid value ("parse, don't validate").
//!
//! Every parser returns [`InvalidInput`], whose message is written for the
//! person who typed the value (a server admin, an operator at a shell).

mod small;
pub mod token;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use small::SmallStr;
pub use token::{KeyHash, Malformed, PlainKey};

/// A value typed by a person was not acceptable. The message says why and
/// what would be accepted; it never repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    /// The option, flag or field name, as the person knows it.
    pub field: &'static str,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Live keys act for real; test keys make every write a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

impl FromStr for Environment {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Ok(Self::Live),
            "test" => Ok(Self::Test),
            other => {
                Err(InvalidInput::new("environment", format!("'{other}' is not an environment; use live or test")))
            }
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key may do. The wire names are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "guild.read")]
    GuildRead,
    #[serde(rename = "bans.read")]
    BansRead,
    #[serde(rename = "bans.write")]
    BansWrite,
    #[serde(rename = "roles.write")]
    RolesWrite,
    #[serde(rename = "audit.read")]
    AuditRead,
}

impl Scope {
    pub const ALL: [Scope; 5] =
        [Scope::GuildRead, Scope::BansRead, Scope::BansWrite, Scope::RolesWrite, Scope::AuditRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuildRead => "guild.read",
            Self::BansRead => "bans.read",
            Self::BansWrite => "bans.write",
            Self::RolesWrite => "roles.write",
            Self::AuditRead => "audit.read",
        }
    }

    /// One line a person can read next to the scope's name.
    pub fn describe(self) -> &'static str {
        match self {
            Self::GuildRead => "read guild info",
            Self::BansRead => "check whether a user is banned",
            Self::BansWrite => "ban and unban users",
            Self::RolesWrite => "add and remove members' roles",
            Self::AuditRead => "read guildkey's audit events",
        }
    }

    fn parse_one(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of scopes without duplicates: one bit per [`Scope`] (the
/// in-memory index holds one per key, so it is a byte, not a tree).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Parses a comma- and/or space-separated list (`bans.read, bans.write`).
    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let mut set = Self(0);
        for word in input.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty()) {
            let scope = Scope::parse_one(&word.to_ascii_lowercase()).ok_or_else(|| {
                InvalidInput::new(
                    "scopes",
                    format!("unknown scope '{}'; valid scopes are {}", truncate(word, 40), Self::all_names()),
                )
            })?;
            if set.contains(scope) {
                return Err(InvalidInput::new("scopes", format!("scope '{scope}' is listed twice")));
            }
            set.0 |= Self::bit(scope);
        }
        if set.0 == 0 {
            return Err(InvalidInput::new("scopes", format!("give at least one scope: {}", Self::all_names())));
        }
        Ok(set)
    }

    fn bit(scope: Scope) -> u8 {
        1 << (scope as u8)
    }

    pub fn all_names() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    /// In [`Scope::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        let bits = self.0;
        Scope::ALL.into_iter().filter(move |&s| bits & Self::bit(s) != 0)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }

    /// Space-separated, as stored.
    pub fn to_storage(&self) -> String {
        self.names().join(" ")
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Scope>::deserialize(d)?;
        let names: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
        Self::parse(&names.join(" ")).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// A key's name: 1–64 characters after trimming, any Unicode but control
/// characters (they would break embeds and tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let name = input.trim();
        let count = name.chars().count();
        if count == 0 {
            return Err(InvalidInput::new("name", "the name is empty; give 1 to 64 characters"));
        }
        if count > Self::MAX_CHARS {
            return Err(InvalidInput::new(
                "name",
                format!("the name is {count} characters long; the most is {}", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidInput::new("name", "the name contains a control character (such as a line break)"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A length of time typed as a positive integer and a unit: `90s`, `10m`,
/// `12h`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl {
    seconds: i64,
}

impl Ttl {
    /// Ten years: long enough for any expiry, small enough for date math.
    pub const MAX_SECONDS: i64 = 3650 * 86_400;

    pub fn parse(field: &'static str, input: &str) -> Result<Self, InvalidInput> {
        let s = input.trim();
        let bad = || {
            InvalidInput::new(
                field,
                format!(
                    "'{}' is not a duration; write a positive whole number and a unit s, m, h or d (e.g. 90s, 10m, 12h, 30d)",
                    truncate(s, 40)
                ),
            )
        };
        let unit = s.chars().last().ok_or_else(bad)?;
        let per_unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| too_long(field))?;
        if n == 0 {
            return Err(InvalidInput::new(
                field,
                format!("'{}' is zero; a duration must be positive", truncate(s, 40)),
            ));
        }
        let seconds = n.checked_mul(per_unit).filter(|&t| t <= Self::MAX_SECONDS).ok_or_else(|| too_long(field))?;
        Ok(Self { seconds })
    }

    pub fn from_seconds(seconds: i64) -> Self {
        Self { seconds }
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.seconds)
    }
}

fn too_long(field: &'static str) -> InvalidInput {
    InvalidInput::new(field, "that duration is too long; the most is 3650d")
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s % size == 0 {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

/// Where a key may be used from: IPs and CIDRs, v4 and v6. Empty = anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps(Box<[IpNet]>);

impl AllowedIps {
    pub const MAX_ENTRIES: usize = 64;

    /// Parses a comma- and/or space-separated list; a bare IP is a /32 or
    /// /128; host bits in a CIDR are cleared (`10.1.2.3/8` is `10.0.0.0/8`);
    /// an IPv4-mapped entry is held as the IPv4 one it means
    /// (`::ffff:10.0.0.1` is `10.0.0.1/32`).
    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let mut nets = Vec::new();
        for word in input.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty()) {
            let net = if word.contains('/') {
                IpNet::from_str(word).ok().map(|n| n.trunc())
            } else {
                IpAddr::from_str(word).ok().map(IpNet::from)
            }
            .map(unmap_v4)
            .ok_or_else(|| {
                InvalidInput::new(
                    "allowed_ips",
                    format!(
                        "'{}' is not an IP address or CIDR range (e.g. 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)",
                        truncate(word, 50)
                    ),
                )
            })?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        if nets.len() > Self::MAX_ENTRIES {
            return Err(InvalidInput::new(
                "allowed_ips",
                format!("{} entries given; the most is {}", nets.len(), Self::MAX_ENTRIES),
            ));
        }
        Ok(Self(nets.into_boxed_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// Comma-separated, as stored.
    pub fn to_storage(&self) -> String {
        self.entries().join(",")
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as `a.b.c.d/(n-96)`. [`AllowedIps::allows`]
/// sees a v4-mapped peer (how a dual-stack listener shows an IPv4 client,
/// so what an operator copies from a log) as IPv4, so a v4-mapped entry
/// kept as IPv6 would never match anyone.
fn unmap_v4(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

impl fmt::Display for AllowedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("any")
        } else {
            f.write_str(&self.entries().join(", "))
        }
    }
}

/// The roles a `roles.write` key may add or remove: Discord role ids.
/// Empty = any role that passes guildkey's own safety rules (which apply
/// whatever this list says: see `service::guard`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedRoles(Box<[u64]>);

impl AllowedRoles {
    pub const MAX_ENTRIES: usize = 25;

    /// Parses a comma- and/or space-separated list of role ids; a role
    /// mention (`<@&123>`, as Discord's client pastes it) is accepted too.
    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        let mut ids = Vec::new();
        for word in input.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty()) {
            let bare = word.strip_prefix("<@&").and_then(|w| w.strip_suffix('>')).unwrap_or(word);
            let id = parse_snowflake(bare).ok_or_else(|| {
                InvalidInput::new(
                    "allowed_roles",
                    format!(
                        "'{}' is not a role id (a number of 17 to 20 digits, e.g. 1400000000000000004)",
                        truncate(word, 50)
                    ),
                )
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() > Self::MAX_ENTRIES {
            return Err(InvalidInput::new(
                "allowed_roles",
                format!("{} roles given; the most is {}", ids.len(), Self::MAX_ENTRIES),
            ));
        }
        Ok(Self(ids.into_boxed_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the list lets the key touch `role_id` (an empty list does).
    pub fn allows(&self, role_id: u64) -> bool {
        self.0.is_empty() || self.0.contains(&role_id)
    }

    pub fn ids(&self) -> &[u64] {
        &self.0
    }

    /// Comma-separated, as stored.
    pub fn to_storage(&self) -> String {
        self.0.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for AllowedRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("any (within the safety rules)")
        } else {
            f.write_str(&self.0.iter().map(|id| format!("<@&{id}>")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// A Discord snowflake as typed: 17 to 20 decimal digits, not zero.
pub fn parse_snowflake(s: &str) -> Option<u64> {
    let s = s.trim();
    if !(17..=20).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|&id| id != 0)
}

/// The breaker's budget of bans or role changes per 10 minutes.
pub fn parse_budget(field: &'static str, n: i64) -> Result<u32, InvalidInput> {
    const MAX: i64 = 10_000;
    if (1..=MAX).contains(&n) {
        Ok(n as u32)
    } else {
        Err(InvalidInput::new(field, format!("{n} is not a budget; give writes per 10 minutes from 1 to {MAX}")))
    }
}

/// A per-key request budget, requests per minute.
pub fn parse_rate_limit(n: i64) -> Result<u32, InvalidInput> {
    const MAX: i64 = 100_000;
    if (1..=MAX).contains(&n) {
        Ok(n as u32)
    } else {
        Err(InvalidInput::new(
            "rate_limit",
            format!("{n} is not a rate limit; give requests per minute from 1 to {MAX}"),
        ))
    }
}

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
    /// rotating, suspending and resuming need one neither revoked nor
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
            (KeyChange::Rotate | KeyChange::Suspend | KeyChange::Resume, Self::Active | Self::Suspended) => Ok(()),
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shortens user input quoted back in an error message.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_status_permits_each_change_or_says_why_not() {
        use KeyChange::*;
        use KeyStatus::{Active, Expired, Revoked, Suspended};
        use StatusConflict as C;
        let table = [
            (Revoke, Active, Ok(())),
            (Revoke, Suspended, Ok(())),
            (Revoke, Expired, Ok(())),
            (Revoke, Revoked, Err(C::Revoked)),
            (Delete, Active, Err(C::StillActive)),
            (Delete, Suspended, Err(C::StillActive)),
            (Delete, Expired, Ok(())),
            (Delete, Revoked, Ok(())),
            (Rotate, Active, Ok(())),
            (Rotate, Suspended, Ok(())),
            (Rotate, Expired, Err(C::Expired)),
            (Rotate, Revoked, Err(C::Revoked)),
            (Suspend, Active, Ok(())),
            (Suspend, Suspended, Err(C::Suspended)),
            (Suspend, Expired, Err(C::Expired)),
            (Suspend, Revoked, Err(C::Revoked)),
            (Resume, Suspended, Ok(())),
            (Resume, Active, Err(C::NotSuspended)),
            (Resume, Expired, Err(C::Expired)),
            (Resume, Revoked, Err(C::Revoked)),
        ];
        for (change, status, want) in table {
            assert_eq!(status.permits(change), want, "{change:?} a {status} key");
        }
    }

    #[test]
    fn scopes_parse_commas_and_spaces() {
        let s = Scopes::parse("bans.read, bans.write roles.write").unwrap();
        assert_eq!(s.names(), ["bans.read", "bans.write", "roles.write"]);
        assert_eq!(s.to_storage(), "bans.read bans.write roles.write");
    }

    #[test]
    fn scopes_reject_unknown_duplicate_and_empty() {
        for (input, needle) in [
            ("bans.read,admin", "unknown scope 'admin'"),
            ("bans.read bans.read", "listed twice"),
            ("", "at least one"),
            (" , ", "at least one"),
        ] {
            let err = Scopes::parse(input).unwrap_err();
            assert!(err.message.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(KeyName::parse("  game server ").unwrap().as_str(), "game server");
        assert_eq!(KeyName::parse(&"é".repeat(64)).unwrap().as_str().chars().count(), 64);
        assert!(KeyName::parse("🎮 roblox").is_ok());
        for bad in ["", "   ", &"x".repeat(65), "a\nb"] {
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_parse_units_and_reject_bad_input() {
        assert_eq!(Ttl::parse("expires", "90s").unwrap().seconds(), 90);
        assert_eq!(Ttl::parse("expires", "10m").unwrap().seconds(), 600);
        assert_eq!(Ttl::parse("expires", "12h").unwrap().seconds(), 43_200);
        assert_eq!(Ttl::parse("expires", "30d").unwrap().seconds(), 2_592_000);
        for bad in ["0s", "-1d", "abc", "", "d", "1.5h", "10", "10w", "99999999999999999999d", "3651d", "1 d"] {
            assert!(Ttl::parse("expires", bad).is_err(), "{bad:?}");
        }
        assert_eq!(Ttl::from_seconds(600).to_string(), "10m");
        assert_eq!(Ttl::from_seconds(90).to_string(), "90s");
    }

    #[test]
    fn a_long_zero_duration_is_quoted_40_characters_at_most() {
        // Found by fuzz/fuzz_targets/duration.rs: a zero of 200 digits was
        // quoted whole, unlike every other refusal.
        let err = Ttl::parse("expires", &format!("{}m", "0".repeat(200))).unwrap_err();
        assert!(err.message.contains("is zero"), "{err}");
        assert!(err.message.chars().count() < 100, "{err}");
        assert!(Ttl::parse("expires", "0s").unwrap_err().message.starts_with("'0s' is zero"));
    }

    #[test]
    fn allowed_ips_parse_v4_v6_and_match() {
        let ips = AllowedIps::parse("203.0.113.7, 10.1.2.3/8 2001:db8::/32").unwrap();
        assert_eq!(ips.entries(), ["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]);
        assert!(ips.allows("10.200.0.1".parse().unwrap()));
        assert!(ips.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(ips.allows("2001:db8::1".parse().unwrap()));
        assert!(!ips.allows("203.0.113.8".parse().unwrap()));
        assert!(AllowedIps::parse("").unwrap().allows("1.2.3.4".parse().unwrap()));
        for bad in ["10.0.0.0/33", "abc", "1.2.3", "10.0.0.0/8,,x", "::/129"] {
            assert!(AllowedIps::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v4_mapped_entries_are_held_as_ipv4_and_allow_their_clients() {
        // Found by fuzz/fuzz_targets/cidr.rs: `::ffff:10.0.0.1` was kept as
        // an IPv6 /128, which `allows` (seeing mapped peers as IPv4) never matched.
        let ips = AllowedIps::parse("::ffff:10.0.0.1, ::ffff:192.168.0.0/112 ::ffff:0:0/96").unwrap();
        assert_eq!(ips.entries(), ["10.0.0.1/32", "192.168.0.0/16", "0.0.0.0/0"]);
        assert!(ips.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(ips.allows("10.0.0.1".parse().unwrap()));
        assert_eq!(AllowedIps::parse("::ffff:10.0.0.1 10.0.0.1").unwrap().entries(), ["10.0.0.1/32"]);
        let one = AllowedIps::parse("::ffff:10.0.0.1").unwrap();
        assert!(!one.allows("10.0.0.2".parse().unwrap()));
        // Not v4-mapped, or too short a prefix to be: kept as IPv6.
        assert_eq!(AllowedIps::parse("::ffff:0:0/95 ::10.0.0.1").unwrap().entries(), ["::fffe:0:0/95", "::a00:1/128"]);
    }

    #[test]
    fn rate_limits_are_bounded() {
        assert_eq!(parse_rate_limit(60), Ok(60));
        assert!(parse_rate_limit(0).is_err());
        assert!(parse_rate_limit(-5).is_err());
        assert!(parse_rate_limit(100_001).is_err());
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
