//! Usage you can see, end to end: the real binary against the Discord
//! double. Known traffic to the listener, then `GET /v1/usage` and
//! `/apikey usage`, `/apikey info` and `/apikey requests` show exactly it;
//! the request log holds every request but successful verifications; a
//! spike of refusals posts one audit-channel alert.

use crate::support;

use std::time::Duration;

use discord_double::InteractionReply;
use support::bot::answer;
use support::{db_scalar, ids, json, spawn_app_with, App, Options};

const WAIT: Duration = Duration::from_secs(10);
const DEMO: u64 = ids::DEMO_GUILD_ID;

fn options(config: &str) -> Options {
    // The client IPs below come from X-Forwarded-For.
    Options { config: format!("[http]\ntrust_forwarded_for = true\n{config}"), ..Options::default() }
}

/// `GET path` with `token` from `ip`; the status and the JSON body.
async fn get_from(app: &App, path: &str, token: &str, ip: &str) -> (u16, serde_json::Value) {
    let resp =
        app.http.get(app.url(path)).bearer_auth(token).header("x-forwarded-for", ip).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, json(resp).await)
}

/// Keys made with the CLI (another process) reach the listener within a
/// second; waiting (rather than polling) keeps the counts exact.
async fn let_the_listener_catch_up() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

fn bans_path(user: u64) -> String {
    format!("/v1/guilds/{DEMO}/bans/{user}")
}

/// Runs `/apikey <sub> key:<key>` (plus choice `options`, by index) as
/// Alice and waits for the answer.
async fn command(app: &App, sub: &str, key: &str, options: &[(&str, i64)]) -> InteractionReply {
    let mut slash = app.double.slash(DEMO, ids::ALICE_ID).subcommand("apikey", sub).string("key", key);
    for (name, value) in options {
        slash = slash.integer(name, *value);
    }
    answer(app, slash).await
}

/// 7 verifications, 3 refused for lack of scope, 2 over the key's rate
/// limit of 10, 1 to a route that does not exist.
async fn send_known_traffic(app: &App, token: &str) {
    for _ in 0..7 {
        assert_eq!(get_from(app, "/v1/verify", token, "203.0.113.1").await.0, 200);
    }
    for _ in 0..3 {
        let (status, body) = get_from(app, &bans_path(ids::PAT_ID), token, "203.0.113.2").await;
        assert_eq!((status, body["error"]["reason"].as_str()), (403, Some("insufficient_scope")));
    }
    for _ in 0..2 {
        let (status, body) = get_from(app, "/v1/verify", token, "203.0.113.1").await;
        assert_eq!((status, body["error"]["reason"].as_str()), (429, Some("rate_limited")));
    }
    let (status, body) = get_from(app, "/v1/no-such-route", token, "203.0.113.3").await;
    assert_eq!((status, body["error"]["reason"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn v1_usage_and_apikey_usage_and_info_show_exactly_the_traffic_sent() {
    // Arrange
    let app = spawn_app_with(options("")).await;
    let token = app.create_key(DEMO, "counted", "guild.read", &["--rate-limit", "10"]);
    let other = app.create_key(DEMO, "quiet", "guild.read", &[]);
    let_the_listener_catch_up().await;

    // Act
    send_known_traffic(&app, &token).await;
    // period: 24h (the first choice).
    let usage = command(&app, "usage", "counted", &[("period", 0)]).await;
    let info = command(&app, "info", "counted", &[]).await;
    // The key's budget refills one request per 6 s.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let (status, body) = get_from(&app, "/v1/usage", &token, "203.0.113.1").await;
    let (week_status, week) = get_from(&app, "/v1/usage?period=7d", &other, "203.0.113.9").await;
    let (bad_status, bad) = get_from(&app, "/v1/usage?period=1y", &other, "203.0.113.9").await;

    // Assert: the API.
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        data["outcomes"],
        serde_json::json!({"ok": 7, "insufficient_scope": 3, "rate_limited": 2, "not_found": 1}),
        "{data}"
    );
    assert_eq!((data["total"].as_u64(), data["period"].as_str()), (Some(13), Some("24h")));
    assert_eq!(data["buckets"].as_array().map(Vec::len), Some(24));
    let now = &data["buckets"][23];
    assert_eq!(
        (now["ok"].as_u64(), now["client_error"].as_u64(), now["rate_limited"].as_u64()),
        (Some(7), Some(4), Some(2))
    );
    assert_eq!(data["top_routes"][0], serde_json::json!({"route": "GET /v1/verify", "count": 9, "errors": 2}));
    assert_eq!(data["top_ips"][0], serde_json::json!({"ip": "203.0.113.1", "count": 9}));
    assert_eq!(data["distinct_ips"], 3);
    assert!((data["error_share"].as_f64().unwrap() - 6.0 / 13.0).abs() < 1e-9);
    // Another key sees its own usage only (none yet), over a week.
    assert_eq!(
        (week_status, week["data"]["total"].as_u64(), week["data"]["buckets"].as_array().map(Vec::len)),
        (200, Some(0), Some(28))
    );
    assert_eq!((bad_status, bad["error"]["reason"].as_str()), (400, Some("bad_request")));
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("period") && message.contains("24h, 7d or 30d"), "{message}");

    // Assert: Discord.
    assert!(usage.ephemeral() && info.ephemeral());
    let text = usage.all_text();
    for line in ["`ok`: 7", "`insufficient_scope`: 3", "`rate_limited`: 2", "`not_found`: 1", "**13 requests**"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.contains("`GET /v1/verify`: 9 (2 not ok)") && text.contains("`203.0.113.1`: 9"), "{text}");
    assert!(text.contains("46.2%"), "the error share: {text}");
    // The chart: one PNG, 800×400, attached to the ephemeral reply and
    // shown in its embed.
    let embed = &usage.embeds[0];
    assert_eq!(embed["image"]["url"], "attachment://usage.png", "{embed}");
    let uploads: Vec<_> = app.double.calls().into_iter().flat_map(|c| c.files).collect();
    assert_eq!(uploads.len(), 1, "one file uploaded: {uploads:?}");
    assert_eq!(uploads[0].filename.as_deref(), Some("usage.png"));
    let mut png = png::Decoder::new(std::io::Cursor::new(&uploads[0].data[..])).read_info().expect("a valid PNG");
    let mut pixels = vec![0; png.output_buffer_size().expect("a size")];
    let frame = png.next_frame(&mut pixels).expect("a frame");
    assert_eq!((frame.width, frame.height), (800, 400));
    let info = info.all_text();
    assert!(info.contains("13 (6 not ok)"), "24 h and 7 d counts: {info}");
    assert!(info.contains("`GET (no route)` → **404** `not_found`"), "the latest errors: {info}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn the_request_log_matches_the_requests_sent_and_apikey_requests_pages_through_it() {
    // Arrange
    let app = spawn_app_with(options("")).await;
    let token = app.create_key(DEMO, "logged", "bans.write", &["--rate-limit", "1000"]);
    let_the_listener_catch_up().await;

    // Act: 3 verifications (counted, not logged), a ban, 12 refusals.
    for _ in 0..3 {
        assert_eq!(get_from(&app, "/v1/verify", &token, "203.0.113.5").await.0, 200);
    }
    let ban = app
        .http
        .put(app.url(&bans_path(ids::PAT_ID)))
        .bearer_auth(&token)
        .header("x-forwarded-for", "203.0.113.6")
        .send()
        .await
        .unwrap();
    assert_eq!(ban.status().as_u16(), 200, "{}", support::text(ban).await);
    for _ in 0..12 {
        assert_eq!(get_from(&app, &bans_path(ids::DANA_ID), &token, "203.0.113.7").await.0, 403);
    }
    let first = command(&app, "requests", "logged", &[]).await;

    // Assert: the rows, as sent (the command wrote the log at once).
    let count = |filter: &str| db_scalar(&app.db_url, &format!("select count(*) from request_log {filter}"));
    assert_eq!(count(""), Some(13));
    assert_eq!(count("where route = '/v1/verify'"), Some(0), "a successful verification leaves no row");
    let put = format!(
        "where method = 'PUT' and route = '/v1/guilds/{{guild_id}}/bans/{{user_id}}' and status = 200 \
         and reason is null and ip = '203.0.113.6' and target_user_id = {}",
        ids::PAT_ID as i64
    );
    assert_eq!(count(&put), Some(1));
    let refused = "where method = 'GET' and route = '/v1/guilds/{guild_id}/bans/{user_id}' and status = 403 \
                   and reason = 'insufficient_scope' and ip = '203.0.113.7' and target_user_id is null";
    assert_eq!(count(refused), Some(12));

    // Assert: Discord pages through it, newest first, 10 a page.
    let line = "`GET /v1/guilds/{guild_id}/bans/{user_id}` → **403** `insufficient_scope` · 203.0.113.7";
    let text = first.all_text();
    assert_eq!(text.matches(line).count(), 10, "{text}");
    assert!(text.contains("page 1") && !text.contains("**200**"), "{text}");
    let message = first.followups.last().cloned().or(first.message.clone()).expect("the page message");
    let next_id = first.custom_ids().into_iter().find(|c| c.ends_with(":next")).expect("a Next button");
    let click = app.double.click(DEMO, ids::ALICE_ID, &message, &next_id).await.unwrap();
    let second = app.double.wait_for_response_matching(&click, |r| r.text().contains("page 2"), WAIT).await.unwrap();
    let text = second.text();
    assert_eq!(text.matches(line).count(), 2, "{text}");
    assert!(text.contains("`PUT /v1/guilds/{guild_id}/bans/{user_id}` → **200** · 203.0.113.6"), "{text}");
    assert!(text.contains(&format!("user {}", ids::PAT_ID)), "{text}");
    let prev_id = second.custom_ids().into_iter().find(|c| c.ends_with(":prev")).expect("a Previous button");
    let click = app.double.click(DEMO, ids::ALICE_ID, &message, &prev_id).await.unwrap();
    let back = app.double.wait_for_response_matching(&click, |r| r.text().contains("page 1"), WAIT).await.unwrap();
    assert_eq!(back.text().matches("→ **403**").count(), 10);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_spike_of_refusals_posts_one_alert_to_the_audit_channel() {
    // Arrange: flushes every second, so the alert comes quickly.
    let app = spawn_app_with(options("[keys]\nlast_used_flush_seconds = 1\n")).await;
    app.set_audit_channel().await;
    let token = app.create_key(DEMO, "hammered", "guild.read", &["--rate-limit", "1000"]);
    let_the_listener_catch_up().await;
    let alerts = |app: &App| {
        app.double
            .messages_in(ids::AUDIT_LOG_CHANNEL_ID)
            .into_iter()
            .filter(|m| m.text().contains("API key refusals spiked"))
            .collect::<Vec<_>>()
    };

    // Act: 60 refusals at once.
    for _ in 0..60 {
        assert_eq!(get_from(&app, &bans_path(ids::PAT_ID), &token, "203.0.113.66").await.0, 403);
    }

    // Assert
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key refusals spiked"), WAIT)
        .await
        .expect("an alert");
    let text = posted.text();
    assert!(text.contains("hammered") && text.contains("guildkey"), "{text}");
    // Seen once 50 or more had come (a flush may fall amid the 60).
    let seen: u64 =
        regex::Regex::new(r"(\d+) in 5 minutes").unwrap().captures(&text).expect("the count")[1].parse().unwrap();
    assert!((50..=60).contains(&seen), "{text}");
    assert!(text.contains(&format!("`insufficient_scope` × {seen}")), "{text}");
    assert!(text.contains("`203.0.113.66` × "), "{text}");
    // The spike goes on: still one alert.
    for _ in 0..60 {
        assert_eq!(get_from(&app, &bans_path(ids::PAT_ID), &token, "203.0.113.66").await.0, 403);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.wait_for_audit_outbox().await;
    assert_eq!(alerts(&app).len(), 1);
    let recorded = db_scalar(&app.db_url, "select count(*) from audit_event where action = 'usage.spike'");
    assert_eq!(recorded, Some(1));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn v1_usage_is_in_the_openapi_document_with_its_errors() {
    let app = spawn_app_with(Options::default()).await;
    let doc = json(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
    let op = &doc["paths"]["/v1/usage"]["get"];
    assert_eq!(op["security"], serde_json::json!([{"bearer": []}]), "{op}");
    assert_eq!(op["parameters"][0]["name"], "period");
    let responses = op["responses"].as_object().unwrap();
    for status in ["200", "400", "401", "429", "503"] {
        assert!(responses.contains_key(status), "{status} in {responses:?}");
    }
    assert!(responses["400"]["description"].as_str().unwrap().contains("period"));
    let schema = &doc["components"]["schemas"];
    assert!(schema.get("UsageReport").is_some() || op["responses"]["200"].to_string().contains("top_routes"));
}
