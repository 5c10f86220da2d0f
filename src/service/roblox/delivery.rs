//! Keys delivered into a Roblox experience's Secrets store.
//!
//! `keys create … --roblox-universe ID [--roblox-secret NAME]` (and the
//! slash options) write the new key's secret straight into the universe's
//! Secrets store with the guild's Open Cloud key: sealed to the universe's
//! X25519 public key (libsodium sealed box, `crypto_box`), base64, with the
//! public key's `key_id`, and `domain` the host of `http.public_url` (so the
//! game may send it only to guildkey). The secret is never shown: not on
//! stdout, not in Discord.
//!
//! Order: everything that can be checked is checked first (the setting,
//! the Open Cloud key, the universe's public key), then the key is created,
//! sealed and written; if the write fails the new key is revoked and
//! deleted, so none is left half-made, and the error says why. A rotation of
//! a delivered key writes the new secret to the same universe and name.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::audit::Actor;
use crate::keys::InvalidInput;
use crate::roblox::open_cloud::{OpenCloud, UniverseKey};
use crate::service::credentials::CredentialKind;
use crate::service::error::{Error, Result};
use crate::service::{IssuedKey, KeyService};
use crate::store::KeyDelivery;

/// The secret's name when none is given.
pub const DEFAULT_SECRET_NAME: &str = "guildkey";

/// What delivery needs from the configuration.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `roblox.open_cloud_base_url`.
    pub open_cloud_base_url: String,
    /// `http.public_url`: its host becomes the secret's `domain`.
    pub public_url: Option<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self { open_cloud_base_url: "https://apis.roblox.com".to_owned(), public_url: None }
    }
}

/// Where a key goes: a universe and a secret name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub universe_id: u64,
    pub secret_name: String,
}

impl Target {
    /// Checks a universe id and a secret name (Roblox's rule:
    /// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`).
    pub fn parse(universe_id: i64, secret_name: Option<&str>) -> Result<Self> {
        let invalid =
            |field: &'static str, message: &str| Error::Invalid(InvalidInput { field, message: message.to_owned() });
        let universe_id = u64::try_from(universe_id)
            .ok()
            .filter(|&u| u > 0)
            .ok_or_else(|| invalid("roblox_universe", "a Roblox universe id is a positive whole number"))?;
        let name = secret_name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_SECRET_NAME);
        let mut chars = name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(
                "roblox_secret",
                "a Roblox secret name is 1-64 letters, digits and underscores, not starting with a digit",
            ));
        }
        Ok(Self { universe_id, secret_name: name.to_owned() })
    }
}

/// Everything checked before a key is made: the client, the guild's Open
/// Cloud key, the universe's public key and the domain.
struct Ready {
    cloud: OpenCloud,
    api_key: crate::config::Secret,
    universe_key: UniverseKey,
    domain: String,
}

fn outside(target: &Target, e: impl std::fmt::Display) -> Error {
    Error::Missing(format!("could not deliver the key into Roblox universe {}: {e}", target.universe_id))
}

impl KeyService {
    /// Checks what delivering into `target` needs, before any key changes.
    async fn ready(&self, guild_id: u64, target: &Target) -> Result<Ready> {
        let settings = self.delivery_settings();
        let domain = settings
            .public_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or_else(|| {
                Error::Missing(
                    "http.public_url (GUILDKEY_HTTP_PUBLIC_URL) is not set: a delivered secret may be sent only to \
                     guildkey's host, which that setting names"
                        .to_owned(),
                )
            })?;
        let api_key = self.credentials().get(guild_id, CredentialKind::OpenCloud).await?.ok_or_else(|| {
            Error::Missing(format!(
                "guild {guild_id} has no Roblox Open Cloud key: set one with guildkey roblox push set \
                 (--mode none to keep it for delivery alone)"
            ))
        })?;
        let cloud = OpenCloud::new(&settings.open_cloud_base_url);
        let universe_key =
            cloud.public_key(&api_key.secret, target.universe_id).await.map_err(|e| outside(target, e))?;
        Ok(Ready { cloud, api_key: api_key.secret, universe_key, domain })
    }

    /// Seals `secret` to the universe's key and writes it.
    async fn write_secret(&self, ready: &Ready, target: &Target, secret: &str) -> Result<()> {
        let public = crypto_box::PublicKey::from(ready.universe_key.public_key);
        let sealed = public
            .seal(&mut crypto_box::aead::OsRng, secret.as_bytes())
            .map_err(|_| outside(target, "sealing failed"))?;
        let sealed = B64.encode(sealed);
        ready
            .cloud
            .put_secret(
                &ready.api_key,
                target.universe_id,
                &target.secret_name,
                &sealed,
                &ready.universe_key.key_id,
                Some(&ready.domain),
            )
            .await
            .map_err(|e| outside(target, e))
    }

    /// Makes a key with `issue` and delivers its secret into `target`; a
    /// key whose delivery fails is revoked and deleted.
    pub async fn issue_delivered<F>(&self, guild_id: u64, target: &Target, actor: &Actor, issue: F) -> Result<IssuedKey>
    where
        F: std::future::Future<Output = Result<IssuedKey>>,
    {
        let ready = self.ready(guild_id, target).await?;
        let issued = issue.await?;
        let id = issued.record.id.to_string();
        if let Err(e) = self.write_secret(&ready, target, issued.secret.expose()).await {
            // Not left half-made: nobody has seen this secret.
            let _ = self.revoke(Some(guild_id), &id, actor).await;
            let _ = self.delete(Some(guild_id), &id, actor).await;
            return Err(e);
        }
        let delivery =
            KeyDelivery { guild_id, universe_id: target.universe_id, secret_name: target.secret_name.clone() };
        self.store().put_key_delivery(&id, &delivery, self.now()).await?;
        Ok(issued)
    }

    /// Where a key is delivered, if it is.
    pub async fn key_delivery(&self, key_id: &str) -> Result<Option<KeyDelivery>> {
        Ok(self.store().key_delivery(key_id).await?)
    }

    /// After a rotation: writes the new secret where the key is delivered;
    /// `None` for a key that is not delivered (its secret is shown instead).
    pub async fn deliver_rotated(&self, issued: &IssuedKey) -> Result<Option<KeyDelivery>> {
        let Some(d) = self.key_delivery(issued.record.id.as_str()).await? else { return Ok(None) };
        let target = Target { universe_id: d.universe_id, secret_name: d.secret_name.clone() };
        let ready = self.ready(d.guild_id, &target).await.map_err(|e| rotated_but(&target, e))?;
        self.write_secret(&ready, &target, issued.secret.expose()).await.map_err(|e| rotated_but(&target, e))?;
        self.store().put_key_delivery(issued.record.id.as_str(), &d, self.now()).await?;
        Ok(Some(d))
    }
}

fn rotated_but(target: &Target, e: Error) -> Error {
    Error::Missing(format!(
        "the key was rotated, but its new secret could not be written to universe {} as {} ({e}); fix that and \
         rotate again (the new secret is not shown)",
        target.universe_id, target.secret_name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_roblox_secret_names() {
        assert_eq!(Target::parse(7, None).unwrap().secret_name, "guildkey");
        assert_eq!(Target::parse(7, Some("game_key")).unwrap().secret_name, "game_key");
        assert!(Target::parse(7, Some("1bad")).is_err());
        assert!(Target::parse(7, Some("has-dash")).is_err());
        assert!(Target::parse(0, None).is_err());
        assert!(Target::parse(-3, None).is_err());
    }
}
