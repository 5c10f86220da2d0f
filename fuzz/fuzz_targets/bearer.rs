//! `http::bearer`, the `Authorization: Bearer <token>` reader, against the
//! plain rule (visible ASCII; trim; split at the first space; scheme
//! `bearer` in any case; the rest trimmed and not empty). Only the first
//! `Authorization` value counts; what it returns reads back the same.
//!
//! Input: the first header value, optionally a NUL and a second value.

#![no_main]

use guildkey::http::bearer;
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(value) = HeaderValue::from_bytes(first) else { return };
    let mut headers = HeaderMap::new();
    headers.append(header::AUTHORIZATION, value);
    if let Some(Ok(second)) = second.map(HeaderValue::from_bytes) {
        headers.append(header::AUTHORIZATION, second);
    }
    let got = bearer(&headers);
    assert_eq!(got, reference(first), "{:?}", String::from_utf8_lossy(first));
    if let Some(token) = got {
        assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t'));
        assert_eq!(token, token.trim(), "{token:?} is not trimmed");
        let mut again = HeaderMap::new();
        again.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        assert_eq!(bearer(&again), Some(token), "{token:?} does not read back");
    }
});

fn reference(raw: &[u8]) -> Option<&str> {
    if !raw.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
