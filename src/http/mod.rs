//! The HTTP listener (SPEC §6), on axum: a thin adapter over the service.
//!
//! [`router`] builds every route from handlers annotated for OpenAPI, so the
//! served document and the router cannot drift apart. `/v1` routes sit
//! behind [`auth::require_key`]; around everything are the metrics, a
//! request timeout, the body limit and the envelope for unknown routes and
//! methods. [`serve`] runs it on a bound listener until shutdown.

mod auth;
pub mod error;
mod extract;
mod guild;
mod metrics;
mod openapi;
mod ratelimit;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::HttpConfig;
use crate::service::actions::GuildActions;
use crate::service::KeyService;
use error::ApiError;
use extract::BodyLimit;

pub use metrics::Metrics;
use openapi::BearerAuth;

/// How long one request may take before it is answered with 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests handled at once; more wait their turn.
const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Failed authentications an IP may make at once, and per minute after.
const AUTH_FAILURE_BURST: u32 = 20;
const AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub service: KeyService,
    pub actions: Arc<GuildActions>,
    pub metrics: Arc<Metrics>,
    throttle: Arc<ratelimit::FailureThrottle>,
    trust_forwarded_for: bool,
    max_body_bytes: usize,
}

impl AppState {
    pub fn new(actions: Arc<GuildActions>, http: &HttpConfig) -> Self {
        Self {
            service: actions.keys().clone(),
            actions,
            metrics: Arc::new(Metrics::new()),
            throttle: Arc::new(ratelimit::FailureThrottle::new(AUTH_FAILURE_BURST, AUTH_FAILURES_PER_MINUTE)),
            trust_forwarded_for: http.trust_forwarded_for,
            max_body_bytes: http.max_body_bytes,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "guildkey", description = "Act on one Discord server with an API key issued by its admins. \
        Every response is the envelope {success, data} or {success: false, data: {}, error: {code, reason, message}}."),
    components(schemas(routes::ErrorEnvelope, routes::ErrorBody)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Builds the router and its OpenAPI document from the same handlers.
pub fn router(state: AppState) -> Router {
    let v1 = OpenApiRouter::new()
        .routes(routes!(routes::verify))
        .routes(routes!(routes::audit_log))
        .routes(routes!(guild::guild_info))
        .routes(routes!(guild::ban_status, guild::ban, guild::unban))
        .routes(routes!(guild::add_role, guild::remove_role))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1)
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::metrics))
        .routes(routes!(routes::openapi))
        .split_for_parts();
    let doc = Arc::new(openapi::finish(doc));
    router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(doc))
        .layer(Extension(BodyLimit(state.max_body_bytes)))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .with_state(state)
}

/// Refuses oversized bodies up front and bounds how long a request may run.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return ApiError::PayloadTooLarge(state.max_body_bytes).into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Counts every request by route and status and times it.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.latency.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    m.requests.with_label_values(&[route, method.as_str(), response.status().as_str()]).inc();
    response
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Periodic clean-up of rate-limit state, so memory stays bounded.
pub fn spawn_housekeeping(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            // Per-key limiters live and die with their keys in the index.
            state.throttle.cleanup();
        }
    })
}
