//! The key domain, without I/O: identifiers, names, scopes, environments,
//! durations and IP allow-lists, each parsed once from user input into a type
//! that can only hold a valid value ("parse, don't validate").
//!
//! Every parser returns [`InvalidInput`], whose message is written for the
//! person who typed the value (a server admin, an operator at a shell).

mod record;
mod small;
pub mod token;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use record::*;
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

/// The block a client address is throttled and counted in: an IPv4
/// address itself (an IPv4-mapped IPv6 one as its IPv4 address), an IPv6
/// address's /64, the least a subscriber is given (so one holder of a /64,
/// with endless addresses to choose from, is one client).
pub fn address_block(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))
        }
        v4 => v4,
    }
}

/// How an [`address_block`] is shown: an IPv4 address as itself, an IPv6
/// block as `2001:db8:1:2::/64`.
pub fn block_text(block: std::net::IpAddr) -> String {
    match block {
        std::net::IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
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

/// Shortens user input quoted back in an error message.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests;
