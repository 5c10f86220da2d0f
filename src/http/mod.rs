//! The HTTP listener (SPEC §6), on axum: a thin adapter over the service.
//!
//! [`router`] builds every route from handlers annotated for OpenAPI, so the
//! served document and the router cannot drift apart, and puts the front
//! door ([`App`]) around it: authentication for the operations the document
//! says need a key, the places of requests handled at once (`places.rs`), the body limit, a request timeout
//! and the metrics. Unknown routes and methods get the envelope. [`serve`]
//! runs it on a bound listener until shutdown, with a header-read timeout
//! (which also closes idle keep-alive connections) and a cap on the size of
//! a request's headers, so slow or idle clients cannot hold connections
//! open for ever.

mod auth;
mod bans;
mod connections;
pub mod error;
mod extract;
mod front;
mod guild;
mod metrics;
mod openapi;
mod places;
mod ratelimit;
mod reason;
mod routes;
mod usage;

pub use reason::Reason;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::HttpConfig;
use crate::service::actions::GuildActions;
use crate::service::KeyService;
pub use auth::bearer;
pub use connections::raise_open_files_limit;
use error::ApiError;
pub use front::App;

pub use metrics::Metrics;
use openapi::BearerAuth;

/// How long one request may take before it is answered with 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's line and headers; past
/// it the connection is closed. The clock also runs while a connection sits
/// idle (new, or kept alive between requests), so this is the idle timeout.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's line and headers may take together; more gets 431
/// `headers_too_large` in the envelope, from the front door.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// hyper's own limit on a request's head, past which it answers a bare 431
/// itself (no service runs, so no envelope) and closes the connection. Twice
/// ours, so that heads a little over ours reach the front door; hyper also
/// answers the bare 431 for more than 100 headers (its stack-allocated
/// parse; raising that would allocate on every request).
const HYPER_MAX_HEAD_BYTES: usize = 2 * MAX_HEAD_BYTES;
/// Pause after a failed accept that is not the client's doing (most often
/// out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// Requests the router handles at once in each of its two pools (see
/// `places.rs`); more wait their turn. (Those the front door answers
/// itself, refusals and the hot path, take no place.)
const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Failed authentications an IP may make at once, and per minute after.
const AUTH_FAILURE_BURST: u32 = 20;
const AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// Leaked-token reports an IP may send at once, and per minute after.
const LEAK_REPORT_BURST: u32 = 10;
const LEAK_REPORTS_PER_MINUTE: u32 = 10;

/// Everything a handler may use, behind one `Arc`: axum clones the state
/// for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub service: KeyService,
    pub actions: Arc<GuildActions>,
    pub metrics: Metrics,
    throttle: ratelimit::FailureThrottle,
    /// Leaked-token reports per client IP (`POST /v1/leaked` needs no key).
    leak_reports: ratelimit::FailureThrottle,
    /// Places for requests handled at once, shared fairly (`places.rs`).
    places: Arc<places::Places>,
    /// Connections held open, per address and in all (`connections.rs`).
    connections: connections::Connections,
    /// The OpenAPI document, for `/openapi.json` (set by `router`).
    doc: std::sync::OnceLock<Arc<utoipa::openapi::OpenApi>>,
    /// Whose `X-Forwarded-For` is believed.
    forwarding: extract::Forwarding,
    max_body_bytes: usize,
    /// The bot's state, for `/healthz`.
    pub bot: Arc<crate::service::health::BotHealth>,
    /// GitHub's keys, when leak reports must carry GitHub's signature
    /// (`leaks.github_public_keys_file`).
    github: std::sync::OnceLock<GithubSignatures>,
}

/// GitHub's secret-scanning keys and the refresh to wake when a report
/// names a key they lack.
pub struct GithubSignatures {
    pub keys: Arc<crate::service::github_keys::GithubKeys>,
    pub refresh: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(actions: Arc<GuildActions>, http: &HttpConfig, bot: Arc<crate::service::health::BotHealth>) -> Self {
        for warning in http.warnings() {
            tracing::warn!("{warning}");
        }
        Self(Arc::new(Shared {
            service: actions.keys().clone(),
            actions,
            metrics: Metrics::new(),
            throttle: ratelimit::FailureThrottle::new(AUTH_FAILURE_BURST, AUTH_FAILURES_PER_MINUTE),
            leak_reports: ratelimit::FailureThrottle::new(LEAK_REPORT_BURST, LEAK_REPORTS_PER_MINUTE),
            places: Arc::new(places::Places::new()),
            connections: {
                let exempt = if http.trust_forwarded_for { http.trusted_proxies.clone() } else { Vec::new() };
                connections::Connections::new(http.max_connections_per_ip, http.max_connections, exempt)
            },
            doc: std::sync::OnceLock::new(),
            forwarding: extract::Forwarding::new(http.trust_forwarded_for, &http.trusted_proxies),
            max_body_bytes: http.max_body_bytes,
            bot,
            github: std::sync::OnceLock::new(),
        }))
    }

    /// From now on `POST /v1/leaked` takes only reports GitHub signed
    /// with one of `signatures.keys`.
    pub fn require_github_signatures(&self, signatures: GithubSignatures) {
        let _ = self.github.set(signatures);
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The OpenAPI document's fixed part (the routes add theirs in [`router`]).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "guildkey", description = "Act on one Discord server with an API key issued by its admins. \
        Every response is the envelope {success, data} or {success: false, data: {}, error: {code, reason, message}}."),
    // The document is served by the listener it describes: its one server is
    // that listener, named relatively.
    servers((url = "/", description = "This listener")),
    tags(
        (name = "keys", description = "The calling key: who it is, its usage, reporting a leaked one"),
        (name = "guilds", description = "The key's server"),
        (name = "bans", description = "Bans in the key's server"),
        (name = "roles", description = "Members' roles in the key's server"),
        (name = "audit", description = "The server's audit log"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    components(schemas(routes::ErrorEnvelope, routes::ErrorBody)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Builds the application: the router and its OpenAPI document from the
/// same handlers, and the front door (`front.rs`) around them.
pub fn router(state: AppState) -> App {
    let (router, doc) = OpenApiRouter::with_openapi(api_doc())
        .routes(routes!(routes::verify))
        .routes(routes!(usage::usage))
        .routes(routes!(routes::audit_log))
        .routes(routes!(guild::guild_info))
        .routes(routes!(guild::ban_status, guild::ban, guild::unban))
        .routes(routes!(bans::check_bans))
        .routes(routes!(bans::export_bans))
        .routes(routes!(guild::add_role, guild::remove_role))
        .routes(routes!(routes::leaked))
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::metrics))
        .routes(routes!(routes::openapi))
        .split_for_parts();
    let doc = Arc::new(openapi::finish(doc, state.max_body_bytes));
    // Built from the same handlers every time: a second router keeps the first document.
    let _ = state.doc.set(doc.clone());
    // No layers: authentication, limits and metrics run in the front door,
    // once per request, rather than in layers axum clones per request.
    let router = router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());
    // The hot path: answered by the front door from the admitted key alone.
    let direct = [("/v1/verify", axum::http::Method::GET, routes::verify_response as front::Direct)];
    // The operations that may call Discord take their places apart.
    // The ban-list routes ask Discord only until the guild's list is synced.
    let discord = [
        "/v1/guilds/{guild_id}/bans/{user_id}",
        "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
        "/v1/guilds/{guild_id}/bans/check",
        "/v1/guilds/{guild_id}/bans",
    ];
    App::new(router, state, &doc, &direct, &discord)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and closes idle connections.
///
/// HTTP/1.1 only, on hyper directly rather than `axum::serve`, which sets
/// no timer and so no header-read timeout: a client that sends nothing, or
/// its headers a byte at a time, would keep its connection (and a file
/// descriptor) for ever.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;

    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The header-read timeout is ours (`front::Activity`), not hyper's.
    http1.header_read_timeout(None).max_header_size(HYPER_MAX_HEAD_BYTES);
    // `stop` tells connections to finish; `done` is held by each connection
    // task, so `done.closed()` resolves once the last one has ended.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let connections = app.connections();
    tracing::info!(
        max_connections = connections.max_total,
        max_connections_per_ip = connections.per_ip(),
        "connections held open at most: in all (http.max_connections, within the open-files limit), per address"
    );
    tokio::pin!(shutdown);
    loop {
        // At the cap in all, nothing more is accepted until one closes.
        let room = tokio::select! {
            () = &mut shutdown => break,
            room = connections.room() => room,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Past its address's cap: closed at once, nothing read.
        let Some(held) = connections.admit(peer.ip(), room) else {
            tracing::debug!(%peer, "closing a connection past its address's cap (http.max_connections_per_ip)");
            continue;
        };
        let http1 = http1.clone();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let _done = done;
            let _held = held;
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::pin!(stopping);
            // Until the client sends its first byte the connection is only a
            // socket: hyper would give it an 8 KiB read buffer at once.
            let mut first = [0u8; 1];
            tokio::select! {
                sent = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)) => {
                    if !matches!(sent, Ok(Ok(1))) {
                        return; // nothing within the timeout, closed, or failed
                    }
                }
                () = &mut stopping => return,
            }
            let activity = Arc::new(front::Activity::new());
            let conn = http1.serve_connection(TokioIo::new(stream), app.connection(peer, activity.clone()));
            tokio::pin!(conn);
            let mut deadline = activity.deadline(HEADER_READ_TIMEOUT);
            let result = loop {
                // Wakes once per timeout period, not per request.
                let wake = deadline.unwrap_or_else(|| Instant::now() + HEADER_READ_TIMEOUT);
                tokio::select! {
                    result = conn.as_mut() => break result,
                    () = &mut stopping => {
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                    () = tokio::time::sleep_until(wake.into()) => {
                        deadline = activity.deadline(HEADER_READ_TIMEOUT);
                        if deadline.is_some_and(|d| d <= Instant::now()) {
                            tracing::debug!(%peer, "closing a connection that sent no complete request in time");
                            break Ok(()); // dropping it closes the socket
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Accept errors that concern one client only.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
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
            state.leak_reports.cleanup();
        }
    })
}
