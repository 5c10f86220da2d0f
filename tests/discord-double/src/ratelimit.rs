//! Discord's rate limits (discord-api-docs, `topics/rate-limits.mdx`): per-route buckets keyed
//! by the route and its top-level resource (channel, guild, webhook + token; an interaction's
//! id + token), the bot's global limit of 50 requests a second that interaction endpoints are
//! exempt from, and Discord's headers on every answer and its 429 body.
//!
//! Buckets are fixed windows: the first request opens a window of [`RouteLimit::window`];
//! up to [`RouteLimit::limit`] requests pass in it, the next ones get 429 until it ends.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// One bucket's limit: `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteLimit {
    pub limit: u32,
    pub window: Duration,
}

impl RouteLimit {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit: limit.max(1), window }
    }
}

/// The double's rate limits ([`crate::DoubleConfig::rate_limits`]).
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Requests a second one bot token may make outside interaction endpoints (Discord: 50);
    /// `None` turns the global limit off.
    pub global_per_second: Option<u32>,
    /// Every route's bucket unless [`Self::routes`] names it; `None` turns route buckets off
    /// (the headers still come, with `Remaining` never falling).
    pub route: Option<RouteLimit>,
    /// Per route: (method, template as in [`crate::RecordedCall::route`], limit).
    pub routes: Vec<(String, String, RouteLimit)>,
}

impl Default for RateLimitConfig {
    /// Discord's global 50 a second, and 50 a second per route and resource: generous, so
    /// tests that do not care never meet them, but real (headers, buckets, 429s).
    fn default() -> Self {
        Self {
            global_per_second: Some(50),
            route: Some(RouteLimit::new(50, Duration::from_secs(1))),
            routes: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// No limits at all (headers still sent).
    pub fn off() -> Self {
        Self { global_per_second: None, route: None, routes: Vec::new() }
    }

    /// Sets one route's bucket, e.g. `("PUT", "/guilds/{guild_id}/bans/{user_id}", 5, 5 s)`.
    pub fn with_route(mut self, method: &str, route: &str, limit: u32, window: Duration) -> Self {
        let route = route.trim_start_matches("/api/v10").to_owned();
        self.routes.push((method.to_ascii_uppercase(), route, RouteLimit::new(limit, window)));
        self
    }

    fn limit_for(&self, method: &str, route: &str) -> Option<RouteLimit> {
        self.routes.iter().find(|(m, r, _)| m == method && r == route).map(|(_, _, l)| *l).or(self.route)
    }
}

/// Interaction endpoints (the callback and the interaction's webhook) are not bound to the
/// global limit.
pub fn is_interaction_endpoint(route: &str) -> bool {
    route.starts_with("/interactions/") || route.starts_with("/webhooks/{webhook_id}/{webhook_token}")
}

/// The top-level resource a bucket is kept per: `channel_id`, `guild_id`, `webhook_id` with
/// its token, an interaction's id with its token; empty when the route has none.
pub fn major_parameter(params: &HashMap<String, String>) -> String {
    let get = |k: &str| params.get(k).map(String::as_str);
    match (get("channel_id"), get("guild_id"), get("webhook_id"), get("interaction_id")) {
        (Some(c), ..) => format!("channel:{c}"),
        (_, Some(g), ..) => format!("guild:{g}"),
        (_, _, Some(w), _) => format!("webhook:{w}:{}", get("webhook_token").unwrap_or("")),
        (_, _, _, Some(i)) => format!("interaction:{i}:{}", get("interaction_token").unwrap_or("")),
        _ => String::new(),
    }
}

/// A bucket's id as `X-RateLimit-Bucket` shows it: the route and method, not the resource.
pub fn bucket_id(method: &str, route: &str) -> String {
    let h = format!("{method} {route}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

#[derive(Clone, Copy, Debug)]
struct Window {
    opened: Instant,
    used: u32,
}

impl Window {
    /// The window in force at `now` for `length` (a new one when the last ended).
    fn current(slot: &mut Option<Window>, now: Instant, length: Duration) -> &mut Window {
        if slot.is_none_or(|w| now >= w.opened + length) {
            *slot = Some(Window { opened: now, used: 0 });
        }
        slot.as_mut().expect("just set")
    }
}

/// What the rate limiter says of one request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; send these headers with the answer.
    Pass(Vec<(String, String)>),
    /// Answer 429 with this body and these headers.
    Limited { body: Value, headers: Vec<(String, String)> },
}

/// Every bucket and every token's global window.
#[derive(Default)]
pub struct RateLimiter {
    buckets: HashMap<(String, String), Option<Window>>,
    global: HashMap<String, Option<Window>>,
}

fn epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn retry_after_header(secs: f64) -> String {
    // Discord's `Retry-After` header is whole seconds (its body's `retry_after` has decimals).
    (secs.ceil().max(1.0) as u64).to_string()
}

impl RateLimiter {
    /// Counts a request against the global limit of `auth` (its `Authorization` header) and
    /// the bucket of `method route` for its major parameter.
    pub fn check(
        &mut self,
        cfg: &RateLimitConfig,
        auth: &str,
        method: &str,
        route: &str,
        params: &HashMap<String, String>,
        now: Instant,
    ) -> Verdict {
        let wall = SystemTime::now();
        if let (Some(per_second), false) = (cfg.global_per_second, is_interaction_endpoint(route)) {
            let slot = self.global.entry(auth.to_owned()).or_default();
            let window = Window::current(slot, now, Duration::from_secs(1));
            if window.used >= per_second {
                let wait = (window.opened + Duration::from_secs(1)).saturating_duration_since(now).as_secs_f64();
                return Verdict::Limited {
                    body: json!({ "message": "You are being rate limited.", "retry_after": round3(wait), "global": true }),
                    headers: vec![
                        ("retry-after".into(), retry_after_header(wait)),
                        ("x-ratelimit-global".into(), "true".into()),
                        ("x-ratelimit-scope".into(), "global".into()),
                    ],
                };
            }
            window.used += 1;
        }
        let limit = cfg.limit_for(method, route).unwrap_or(RouteLimit::new(u32::MAX, Duration::from_secs(1)));
        let slot = self.buckets.entry((bucket_id(method, route), major_parameter(params))).or_default();
        let window = Window::current(slot, now, limit.window);
        let reset_after = (window.opened + limit.window).saturating_duration_since(now).as_secs_f64();
        let limited = window.used >= limit.limit;
        if !limited {
            window.used += 1;
        }
        let mut headers = vec![
            ("x-ratelimit-limit".into(), limit.limit.to_string()),
            ("x-ratelimit-remaining".into(), (limit.limit - window.used).to_string()),
            ("x-ratelimit-reset".into(), format!("{:.3}", epoch(wall) + reset_after)),
            ("x-ratelimit-reset-after".into(), format!("{reset_after:.3}")),
            ("x-ratelimit-bucket".into(), bucket_id(method, route)),
        ];
        if !limited {
            return Verdict::Pass(headers);
        }
        headers.push(("retry-after".into(), retry_after_header(reset_after)));
        headers.push(("x-ratelimit-scope".into(), "user".into()));
        Verdict::Limited {
            body: json!({ "message": "You are being rate limited.", "retry_after": round3(reset_after), "global": false }),
            headers,
        }
    }
}

fn round3(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn major_parameters_as_documented() {
        assert_eq!(major_parameter(&params(&[("guild_id", "1"), ("user_id", "2")])), "guild:1");
        assert_eq!(major_parameter(&params(&[("channel_id", "3"), ("message_id", "4")])), "channel:3");
        assert_eq!(major_parameter(&params(&[("webhook_id", "5"), ("webhook_token", "t")])), "webhook:5:t");
        assert_eq!(major_parameter(&params(&[("user_id", "2")])), "");
    }

    #[test]
    fn a_bucket_fills_then_resets() {
        let cfg =
            RateLimitConfig::off().with_route("PUT", "/guilds/{guild_id}/bans/{user_id}", 2, Duration::from_secs(5));
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let p = params(&[("guild_id", "1"), ("user_id", "2")]);
        let route = "/guilds/{guild_id}/bans/{user_id}";
        assert!(matches!(rl.check(&cfg, "a", "PUT", route, &p, t0), Verdict::Pass(_)));
        assert!(matches!(rl.check(&cfg, "a", "PUT", route, &p, t0), Verdict::Pass(_)));
        let Verdict::Limited { body, headers } = rl.check(&cfg, "a", "PUT", route, &p, t0) else { panic!() };
        assert_eq!(body["global"], false);
        assert!(headers.contains(&("x-ratelimit-scope".into(), "user".into())));
        assert!(headers.contains(&("retry-after".into(), "5".into())));
        assert!(matches!(rl.check(&cfg, "a", "PUT", route, &p, t0 + Duration::from_secs(5)), Verdict::Pass(_)));
    }
}
