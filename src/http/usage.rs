//! Usage on the listener: who a request is counted for, what of it is
//! counted (taken before the router has the request, counted once the
//! response is known: one call from the front door each), and
//! `GET /v1/usage`, the calling key's own counters.
//!
//! A request is counted for the key it was admitted with, or, when it was
//! refused at admission (revoked, suspended, rate-limited, an IP outside
//! the allow-list…) or matched no route, for the key its bearer token
//! names if the index holds one. Public routes (`/healthz`, `/metrics`,
//! `/openapi.json`, `/v1/leaked`) are not counted per key.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ok, ApiError, ErrorReason};
use super::extract::ApiQuery;
use super::AppState;
use crate::service::index::LiveKey;
use crate::service::usage::{RequestFacts, UNMATCHED_ROUTE};
use crate::service::usage_report::Period;

/// A request to be counted for `key`, with what the count needs from the
/// request itself.
pub(super) struct Tracked {
    key: Arc<LiveKey>,
    ip: IpAddr,
    method: &'static str,
    route: &'static str,
    target_user: Option<u64>,
    target_role: Option<u64>,
}

impl Tracked {
    /// For a request admitted with `key` on `route` (its template, or
    /// [`UNMATCHED_ROUTE`]).
    /// `ip` is the client's (see `extract::Forwarding::client_ip`).
    pub(super) fn admitted(key: Arc<LiveKey>, req: &Request, ip: IpAddr, route: &'static str) -> Self {
        let method = super::metrics::method_label(req.method());
        let (target_user, target_role) = if is_write(req.method()) { targets(req.uri().path()) } else { (None, None) };
        Self { key, ip, method, route, target_user, target_role }
    }

    /// For a request answered without being admitted (refused, or no
    /// route): counted for the key its bearer token names, if any.
    pub(super) fn unadmitted(state: &AppState, req: &Request, ip: IpAddr, route: &'static str) -> Option<Self> {
        let key = state.service.identify(super::bearer(req.headers())?)?;
        Some(Self::admitted(key, req, ip, route))
    }

    /// Counts the request, answered with `response` after `started`.
    pub(super) fn finish(self, state: &AppState, response: &Response, started: Instant, finished: Instant) {
        let latency = finished.saturating_duration_since(started).as_micros();
        let facts = RequestFacts {
            at_ms: unix_millis(),
            method: self.method,
            route: self.route,
            status: response.status().as_u16(),
            reason: response.extensions().get::<ErrorReason>().map(|r| r.0),
            ip: self.ip,
            latency_us: u32::try_from(latency).unwrap_or(u32::MAX),
            target_user: self.target_user,
            target_role: self.target_role,
        };
        state.service.record_request(&self.key, &facts);
    }
}

/// The name a route is counted under: its template, kept for the process.
pub(super) fn route_name(template: &str) -> &'static str {
    crate::service::usage::intern(template)
}

/// The route name of a request that matched no route.
pub(super) const UNMATCHED: &str = UNMATCHED_ROUTE;

fn is_write(method: &Method) -> bool {
    matches!(*method, Method::PUT | Method::DELETE | Method::POST | Method::PATCH)
}

/// The member and role a write's path names (`…/bans/{user_id}`,
/// `…/members/{user_id}/roles/{role_id}`), when they are ids.
fn targets(path: &str) -> (Option<u64>, Option<u64>) {
    let segments: Vec<&str> = path.split('/').collect();
    let after = |name: &str| {
        segments.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse::<u64>().ok()).filter(|&id| id > 0)
    };
    (after("bans").or_else(|| after("members")), after("roles"))
}

fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// `24h` (the default: 24 hour buckets), `7d` (28 buckets of 6 hours) or
    /// `30d` (30 day buckets), each ending with the current bucket (UTC).
    #[param(value_type = Option<crate::service::usage_report::Period>, example = "24h")]
    period: Option<String>,
}

/// The calling key's own usage over a period: requests per bucket by
/// outcome class, totals per outcome (`ok`, each 4xx reason,
/// `rate_limited`, `5xx`), the busiest routes and client IPs, and the error
/// share. Any valid key may read its own; no scope needed (a key still
/// cannot see or manage other keys). Counts from other listeners arrive
/// within about a minute.
#[utoipa::path(get, path = "/v1/usage", tag = "keys", security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "The key's usage", body = inline(super::routes::Envelope<crate::service::usage_report::UsageReport>)),
        (status = 400, description = "bad_request: period is not 24h, 7d or 30d", body = super::routes::ErrorEnvelope),
        (status = 503, description = "database_unavailable: the counters cannot be read right now", body = super::routes::ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds to wait"))),
    ))]
pub async fn usage(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let period = match q.period.as_deref().map(str::trim) {
        None | Some("") => Period::Day,
        Some(raw) => Period::parse(raw).map_err(crate::service::Error::Invalid)?,
    };
    let report = state.service.usage(&caller.key.id, period, chrono::Utc::now()).await?;
    Ok(ok(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writes_targets_come_from_its_path() {
        assert_eq!(targets("/v1/guilds/1/bans/22"), (Some(22), None));
        assert_eq!(targets("/v1/guilds/1/members/22/roles/333"), (Some(22), Some(333)));
        assert_eq!(targets("/v1/guilds/1/bans/x"), (None, None));
        assert_eq!(targets("/v1/verify"), (None, None));
    }
}
