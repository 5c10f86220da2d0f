//! Budgets that hold for the whole bot, not one server or one process
//! (issue "Every server alone"): Discord's refusals counted bot-wide and
//! across instances, dead keys and guessers throttled alike, per-address
//! counting grouped by IPv6 /64 and bounded, and a request log its own key
//! cannot wipe.

use crate::support;

use std::time::{Duration, Instant};

use support::reply::{get, put};
use support::{db_scalar, ids, App};

mod addresses;
mod discord;
mod request_log;

/// Creates a key with the CLI and waits until the listener knows it.
async fn key(app: &App, guild: u64, name: &str, scopes: &str, extra: &[&str]) -> String {
    let mut args = vec!["--rate-limit", "100000"];
    args.extend_from_slice(extra);
    let token = app.create_key(guild, name, scopes, &args);
    let started = Instant::now();
    while get(app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "the listener never learned of key {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token
}

/// A figure from `/metrics`, 0 when absent.
async fn metric(app: &App, name: &str) -> u64 {
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("/metrics").text().await.unwrap();
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).map_or(0, |v| v as u64)
}

/// Discord's answers the double gave that count towards its invalid-request
/// limit (401, 403, 429).
fn refusals_seen(app: &App) -> usize {
    app.double.calls().iter().filter(|c| matches!(c.status, 401 | 403 | 429)).count()
}

fn ban_path(guild: u64, user: u64) -> String {
    format!("/v1/guilds/{guild}/bans/{user}")
}

/// One integer from `sql` on the app's database.
fn rows(app: &App, sql: &str) -> i64 {
    db_scalar(&app.db_url, sql).unwrap_or_else(|| panic!("no answer to {sql}"))
}

const DEMO: u64 = ids::DEMO_GUILD_ID;
