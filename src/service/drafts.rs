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

/// Parses a rotation's grace period (at most 7 days).
pub fn parse_grace(input: &str) -> Result<Ttl, InvalidInput> {
    let ttl = Ttl::parse("grace", input)?;
    if ttl.seconds() > MAX_GRACE_SECONDS {
        return Err(InvalidInput::new("grace", format!("'{}' is longer than the most allowed, 7d", input.trim())));
    }
    Ok(ttl)
}
