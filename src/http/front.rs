//! The listener's front door: what every request passes through around the
//! router, as one hand-written service per connection instead of axum
//! layers (axum clones a route's whole layer stack on every request, one
//! allocation per layer, and the hot path is a few microseconds long):
//!
//! - the places of requests handled by the router at once, a bounded share
//!   per guild, apart for operations that may call Discord (`places.rs`);
//! - the body-size guard on the declared `Content-Length`;
//! - authentication for every operation the OpenAPI document says needs a
//!   bearer key (so the document and the enforcement cannot disagree), with
//!   the `X-RateLimit-*` headers on its response;
//! - the request timeout;
//! - metrics: requests by route, method and status, and latency by route;
//! - the answer itself for the operations that need nothing but the
//!   admitted key (`GET /v1/verify`, the hot path), without the router;
//! - the connection's [`Activity`], from which `serve` closes a connection
//!   that takes too long to send a request's headers (or sits idle).
//!
//! Routes are looked up here with matchit, the matcher axum itself uses, on
//! the templates of the OpenAPI document, which is built from the same
//! handlers as the router. A path that matches no route, or a method the
//! route does not have, goes to the router untouched: it answers 404 or 405
//! without asking for a key.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::{Histogram, IntCounter};
use tower::util::Oneshot;
use tower::ServiceExt;

use super::auth::{self, Admitted, Refused};
use super::error::ApiError;
use super::places::{Held, Pool, Want};
use super::usage::Tracked;
use super::{AppState, REQUEST_TIMEOUT};
use crate::service::{guard, Authenticated, Budget};

/// An operation the front door answers itself once the key is admitted:
/// its answer depends on the key alone, so the router (a second route
/// match, a boxed handler future, the caller in the request's extensions)
/// is work for nothing. The router keeps the same operation, for the
/// OpenAPI document and for `HEAD`.
pub type Direct = fn(&Authenticated) -> Response;

/// The whole application as the listener serves it: the router and what
/// runs around it. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router,
    state: AppState,
    /// Index into `route_list` by path.
    routes: matchit::Router<usize>,
    route_list: Vec<Route>,
    /// Latency of requests that matched no route.
    unmatched: Histogram,
}

/// One path template of the router.
struct Route {
    template: String,
    /// The template as usage counts name it (`usage.rs`).
    usage_route: &'static str,
    /// Resolved once: the latency histogram is observed on every request.
    latency: Histogram,
    /// The methods it answers.
    operations: Vec<Operation>,
    /// Where its requests take their place: apart when it may call Discord.
    pool: Pool,
}

/// One method of a route.
struct Operation {
    method: Method,
    /// The document declares bearer security for it.
    needs_key: bool,
    /// `requests{route, method, status="200"}`, resolved once: most
    /// requests are counted there.
    ok: IntCounter,
    /// Answered here rather than by the router.
    direct: Option<Direct>,
}

impl Route {
    fn operation(&self, method: &Method) -> Option<&Operation> {
        self.operations.iter().find(|op| op.method == *method)
    }

    /// The operation for `method` (its index, when the route declares that
    /// very method), and whether the request needs a key: a GET also
    /// answers HEAD, as axum's router does, and asks for the same key.
    fn lookup(&self, method: &Method) -> (Option<usize>, bool) {
        let exact = self.operations.iter().position(|op| op.method == *method);
        let answering = exact.map(|i| &self.operations[i]).or_else(|| {
            let get = (method == Method::HEAD).then(|| self.operation(&Method::GET));
            get.flatten()
        });
        (exact, answering.is_some_and(|op| op.needs_key))
    }
}

const UNMATCHED: &str = "unmatched";

impl App {
    /// `router` must be the one built with `doc`; `direct` lists the
    /// operations (path template and method) answered without it, each
    /// one the router also has; `discord` the path templates whose
    /// operations may call Discord.
    pub(super) fn new(
        router: Router,
        state: AppState,
        doc: &utoipa::openapi::OpenApi,
        direct: &[(&str, Method, Direct)],
        discord: &[&str],
    ) -> Self {
        let mut routes = matchit::Router::new();
        let mut route_list = Vec::new();
        for (template, item) in &doc.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
                (Method::HEAD, &item.head),
                (Method::OPTIONS, &item.options),
            ];
            let operations = operations
                .into_iter()
                .filter_map(|(method, op)| {
                    let needs_key = op.as_ref()?.security.as_ref().is_some_and(|s| !s.is_empty());
                    let ok = state.metrics.requests.with_label_values(&[template.as_str(), method.as_str(), "200"]);
                    let direct = direct.iter().find(|(t, m, _)| t == template && *m == method).map(|d| d.2);
                    Some(Operation { method, needs_key, ok, direct })
                })
                .collect();
            let route = Route {
                template: template.clone(),
                usage_route: super::usage::route_name(template),
                latency: state.metrics.latency.with_label_values(&[template.as_str()]),
                operations,
                pool: if discord.contains(&template.as_str()) { Pool::Discord } else { Pool::Plain },
            };
            routes.insert(template.as_str(), route_list.len()).expect("the router accepted these templates");
            route_list.push(route);
        }
        for (template, method, _) in direct {
            let op = routes.at(template).ok().and_then(|m| route_list[*m.value].operation(method));
            assert!(op.is_some_and(|op| op.needs_key), "{method} {template}: answered directly but not a keyed route");
        }
        for template in discord {
            assert!(routes.at(template).is_ok(), "{template}: said to call Discord but not a route");
        }
        let unmatched = state.metrics.latency.with_label_values(&[UNMATCHED]);
        Self { inner: Arc::new(Inner { router, state, routes, route_list, unmatched }) }
    }

    /// The caps on connections held open (`connections.rs`).
    pub(super) fn connections(&self) -> &super::connections::Connections {
        &self.inner.state.connections
    }

    /// The service for one connection from `peer`, reporting to `activity`.
    pub(super) fn connection(&self, peer: SocketAddr, activity: Arc<Activity>) -> Connection {
        Connection { inner: self.inner.clone(), peer, activity }
    }
}

/// When a connection last finished a request, so its task can close it once
/// the client has taken too long to send the next request's headers. This
/// replaces hyper's own header-read timeout, which arms a timer for every
/// request: here the connection's task wakes once per timeout period.
pub struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the end of the last request, or `BUSY`.
    idle_since_ms: AtomicU64,
}

const BUSY: u64 = u64::MAX;

impl Activity {
    /// A connection whose client has just begun to send.
    pub fn new() -> Self {
        Self { opened: Instant::now(), idle_since_ms: AtomicU64::new(0) }
    }

    fn begin(&self) {
        self.idle_since_ms.store(BUSY, Ordering::Relaxed);
    }

    fn end(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.opened).as_millis();
        self.idle_since_ms.store(u64::try_from(ms).unwrap_or(BUSY - 1), Ordering::Relaxed);
    }

    /// When the client must have sent a whole request's headers, `timeout`
    /// after the previous request ended; `None` while one is being handled
    /// (its own timeout bounds it).
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        (ms != BUSY).then(|| self.opened + Duration::from_millis(ms) + timeout)
    }
}

/// [`App`] on one connection: knows the peer's address.
pub struct Connection {
    inner: Arc<Inner>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        self.activity.begin();
        let req = req.map(axum::body::Body::new);
        let held = InFlight { inner: self.inner.clone(), places: Held::default() };
        let mut respond = start(held, req, self.peer, self.activity.clone());
        // Answered already (refused, or the hot path): nothing is left to
        // run, so it takes no place among the requests handled at once
        // (and touches no semaphore, whose release takes a lock).
        let Some(want) = respond.want else { return Box::pin(respond) };
        let places = &respond.held.inner.state.places;
        if let Some(taken) = places.try_take(want) {
            respond.held.places = taken;
            return Box::pin(respond);
        }
        // Past the pool's places or the guild's share: waits its turn
        // (never closed), holding no place meanwhile; for an operation
        // that may call Discord, at most as long as it would wait for one
        // of its guild's Discord places, then 503 `discord_busy`.
        let places = places.clone();
        Box::pin(async move {
            match want.pool {
                Pool::Plain => respond.held.places = places.take(want).await,
                Pool::Discord => match tokio::time::timeout(guard::PLACE_WAIT, places.take(want)).await {
                    Ok(held) => respond.held.places = held,
                    Err(_) => {
                        let busy = ApiError::from(guard::busy(guard::PLACE_WAIT)).into_response();
                        respond.outcome = Outcome::Ready { response: Some(busy) };
                    }
                },
            }
            respond.await
        })
    }
}

/// One request's hold on the application, and on its places among the
/// requests handled at once, given back when the request is done.
struct InFlight {
    inner: Arc<Inner>,
    places: Held,
}

/// Admits a request (or refuses it), then answers it here (an operation
/// the front door answers directly) or hands it to the router. What is
/// decided before the router is decided here, synchronously; what remains
/// is a small future allocated once per request.
fn start(held: InFlight, mut req: Request, peer: SocketAddr, activity: Arc<Activity>) -> Respond {
    let started = Instant::now();
    let inner = &*held.inner;
    let route = inner.routes.at(req.uri().path()).ok().map(|m| *m.value);
    let method = req.method().clone();
    // Found once: admission, the direct answer and the metrics all use it.
    let (op, needs_key) = route.map_or((None, false), |r| inner.route_list[r].lookup(&method));
    let op = route.zip(op);
    let operation = op.map(|(r, o)| &inner.route_list[r].operations[o]);
    // Usage: who the request is counted for (see `usage.rs`), if anyone.
    let usage_route = route.map_or(super::usage::UNMATCHED, |r| inner.route_list[r].usage_route);
    // The client's address, found once: the throttle, the key's allow-list
    // and its usage all use it.
    let ip = inner.state.forwarding.client_ip(req.headers(), peer);
    let mut tracked = None;
    let pool = route.map_or(Pool::Plain, |r| inner.route_list[r].pool);
    let mut want = Some(Want { pool, guild: None });
    let outcome = match inner.admit(needs_key, &req, ip) {
        Err(refused) => {
            tracked = Tracked::unadmitted(&inner.state, &req, ip, usage_route);
            want = None;
            Outcome::Ready { response: Some(refused.into_response()) }
        }
        Ok(Some(Admitted::Later(caller))) => {
            want = Some(Want { pool, guild: Some(caller.key.guild_id) });
            tracked = Some(Tracked::admitted(caller.key.clone(), &req, ip, usage_route));
            let direct = operation.and_then(|op| op.direct);
            Outcome::Leasing { answer: Box::pin(answer_leased(held.inner.clone(), caller, direct, req)) }
        }
        Ok(Some(Admitted::Now(caller, budget))) => match operation.and_then(|op| op.direct) {
            Some(direct) => {
                let mut response = direct(&caller);
                auth::set_budget_headers(&mut response, &budget);
                tracked = Some(Tracked::admitted(caller.key, &req, ip, usage_route));
                want = None;
                Outcome::Ready { response: Some(response) }
            }
            None => {
                want = Some(Want { pool, guild: Some(caller.key.guild_id) });
                tracked = Some(Tracked::admitted(caller.key.clone(), &req, ip, usage_route));
                req.extensions_mut().insert(caller);
                let answer = within(REQUEST_TIMEOUT, inner.router.clone().oneshot(req));
                Outcome::Routed { answer, budget: Some(budget) }
            }
        },
        Ok(None) => {
            if op.is_none() {
                tracked = Tracked::unadmitted(&inner.state, &req, ip, usage_route);
            }
            req.extensions_mut().insert(super::extract::Peer(peer));
            Outcome::Routed { answer: within(REQUEST_TIMEOUT, inner.router.clone().oneshot(req)), budget: None }
        }
    };
    Respond { held, want, route, op, method, started, activity, tracked, outcome }
}

/// The rest of a request whose key's shared budget is being leased
/// (`Admitted::Later`, rare): admitted or refused once the lease is in,
/// then answered as any other.
async fn answer_leased(inner: Arc<Inner>, caller: Authenticated, direct: Option<Direct>, mut req: Request) -> Response {
    let (caller, budget) = match auth::admit_leased(&inner.state, caller).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    let mut response = match direct {
        Some(direct) => direct(&caller),
        None => {
            req.extensions_mut().insert(caller);
            match within(REQUEST_TIMEOUT, inner.router.clone().oneshot(req)).await {
                Some(Ok(response)) => response,
                Some(Err(never)) => match never {},
                None => ApiError::Timeout.into_response(),
            }
        }
    };
    auth::set_budget_headers(&mut response, &budget);
    response
}

pin_project_lite::pin_project! {
    /// A request answered (or refused) before the router, or handed to it,
    /// or waiting for its key's lease first.
    #[project = OutcomeProj]
    enum Outcome {
        Ready { response: Option<Response> },
        Leasing { answer: Pin<Box<dyn Future<Output = Response> + Send>> },
        Routed {
            #[pin]
            answer: Within<Oneshot<Router, Request>>,
            budget: Option<Budget>,
        },
    }
}

pin_project_lite::pin_project! {
    /// One admitted (or refused) request: the router's answer with the
    /// budget headers, then the metrics. Written out rather than an `async
    /// fn`, whose future would hold the request twice.
    struct Respond {
        held: InFlight,
        // The places it needs; `None` once answered before the router.
        want: Option<Want>,
        route: Option<usize>,
        // The route's operation for the method (route, operation), if any.
        op: Option<(usize, usize)>,
        method: Method,
        started: Instant,
        activity: Arc<Activity>,
        // Counted for this key once answered (`usage.rs`).
        tracked: Option<Tracked>,
        #[pin]
        outcome: Outcome,
    }
}

impl Future for Respond {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.outcome.project() {
            OutcomeProj::Ready { response } => response.take().expect("a future is not polled after it is ready"),
            OutcomeProj::Leasing { answer } => std::task::ready!(answer.as_mut().poll(cx)),
            OutcomeProj::Routed { answer, budget } => {
                let mut response = match std::task::ready!(answer.poll(cx)) {
                    Some(Ok(response)) => response,
                    Some(Err(never)) => match never {},
                    None => ApiError::Timeout.into_response(),
                };
                if let Some(budget) = budget {
                    auth::set_budget_headers(&mut response, budget);
                }
                response
            }
        };
        let finished = Instant::now();
        this.activity.end(finished);
        let inner = &*this.held.inner;
        let route = this.route.map(|i| &inner.route_list[i]);
        let (label, latency) = route.map_or((UNMATCHED, &inner.unmatched), |r| (r.template.as_str(), &r.latency));
        latency.observe(finished.saturating_duration_since(*this.started).as_secs_f64());
        let (status, method) = (response.status(), &*this.method);
        match this.op.filter(|_| status == StatusCode::OK) {
            Some((r, o)) => inner.route_list[r].operations[o].ok.inc(),
            None => {
                let method = super::metrics::method_label(method);
                inner.state.metrics.requests.with_label_values(&[label, method, status.as_str()]).inc();
            }
        }
        if let Some(tracked) = this.tracked.take() {
            tracked.finish(&inner.state, &response, *this.started, finished);
        }
        Poll::Ready(Ok(response))
    }
}

impl Inner {
    /// What is decided before the router: the declared body size, and the
    /// key when the operation needs one (with its budget, for the response).
    fn admit(&self, needs_key: bool, req: &Request, ip: IpAddr) -> Result<Option<Admitted>, Refused> {
        let state = &self.state;
        if head_bytes(req) > super::MAX_HEAD_BYTES {
            return Err(ApiError::HeadersTooLarge(super::MAX_HEAD_BYTES).into());
        }
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
            return Err(ApiError::PayloadTooLarge(state.max_body_bytes).into());
        }
        if !needs_key {
            return Ok(None);
        }
        auth::admit(state, req.headers(), ip).map(Some)
    }
}

/// The size of a request's line and headers as sent (HTTP/1.1): hyper
/// refuses heads over its own, larger limit with a bare 431 before any
/// service runs; this lets the front door refuse those over
/// `MAX_HEAD_BYTES` with the envelope.
fn head_bytes(req: &Request) -> usize {
    let uri = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD URI HTTP/1.1\r\n", each "name: value\r\n", then "\r\n".
    let line = req.method().as_str().len() + 1 + uri + 11;
    req.headers().iter().fold(line + 2, |n, (name, value)| n + name.as_str().len() + 2 + value.len() + 2)
}

pin_project_lite::pin_project! {
    /// `fut`'s output, or `None` if it takes longer than `limit`, like
    /// `tokio::time::timeout` but with the timer made only if the first
    /// poll does not finish: most requests are answered on their first poll,
    /// and a timer is large (this future is built for every request).
    struct Within<F> {
        #[pin]
        fut: F,
        limit: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

fn within<F: Future>(limit: Duration, fut: F) -> Within<F> {
    Within { fut, limit, timer: None }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Some(output));
        }
        let limit = *this.limit;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn within_answers_ready_futures_and_times_out_slow_ones() {
        let limit = Duration::from_millis(300);
        assert_eq!(within(limit, async { 7 }).await, Some(7));
        let slow = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            8
        };
        assert_eq!(within(limit, slow).await, Some(8));
        let too_slow = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            9
        };
        let started = Instant::now();
        assert_eq!(within(limit, too_slow).await, None);
        assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    }

    #[test]
    fn activity_has_no_deadline_while_busy_and_counts_from_the_last_end() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(10);
        assert_eq!(activity.deadline(timeout), Some(activity.opened + timeout));
        activity.begin();
        assert_eq!(activity.deadline(timeout), None);
        let later = activity.opened + Duration::from_millis(2500);
        activity.end(later);
        assert_eq!(activity.deadline(timeout), Some(later + timeout));
    }
}
