//! The API routes that act on Discord (SPEC §6: guild info, ban check, ban,
//! unban, role add and remove), black-box: the real binary, its bot
//! connected to the Discord double, keys made with the operator CLI.
//!
//! Each route is judged by what reached Discord (the double's recorder:
//! method, route, body, `X-Audit-Log-Reason`), by the double's state (bans,
//! member roles), by the listener's answer and by the audit log. Every test
//! ends with `assert_no_violations()`: each request the bot sent and each
//! answer it got matched Discord's OpenAPI description.

mod support;

use std::time::{Duration, Instant};

use discord_double::{DoubleConfig, FaultRule, RecordedCall, RecordedMessage};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use support::{ids, spawn_against, spawn_app, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;
const OTHER: u64 = ids::OTHER_GUILD_ID;
/// A role id no guild has.
const UNKNOWN_ROLE_ID: u64 = 1_400_000_000_000_000_999;
/// A guild the bot is not in.
const ABSENT_GUILD_ID: u64 = 1_000_000_000_000_000_777;
const WAIT: Duration = Duration::from_secs(10);
/// `BAN_CACHE_TTL` in src/service/actions.rs.
const BAN_CACHE_TTL: Duration = Duration::from_secs(5);

const BAN_ROUTE: &str = "/guilds/{guild_id}/bans/{user_id}";
const MEMBER_ROUTE: &str = "/guilds/{guild_id}/members/{user_id}";
const ROLE_ROUTE: &str = "/guilds/{guild_id}/members/{user_id}/roles/{role_id}";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A response read whole, so assertions can show the body.
struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts a 200 success envelope; returns `data`.
    #[track_caller]
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.text);
        let body = self.json();
        assert_eq!(body["success"], true, "{body}");
        body["data"].clone()
    }

    /// Asserts a failure with this status and reason; returns the message.
    #[track_caller]
    fn err(&self, status: u16, reason: &str) -> String {
        let body = self.json();
        assert_eq!(
            (self.status, body["error"]["reason"].as_str()),
            (status, Some(reason)),
            "expected {status} {reason}: {}",
            self.text
        );
        assert_eq!(
            (&body["success"], &body["data"], &body["error"]["code"]),
            (&json!(false), &json!({}), &json!(status))
        );
        body["error"]["message"].as_str().expect("an error message").to_owned()
    }
}

async fn send(req: RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    Reply { status, text }
}

async fn get(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.get(app.url(path)).bearer_auth(token)).await
}

async fn put(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.put(app.url(path)).bearer_auth(token)).await
}

async fn put_json(app: &App, path: &str, token: &str, body: &Value) -> Reply {
    send(app.http.put(app.url(path)).bearer_auth(token).json(body)).await
}

async fn delete(app: &App, path: &str, token: &str) -> Reply {
    send(app.http.delete(app.url(path)).bearer_auth(token)).await
}

fn guild_path(guild: u64) -> String {
    format!("/v1/guilds/{guild}")
}

fn ban_path(guild: u64, user: u64) -> String {
    format!("/v1/guilds/{guild}/bans/{user}")
}

fn role_path(guild: u64, user: u64, role: u64) -> String {
    format!("/v1/guilds/{guild}/members/{user}/roles/{role}")
}

/// Creates a key with the CLI and waits until the listener knows it (a
/// change by another process is live within a second).
async fn key(app: &App, guild: u64, name: &str, scopes: &str, extra: &[&str]) -> String {
    // A generous rate limit unless the test sets one: some tests poll.
    let mut args = if extra.contains(&"--rate-limit") { vec![] } else { vec!["--rate-limit", "1000"] };
    args.extend_from_slice(extra);
    let token = app.create_key(guild, name, scopes, &args);
    let started = Instant::now();
    while get(app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of key {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token
}

/// Runs the futures concurrently; their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("ready")).collect()
}

/// A live key with `scopes` and an audit.read key for the demo guild.
async fn keys(app: &App, name: &str, scopes: &str) -> (String, String) {
    let writer = key(app, DEMO, name, scopes, &[]).await;
    let reader = key(app, DEMO, "auditor", "audit.read", &[]).await;
    (writer, reader)
}

/// The `X-Audit-Log-Reason` an API write made with this key carries.
fn reason_of(name: &str, token: &str) -> String {
    format!("An API key: {name} ({})", &token[..12])
}

/// REST calls the bot made to `method route`.
fn calls(app: &App, method: &str, route: &str) -> Vec<RecordedCall> {
    app.double.calls_to(method, route)
}

/// Calls that would change a guild (not the bot's command registration or
/// its audit-channel posts).
fn writes(app: &App) -> Vec<RecordedCall> {
    app.double.calls().into_iter().filter(|c| c.method != "GET" && c.path.contains("/api/v10/guilds/")).collect()
}

/// The guild's audit events, newest first.
async fn audit_events(app: &App, reader: &str) -> Vec<Value> {
    let page = get(app, &format!("/v1/guilds/{DEMO}/audit-log?limit=100"), reader).await.ok();
    page["events"].as_array().expect("events").clone()
}

/// Audit events of API writes (not key changes or the audit channel's).
async fn api_events(app: &App, reader: &str) -> Vec<Value> {
    let ours = |a: &str| a.starts_with("ban.") || a.starts_with("role.");
    audit_events(app, reader).await.into_iter().filter(|e| ours(e["action"].as_str().unwrap())).collect()
}

/// Asserts the newest audit event describes this API write.
#[track_caller]
fn assert_api_event(event: &Value, action: &str, name: &str, token: &str, test: bool) {
    assert_eq!(event["action"], action, "{event}");
    assert_eq!(event["actor"], "An API key", "{event}");
    assert_eq!(event["key_name"], name, "{event}");
    assert_eq!(event["key_prefix"], &token[..12], "{event}");
    assert_eq!(event["test"], test, "{event}");
    assert!(!event.to_string().contains(&token[12..]), "the audit entry holds the secret: {event}");
}

/// Waits for the audit-channel embed whose title starts with `title`.
async fn audit_post(app: &App, title: &str) -> RecordedMessage {
    app.double
        .wait_for_message(
            ids::AUDIT_LOG_CHANNEL_ID,
            |m| m.embeds.iter().any(|e| e["title"].as_str().is_some_and(|t| t.starts_with(title))),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("no audit post titled {title:?}: {e}"))
}

/// An embed field's value by name.
fn field<'a>(message: &'a RecordedMessage, name: &str) -> &'a str {
    message.embeds[0]["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == name))
        .and_then(|f| f["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} field: {}", message.embeds[0]))
}

/// Asserts the audit post names the key as the actor and holds no secret.
#[track_caller]
fn assert_posted_by_key(message: &RecordedMessage, name: &str, token: &str) {
    let by = field(message, "By");
    assert!(by.starts_with("An API key"), "By: {by}");
    assert!(by.contains(name) && by.contains(&token[..12]), "By: {by}");
    assert!(!by.contains("<@"), "the actor is a key, never a user mention: {by}");
    assert!(!message.json.to_string().contains(&token[12..]), "the audit post holds the secret");
}

/// Asserts a refusal happened before anything reached Discord's write routes.
#[track_caller]
fn assert_no_writes(app: &App) {
    let w = writes(app);
    assert!(w.is_empty(), "unexpected writes to Discord: {:?}", w.iter().map(|c| c.to_string()).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// GET /v1/guilds/{guild_id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn guild_info_comes_from_the_gateway_cache_without_a_rest_call_per_request() {
    let mut cfg = DoubleConfig::demo();
    cfg.guilds[0].icon = Some("a_0123456789abcdef0123456789abcdef".into());
    let members = cfg.guilds[0].members.len() as u64;
    let double = discord_double::Double::start(cfg).await.expect("double");
    let app = spawn_against(double, Options::default()).await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    app.double.clear_recorded();

    for _ in 0..5 {
        let data = get(&app, &guild_path(DEMO), &token).await.ok();
        assert_eq!(
            data,
            json!({
                "id": DEMO.to_string(),
                "name": "Demo Guild",
                "member_count": members,
                "icon": "a_0123456789abcdef0123456789abcdef",
            })
        );
    }
    let rest: Vec<_> =
        app.double.calls().iter().filter(|c| c.path.starts_with("/api/v10/guilds/")).map(|c| c.to_string()).collect();
    assert!(rest.is_empty(), "guild info must not call Discord: {rest:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_follows_the_gateway_when_discord_sends_the_guild_again() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    assert_eq!(get(&app, &guild_path(DEMO), &token).await.ok()["name"], "Demo Guild");

    // The guild as the gateway described it, renamed, sent again.
    let mut guild = app
        .double
        .gateway_frames()
        .into_iter()
        .find(|f| f.t.as_deref() == Some("GUILD_CREATE") && f.d["id"].as_str() == Some(DEMO.to_string().as_str()))
        .expect("the demo guild's GUILD_CREATE")
        .d;
    guild["name"] = json!("Renamed Guild");
    assert_eq!(app.double.dispatch("GUILD_CREATE", guild), 1, "one gateway session gets the event");

    let started = Instant::now();
    loop {
        let data = get(&app, &guild_path(DEMO), &token).await.ok();
        if data["name"] == "Renamed Guild" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the cache never saw the rename: {data}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest: Vec<_> =
        app.double.calls().iter().filter(|c| c.path.starts_with("/api/v10/guilds/")).map(|c| c.to_string()).collect();
    assert!(rest.is_empty(), "guild info must not call Discord: {rest:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_for_a_guild_the_bot_is_not_in_is_not_found() {
    let app = spawn_app().await;
    let token = key(&app, ABSENT_GUILD_ID, "orphan", "guild.read", &[]).await;

    let message = get(&app, &guild_path(ABSENT_GUILD_ID), &token).await.err(404, "not_found");
    assert!(message.contains("not in this guild"), "{message}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_is_not_found_once_the_bot_is_removed_from_the_guild() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    get(&app, &guild_path(DEMO), &token).await.ok();

    assert_eq!(app.double.dispatch("GUILD_DELETE", json!({ "id": DEMO.to_string() })), 1);
    let started = Instant::now();
    loop {
        let reply = get(&app, &guild_path(DEMO), &token).await;
        if reply.status == 404 {
            reply.err(404, "not_found");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still answered after GUILD_DELETE: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_needs_guild_read_the_keys_own_guild_and_a_snowflake() {
    let app = spawn_app().await;
    let reader = key(&app, DEMO, "reader", "guild.read", &[]).await;
    let other = key(&app, DEMO, "bans only", "bans.read,bans.write,roles.write,audit.read", &[]).await;

    get(&app, &guild_path(DEMO), &other).await.err(403, "insufficient_scope");
    get(&app, &guild_path(OTHER), &reader).await.err(403, "guild_mismatch");
    for bad in ["abc", "0", "-1", "99999999999999999999"] {
        get(&app, &format!("/v1/guilds/{bad}"), &reader).await.err(400, "bad_request");
    }
    app.double.assert_no_violations();
}

// ---------------------------------------------------------------------------
// GET /v1/guilds/{guild_id}/bans/{user_id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_ban_check_says_not_banned_on_unknown_ban_and_gives_the_reason_when_banned() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("griefing"));
    app.double.add_ban(DEMO, ids::DANA_ID, None);

    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": false, "reason": null }));
    let data = get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": "griefing" }));
    let data = get(&app, &ban_path(DEMO, ids::DANA_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": null }));

    let checks = calls(&app, "GET", BAN_ROUTE);
    assert_eq!(checks.len(), 3, "one REST call per user");
    assert_eq!(checks[0].status, 404, "Discord answers Unknown Ban for a user who is not banned");
    assert_eq!(checks[0].response.as_ref().unwrap()["code"], 10026);
    assert_no_writes(&app);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_second_ban_check_within_the_ttl_makes_no_rest_call_and_a_later_one_does() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;

    let first = Instant::now();
    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    // A ban made behind our back, with no gateway event: the cache may not know.
    app.double.add_ban(DEMO, ids::PAT_ID, Some("by hand"));
    for _ in 0..5 {
        assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    }
    assert!(first.elapsed() < BAN_CACHE_TTL, "the checks ran within the TTL");
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 1, "repeated checks are served from the cache");

    // Once the TTL is over the next check asks Discord again.
    tokio::time::sleep(BAN_CACHE_TTL.saturating_sub(first.elapsed()) + Duration::from_millis(100)).await;
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": "by hand" }));
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 2);
    app.double.assert_no_violations();
}

/// Polls the ban check until it says `banned`, for less than the TTL since
/// `since` (so only an invalidation can explain the change).
async fn wait_for_ban_status(app: &App, token: &str, user: u64, banned: bool, since: Instant) {
    loop {
        let data = get(app, &ban_path(DEMO, user), token).await.ok();
        if data["banned"] == banned {
            return;
        }
        assert!(
            since.elapsed() < BAN_CACHE_TTL - Duration::from_millis(500),
            "the ban check still says {data} after the gateway event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn guild_ban_add_and_remove_gateway_events_invalidate_the_cached_check() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let user = json!({ "id": ids::STRANGER_ID.to_string(), "username": "stranger", "discriminator": "0",
        "global_name": null, "avatar": null });

    let since = Instant::now();
    assert_eq!(get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok()["banned"], false);
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("raid"));
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", json!({ "guild_id": DEMO.to_string(), "user": user })), 1);
    wait_for_ban_status(&app, &token, ids::STRANGER_ID, true, since).await;

    // Unbanned by a moderator in Discord's own client: the double lifts the
    // ban and sends GUILD_BAN_REMOVE.
    let since = Instant::now();
    let unban = app
        .http
        .delete(format!("{}/guilds/{DEMO}/bans/{}", app.double.api_url(), ids::STRANGER_ID))
        .header("authorization", format!("Bot {}", support::BOT_TOKEN))
        .send()
        .await
        .expect("the double answers");
    assert_eq!(unban.status(), 204);
    wait_for_ban_status(&app, &token, ids::STRANGER_ID, false, since).await;
    app.double.assert_no_violations();
}

#[tokio::test]
async fn our_own_ban_and_unban_refresh_the_cached_check_at_once() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "moderator", "bans.read,bans.write", &[]).await;

    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["banned"], true, "the check right after our ban: {data}");
    delete(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["banned"], false, "the check right after our unban: {data}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_needs_bans_read_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let reader = key(&app, DEMO, "reader", "bans.read", &[]).await;
    let writer = key(&app, DEMO, "writer", "bans.write,guild.read,roles.write", &[]).await;

    get(&app, &ban_path(DEMO, ids::PAT_ID), &writer).await.err(403, "insufficient_scope");
    get(&app, &ban_path(OTHER, ids::PAT_ID), &reader).await.err(403, "guild_mismatch");
    for path in
        [format!("/v1/guilds/{DEMO}/bans/abc"), format!("/v1/guilds/{DEMO}/bans/0"), "/v1/guilds/x/bans/1".to_owned()]
    {
        get(&app, &path, &reader).await.err(400, "bad_request");
    }
    assert!(calls(&app, "GET", BAN_ROUTE).is_empty(), "refused before asking Discord");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_discord_refuses_is_a_502_with_discords_message_and_is_remembered_briefly() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.fault(FaultRule::on("GET", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));

    let message = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Missing Permissions"), "{message}");

    // Asking again at once would only earn another 403, which Discord
    // counts towards cutting the bot off: the refusal is answered again,
    // for any user of the guild, without asking.
    app.double.clear_faults();
    for user in [ids::PAT_ID, ids::DANA_ID, ids::STRANGER_ID] {
        let message = get(&app, &ban_path(DEMO, user), &token).await.err(502, "discord_error");
        assert!(message.contains("Missing Permissions") && message.contains("asks again"), "{message}");
    }
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 1, "Discord was asked once");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_in_a_guild_the_bot_is_not_in_is_a_502_not_a_false_not_banned() {
    let app = spawn_app().await;
    let token = key(&app, ABSENT_GUILD_ID, "orphan", "bans.read", &[]).await;

    let message = get(&app, &ban_path(ABSENT_GUILD_ID, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Unknown Guild"), "{message}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_answered_429_is_retried_after_retry_after() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.fault(FaultRule::on("GET", BAN_ROUTE).rate_limited(1.0, true).once());

    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": false, "reason": null }));
    let attempts = calls(&app, "GET", BAN_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 404]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a global 429 asking for 1 s");
    app.double.assert_no_violations();
}

// ---------------------------------------------------------------------------
// PUT /v1/guilds/{guild_id}/bans/{user_id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_ban_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game server", "bans.write").await;

    let data =
        put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "delete_message_seconds": 3600 })).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(true), &json!(true), &json!(false)));

    let bans = calls(&app, "PUT", BAN_ROUTE);
    assert_eq!(bans.len(), 1, "one ban call");
    let call = &bans[0];
    assert_eq!((call.param_u64("guild_id"), call.param_u64("user_id")), (Some(DEMO), Some(ids::PAT_ID)));
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 3600 })));
    assert_eq!(call.audit_log_reason(), Some(reason_of("game server", &token)));
    assert!(app.double.bans(DEMO).contains_key(&ids::PAT_ID), "Discord now has the ban");
    assert!(!app.double.is_member(DEMO, ids::PAT_ID), "a ban removes the member");

    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_api_event(&events[0], "ban.added", "game server", &token, false);
    assert_eq!(events[0]["id"], data["audit_event_id"]);
    assert_eq!(events[0]["details"]["user_id"], ids::PAT_ID.to_string());
    assert_eq!(events[0]["details"]["delete_message_seconds"], 3600);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_bans_reason_follows_the_key_in_discords_audit_log_and_is_stored_as_the_ban_reason() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write,bans.read").await;

    put_json(&app, &ban_path(DEMO, ids::STRANGER_ID), &token, &json!({ "reason": "cheating" })).await.ok();

    let call = &calls(&app, "PUT", BAN_ROUTE)[0];
    let expected = format!("{}: cheating", reason_of("game", &token));
    assert_eq!(call.audit_log_reason(), Some(expected.clone()));
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 0 })), "no deletion unless asked");
    assert_eq!(app.double.bans(DEMO).get(&ids::STRANGER_ID), Some(&Some(expected.clone())));
    let data = get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": expected }));
    assert_eq!(api_events(&app, &reader).await[0]["details"]["reason"], "cheating");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_name_with_spaces_and_non_ascii_reaches_discords_audit_log_intact() {
    let app = spawn_app().await;
    let name = "Spiel-Server ü/ß 🎮 #1";
    let token = key(&app, DEMO, name, "bans.write,roles.write", &[]).await;

    put(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();

    let reason = reason_of(name, &token);
    assert_eq!(calls(&app, "PUT", BAN_ROUTE)[0].audit_log_reason(), Some(reason.clone()));
    assert_eq!(calls(&app, "PUT", ROLE_ROUTE)[0].audit_log_reason(), Some(reason));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn banning_a_banned_user_succeeds_with_changed_false_and_no_second_ban_or_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("earlier"));

    let data = put(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(true), &json!(false), &json!(false)));
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "no second ban sent");
    assert_eq!(app.double.bans(DEMO).get(&ids::STRANGER_ID), Some(&Some("earlier".to_owned())), "reason kept");
    assert!(api_events(&app, &reader).await.is_empty(), "nothing changed, nothing audited");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn concurrent_identical_bans_make_one_change_and_one_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    // Slow bans widen the window in which the calls overlap.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).latency(Duration::from_millis(300)).once());

    let path = ban_path(DEMO, ids::PAT_ID);
    let replies = futures_join_all((0..4).map(|_| put(&app, &path, &token))).await;
    let changed: Vec<bool> = replies.iter().map(|r| r.ok()["changed"].as_bool().unwrap()).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "exactly one call made the change: {changed:?}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "one ban sent to Discord");
    assert_eq!(api_events(&app, &reader).await.len(), 1, "one audit entry");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn concurrent_identical_role_adds_make_one_change_and_one_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).latency(Duration::from_millis(300)).once());

    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let replies = futures_join_all((0..4).map(|_| put(&app, &path, &token))).await;
    let changed: Vec<bool> = replies.iter().map(|r| r.ok()["changed"].as_bool().unwrap()).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "exactly one call made the change: {changed:?}");
    assert_eq!(calls(&app, "PUT", ROLE_ROUTE).len(), 1, "one role add sent to Discord");
    assert_eq!(api_events(&app, &reader).await.len(), 1, "one audit entry");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_ban_is_a_dry_run_that_sends_no_discord_write_and_is_audited_as_a_test() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.clear_recorded();

    let data = put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "reason": "x" })).await.ok();
    assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)));
    let writes: Vec<_> = app.double.calls().iter().filter(|c| c.method != "GET").map(|c| c.to_string()).collect();
    assert!(writes.iter().all(|c| !c.contains("/bans/")), "a dry run writes nothing: {writes:?}");
    assert!(app.double.bans(DEMO).is_empty() && app.double.is_member(DEMO, ids::PAT_ID));
    let events = api_events(&app, &reader).await;
    assert_api_event(&events[0], "ban.added", "staging", &token, true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_needs_bans_write_the_keys_own_guild_snowflakes_and_a_valid_body() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    let reader_only = key(&app, DEMO, "reader", "bans.read,guild.read,roles.write", &[]).await;
    let path = ban_path(DEMO, ids::PAT_ID);

    put(&app, &path, &reader_only).await.err(403, "insufficient_scope");
    put(&app, &ban_path(OTHER, ids::OSCAR_ID), &token).await.err(403, "guild_mismatch");
    put(&app, &format!("/v1/guilds/{DEMO}/bans/pat"), &token).await.err(400, "bad_request");
    put(&app, &format!("/v1/guilds/1.5/bans/{}", ids::PAT_ID), &token).await.err(400, "bad_request");

    let message = put_json(&app, &path, &token, &json!({ "reason": "x".repeat(513) })).await.err(400, "bad_request");
    assert!(message.contains("reason") && message.contains("512"), "{message}");
    for seconds in [-1, 604_801, i64::from(u32::MAX) + 1] {
        let message =
            put_json(&app, &path, &token, &json!({ "delete_message_seconds": seconds })).await.err(400, "bad_request");
        assert!(message.contains("delete_message_seconds"), "{message}");
    }
    for body in ["{", "not json", "{\"reason\": 5}", "{\"delete_message_seconds\": 1.5}", "{\"unknown\": 1}", "[]"] {
        let reply = send(
            app.http.put(app.url(&path)).bearer_auth(&token).header("content-type", "application/json").body(body),
        )
        .await;
        reply.err(400, "bad_request");
    }
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "nothing invalid reached Discord");
    assert!(api_events(&app, &reader).await.is_empty());

    // The limits themselves are allowed.
    let data = put_json(&app, &path, &token, &json!({ "reason": "é".repeat(512), "delete_message_seconds": 604_800 }))
        .await
        .ok();
    assert_eq!(data["changed"], true);
    let call = &calls(&app, "PUT", BAN_ROUTE)[0];
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 604_800 })));
    let header = call.audit_log_reason().unwrap();
    assert!(header.starts_with(&reason_of("game", &token)) && header.chars().count() <= 512, "{header}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_refusing_a_ban_is_a_502_with_its_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    // The owner: refused by guildkey, before Discord could refuse it.
    let message = put(&app, &ban_path(DEMO, ids::ALICE_ID), &token).await.err(403, "member_protected");
    assert!(message.contains("owner"), "{message}");
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty());

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).status(500));
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(!message.is_empty());
    app.double.clear_faults();

    assert!(app.double.bans(DEMO).is_empty(), "no ban happened");
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for a ban that did not happen");
    // The cache did not learn a ban either.
    let checker = key(&app, DEMO, "checker", "bans.read", &[]).await;
    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &checker).await.ok()["banned"], false);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_answered_429_is_retried_after_retry_after_and_succeeds() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(1.2, false).once());

    let data = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["changed"], true);

    let attempts = calls(&app, "PUT", BAN_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 204]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(1150), "the retry came {waited:?} after a 429 asking for 1.2 s");
    assert!(waited < Duration::from_secs(4), "the retry came {waited:?} later");
    assert!(app.double.bans(DEMO).contains_key(&ids::PAT_ID));
    assert_eq!(api_events(&app, &reader).await.len(), 1, "audited once");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_that_stays_rate_limited_fails_cleanly_as_502_and_the_listener_keeps_answering() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    // Discord keeps saying 429: a few bounded retries, then a clean 502.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(0.3, false));
    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    assert!(message.to_lowercase().contains("rate limit"), "{message}");
    app.double.clear_faults();

    // A retry_after longer than a caller should wait: fail at once, no retry.
    app.double.clear_recorded();
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(120.0, false));
    let started = Instant::now();
    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for a 2-minute rate limit", started.elapsed());
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "no retry before retry_after");
    app.double.clear_faults();

    assert!(api_events(&app, &reader).await.is_empty());
    send(app.http.get(app.url("/healthz"))).await.ok();
    assert_eq!(put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["changed"], true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_discord_does_not_answer_is_a_502_well_before_the_listeners_own_timeout() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).latency(Duration::from_secs(15)).once());

    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "answered after {took:?}");
    assert!(message.contains("did not answer") && message.contains("may or may not"), "{message}");
    send(app.http.get(app.url("/healthz"))).await.ok();
    // The fault delays only the first PUT: a retry would have gone through
    // at once and been recorded. The abandoned request never completed.
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "a timed-out write is not sent again");
    assert!(app.double.bans(DEMO).is_empty());
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for an unconfirmed ban");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_api_ban_is_posted_to_the_audit_channel_naming_the_key_not_a_user() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game server", "bans.write", &[]).await;
    let tester = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;

    put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "reason": "spam" })).await.ok();
    put(&app, &ban_path(DEMO, ids::DANA_ID), &tester).await.ok();

    let post = audit_post(&app, "Member banned").await;
    assert_posted_by_key(&post, "game server", &token);
    assert!(field(&post, "User").contains(&ids::PAT_ID.to_string()));
    assert_eq!(field(&post, "Reason"), "spam");
    let dry = audit_post(&app, "Member banned (test key").await;
    assert_posted_by_key(&dry, "staging", &tester);
    assert!(dry.embeds[0]["title"].as_str().unwrap().contains("dry run"));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_audit_post_answered_429_is_retried_after_retry_after_and_arrives() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;
    let is_ban_post = |body: Option<&Value>| {
        body.and_then(|b| b["embeds"][0]["title"].as_str()).is_some_and(|t| t.starts_with("Member banned"))
    };
    app.double
        .fault(FaultRule::matching(move |r| r.method == "POST" && is_ban_post(r.body)).rate_limited(1.0, false).once());

    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();

    assert_posted_by_key(&audit_post(&app, "Member banned").await, "game", &token);
    let posts: Vec<_> = calls(&app, "POST", "/channels/{channel_id}/messages")
        .into_iter()
        .filter(|c| is_ban_post(c.body.as_ref()))
        .collect();
    let statuses: Vec<u16> = posts.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = posts[1].at.duration_since(posts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a 429 asking for 1 s: {statuses:?}");
    app.double.assert_no_violations();
}

// ---------------------------------------------------------------------------
// DELETE /v1/guilds/{guild_id}/bans/{user_id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_unban_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("earlier"));

    let data = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(false), &json!(true), &json!(false)));

    let unbans = calls(&app, "DELETE", BAN_ROUTE);
    assert_eq!(unbans.len(), 1);
    assert_eq!(unbans[0].param_u64("user_id"), Some(ids::STRANGER_ID));
    assert_eq!(unbans[0].audit_log_reason(), Some(reason_of("game", &token)));
    assert!(app.double.bans(DEMO).is_empty(), "Discord no longer has the ban");
    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1);
    assert_api_event(&events[0], "ban.removed", "game", &token, false);
    assert_eq!(events[0]["details"]["user_id"], ids::STRANGER_ID.to_string());
    assert_posted_by_key(&audit_post(&app, "Member unbanned").await, "game", &token);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn unbanning_a_user_who_is_not_banned_succeeds_with_changed_false_and_no_call() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    let data = delete(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"]), (&json!(false), &json!(false)));
    assert!(calls(&app, "DELETE", BAN_ROUTE).is_empty());
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_unban_is_a_dry_run() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, None);
    app.double.clear_recorded();

    let data = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)));
    assert!(calls(&app, "DELETE", BAN_ROUTE).is_empty(), "a dry run writes nothing");
    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID), "still banned");
    assert_api_event(&api_events(&app, &reader).await[0], "ban.removed", "staging", &token, true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_unban_needs_bans_write_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;
    let reader = key(&app, DEMO, "reader", "bans.read,guild.read,roles.write,audit.read", &[]).await;

    delete(&app, &ban_path(DEMO, ids::PAT_ID), &reader).await.err(403, "insufficient_scope");
    delete(&app, &ban_path(OTHER, ids::PAT_ID), &token).await.err(403, "guild_mismatch");
    delete(&app, &format!("/v1/guilds/{DEMO}/bans/-1"), &token).await.err(400, "bad_request");
    assert_no_writes(&app);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_refusing_an_unban_is_a_502_with_its_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, None);

    app.double.fault(FaultRule::on("DELETE", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();
    app.double.fault(FaultRule::on("DELETE", BAN_ROUTE).status(500));
    delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.err(502, "discord_error");
    app.double.clear_faults();

    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID), "still banned");
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for an unban that did not happen");
    app.double.assert_no_violations();
}

// ---------------------------------------------------------------------------
// PUT|DELETE /v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}
// ---------------------------------------------------------------------------

#[tokio::test]
async fn adding_a_role_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!(
        data,
        json!({ "user_id": ids::PAT_ID.to_string(), "role_id": ids::VERIFIED_ROLE_ID.to_string(), "has_role": true,
            "changed": true, "dry_run": false, "audit_event_id": data["audit_event_id"] })
    );
    assert!(data["audit_event_id"].is_i64());

    let adds = calls(&app, "PUT", ROLE_ROUTE);
    assert_eq!(adds.len(), 1);
    assert_eq!(
        (adds[0].param_u64("guild_id"), adds[0].param_u64("user_id"), adds[0].param_u64("role_id")),
        (Some(DEMO), Some(ids::PAT_ID), Some(ids::VERIFIED_ROLE_ID))
    );
    assert_eq!(adds[0].audit_log_reason(), Some(reason_of("verifier", &token)));
    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID]);

    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1);
    assert_api_event(&events[0], "role.added", "verifier", &token, false);
    assert_eq!(
        events[0]["details"],
        json!({ "user_id": ids::PAT_ID.to_string(), "role_id": ids::VERIFIED_ROLE_ID.to_string() })
    );
    let post = audit_post(&app, "Role added").await;
    assert_posted_by_key(&post, "verifier", &token);
    assert!(field(&post, "Role").contains(&ids::VERIFIED_ROLE_ID.to_string()));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn removing_a_role_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = delete(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"], &data["dry_run"]), (&json!(false), &json!(true), &json!(false)));

    let removes = calls(&app, "DELETE", ROLE_ROUTE);
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0].param_u64("user_id"), Some(ids::DANA_ID));
    assert_eq!(removes[0].audit_log_reason(), Some(reason_of("verifier", &token)));
    assert!(app.double.member_roles(DEMO, ids::DANA_ID).is_empty());
    assert_api_event(&api_events(&app, &reader).await[0], "role.removed", "verifier", &token, false);
    assert_posted_by_key(&audit_post(&app, "Role removed").await, "verifier", &token);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn adding_a_held_role_or_removing_an_absent_one_succeeds_with_changed_false_and_no_write() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = put(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"]), (&json!(true), &json!(false)));
    let data = delete(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"]), (&json!(false), &json!(false)));

    assert_no_writes(&app);
    assert_eq!(calls(&app, "GET", MEMBER_ROUTE).len(), 2, "each looked at the member's roles");
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_role_changes_are_dry_runs() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "roles.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.clear_recorded();

    for (path, add, action) in [
        (role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), true, "role.added"),
        (role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), false, "role.removed"),
    ] {
        let reply = if add { put(&app, &path, &token).await } else { delete(&app, &path, &token).await };
        let data = reply.ok();
        assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)), "{action}");
        assert_api_event(&api_events(&app, &reader).await[0], action, "staging", &token, true);
    }
    assert!(app.double.calls().iter().all(|c| c.method == "GET" || !c.path.contains("/members/")), "no write");
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).is_empty());
    assert_eq!(app.double.member_roles(DEMO, ids::DANA_ID), [ids::VERIFIED_ROLE_ID]);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn role_changes_need_roles_write_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;
    let other = key(&app, DEMO, "other", "bans.read,bans.write,guild.read,audit.read", &[]).await;
    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    put(&app, &path, &other).await.err(403, "insufficient_scope");
    delete(&app, &path, &other).await.err(403, "insufficient_scope");
    put(&app, &role_path(OTHER, ids::OSCAR_ID, ids::OTHER_ADMIN_ROLE_ID), &token).await.err(403, "guild_mismatch");
    delete(&app, &role_path(OTHER, ids::OSCAR_ID, ids::OTHER_ADMIN_ROLE_ID), &token).await.err(403, "guild_mismatch");
    for bad in [
        format!("/v1/guilds/{DEMO}/members/abc/roles/{}", ids::VERIFIED_ROLE_ID),
        format!("/v1/guilds/{DEMO}/members/{}/roles/0", ids::PAT_ID),
        format!("/v1/guilds/{DEMO}/members/{}/roles/99999999999999999999", ids::PAT_ID),
    ] {
        put(&app, &bad, &token).await.err(400, "bad_request");
        delete(&app, &bad, &token).await.err(400, "bad_request");
    }
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "refused before asking Discord");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_errors_on_role_changes_are_502s_with_discords_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    // Unknown Member: a user who is in no guild.
    for reply in [
        put(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token).await,
        delete(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token).await,
    ] {
        let message = reply.err(502, "discord_error");
        assert!(message.contains("Unknown Member") && message.contains("10007"), "{message}");
    }
    // Unknown Role, adding or removing.
    for reply in [
        put(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await,
        delete(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await,
    ] {
        let message = reply.err(502, "discord_error");
        assert!(message.contains("Unknown Role") && message.contains("10011"), "{message}");
    }
    // A role above the bot's highest role (and carrying Manage Server):
    // refused by guildkey, before Discord could say Missing Permissions.
    let message =
        put(&app, &role_path(DEMO, ids::PAT_ID, ids::MANAGER_ROLE_ID), &token).await.err(403, "role_not_allowed");
    assert!(message.contains("Manage Server"), "{message}");
    delete(&app, &role_path(DEMO, ids::MORGAN_ID, ids::MANAGER_ROLE_ID), &token).await.err(403, "role_not_allowed");
    assert!(calls(&app, "PUT", ROLE_ROUTE).is_empty() && calls(&app, "DELETE", ROLE_ROUTE).is_empty());

    // Injected: the bot lost Manage Roles; then Discord fails outright.
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message =
        put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();
    app.double.fault(FaultRule::on("*", ROLE_ROUTE).status(500));
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    delete(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    app.double.clear_faults();
    // Injected Unknown Member on the write itself (the member left meanwhile).
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).discord_error(404, 10007, "Unknown Member").once());
    let message =
        put(&app, &role_path(DEMO, ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Unknown Member"), "{message}");

    assert!(app.double.member_roles(DEMO, ids::PAT_ID).is_empty());
    assert_eq!(app.double.member_roles(DEMO, ids::DANA_ID), [ids::VERIFIED_ROLE_ID]);
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID]);
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for a change that did not happen");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_role_change_answered_429_is_retried_after_retry_after_and_succeeds() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).rate_limited(1.0, false).once());

    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    let attempts = calls(&app, "PUT", ROLE_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 204]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a 429 asking for 1 s");
    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID]);
    assert_eq!(api_events(&app, &reader).await.len(), 1);
    app.double.assert_no_violations();
}

// ---------------------------------------------------------------------------
// The guard: a key is never a way to take a server over, and one guild never
// gets the bot cut off from Discord.
// ---------------------------------------------------------------------------

/// A plain role below the bot ("Games", position 1, no permissions) beside
/// the demo world's "Verified".
const GAMES_ROLE_ID: u64 = 1_400_000_000_000_000_007;

async fn spawn_with_games_role(opts: Options) -> App {
    let mut cfg = DoubleConfig::demo();
    cfg.guilds[0].roles.push(discord_double::RoleSeed::new(GAMES_ROLE_ID, "Games", 1, 0));
    let double = discord_double::Double::start(cfg).await.expect("double");
    spawn_against(double, opts).await
}

/// Polls `path` until it answers `status` (the gateway event is applied).
async fn wait_for_status(app: &App, put_path: &str, token: &str, status: u16) -> Reply {
    let started = Instant::now();
    loop {
        let reply = put(app, put_path, token).await;
        if reply.status == status {
            return reply;
        }
        assert!(started.elapsed() < WAIT, "never answered {status}: {} {}", reply.status, reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_roles_write_key_never_adds_or_removes_an_admin_managed_everyone_or_higher_role() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.clear_recorded();

    for (role, why) in [
        (ids::ADMIN_ROLE_ID, "Administrator"),
        (ids::MANAGER_ROLE_ID, "Manage Server"),
        (ids::BOT_ROLE_ID, "managed"),
        (DEMO, "@everyone"),
    ] {
        for reply in [
            put(&app, &role_path(DEMO, ids::PAT_ID, role), &token).await,
            delete(&app, &role_path(DEMO, ids::ALICE_ID, role), &token).await,
        ] {
            let message = reply.err(403, "role_not_allowed");
            assert!(message.contains(why), "{why}: {message}");
        }
    }
    // Refused before any Discord call: not even the member was looked up.
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "{:?}", app.double.calls());
    assert_eq!(app.double.member_roles(DEMO, ids::ALICE_ID), [ids::ADMIN_ROLE_ID]);
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_role_that_gains_a_dangerous_permission_is_refused_from_the_next_request_on() {
    let app = spawn_app().await;
    let (token, _) = keys(&app, "verifier", "roles.write").await;
    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    // An admin gives "Verified" Manage Webhooks: the gateway says so, and
    // guildkey checks the live hierarchy, not what the role was at start.
    app.double.set_role_permissions(DEMO, ids::VERIFIED_ROLE_ID, guildkey::discord::permissions::MANAGE_WEBHOOKS);
    let message = wait_for_status(&app, &path, &token, 403).await.err(403, "role_not_allowed");
    assert!(message.contains("Manage Webhooks"), "{message}");
    app.double.clear_recorded();
    let morgan = role_path(DEMO, ids::MORGAN_ID, ids::VERIFIED_ROLE_ID);
    for _ in 0..20 {
        put(&app, &morgan, &token).await.err(403, "role_not_allowed");
    }
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "Discord was not asked");

    app.double.set_role_permissions(DEMO, ids::VERIFIED_ROLE_ID, 0);
    assert_eq!(wait_for_status(&app, &morgan, &token, 200).await.ok()["changed"], true);
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID, ids::VERIFIED_ROLE_ID]);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_keys_allowed_roles_bound_what_it_may_change() {
    let app = spawn_with_games_role(Options::default()).await;
    let verified = ids::VERIFIED_ROLE_ID.to_string();
    let token = key(&app, DEMO, "verifier", "roles.write", &["--allowed-roles", &verified]).await;
    let any = key(&app, DEMO, "anything", "roles.write", &[]).await;

    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    let message = put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &token).await.err(403, "role_not_allowed");
    assert!(message.contains("allowed_roles"), "{message}");
    // A key without a list may change any safe role; a list never widens.
    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &any).await.ok()["changed"], true);
    let admin = ids::ADMIN_ROLE_ID.to_string();
    let listed_admin = key(&app, DEMO, "sneaky", "roles.write", &["--allowed-roles", &admin]).await;
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::ADMIN_ROLE_ID), &listed_admin).await.err(403, "role_not_allowed");

    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID, GAMES_ROLE_ID]);
    let listed = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    let keys: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let verifier = keys.as_array().unwrap().iter().find(|k| k["name"] == "verifier").expect("listed");
    assert_eq!(verifier["allowed_roles"], json!([verified]));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_dry_run_validates_like_a_live_write() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "roles.write,bans.write", &["--env", "test"]).await;

    let message =
        put(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Unknown Member"), "{message}");
    let message = put(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await.err(502, "discord_error");
    assert!(message.contains("Unknown Role"), "{message}");
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::ADMIN_ROLE_ID), &token).await.err(403, "role_not_allowed");
    put(&app, &ban_path(DEMO, ids::ALICE_ID), &token).await.err(403, "member_protected");
    // What a live write would leave unchanged is `changed: false` with no entry.
    let data = put(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!(
        (&data["dry_run"], &data["changed"], &data["audit_event_id"]),
        (&json!(true), &json!(false), &Value::Null)
    );
    assert!(writes(&app).is_empty(), "a dry run writes nothing: {:?}", writes(&app));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_bans_write_key_cannot_ban_the_owner_a_moderator_or_the_bot() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    for (user, why) in [(ids::ALICE_ID, "owner"), (ids::MORGAN_ID, "Manage Server"), (ids::BOT_USER_ID, "its own bot")]
    {
        let message = put(&app, &ban_path(DEMO, user), &token).await.err(403, "member_protected");
        assert!(message.contains(why), "{why}: {message}");
    }
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "no ban reached Discord");
    assert_eq!(put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["changed"], true);
    assert_eq!(api_events(&app, &reader).await.len(), 1);
    app.double.assert_no_violations();
}

/// `requests` ban checks for distinct users (so the ban cache never
/// answers), 16 at a time; the statuses seen.
async fn hammer_ban_checks(app: &App, token: &str, requests: u64) -> std::collections::BTreeMap<u16, u64> {
    let mut statuses = std::collections::BTreeMap::new();
    for chunk in (0..requests).collect::<Vec<_>>().chunks(16) {
        let paths: Vec<String> = chunk.iter().map(|i| ban_path(DEMO, 1_200_000_000_000_100_000 + i)).collect();
        let replies = futures_join_all(paths.iter().map(|path| get(app, path, token))).await;
        for r in replies {
            *statuses.entry(r.status).or_default() += 1;
        }
    }
    statuses
}

#[tokio::test]
async fn five_thousand_ban_checks_after_the_bot_lost_ban_members_reach_discord_a_bounded_number_of_times() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &["--rate-limit", "100000"]).await;

    // Unseen by the gateway (the cache still thinks the bot may ban):
    // Discord refuses, once; the refusal is answered again after that.
    app.double.set_member_roles(DEMO, ids::BOT_USER_ID, &[]);
    app.double.clear_recorded();
    let started = Instant::now();
    let statuses = hammer_ban_checks(&app, &token, 5_000).await;
    let unseen = calls(&app, "GET", BAN_ROUTE).len();
    eprintln!(
        "hostile load, change unseen by the gateway: 5000 ban checks in {:?}, answers {statuses:?}, Discord saw {unseen}",
        started.elapsed()
    );
    assert_eq!(statuses.get(&502), Some(&5_000), "{statuses:?}");
    // At most the guild's 4 calls in flight before the first refusal is
    // remembered, then one per 30 s (the load takes well under a minute).
    let bound = guildkey::service::guard::CALLS_IN_FLIGHT_PER_GUILD + 1;
    assert!((1..=bound).contains(&unseen), "Discord saw {unseen} ban checks");
    // Each refusal Discord gave is counted, for the operator to alert on.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let figure = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(figure("guildkey_discord_invalid_requests_total"), unseen as u64);
    assert_eq!(figure("guildkey_discord_invalid_requests_10m"), unseen as u64);

    // Seen by the gateway (an admin took Ban Members off the bot's role):
    // answered from the cache, Discord is not asked at all.
    app.double.set_member_roles(DEMO, ids::BOT_USER_ID, &[ids::BOT_ROLE_ID]);
    let without_ban = ids::BOT_ROLE_PERMISSIONS & !ids::permissions::BAN_MEMBERS;
    app.double.set_role_permissions(DEMO, ids::BOT_ROLE_ID, without_ban);
    let started = Instant::now();
    loop {
        let message = get(&app, &ban_path(DEMO, 1_200_000_000_000_099_999), &token).await.err(502, "discord_error");
        if message.contains("Discord was not asked") {
            break;
        }
        assert!(started.elapsed() < WAIT, "the role update never reached the cache: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.double.clear_recorded();
    let statuses = hammer_ban_checks(&app, &token, 5_000).await;
    let seen = calls(&app, "GET", BAN_ROUTE).len();
    eprintln!("hostile load, change seen by the gateway: answers {statuses:?}, Discord saw {seen}");
    assert_eq!((statuses.get(&502), seen), (Some(&5_000), 0));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn past_its_budget_a_guilds_discord_calls_pause_and_the_audit_channel_says_why() {
    let opts = Options { config: "[discord]\ninvalid_request_budget = 3\n".into(), ..Options::default() };
    let app = spawn_app_with(opts).await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write,bans.read", &["--rate-limit", "100000"]).await;
    let other = key(&app, OTHER, "elsewhere", "bans.read", &[]).await;
    // Every ban write is refused, each for another user: the per-target
    // memory cannot help, the budget must.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    app.double.clear_recorded();

    for i in 0..3 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_200_000 + i), &token).await.err(502, "discord_error");
    }
    let resp =
        app.http.put(app.url(&ban_path(DEMO, 1_200_000_000_000_200_010))).bearer_auth(&token).send().await.unwrap();
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    let reply = Reply { status: resp.status().as_u16(), text: resp.text().await.unwrap() };
    let message = reply.err(503, "discord_paused");
    assert!(message.contains("paused") && message.contains('3'), "{message}");
    for i in 0..20 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_300_000 + i), &token).await.err(503, "discord_paused");
        get(&app, &ban_path(DEMO, 1_200_000_000_000_300_000 + i), &token).await.err(503, "discord_paused");
    }
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 3, "Discord saw the budget's worth and no more");
    // Another guild is not held back.
    assert_eq!(get(&app, &ban_path(OTHER, ids::OSCAR_ID), &other).await.ok()["banned"], false);

    let post = audit_post(&app, "Discord calls paused").await;
    assert!(field(&post, "By").contains("guildkey"), "{:?}", post.embeds);
    assert!(field(&post, "Why").contains("refused 3"), "{:?}", post.embeds);
    // Once per pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pauses =
        app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).iter().filter(|m| m.text().contains("paused")).count();
    assert_eq!(pauses, 1);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_past_its_ban_budget_is_suspended_and_an_admin_resumes_it_from_the_audit_channel() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write", &["--ban-budget", "3"]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();

    for i in 0..3 {
        assert_eq!(put(&app, &ban_path(DEMO, 1_200_000_000_000_400_000 + i), &token).await.ok()["changed"], true);
    }
    let message = put(&app, &ban_path(DEMO, 1_200_000_000_000_400_003), &token).await.err(401, "key_suspended");
    assert!(message.contains("3 bans in 10 minutes"), "{message}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 3, "the fourth ban never reached Discord");
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    let post = audit_post(&app, "API key suspended").await;
    assert!(field(&post, "By").contains("guildkey"), "{:?}", post.embeds);
    assert!(field(&post, "Why").contains("3 bans"), "{:?}", post.embeds);
    let resume = format!("guildkey:resume:{key_id}");
    // A plain member's press changes nothing.
    let click = app.double.click(DEMO, ids::PAT_ID, &post, &resume).await.expect("click");
    let refused = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(refused.ephemeral() && refused.text().contains("Manage Server"), "{}", refused.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    let click = app.double.click(DEMO, ids::ALICE_ID, &post, &resume).await.expect("click");
    let answered = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(answered.text().contains("resumed") && answered.components.is_empty(), "{}", answered.text());
    get(&app, "/v1/verify", &token).await.ok();
    let resumed = audit_post(&app, "API key resumed").await;
    assert!(field(&resumed, "By").contains(&ids::ALICE_ID.to_string()), "{:?}", resumed.embeds);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn role_changes_past_the_configured_budget_suspend_the_key_and_revoke_is_one_press_away() {
    let opts = Options { config: "[keys]\ndefault_role_budget = 2\n".into(), ..Options::default() };
    let app = spawn_with_games_role(opts).await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();

    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    // A no-op changes nothing and spends nothing.
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::MORGAN_ID, GAMES_ROLE_ID), &token).await.err(401, "key_suspended");
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID]);

    let post = audit_post(&app, "API key suspended").await;
    let click = app.double.click(DEMO, ids::ALICE_ID, &post, &format!("guildkey:revoke:{key_id}")).await.unwrap();
    let answered = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(answered.text().contains("revoked"), "{}", answered.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_leaked_token_report_revokes_the_key_and_never_says_which_tokens_were_valid() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let bystander = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    let report = |tokens: &[&str]| -> Value {
        Value::Array(
            tokens
                .iter()
                .map(|t| {
                    json!({ "token": t, "type": "guildkey_api_key", "url": "https://github.com/octo/game/blob/main/.env", "source": "content" })
                })
                .collect(),
        )
    };
    let post =
        |body: String| app.http.post(app.url("/v1/leaked")).header("content-type", "application/json").body(body);

    // Act: one report with the real key among junk, one with junk alone.
    let unknown = "gk_live_00000000000000000000000000000000000000";
    let with_key = send(post(report(&[unknown, &token, "not a token"]).to_string())).await;
    let without = send(post(report(&[unknown, "gk_test_short"]).to_string())).await;

    // Assert: the same answer whatever was valid; only the reported key stops.
    assert_eq!((with_key.status, without.status), (200, 200), "{} {}", with_key.text, without.text);
    assert_eq!(with_key.json()["data"], json!({ "received": 3 }));
    assert_eq!(without.json()["data"], json!({ "received": 2 }));
    let started = Instant::now();
    while get(&app, "/v1/verify", &token).await.status != 401 {
        assert!(started.elapsed() < WAIT, "the reported key was never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
    get(&app, "/v1/verify", &bystander).await.ok();
    let post_seen = audit_post(&app, "API key revoked").await;
    assert!(field(&post_seen, "By").contains("guildkey"), "{:?}", post_seen.embeds);
    assert!(field(&post_seen, "Found at").contains("github.com/octo/game"), "{:?}", post_seen.embeds);
    assert!(field(&post_seen, "Why").contains("leaked"), "{:?}", post_seen.embeds);

    // Bad bodies are 400 and change nothing; the address is limited.
    for body in ["{}".to_owned(), "not json".to_owned(), report(&[unknown; 101]).to_string()] {
        send(post(body)).await.err(400, "bad_request");
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(post(report(&[unknown]).to_string())).await.status);
    }
    assert!(statuses.contains(&429), "one address cannot report without end: {statuses:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_flood_of_audit_entries_into_a_channel_the_bot_may_not_write_in_earns_few_refusals() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    app.double.set_bot_can_send(ids::AUDIT_LOG_CHANNEL_ID, false);
    app.double.clear_recorded();
    // A test key's dry runs write an audit entry each and touch no guild.
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test", "--rate-limit", "100000"]).await;

    for i in 0..60 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_500_000 + i), &token).await.ok();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let posts = app.double.calls_to("POST", "/channels/{channel_id}/messages");
    let refused = posts.iter().filter(|c| c.status == 403).count();
    eprintln!(
        "61 audit entries (a key created, 60 dry runs) into a channel the bot may not write in: {} posts tried, {refused} refused",
        posts.len()
    );
    assert!((1..=guildkey::service::guard::CALLS_IN_FLIGHT_PER_GUILD).contains(&refused), "{refused} refusals");
    app.double.assert_no_violations();
}
