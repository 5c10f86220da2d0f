//! Leaked secrets: a report that a token turned up where it should not (a
//! public repository, a Discord message) revokes its key at once, whoever
//! reports it; [`find_tokens`] finds our tokens in text.

use super::{Error, KeyService, Result};
use crate::audit::Actor;
use crate::keys::{token, KeyStatus};

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

/// The longest `source` a report may name (characters).
pub const MAX_SOURCE_CHARS: usize = 100;
/// The longest `url` a report may name (characters).
pub const MAX_URL_CHARS: usize = 200;

impl LeakReport {
    /// Refuses a report whose `source` or `url` is longer than the audit
    /// post shows (both are the reporter's words, shown to the server's
    /// admins as guildkey's own entry).
    pub fn validate(&self) -> Result<()> {
        for (field, value, max) in [("source", &self.source, MAX_SOURCE_CHARS), ("url", &self.url, MAX_URL_CHARS)] {
            let len = value.as_deref().map_or(0, |v| v.chars().count());
            if len > max {
                return Err(Error::Invalid(crate::keys::InvalidInput::new(
                    field,
                    format!("is {len} characters long; the most is {max}"),
                )));
            }
        }
        Ok(())
    }
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

impl KeyService {
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
            let now_ms = self.inner.clock.now_ms();
            // A rotated-out secret past its grace is no longer the key's:
            // it matches nothing, so reporting it revokes nothing.
            let Some(key) = self.find_secret(&report.token, now_ms) else { continue };
            if key.status_at_ms(now_ms) == KeyStatus::Revoked {
                continue;
            }
            let details = serde_json::json!({
                "why": "its secret was reported as leaked; guildkey revoked it at once",
                "source": report.source.as_deref().map(|s| clip(s, MAX_SOURCE_CHARS)),
                "url": report.url.as_deref().map(|u| clip(u, MAX_URL_CHARS)),
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
