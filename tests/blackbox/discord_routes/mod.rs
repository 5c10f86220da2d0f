//! The API routes that act on Discord (SPEC §6: guild info, ban check, ban,
//! unban, role add and remove), black-box: the real binary, its bot
//! connected to the Discord double, keys made with the operator CLI.
//!
//! Each route is judged by what reached Discord (the double's recorder:
//! method, route, body, `X-Audit-Log-Reason`), by the double's state (bans,
//! member roles), by the listener's answer and by the audit log. Every test
//! ends with `assert_no_violations()`: each request the bot sent and each
//! answer it got matched Discord's OpenAPI description.

use crate::support;

use std::time::{Duration, Instant};

use discord_double::{DoubleConfig, FaultRule, RecordedCall, RecordedMessage};
use serde_json::{json, Value};
use support::reply::{delete, get, put, put_json, send, Reply};
use support::{ids, spawn_against, spawn_app, spawn_app_with, App, Options};

mod ban;
mod ban_lookup;
mod guard;
mod guild;
mod production_rest;
mod protections;
mod roles;
mod unban;

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

fn guild_path(guild: u64) -> String {
    format!("/v1/guilds/{guild}")
}

fn ban_path(guild: u64, user: u64) -> String {
    format!("/v1/guilds/{guild}/bans/{user}")
}

fn role_path(guild: u64, user: u64, role: u64) -> String {
    format!("/v1/guilds/{guild}/members/{user}/roles/{role}")
}

/// Keeps the guild's ban list from syncing (Discord's ban-list route answers
/// 404, which costs no invalid answer), so ban checks ask Discord as they do
/// before a guild's list is synced. Called before the first key is made:
/// the bot syncs a guild with a key when it sees it.
fn unsynced(app: &App) {
    app.double.fault(FaultRule::on("GET", "/guilds/{guild_id}/bans").discord_error(404, 10004, "Unknown Guild"));
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
