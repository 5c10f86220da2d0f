//! Authentication for every `/v1` route, as one middleware: the IP throttle,
//! the bearer token, the service's verification (memory only), the key's
//! rate limit, and the `X-RateLimit-*` headers on every authenticated
//! response. Handlers then take the verified caller with [`Caller`].

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::client_ip;
use super::AppState;
use crate::service::{Authenticated, Error};

/// The verified key making this request.
pub struct Caller(pub Authenticated);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Authenticated>().cloned().map(Caller).ok_or(ApiError::MissingKey)
    }
}

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub async fn require_key(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = client_ip(&parts, state.trust_forwarded_for);
    let outcome = |reason: &str| state.metrics.verifications.with_label_values(&[reason]).inc();

    if let Some(wait) = state.throttle.blocked_for(ip) {
        outcome("rate_limited");
        return ApiError::Service(Error::RateLimited { retry_after_secs: wait }).into_response();
    }
    let Some(token) = bearer(&parts.headers) else {
        outcome("missing_key");
        return ApiError::MissingKey.into_response();
    };
    let caller = match state.service.authenticate(token, ip) {
        Ok(caller) => caller,
        Err(e) => {
            let failure = ApiError::Service(e);
            outcome(failure.status_reason().1);
            if matches!(failure, ApiError::Service(Error::Malformed(_) | Error::NotFound(_))) {
                if let Some(wait) = state.throttle.record_failure(ip) {
                    tracing::warn!(%ip, "too many failed authentications; throttling this address");
                    return ApiError::Service(Error::RateLimited { retry_after_secs: wait }).into_response();
                }
            }
            return failure.into_response();
        }
    };
    let budget = super::ratelimit::check(caller.key.limiter(), caller.key.rate_limit_per_minute);
    let mut response = match budget.retry_after_secs {
        Some(wait) => {
            outcome("rate_limited");
            ApiError::Service(Error::RateLimited { retry_after_secs: wait }).into_response()
        }
        None => {
            state.metrics.verified_ok.inc();
            parts.extensions.insert(caller);
            req = Request::from_parts(parts, body);
            next.run(req).await
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(budget.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(budget.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(budget.reset_secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_are_refused() {
        let mut h = HeaderMap::new();
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer   ", None),
            ("abc", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(bearer(&h), want, "{value:?}");
        }
    }
}
