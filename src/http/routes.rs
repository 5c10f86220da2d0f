//! Handlers for the routes that do not act on Discord: verify, the audit
//! log, health, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{envelope, ok, ApiError};
use super::extract::{short, snowflake, ApiPath, ApiQuery};
use super::AppState;
use crate::keys::Scope;
use crate::service::Authenticated;

/// The calling key, as `/v1/verify` describes it.
#[derive(Serialize, ToSchema)]
pub struct VerifyData {
    #[schema(example = "key_7kJbQWk3evOIrhMP")]
    key_id: String,
    /// The guild this key acts on (a snowflake, as a string).
    #[schema(example = "1000000000000000001")]
    guild_id: String,
    name: String,
    #[schema(example = "gk_live_Ab3d")]
    prefix: String,
    #[schema(example = json!(["bans.read"]))]
    scopes: Vec<String>,
    #[schema(example = "live")]
    environment: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    rate_limit_per_minute: u32,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Tells the caller about its own key. Any scope.
#[utoipa::path(get, path = "/v1/verify", tag = "keys", security(("bearer" = [])),
    responses(
        (status = 200, description = "The key is valid", body = inline(Envelope<VerifyData>)),
    ))]
pub async fn verify(Caller(caller): Caller) -> Response {
    verify_response(&caller)
}

/// `/v1/verify`'s answer for `caller`. The front door calls this directly
/// for `GET /v1/verify` (the hot path) once the key is admitted; the routed
/// handler above serves the document and `HEAD`.
pub fn verify_response(caller: &Authenticated) -> Response {
    // The body depends on the key alone: rendered on its first use, then
    // reused until the key changes.
    let body = caller.key.rendered(|k| {
        let data = VerifyData {
            key_id: k.id.to_string(),
            guild_id: k.guild_id.to_string(),
            name: k.name.to_string(),
            prefix: k.prefix.to_string(),
            scopes: k.scopes.names().into_iter().map(str::to_owned).collect(),
            environment: k.environment.to_string(),
            expires_at: k.expires_at(),
            rate_limit_per_minute: k.rate_limit_per_minute,
        };
        serde_json::to_vec(&envelope(data)).expect("a key serialises")
    });
    ([(header::CONTENT_TYPE, JSON)], body).into_response()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many events (1–100, default 50; values outside are clamped).
    // Read as text, so that an empty value means the default.
    #[param(value_type = Option<i64>)]
    limit: Option<String>,
    /// Only events older than this event id (the previous page's `next_before`).
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
}

/// One audit event.
#[derive(Serialize, ToSchema)]
pub struct AuditEventDoc {
    id: i64,
    at: chrono::DateTime<chrono::Utc>,
    #[schema(example = "ban.added")]
    action: String,
    #[schema(example = "An API key")]
    actor: String,
    key_id: Option<String>,
    key_name: Option<String>,
    key_prefix: Option<String>,
    test: bool,
    details: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEventDoc>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

/// The guild's audit events, newest first. Needs `audit.read`.
#[utoipa::path(get, path = "/v1/guilds/{guild_id}/audit-log", tag = "audit", security(("bearer" = [])),
    params(("guild_id" = String, Path, description = "Guild id (snowflake)"), AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = inline(Envelope<AuditPage>)),
        (status = 400, description = "bad_request", body = ErrorEnvelope),
        (status = 403, description = "guild_mismatch or insufficient_scope", body = ErrorEnvelope),
    ))]
pub async fn audit_log(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(guild_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let guild_id = snowflake("guild_id", &guild_id)?;
    caller.authorize(guild_id, Scope::AuditRead)?;
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => 50,
        Some(raw) => raw
            .parse::<i64>()
            .map_err(|_| {
                ApiError::BadRequest(format!("limit must be a whole number from 1 to 100, not '{}'", short(raw)))
            })?
            .clamp(1, 100) as u32,
    };
    let before = match q.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| ApiError::BadRequest(format!("before must be an event id, not '{}'", short(raw))))?,
        ),
    };
    let (events, next_before) = state.service.audit_page(guild_id, limit, before).await?;
    Ok(ok(serde_json::json!({ "events": events, "next_before": next_before })))
}

/// Liveness: answers without touching Discord or the database, 200 while
/// the listener is up whatever Discord does; `bot` says how this process's
/// Discord bot is doing (`off` when it runs none).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The listener is up", body = inline(Envelope<Health>))))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    ok(Health { status: "ok", bot: state.bot.get() })
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    bot: crate::service::health::BotState,
}

/// The most tokens one leaked-token report may carry.
const MAX_LEAK_REPORT_ITEMS: usize = 100;

/// What a report that fails GitHub's signature check is told: nothing of
/// why (the log says).
const REPORT_REFUSED: &str = "this report was not accepted; the operator's log says why";

/// What a leaked-token report is told: how many tokens were received, and
/// never whether any was valid.
#[derive(Serialize, ToSchema)]
pub struct LeakAck {
    received: usize,
}

/// Reports leaked guildkey tokens, in GitHub secret scanning's format
/// (`[{"token", "type", "url", "source"}]`). No key needed: a token that
/// turned up where it should not is compromised, whoever reports it. Each
/// valid one is revoked at once and the guild's audit channel names the key
/// (never the secret) and the URL. The answer is the same whatever the
/// tokens were. Limited per client IP. With `leaks.github_public_keys_file`
/// set, a report must carry GitHub's signature (`Github-Public-Key-Identifier`,
/// `Github-Public-Key-Signature`); one that does not verify gets 400 and
/// the log says why.
#[utoipa::path(post, path = "/v1/leaked", tag = "keys",
    request_body(content = Vec<crate::service::LeakReport>, description = "At most 100 tokens"),
    responses(
        (status = 200, description = "Received; valid tokens are being revoked", body = inline(Envelope<LeakAck>)),
        (status = 400, description = "bad_request: not a JSON array of reports, more than 100, a source over 100 \
            characters or a url over 200, or (when GitHub's signature is required) a signature that does not verify", body = ErrorEnvelope),
        (status = 429, description = "rate_limited: too many reports from this address", body = ErrorEnvelope,
            headers(("Retry-After" = i64, description = "Seconds to wait"))),
    ))]
pub async fn leaked(
    State(state): State<AppState>,
    peer: Option<axum::Extension<super::extract::Peer>>,
    headers: axum::http::HeaderMap,
    body: super::extract::Body,
) -> Result<Response, ApiError> {
    use crate::service::Error;
    let ip = match peer {
        Some(axum::Extension(super::extract::Peer(peer))) => state.forwarding.client_ip(&headers, peer),
        None => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    if let Some(wait) = state.leak_reports.blocked_for(ip).or_else(|| state.leak_reports.record_failure(ip)) {
        return Err(ApiError::Service(Error::RateLimited { retry_after_secs: wait }));
    }
    if let Some(github) = state.github.get() {
        use crate::service::github_keys::{Refusal, KEY_ID_HEADER, SIGNATURE_HEADER};
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(why) = github.keys.verify(header(KEY_ID_HEADER), header(SIGNATURE_HEADER), body.raw()) {
            if why == Refusal::UnknownKey {
                github.refresh.notify_one();
            }
            // Why in the log, never in the answer.
            tracing::warn!(%ip, why = %why, "refused a leaked-token report: GitHub's signature did not verify");
            return Err(ApiError::BadRequest(REPORT_REFUSED.to_owned()));
        }
    }
    let reports: Vec<crate::service::LeakReport> = body.json_array(MAX_LEAK_REPORT_ITEMS)?;
    for (n, report) in reports.iter().enumerate() {
        report.validate().map_err(|e| ApiError::BadRequest(format!("report {}: {e}", n + 1)))?;
    }
    let received = reports.len();
    // Revoked after answering, so the answer's timing says nothing either.
    let service = state.service.clone();
    tokio::spawn(async move {
        let revoked = service.revoke_leaked(&reports).await;
        tracing::info!(received, revoked, "leaked-token report handled");
    });
    Ok(ok(LeakAck { received }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.observe_index(state.service.indexed_keys(), state.service.index_stats());
    state.metrics.observe_discord(state.actions.ops().invalid_answers(), state.actions.guard());
    state.metrics.observe_leases(state.service.lease_stats());
    state.metrics.observe_ban_lists(state.actions.ban_lists().size());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    match state.doc.get().map(|doc| &**doc) {
        Some(doc) => axum::Json(doc).into_response(),
        None => ApiError::NoRoute.into_response(),
    }
}

/// The success envelope.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T: ToSchema> {
    /// Always true here.
    success: bool,
    data: T,
}

/// The failure envelope: exactly these fields.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always false here.
    success: bool,
    /// Always an empty object.
    data: serde_json::Value,
    error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status.
    #[schema(example = 403)]
    code: u16,
    /// Machine-readable; each reason has one status (see the README's Reasons).
    #[schema(example = "insufficient_scope")]
    reason: super::Reason,
    /// For people; may change.
    message: String,
}
