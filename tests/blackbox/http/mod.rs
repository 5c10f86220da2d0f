//! The HTTP listener, black-box: the real binary on a temp database, its
//! bot connected to the Discord double, spoken to over loopback HTTP.
//!
//! Covers SPEC §6 except what the Discord-acting routes do (guild info, bans,
//! roles have their own suite): the envelope, authentication and its failure
//! reasons, IP allow-lists and `X-Forwarded-For`, rotation, rate limits, the
//! audit log, metrics, the OpenAPI document, batched last-used times and
//! secret hygiene. Keys are made with the operator CLI, a separate process,
//! so every test also leans on "another process's change is live within 1 s".

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use support::reply::{assert_error_envelope, get, get_anon, keys_of, send, Reply};
use support::{ids, json, spawn_app, spawn_app_with, token_regex, App, Options, BOT_TOKEN};

mod allow_lists;
mod audit_log;
mod auth;
mod last_used;
mod metrics;
mod rate_limits;
mod rotation;
mod routing;
mod secrets;
mod verify;

const DEMO: u64 = ids::DEMO_GUILD_ID;
const OTHER: u64 = ids::OTHER_GUILD_ID;
const ALL_SCOPES: &str = "guild.read,bans.read,bans.write,roles.write,audit.read";
/// SPEC §1/§6: a change made by another process is live within one second.
const CROSS_PROCESS: Duration = Duration::from_secs(1);
/// `AUTH_FAILURE_BURST` in src/http/mod.rs: failed authentications one IP may
/// make before it is throttled.
const AUTH_FAILURE_BURST: usize = 20;

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
