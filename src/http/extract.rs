//! Extractors whose rejections speak our envelope: JSON bodies, path ids
//! (Discord snowflakes), the query string, and the client's IP address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;

/// A request body, read whole within `http.max_body_bytes` but not yet
/// parsed: a handler checks the caller's scope and guild first (403 before
/// 400), then calls [`Body::optional_json`].
pub struct Body(axum::body::Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // The declared length was checked up front (`front.rs`); this bounds
        // a body that declared none (chunked) as it arrives.
        let limited = http_body_util::Limited::new(req.into_body(), state.max_body_bytes);
        let bytes = http_body_util::BodyExt::collect(limited).await.map(|b| b.to_bytes()).map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::PayloadTooLarge(state.max_body_bytes)
            } else {
                ApiError::BadRequest(format!("could not read the body: {e}"))
            }
        })?;
        Ok(Self(bytes))
    }
}

impl Body {
    /// An optional JSON object: empty means `None`; anything else must be a
    /// JSON object of `T` (any or no Content-Type, for simple clients). An
    /// array (or `null`, a string, a number) is refused, even where serde
    /// would read an array as a struct's fields in order.
    pub fn optional_json<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        let bytes = &self.0;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Ok(None),
            Some(b'{') => {}
            Some(_) => return Err(ApiError::BadRequest("the body must be a JSON object".to_owned())),
        }
        serde_json::from_slice(bytes).map(Some).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
    }
}

impl Body {
    /// The body as received (what a signature is over).
    pub fn raw(&self) -> &[u8] {
        &self.0
    }

    /// A JSON array of `T`, of at most `max` items (anything else is 400).
    pub fn json_array<T: DeserializeOwned>(&self, max: usize) -> Result<Vec<T>, ApiError> {
        if self.0.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
            return Err(ApiError::BadRequest("the body must be a JSON array".to_owned()));
        }
        let items: Vec<T> =
            serde_json::from_slice(&self.0).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))?;
        if items.len() > max {
            return Err(ApiError::BadRequest(format!("{} items sent; the most is {max}", items.len())));
        }
        Ok(items)
    }
}

/// The connection's peer, for the routes the front door admits without a
/// key (it puts it in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// `Query<T>` with the envelope on bad query strings.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
    }
}

/// `Path<T>` with the envelope when a segment cannot be decoded (bad
/// percent-encoding, or not UTF-8): `400 bad_request`, like a bad id.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
    }
}

/// The largest id accepted: snowflakes fit a signed 64-bit integer.
const MAX_SNOWFLAKE: u64 = i64::MAX as u64;

/// Parses a path segment as a Discord snowflake: a whole number from 1 to
/// `i64::MAX` in decimal, without a leading zero (ids are never written with
/// one). [`snowflake_pattern`] is the same rule for the OpenAPI document.
pub fn snowflake(what: &str, raw: &str) -> Result<u64, ApiError> {
    let digits = raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
    (digits && (1..=19).contains(&raw.len()))
        .then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|&id| id <= MAX_SNOWFLAKE)
        .ok_or_else(|| ApiError::BadRequest(format!("{what} must be a Discord id (a snowflake), not '{}'", short(raw))))
}

/// [`snowflake`]'s rule as a regular expression (ECMA-262, as OpenAPI
/// patterns are): 1 to 18 digits, or 19 that do not exceed `i64::MAX`.
pub fn snowflake_pattern() -> String {
    format!("^({})$", decimal_alternatives(MAX_SNOWFLAKE))
}

/// A member route's `user_id` as a regular expression: a snowflake, or
/// `roblox:` and a Roblox user id from 1 to 2^53 (`MemberId::parse`).
pub fn member_pattern() -> String {
    format!(
        "^({}|roblox:({}))$",
        decimal_alternatives(MAX_SNOWFLAKE),
        decimal_alternatives(crate::service::roblox::links::MAX_ROBLOX_ID)
    )
}

/// The whole numbers from 1 to `max` without a leading zero, as
/// alternatives of a regular expression.
fn decimal_alternatives(max: u64) -> String {
    let max = max.to_string();
    let n = max.len();
    let mut alternatives = vec![format!("[1-9][0-9]{{0,{}}}", n - 2)];
    // n digits: the first i of the maximum, then a smaller digit, then any.
    for (i, digit) in max.bytes().map(|b| b - b'0').enumerate() {
        let lowest = u8::from(i == 0);
        if digit > lowest {
            let any = match n - i - 1 {
                0 => String::new(),
                rest => format!("[0-9]{{{rest}}}"),
            };
            alternatives.push(format!("{}[{lowest}-{}]{any}", &max[..i], digit - 1));
        }
    }
    alternatives.push(max);
    alternatives.join("|")
}

/// At most 32 characters of a caller's input, for an error message.
pub fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Whose `X-Forwarded-For` is believed: `http.trust_forwarded_for` and
/// `http.trusted_proxies`.
pub enum Forwarding {
    /// The header is ignored: the client is the socket peer.
    Ignored,
    /// Any peer's header is believed (its right-most entry): the behaviour of
    /// `trust_forwarded_for` alone, which `guildkey config check` warns about.
    AnyPeer,
    /// Only these peers' headers are believed; the client is the right-most
    /// entry that is not itself one of them.
    From(Box<[IpNet]>),
}

impl Forwarding {
    pub fn new(trust_forwarded_for: bool, trusted_proxies: &[IpNet]) -> Self {
        match (trust_forwarded_for, trusted_proxies) {
            (false, _) => Self::Ignored,
            (true, []) => Self::AnyPeer,
            (true, nets) => Self::From(nets.into()),
        }
    }

    /// The caller's IP. Entries are read right to left (the right-most was
    /// written by the proxy nearest to us; those further left are what the
    /// previous hop claimed, and could be forged). Reading stops at the first
    /// entry that is not an address (some proxies add a port, which is
    /// accepted): the last address read stands, never an entry further left.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let proxies = match self {
            Self::Ignored => return peer.ip(),
            Self::AnyPeer => &[][..],
            Self::From(nets) => {
                if !is_in(nets, peer.ip()) {
                    return peer.ip();
                }
                &nets[..]
            }
        };
        let mut client = peer.ip();
        // A value that is not visible ASCII reads as one entry that is not an address.
        let entries =
            headers.get_all("x-forwarded-for").iter().rev().flat_map(|v| v.to_str().unwrap_or("?").rsplit(','));
        for entry in entries {
            let entry = entry.trim();
            let Ok(ip) = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip())) else {
                break;
            };
            client = ip;
            if !is_in(proxies, ip) {
                break;
            }
        }
        client
    }
}

/// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 one) is in `nets`.
fn is_in(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snowflake_pattern_accepts_exactly_what_the_extractor_accepts() {
        let pattern = regex::Regex::new(&snowflake_pattern()).unwrap();
        let max = i64::MAX.to_string();
        let edges = ["1", "9", "10", "0", "00", "01", "007", "", "-1", "+1", " 1", "1 ", "1e5", "12.5", "１"];
        let near_max =
            [max.clone(), (MAX_SNOWFLAKE + 1).to_string(), (MAX_SNOWFLAKE - 1).to_string(), u64::MAX.to_string()];
        let lengths =
            ["1".repeat(18), "9".repeat(18), "1".repeat(19), "9".repeat(19), "1".repeat(20), format!("0{max}")];
        for raw in edges.iter().map(|s| s.to_string()).chain(near_max).chain(lengths) {
            assert_eq!(pattern.is_match(&raw), snowflake("id", &raw).is_ok(), "{raw:?}");
        }
        assert!(snowflake("id", "1100000000000000001").is_ok_and(|id| id == 1_100_000_000_000_000_001));
    }

    proptest::proptest! {
        #[test]
        fn the_snowflake_pattern_and_the_extractor_agree_on_numbers(n in proptest::prelude::any::<u64>(), zeros in 0usize..2) {
            let pattern = regex::Regex::new(&snowflake_pattern()).unwrap();
            let raw = format!("{}{n}", "0".repeat(zeros));
            proptest::prop_assert_eq!(pattern.is_match(&raw), snowflake("id", &raw).is_ok(), "{}", raw);
        }

        #[test]
        fn the_snowflake_pattern_and_the_extractor_agree_on_digit_strings(raw in "[0-9]{0,21}") {
            let pattern = regex::Regex::new(&snowflake_pattern()).unwrap();
            proptest::prop_assert_eq!(pattern.is_match(&raw), snowflake("id", &raw).is_ok(), "{}", raw);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_member_pattern_and_the_member_parser_agree(n in proptest::prelude::any::<u64>(), zeros in 0usize..2, roblox: bool) {
            use crate::service::roblox::links::{MemberId, MAX_ROBLOX_ID};
            let pattern = regex::Regex::new(&member_pattern()).unwrap();
            let n = if roblox { n % (MAX_ROBLOX_ID * 2) } else { n };
            let raw = format!("{}{}{n}", if roblox { "roblox:" } else { "" }, "0".repeat(zeros));
            proptest::prop_assert_eq!(pattern.is_match(&raw), MemberId::parse(&raw).is_ok(), "{}", raw);
        }
    }

    #[test]
    fn the_member_pattern_takes_roblox_ids_up_to_2_pow_53() {
        let pattern = regex::Regex::new(&member_pattern()).unwrap();
        for ok in ["roblox:1", "roblox:9007199254740992", "1100000000000000001"] {
            assert!(pattern.is_match(ok), "{ok}");
        }
        for bad in ["roblox:0", "roblox:9007199254740993", "roblox:", "roblox:01", "Roblox:1", "roblox:1 "] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    fn ip(forwarding: &Forwarding, peer: [u8; 4], headers: &[&str]) -> String {
        let mut req = axum::http::Request::builder();
        for h in headers {
            req = req.header("x-forwarded-for", *h);
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        forwarding.client_ip(&parts.headers, SocketAddr::from((peer, 4000))).to_string()
    }

    #[test]
    fn only_the_right_most_forwarded_entry_is_trusted() {
        let peer = [192, 0, 2, 1];
        for (headers, trust, want) in [
            (&["203.0.113.7"][..], false, "192.0.2.1"),
            (&["203.0.113.7"], true, "203.0.113.7"),
            (&["10.0.0.1, 203.0.113.7"], true, "203.0.113.7"),
            (&["10.0.0.1", "203.0.113.7"], true, "203.0.113.7"),
            (&["203.0.113.7:4711"], true, "203.0.113.7"),
            (&["[2001:db8::1]:4711"], true, "2001:db8::1"),
            (&[" 2001:db8::1 "], true, "2001:db8::1"),
            // A forged entry must never win because the real one is odd.
            (&["10.0.0.1, unknown"], true, "192.0.2.1"),
            (&["10.0.0.1, "], true, "192.0.2.1"),
            (&["10.0.0.1", ""], true, "192.0.2.1"),
            (&[], true, "192.0.2.1"),
        ] {
            assert_eq!(ip(&Forwarding::new(trust, &[]), peer, headers), want, "{headers:?} trusted={trust}");
        }
    }

    #[test]
    fn with_trusted_proxies_only_they_may_forward_and_the_client_is_the_first_untrusted_entry_from_the_right() {
        let nets: Vec<IpNet> = ["10.0.0.0/8", "2001:db8:aa::/48"].iter().map(|n| n.parse().unwrap()).collect();
        let forwarding = Forwarding::new(true, &nets);
        let (proxy, stranger) = ([10, 1, 2, 3], [192, 0, 2, 1]);
        for (peer, headers, want) in [
            // A peer outside the list: its header is ignored, whatever it says.
            (stranger, &["203.0.113.7"][..], "192.0.2.1"),
            (stranger, &["10.0.0.9"], "192.0.2.1"),
            (proxy, &["203.0.113.7"], "203.0.113.7"),
            (proxy, &["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
            // Proxies in front of the client are skipped, right to left.
            (proxy, &["198.51.100.1, 203.0.113.7, 10.9.9.9"], "203.0.113.7"),
            (proxy, &["203.0.113.7", "10.9.9.9, 2001:db8:aa::1"], "203.0.113.7"),
            // Every entry a proxy: the left-most one read.
            (proxy, &["10.7.7.7, 10.9.9.9"], "10.7.7.7"),
            // An entry that is not an address ends the reading.
            (proxy, &["203.0.113.7, garbage, 10.9.9.9"], "10.9.9.9"),
            (proxy, &["203.0.113.7, garbage"], "10.1.2.3"),
            (proxy, &[], "10.1.2.3"),
        ] {
            assert_eq!(ip(&forwarding, peer, headers), want, "peer {peer:?}, {headers:?}");
        }
        // A v4 proxy reached over an IPv4-mapped IPv6 socket is still a proxy.
        let mut req = axum::http::Request::builder().header("x-forwarded-for", "203.0.113.7");
        req = req.header("x-other", "1");
        let (parts, ()) = req.body(()).unwrap().into_parts();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:4000".parse().unwrap();
        assert_eq!(forwarding.client_ip(&parts.headers, mapped).to_string(), "203.0.113.7");
        // Off: the header is ignored even from a listed proxy.
        assert_eq!(ip(&Forwarding::new(false, &nets), proxy, &["203.0.113.7"]), "10.1.2.3");
    }
}
