//! Fault injection: make chosen REST calls fail (500, 403, 404, 429 with `retry_after`, any
//! Discord error JSON) or slow, once, n times or until cleared.
//!
//! ```
//! use discord_double::FaultRule;
//! // The next two audit posts fail with 500, then the channel works again.
//! let rule = FaultRule::on("POST", "/channels/{channel_id}/messages").status(500).times(2);
//! // Every interaction callback is rate limited for 1.5 s.
//! let rule = FaultRule::on("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
//!     .rate_limited(1.5, false);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// What a predicate sees of a request.
#[derive(Clone, Debug)]
pub struct FaultRequest<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path without the `/api/v10` prefix.
    pub path: &'a str,
    /// Route template, when known.
    pub route: Option<&'a str>,
    /// Operation id, when known.
    pub operation_id: Option<&'a str>,
    /// JSON body.
    pub body: Option<&'a Value>,
}

type Predicate = Arc<dyn Fn(&FaultRequest<'_>) -> bool + Send + Sync>;

#[derive(Clone)]
enum Matcher {
    Route { method: String, route: String },
    Predicate(Predicate),
}

/// How often a rule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// The next matching request only.
    Once,
    /// The next n matching requests.
    N(u32),
    /// Until [`crate::Double::clear_faults`].
    Always,
}

/// What the faulty answer is.
#[derive(Clone, Debug)]
pub struct FaultResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Extra headers (e.g. `Retry-After`).
    pub headers: Vec<(String, String)>,
}

/// One rule: which requests, what answer, optional latency, how often.
#[derive(Clone)]
pub struct FaultRule {
    matcher: Matcher,
    response: Option<FaultResponse>,
    latency: Option<Duration>,
    times: Times,
}

impl fmt::Debug for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.matcher {
            Matcher::Route { method, route } => write!(f, "{method} {route}")?,
            Matcher::Predicate(_) => write!(f, "<predicate>")?,
        }
        if let Some(r) = &self.response {
            write!(f, " -> {} {}", r.status, r.body)?;
        }
        if let Some(l) = self.latency {
            write!(f, " after {l:?}")?;
        }
        write!(f, " ({:?})", self.times)
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        400 => "400: Bad Request",
        401 => "401: Unauthorized",
        403 => "403: Forbidden",
        404 => "404: Not Found",
        405 => "405: Method Not Allowed",
        429 => "You are being rate limited.",
        502 => "502: Bad Gateway",
        503 => "503: Service Unavailable",
        _ => "500: Internal Server Error",
    }
}

impl FaultRule {
    /// Requests with `method` ("*" = any) on `route`, a template as in
    /// [`crate::RecordedCall::route`] (with or without the `/api/v10` prefix).
    /// Without a status the rule only adds latency. Fires [`Times::Always`] unless limited.
    pub fn on(method: &str, route: &str) -> Self {
        FaultRule {
            matcher: Matcher::Route {
                method: method.to_ascii_uppercase(),
                route: route.trim_start_matches("/api/v10").to_string(),
            },
            response: None,
            latency: None,
            times: Times::Always,
        }
    }

    /// Requests for which `pred` is true.
    pub fn matching(pred: impl Fn(&FaultRequest<'_>) -> bool + Send + Sync + 'static) -> Self {
        FaultRule { matcher: Matcher::Predicate(Arc::new(pred)), response: None, latency: None, times: Times::Always }
    }

    /// Every request about one guild (a path under `/guilds/{guild_id}/`):
    /// with [`Self::latency`], a guild whose Discord answers slowly.
    pub fn for_guild(guild_id: u64) -> Self {
        let prefix = format!("/guilds/{guild_id}/");
        Self::matching(move |r| r.path.starts_with(&prefix) || r.path == prefix.trim_end_matches('/'))
    }

    /// Every request about one channel (a path under `/channels/{channel_id}/`):
    /// with [`Self::latency`], a channel Discord answers slowly.
    pub fn for_channel(channel_id: u64) -> Self {
        let prefix = format!("/channels/{channel_id}/");
        Self::matching(move |r| r.path.starts_with(&prefix) || r.path == prefix.trim_end_matches('/'))
    }

    /// Answer with `status` and Discord's generic body `{"code": 0, "message": "500: ..."}`.
    pub fn status(self, status: u16) -> Self {
        if status == 429 {
            return self.rate_limited(1.0, false);
        }
        self.discord_error(status, 0, default_message(status))
    }

    /// Answer with `status` and `{"code": code, "message": message}`, e.g.
    /// `discord_error(403, 50013, "Missing Permissions")`.
    pub fn discord_error(mut self, status: u16, code: u64, message: &str) -> Self {
        self.response =
            Some(FaultResponse { status, body: json!({"code": code, "message": message}), headers: vec![] });
        self
    }

    /// Answer 429 like Discord: body `{"message", "retry_after", "global", "code": 0}` and
    /// headers `Retry-After`, `X-RateLimit-Scope`, `X-RateLimit-Global` (when global). The
    /// route's bucket headers come with it (`Remaining` 0 and `Reset-After` the wait here).
    pub fn rate_limited(self, retry_after_secs: f64, global: bool) -> Self {
        self.rate_limited_scope(retry_after_secs, if global { "global" } else { "user" })
    }

    /// [`Self::rate_limited`] with `X-RateLimit-Scope: shared`: the resource is rate limited
    /// for everyone (Discord's "The resource is being rate limited."). Discord does not count
    /// these toward the invalid-request limit.
    pub fn shared_rate_limited(self, retry_after_secs: f64) -> Self {
        self.rate_limited_scope(retry_after_secs, "shared")
    }

    fn rate_limited_scope(mut self, retry_after_secs: f64, scope: &str) -> Self {
        let global = scope == "global";
        let mut headers = vec![
            ("retry-after".to_string(), (retry_after_secs.ceil() as u64).to_string()),
            ("x-ratelimit-scope".to_string(), scope.to_string()),
        ];
        if global {
            headers.push(("x-ratelimit-global".to_string(), "true".to_string()));
        } else if scope == "user" {
            headers.push(("x-ratelimit-remaining".to_string(), "0".to_string()));
            headers.push(("x-ratelimit-reset-after".to_string(), format!("{retry_after_secs:.3}")));
        }
        let message =
            if scope == "shared" { "The resource is being rate limited." } else { "You are being rate limited." };
        self.response = Some(FaultResponse {
            status: 429,
            body: json!({
                "message": message,
                "retry_after": retry_after_secs,
                "global": global,
                "code": 0,
            }),
            headers,
        });
        self
    }

    /// Answer with exactly this status and body.
    pub fn respond(mut self, status: u16, body: Value) -> Self {
        self.response = Some(FaultResponse { status, body, headers: vec![] });
        self
    }

    /// Wait this long before answering (with the fault, or normally when no status is set).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Fire for the next matching request only.
    pub fn once(mut self) -> Self {
        self.times = Times::Once;
        self
    }

    /// Fire for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = if n == 1 { Times::Once } else { Times::N(n) };
        self
    }

    /// Fire until cleared (the default).
    pub fn always(mut self) -> Self {
        self.times = Times::Always;
        self
    }

    fn matches(&self, req: &FaultRequest<'_>) -> bool {
        match &self.matcher {
            Matcher::Route { method, route } => {
                (method == "*" || method == req.method) && (req.route == Some(route.as_str()) || req.path == route)
            }
            Matcher::Predicate(p) => p(req),
        }
    }
}

/// The active rules.
#[derive(Default)]
pub struct Faults {
    rules: Vec<(FaultRule, u32)>,
}

/// What to do with a request.
pub struct FaultAction {
    /// Sleep first.
    pub latency: Option<Duration>,
    /// Then answer with this instead of handling the request.
    pub response: Option<FaultResponse>,
    /// Description for the recorder.
    pub description: String,
}

impl Faults {
    /// Adds a rule (rules are tried in the order added; the first match fires).
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push((rule, 0));
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The first matching rule's action, consuming one use of it.
    pub fn take(&mut self, req: &FaultRequest<'_>) -> Option<FaultAction> {
        let idx = self.rules.iter().position(|(r, _)| r.matches(req))?;
        let (rule, used) = &mut self.rules[idx];
        *used += 1;
        let action =
            FaultAction { latency: rule.latency, response: rule.response.clone(), description: rule.to_string() };
        let exhausted = match rule.times {
            Times::Once => *used >= 1,
            Times::N(n) => *used >= n,
            Times::Always => false,
        };
        if exhausted {
            self.rules.remove(idx);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(route: &'a str) -> FaultRequest<'a> {
        FaultRequest {
            method: "POST",
            path: "/channels/1/messages",
            route: Some(route),
            operation_id: Some("create_message"),
            body: None,
        }
    }

    #[test]
    fn counts_are_honoured() {
        let mut f = Faults::default();
        f.add(FaultRule::on("POST", "/api/v10/channels/{channel_id}/messages").status(500).times(2));
        let r = req("/channels/{channel_id}/messages");
        assert_eq!(f.take(&r).unwrap().response.unwrap().status, 500);
        assert!(f.take(&r).is_some());
        assert!(f.take(&r).is_none());
    }

    #[test]
    fn a_guild_or_channel_rule_matches_only_its_own_paths() {
        let at = |path: &'static str| FaultRequest { method: "GET", path, route: None, operation_id: None, body: None };
        let guild = FaultRule::for_guild(12);
        assert!(guild.matches(&at("/guilds/12/bans/5")) && guild.matches(&at("/guilds/12")));
        assert!(!guild.matches(&at("/guilds/123/bans/5")) && !guild.matches(&at("/channels/12/messages")));
        let channel = FaultRule::for_channel(7);
        assert!(channel.matches(&at("/channels/7/messages")) && !channel.matches(&at("/channels/70/messages")));
    }

    #[test]
    fn rate_limit_body_and_headers() {
        let rule = FaultRule::on("*", "/x").rate_limited(2.5, true);
        let r = rule.response.unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.body["retry_after"], 2.5);
        assert_eq!(r.body["global"], true);
        assert!(r.headers.contains(&("retry-after".into(), "3".into())));
    }
}
