//! A guild's third-party credentials (its account linker's API key, its
//! Open Cloud key): sealed under the operator's `GUILDKEY_SECRETS_KEY`
//! before they reach the store, opened only to make a call, never shown
//! back or logged ([`Secret`] prints as asterisks).
//!
//! Sealing is NaCl's `secretbox` (XSalsa20-Poly1305, `crypto_secretbox`)
//! with a random 24-byte nonce, stored as `v1:` + base64(nonce ‖ box). The
//! sealed text binds the guild and the credential's kind inside the box, so
//! a row copied onto another guild or kind does not open there.
//!
//! Rotating the key: start every instance with the new key in
//! `GUILDKEY_SECRETS_KEY` and the old one in `GUILDKEY_SECRETS_KEY_PREVIOUS`,
//! run `guildkey secrets reseal` (or let each credential be re-sealed as it is
//! next set), then drop the previous key.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};

use super::error::{Error as ServiceError, Result};
use super::Clock;
use crate::config::Secret;
use crate::store::Store;

/// The environment variable holding the key credentials are sealed under.
pub const SECRETS_KEY_VAR: &str = "GUILDKEY_SECRETS_KEY";
/// The key being rotated away from, still accepted to open.
pub const PREVIOUS_SECRETS_KEY_VAR: &str = "GUILDKEY_SECRETS_KEY_PREVIOUS";

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 24;

/// What a credential is for; one of each per guild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// The account linker's API key (Bloxlink or RoVer).
    Linker,
    /// The Roblox Open Cloud API key.
    OpenCloud,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linker => "linker",
            Self::OpenCloud => "open_cloud",
        }
    }
}

/// A 32-byte key, from base64 (standard or URL-safe, padded or not).
#[derive(Clone)]
pub struct SecretsKey(Key);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(********)")
    }
}

impl SecretsKey {
    /// Reads a key; the error names the variable and never quotes the value.
    pub fn parse(var: &str, value: &str) -> std::result::Result<Self, String> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let v = value.trim();
        let bytes = [&B64, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(v).ok())
            .ok_or_else(|| format!("{var} is not base64 (make one with: openssl rand -base64 32)"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "{var} must be 32 bytes in base64, not {} (make one with: openssl rand -base64 32)",
                bytes.len()
            ));
        }
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// A random key (tests).
    pub fn generate() -> Self {
        Self(XSalsa20Poly1305::generate_key(&mut OsRng))
    }

    /// The key in base64, as `GUILDKEY_SECRETS_KEY` takes it (tests).
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_slice())
    }

    fn seal(&self, context: &str, plaintext: &str) -> String {
        let cipher = XSalsa20Poly1305::new(&self.0);
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let message = format!("{context}\n{plaintext}");
        // Encryption into a Vec fails only on a message over 2^38 bytes.
        let boxed = cipher.encrypt(&nonce, message.as_bytes()).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&boxed);
        format!("{VERSION}{}", B64.encode(out))
    }

    fn open(&self, context: &str, sealed: &str) -> Option<String> {
        let raw = B64.decode(sealed.strip_prefix(VERSION)?).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, boxed) = raw.split_at(NONCE_LEN);
        let plain = XSalsa20Poly1305::new(&self.0).decrypt(Nonce::from_slice(nonce), boxed).ok()?;
        let plain = String::from_utf8(plain).ok()?;
        let (ctx, secret) = plain.split_once('\n')?;
        (ctx == context).then(|| secret.to_owned())
    }
}

/// The keys credentials are sealed under: the current one, and while it is
/// being rotated, the previous one (opens only).
#[derive(Debug, Clone, Default)]
pub struct SecretsKeys {
    current: Option<SecretsKey>,
    previous: Option<SecretsKey>,
}

impl SecretsKeys {
    pub fn new(current: Option<SecretsKey>, previous: Option<SecretsKey>) -> Self {
        Self { current, previous }
    }

    /// The keys the configuration gives (`secrets.key`,
    /// `secrets.previous_key`: `GUILDKEY_SECRETS_KEY` and
    /// `GUILDKEY_SECRETS_KEY_PREVIOUS`), checked when it was read.
    pub fn from_config(cfg: &crate::config::SecretsConfig) -> std::result::Result<Self, String> {
        let read = |name: &str, v: &Option<Secret>| v.as_ref().map(|s| SecretsKey::parse(name, s.expose())).transpose();
        Ok(Self {
            current: read(SECRETS_KEY_VAR, &cfg.key)?,
            previous: read(PREVIOUS_SECRETS_KEY_VAR, &cfg.previous_key)?,
        })
    }

    pub fn is_set(&self) -> bool {
        self.current.is_some()
    }
}

/// A guild's credential, opened: what the operator may see, and the secret.
#[derive(Debug, Clone)]
pub struct Credential {
    pub label: String,
    pub secret: Secret,
}

/// Seals, keeps and opens guilds' credentials. Cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    store: Store,
    keys: Arc<SecretsKeys>,
    clock: Clock,
}

fn context(guild_id: u64, kind: CredentialKind) -> String {
    format!("guildkey credential {guild_id} {}", kind.as_str())
}

fn no_key() -> ServiceError {
    ServiceError::Missing(format!(
        "{SECRETS_KEY_VAR} is not set: third-party credentials are stored only encrypted. Set it to 32 random \
         bytes in base64 (openssl rand -base64 32) for every guildkey process and the CLI, then try again"
    ))
}

impl Credentials {
    pub fn new(store: Store, keys: Arc<SecretsKeys>, clock: Clock) -> Self {
        Self { store, keys, clock }
    }

    /// Seals and stores a guild's credential of one kind, replacing any.
    pub async fn put(&self, guild_id: u64, kind: CredentialKind, label: &str, secret: &str) -> Result<()> {
        let key = self.keys.current.as_ref().ok_or_else(no_key)?;
        let sealed = key.seal(&context(guild_id, kind), secret);
        self.store.put_credential(guild_id, kind.as_str(), label, &sealed, self.clock.now()).await?;
        Ok(())
    }

    /// What may be shown of a guild's credential (its label), if it has one;
    /// needs no key.
    pub async fn label(&self, guild_id: u64, kind: CredentialKind) -> Result<Option<String>> {
        let row = self.store.credential(guild_id, kind.as_str()).await?;
        Ok(row.map(|r| r.label))
    }

    /// A guild's credential, opened; `None` if it has none of this kind.
    pub async fn get(&self, guild_id: u64, kind: CredentialKind) -> Result<Option<Credential>> {
        let Some(row) = self.store.credential(guild_id, kind.as_str()).await? else {
            return Ok(None);
        };
        let ctx = context(guild_id, kind);
        let keys = [self.keys.current.as_ref(), self.keys.previous.as_ref()];
        if keys.iter().all(Option::is_none) {
            return Err(no_key());
        }
        let secret = keys.iter().flatten().find_map(|k| k.open(&ctx, &row.sealed)).ok_or_else(|| {
            ServiceError::Missing(format!(
                "the stored {} credential of guild {guild_id} does not open with {SECRETS_KEY_VAR} (nor \
                 {PREVIOUS_SECRETS_KEY_VAR}): was the key changed? Set it again, or start with the old key in \
                 {PREVIOUS_SECRETS_KEY_VAR}",
                kind.as_str()
            ))
        })?;
        Ok(Some(Credential { label: row.label, secret: Secret::new(secret) }))
    }

    /// Removes a guild's credential of one kind; whether it had one.
    pub async fn delete(&self, guild_id: u64, kind: CredentialKind) -> Result<bool> {
        Ok(self.store.delete_credential(guild_id, kind.as_str()).await?)
    }

    /// Seals every stored credential again under the current key (after a
    /// rotation of `GUILDKEY_SECRETS_KEY`); returns how many were re-sealed.
    /// A credential that opens with neither key is left as it is and named
    /// in the error.
    pub async fn reseal_all(&self) -> Result<u64> {
        let current = self.keys.current.as_ref().ok_or_else(no_key)?;
        let mut after: Option<(u64, String)> = None;
        let mut done = 0;
        let mut unopened = Vec::new();
        loop {
            let page = self.store.credentials_page(after.as_ref().map(|(g, k)| (*g, k.as_str())), 200).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.guild_id, last.kind.clone()));
            for row in &page {
                let ctx = format!("guildkey credential {} {}", row.guild_id, row.kind);
                let opened = [Some(current), self.keys.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|k| k.open(&ctx, &row.sealed));
                match opened {
                    Some(secret) => {
                        let sealed = current.seal(&ctx, &secret);
                        self.store
                            .put_credential(row.guild_id, &row.kind, &row.label, &sealed, self.clock.now())
                            .await?;
                        done += 1;
                    }
                    None => unopened.push(format!("{} of guild {}", row.kind, row.guild_id)),
                }
            }
        }
        if !unopened.is_empty() {
            return Err(ServiceError::Missing(format!(
                "re-sealed {done}; these open with neither {SECRETS_KEY_VAR} nor {PREVIOUS_SECRETS_KEY_VAR}: {}",
                unopened.join(", ")
            )));
        }
        Ok(done)
    }
}

/// What a webhook's signing secret is sealed to.
fn webhook_context(guild_id: u64) -> String {
    format!("guildkey webhook {guild_id}")
}

/// How many webhook signing secrets were sealed, and how many are still
/// clear (no key set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSealing {
    pub sealed: u64,
    pub clear: u64,
}

impl Credentials {
    /// A webhook's signing secret as it is stored: sealed under the current
    /// key when one is set; without one, clear (as before keys existed:
    /// webhooks keep working, and the start-up warns, see
    /// [`Self::seal_clear_webhook_secrets`]).
    pub fn seal_webhook_secret(&self, guild_id: u64, secret: &str) -> String {
        match &self.keys.current {
            Some(key) => key.seal(&webhook_context(guild_id), secret),
            None => secret.to_owned(),
        }
    }

    /// A stored webhook signing secret, opened: a clear one as it is, a
    /// sealed one with the current or the previous key. The error (for
    /// the delivery log) says what to fix and never quotes the secret.
    pub fn open_webhook_secret(&self, guild_id: u64, stored: &str) -> std::result::Result<String, String> {
        if !stored.starts_with(VERSION) {
            return Ok(stored.to_owned());
        }
        let ctx = webhook_context(guild_id);
        [self.keys.current.as_ref(), self.keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|k| k.open(&ctx, stored))
            .ok_or_else(|| {
                format!(
                    "the webhook's signing secret is sealed and does not open with {SECRETS_KEY_VAR} (nor                      {PREVIOUS_SECRETS_KEY_VAR}); start guildkey with the key it was sealed under"
                )
            })
    }

    /// Seals every webhook signing secret still stored in clear, when a key
    /// is set (at start: a migration cannot encrypt); without a key, counts
    /// them. Sealed ones are left as they are.
    pub async fn seal_clear_webhook_secrets(&self) -> Result<WebhookSealing> {
        let mut out = WebhookSealing { sealed: 0, clear: 0 };
        for (guild_id, stored) in self.store.webhook_secrets().await? {
            if stored.starts_with(VERSION) {
                continue;
            }
            match &self.keys.current {
                Some(key) => {
                    let sealed = key.seal(&webhook_context(guild_id), &stored);
                    if self.store.replace_webhook_secret(guild_id, &stored, &sealed).await? {
                        out.sealed += 1;
                    }
                }
                None => out.clear += 1,
            }
        }
        Ok(out)
    }

    /// Seals every webhook signing secret again under the current key
    /// (clear ones too); returns how many. One that opens with neither key
    /// is left and named in the error.
    pub async fn reseal_webhook_secrets(&self) -> Result<u64> {
        let current = self.keys.current.as_ref().ok_or_else(no_key)?;
        let mut done = 0;
        let mut unopened = Vec::new();
        for (guild_id, stored) in self.store.webhook_secrets().await? {
            let Ok(secret) = self.open_webhook_secret(guild_id, &stored) else {
                unopened.push(format!("the webhook of guild {guild_id}"));
                continue;
            };
            let sealed = current.seal(&webhook_context(guild_id), &secret);
            if self.store.replace_webhook_secret(guild_id, &stored, &sealed).await? {
                done += 1;
            }
        }
        if !unopened.is_empty() {
            return Err(ServiceError::Missing(format!(
                "re-sealed {done} webhook secret(s); these open with neither {SECRETS_KEY_VAR} nor \
                 {PREVIOUS_SECRETS_KEY_VAR}: {}",
                unopened.join(", ")
            )));
        }
        Ok(done)
    }
}

impl super::KeyService {
    /// `guildkey secrets reseal`: every credential, then every webhook
    /// signing secret, sealed again under the current key. Returns both
    /// counts.
    pub async fn reseal_secrets(&self) -> Result<(u64, u64)> {
        let credentials = self.credentials();
        let sealed = credentials.reseal_all().await?;
        let webhooks = credentials.reseal_webhook_secrets().await?;
        Ok((sealed, webhooks))
    }

    /// At start: seals webhook signing secrets still in clear when a key is
    /// set, or warns that they are clear when none is.
    pub async fn seal_webhook_secrets_at_start(&self) {
        match self.credentials().seal_clear_webhook_secrets().await {
            Ok(WebhookSealing { sealed, .. }) if sealed > 0 => {
                tracing::info!(sealed, "sealed webhook signing secrets stored in clear under {SECRETS_KEY_VAR}")
            }
            Ok(WebhookSealing { clear, .. }) if clear > 0 => tracing::warn!(
                clear,
                "webhook signing secrets are stored in clear: set {SECRETS_KEY_VAR} (openssl rand -base64 32) to \
                 store them encrypted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not seal the webhook signing secrets stored in clear"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_credential_opens_only_with_its_key_guild_and_kind() {
        let key = SecretsKey::generate();
        let sealed = key.seal(&context(1, CredentialKind::Linker), "s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(&context(1, CredentialKind::Linker), &sealed).as_deref(), Some("s3cret"));
        assert_eq!(key.open(&context(2, CredentialKind::Linker), &sealed), None);
        assert_eq!(key.open(&context(1, CredentialKind::OpenCloud), &sealed), None);
        assert_eq!(SecretsKey::generate().open(&context(1, CredentialKind::Linker), &sealed), None);
        // Two seals of one secret differ (a fresh nonce each).
        assert_ne!(sealed, key.seal(&context(1, CredentialKind::Linker), "s3cret"));
    }

    #[test]
    fn a_bad_secrets_key_is_refused_without_quoting_it() {
        let err = SecretsKey::parse(SECRETS_KEY_VAR, "not base64 at all!").unwrap_err();
        assert!(err.contains(SECRETS_KEY_VAR) && !err.contains("at all"), "{err}");
        let short = B64.encode([7u8; 16]);
        let err = SecretsKey::parse(SECRETS_KEY_VAR, &short).unwrap_err();
        assert!(err.contains("32 bytes") && err.contains("not 16"), "{err}");
        let key = SecretsKey::generate();
        assert!(SecretsKey::parse(SECRETS_KEY_VAR, &key.to_base64()).is_ok());
    }
}
