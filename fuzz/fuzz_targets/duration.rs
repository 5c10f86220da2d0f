//! `keys::Ttl::parse` against a plain rule (trim, a positive whole number in
//! ASCII digits, one unit of s, m, h or d, at most ten years), and its
//! `Display` form parses back to the same length. Errors name the field and
//! quote a bounded amount of the input.

#![no_main]

use guildkey::keys::Ttl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Ttl::parse("expires_in", s) {
        Ok(ttl) => {
            assert_eq!(Some(ttl.seconds()), reference(s), "{s:?} was accepted");
            assert_eq!(Ttl::parse("expires_in", &ttl.to_string()), Ok(ttl), "Display of {s:?} does not parse back");
        }
        Err(e) => {
            assert_eq!(reference(s), None, "{s:?} was refused: {e}");
            assert_eq!(e.field, "expires_in");
            assert!(e.message.chars().count() < 200, "the error quotes too much: {} chars", e.message.chars().count());
        }
    }
});

/// The rule as the help text states it, in seconds; `None` when refused.
fn reference(s: &str) -> Option<i64> {
    let s = s.trim();
    let per_unit: u128 = match s.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 30 {
        return None;
    }
    let n: u128 = if significant.is_empty() { 0 } else { significant.parse().ok()? };
    let seconds = n * per_unit;
    (n > 0 && seconds <= Ttl::MAX_SECONDS as u128).then_some(seconds as i64)
}
