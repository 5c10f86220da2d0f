//! Extractors whose rejections speak our envelope: JSON bodies, path ids
//! (Discord snowflakes), the query string, and the client's IP address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;

/// An optional JSON body: empty means `None`; anything else must be valid
/// JSON of `T` (any or no Content-Type, for simple clients).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
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
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| Self(Some(v)))
            .map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
    }
}

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

/// Parses a path segment as a Discord snowflake: 1–20 digits, non-zero,
/// within a signed 64-bit integer.
pub fn snowflake(what: &str, raw: &str) -> Result<u64, ApiError> {
    let ok = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|&id| id > 0 && id <= i64::MAX as u64)
        .ok_or_else(|| ApiError::BadRequest(format!("{what} must be a Discord id (a snowflake), not '{}'", short(raw))))
}

/// At most 32 characters of a caller's input, for an error message.
pub fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// The caller's IP: the socket peer, or with `http.trust_forwarded_for` the
/// right-most entry of `X-Forwarded-For` (the one the trusted proxy saw;
/// entries to its left are client-supplied and could be forged). Only that
/// entry counts: if it is not an address (some proxies add a port, which is
/// accepted), the socket peer is used, never an entry further left.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let right_most = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|s| s.parse::<IpAddr>().or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip())).ok());
        if let Some(ip) = right_most {
            return ip;
        }
    }
    peer.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_most_forwarded_entry_is_trusted() {
        let peer = SocketAddr::from(([192, 0, 2, 1], 4000));
        let ip = |headers: &[&str], trust: bool| {
            let mut req = axum::http::Request::builder();
            for h in headers {
                req = req.header("x-forwarded-for", *h);
            }
            let (parts, ()) = req.body(()).unwrap().into_parts();
            client_ip(&parts.headers, peer, trust).to_string()
        };
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
            assert_eq!(ip(headers, trust), want, "{headers:?} trusted={trust}");
        }
    }
}
