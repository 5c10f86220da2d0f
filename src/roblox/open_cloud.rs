//! Roblox Open Cloud: MessagingService publish, user restrictions, Secrets.
//!
//! Every call carries the guild's Open Cloud key in `x-api-key` (never in a
//! URL, a log line or an error). Answers are read as Roblox documents them:
//! v2 errors `{"code", "message"}`, the Secrets store's `ProblemDetails`,
//! the gateway's `{"errors": [{"message"}]}`; 429 (and 503 with
//! `Retry-After`) is [`OutsideError::Limited`].

use std::time::Duration;

use serde_json::{json, Value};

use super::{client, retry_after, OutsideError};
use crate::config::Secret;

const SERVICE: &str = "Roblox Open Cloud";
/// A call's whole budget.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The restriction the Ban API holds for a user in a universe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    pub active: bool,
}

/// A universe's Secrets public key (X25519) and its id.
#[derive(Debug, Clone)]
pub struct UniverseKey {
    pub key_id: String,
    pub public_key: [u8; 32],
}

/// The Open Cloud client, on `roblox.open_cloud_base_url`. Cheap to clone.
#[derive(Clone)]
pub struct OpenCloud {
    base: String,
    http: reqwest::Client,
}

impl OpenCloud {
    pub fn new(base_url: &str) -> Self {
        Self { base: base_url.trim_end_matches('/').to_owned(), http: client(TIMEOUT) }
    }

    async fn call(
        &self,
        key: &Secret,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, OutsideError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("x-api-key", key.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| OutsideError::Unavailable {
            service: SERVICE,
            message: if e.is_timeout() { "timed out".to_owned() } else { "could not be reached".to_owned() },
        })?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return Ok(json);
        }
        if status == 429 || (status == 503 && wait.is_some()) {
            return Err(OutsideError::Limited { service: SERVICE, retry_after_secs: wait.unwrap_or(60) });
        }
        let message = json.as_ref().map(error_message).unwrap_or_default();
        if status >= 500 {
            return Err(OutsideError::Unavailable { service: SERVICE, message: format!("HTTP {status} {message}") });
        }
        Err(OutsideError::Refused { service: SERVICE, status, message })
    }

    /// Publishes `message` on `topic` to the universe's live servers.
    pub async fn publish(&self, key: &Secret, universe: u64, topic: &str, message: &str) -> Result<(), OutsideError> {
        let path = format!("/cloud/v2/universes/{universe}:publishMessage");
        self.call(key, reqwest::Method::POST, &path, Some(&json!({"topic": topic, "message": message}))).await?;
        Ok(())
    }

    /// The user's restriction in the universe (inactive when none).
    pub async fn restriction(&self, key: &Secret, universe: u64, user: u64) -> Result<Restriction, OutsideError> {
        let path = format!("/cloud/v2/universes/{universe}/user-restrictions/{user}");
        let body = self.call(key, reqwest::Method::GET, &path, None).await?.unwrap_or_default();
        Ok(Restriction { active: body["gameJoinRestriction"]["active"].as_bool().unwrap_or(false) })
    }

    /// Bans (`active`) or lifts the ban of a user in the universe: Roblox
    /// kicks a joined player. The whole `gameJoinRestriction` at once, as
    /// the Ban API requires; no duration (permanent until lifted).
    pub async fn restrict(
        &self,
        key: &Secret,
        universe: u64,
        user: u64,
        active: bool,
        private_reason: &str,
    ) -> Result<(), OutsideError> {
        let path = format!("/cloud/v2/universes/{universe}/user-restrictions/{user}?updateMask=gameJoinRestriction");
        let mut restriction = json!({"active": active});
        if active {
            restriction["displayReason"] = json!("You are banned from this community's Discord server.");
            restriction["privateReason"] = json!(private_reason.chars().take(1000).collect::<String>());
            restriction["excludeAltAccounts"] = json!(false);
        }
        self.call(key, reqwest::Method::PATCH, &path, Some(&json!({"gameJoinRestriction": restriction}))).await?;
        Ok(())
    }

    /// The universe's Secrets public key.
    pub async fn public_key(&self, key: &Secret, universe: u64) -> Result<UniverseKey, OutsideError> {
        let path = format!("/cloud/v2/universes/{universe}/secrets/public-key");
        let body = self.call(key, reqwest::Method::GET, &path, None).await?.unwrap_or_default();
        use base64::Engine as _;
        let bad = |what: &str| OutsideError::Unavailable { service: SERVICE, message: format!("answered {what}") };
        let raw = body["secret"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| bad("no public key"))?;
        let public_key: [u8; 32] = raw.try_into().map_err(|_| bad("a public key that is not 32 bytes"))?;
        let key_id = body["key_id"].as_str().ok_or_else(|| bad("no key_id"))?.to_owned();
        Ok(UniverseKey { key_id, public_key })
    }

    /// Writes a sealed secret: creates it, or updates it if it exists.
    pub async fn put_secret(
        &self,
        key: &Secret,
        universe: u64,
        id: &str,
        sealed_base64: &str,
        key_id: &str,
        domain: Option<&str>,
    ) -> Result<(), OutsideError> {
        let create = json!({"id": id, "secret": sealed_base64, "key_id": key_id, "domain": domain});
        let path = format!("/cloud/v2/universes/{universe}/secrets");
        match self.call(key, reqwest::Method::POST, &path, Some(&create)).await {
            Err(OutsideError::Refused { status: 409, .. }) => {
                let update = json!({"secret": sealed_base64, "key_id": key_id, "domain": domain});
                let path = format!("/cloud/v2/universes/{universe}/secrets/{id}");
                self.call(key, reqwest::Method::PATCH, &path, Some(&update)).await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// What an error body says, in any of Roblox's three shapes.
fn error_message(v: &Value) -> String {
    let text = v["message"]
        .as_str()
        .or_else(|| v["detail"].as_str())
        .or_else(|| v["title"].as_str())
        .or_else(|| v["errors"][0]["message"].as_str())
        .unwrap_or_default();
    let code = v["code"].as_str().unwrap_or_default();
    let text: String = text.chars().take(300).collect();
    match (code.is_empty(), text.is_empty()) {
        (false, false) => format!("{code}: {text}"),
        (false, true) => code.to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_roblox_shape_are_read() {
        assert_eq!(error_message(&json!({"code": "INVALID_ARGUMENT", "message": "bad"})), "INVALID_ARGUMENT: bad");
        assert_eq!(error_message(&json!({"title": "Forbidden", "detail": "no"})), "no");
        assert_eq!(error_message(&json!({"errors": [{"code": 0, "message": "Invalid API Key"}]})), "Invalid API Key");
    }
}
