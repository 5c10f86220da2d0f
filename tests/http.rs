//! The HTTP listener, black-box: the real binary on a temp database, its
//! bot connected to the Discord double, spoken to over loopback HTTP.
//!
//! Covers SPEC §6 except what the Discord-acting routes do (guild info, bans,
//! roles have their own suite): the envelope, authentication and its failure
//! reasons, IP allow-lists and `X-Forwarded-For`, rotation, rate limits, the
//! audit log, metrics, the OpenAPI document, batched last-used times and
//! secret hygiene. Keys are made with the operator CLI, a separate process,
//! so every test also leans on "another process's change is live within 1 s".

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use support::{ids, json, spawn_app, spawn_app_with, token_regex, App, Options, BOT_TOKEN};

const DEMO: u64 = ids::DEMO_GUILD_ID;
const OTHER: u64 = ids::OTHER_GUILD_ID;
const ALL_SCOPES: &str = "guild.read,bans.read,bans.write,roles.write,audit.read";
/// SPEC §1/§6: a change made by another process is live within one second.
const CROSS_PROCESS: Duration = Duration::from_secs(1);
/// `AUTH_FAILURE_BURST` in src/http/mod.rs: failed authentications one IP may
/// make before it is throttled.
const AUTH_FAILURE_BURST: usize = 20;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A response read whole, so assertions can show the body.
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    #[track_caller]
    fn header_u64(&self, name: &str) -> u64 {
        let raw =
            self.header(name).unwrap_or_else(|| panic!("no {name} header on a {} reply: {}", self.status, self.text));
        raw.parse().unwrap_or_else(|_| panic!("{name}: {raw:?} is not a whole number"))
    }

    /// Asserts a success: exactly `{"success": true, "data": ...}`; returns `data`.
    #[track_caller]
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.text);
        let body = self.json();
        assert_eq!(keys_of(&body), ["data", "success"], "success envelope has other fields: {body}");
        assert_eq!(body["success"], true, "{body}");
        body["data"].clone()
    }

    /// Asserts a failure with this status and reason, in exactly the
    /// envelope `{success: false, data: {}, error: {code, reason, message}}`.
    #[track_caller]
    fn err(&self, status: u16, reason: &str) -> &Self {
        assert_eq!(
            (self.status, self.json()["error"]["reason"].as_str()),
            (status, Some(reason)),
            "expected {status} {reason}: {}",
            self.text
        );
        assert_error_envelope(&self.json(), status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "content-type {content_type:?}");
        self
    }

    #[track_caller]
    fn has_rate_limit_headers(&self) -> &Self {
        for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            self.header_u64(name);
        }
        self
    }
}

#[track_caller]
fn assert_error_envelope(body: &Value, status: u16) {
    assert_eq!(keys_of(body), ["data", "error", "success"], "error envelope has other fields: {body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["data"], json!({}), "{body}");
    assert_eq!(keys_of(&body["error"]), ["code", "message", "reason"], "error object has other fields: {body}");
    assert_eq!(body["error"]["code"], status, "error.code is the HTTP status: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error.message is a non-empty string: {body}");
}

fn keys_of(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    keys
}

async fn send(req: RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // Through the support helper, so the end-of-test secret scan sees it.
    let text = support::text(resp).await;
    Reply { status, headers, text }
}

async fn get(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.get(app.url(path)).bearer_auth(token)).await
}

async fn get_anon(app: &App, path: &str) -> Reply {
    send(app.http.get(app.url(path))).await
}

/// GET with a key and an `X-Forwarded-For` header.
async fn get_via(app: &App, path: &str, token: &str, forwarded_for: &str) -> Reply {
    send(app.http.get(app.url(path)).bearer_auth(token).header("x-forwarded-for", forwarded_for)).await
}

/// Waits for a change the CLI (another process) just committed to be live.
async fn let_the_listener_catch_up() {
    tokio::time::sleep(CROSS_PROCESS + Duration::from_millis(200)).await;
}

/// Polls `GET path` with `token` every 50 ms until `done`, for at most
/// `within`; returns the last reply and when it came.
async fn poll(
    app: &App,
    path: &str,
    token: &str,
    within: Duration,
    done: impl Fn(&Reply) -> bool,
) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let reply = get(app, path, token).await;
        if done(&reply) || started.elapsed() > within {
            return (reply, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the CLI and asserts it succeeded; returns stdout.
#[track_caller]
fn cli_ok(app: &App, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(out.status.success(), "guildkey {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 stdout").trim().to_owned()
}

/// `guildkey keys list --guild G --json`.
fn list_keys(app: &App, guild: u64) -> Vec<Value> {
    let out = cli_ok(app, &["keys", "list", "--guild", &guild.to_string(), "--json"]);
    serde_json::from_str::<Vec<Value>>(&out).expect("keys list --json prints a JSON array")
}

/// A key's listing by name.
fn listed(app: &App, guild: u64, name: &str) -> Value {
    list_keys(app, guild).into_iter().find(|k| k["name"] == name).unwrap_or_else(|| panic!("no key named {name}"))
}

/// SPEC §3's checksum, computed here independently of the crate: CRC-32
/// (IEEE) as 6 base62 digits, most significant first, zero-padded.
fn checksum(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

/// `body` followed by its valid checksum.
fn with_checksum(body: &str) -> String {
    format!("{body}{}", checksum(body))
}

/// A well-formed token (right shape, right checksum) that no key has.
fn unknown_token() -> String {
    let random = "Unkn0wn".repeat(5);
    with_checksum(&format!("gk_live_{}", &random[..32]))
}

/// Replaces the character at `i` with another alphanumeric one.
fn change_char(token: &str, i: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[i] = if chars[i] == 'x' { 'y' } else { 'x' };
    chars.into_iter().collect()
}

fn rfc3339(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}")).with_timezone(&Utc)
}

fn audit_path(guild: u64, query: &str) -> String {
    format!("/v1/guilds/{guild}/audit-log{query}")
}

// ---------------------------------------------------------------------------
// Verify and the envelope
// ---------------------------------------------------------------------------

#[tokio::test]
async fn verify_accepts_a_key_created_by_the_cli_and_describes_it() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "game server", "bans.read,guild.read", &[]);

    // The CLI runs in another process: the listener sees the key within a second.
    let_the_listener_catch_up().await;
    let reply = get(&app, "/v1/verify", &token).await;

    let data = reply.ok();
    reply.has_rate_limit_headers();
    let key = listed(&app, DEMO, "game server");
    assert_eq!(
        data,
        json!({
            "key_id": key["key_id"],
            "guild_id": DEMO.to_string(),
            "name": "game server",
            "prefix": &token[..12],
            "scopes": ["guild.read", "bans.read"],
            "environment": "live",
            "expires_at": null,
            "rate_limit_per_minute": 60,
        })
    );
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let app = spawn_app().await;
    // The bot says it is connected as soon as its session is ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let body = json(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
        if body["data"]["bot"] == "connected" || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, json!({"success": true, "data": {"status": "ok", "bot": "connected"}}));
}

/// `/healthz` and the bot's state while Discord refuses or is away, polled
/// every 2 s for a minute: always 200, the key keeps verifying.
async fn healthy_for_a_minute(app: &App, token: &str, state: &str) {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        let resp = app.http.get(app.url("/healthz")).send().await.expect("the listener answers");
        assert_eq!(resp.status(), 200, "after {:?}", started.elapsed());
        seen.push(json(resp).await["data"]["bot"].as_str().unwrap_or_default().to_owned());
        let verified = app.get("/v1/verify", token).await;
        assert_eq!(verified.status(), 200, "the key verifies after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(seen.iter().skip(1).all(|s| s == state || s == "connecting"), "bot states {seen:?}");
    assert!(seen.iter().any(|s| s == state), "bot states {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stays_up_while_discord_refuses_the_token_or_cannot_be_reached_and_names_the_cause() {
    use support::{spawn_against, Double, DoubleConfig};
    let strict =
        Double::start(DoubleConfig { bot_token: Some(BOT_TOKEN.into()), ..DoubleConfig::demo() }).await.unwrap();
    let wrong_token = vec![("DISCORD_TOKEN".to_owned(), "MTEwMDAwMDAwMDAwMDAwMDAwMQ.double.not-the-token".to_owned())];
    let refused = spawn_against(strict, Options { env: wrong_token, no_gateway: true, ..Options::default() }).await;
    let away = "http://127.0.0.1:9/api/v10";
    let env = vec![("DISCORD_API_BASE_URL".to_owned(), away.to_owned())];
    let unreachable = spawn_app_with(Options { env, no_gateway: true, ..Options::default() }).await;
    let (a, b) =
        (refused.create_key(DEMO, "a", "guild.read", &[]), unreachable.create_key(DEMO, "b", "guild.read", &[]));
    let_the_listener_catch_up().await;

    tokio::join!(
        healthy_for_a_minute(&refused, &a, "token_refused"),
        healthy_for_a_minute(&unreachable, &b, "unreachable")
    );
    let logged = |app: &App, needle: &str| app.logs().iter().any(|l| l.contains(needle));
    assert!(logged(&refused, "Discord refused the bot token (401 from"), "the refusal is named");
    assert!(logged(&unreachable, &format!("Discord could not be reached at {away}")), "the address is named");
    assert!(!logged(&unreachable, "refused the bot token"), "an unreachable Discord is not blamed on the token");
}

#[tokio::test]
async fn success_and_error_bodies_carry_exactly_the_envelope_fields() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "envelope", "bans.read", &[]);
    let_the_listener_catch_up().await;

    // Success: exactly {success, data}.
    get(&app, "/v1/verify", &token).await.ok();
    assert_eq!(get_anon(&app, "/healthz").await.ok(), json!({"status": "ok"}));

    // Failure: exactly {success, data: {}, error: {code, reason, message}},
    // for errors from the auth layer, the handlers and the router alike.
    get_anon(&app, "/v1/verify").await.err(401, "missing_key");
    get(&app, "/v1/verify", "gk_live_short").await.err(401, "malformed_key");
    get(&app, "/v1/verify", &unknown_token()).await.err(401, "invalid_key");
    get(&app, &audit_path(DEMO, ""), &token).await.err(403, "insufficient_scope");
    get(&app, &audit_path(OTHER, ""), &token).await.err(403, "guild_mismatch");
    get(&app, "/v1/guilds/abc/audit-log", &token).await.err(400, "bad_request");
    get_anon(&app, "/nope").await.err(404, "not_found");
    send(app.http.post(app.url("/healthz"))).await.err(405, "method_not_allowed");
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_bearer_token_get_missing_key_and_a_bearer_challenge() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "challenge", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let url = app.url("/v1/verify");

    let cases: [(&str, RequestBuilder); 5] = [
        ("no Authorization header", app.http.get(&url)),
        ("Basic scheme", app.http.get(&url).header("authorization", "Basic xyz")),
        ("Basic scheme carrying a real key", app.http.get(&url).header("authorization", format!("Basic {token}"))),
        ("empty Bearer", app.http.get(&url).header("authorization", "Bearer ")),
        ("token without a scheme", app.http.get(&url).header("authorization", token.clone())),
    ];
    for (what, req) in cases {
        let reply = send(req).await;
        reply.err(401, "missing_key");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}: WWW-Authenticate");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "schemes", "bans.read", &[]);
    let_the_listener_catch_up().await;

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply =
            send(app.http.get(app.url("/v1/verify")).header("authorization", format!("{scheme} {token}"))).await;
        assert_eq!(reply.ok()["name"], "schemes", "scheme {scheme:?}");
    }
}

#[tokio::test]
async fn tokens_of_the_wrong_shape_or_checksum_are_malformed_and_well_formed_unknown_ones_invalid() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "shape", "bans.read", &[]);
    let_the_listener_catch_up().await;

    // The CLI's token is exactly SPEC §3's format, checksum included.
    assert!(token_regex().is_match(&token) && token.len() == 46, "{token:?}");
    assert_eq!(token[40..], checksum(&token[..40]), "the checksum is CRC-32 in base62");

    let random = &token[8..40];
    let cases = [
        ("another prefix, valid checksum", with_checksum(&format!("xx_live_{random}"))),
        ("upper-case prefix", token.replacen("gk_", "GK_", 1)),
        ("an unknown environment, valid checksum", with_checksum(&format!("gk_prod_{random}"))),
        ("31 random characters, valid checksum", with_checksum(&format!("gk_live_{}", &random[1..]))),
        ("33 random characters, valid checksum", with_checksum(&format!("gk_live_{random}A"))),
        ("a non-base62 character, valid checksum", with_checksum(&format!("gk_live_-{}", &random[1..]))),
        ("truncated by one character", token[..45].to_owned()),
        ("one character too many", format!("{token}A")),
        ("a mistyped checksum", change_char(&token, 45)),
        ("a mistyped random character", change_char(&token, 20)),
        ("the display prefix alone", token[..12].to_owned()),
    ];
    assert!(cases.len() < AUTH_FAILURE_BURST, "stay under the failure throttle");
    for (what, bad) in &cases {
        let reply = get(&app, "/v1/verify", bad).await;
        assert_eq!(reply.json()["error"]["reason"], "malformed_key", "{what}: {bad}: {}", reply.text);
        reply.err(401, "malformed_key");
        assert!(!reply.text.contains(bad.as_str()), "{what}: the error echoes the presented token");
    }

    let unknown = unknown_token();
    assert!(token_regex().is_match(&unknown));
    let reply = get(&app, "/v1/verify", &unknown).await;
    reply.err(401, "invalid_key");
    assert!(!reply.text.contains(&unknown), "the error echoes the presented token");

    // The real key still works: none of this touched it.
    assert_eq!(get(&app, "/v1/verify", &token).await.ok()["name"], "shape");
}

#[tokio::test]
async fn a_key_revoked_with_the_cli_is_refused_within_a_second() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "doomed", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &token).await.ok();

    cli_ok(&app, &["keys", "revoke", &token[..12]]);
    let (reply, took) = poll(&app, "/v1/verify", &token, Duration::from_secs(3), |r| r.status != 200).await;

    reply.err(401, "key_revoked");
    assert!(took <= CROSS_PROCESS, "the revocation took {took:?} to reach the listener");
    // And it stays revoked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
}

#[tokio::test]
async fn an_expired_key_is_refused_with_key_expired() {
    let app = spawn_app().await;
    let created = Instant::now();
    let token = app.create_key(DEMO, "short-lived", "bans.read", &["--expires", "3s"]);
    let_the_listener_catch_up().await;

    let data = get(&app, "/v1/verify", &token).await.ok();
    let expires_at = rfc3339(&data["expires_at"]);
    let from_now = expires_at - Utc::now();
    assert!(from_now > chrono::Duration::zero() && from_now <= chrono::Duration::seconds(3), "expires_at {expires_at}");

    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(created.elapsed())).await;
    get(&app, "/v1/verify", &token).await.err(401, "key_expired");
}

#[tokio::test]
async fn a_key_acting_on_another_guild_gets_guild_mismatch_and_one_lacking_the_scope_insufficient_scope() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "reader", "audit.read", &[]);
    let banner = app.create_key(DEMO, "banner", "bans.read", &[]);
    let other = app.create_key(OTHER, "elsewhere", "audit.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, &audit_path(DEMO, ""), &reader).await.ok();
    get(&app, &audit_path(OTHER, ""), &reader).await.err(403, "guild_mismatch").has_rate_limit_headers();
    get(&app, &audit_path(DEMO, ""), &other).await.err(403, "guild_mismatch").has_rate_limit_headers();
    get(&app, &audit_path(DEMO, ""), &banner).await.err(403, "insufficient_scope").has_rate_limit_headers();
    // The mismatch is reported even when the key also lacks the scope.
    get(&app, &audit_path(OTHER, ""), &banner).await.err(403, "guild_mismatch");
}

// ---------------------------------------------------------------------------
// IP allow-lists and X-Forwarded-For
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ip_allow_lists_admit_callers_inside_and_refuse_callers_outside() {
    let app = spawn_app_with(Options { config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    let outside = app.create_key(DEMO, "lan only", "bans.read", &["--allowed-ips", "10.0.0.0/8"]);
    let exact = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1/32"]);
    let mixed = app.create_key(DEMO, "mixed", "bans.read", &["--allowed-ips", "::1, 2001:db8::/32, 127.0.0.0/8"]);
    let v6_only = app.create_key(DEMO, "v6 only", "bans.read", &["--allowed-ips", "::1,2001:db8::/32"]);
    let_the_listener_catch_up().await;

    // The test connects from 127.0.0.1.
    get(&app, "/v1/verify", &outside).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &exact).await.ok();
    get(&app, "/v1/verify", &mixed).await.ok();
    get(&app, "/v1/verify", &v6_only).await.err(403, "ip_not_allowed");
    // Not trusted by default: a forged header cannot buy a way in.
    get_via(&app, "/v1/verify", &outside, "10.1.2.3").await.err(403, "ip_not_allowed");
    get_via(&app, "/v1/verify", &v6_only, "::1").await.err(403, "ip_not_allowed");
    // Nor lock a legitimate caller out.
    get_via(&app, "/v1/verify", &exact, "203.0.113.9").await.ok();
}

#[tokio::test]
async fn a_caller_on_ipv6_loopback_is_matched_against_v6_entries() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let env = vec![("GUILDKEY_HTTP_BIND".to_owned(), "[::1]:0".to_owned())];
    let app =
        spawn_app_with(Options { env, config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    assert!(app.base.contains("[::1]"), "bound to {}", app.base);
    let exact = app.create_key(DEMO, "exact", "bans.read", &["--allowed-ips", "::1"]);
    let cidr = app.create_key(DEMO, "cidr", "bans.read", &["--allowed-ips", "::/127"]);
    let elsewhere = app.create_key(DEMO, "elsewhere", "bans.read", &["--allowed-ips", "2001:db8::/32"]);
    let v4 = app.create_key(DEMO, "v4", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &exact).await.ok();
    get(&app, "/v1/verify", &cidr).await.ok();
    get(&app, "/v1/verify", &elsewhere).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &v4).await.err(403, "ip_not_allowed");
}

#[tokio::test]
async fn with_trust_forwarded_for_the_right_most_forwarded_address_is_the_client() {
    // Without http.trusted_proxies: any peer's header, as before the key existed.
    let config = "[http]\ntrust_forwarded_for = true\n[keys]\nmax_per_guild = 10\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let v6 = app.create_key(DEMO, "v6", "bans.read", &["--allowed-ips", "2001:db8::/32, ::1"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1/32"]);
    let_the_listener_catch_up().await;

    let cases = [
        (&office, "203.0.113.7", 200),
        (&office, "198.51.100.1, 203.0.113.7", 200),
        (&office, "203.0.113.7, 198.51.100.1", 403),
        (&office, "198.51.100.1", 403),
        (&v6, "2001:db8::42", 200),
        (&v6, "::1", 200),
        (&v6, "2001:db9::1", 403),
        (&v6, "127.0.0.1", 403),
        (&loopback, "::ffff:127.0.0.1", 200),
        (&loopback, "10.0.0.1", 403),
        // Only the right-most entry counts, even when it is not an address:
        // a forged entry to its left never stands in for it.
        (&office, "203.0.113.7, unknown", 403),
        (&office, "203.0.113.7, ", 403),
        (&loopback, "10.0.0.1, garbage", 200),
        (&office, "203.0.113.7:4711", 200),
    ];
    for (token, forwarded, want) in cases {
        let reply = get_via(&app, "/v1/verify", token, forwarded).await;
        assert_eq!(reply.status, want, "X-Forwarded-For: {forwarded} for {}: {}", &token[..12], reply.text);
        if want == 403 {
            reply.err(403, "ip_not_allowed");
        }
    }
    // Without the header the socket address counts.
    get(&app, "/v1/verify", &office).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &loopback).await.ok();
}

#[tokio::test]
async fn forwarding_without_trusted_proxies_warns_at_start() {
    let app =
        spawn_app_with(Options { config: "[http]\ntrust_forwarded_for = true\n".into(), ..Options::default() }).await;
    let warned = app.logs().iter().any(|l| l.contains("WARN") && l.contains("http.trusted_proxies is empty"));
    assert!(warned, "no warning at start:\n{}", app.logs().join("\n"));
}

#[tokio::test]
async fn with_trusted_proxies_only_they_may_set_the_client_ip() {
    // The test talks from 127.0.0.1: first not a trusted proxy, then one.
    let elsewhere = "[http]\ntrust_forwarded_for = true\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n";
    let app = spawn_app_with(Options { config: elsewhere.into(), ..Options::default() }).await;
    assert!(!app.logs().iter().any(|l| l.contains("http.trusted_proxies is empty")), "no warning with proxies set");
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let_the_listener_catch_up().await;
    // A peer outside the list cannot claim an address...
    get_via(&app, "/v1/verify", &office, "203.0.113.7").await.err(403, "ip_not_allowed");
    get_via(&app, "/v1/verify", &loopback, "203.0.113.7").await.ok();
    // ...nor escape the failure throttle by claiming a new one each time.
    for i in 0..AUTH_FAILURE_BURST {
        get_via(&app, "/v1/verify", &unknown_token(), &format!("198.51.100.{i}")).await.err(401, "invalid_key");
    }
    get_via(&app, "/v1/verify", &unknown_token(), "198.51.100.200").await.err(429, "rate_limited");
    drop(app);

    // From the environment: loopback is a trusted proxy, and so is 10.0.0.0/8 in front of it.
    let env = vec![("GUILDKEY_HTTP_TRUSTED_PROXIES".to_owned(), "127.0.0.1/32, 10.0.0.0/8".to_owned())];
    let config = "[http]\ntrust_forwarded_for = true\n[keys]\nmax_per_guild = 10\n";
    let app = spawn_app_with(Options { config: config.into(), env, ..Options::default() }).await;
    assert!(!app.logs().iter().any(|l| l.contains("http.trusted_proxies is empty")), "no warning with proxies set");
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let inner = app.create_key(DEMO, "inner", "bans.read", &["--allowed-ips", "10.1.1.1"]);
    let_the_listener_catch_up().await;
    for (token, forwarded, want) in [
        (&office, "203.0.113.7", 200),
        (&office, "198.51.100.1, 203.0.113.7", 200),
        // Trusted hops to the right of the client are skipped...
        (&office, "198.51.100.1, 203.0.113.7, 10.2.2.2, 127.0.0.1", 200),
        // ...but never an untrusted one.
        (&office, "203.0.113.7, 198.51.100.1", 403),
        // Every entry a trusted proxy: the left-most one is the client.
        (&inner, "10.1.1.1, 10.2.2.2", 200),
        // An entry that is not an address: the last address read counts.
        (&office, "203.0.113.7, unknown", 403),
        (&loopback, "203.0.113.7, unknown", 200),
    ] {
        let reply = get_via(&app, "/v1/verify", token, forwarded).await;
        assert_eq!(reply.status, want, "X-Forwarded-For: {forwarded} for {}: {}", &token[..12], reply.text);
    }
    get(&app, "/v1/verify", &loopback).await.ok();
}

// ---------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rotating_with_the_cli_retires_the_old_secret_within_a_second() {
    let app = spawn_app().await;
    let old = app.create_key(DEMO, "rotating", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let key_id = get(&app, "/v1/verify", &old).await.ok()["key_id"].clone();

    let new = cli_ok(&app, &["keys", "rotate", key_id.as_str().unwrap()]);
    assert!(token_regex().is_match(&new) && new != old, "rotate prints the new secret alone: {new:?}");
    let (reply, took) = poll(&app, "/v1/verify", &old, Duration::from_secs(3), |r| r.status != 200).await;
    reply.err(401, "invalid_key");
    assert!(took <= CROSS_PROCESS, "the rotation took {took:?} to retire the old secret");

    let (reply, took) = poll(&app, "/v1/verify", &new, Duration::from_secs(3), |r| r.status == 200).await;
    let data = reply.ok();
    assert!(took <= CROSS_PROCESS, "the new secret took {took:?} to work");
    assert_eq!((&data["key_id"], &data["name"], &data["prefix"]), (&key_id, &json!("rotating"), &json!(&new[..12])));
}

#[tokio::test]
async fn a_rotation_grace_period_keeps_the_old_secret_working_until_it_ends() {
    let app = spawn_app().await;
    let old = app.create_key(DEMO, "graceful", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &old).await.ok();

    let rotated = Instant::now();
    let new = cli_ok(&app, &["keys", "rotate", &old[..12], "--grace", "3s"]);
    let (reply, _) = poll(&app, "/v1/verify", &new, Duration::from_secs(2), |r| r.status == 200).await;
    reply.ok();
    assert!(rotated.elapsed() < Duration::from_millis(2500), "too slow to test the grace period");
    assert_eq!(get(&app, "/v1/verify", &old).await.ok()["prefix"], &new[..12], "the old secret works during the grace");

    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(rotated.elapsed())).await;
    get(&app, "/v1/verify", &old).await.err(401, "invalid_key");
    get(&app, "/v1/verify", &new).await.ok();
}

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_keys_rate_limit_allows_its_budget_then_answers_429_with_retry_after() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "limited", "bans.read", &["--rate-limit", "5"]);
    let_the_listener_catch_up().await;

    let mut remaining = Vec::new();
    for _ in 0..5 {
        let reply = get(&app, "/v1/verify", &token).await;
        reply.ok();
        assert_eq!(reply.header_u64("x-ratelimit-limit"), 5);
        let reset = reply.header_u64("x-ratelimit-reset");
        assert!((1..=60).contains(&reset), "X-RateLimit-Reset {reset} is seconds within the minute");
        remaining.push(reply.header_u64("x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);

    let reply = get(&app, "/v1/verify", &token).await;
    reply.err(429, "rate_limited").has_rate_limit_headers();
    assert_eq!(reply.header_u64("x-ratelimit-remaining"), 0);
    let retry_after = reply.header_u64("retry-after");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    // Other keys are not affected.
    let other = app.create_key(DEMO, "unlimited", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &other).await.ok();
    get(&app, "/v1/verify", &token).await.err(429, "rate_limited");
}

#[tokio::test]
async fn every_authenticated_response_carries_the_rate_limit_headers() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "headers", "audit.read", &[]);
    let_the_listener_catch_up().await;

    let replies = [
        get(&app, "/v1/verify", &token).await,
        get(&app, &audit_path(DEMO, ""), &token).await,
        get(&app, &audit_path(OTHER, ""), &token).await,
        get(&app, &format!("/v1/guilds/{DEMO}"), &token).await,
        get(&app, &audit_path(DEMO, "?limit=abc"), &token).await,
        get(&app, "/v1/guilds/abc/audit-log", &token).await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 403, 403, 400, 400]);
    let mut remaining = Vec::new();
    for reply in &replies {
        reply.has_rate_limit_headers();
        assert_eq!(reply.header_u64("x-ratelimit-limit"), 60, "the default limit");
        remaining.push(reply.header_u64("x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [59, 58, 57, 56, 55, 54], "every authenticated request spends the budget");
}

/// Two listeners on one PostgreSQL database behind a round-robin balancer
/// (SPEC §6's limit per key, not per process): the key's budget is leased
/// from the database in chunks, so the two together accept the limit
/// within 10%, and then both refuse until the minute window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_listeners_behind_round_robin_hold_a_keys_limit_within_ten_percent() {
    const LIMIT: u64 = 120;
    let Some(admin) = support::db::postgres_admin_url() else { return };
    let db_url = support::db::fresh_postgres(&admin);
    let first = spawn_app_with(Options { db_url: Some(db_url.clone()), ..Options::default() }).await;
    let second = spawn_app_with(Options { db_url: Some(db_url), ..Options::default() }).await;
    let token = first.create_key(DEMO, "game", "bans.read", &["--rate-limit", "120"]);
    // Both listeners have the key and count each other by their heartbeats.
    let instances = |app: &App| {
        let app = app.base.clone();
        async move {
            let metrics = reqwest::get(format!("{app}/metrics")).await.unwrap().text().await.unwrap();
            metrics.lines().find_map(|l| l.strip_prefix("guildkey_rate_limit_instances ")?.parse::<u64>().ok())
        }
    };
    // (A heartbeat every 5 s; 30 s leaves room for a loaded machine.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while instances(&first).await != Some(2) || instances(&second).await != Some(2) {
        assert!(Instant::now() < deadline, "the listeners do not count each other");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let_the_listener_catch_up().await;
    // One window: not within 8 s of its end.
    let into = Utc::now().timestamp_millis().rem_euclid(60_000) as u64;
    if into > 52_000 {
        tokio::time::sleep(Duration::from_millis(60_100 - into)).await;
    }

    // Act: 8 clients, each sending to the listeners in turn, for 4 s.
    let started = Instant::now();
    let apps = [first.base.clone(), second.base.clone()];
    let clients: Vec<_> = (0..8usize)
        .map(|c| {
            let (apps, token, http) = (apps.clone(), token.clone(), first.http.clone());
            tokio::spawn(async move {
                let (mut accepted, mut refused, mut sent) = ([0u64; 2], Vec::new(), c);
                while started.elapsed() < Duration::from_secs(4) {
                    let which = sent % 2;
                    let reply = http.get(format!("{}/v1/verify", apps[which])).bearer_auth(&token).send().await;
                    let reply = reply.expect("request");
                    match reply.status().as_u16() {
                        200 => accepted[which] += 1,
                        429 => refused.push(reply.headers().clone()),
                        other => panic!("unexpected {other}: {}", reply.text().await.unwrap_or_default()),
                    }
                    sent += 1;
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = ([0u64; 2], Vec::new());
    for client in clients {
        let (ok, no) = client.await.unwrap();
        accepted = [accepted[0] + ok[0], accepted[1] + ok[1]];
        refused.extend(no);
    }

    // Assert: the limit over both, within 10% and never over; the refusals
    // carry the budget headers and wait out the window.
    let total = accepted[0] + accepted[1];
    eprintln!(
        "limit {LIMIT}/min over 2 listeners (chunk 4 each): accepted {total} ({} + {}), refused {}",
        accepted[0],
        accepted[1],
        refused.len()
    );
    assert!(total * 10 >= LIMIT * 9 && total <= LIMIT, "accepted {total} of {LIMIT}");
    assert!(accepted[0] > 0 && accepted[1] > 0, "{accepted:?}");
    let left = 60 - Utc::now().timestamp_millis().rem_euclid(60_000) as u64 / 1000;
    let last = refused.last().expect("requests past the limit are refused");
    let header = |name: &str| last[name].to_str().unwrap().parse::<u64>().unwrap();
    assert_eq!((header("x-ratelimit-limit"), header("x-ratelimit-remaining")), (LIMIT, 0));
    assert!(
        (1..=left + 1).contains(&header("retry-after")),
        "Retry-After {} with {left} s left",
        header("retry-after")
    );
    assert!((1..=left + 1).contains(&header("x-ratelimit-reset")), "X-RateLimit-Reset {}", header("x-ratelimit-reset"));
    for app in [&first, &second] {
        get(app, "/v1/verify", &token).await.err(429, "rate_limited").has_rate_limit_headers();
    }
}

/// Sends bad tokens from this address until it is throttled (429).
async fn get_throttled(app: &App) -> Reply {
    for i in 0..AUTH_FAILURE_BURST {
        let guess = with_checksum(&format!("gk_live_{:0>32}", i));
        get(app, "/v1/verify", &guess).await.err(401, "invalid_key");
    }
    let reply = get(app, "/v1/verify", &unknown_token()).await;
    reply.err(429, "rate_limited");
    reply
}

#[tokio::test]
async fn repeated_failed_authentications_from_one_ip_are_throttled_but_a_valid_key_still_passes() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "innocent", "bans.read", &[]);
    let_the_listener_catch_up().await;

    let reply = get_throttled(&app).await;
    let retry_after = reply.header_u64("retry-after");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");

    // A key that verifies passes: game servers and NATs share an address.
    get(&app, "/v1/verify", &token).await.ok();
    // Every failure from the address is refused until the window passes.
    get(&app, "/v1/verify", &unknown_token()).await.err(429, "rate_limited").header_u64("retry-after");
    get(&app, "/v1/verify", &change_char(&token, 20)).await.err(429, "rate_limited");
    get_anon(&app, "/v1/verify").await.err(429, "rate_limited");
    // Unauthenticated routes stay open.
    get_anon(&app, "/healthz").await.ok();

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    get(&app, "/v1/verify", &unknown_token()).await.err(401, "invalid_key");
}

/// The figure of hole 3 (issue 14): after an address is throttled by bad
/// tokens, a valid key from it interleaved with more bad tokens is refused
/// not once.
#[tokio::test]
async fn a_valid_key_from_an_address_flooding_bad_tokens_is_never_refused() {
    const ROUNDS: usize = 300;
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "game-server", "bans.read", &["--rate-limit", "10000"]);
    let_the_listener_catch_up().await;
    get_throttled(&app).await;

    let (mut refused, mut bad_throttled) = (0, 0);
    for i in 0..ROUNDS {
        let valid = get(&app, "/v1/verify", &token).await;
        if valid.status != 200 {
            refused += 1;
            eprintln!("valid key refused in round {i}: {} {}", valid.status, valid.text);
        }
        let bad = get(&app, "/v1/verify", &unknown_token()).await;
        // The throttle refills a little as the rounds go: a guess may get through to its 401.
        assert!(bad.status == 429 || bad.status == 401, "a bad token got {}: {}", bad.status, bad.text);
        bad_throttled += usize::from(bad.status == 429);
    }
    eprintln!(
        "throttled address: {refused} of {ROUNDS} valid-key requests refused; {bad_throttled} of {ROUNDS} bad tokens got 429"
    );
    assert_eq!(refused, 0, "valid-key requests refused from a throttled address");
    assert!(bad_throttled * 2 > ROUNDS, "the throttle held for only {bad_throttled} of {ROUNDS} bad tokens");
}

#[tokio::test]
async fn with_trusted_forwarding_the_failure_throttle_is_per_forwarded_address() {
    let app =
        spawn_app_with(Options { config: "[http]\ntrust_forwarded_for = true\n".into(), ..Options::default() }).await;
    let token = app.create_key(DEMO, "neighbour", "bans.read", &[]);
    let_the_listener_catch_up().await;

    for _ in 0..AUTH_FAILURE_BURST {
        get_via(&app, "/v1/verify", &unknown_token(), "198.51.100.66").await.err(401, "invalid_key");
    }
    get_via(&app, "/v1/verify", &unknown_token(), "198.51.100.66").await.err(429, "rate_limited");
    get_via(&app, "/v1/verify", &token, "198.51.100.66").await.ok();
    get_via(&app, "/v1/verify", &unknown_token(), "198.51.100.67").await.err(401, "invalid_key");
    get_via(&app, "/v1/verify", &token, "198.51.100.67").await.ok();
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request_whatever_they_hold() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "twice", "bans.read", &[]);
    let_the_listener_catch_up().await;

    let bearer = format!("Bearer {token}");
    for (first, second) in [
        (bearer.clone(), bearer.clone()),
        (bearer.clone(), format!("Bearer {}", unknown_token())),
        (format!("Bearer {}", unknown_token()), bearer.clone()),
        (bearer.clone(), "Basic dXNlcjpwYXNz".to_owned()),
    ] {
        let req = app.http.get(app.url("/v1/verify")).header("authorization", &first).header("authorization", &second);
        let reply = send(req).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        reply.err(400, "bad_request");
    }
    get(&app, "/v1/verify", &token).await.ok();
}

// ---------------------------------------------------------------------------
// Routing and request validation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "router", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;

    for path in ["/", "/nope", "/v1", "/v1/nope", "/v2/verify", &format!("/v1/guilds/{DEMO}/nope"), "/v1/verify/extra"]
    {
        get_anon(&app, path).await.err(404, "not_found");
        get(&app, path, &token).await.err(404, "not_found");
    }
    let wrong = [
        (app.http.post(app.url("/v1/verify")), "GET,HEAD"),
        (app.http.delete(app.url("/v1/verify")), "GET,HEAD"),
        (app.http.post(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID))), "GET,HEAD,PUT,DELETE"),
        (app.http.post(app.url(&audit_path(DEMO, ""))), "GET,HEAD"),
        (app.http.post(app.url("/healthz")), "GET,HEAD"),
        (app.http.put(app.url("/metrics")), "GET,HEAD"),
        (app.http.delete(app.url("/openapi.json")), "GET,HEAD"),
    ];
    for (req, allow) in wrong {
        let reply = send(req.bearer_auth(&token)).await;
        reply.err(405, "method_not_allowed");
        let listed: BTreeSet<&str> = reply.header("allow").unwrap_or_default().split(',').map(str::trim).collect();
        assert_eq!(listed, allow.split(',').collect(), "Allow header of a 405: {:?}", reply.headers);
    }
}

#[tokio::test]
async fn malformed_ids_query_values_and_bodies_are_bad_requests() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "validator", ALL_SCOPES, &["--env", "test", "--rate-limit", "1000"]);
    let_the_listener_catch_up().await;
    let (user, role) = (ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    let bad_ids = [
        "abc",
        "0",
        "-5",
        "1e5",
        "12.5",
        "123456789012345678901",
        "99999999999999999999",
        "%20123",
        "0123",
        "9223372036854775808",
    ];
    for bad in bad_ids {
        for path in [
            format!("/v1/guilds/{bad}"),
            format!("/v1/guilds/{bad}/audit-log"),
            format!("/v1/guilds/{bad}/bans/{user}"),
            format!("/v1/guilds/{DEMO}/bans/{bad}"),
            format!("/v1/guilds/{DEMO}/members/{bad}/roles/{role}"),
            format!("/v1/guilds/{DEMO}/members/{user}/roles/{bad}"),
        ] {
            let reply = get(&app, &path, &token).await;
            if path.contains("/members/") {
                // GET on a role route is 405; PUT is the real test.
                let reply = send(app.http.put(app.url(&path)).bearer_auth(&token)).await;
                assert_eq!(reply.status, 400, "PUT {path}: {}", reply.text);
                reply.err(400, "bad_request");
                continue;
            }
            assert_eq!(reply.status, 400, "GET {path}: {}", reply.text);
            reply.err(400, "bad_request");
        }
    }

    for query in ["?limit=abc", "?limit=1.5", "?limit=ten", "?before=abc", "?before=0", "?before=-3", "?before=1.5"] {
        let reply = get(&app, &audit_path(DEMO, query), &token).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        reply.err(400, "bad_request");
    }
    // Empty values mean the defaults.
    get(&app, &audit_path(DEMO, "?limit=&before="), &token).await.ok();

    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    // Arrays too: serde would read `["x", 0]` as the body's fields in order.
    let bodies =
        ["not json", "{\"reason\": 5}", "{\"reason\": \"x\", \"surprise\": 1}", "[1, 2]", "{\"reason\": \"x\""];
    for body in bodies.into_iter().chain(["[\"spam\", 0]", "[null, null]", " [\"x\"]", "\"x\"", "5", "null"]) {
        let reply =
            send(app.http.put(&ban).bearer_auth(&token).header("content-type", "application/json").body(body)).await;
        assert_eq!(reply.status, 400, "body {body:?}: {}", reply.text);
        reply.err(400, "bad_request");
    }
}

#[tokio::test]
async fn a_key_that_may_not_ban_here_gets_403_whatever_its_body() {
    let app = spawn_app_with(Options { config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    let reader = app.create_key(DEMO, "reader", "bans.read", &["--env", "test"]);
    let elsewhere = app.create_key(OTHER, "elsewhere", "bans.write", &["--env", "test"]);
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    let_the_listener_catch_up().await;
    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID));

    for body in ["not json", "[\"spam\", 0]", "{\"surprise\": 1}", "{\"reason\": 5}", "{}", "null"] {
        let put = |token: &str| app.http.put(&ban).bearer_auth(token).body(body);
        send(put(&reader)).await.err(403, "insufficient_scope");
        send(put(&elsewhere)).await.err(403, "guild_mismatch");
        let reply = send(put(&writer)).await;
        if body == "{}" {
            assert_eq!(reply.ok()["dry_run"], true);
        } else {
            reply.err(400, "bad_request");
        }
    }
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_refused_with_413() {
    let app = spawn_app_with(Options { config: "[http]\nmax_body_bytes = 64\n".into(), ..Options::default() }).await;
    let token = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    let_the_listener_catch_up().await;
    let path = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);
    let big = json!({ "reason": "x".repeat(500) }).to_string();

    // With Content-Length, with or without a key.
    let reply = send(app.http.put(app.url(&path)).bearer_auth(&token).body(big.clone())).await;
    reply.err(413, "payload_too_large");
    send(app.http.put(app.url(&path)).body(big.clone())).await.err(413, "payload_too_large");

    // Chunked, with no Content-Length to go by.
    let (status, body) = raw_chunked_put(&app, &path, &token, &big).await;
    assert_eq!(status, 413, "chunked: {body}");
    assert_error_envelope(&serde_json::from_str(&body).expect("JSON"), 413);
    assert!(body.contains("payload_too_large"), "{body}");

    // A body within the limit is read as usual (a test key: a dry run).
    let small = json!({ "reason": "spam" }).to_string();
    assert!(small.len() <= 64);
    let data = send(app.http.put(app.url(&path)).bearer_auth(&token).body(small)).await.ok();
    assert_eq!(data["dry_run"], true, "{data}");
}

/// PUT with `Transfer-Encoding: chunked` over a raw socket (reqwest here has
/// no streaming bodies); returns the status and the body.
async fn raw_chunked_put(app: &App, path: &str, token: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let half = body.len() / 2;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        half,
        &body[..half],
        body.len() - half,
        &body[half..]
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {raw}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

// ---------------------------------------------------------------------------
// The audit log
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_lists_the_guilds_events_newest_first_with_every_field() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "auditor", "audit.read", &[]);
    let doomed = app.create_key(DEMO, "doomed", "bans.read", &[]);
    cli_ok(&app, &["keys", "revoke", &doomed[..12]]);
    cli_ok(&app, &["keys", "delete", &doomed[..12]]);
    let spinner = app.create_key(DEMO, "spinner", "bans.read", &[]);
    let spun = cli_ok(&app, &["keys", "rotate", &spinner[..12]]);
    // Another guild's events must never show.
    let outsider = app.create_key(OTHER, "outsider", "audit.read", &[]);
    let outsider = cli_ok(&app, &["keys", "rotate", &outsider[..12]]);
    let_the_listener_catch_up().await;

    let page = get(&app, &audit_path(DEMO, ""), &reader).await.ok();
    assert_eq!(keys_of(&page), ["events", "next_before"]);
    assert_eq!(page["next_before"], Value::Null, "one page holds everything");
    let events = page["events"].as_array().expect("events array");
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["key_name"].as_str().unwrap(), e["key_prefix"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("key.rotated", "spinner", &spun[..12]),
            ("key.created", "spinner", &spinner[..12]),
            ("key.deleted", "doomed", &doomed[..12]),
            ("key.revoked", "doomed", &doomed[..12]),
            ("key.created", "doomed", &doomed[..12]),
            ("key.created", "auditor", &reader[..12]),
        ]
    );

    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().expect("integer id")).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let mut previous_at = None;
    for e in events {
        assert_eq!(
            keys_of(e),
            ["action", "actor", "at", "details", "id", "key_id", "key_name", "key_prefix", "test"],
            "{e}"
        );
        assert_eq!(e["actor"], "The operator CLI");
        assert_eq!(e["test"], false);
        assert!(e["details"].is_object(), "{e}");
        assert!(e["key_id"].as_str().is_some_and(|id| id.starts_with("key_")), "{e}");
        let at = rfc3339(&e["at"]);
        assert!(previous_at.is_none_or(|p| at <= p), "times run newest first");
        previous_at = Some(at);
    }
    let rotated = &events[0]["details"];
    assert_eq!((&rotated["previous_prefix"], &rotated["new_prefix"]), (&json!(&spinner[..12]), &json!(&spun[..12])));
    assert_eq!(events[0]["key_id"], events[1]["key_id"], "a rotation keeps the key's id");

    // The other guild sees only its own.
    assert!(!page.to_string().contains("outsider"));
    let theirs = get(&app, &audit_path(OTHER, ""), &outsider).await.ok();
    let actions: Vec<_> = theirs["events"].as_array().unwrap().iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, [json!("key.rotated"), json!("key.created")]);
    assert!(!theirs.to_string().contains("spinner") && !theirs.to_string().contains("auditor"));
}

#[tokio::test]
async fn the_audit_log_clamps_limit_and_pages_with_next_before_until_null() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "auditor", "audit.read", &[]);
    app.create_key(DEMO, "spinner", "bans.read", &[]);
    let id = listed(&app, DEMO, "spinner")["key_id"].as_str().unwrap().to_owned();
    // 2 creations + 100 rotations: 102 events, more than the largest page.
    for _ in 0..100 {
        cli_ok(&app, &["keys", "rotate", &id]);
    }
    let outsider = app.create_key(OTHER, "outsider", "audit.read", &[]);
    let_the_listener_catch_up().await;

    let page = |query: &'static str| {
        let app = &app;
        let reader = &reader;
        async move { get(app, &audit_path(DEMO, query), reader).await.ok() }
    };
    let count = |page: &Value| page["events"].as_array().map_or(0, Vec::len);

    let one = page("?limit=0").await;
    assert_eq!(count(&one), 1, "limit=0 is clamped to 1");
    assert_eq!(one["next_before"], one["events"][0]["id"]);
    assert_eq!(one["events"][0]["action"], "key.rotated");
    assert_eq!(count(&page("?limit=-7").await), 1, "negative limits are clamped to 1");
    let most = page("?limit=500").await;
    assert_eq!(count(&most), 100, "limit=500 is clamped to 100");
    assert_eq!(most["next_before"], most["events"][99]["id"]);
    assert_eq!(count(&page("").await), 50, "the default limit is 50");

    // Follow next_before to the end.
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(b) => format!("?limit=40&before={b}"),
            None => "?limit=40".to_owned(),
        };
        let page = get(&app, &audit_path(DEMO, &query), &reader).await.ok();
        let events = page["events"].as_array().unwrap().clone();
        sizes.push(events.len());
        all.extend(events);
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => {
                assert_eq!(page["next_before"], Value::Null);
                break;
            }
        }
        assert!(sizes.len() < 10, "pagination does not end: {sizes:?}");
    }
    assert_eq!(sizes, [40, 40, 22]);
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "pages continue strictly older, no repeats");
    let actions: BTreeMap<&str, usize> = all.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e["action"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(actions, BTreeMap::from([("key.created", 2), ("key.rotated", 100)]));
    assert_eq!(all.last().unwrap()["key_name"], "auditor", "the oldest event comes last");
    assert!(all.iter().all(|e| e["key_name"] != "outsider"), "another guild's events never appear");

    // The other guild's log holds only its one event.
    let theirs = get(&app, &audit_path(OTHER, ""), &outsider).await.ok();
    assert_eq!(count(&theirs), 1);
    assert_eq!(theirs["events"][0]["key_name"], "outsider");
    // A `before` older than everything is an empty last page.
    let oldest = ids.last().unwrap();
    let empty = get(&app, &audit_path(DEMO, &format!("?before={oldest}")), &reader).await.ok();
    assert_eq!(empty, json!({"events": [], "next_before": null}));
}

// ---------------------------------------------------------------------------
// Metrics and the OpenAPI document
// ---------------------------------------------------------------------------

/// Sums the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let label = regex::Regex::new(r#"(\w+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = label
            .captures_iter(series_labels)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or_else(|_| panic!("bad sample: {line}"));
        }
    }
    found
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_verifications_by_outcome_and_time_them() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "measured", "audit.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &token).await.ok();
    get(&app, "/v1/verify", &token).await.ok();
    get(&app, &audit_path(DEMO, ""), &token).await.ok();
    get(&app, "/v1/verify", &unknown_token()).await.err(401, "invalid_key");
    get(&app, "/v1/verify", "gk_live_nope").await.err(401, "malformed_key");
    get_anon(&app, "/v1/verify").await.err(401, "missing_key");
    get_anon(&app, "/nowhere").await.err(404, "not_found");

    let reply = get_anon(&app, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap_or_default().starts_with("text/plain"), "Prometheus text");
    let text = &reply.text;
    let requests = |route: &str, status: &str| {
        metric(text, "guildkey_http_requests_total", &[("route", route), ("status", status)]).unwrap_or(0.0)
    };
    assert_eq!(requests("/v1/verify", "200"), 2.0, "{text}");
    assert_eq!(requests("/v1/verify", "401"), 3.0, "{text}");
    assert_eq!(requests("/v1/guilds/{guild_id}/audit-log", "200"), 1.0, "routes are labelled by template: {text}");
    assert!(metric(text, "guildkey_http_requests_total", &[("status", "404")]) >= Some(1.0), "{text}");
    assert!(!text.contains(&DEMO.to_string()), "no raw ids in labels (unbounded cardinality)");

    let outcome = |o: &str| metric(text, "guildkey_key_verifications_total", &[("outcome", o)]).unwrap_or(0.0);
    assert_eq!(
        ["ok", "invalid_key", "malformed_key", "missing_key"].map(outcome),
        [3.0, 1.0, 1.0, 1.0],
        "verification outcomes: {text}"
    );

    let histogram = "guildkey_http_request_duration_seconds";
    let verify = [("route", "/v1/verify")];
    assert!(text.lines().any(|l| l.starts_with(&format!("{histogram}_bucket{{"))), "{text}");
    assert_eq!(metric(text, &format!("{histogram}_count"), &verify), Some(5.0));
    assert_eq!(metric(text, &format!("{histogram}_bucket"), &[("route", "/v1/verify"), ("le", "+Inf")]), Some(5.0));
    assert!(metric(text, &format!("{histogram}_sum"), &verify).is_some_and(|s| s > 0.0));
    assert!(!text.contains(&token), "the metrics never show a secret");

    // The key came from the CLI, another process: applied alone, no reload.
    assert_eq!(metric(text, "guildkey_key_index_full_loads_total", &[]), Some(1.0), "{text}");
    assert!(metric(text, "guildkey_key_index_keys_applied_total", &[]) >= Some(1.0), "{text}");
}

#[tokio::test]
async fn made_up_methods_are_counted_as_other_and_never_copied_into_the_metrics() {
    const METHODS: usize = 200;
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "measured", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let made_up = |i: usize| reqwest::Method::from_bytes(format!("X{i:04}{}", "Q".repeat(2048)).as_bytes()).unwrap();
    let paths = ["/healthz".to_owned(), "/nowhere".to_owned(), "/v1/verify".to_owned(), audit_path(DEMO, "")];
    let send_all = |from: usize, to: usize| {
        let (app, token, paths) = (&app, &token, &paths);
        async move {
            for i in from..to {
                let reply =
                    send(app.http.request(made_up(i), app.url(&paths[i % paths.len()])).bearer_auth(token)).await;
                assert!(matches!(reply.status, 404 | 405), "a made-up method got {}: {}", reply.status, reply.text);
            }
        }
    };
    // Once per path first, so every series the made-up methods can make exists.
    send_all(0, paths.len()).await;
    let before = get_anon(&app, "/metrics").await.text;
    send_all(paths.len(), METHODS).await;
    let after = get_anon(&app, "/metrics").await.text;

    assert!(!after.contains("QQQQ") && !after.contains("X0100"), "a made-up method reached /metrics");
    let other = metric(&after, "guildkey_http_requests_total", &[("method", "other")]).unwrap_or(0.0);
    assert!(other >= METHODS as f64, "made-up methods are counted as other: {other}");
    eprintln!(
        "/metrics: {} bytes after {} made-up methods, {} bytes after {METHODS}",
        before.len(),
        paths.len(),
        after.len()
    );
    // Only counts changed: a few digits more at most, never a series per method.
    assert!(after.len() < before.len() + 512, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(after.len() < 64 * 1024, "/metrics is {} bytes", after.len());
    // Standard methods keep their names.
    assert!(metric(&after, "guildkey_http_requests_total", &[("method", "GET")]).is_some(), "{after}");
}

/// Every route of SPEC §6, as (method, OpenAPI path).
const SPEC_ROUTES: [(&str, &str); 10] = [
    ("get", "/v1/verify"),
    ("get", "/v1/guilds/{guild_id}"),
    ("get", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("put", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("delete", "/v1/guilds/{guild_id}/bans/{user_id}"),
    ("put", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}"),
    ("delete", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}"),
    ("get", "/v1/guilds/{guild_id}/audit-log"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_spec_route_and_every_documented_route_exists() {
    let app = spawn_app().await;
    // A test key with every scope: writes are dry runs, nothing changes on Discord.
    let token = app.create_key(DEMO, "explorer", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;

    let reply = get_anon(&app, "/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap_or_default().starts_with("application/json"));
    let doc = reply.json();

    // A valid OpenAPI 3 document, in outline.
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths object");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {r}");
    }

    let mut spec = BTreeSet::from(SPEC_ROUTES);
    spec.insert(("get", "/openapi.json"));
    for (method, path) in &spec {
        let op = &paths.get(*path).unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(op.is_object(), "{} {path} is not documented", method.to_uppercase());
        assert!(op["responses"].is_object(), "{method} {path} has responses");
        if path.starts_with("/v1/") {
            assert!(op["security"].is_array(), "{method} {path} says it needs a key");
        }
    }

    // Every documented operation is routed.
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            documented.insert((method, path.as_str()));
            let url = path
                .replace("{guild_id}", &DEMO.to_string())
                .replace("{user_id}", &ids::PAT_ID.to_string())
                .replace("{role_id}", &ids::VERIFIED_ROLE_ID.to_string());
            let req = app.http.request(method.to_uppercase().parse().unwrap(), app.url(&url)).bearer_auth(&token);
            let reply = send(req).await;
            assert!(
                reply.status != 404 && reply.status != 405,
                "{} {url} is documented but answers {}: {}",
                method.to_uppercase(),
                reply.status,
                reply.text
            );
        }
    }
    let undocumented: Vec<_> = spec.difference(&documented).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

/// `schema`'s properties and required ones, through `$ref` and `allOf`.
fn schema_fields(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return schema_fields(doc, &doc["components"]["schemas"][name]);
    }
    let (mut properties, mut required) = (BTreeSet::new(), BTreeSet::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = schema_fields(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    properties.extend(schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    required.extend(schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned)));
    (properties, required)
}

/// Issue 14, hole 11: what schemathesis flagged as missing from the document.
#[tokio::test]
async fn the_openapi_document_states_id_patterns_query_types_body_limits_every_answer_and_its_headers() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "explorer", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;
    let doc = get_anon(&app, "/openapi.json").await.json();
    let paths = doc["paths"].as_object().expect("paths");

    // Every path id has the pattern the server enforces: checked against the server itself.
    let mut patterns = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
                let name = param["name"].as_str().unwrap();
                assert!(name.ends_with("_id"), "{method} {path}: path parameter {name}");
                assert_eq!(param["schema"]["type"], "string", "{method} {path} {name}: {param}");
                let pattern = param["schema"]["pattern"].as_str();
                patterns.insert(pattern.unwrap_or_else(|| panic!("{method} {path} {name} has no pattern")).to_owned());
            }
        }
    }
    assert_eq!(patterns.len(), 1, "one id pattern: {patterns:?}");
    let pattern = regex::Regex::new(patterns.first().unwrap()).expect("the pattern compiles");
    let max = i64::MAX.to_string();
    let over = (i64::MAX as u64 + 1).to_string();
    let candidates =
        [OTHER.to_string(), "1".into(), max, "0".into(), format!("0{OTHER}"), over, "9".repeat(20), "12a".into()];
    for id in candidates {
        let reply = get(&app, &format!("/v1/guilds/{id}/audit-log"), &token).await;
        let accepted = reply.status != 400;
        assert_eq!(pattern.is_match(&id), accepted, "id {id:?}: the pattern and the server disagree ({})", reply.text);
        if accepted {
            reply.err(403, "guild_mismatch");
        }
    }
    assert!(pattern.is_match(&DEMO.to_string()) && pattern.is_match(&ids::PAT_ID.to_string()));

    // The audit log's query values are integers.
    let audit = &paths["/v1/guilds/{guild_id}/audit-log"]["get"];
    for name in ["limit", "before"] {
        let param = audit["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).expect(name);
        assert_eq!((&param["in"], &param["schema"]["type"]), (&json!("query"), &json!("integer")), "{param}");
    }

    // The ban body's limits, and the request body's size.
    let ban_body = &doc["components"]["schemas"]["BanBody"];
    assert_eq!(ban_body["properties"]["reason"]["maxLength"], 512, "{ban_body}");
    let seconds = &ban_body["properties"]["delete_message_seconds"];
    assert_eq!((&seconds["minimum"], &seconds["maximum"]), (&json!(0), &json!(604_800)), "{seconds}");
    let ban = &paths["/v1/guilds/{guild_id}/bans/{user_id}"];
    assert_eq!(ban["put"]["requestBody"]["x-max-body-bytes"], 16_384, "the default http.max_body_bytes");
    // Optional, and an object when sent (JSON null is refused, so it is not offered).
    let body = &ban["put"]["requestBody"];
    assert_ne!(body["required"], true, "{body}");
    assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/BanBody", "{body}");
    assert!(ban["put"]["requestBody"]["description"].as_str().unwrap_or_default().contains("16384 bytes"));

    // Every operation lists every answer it can give, with its headers.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let keyed = op["security"].is_array();
            let responses = op["responses"].as_object().unwrap();
            let mut want = vec!["200", "404", "405", "413", "431"];
            if keyed {
                want.extend(["400", "401", "403", "429"]);
            }
            for status in want {
                let row = responses.get(status).unwrap_or_else(|| panic!("{method} {path} has no {status} row"));
                let reason = row["description"].as_str().unwrap_or_default();
                assert!(!reason.is_empty(), "{method} {path} {status}: {row}");
                if status != "200" {
                    assert!(
                        row["content"]["application/json"]["schema"]["$ref"].is_string(),
                        "{method} {path} {status}"
                    );
                }
            }
            let headers = |status: &str| -> BTreeSet<String> {
                responses[status]["headers"].as_object().into_iter().flatten().map(|(k, _)| k.to_lowercase()).collect()
            };
            assert!(headers("405").contains("allow"), "{method} {path}");
            if keyed {
                assert!(headers("401").contains("www-authenticate"), "{method} {path}");
                for status in ["200", "429"] {
                    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
                        assert!(headers(status).contains(name), "{method} {path} {status} lacks {name}");
                    }
                }
                assert!(headers("429").contains("retry-after"), "{method} {path}");
            }
        }
    }

    // Write results: every field, documented and answered.
    let role = format!("/v1/guilds/{DEMO}/members/{}/roles/{}", ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let ban_url = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);
    for (method, path, url, own) in [
        ("put", "/v1/guilds/{guild_id}/bans/{user_id}", &ban_url, "banned"),
        ("delete", "/v1/guilds/{guild_id}/bans/{user_id}", &ban_url, "banned"),
        ("put", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", &role, "has_role"),
        ("delete", "/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", &role, "has_role"),
    ] {
        let data =
            &paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"];
        let (properties, required) = schema_fields(&doc, data);
        for field in ["changed", "dry_run", "audit_event_id", own] {
            assert!(properties.contains(field), "{method} {path}: {field} is not documented: {properties:?}");
        }
        let answered =
            send(app.http.request(method.to_uppercase().parse().unwrap(), app.url(url)).bearer_auth(&token)).await.ok();
        let answered: BTreeSet<String> = keys_of(&answered).into_iter().map(str::to_owned).collect();
        assert!(answered.is_subset(&properties), "{method} {path}: undocumented fields in {answered:?}");
        assert!(required.is_subset(&answered), "{method} {path}: required {required:?}, answered {answered:?}");
    }
}

// ---------------------------------------------------------------------------
// Last-used times
// ---------------------------------------------------------------------------

#[tokio::test]
async fn last_used_times_are_flushed_in_batches() {
    let config = "[keys]\nlast_used_flush_seconds = 1\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    app.create_key(DEMO, "busy", "bans.read", &[]);
    let token = app.create_key(DEMO, "busy2", "bans.read", &[]);
    let_the_listener_catch_up().await;
    assert_eq!(listed(&app, DEMO, "busy2")["last_used_at"], Value::Null, "never used yet");

    let before = Utc::now() - chrono::Duration::milliseconds(5);
    for _ in 0..3 {
        get(&app, "/v1/verify", &token).await.ok();
    }
    let after = Utc::now() + chrono::Duration::milliseconds(5);
    let started = Instant::now();
    let key = loop {
        let key = listed(&app, DEMO, "busy2");
        if !key["last_used_at"].is_null() || started.elapsed() > Duration::from_secs(3) {
            break key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!key["last_used_at"].is_null(), "flushed within about a second: {key}");
    let last_used = rfc3339(&key["last_used_at"]);
    assert!(before <= last_used && last_used <= after, "{last_used} is the last request's time");
    assert_eq!(key["use_count"], 3, "{key}");
    assert_eq!(listed(&app, DEMO, "busy")["last_used_at"], Value::Null, "an unused key stays unused");
}

#[tokio::test]
async fn pending_last_used_times_are_written_at_shutdown_not_per_request() {
    let config = "[keys]\nlast_used_flush_seconds = 3600\n";
    let mut app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let token = app.create_key(DEMO, "lazy", "bans.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &token).await.ok();
    get(&app, "/v1/verify", &token).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listed(&app, DEMO, "lazy")["last_used_at"], Value::Null, "no write per request");

    let status = app.stop();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let key = listed(&app, DEMO, "lazy");
    assert!(!key["last_used_at"].is_null(), "flushed at shutdown: {key}");
    assert_eq!(key["use_count"], 2, "{key}");
}

// ---------------------------------------------------------------------------
// Secret hygiene
// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_secret_appears_in_any_log_line_or_response() {
    let config = "[keys]\nmax_per_guild = 10\nlast_used_flush_seconds = 1\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let live = app.create_key(DEMO, "live", ALL_SCOPES, &[]);
    let test = app.create_key(DEMO, "test", ALL_SCOPES, &["--env", "test"]);
    let revoked = app.create_key(DEMO, "revoked", "bans.read", &[]);
    let fenced = app.create_key(DEMO, "fenced", "bans.read", &["--allowed-ips", "10.0.0.0/8"]);
    let rotated_out = app.create_key(DEMO, "rotated", "bans.read", &[]);
    let_the_listener_catch_up().await;
    cli_ok(&app, &["keys", "revoke", &revoked[..12]]);
    let rotated_in = cli_ok(&app, &["keys", "rotate", &rotated_out[..12], "--grace", "1m"]);
    let_the_listener_catch_up().await;

    let (user, role) = (ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let mistyped = change_char(&live, 30);
    let mut replies = Vec::new();
    for token in [&live, &test, &revoked, &fenced, &rotated_out, &rotated_in, &mistyped, &unknown_token()] {
        replies.push(get(&app, "/v1/verify", token).await);
        replies.push(get(&app, &audit_path(DEMO, "?limit=100"), token).await);
        replies.push(get(&app, &audit_path(OTHER, ""), token).await);
        replies.push(get(&app, "/v1/nope", token).await);
        replies.push(send(app.http.post(app.url("/v1/verify")).bearer_auth(token)).await);
    }
    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    replies.push(send(app.http.put(&ban).bearer_auth(&test).body("{\"reason\": \"spam\"}")).await);
    replies.push(send(app.http.put(&ban).bearer_auth(&test).body("{bad json")).await);
    let role_url = app.url(&format!("/v1/guilds/{DEMO}/members/{user}/roles/{role}"));
    replies.push(send(app.http.put(&role_url).bearer_auth(&test)).await);
    replies.push(send(app.http.get(app.url("/v1/verify")).header("authorization", format!("Basic {live}"))).await);
    replies.push(get_anon(&app, "/metrics").await);
    replies.push(get_anon(&app, "/openapi.json").await);
    tokio::time::sleep(Duration::from_millis(1500)).await; // a usage flush, too

    let secrets = [&live, &test, &revoked, &fenced, &rotated_out, &rotated_in];
    let pattern = token_regex();
    for reply in &replies {
        let headers = format!("{:?}", reply.headers);
        for secret in secrets {
            assert!(!reply.text.contains(secret.as_str()), "a response shows a secret: {}", reply.text);
            assert!(!headers.contains(secret.as_str()), "a response header shows a secret: {headers}");
        }
        assert!(!pattern.is_match(&reply.text), "a response holds a token: {}", reply.text);
    }
    let audit = get(&app, &audit_path(DEMO, "?limit=100"), &live).await.ok();
    assert!(!audit.to_string().contains(&rotated_in) && !audit.to_string().contains(&rotated_out));

    let logs = app.logs();
    assert!(logs.len() > 20, "the binary logs at trace level: {} lines", logs.len());
    for line in &logs {
        for secret in secrets.iter().map(|s| s.as_str()).chain([mistyped.as_str(), BOT_TOKEN]) {
            assert!(!line.contains(secret), "a log line shows a secret: {line}");
        }
        assert!(!pattern.is_match(line), "a log line holds something token-shaped: {line}");
    }
}
