//! Signing, per Standard Webhooks: the secret (`whsec_` + base64, shown
//! once), a message's id and the `webhook-signature` header.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::SECRET_BYTES;

/// A webhook signing secret: `whsec_` + standard base64 of the key bytes.
/// Shown once; its `Debug` is masked.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` header for one attempt, per Standard Webhooks:
/// `v1,` + base64 of HMAC-SHA256, keyed with the secret's bytes (after
/// `whsec_`), over `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| anyhow::anyhow!("corrupt webhook secret (not base64)"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", b64.encode(mac.finalize().into_bytes())))
}

/// `msg_` + 27 random base62 characters: the `webhook-id` header.
pub(super) fn new_message_id() -> String {
    format!("msg_{}", crate::keys::token::random_base62(27))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_and_24_random_bytes() {
        let a = WebhookSecret::generate();
        let b64 = a.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap().len(), 24);
        assert_ne!(a.expose(), WebhookSecret::generate().expose());
        assert!(!format!("{a:?}").contains(b64));
    }
}
