//! A local Roblox Open Cloud for guildkey's tests, on `127.0.0.1`: the
//! MessagingService publish, the user restrictions (Ban API) and the Secrets
//! store. Every request is checked against its operation in Roblox's own
//! OpenAPI descriptions ([`spec`]) and every answer the double gives too;
//! what those files do not encode (Roblox's prose limits) is checked here.
//! The rules are listed in `README.md`.
//!
//! It has its own X25519 key pair (the universe's Secrets key): what it is
//! given sealed it unseals, so a test compares the delivered secret with
//! what verifies. Every call is recorded with its time; [`RobloxDouble::fail`]
//! answers 429 with `Retry-After`, or a 5xx, for a while.

pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;

/// The Open Cloud key the double accepts unless told others.
pub const API_KEY: &str = "roblox-double-open-cloud-key";
/// The id of the double's Secrets public key.
pub const KEY_ID: &str = "double-key-1";
/// Roblox's prose limits (see `README.md`).
pub const MAX_TOPIC_CHARS: usize = 80;
pub const MAX_MESSAGE_BYTES: usize = 1024;
pub const MAX_DISPLAY_REASON: usize = 400;
pub const MAX_PRIVATE_REASON: usize = 1000;
pub const MAX_SECRET_CHARS: usize = 1024;
pub const MAX_SECRETS: usize = 500;
pub const RESTRICTION_UPDATES_PER_MINUTE: usize = 2;

/// One request the double answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub status: u16,
    /// The `x-api-key` header sent, if any.
    pub api_key: Option<String>,
}

/// A message published to a universe's topic.
#[derive(Debug, Clone)]
pub struct Published {
    pub at: DateTime<Utc>,
    pub universe_id: u64,
    pub topic: String,
    pub message: String,
}

/// A secret as stored, unsealed.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub plaintext: String,
    pub domain: Option<String>,
    pub key_id: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

struct Fault {
    /// Only calls of this method (any when `None`).
    method: Option<String>,
    status: u16,
    retry_after: Option<u64>,
    remaining: Option<u32>,
    until: Option<Instant>,
}

#[derive(Default)]
struct State {
    keys: HashSet<String>,
    calls: Vec<Call>,
    published: Vec<Published>,
    restrictions: HashMap<(u64, u64), Value>,
    restriction_updates: HashMap<(u64, u64), Vec<Instant>>,
    secrets: HashMap<u64, BTreeMap<String, StoredSecret>>,
    violations: Vec<String>,
    fault: Option<Fault>,
    /// How far the double's clock is ahead of the real one (the per-user window).
    skew: Duration,
}

struct Inner {
    state: Mutex<State>,
    secret_key: crypto_box::SecretKey,
    changes: watch::Sender<u64>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running double; dropping it stops it.
pub struct RobloxDouble {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RobloxDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl RobloxDouble {
    /// Starts on a free loopback port, accepting [`API_KEY`].
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State { keys: HashSet::from([API_KEY.to_owned()]), ..State::default() }),
            secret_key: crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng),
            changes: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Roblox double");
        let addr = listener.local_addr().expect("its address");
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr, task }
    }

    /// What `roblox.open_cloud_base_url` is set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accepts another Open Cloud key too.
    pub fn accept_key(&self, key: &str) {
        self.inner.state().keys.insert(key.to_owned());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    /// Messages published so far.
    pub fn published(&self) -> Vec<Published> {
        self.inner.state().published.clone()
    }

    /// A user's restriction in a universe (`gameJoinRestriction`), if set.
    pub fn restriction(&self, universe_id: u64, user_id: u64) -> Option<Value> {
        self.inner.state().restrictions.get(&(universe_id, user_id)).cloned()
    }

    /// A secret of a universe, unsealed.
    pub fn secret(&self, universe_id: u64, id: &str) -> Option<StoredSecret> {
        self.inner.state().secrets.get(&universe_id).and_then(|s| s.get(id)).cloned()
    }

    /// Requests or answers that broke a schema or one of Roblox's prose
    /// limits (each refused as Roblox would); a test expects none.
    pub fn violations(&self) -> Vec<String> {
        self.inner.state().violations.clone()
    }

    /// Answers the next `times` calls with `status` (429 with `Retry-After`
    /// when `retry_after` is given; a 5xx otherwise).
    pub fn fail(&self, times: u32, status: u16, retry_after: Option<u64>) {
        self.inner.state().fault =
            Some(Fault { method: None, status, retry_after, remaining: Some(times), until: None });
    }

    /// Answers the next `times` calls of `method` (e.g. `POST`) with `status`.
    pub fn fail_method(&self, method: &str, times: u32, status: u16) {
        let fault =
            Fault { method: Some(method.to_owned()), status, retry_after: None, remaining: Some(times), until: None };
        self.inner.state().fault = Some(fault);
    }

    /// Answers every call with `status` for `span`.
    pub fn fail_for(&self, span: Duration, status: u16, retry_after: Option<u64>) {
        let until = Some(Instant::now() + span);
        self.inner.state().fault = Some(Fault { method: None, status, retry_after, remaining: None, until });
    }

    /// Moves the double's clock (the per-user restriction window) forward.
    pub fn advance(&self, by: Duration) {
        self.inner.state().skew += by;
    }

    /// Seals `plaintext` to the double's key (as a client would).
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let sealed = self.inner.secret_key.public_key().seal(&mut crypto_box::aead::OsRng, plaintext);
        B64.encode(sealed.expect("sealing into a Vec"))
    }

    /// Waits until `pred` holds for the double (checked after every call),
    /// at most `timeout`; whether it did.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&Self) -> bool) -> bool {
        let mut rx = self.inner.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return pred(self);
            }
        }
    }
}

/// Which of the served operations a request is.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Publish(u64),
    GetRestriction(u64, u64),
    PatchRestriction(u64, u64),
    PublicKey(u64),
    ListSecrets(u64),
    CreateSecret(u64),
    UpdateSecret(u64, String),
    DeleteSecret(u64, String),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/cloud/v2/universes/")?;
        if let Some(u) = rest.strip_suffix(":publishMessage") {
            return (method == Method::POST).then_some(Self::Publish(u.parse().ok()?));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let u: u64 = parts[0].parse().ok()?;
        Some(match (method.as_str(), &parts[1..]) {
            ("GET", ["user-restrictions", id]) => Self::GetRestriction(u, id.parse().ok()?),
            ("PATCH", ["user-restrictions", id]) => Self::PatchRestriction(u, id.parse().ok()?),
            ("GET", ["secrets", "public-key"]) => Self::PublicKey(u),
            ("GET", ["secrets"]) => Self::ListSecrets(u),
            ("POST", ["secrets"]) => Self::CreateSecret(u),
            ("PATCH", ["secrets", id]) => Self::UpdateSecret(u, (*id).to_owned()),
            ("DELETE", ["secrets", id]) => Self::DeleteSecret(u, (*id).to_owned()),
            _ => return None,
        })
    }

    /// The Secrets store answers errors as `ProblemDetails`; v2 as `{code, message}`.
    fn is_secrets(&self) -> bool {
        matches!(
            self,
            Self::PublicKey(_)
                | Self::ListSecrets(_)
                | Self::CreateSecret(_)
                | Self::UpdateSecret(..)
                | Self::DeleteSecret(..)
        )
    }
}

/// An answer: status, JSON body (or none), headers.
struct Answer {
    status: u16,
    body: Option<Value>,
    retry_after: Option<u64>,
}

fn ok(status: u16, body: Option<Value>) -> Answer {
    Answer { status, body, retry_after: None }
}

/// An error in the shape the route's API uses.
fn error(route: Option<&Route>, status: u16, message: &str) -> Answer {
    let code = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    };
    let body = match route {
        // The gateway's own: a missing key, a rate limit, an outage.
        _ if status == 401 || status == 429 || status >= 500 => {
            if route.is_some_and(|r| !r.is_secrets()) && status != 401 {
                json!({"code": code, "message": message})
            } else {
                json!({"errors": [{"code": 0, "message": message}]})
            }
        }
        Some(r) if r.is_secrets() => {
            json!({"title": code, "status": status.to_string(), "detail": message})
        }
        _ => json!({"code": code, "message": message}),
    };
    Answer { status, body: Some(body), retry_after: None }
}

async fn handle(
    axum::extract::State(inner): axum::extract::State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let route = Route::parse(&method, &path);
    let now = Utc::now();
    let mut violations = Vec::new();
    let answer = answer(
        &inner,
        route.as_ref(),
        &method,
        &path,
        &query,
        &bytes,
        body.as_ref(),
        api_key.as_deref(),
        &mut violations,
    );
    // Every answer is held to the operation's declared responses too.
    if let Some(spec) = spec::spec() {
        if let Some((op, _)) = spec.find(method.as_str(), &path) {
            for e in spec.validate_response(op, answer.status, answer.body.as_ref()) {
                violations.push(format!("the double's own answer to {method} {path}: {e}"));
            }
        }
    }
    {
        let mut st = inner.state();
        st.violations.extend(violations);
        st.calls.push(Call {
            at: now,
            method: method.to_string(),
            path: path.clone(),
            query,
            body,
            status: answer.status,
            api_key: api_key.map(|_| "********".to_owned()),
        });
    }
    inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    let mut resp = Response::builder().status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK));
    if let Some(secs) = answer.retry_after {
        resp = resp.header("retry-after", HeaderValue::from(secs));
    }
    match answer.body {
        Some(b) => resp.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => resp.body(Body::empty()),
    }
    .expect("a valid response")
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(clippy::too_many_arguments)]
fn answer(
    inner: &Inner,
    route: Option<&Route>,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    raw: &Bytes,
    body: Option<&Value>,
    api_key: Option<&str>,
    violations: &mut Vec<String>,
) -> Answer {
    let Some(route) = route else {
        violations.push(format!("{method} {path}: not an operation the double serves"));
        return error(None, 404, "no such route");
    };
    let Some(key) = api_key else {
        violations.push(format!("{method} {path}: no x-api-key"));
        return error(Some(route), 401, "Invalid API Key");
    };
    if !inner.state().keys.contains(key) {
        return error(Some(route), 403, "The API key is not allowed to act on this universe");
    }
    // Faults come before anything is changed.
    {
        let mut st = inner.state();
        if let Some(f) = st.fault.as_mut() {
            let live = f.remaining.is_none_or(|n| n > 0) && f.until.is_none_or(|u| Instant::now() < u);
            let applies = f.method.as_deref().is_none_or(|m| m == method.as_str());
            if live && applies {
                if let Some(n) = f.remaining.as_mut() {
                    *n -= 1;
                }
                let (status, retry_after) = (f.status, f.retry_after);
                let mut a = error(Some(route), status, "the double was told to fail this call");
                a.retry_after = retry_after;
                return a;
            }
            if !live {
                st.fault = None;
            }
        }
    }
    if !raw.is_empty() && body.is_none() {
        violations.push(format!("{method} {path}: the body is not JSON"));
        return error(Some(route), 400, "the body is not JSON");
    }
    if let Some(spec) = spec::spec() {
        match spec.find(method.as_str(), path) {
            Some((op, params)) => {
                let errors = spec.validate_request(op, &params, query, body);
                if !errors.is_empty() {
                    let text = errors.join("; ");
                    violations.push(format!("{method} {path}: {text}"));
                    return error(Some(route), 400, &text);
                }
            }
            None => violations.push(format!("{method} {path}: no operation in Roblox's descriptions")),
        }
    }
    let mut refuse = |status: u16, message: String| {
        violations.push(format!("{method} {path}: {message}"));
        error(Some(route), status, &message)
    };
    let now = Utc::now();
    let body = body.cloned().unwrap_or(Value::Null);
    match route {
        Route::Publish(universe) => {
            let topic = body["topic"].as_str().unwrap_or_default().to_owned();
            let message = body["message"].as_str().unwrap_or_default().to_owned();
            if topic.is_empty() || topic.chars().count() > MAX_TOPIC_CHARS {
                return refuse(400, format!("the topic must be 1 to {MAX_TOPIC_CHARS} characters"));
            }
            if message.len() > MAX_MESSAGE_BYTES {
                return refuse(400, format!("the message is {} bytes, over {MAX_MESSAGE_BYTES}", message.len()));
            }
            inner.state().published.push(Published { at: now, universe_id: *universe, topic, message });
            ok(200, None)
        }
        Route::GetRestriction(universe, user) => {
            let st = inner.state();
            let restriction = st.restrictions.get(&(*universe, *user)).cloned().unwrap_or(json!({"active": false}));
            ok(200, Some(restriction_body(*universe, *user, restriction, now)))
        }
        Route::PatchRestriction(universe, user) => {
            let mask: Vec<&str> = query.iter().filter(|(k, _)| k == "updateMask").map(|(_, v)| v.as_str()).collect();
            if mask != ["gameJoinRestriction"] {
                return refuse(400, format!("updateMask must be gameJoinRestriction (the whole field), not {mask:?}"));
            }
            let r = body["gameJoinRestriction"].clone();
            if !r.is_object() {
                return refuse(400, "gameJoinRestriction is required".into());
            }
            for (field, max) in [("displayReason", MAX_DISPLAY_REASON), ("privateReason", MAX_PRIVATE_REASON)] {
                if r[field].as_str().is_some_and(|s| s.chars().count() > max) {
                    return refuse(400, format!("{field} is over {max} characters"));
                }
            }
            if let Some(d) = r.get("duration") {
                let secs = d.as_str().and_then(|s| s.strip_suffix('s')).and_then(|s| s.parse::<u64>().ok());
                if !secs.is_some_and(|s| (1..=315_576_000_000).contains(&s)) {
                    return refuse(400, format!("duration {d} is not whole seconds from 1s to 315576000000s"));
                }
            }
            let mut st = inner.state();
            let at = Instant::now() + st.skew;
            let recent = st.restriction_updates.entry((*universe, *user)).or_default();
            recent.retain(|t| at.duration_since(*t) < Duration::from_secs(60));
            if recent.len() >= RESTRICTION_UPDATES_PER_MINUTE {
                drop(st);
                let mut a = refuse(429, format!("user {user}: over {RESTRICTION_UPDATES_PER_MINUTE} updates a minute"));
                a.retry_after = Some(60);
                return a;
            }
            recent.push(at);
            let mut stored = r.clone();
            stored["inherited"] = json!(false);
            if stored["active"] == true {
                stored["startTime"] = json!(now_text(now));
            }
            st.restrictions.insert((*universe, *user), stored.clone());
            ok(200, Some(restriction_body(*universe, *user, stored, now)))
        }
        Route::PublicKey(_) => {
            let pk = B64.encode(inner.secret_key.public_key().as_bytes());
            ok(200, Some(json!({"id": "public-key", "secret": pk, "key_id": KEY_ID})))
        }
        Route::ListSecrets(universe) => {
            let limit =
                query.iter().find(|(k, _)| k == "limit").and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(10);
            if !(1..=500).contains(&limit) {
                return refuse(400, "limit must be 1 to 500".into());
            }
            let after = query.iter().find(|(k, _)| k == "cursor").map(|(_, v)| v.clone());
            let st = inner.state();
            let all = st.secrets.get(universe).cloned().unwrap_or_default();
            let page: Vec<(&String, &StoredSecret)> =
                all.iter().filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a)).take(limit).collect();
            let next = (page.len() == limit).then(|| page.last().map(|(id, _)| (*id).clone())).flatten();
            let secrets: Vec<Value> = page.iter().map(|(id, s)| secret_body(id, s)).collect();
            ok(200, Some(json!({"secrets": secrets, "nextPageCursor": next, "previousPageCursor": null})))
        }
        Route::CreateSecret(universe) | Route::UpdateSecret(universe, _) => {
            let id = match route {
                Route::UpdateSecret(_, id) => {
                    if body["id"].as_str().is_some_and(|b| b != id) {
                        return refuse(400, "the secret id cannot be changed".into());
                    }
                    id.clone()
                }
                _ => body["id"].as_str().unwrap_or_default().to_owned(),
            };
            if !valid_secret_id(&id) {
                return refuse(400, format!("secret id {id:?} does not match ^[A-Za-z_][A-Za-z0-9_]{{0,63}}$"));
            }
            if body["key_id"].as_str() != Some(KEY_ID) {
                return refuse(400, format!("key_id must be the public key's ({KEY_ID})"));
            }
            let Some(sealed) = body["secret"].as_str().and_then(|s| B64.decode(s).ok()) else {
                return refuse(400, "secret must be base64".into());
            };
            let Ok(plain) = inner.secret_key.unseal(&sealed) else {
                return refuse(400, "secret is not a sealed box to this universe's public key".into());
            };
            let Ok(plaintext) = String::from_utf8(plain) else {
                return refuse(400, "the secret is not text".into());
            };
            if plaintext.chars().count() > MAX_SECRET_CHARS {
                return refuse(400, format!("the secret is over {MAX_SECRET_CHARS} characters"));
            }
            let domain = body["domain"].as_str().map(str::to_owned);
            let mut st = inner.state();
            let secrets = st.secrets.entry(*universe).or_default();
            let existing = secrets.get(&id).cloned();
            let stored = match (route, existing) {
                (Route::CreateSecret(_), Some(_)) => {
                    drop(st);
                    return error(Some(route), 409, &format!("secret {id} already exists"));
                }
                (Route::CreateSecret(_), None) if secrets.len() >= MAX_SECRETS => {
                    drop(st);
                    return refuse(400, format!("a universe holds at most {MAX_SECRETS} secrets"));
                }
                (Route::CreateSecret(_), None) => {
                    StoredSecret { plaintext, domain, key_id: KEY_ID.into(), created: now, updated: now }
                }
                (_, None) => {
                    drop(st);
                    return error(Some(route), 404, &format!("no secret {id}"));
                }
                (_, Some(old)) => {
                    StoredSecret { plaintext, domain, key_id: KEY_ID.into(), created: old.created, updated: now }
                }
            };
            secrets.insert(id.clone(), stored.clone());
            let status = if matches!(route, Route::CreateSecret(_)) { 201 } else { 200 };
            ok(status, Some(secret_body(&id, &stored)))
        }
        Route::DeleteSecret(universe, id) => {
            let removed = inner.state().secrets.get_mut(universe).and_then(|s| s.remove(id));
            match removed {
                Some(_) => ok(200, None),
                None => error(Some(route), 404, &format!("no secret {id}")),
            }
        }
    }
}

fn valid_secret_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn restriction_body(universe: u64, user: u64, restriction: Value, now: DateTime<Utc>) -> Value {
    json!({
        "path": format!("universes/{universe}/user-restrictions/{user}"),
        "updateTime": now_text(now),
        "user": format!("users/{user}"),
        "gameJoinRestriction": restriction,
    })
}

fn secret_body(id: &str, s: &StoredSecret) -> Value {
    json!({
        "id": id,
        "domain": s.domain,
        "key_id": s.key_id,
        "create_time": now_text(s.created),
        "update_time": now_text(s.updated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_follow_roblox_rule() {
        assert!(valid_secret_id("guildkey"));
        assert!(valid_secret_id("_a1"));
        assert!(!valid_secret_id("1abc"));
        assert!(!valid_secret_id(""));
        assert!(!valid_secret_id("a-b"));
        assert!(!valid_secret_id(&"a".repeat(65)));
        assert!(valid_secret_id(&"a".repeat(64)));
    }
}
