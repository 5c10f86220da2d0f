//! `keys::token::parse` with the default prefix, against a plain reading of
//! SPEC §3 (its own CRC-32 and base62), plus round trips: a token built from
//! the input's bytes and one from `generate` always parse, and changing any
//! one character of them is always refused.

#![no_main]

use guildkey::keys::token::{self, BASE62, CHECKSUM_LEN, RANDOM_LEN};
use guildkey::keys::Environment;
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "gk";

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(token::parse(PREFIX, s).ok(), reference(s), "parse and the plain rule disagree on {s:?}");
    }

    // A token whose random part is made from the input always parses; so
    // does a freshly generated one; one changed character never does.
    let env = if data.first().is_some_and(|b| b & 1 == 1) { Environment::Test } else { Environment::Live };
    let random: String = (0..RANDOM_LEN)
        .map(|i| BASE62[usize::from(data.get(i + 1).copied().unwrap_or(i as u8)) % 62] as char)
        .collect();
    let body = format!("{PREFIX}_{}_{random}", env.as_str());
    let built = format!("{body}{}", token::checksum(&body));
    let generated = token::generate(PREFIX, env);
    for good in [built.as_str(), generated.expose()] {
        assert_eq!(token::parse(PREFIX, good), Ok(env), "a well-formed token is refused: {good:?}");
        let Some(&pos) = data.get(RANDOM_LEN + 1) else { continue };
        let pos = usize::from(pos) % good.len();
        let replacement = data.get(RANDOM_LEN + 2).copied().unwrap_or(b'x');
        if replacement.is_ascii() && replacement != good.as_bytes()[pos] {
            let mut bad = good.as_bytes().to_vec();
            bad[pos] = replacement;
            let bad = String::from_utf8(bad).expect("ASCII for ASCII");
            assert!(token::parse(PREFIX, &bad).is_err(), "one changed character is accepted: {bad:?}");
        }
    }
});

/// SPEC §3 read plainly: `gk_`, `live` or `test`, `_`, 38 ASCII letters or
/// digits, the last 6 the CRC-32 (zlib) of the rest in base62.
fn reference(s: &str) -> Option<Environment> {
    let rest = s.strip_prefix("gk_")?;
    let env = match rest.get(..5)? {
        "live_" => Environment::Live,
        "test_" => Environment::Test,
        _ => return None,
    };
    let tail = &rest[5..];
    if tail.len() != RANDOM_LEN + CHECKSUM_LEN || !tail.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let (body, sum) = s.split_at(s.len() - CHECKSUM_LEN);
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut want = Vec::new();
    for _ in 0..CHECKSUM_LEN {
        want.push(BASE62[(n % 62) as usize]);
        n /= 62;
    }
    want.reverse();
    (want == sum.as_bytes()).then_some(env)
}
