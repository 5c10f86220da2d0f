//! What a person types to make a key, checked before any rule runs: the
//! request as typed ([`KeyRequest`]), the draft that passed every check
//! ([`KeyDraft`]), a rotation's grace ([`parse_grace`]) and the key made
//! from it ([`IssuedKey`], its secret shown once).

use crate::keys::{
    parse_budget, parse_rate_limit, AllowedIps, AllowedRoles, Environment, InvalidInput, KeyName, KeyRecord, PlainKey,
    Scopes, Ttl,
};

/// The longest grace period a rotation may give the old secret.
pub const MAX_GRACE_SECONDS: i64 = 7 * 86_400;

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

/// A key and its secret, shown once.
#[derive(Debug)]
pub struct IssuedKey {
    pub record: KeyRecord,
    pub secret: PlainKey,
}

/// The longest a rotation "until unused" may keep the old secret working,
/// however often it is presented.
pub const MAX_UNUSED_GRACE_SECONDS: i64 = 30 * 86_400;

/// What a rotation does with the old secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldSecret {
    /// It stops at once.
    StopsNow,
    /// It works for this long (a grace period, at most 7 days).
    WorksFor(Ttl),
    /// It works until it has not been presented for this long (1 s to 30
    /// days), and at most [`MAX_UNUSED_GRACE_SECONDS`] after the rotation:
    /// for game servers that keep the secret they started with.
    UntilUnused(Ttl),
}

impl OldSecret {
    /// From the two options a person may give (`grace`, `grace_until_unused`),
    /// at most one of them.
    pub fn parse(grace: Option<&str>, until_unused: Option<&str>) -> Result<Self, InvalidInput> {
        match (grace, until_unused) {
            (Some(_), Some(_)) => Err(InvalidInput::new(
                "grace_until_unused",
                "give either a grace period or a grace until unused, not both",
            )),
            (Some(g), None) => parse_grace(g).map(Self::WorksFor),
            (None, Some(u)) => parse_grace_until_unused(u).map(Self::UntilUnused),
            (None, None) => Ok(Self::StopsNow),
        }
    }
}

impl std::fmt::Display for OldSecret {
    /// How a prompt says it: "the old one {self}".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StopsNow => f.write_str("stops working at once"),
            Self::WorksFor(g) => write!(f, "keeps working for {g}"),
            Self::UntilUnused(u) => {
                write!(f, "keeps working until it has not been used for {u} (at most 30 days)")
            }
        }
    }
}

/// Parses how long a rotation's old secret may go unpresented before it
/// stops (1 s to 30 days).
pub fn parse_grace_until_unused(input: &str) -> Result<Ttl, InvalidInput> {
    let ttl = Ttl::parse("grace_until_unused", input)?;
    if ttl.seconds() > MAX_UNUSED_GRACE_SECONDS {
        return Err(InvalidInput::new(
            "grace_until_unused",
            format!("'{}' is longer than the most allowed, 30d", input.trim().chars().take(40).collect::<String>()),
        ));
    }
    Ok(ttl)
}

/// Parses a rotation's grace period (at most 7 days).
pub fn parse_grace(input: &str) -> Result<Ttl, InvalidInput> {
    let ttl = Ttl::parse("grace", input)?;
    if ttl.seconds() > MAX_GRACE_SECONDS {
        return Err(InvalidInput::new("grace", format!("'{}' is longer than the most allowed, 7d", input.trim())));
    }
    Ok(ttl)
}
