//! GitHub's signature on a leaked-token report (`POST /v1/leaked`): GitHub
//! secret scanning signs each partner alert with ECDSA P-256 over SHA-256
//! of the raw body, names the key in `Github-Public-Key-Identifier` and
//! sends the DER signature, base64, in `Github-Public-Key-Signature`. The
//! public keys are GitHub's document at
//! `https://api.github.com/meta/public_keys/secret_scanning`
//! (`{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}`),
//! read from the file the operator names (`leaks.github_public_keys_file`)
//! and refreshed from `leaks.github_public_keys_url` where the network
//! allows (`tasks::github_keys`; a failure is logged and the file kept).
//!
//! Why a report is refused goes to the log, never into the answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

/// The header naming the key GitHub signed with.
pub const KEY_ID_HEADER: &str = "github-public-key-identifier";
/// The header holding the signature (base64 of its DER form).
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";
/// The document's size limit (GitHub's is a few KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// How long a refresh may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a report's signature was refused (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    UnknownKey,
    Malformed,
    Mismatch,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unsigned => "the report carries no Github-Public-Key-Identifier or Github-Public-Key-Signature",
            Self::UnknownKey => "the report names a key GitHub's document (as last read) does not hold",
            Self::Malformed => "the report's signature is not base64 of a DER ECDSA signature",
            Self::Mismatch => "the report's signature does not match its body",
        })
    }
}

/// GitHub's secret-scanning public keys, by identifier.
pub struct GithubKeys {
    file: PathBuf,
    keys: RwLock<HashMap<String, VerifyingKey>>,
}

impl GithubKeys {
    /// Reads the operator's file; an unreadable or malformed file, or one
    /// with no key, is an error naming it (the process does not start).
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        let keys = parse_document(&text)
            .with_context(|| format!("{} is not GitHub's public keys document", file.display()))?;
        tracing::info!(keys = keys.len(), file = %file.display(), "GitHub's secret-scanning keys loaded; leak reports must carry GitHub's signature");
        Ok(Self { file: file.to_owned(), keys: RwLock::new(keys) })
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.read().expect("github keys lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks GitHub's signature over the raw `body`. Any key of the
    /// document is accepted, current or not (GitHub signs with an older
    /// one while it rotates).
    pub fn verify(&self, key_id: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else { return Err(Refusal::Unsigned) };
        let key = self.keys.read().expect("github keys lock poisoned").get(key_id.trim()).copied();
        let key = key.ok_or(Refusal::UnknownKey)?;
        let der = base64::engine::general_purpose::STANDARD.decode(signature.trim()).map_err(|_| Refusal::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| Refusal::Malformed)?;
        key.verify(body, &signature).map_err(|_| Refusal::Mismatch)
    }

    /// Reads the document from `url`; on success the keys are replaced and
    /// the file rewritten (so a restart without network has them). Returns
    /// how many keys it holds.
    pub async fn refresh(&self, client: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
        let answer = client
            .get(url)
            .header("accept", "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .context("GitHub could not be reached")?;
        let status = answer.status();
        anyhow::ensure!(status.is_success(), "GitHub answered {status}");
        let body = answer.bytes().await.context("GitHub's answer was cut off")?;
        anyhow::ensure!(body.len() <= MAX_DOCUMENT_BYTES, "GitHub's answer is larger than {MAX_DOCUMENT_BYTES} bytes");
        let keys = parse_document(&body)?;
        let n = keys.len();
        *self.keys.write().expect("github keys lock poisoned") = keys;
        let tmp = self.file.with_extension("refreshing");
        if let Err(e) = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &self.file)) {
            tracing::warn!(error = %e, file = %self.file.display(), "refreshed GitHub's keys but could not rewrite the file; using them from memory");
        }
        Ok(n)
    }
}

/// The keys of GitHub's document, by identifier; an error if it holds none
/// or a key is not a P-256 public key in PEM.
pub fn parse_document(text: &[u8]) -> anyhow::Result<HashMap<String, VerifyingKey>> {
    #[derive(serde::Deserialize)]
    struct Document {
        public_keys: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        key_identifier: String,
        key: String,
    }
    let doc: Document = serde_json::from_slice(text).context("not a JSON object with a public_keys array")?;
    let keys = doc
        .public_keys
        .into_iter()
        .map(|e| {
            let key = VerifyingKey::from_public_key_pem(e.key.trim())
                .map_err(|_| anyhow::anyhow!("key {} is not a P-256 public key in PEM", e.key_identifier))?;
            Ok((e.key_identifier, key))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    anyhow::ensure!(!keys.is_empty(), "the document holds no key");
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePublicKey as _;

    fn signing_key(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 32]).unwrap()
    }

    fn document(keys: &[(&str, &SigningKey)]) -> String {
        let entries: Vec<_> = keys
            .iter()
            .map(|(id, k)| {
                let pem = k.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
                serde_json::json!({ "key_identifier": id, "key": pem, "is_current": true })
            })
            .collect();
        serde_json::json!({ "public_keys": entries }).to_string()
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    fn keys(doc: &str) -> GithubKeys {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("github.json");
        std::fs::write(&file, doc).unwrap();
        GithubKeys::load(&file).unwrap()
    }

    #[test]
    fn a_report_signed_by_any_listed_key_passes_and_nothing_else_does() {
        let (current, older, stranger) = (signing_key(1), signing_key(2), signing_key(3));
        let keys = keys(&document(&[("cur", &current), ("old", &older)]));
        let body = br#"[{"token":"gk_live_x","type":"guildkey","url":"https://github.com/o/r","source":"content"}]"#;
        assert_eq!(keys.verify(Some("cur"), Some(&sign(&current, body)), body), Ok(()));
        assert_eq!(keys.verify(Some("old"), Some(&sign(&older, body)), body), Ok(()), "a rotated key still counts");
        assert_eq!(keys.verify(Some("cur"), Some(&sign(&stranger, body)), body), Err(Refusal::Mismatch));
        assert_eq!(keys.verify(Some("cur"), Some(&sign(&current, body)), b"[]"), Err(Refusal::Mismatch));
        assert_eq!(keys.verify(Some("new"), Some(&sign(&current, body)), body), Err(Refusal::UnknownKey));
        assert_eq!(keys.verify(Some("cur"), Some("not base64!"), body), Err(Refusal::Malformed));
        assert_eq!(keys.verify(Some("cur"), Some("AAAA"), body), Err(Refusal::Malformed));
        assert_eq!(keys.verify(None, Some(&sign(&current, body)), body), Err(Refusal::Unsigned));
        assert_eq!(keys.verify(Some("cur"), None, body), Err(Refusal::Unsigned));
    }

    #[test]
    fn a_high_s_signature_as_go_makes_half_the_time_is_accepted() {
        let key = signing_key(4);
        let body = b"[]";
        let signed: Signature = key.sign(body);
        let (r, s) = signed.split_scalars();
        let flipped = Signature::from_scalars(r, -*s).unwrap();
        // `normalize_s` is `Some` for the high-S form: one of the two is.
        assert!(signed.normalize_s().is_some() != flipped.normalize_s().is_some());
        let keys = keys(&document(&[("k", &key)]));
        for form in [signed, flipped] {
            let der = base64::engine::general_purpose::STANDARD.encode(form.to_der().as_bytes());
            assert_eq!(keys.verify(Some("k"), Some(&der), body), Ok(()));
        }
    }

    #[test]
    fn a_document_without_keys_or_with_a_bad_key_is_refused() {
        assert!(parse_document(br#"{"public_keys": []}"#).is_err());
        assert!(parse_document(br#"{"public_keys": [{"key_identifier": "a", "key": "nope", "is_current": true}]}"#)
            .is_err());
        assert!(parse_document(b"[]").is_err());
        assert_eq!(parse_document(document(&[("a", &signing_key(5))]).as_bytes()).unwrap().len(), 1);
    }
}
