//! The listener's front door: what every request passes through around the
//! router, as one hand-written service per connection instead of axum
//! layers (axum clones a route's whole layer stack on every request, one
//! allocation per layer, and the hot path is a few microseconds long):
//!
//! - the cap on requests handled at once;
//! - the body-size guard on the declared `Content-Length`;
//! - authentication for every operation the OpenAPI document says needs a
//!   bearer key (so the document and the enforcement cannot disagree), with
//!   the `X-RateLimit-*` headers on its response;
//! - the request timeout;
//! - metrics: requests by route, method and status, and latency by route.
//!
//! Routes are looked up here with matchit, the matcher axum itself uses, on
//! the templates of the OpenAPI document, which is built from the same
//! handlers as the router. A path that matches no route, or a method the
//! route does not have, goes to the router untouched: it answers 404 or 405
//! without asking for a key.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::Histogram;
use tower::ServiceExt;

use super::error::ApiError;
use super::{auth, AppState, REQUEST_TIMEOUT};

/// The whole application as the listener serves it: the router and what
/// runs around it. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router,
    state: AppState,
    routes: matchit::Router<Route>,
    /// Latency of requests that matched no route.
    unmatched: Histogram,
}

/// One path template of the router.
struct Route {
    template: String,
    /// Resolved once: the latency histogram is observed on every request.
    latency: Histogram,
    /// The methods it answers, and whether each needs a key.
    methods: Vec<(Method, bool)>,
}

impl Route {
    /// Whether `method` needs a key here; `None` when the route has no such
    /// method. A GET also answers HEAD, as axum's router does.
    fn needs_key(&self, method: &Method) -> Option<bool> {
        let find = |m: &Method| self.methods.iter().find(|(have, _)| have == m).map(|&(_, key)| key);
        find(method).or_else(|| (method == Method::HEAD).then(|| find(&Method::GET)).flatten())
    }
}

const UNMATCHED: &str = "unmatched";

impl App {
    /// `router` must be the one built with `doc`.
    pub(super) fn new(router: Router, state: AppState, doc: &utoipa::openapi::OpenApi) -> Self {
        let mut routes = matchit::Router::new();
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
            let methods = operations
                .into_iter()
                .filter_map(|(method, op)| {
                    let op = op.as_ref()?;
                    Some((method, op.security.as_ref().is_some_and(|s| !s.is_empty())))
                })
                .collect();
            let route = Route {
                template: template.clone(),
                latency: state.metrics.latency.with_label_values(&[template.as_str()]),
                methods,
            };
            routes.insert(template.as_str(), route).expect("the router accepted these templates");
        }
        let unmatched = state.metrics.latency.with_label_values(&[UNMATCHED]);
        Self { inner: Arc::new(Inner { router, state, routes, unmatched }) }
    }

    /// The service for one connection from `peer`.
    pub(super) fn connection(&self, peer: SocketAddr) -> Connection {
        Connection { inner: self.inner.clone(), peer }
    }
}

/// [`App`] on one connection: knows the peer's address.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let peer = self.peer;
        Box::pin(async move { Ok(inner.handle(req.map(axum::body::Body::new), peer).await) })
    }
}

impl Inner {
    async fn handle(&self, req: Request, peer: SocketAddr) -> Response {
        // Waits its turn beyond MAX_CONCURRENT_REQUESTS (never closed).
        let in_flight = &self.state.in_flight;
        let _permit = match in_flight.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => in_flight.acquire().await.ok(),
        };
        let started = Instant::now();
        let route = self.routes.at(req.uri().path()).ok().map(|m| m.value);
        let method = req.method().clone();
        let response = self.respond(route, req, peer).await;
        let (label, latency) = route.map_or((UNMATCHED, &self.unmatched), |r| (r.template.as_str(), &r.latency));
        latency.observe(started.elapsed().as_secs_f64());
        self.state.metrics.requests.with_label_values(&[label, method.as_str(), response.status().as_str()]).inc();
        response
    }

    async fn respond(&self, route: Option<&Route>, mut req: Request, peer: SocketAddr) -> Response {
        let state = &self.state;
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
            return ApiError::PayloadTooLarge(state.max_body_bytes).into_response();
        }
        let mut budget = None;
        if route.and_then(|r| r.needs_key(req.method())) == Some(true) {
            match auth::admit(state, req.headers(), peer) {
                Ok((caller, admitted)) => {
                    req.extensions_mut().insert(caller);
                    budget = Some(admitted);
                }
                Err(refused) => return refused,
            }
        }
        let mut response = match tokio::time::timeout(REQUEST_TIMEOUT, self.router.clone().oneshot(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => ApiError::Timeout.into_response(),
        };
        if let Some(budget) = budget {
            auth::set_budget_headers(&mut response, &budget);
        }
        response
    }
}
