//! Webhooks, end to end: the real binary against the Discord double, and a
//! receiver on loopback that checks every delivery's Standard Webhooks
//! signature itself (HMAC-SHA256 computed here, not by guildkey's code).
//! The binary is allowed http and private addresses (the receiver is on
//! 127.0.0.1) and short retry waits, through `[webhooks]` in its config.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use support::{bot, ids, spawn_app_with, App, Options};

const WAIT: Duration = Duration::from_secs(10);
const DEMO: u64 = ids::DEMO_GUILD_ID;

/// Config for a receiver on loopback, with retries 200 ms apart.
fn loopback_config(delays: &str) -> Options {
    Options {
        config: format!("[webhooks]\nallow_http = true\nallow_private_addresses = true\nretry_delays = {delays}\n"),
        ..Options::default()
    }
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: String,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("the body is JSON ({e}): {}", self.body))
    }
}

/// A webhook receiver on 127.0.0.1 that answers 500 to its first
/// `fail_first` requests (all of them with `usize::MAX`) and 204 after.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

struct ReceiverState {
    hits: Arc<Mutex<Vec<Hit>>>,
    fail_first: usize,
    seen: AtomicUsize,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ReceiverState { hits: hits.clone(), fail_first, seen: AtomicUsize::new(0) });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, hits, task }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `count` hits satisfy `pred`; returns them all.
    async fn wait_for(&self, what: &str, count: usize, pred: impl Fn(&Hit) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + WAIT;
        loop {
            let hits = self.hits();
            if hits.iter().filter(|h| pred(h)).count() >= count {
                return hits;
            }
            assert!(Instant::now() < deadline, "the receiver did not get {what}; it got {hits:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<ReceiverState>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let n = state.seen.fetch_add(1, Ordering::SeqCst);
    let answered = if n < state.fail_first { 500 } else { 204 };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    state.hits.lock().unwrap().push(Hit {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body,
        answered,
    });
    axum::http::StatusCode::from_u16(answered).unwrap()
}

/// Checks a hit's signature as a receiver would, from the spec alone:
/// `v1,` + base64(HMAC-SHA256(base64-decoded secret after `whsec_`,
/// "{id}.{timestamp}.{body}")), the timestamp within five minutes of now.
fn assert_signed(hit: &Hit, secret: &str) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("the secret is base64");
    assert!(key.len() >= 24, "a secret of {} bytes", key.len());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", hit.id, hit.timestamp, hit.body).as_bytes());
    let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(hit.signature.split(' ').any(|s| s == want), "bad signature on {hit:#?}; want {want}");
    let ts: i64 = hit.timestamp.parse().expect("webhook-timestamp is unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() < 300, "timestamp {ts} is not near {now}");
    assert!(hit.id.starts_with("msg_") && hit.id.len() > 20, "webhook-id {}", hit.id);
    assert_eq!(hit.content_type, "application/json");
    assert!(!hit.body.contains(secret) && !hit.body.contains("whsec_"), "the body holds the secret: {}", hit.body);
}

fn secret_in(text: &str) -> Option<String> {
    regex::Regex::new(r"whsec_[A-Za-z0-9+/=]{32,}").unwrap().find(text).map(|m| m.as_str().to_owned())
}

/// `/apikey webhook SUB` with string options, as admin Alice; the reply text.
async fn webhook(app: &App, user: u64, sub: &str, options: &[(&str, &str)]) -> String {
    let mut b = app.double.slash(DEMO, user).group("apikey", "webhook", sub);
    for (k, v) in options {
        b = if *v == "true" || *v == "false" { b.boolean(k, *v == "true") } else { b.string(k, v) };
    }
    let reply = bot::answer(app, b).await;
    assert!(reply.ephemeral(), "webhook replies are ephemeral");
    reply.all_text()
}

async fn create_key(app: &App, name: &str) -> String {
    bot::secret_in(&bot::create(app, ids::ALICE_ID, name, "bans.read, bans.write").await)
}

fn assert_secret_not_logged(app: &App, secret: &str) {
    let b64 = secret.trim_start_matches("whsec_");
    for line in app.logs() {
        assert!(!line.contains(b64) && !line.contains("whsec_"), "a log line holds the webhook secret: {line}");
    }
}

#[tokio::test]
async fn a_receiver_gets_signed_key_and_gateway_ban_events_and_show_lists_them() {
    let receiver = Receiver::start(0).await;
    let app = spawn_app_with(loopback_config("[\"200ms\"]")).await;

    let set = webhook(&app, ids::ALICE_ID, "set", &[("url", &receiver.url), ("events", "all")]).await;
    let secret = secret_in(&set).unwrap_or_else(|| panic!("the secret is shown once: {set}"));
    assert!(set.contains("shown only once") && set.contains(&receiver.url), "{set}");

    let token = create_key(&app, "game server").await;
    let hits = receiver.wait_for("key.created", 1, |h| h.body.contains("key.created")).await;
    let hit = hits.iter().find(|h| h.body.contains("key.created")).unwrap();
    assert_signed(hit, &secret);
    let body = hit.json();
    assert_eq!(body["type"], "key.created");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert_eq!(body["data"]["guild_id"], DEMO.to_string());
    assert_eq!(body["data"]["key_name"], "game server");
    assert_eq!(body["data"]["key_prefix"], token[..12]);
    assert_eq!(body["data"]["actor"], format!("<@{}>", ids::ALICE_ID));
    assert!(!hit.body.contains(&token[12..]), "the body holds the API key: {}", hit.body);

    // A ban made in Discord's own client arrives on the gateway.
    let user = json!({ "id": ids::STRANGER_ID.to_string(), "username": "stranger", "discriminator": "0",
        "global_name": null, "avatar": null });
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", json!({ "guild_id": DEMO.to_string(), "user": user })), 1);
    let hits = receiver.wait_for("gateway.ban.added", 1, |h| h.body.contains("gateway.ban.added")).await;
    let ban = hits.iter().find(|h| h.body.contains("gateway.ban.added")).unwrap();
    assert_signed(ban, &secret);
    assert_eq!(ban.json()["data"]["user"]["id"], ids::STRANGER_ID.to_string());
    assert_ne!(ban.id, hit.id, "every message has its own webhook-id");

    // A ban through the API is an audit event (ban.added) and, once Discord
    // reports it, a gateway one too.
    let put = app.http.put(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID))).bearer_auth(&token);
    let (status, _) = app.send(put.json(&json!({ "reason": "griefing" }))).await;
    assert_eq!(status, 200);
    let hits = receiver.wait_for("ban.added", 1, |h| h.json()["type"] == "ban.added").await;
    let api_ban = hits.iter().find(|h| h.json()["type"] == "ban.added").unwrap();
    assert_signed(api_ban, &secret);
    assert_eq!(api_ban.json()["data"]["details"]["user_id"], ids::PAT_ID.to_string());

    let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
    assert!(show.contains("enabled") && show.contains(&receiver.url), "{show}");
    assert!(show.contains("key.created") && show.contains("delivered") && show.contains(&hit.id), "{show}");
    assert!(secret_in(&show).is_none(), "show never shows the secret: {show}");
    for hit in receiver.hits() {
        assert_signed(&hit, &secret);
    }
    assert_secret_not_logged(&app, &secret);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_the_same_id_until_it_answers_2xx() {
    let receiver = Receiver::start(2).await;
    let app = spawn_app_with(loopback_config("[\"200ms\", \"200ms\", \"200ms\"]")).await;
    let secret = app_set(&app, &receiver.url, "key.created, key.revoked").await;

    let started = Instant::now();
    create_key(&app, "retried").await;
    let hits = receiver.wait_for("a 2xx-answered attempt", 1, |h| h.answered == 204).await;

    assert_eq!(hits.len(), 3, "two failures, then success: {hits:#?}");
    assert!(hits.iter().all(|h| h.id == hits[0].id), "the webhook-id is the same on every retry");
    assert!(hits.iter().all(|h| h.body == hits[0].body), "the body is the same on every retry");
    assert_eq!(hits.iter().map(|h| h.answered).collect::<Vec<_>>(), [500, 500, 204]);
    for hit in &hits {
        assert_signed(hit, &secret);
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "two waits of 200 ms between attempts");
    // Nothing more once delivered.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.hits().len(), 3);
    let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
    assert!(show.contains("delivered") && show.contains("3 attempts"), "{show}");
    assert_secret_not_logged(&app, &secret);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_servers_messages_arrive_in_event_order_each_after_the_one_before_is_delivered() {
    // The receiver refuses its first two requests: the first message is retried twice.
    let receiver = Receiver::start(2).await;
    let app = spawn_app_with(loopback_config("[\"500ms\", \"500ms\", \"500ms\"]")).await;
    app_set(&app, &receiver.url, "key.created").await;
    for n in 0..3 {
        create_key(&app, &format!("ordered {n}")).await;
    }
    let hits = receiver.wait_for("three delivered messages", 3, |h| h.answered == 204).await;
    let which = |h: &Hit| (0..3).find(|n| h.body.contains(&format!("ordered {n}"))).expect("one of the three keys");
    let sequence: Vec<(usize, u16)> = hits.iter().map(|h| (which(h), h.answered)).collect();
    assert_eq!(sequence, [(0, 500), (0, 500), (0, 204), (1, 204), (2, 204)], "in event order, one at a time");
}

/// Sets the webhook through the bot; returns the secret it showed.
async fn app_set(app: &App, url: &str, events: &str) -> String {
    let set = webhook(app, ids::ALICE_ID, "set", &[("url", url), ("events", events)]).await;
    secret_in(&set).unwrap_or_else(|| panic!("a new webhook's secret is shown: {set}"))
}

#[tokio::test]
async fn three_messages_given_up_in_a_row_disable_the_webhook_with_an_audit_post_and_set_turns_it_back_on() {
    let receiver = Receiver::start(usize::MAX).await;
    let app = spawn_app_with(loopback_config("[\"100ms\"]")).await;
    app.set_audit_channel().await;
    let secret = app_set(&app, &receiver.url, "key.created key.revoked").await;

    for n in 0..3 {
        create_key(&app, &format!("key {n}")).await;
    }
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("Webhook disabled"), Duration::from_secs(15))
        .await
        .expect("an audit post says the webhook was disabled");
    assert!(posted.text().contains("3 messages in a row") && posted.text().contains("HTTP 500"), "{}", posted.text());
    assert!(posted.text().contains("guildkey"), "guildkey itself did it: {}", posted.text());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 6, "3 messages, 2 attempts each: {hits:#?}");
    for hit in &hits {
        assert_signed(hit, &secret);
    }

    let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
    assert!(show.contains("disabled") && show.contains("given up"), "{show}");
    // Disabled: a new event is not sent.
    let sent = app.double.slash(DEMO, ids::ALICE_ID).subcommand("apikey", "revoke").string("key", "key 0");
    let sent = sent.send().await.unwrap();
    let prompt = app.double.wait_for_response(&sent, WAIT).await.unwrap();
    let confirm = prompt.custom_ids().into_iter().find(|c| c.ends_with(":confirm")).expect("a confirm button");
    let message = prompt.followups.last().cloned().or(prompt.message.clone()).unwrap();
    let click = app.double.click(DEMO, ids::ALICE_ID, &message, &confirm).await.unwrap();
    app.double.wait_for_response_matching(&click, |r| r.content.contains("Revoked"), WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.hits().len(), 6, "a disabled webhook gets nothing");

    // `set` again turns it back on, with the same secret.
    let again = webhook(&app, ids::ALICE_ID, "set", &[("url", &receiver.url), ("events", "all")]).await;
    assert!(again.contains("enabled again") && again.contains("unchanged"), "{again}");
    assert!(secret_in(&again).is_none(), "the secret is not shown again: {again}");
    let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
    assert!(show.contains("🟢 **enabled**"), "{show}");
    // And a new secret on request.
    let rotated =
        webhook(&app, ids::ALICE_ID, "set", &[("url", &receiver.url), ("events", "all"), ("new_secret", "true")]).await;
    let new = secret_in(&rotated).expect("a new secret");
    assert_ne!(new, secret);
    assert_secret_not_logged(&app, &secret);
    assert_secret_not_logged(&app, &new);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn private_loopback_and_plain_http_urls_and_bad_events_are_refused_by_default() {
    let app = spawn_app_with(Options::default()).await;
    for (url, needle) in [
        ("https://10.0.0.1/hook", "10.0.0.1, a private address"),
        ("https://127.0.0.1:8443/hook", "127.0.0.1, a loopback address"),
        ("https://[::ffff:192.168.0.1]/", "a private address"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://localhost/hook", "resolves to a non-public address"),
        ("http://example.com/hook", "not https"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("not a url", "is not a URL"),
    ] {
        let reply = webhook(&app, ids::ALICE_ID, "set", &[("url", url), ("events", "all")]).await;
        assert!(reply.contains("`url`") && reply.contains(needle), "{url}: {reply}");
        if url.contains("localhost") {
            assert!(
                !reply.contains("127.0.0.1") && !reply.contains("::1"),
                "the resolved address is not named: {reply}"
            );
        }
        assert!(secret_in(&reply).is_none(), "{reply}");
    }
    let reply = webhook(
        &app,
        ids::ALICE_ID,
        "set",
        &[("url", "https://93.184.216.34/"), ("events", "key.created, key.exploded")],
    )
    .await;
    assert!(reply.contains("'key.exploded' is not an event type"), "{reply}");
    // A member without Manage Server is refused, as for every /apikey command.
    let plain = webhook(&app, ids::PAT_ID, "set", &[("url", "https://93.184.216.34/"), ("events", "all")]).await;
    assert!(plain.contains("Manage Server"), "{plain}");
    let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
    assert!(show.contains("no webhook"), "nothing was set: {show}");

    let out = app.cli(&[
        "keys",
        "webhook",
        "set",
        "--guild",
        &DEMO.to_string(),
        "--url",
        "https://10.0.0.1/",
        "--events",
        "all",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--url:") && stderr.contains("private address"), "{stderr}");
    assert!(out.stdout.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn the_cli_sets_shows_and_removes_a_webhook_and_its_key_changes_are_delivered() {
    let receiver = Receiver::start(0).await;
    let app = spawn_app_with(loopback_config("[\"200ms\"]")).await;
    let guild = DEMO.to_string();

    let out = app.cli(&[
        "keys",
        "webhook",
        "set",
        "--guild",
        &guild,
        "--url",
        &receiver.url,
        "--events",
        "key.created,key.revoked",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret_in(&secret).as_deref() == Some(secret.as_str()), "stdout is the secret alone: {secret:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shown only once") && !stderr.contains("whsec_"), "{stderr}");

    // A key the CLI (another process) creates reaches the receiver through the running instance.
    let token = app.create_key(DEMO, "from the cli", "bans.read", &[]);
    let hits = receiver.wait_for("key.created", 1, |h| h.body.contains("key.created")).await;
    assert_signed(&hits[0], &secret);
    assert_eq!(hits[0].json()["data"]["actor"], "The operator CLI");
    assert_eq!(hits[0].json()["data"]["key_prefix"], token[..12]);

    let show = app.cli(&["keys", "webhook", "show", "--guild", &guild, "--json"]);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let report: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(report["url"], receiver.url);
    assert_eq!(report["enabled"], true);
    assert_eq!(report["events"], json!(["key.created", "key.revoked"]));
    assert_eq!(report["deliveries"][0]["state"], "delivered");
    assert_eq!(report["deliveries"][0]["message_id"], hits[0].id);
    assert!(!String::from_utf8_lossy(&show.stdout).contains("whsec_"), "show never prints the secret");
    let text = app.cli(&["keys", "webhook", "show", "--guild", &guild]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("(enabled)") && text.contains("delivered"), "{text}");

    // Set again: the secret is kept and not printed; --new-secret prints a new one.
    let again = app.cli(&["keys", "webhook", "set", "--guild", &guild, "--url", &receiver.url, "--events", "all"]);
    assert!(again.status.success() && again.stdout.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
    let rotated = app.cli(&[
        "keys",
        "webhook",
        "set",
        "--guild",
        &guild,
        "--url",
        &receiver.url,
        "--events",
        "all",
        "--new-secret",
    ]);
    let new = String::from_utf8(rotated.stdout).unwrap().trim().to_owned();
    assert!(new.starts_with("whsec_") && new != secret, "{new}");

    let bad =
        app.cli(&["keys", "webhook", "set", "--guild", &guild, "--url", &receiver.url, "--events", "keys.created"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--events: 'keys.created' is not an event type"));

    let removed = app.cli(&["keys", "webhook", "remove", "--guild", &guild]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let gone = app.cli(&["keys", "webhook", "show", "--guild", &guild]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no webhook"));
    let again = app.cli(&["keys", "webhook", "remove", "--guild", &guild]);
    assert_eq!(again.status.code(), Some(1));
    assert_secret_not_logged(&app, &secret);
    assert_secret_not_logged(&app, &new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_deliver_each_message_once() {
    // The first attempts fail, so retries are claimed by either instance too.
    let receiver = Receiver::start(4).await;
    // Five retries: however the four failures fall, no message runs out.
    let delays = "\"100ms, 100ms, 100ms, 100ms, 100ms\"";
    let first = spawn_app_with(loopback_config(delays)).await;
    let second = support::spawn_against(
        first.double.clone(),
        Options { db_url: Some(first.db_url.clone()), ..loopback_config(delays) },
    )
    .await;
    let guild = DEMO.to_string();
    let out = first.cli(&["keys", "webhook", "set", "--guild", &guild, "--url", &receiver.url, "--events", "all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut events = 0;
    for round in 0..2 {
        for n in 0..3 {
            first.create_key(DEMO, &format!("k{round}{n}"), "bans.read", &[]);
            events += 1;
        }
        for n in 0..3 {
            for verb in ["revoke", "delete"] {
                let out = second.cli(&["keys", verb, &format!("k{round}{n}"), "--guild", &guild]);
                assert!(out.status.success(), "{verb}: {}", String::from_utf8_lossy(&out.stderr));
                events += 1;
            }
        }
    }

    receiver.wait_for("every message", events, |h| h.answered == 204).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // time for a second delivery, were there one

    let hits = receiver.hits();
    let mut ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events, "one message per event");
    let delivered = hits.iter().filter(|h| h.answered == 204).count();
    assert_eq!(delivered, events, "each message delivered once, by one instance: {hits:#?}");
    assert_eq!(hits.len(), events + 4, "and each failed attempt retried once");
    for hit in &hits {
        assert_signed(hit, &secret);
    }
    let delivered_by = |app: &App| app.logs().iter().filter(|l| l.contains("webhook message delivered")).count();
    assert_eq!(delivered_by(&first) + delivered_by(&second), events);
    assert_secret_not_logged(&first, &secret);
    assert_secret_not_logged(&second, &secret);
}

#[tokio::test]
async fn a_url_allowed_when_set_is_checked_again_at_every_delivery() {
    let receiver = Receiver::start(0).await;
    let mut app = spawn_app_with(loopback_config("[\"100ms\"]")).await;
    // A host name, so the delivery-time check is the resolver's.
    let url = receiver.url.replace("127.0.0.1", "localhost");
    app_set(&app, &url, "all").await;
    create_key(&app, "before").await;
    receiver.wait_for("key.created", 1, |h| h.answered == 204).await;

    // The operator stops allowing private addresses; the webhook stays set.
    let config = "[webhooks]\nallow_http = true\nretry_delays = [\"100ms\"]\n";
    std::fs::write(app.dir.path().join("config.toml"), config).unwrap();
    app.restart().await;
    create_key(&app, "after").await;

    let deadline = Instant::now() + WAIT;
    let show = loop {
        let show = webhook(&app, ids::ALICE_ID, "show", &[]).await;
        if show.contains("given up") {
            break show;
        }
        assert!(Instant::now() < deadline, "the refused delivery is never given up: {show}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(show.contains("resolves to a non-public address"), "{show}");
    assert!(!show.contains("127.0.0.1") && !show.contains("::1"), "the resolved address is not named: {show}");
    assert_eq!(receiver.hits().len(), 1, "nothing reached the receiver after the restart");
    app.double.assert_no_violations();
}
