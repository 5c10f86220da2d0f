//! Discord failing, black-box: the gateway dropping, asking to reconnect,
//! invalidating the session; REST answering 5xx, 429 storms (per-route and
//! global) and refusals, on the Discord-backed routes and on the
//! audit-channel post. Throughout, `GET /v1/verify` must keep answering 200
//! (it never touches Discord); the bot must come back; Discord-backed routes
//! must fail cleanly with 502 `discord_error` and work again once Discord
//! does. Figures are printed (`--nocapture` shows them).

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discord_double::{FaultRule, GatewayStats, InteractionReply};
use serde_json::{json, Value};
use support::bot::answer;
use support::reply::send;
use support::{ids, spawn_app, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;
const WAIT: Duration = Duration::from_secs(10);
/// serenity waits a few seconds before identifying again after a
/// non-resumable Invalid Session.
const RECONNECT_WITHIN: Duration = Duration::from_secs(20);
const BAN_ROUTE: &str = "/guilds/{guild_id}/bans/{user_id}";
const POST_MESSAGE: &str = "/channels/{channel_id}/messages";

/// Calls `GET path` with a key back to back until stopped, counting answers.
struct Poller {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    slowest: Arc<Mutex<Duration>>,
    path: String,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(app: &App, token: &str) -> Self {
        Self::start_on(app, "/v1/verify", token)
    }

    fn start_on(app: &App, path: &str, token: &str) -> Self {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let url = app.url(path);
        let path = path.to_owned();
        let token = token.to_owned();
        let task = {
            let (stop, ok, failures, slowest) = (stop.clone(), ok.clone(), failures.clone(), slowest.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(format!("error {e}")),
                    }
                    let took = started.elapsed();
                    {
                        let mut s = slowest.lock().unwrap();
                        *s = (*s).max(took);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Self { stop, ok, failures, slowest, path, task }
    }

    /// The failures so far, forgotten once taken.
    fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().unwrap())
    }

    /// Stops polling; asserts there was no failure and returns (answers, slowest).
    async fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} failed {} times: {:?}",
            self.path,
            failures.len(),
            &failures[..5.min(failures.len())]
        );
        let ok = self.ok.load(Ordering::SeqCst);
        assert!(ok > 0);
        let slowest = *self.slowest.lock().unwrap();
        (ok, slowest)
    }
}

async fn let_the_listener_catch_up() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

async fn list_command(app: &App) -> InteractionReply {
    answer(app, app.double.slash(DEMO, ids::ALICE_ID).subcommand("apikey", "list")).await
}

/// What the gateway does to the bot.
#[derive(Debug, Clone, Copy)]
enum GatewayFault {
    /// The connection vanishes without a close frame.
    Drop,
    /// Op 7.
    Reconnect,
    /// Close frame 4000 (unknown error; resumable).
    Close4000,
    /// Op 9.
    InvalidSession { resumable: bool },
}

impl GatewayFault {
    async fn inject(self, app: &App) {
        match self {
            Self::Drop => app.double.drop_gateway().await,
            Self::Reconnect => app.double.send_reconnect().await,
            Self::Close4000 => app.double.close_gateway(4000, "Unknown error").await,
            Self::InvalidSession { resumable } => app.double.send_invalid_session(resumable).await,
        }
    }
}

/// Whether the bot is back, judging by the counters before and now.
type Done = fn(&GatewayStats, &GatewayStats) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_never_fails_while_the_gateway_drops_reconnects_and_invalidates_and_commands_work_after() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "verifier", "guild.read", &["--rate-limit", "100000"]);
    let_the_listener_catch_up().await;
    let poller = Poller::start(&app, &token);
    // Guild info comes from the gateway cache, which a resume must not empty.
    let guild_poller = Poller::start_on(&app, &format!("/v1/guilds/{DEMO}"), &token);

    let resumed: Done = |before, now| now.resumes > before.resumes;
    let identified: Done = |before, now| now.identifies > before.identifies;
    let either: Done = |before, now| now.resumes + now.identifies > before.resumes + before.identifies;
    let faults = [
        (GatewayFault::Drop, resumed),
        (GatewayFault::Reconnect, resumed),
        (GatewayFault::Close4000, resumed),
        (GatewayFault::InvalidSession { resumable: true }, either),
        (GatewayFault::InvalidSession { resumable: false }, identified),
    ];
    let mut report = Vec::new();
    for (what, done) in &faults {
        let before = app.double.gateway_stats();
        let started = Instant::now();
        what.inject(&app).await;
        let after = app
            .double
            .wait_for_gateway(|now| done(&before, now) && now.open >= 1, RECONNECT_WITHIN)
            .await
            .unwrap_or_else(|e| panic!("{what:?}: the bot did not come back: {e}"));
        app.double.wait_for_ready(RECONNECT_WITHIN).await.unwrap_or_else(|e| panic!("{what:?}: {e}"));
        let back = started.elapsed();
        // A command right after the reconnect is answered.
        let reply = list_command(&app).await;
        assert!(reply.ephemeral() && reply.all_text().contains("verifier"), "{what:?}: {}", reply.all_text());
        let glitches = guild_poller.take_failures();
        // A fresh READY lists the guild as unavailable and serenity drops it from
        // the cache until its GUILD_CREATE; guild info answers from what it last
        // saw meanwhile, so no fault may make it fail.
        assert!(glitches.is_empty(), "{what:?}: guild info failed during the reconnect: {glitches:?}");
        let info = app.get(&format!("/v1/guilds/{DEMO}"), &token).await;
        assert_eq!(info.status(), 200, "{what:?}: guild info is back once the bot is");
        report.push(format!(
            "{what:?}: back in {back:?} (+{} resumes, +{} identifies; {} guild-info failures)",
            after.resumes - before.resumes,
            after.identifies - before.identifies,
            glitches.len()
        ));
    }

    let (answers, slowest) = poller.finish().await;
    let (guild_answers, guild_slowest) = guild_poller.finish().await;
    let stats = app.double.gateway_stats();
    eprintln!(
        "gateway faults: {}; {answers} verifications meanwhile, 0 failures, slowest {slowest:?}; \
         {guild_answers} guild-info reads, slowest {guild_slowest:?}; gateway {stats:?}",
        report.join("; ")
    );
    assert!(stats.connections > faults.len() as u64, "each fault made a new connection: {stats:?}");
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_backed_routes_answer_502_while_discord_fails_and_work_again_after() {
    let app = spawn_app().await;
    // The guild's ban list never syncs here, so checks ask Discord (and fail with it).
    let clear_faults = || {
        app.double.clear_faults();
        app.double.fault(FaultRule::on("GET", "/guilds/{guild_id}/bans").discord_error(404, 10004, "Unknown Guild"));
    };
    clear_faults();
    let fast = ["--rate-limit", "100000"];
    let writer = app.create_key(
        DEMO,
        "writer",
        "bans.write,bans.read,roles.write,guild.read",
        &["--rate-limit", "100000", "--ban-budget", "10000", "--role-budget", "10000"],
    );
    let verifier = app.create_key(DEMO, "verifier", "guild.read", &fast);
    let auditor = app.create_key(DEMO, "auditor", "audit.read", &fast);
    let_the_listener_catch_up().await;
    let poller = Poller::start(&app, &verifier);
    let user = ids::STRANGER_ID;
    let ban_url = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    let ban = || app.http.put(&ban_url).bearer_auth(&writer).json(&json!({ "reason": "fault test" }));
    let check = || app.http.get(&ban_url).bearer_auth(&writer);

    let storms: Vec<(&str, FaultRule)> = vec![
        ("500", FaultRule::on("*", BAN_ROUTE).status(500)),
        ("503", FaultRule::on("*", BAN_ROUTE).status(503)),
        ("429 storm", FaultRule::on("*", BAN_ROUTE).rate_limited(0.2, false)),
        ("global 429 storm", FaultRule::on("*", BAN_ROUTE).rate_limited(0.2, true)),
        ("403 Missing Permissions", FaultRule::on("*", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions")),
    ];
    let mut report = Vec::new();
    for (what, rule) in storms {
        app.double.fault(rule);
        let put = send(ban()).await;
        let message = put.discord_error();
        let get = send(check()).await;
        get.discord_error();
        clear_faults();
        assert!(app.double.bans(DEMO).is_empty(), "{what}: nothing was banned");
        if what.starts_with("403") {
            assert!(message.contains("Missing Permissions"), "{what}: Discord's message is passed on: {message}");
        }
        for m in [&message, get.json()["error"]["message"].as_str().unwrap()] {
            assert!(!m.contains(&writer[12..]) && !m.contains(support::BOT_TOKEN), "a secret in {m}");
        }
        let tries = app.double.calls().iter().filter(|c| c.route.as_deref() == Some(BAN_ROUTE)).count();
        report.push(format!("{what}: PUT 502 in {:?}, GET 502 in {:?} ({tries} calls to Discord)", put.took, get.took));
        app.double.clear_recorded();
        if what.starts_with("403") {
            // A refusal is not asked again at once: another 403 would only
            // count towards Discord cutting the bot off.
            assert_eq!(tries, 1, "{what}: Discord was asked once");
            // The admin fixes the bot's role: the gateway says so, and the
            // remembered refusal is forgotten.
            app.double.set_role_permissions(DEMO, ids::BOT_ROLE_ID, ids::BOT_ROLE_PERMISSIONS);
            let started = std::time::Instant::now();
            while send(check()).await.status != 200 {
                assert!(started.elapsed() < Duration::from_secs(5), "the role update never cleared the refusal");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            assert!(tries >= 2, "{what}: Discord was asked");
        }
    }
    // All of Discord's guild REST down: every write is a clean 502, guild info
    // (from the gateway cache) still answers.
    app.double.fault(FaultRule::matching(|r| r.path.contains("/guilds/")).status(500));
    let role_url = app.url(&format!("/v1/guilds/{DEMO}/members/{}/roles/{}", ids::PAT_ID, ids::VERIFIED_ROLE_ID));
    let role = send(app.http.put(&role_url).bearer_auth(&writer)).await;
    role.discord_error();
    send(ban()).await.discord_error();
    send(app.http.delete(&ban_url).bearer_auth(&writer)).await.discord_error();
    let info = send(app.http.get(app.url(&format!("/v1/guilds/{DEMO}"))).bearer_auth(&writer)).await;
    assert_eq!(info.ok()["id"], DEMO.to_string(), "guild info needs no REST call");
    clear_faults();
    assert!(!app.double.member_roles(DEMO, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID));
    report.push(format!("guild REST down: role PUT 502 in {:?}", role.took));

    let events = send(app.http.get(app.url(&format!("/v1/guilds/{DEMO}/audit-log"))).bearer_auth(&auditor)).await;
    let page = events.ok();
    let api_writes: Vec<&Value> =
        page["events"].as_array().unwrap().iter().filter(|e| e["actor"] == "An API key").collect();
    assert!(api_writes.is_empty(), "a failed write has no audit entry: {api_writes:?}");

    // Discord is back: the same write succeeds.
    let put = send(ban()).await;
    assert_eq!(put.ok()["changed"], true, "{}", put.text);
    assert!(app.double.bans(DEMO).contains_key(&user));
    assert_eq!(send(check()).await.ok()["banned"], true);
    let unban = send(app.http.delete(&ban_url).bearer_auth(&writer)).await;
    assert_eq!(unban.ok()["changed"], true);
    assert_eq!(send(app.http.put(&role_url).bearer_auth(&writer)).await.ok()["changed"], true);
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).contains(&ids::VERIFIED_ROLE_ID));

    // A short storm is waited out: one 429 (honouring retry_after) or one 500, then success.
    for (what, rule, wait) in [
        ("one 429", FaultRule::on("PUT", BAN_ROUTE).rate_limited(0.4, false).once(), Duration::from_millis(400)),
        ("one 500", FaultRule::on("PUT", BAN_ROUTE).status(500).once(), Duration::ZERO),
    ] {
        app.double.clear_recorded();
        app.double.fault(rule);
        let put = send(ban()).await;
        assert_eq!(put.ok()["changed"], true, "{what}: {}", put.text);
        let puts = app.double.calls_to("PUT", BAN_ROUTE);
        assert_eq!(puts.len(), 2, "{what}: one retry");
        let gap = puts[1].at.duration_since(puts[0].at);
        assert!(gap >= wait, "{what}: retried after {gap:?}, before Discord's retry_after {wait:?}");
        report.push(format!("{what}: 200 after one retry {gap:?} later ({:?} in all)", put.took));
        send(app.http.delete(&ban_url).bearer_auth(&writer)).await.ok();
    }

    let (answers, slowest) = poller.finish().await;
    eprintln!("REST faults: {}; {answers} verifications meanwhile, 0 failures, slowest {slowest:?}", report.join("; "));
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_on_the_audit_channel_never_fails_a_change_and_posting_resumes_after() {
    let app = spawn_app_with(Options { config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    app.set_audit_channel().await;
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--rate-limit", "100000", "--ban-budget", "10000"]);
    let verifier = app.create_key(DEMO, "verifier", "guild.read", &["--rate-limit", "100000"]);
    let_the_listener_catch_up().await;
    app.double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("verifier"), WAIT)
        .await
        .expect("entries are posted before the storm");
    let poller = Poller::start(&app, &verifier);

    // Every post is refused with 429 for a while: changes go through regardless.
    app.double.fault(FaultRule::on("POST", POST_MESSAGE).rate_limited(0.5, false));
    let during = app.create_key(DEMO, "made during the storm", "guild.read", &[]);
    let banned = send(
        app.http
            .put(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::STRANGER_ID)))
            .bearer_auth(&writer)
            .json(&json!({})),
    )
    .await;
    assert_eq!(banned.ok()["changed"], true);
    let slash = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "slash during the storm")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    let reply = app.double.wait_for_response(&slash, WAIT).await.expect("the command is answered");
    assert!(reply.all_text().contains("shown only once"), "{}", reply.all_text());
    let refused = app
        .double
        .wait_for_call(|c| c.method == "POST" && c.fault.is_some() && c.path.contains("/messages"), WAIT)
        .await;
    assert!(refused.is_ok(), "the outbox tried to post during the storm");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refusals = app.double.calls_to("POST", POST_MESSAGE).iter().filter(|c| c.fault.is_some()).count();
    app.double.clear_faults();
    let_the_listener_catch_up().await;
    assert_eq!(app.get("/v1/verify", &during).await.status(), 200, "the key made during the storm works");

    // After the storm, new entries are posted again.
    app.create_key(DEMO, "made after the storm", "guild.read", &[]);
    let started = Instant::now();
    app.double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("made after the storm"), WAIT)
        .await
        .expect("posting resumes once Discord does");
    let resumed_in = started.elapsed();

    // A short storm (two 429s) delays an entry but does not lose it.
    app.double.fault(FaultRule::on("POST", POST_MESSAGE).rate_limited(0.3, false).times(2));
    app.create_key(DEMO, "made in a short storm", "guild.read", &[]);
    app.double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("made in a short storm"), WAIT)
        .await
        .expect("an entry refused twice with 429 is posted once Discord lets it");

    let (answers, slowest) = poller.finish().await;
    eprintln!(
        "audit-channel 429 storm: {refusals} posts refused; every change applied; posting resumed {resumed_in:?} \
         after the storm; {answers} verifications meanwhile, 0 failures, slowest {slowest:?}"
    );
    let keys = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    let keys: Vec<Value> = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(keys.len(), 6, "every key made during the storms exists");
    app.double.assert_no_violations();
}

/// `GET /v1/verify` with `token`: status, error reason, `Retry-After`.
async fn verify_answer(app: &App, token: &str) -> (u16, String, Option<String>) {
    let resp = app.get("/v1/verify", token).await;
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = support::json(resp).await;
    (status, body["error"]["reason"].as_str().unwrap_or_default().to_owned(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_read_key_changes_answers_503_index_stale_then_recovers() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "game", "bans.read", &[]);
    let_the_listener_catch_up().await;
    assert_eq!(verify_answer(&app, &token).await.0, 200);

    // Another process takes the key change log away (a commit the listener
    // notices but cannot read).
    let mut other = sqlx::SqliteConnection::connect(&app.db_url).await.expect("a raw connection");
    sqlx::query("alter table key_change rename to key_change_away").execute(&mut other).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(8);
    let stale = loop {
        let answer = verify_answer(&app, &token).await;
        if answer.0 != 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stale, (503, "index_stale".to_owned(), Some("1".to_owned())), "refused, with a retry hint");
    let metrics = support::text(app.http.get(app.url("/metrics")).send().await.unwrap()).await;
    assert!(metrics.contains(r#"key_verifications_total{outcome="index_stale"}"#), "{metrics}");
    // Said at error by the next failing check (within 250 ms).
    let deadline = Instant::now() + Duration::from_secs(2);
    while !app.logs().iter().any(|l| l.contains("ERROR") && l.contains("refusing every key")) {
        assert!(Instant::now() < deadline, "the stale index is logged at error");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    sqlx::query("alter table key_change_away rename to key_change").execute(&mut other).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while verify_answer(&app, &token).await.0 != 200 {
        assert!(Instant::now() < deadline, "keys are accepted again once the listener catches up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.logs().join("\n").contains("keys are accepted again"));
}
