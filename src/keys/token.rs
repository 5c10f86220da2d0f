//! The API key token: generation, parsing and hashing.
//!
//! A token is `{prefix}_{env}_{random}{checksum}` where `random` is 32 base62
//! characters from the OS CSPRNG and `checksum` is the CRC-32 (IEEE, as in
//! zlib) of everything before it, written as 6 base62 digits, most significant
//! first, left-padded with `0`.
//!
//! **This format is a contract with every key already issued.** Changing the
//! alphabet, the lengths or the checksum makes every issued key `malformed`.
//! Only the SHA-256 of a token is ever stored ([`KeyHash`]); the plaintext
//! ([`PlainKey`]) exists once, at creation or rotation, and its `Debug` is
//! redacted so it cannot leak through a log line by accident.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::Environment;

/// The base62 alphabet, in the order the checksum digits use.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a token.
pub const RANDOM_LEN: usize = 32;
/// Checksum characters at the end of a token.
pub const CHECKSUM_LEN: usize = 6;
/// Characters of a token shown as its display prefix (`gk_live_Ab3d`).
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A full token in plaintext. Exists only between generation and the one
/// reply that shows it; never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// The secret itself, for the one place allowed to show it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token: the only form that is stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The first 12 characters, safe to show and store.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainKey({}…redacted)", self.display_prefix())
    }
}

/// SHA-256 of a whole token. Lookups compare hashes, so timing reveals
/// nothing about how much of a secret matched.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Why a string is not a well-formed token. Decided without any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the key does not start with the expected prefix")]
    Prefix,
    #[error("the key's environment is neither live nor test")]
    Environment,
    #[error("the key has the wrong length or characters")]
    Shape,
    #[error("the key's checksum does not match (mistyped or truncated)")]
    Checksum,
}

/// Makes a new token for `prefix` and `env` from the OS CSPRNG.
pub fn generate(prefix: &str, env: Environment) -> PlainKey {
    let random: String = OsRng.sample_iter(&Alphanumeric).take(RANDOM_LEN).map(char::from).collect();
    let body = format!("{prefix}_{}_{random}", env.as_str());
    let checksum = checksum(&body);
    PlainKey(format!("{body}{checksum}"))
}

/// Checks a presented token's shape and checksum; returns its environment.
pub fn parse(prefix: &str, token: &str) -> Result<Environment, Malformed> {
    let rest = token.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')).ok_or(Malformed::Prefix)?;
    // Byte comparisons, no search: every request parses one.
    let (env, tail) = match rest.as_bytes().get(..5) {
        Some(b"live_") => (Environment::Live, &rest[5..]),
        Some(b"test_") => (Environment::Test, &rest[5..]),
        _ => return Err(Malformed::Environment),
    };
    if tail.len() != RANDOM_LEN + CHECKSUM_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Malformed::Shape);
    }
    let (body, sum) = token.split_at(token.len() - CHECKSUM_LEN);
    if checksum_digits(body) != sum.as_bytes() {
        return Err(Malformed::Checksum);
    }
    Ok(env)
}

/// CRC-32 of `body` as 6 base62 digits.
pub fn checksum(body: &str) -> String {
    String::from_utf8(checksum_digits(body).to_vec()).expect("base62 digits are ASCII")
}

/// [`checksum`] without an allocation (every request checks one): the
/// CRC-32 in base62, most significant digit first, left-padded with '0'.
fn checksum_digits(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// `len` random base62 characters from the OS CSPRNG (public ids).
pub fn random_base62(len: usize) -> String {
    OsRng.sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python:
    //   zlib.crc32(b"gk_live_" + b"A"*32) == 2709908375 -> base62 "2xOUxb"
    const LIVE_A: &str = "gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxb";
    const TEST_A: &str = "gk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0KIJjm";
    const LIVE_MIXED: &str = "gk_live_0123456789abcdefghijABCDEFGHIJkl0PtfOB";
    const TEST_MIXED: &str = "gk_test_0123456789abcdefghijABCDEFGHIJkl338gq2";

    #[test]
    fn checksum_matches_zlib_crc32_vectors() {
        assert_eq!(checksum(&LIVE_A[..40]), "2xOUxb");
        assert_eq!(checksum(&TEST_A[..40]), "0KIJjm");
        assert_eq!(checksum(&LIVE_MIXED[..40]), "0PtfOB");
        assert_eq!(checksum(&TEST_MIXED[..40]), "338gq2");
    }

    #[test]
    fn parse_accepts_known_good_tokens() {
        assert_eq!(parse("gk", LIVE_A), Ok(Environment::Live));
        assert_eq!(parse("gk", TEST_A), Ok(Environment::Test));
        assert_eq!(parse("gk", LIVE_MIXED), Ok(Environment::Live));
        assert_eq!(parse("gk", TEST_MIXED), Ok(Environment::Test));
    }

    #[test]
    fn parse_rejects_bad_tokens_without_io() {
        let cases = [
            ("", Malformed::Prefix),
            ("xx_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxb", Malformed::Prefix),
            ("gk_prod_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxb", Malformed::Environment),
            ("gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUx", Malformed::Shape),
            ("gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxbb", Malformed::Shape),
            ("gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-2xOUxb", Malformed::Shape),
            ("gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB2xOUxb", Malformed::Checksum),
            ("gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxc", Malformed::Checksum),
            ("gk_live_ÄAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUx", Malformed::Shape),
        ];
        for (token, want) in cases {
            assert_eq!(parse("gk", token), Err(want), "token {token:?}");
        }
    }

    #[test]
    fn generated_tokens_match_the_spec_shape_and_parse() {
        let re = regex::Regex::new(r"^gk_(live|test)_[0-9A-Za-z]{38}$").unwrap();
        for env in [Environment::Live, Environment::Test] {
            let key = generate("gk", env);
            assert!(re.is_match(key.expose()), "{}", key.expose());
            assert_eq!(key.expose().len(), 46);
            assert_eq!(parse("gk", key.expose()), Ok(env));
            assert_eq!(key.display_prefix().len(), 12);
        }
        assert_ne!(generate("gk", Environment::Live), generate("gk", Environment::Live));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = generate("gk", Environment::Live);
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(&key.expose()[12..]), "{shown}");
    }

    #[test]
    fn hash_is_sha256_of_the_whole_token() {
        // python3 -c "import hashlib;print(hashlib.sha256(b'gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxb').hexdigest()[:8])"
        let h = KeyHash::of(LIVE_A);
        assert_eq!(format!("{:02x}{:02x}{:02x}{:02x}", h.0[0], h.0[1], h.0[2], h.0[3]), SHA_PREFIX);
    }
    const SHA_PREFIX: &str = "5f4ca532";
}
