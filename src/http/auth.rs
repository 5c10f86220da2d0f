//! Authentication for every route that needs a key, run by the front door
//! (`front.rs`) before the router: the bearer token and the IP throttle
//! here; whether the key is admitted is the service's one answer
//! (`service::verify`: verification, the key's rate limit and budget),
//! mapped here to the error envelope and the `X-RateLimit-*` headers on
//! every authenticated response. Handlers then take the verified caller
//! with [`Caller`].

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::service::{Admission, Authenticated, Budget, Error};

/// The verified key making this request.
pub struct Caller(pub Authenticated);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Authenticated>().cloned().map(Caller).ok_or(ApiError::MissingKey)
    }
}

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    // `to_str` admits visible ASCII only, so ASCII trimming is all there is.
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim_ascii();
    let (scheme, token) = (value.get(..6)?, value.get(6..)?);
    let token = token.strip_prefix(' ')?.trim_ascii();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a request was not admitted, and the key's budget when its rate limit
/// was the reason (the refusal carries the budget headers too).
pub struct Refused {
    error: ApiError,
    budget: Option<Budget>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self { error, budget: None }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(budget) = &self.budget {
            set_budget_headers(&mut response, budget);
        }
        response
    }
}

/// A request that passed verification.
pub enum Admitted {
    /// Admitted, with the key's budget for the headers.
    Now(Authenticated, Budget),
    /// Verified, but the key's shared budget is being leased from the
    /// database: [`admit_leased`] decides once it is in (rare: a key's first
    /// request of a window on this instance).
    Later(Authenticated),
}

/// Admits a request to a route that needs a key, or refuses it: the bearer
/// token, then the service's answer ([`KeyService::admit`]: verification
/// and the key's rate limit, from memory), mapped to what the front door
/// writes. An admitted request gets the budget headers with
/// [`set_budget_headers`] on whatever the handler answers.
///
/// The address throttle (per IPv4 address or IPv6 /64) counts and refuses
/// refusals only: guesses, and a known key's refusals (revoked, expired,
/// suspended, outside its allow-list, over its rate limit). A key that
/// verifies is admitted even from a throttled address (game servers and
/// NATs share one), and the success path never touches the throttle. A
/// throttled address presenting no, a bad, an unknown or a refused key
/// gets 429.
///
/// [`KeyService::admit`]: crate::service::KeyService::admit
pub fn admit(state: &AppState, headers: &HeaderMap, ip: IpAddr) -> Result<Admitted, Refused> {
    // Two `Authorization` headers: which one is meant is anyone's guess.
    if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(unverified(
            state,
            ip,
            ApiError::BadRequest("send one Authorization header, not several".to_owned()),
        ));
    }
    let Some(token) = bearer(headers) else {
        return Err(unverified(state, ip, ApiError::MissingKey));
    };
    match state.service.admit(token, ip) {
        Admission::Leasing(caller) => Ok(Admitted::Later(caller)),
        Admission::Unverified(e) => {
            let counted = counts_towards_throttle(&e);
            let refused = unverified(state, ip, ApiError::Service(e));
            let throttled = matches!(refused.error, ApiError::Service(Error::RateLimited { .. }));
            // Guesses and a known key's refusals count towards the throttle
            // (those made while it holds do not).
            if counted && !throttled {
                if let Some(wait) = state.throttle.record_failure(ip) {
                    tracing::warn!(%ip, "too many refused requests; throttling this address");
                    return Err(ApiError::Service(Error::RateLimited { retry_after_secs: wait }).into());
                }
            }
            Err(refused)
        }
        limited => limited_or_admitted(state, Some(ip), limited).map(|(caller, budget)| Admitted::Now(caller, budget)),
    }
}

/// Whether a refusal counts towards the address throttle: a guess (a
/// malformed or unknown token) and a known key refused (revoked, expired,
/// suspended, outside its allow-list), so a dead key hammers no cheaper
/// than a guesser. A stale index is guildkey's fault, not the client's.
fn counts_towards_throttle(e: &Error) -> bool {
    matches!(
        e,
        Error::Malformed(_)
            | Error::NotFound(_)
            | Error::Revoked(_)
            | Error::Expired(_)
            | Error::Suspended(_)
            | Error::IpNotAllowed
    )
}

/// Finishes [`admit`] for a request it answered [`Admitted::Later`]: the
/// service's answer once the key's lease is in (at most
/// `service::lease::WAIT_FOR`).
pub async fn admit_leased(state: &AppState, caller: Authenticated) -> Result<(Authenticated, Budget), Refused> {
    // A key's first request of a window on this instance: not counted
    // towards the throttle (the next ones are).
    limited_or_admitted(state, None, state.service.admit_leased(caller).await)
}

/// A failure to verify: 429 while the address is throttled, else its own
/// answer.
fn unverified(state: &AppState, ip: IpAddr, failure: ApiError) -> Refused {
    let outcome = |reason: &str| state.metrics.verifications.with_label_values(&[reason]).inc();
    if let Some(wait) = state.throttle.blocked_for(ip) {
        outcome("rate_limited");
        return ApiError::Service(Error::RateLimited { retry_after_secs: wait }).into();
    }
    outcome(failure.status_reason().1);
    failure.into()
}

/// The answer for a verified key: admitted with its budget, or refused
/// over its rate limit (429 with the budget headers; the refusal counts
/// towards the address throttle, which a key that verifies and is within
/// its limit passes anyway).
fn limited_or_admitted(
    state: &AppState,
    ip: Option<IpAddr>,
    admission: Admission,
) -> Result<(Authenticated, Budget), Refused> {
    match admission {
        Admission::Admitted(caller, budget) => {
            state.metrics.verified_ok.inc();
            Ok((caller, budget))
        }
        Admission::Limited { retry_after_secs, budget } => {
            if let Some(ip) = ip.filter(|ip| state.throttle.blocked_for(*ip).is_none()) {
                if state.throttle.record_failure(ip).is_some() {
                    tracing::warn!(%ip, "too many refused requests; throttling this address");
                }
            }
            state.metrics.verifications.with_label_values(&["rate_limited"]).inc();
            let error = ApiError::Service(Error::RateLimited { retry_after_secs });
            Err(Refused { error, budget: Some(budget) })
        }
        Admission::Unverified(e) => Err(ApiError::Service(e).into()),
        Admission::Leasing(_) => {
            Err(ApiError::Service(Error::Internal(anyhow::anyhow!("a lease was waited for twice"))).into())
        }
    }
}

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` from the key's budget.
pub fn set_budget_headers(response: &mut Response, budget: &Budget) {
    let headers = response.headers_mut();
    headers.insert(LIMIT, number(u64::from(budget.limit)));
    headers.insert(REMAINING, number(u64::from(budget.remaining)));
    headers.insert(RESET, number(budget.reset_secs));
}

/// Numbers up to this are made once, not on every response.
const KEPT_NUMBERS: u64 = 1024;

/// `n` as a header value. Those up to [`KEPT_NUMBERS`] (every reset, and the
/// limits and remainders of all but the busiest keys) are static, so a
/// response costs no allocation for them.
fn number(n: u64) -> HeaderValue {
    static KEPT: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..=KEPT_NUMBERS).map(|n| HeaderValue::from_static(String::leak(n.to_string()))).collect()
    });
    match usize::try_from(n).ok().and_then(|i| KEPT.get(i)) {
        Some(kept) => kept.clone(),
        None => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_made_numbers_read_the_same() {
        for n in [0, 1, 59, 60, KEPT_NUMBERS - 1, KEPT_NUMBERS, KEPT_NUMBERS + 1, 100_000, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    proptest::proptest! {
        /// The byte-level parser answers as the plain reading of the rule
        /// does: trim, split at the first space, scheme `bearer` in any
        /// case, the rest trimmed and not empty.
        #[test]
        fn bearer_answers_as_the_plain_rule_does(value in "[ \t]{0,2}[BbEeAaRr]{0,7}[ \t]{0,3}[A-Za-z0-9_ \t]{0,12}") {
            let plain = value.trim().split_once(' ').and_then(|(scheme, token)| {
                let token = token.trim();
                (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
            });
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
            proptest::prop_assert_eq!(bearer(&h), plain, "{:?}", value);
        }
    }

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
