//! Bans pushed into live Roblox games, end to end: the real binary against
//! the Discord double and the Open Cloud double (`tests/roblox-double`),
//! which holds every request to Roblox's OpenAPI files and prose limits.
//! The Roblox links are seeded with the store (as the linker would).

use crate::support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use roblox_double::{RobloxDouble, API_KEY};
use serde_json::{json, Value};
use support::{ids, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;
pub const UNIVERSE: u64 = 4_242_424_242;
/// The issue: pushed once within 2 s.
const WITHIN: Duration = Duration::from_secs(2);
const STRANGER_ROBLOX: u64 = 1_001;
const PAT_ROBLOX: u64 = 1_002;
const OSCAR_ROBLOX: u64 = 1_003;

fn secrets_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// The binary pointed at the Open Cloud double, with a secrets key.
pub async fn spawn_with_roblox(roblox: &RobloxDouble, extra_config: &str) -> (App, String) {
    let key = secrets_key();
    let opts = Options {
        config: extra_config.to_owned(),
        env: vec![
            ("GUILDKEY_ROBLOX_OPEN_CLOUD_BASE_URL".into(), roblox.base_url()),
            ("GUILDKEY_SECRETS_KEY".into(), key.clone()),
            ("GUILDKEY_HTTP_PUBLIC_URL".into(), "https://keys.example.com".into()),
        ],
        ..Options::default()
    };
    (spawn_app_with(opts).await, key)
}

/// The operator CLI with the secrets key (App::cli passes no environment).
pub fn cli(app: &App, roblox: &RobloxDouble, secrets_key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.args(args)
        .current_dir(app.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.db_url)
        .env("GUILDKEY_SECRETS_KEY", secrets_key)
        .env("GUILDKEY_ROBLOX_OPEN_CLOUD_BASE_URL", roblox.base_url())
        .env("GUILDKEY_HTTP_PUBLIC_URL", "https://keys.example.com")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run the CLI");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("the CLI ends");
    app.record_body_for_test(&format!("cli stderr: {}", String::from_utf8_lossy(&out.stderr)));
    out
}

async fn seed_links(app: &App) {
    let store = guildkey::store::Store::connect(&app.db_url).await.expect("open the store");
    let now = chrono::Utc::now();
    for (roblox, discord) in
        [(STRANGER_ROBLOX, ids::STRANGER_ID), (PAT_ROBLOX, ids::PAT_ID), (OSCAR_ROBLOX, ids::OSCAR_ID)]
    {
        store.put_roblox_links(DEMO, roblox, &[discord], now).await.expect("seed a link");
    }
    store.close().await;
}

pub async fn setup(mode: &str, extra_config: &str) -> (RobloxDouble, App, String) {
    let roblox = RobloxDouble::start().await;
    let (app, key) = spawn_with_roblox(&roblox, extra_config).await;
    let demo = DEMO.to_string();
    let universe = UNIVERSE.to_string();
    let out = cli(
        &app,
        &roblox,
        &key,
        &["roblox", "push", "set", "--guild", &demo, "--universe", &universe, "--key", "-", "--mode", mode],
        Some(API_KEY),
    );
    assert!(out.status.success(), "push set: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains(API_KEY), "the Open Cloud key is never shown: {said}");
    seed_links(&app).await;
    (roblox, app, key)
}

/// Waits until a key the CLI made (another process) is live in the
/// listener (within 1 s, SPEC §6).
pub async fn wait_live(app: &App, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = app.get("/v1/verify", token).await.status().as_u16();
        if status == 200 || Instant::now() > deadline {
            assert_eq!(status, 200, "the key goes live");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ban_in_discord(app: &App, user_id: u64, added: bool) {
    let user = json!({ "id": user_id.to_string(), "username": "member", "discriminator": "0",
        "global_name": null, "avatar": null });
    let event = if added { "GUILD_BAN_ADD" } else { "GUILD_BAN_REMOVE" };
    assert_eq!(app.double.dispatch(event, json!({ "guild_id": DEMO.to_string(), "user": user })), 1);
}

fn messages(roblox: &RobloxDouble) -> Vec<Value> {
    roblox
        .published()
        .iter()
        .map(|p| {
            assert_eq!((p.universe_id, p.topic.as_str()), (UNIVERSE, "guildkey-bans"));
            assert!(p.message.len() <= 1024);
            serde_json::from_str(&p.message).expect("the message is JSON")
        })
        .collect()
}

fn events(roblox: &RobloxDouble) -> Vec<Value> {
    messages(roblox).iter().flat_map(|m| m["events"].as_array().cloned().unwrap_or_default()).collect()
}

fn audit_count(app: &App, action: &str) -> i64 {
    support::db_scalar(&app.db_url, &format!("select count(*) from audit_event where action = '{action}'")).unwrap_or(0)
}

#[tokio::test]
async fn publish_a_discord_ban_and_an_api_ban_each_within_2_s_naming_their_origin() {
    let (roblox, app, _) = setup("publish", "").await;

    let started = Instant::now();
    ban_in_discord(&app, ids::STRANGER_ID, true);
    assert!(roblox.wait_until(WITHIN, |d| !d.published().is_empty()).await, "published within 2 s");
    let took = started.elapsed();
    let m = &messages(&roblox)[0];
    assert_eq!(m["v"], 1);
    assert_eq!(m["guild_id"], DEMO.to_string());
    assert_eq!(m["events"][0]["roblox_id"], STRANGER_ROBLOX);
    assert_eq!(m["events"][0]["action"], "ban");
    assert_eq!(m["events"][0]["origin"], "discord");
    assert!(m["events"][0].get("key_prefix").is_none());
    eprintln!("a Discord ban reached the Open Cloud double in {took:?}");

    let token = app.create_key(DEMO, "game", "bans.write", &[]);
    wait_live(&app, &token).await;
    let started = Instant::now();
    let put = app.http.put(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID))).bearer_auth(&token);
    let (status, body) = app.send(put.json(&json!({ "reason": "griefing" }))).await;
    assert_eq!(status, 200, "{body}");
    assert!(roblox.wait_until(WITHIN, |d| d.published().len() >= 2).await, "the API ban published within 2 s");
    eprintln!("an API ban reached the Open Cloud double in {:?}", started.elapsed());
    let e = events(&roblox);
    let api = e.iter().find(|e| e["roblox_id"] == PAT_ROBLOX).expect("Pat's ban pushed");
    assert_eq!(api["origin"], "api");
    assert_eq!(api["key_prefix"], token[..12]);
    assert!(!roblox.published().iter().any(|p| p.message.contains(&token[12..])), "never the key itself");

    // An unban is pushed too; a member with no Roblox id is not.
    ban_in_discord(&app, ids::STRANGER_ID, false);
    ban_in_discord(&app, ids::DANA_ID, true);
    assert!(roblox.wait_until(WITHIN, |d| d.published().len() >= 3).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = events(&roblox);
    assert_eq!(e.len(), 3, "each once: {e:#?}");
    assert_eq!(e[2]["action"], "unban");
    assert_eq!(audit_count(&app, "roblox.push"), 3);
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
    assert!(roblox.calls().iter().all(|c| c.api_key.is_some()));
    assert!(app.logs().iter().all(|l| !l.contains(API_KEY)), "the Open Cloud key is never logged");
}

#[tokio::test]
async fn bans_within_a_second_are_packed_into_one_message() {
    let (roblox, app, _) = setup("publish", "").await;
    for user in [ids::STRANGER_ID, ids::PAT_ID, ids::OSCAR_ID] {
        ban_in_discord(&app, user, true);
    }
    assert!(roblox.wait_until(WITHIN, |d| !d.published().is_empty()).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = messages(&roblox);
    assert_eq!(m.len(), 1, "one message: {m:#?}");
    let mut ids: Vec<u64> =
        m[0]["events"].as_array().unwrap().iter().map(|e| e["roblox_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [STRANGER_ROBLOX, PAT_ROBLOX, OSCAR_ROBLOX]);
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
}

#[tokio::test]
async fn restrict_bans_and_lifts_within_2_s_and_keeps_to_2_updates_a_minute() {
    let (roblox, app, _) = setup("restrict", "").await;
    let started = Instant::now();
    ban_in_discord(&app, ids::STRANGER_ID, true);
    let banned = |d: &RobloxDouble| d.restriction(UNIVERSE, STRANGER_ROBLOX).is_some_and(|r| r["active"] == true);
    assert!(roblox.wait_until(WITHIN, banned).await, "restricted within 2 s");
    eprintln!("a Discord ban became a Roblox restriction in {:?}", started.elapsed());
    let patch = roblox.calls().into_iter().find(|c| c.method == "PATCH").unwrap();
    assert_eq!(patch.query, [("updateMask".to_owned(), "gameJoinRestriction".to_owned())]);
    assert!(roblox.published().is_empty(), "restrict mode publishes nothing");

    ban_in_discord(&app, ids::STRANGER_ID, false);
    let lifted = |d: &RobloxDouble| d.restriction(UNIVERSE, STRANGER_ROBLOX).is_some_and(|r| r["active"] == false);
    assert!(roblox.wait_until(WITHIN, lifted).await, "an unban lifts it within 2 s");

    // A third change of the same user within the minute waits for its slot.
    ban_in_discord(&app, ids::STRANGER_ID, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let patches = roblox.calls().iter().filter(|c| c.method == "PATCH").count();
    assert_eq!(patches, 2, "the third update waits (Roblox allows 2 a minute per user)");
    assert!(roblox.calls().iter().all(|c| c.status != 429), "never refused for the per-user limit");
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());

    // An existing identical restriction is not re-applied.
    ban_in_discord(&app, ids::PAT_ID, true);
    assert!(roblox.wait_until(WITHIN, |d| d.restriction(UNIVERSE, PAT_ROBLOX).is_some()).await);
    ban_in_discord(&app, ids::PAT_ID, true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pat = format!("/user-restrictions/{PAT_ROBLOX}");
    let pat_patches = roblox.calls().iter().filter(|c| c.method == "PATCH" && c.path.ends_with(&pat)).count();
    assert_eq!(pat_patches, 1, "the second ban finds the restriction in place");
}

#[tokio::test]
async fn both_modes_publish_and_restrict_an_api_ban_within_2_s() {
    let (roblox, app, _) = setup("both", "").await;
    let token = app.create_key(DEMO, "game", "bans.write", &[]);
    wait_live(&app, &token).await;
    let started = Instant::now();
    let put = app.http.put(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::OSCAR_ID))).bearer_auth(&token);
    let (status, body) = app.send(put.json(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let both = |d: &RobloxDouble| {
        !d.published().is_empty() && d.restriction(UNIVERSE, OSCAR_ROBLOX).is_some_and(|r| r["active"] == true)
    };
    assert!(roblox.wait_until(WITHIN, both).await, "published and restricted within 2 s");
    eprintln!("an API ban was published and restricted in {:?}", started.elapsed());
    assert_eq!(events(&roblox)[0]["origin"], "api");
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_a_push_is_given_up_after_its_limit() {
    let (roblox, app, _) = setup("publish", "[roblox]\npush_give_up_seconds = 4\n").await;
    roblox.fail(1, 429, Some(1));
    ban_in_discord(&app, ids::STRANGER_ID, true);
    assert!(roblox.wait_until(Duration::from_secs(5), |d| !d.published().is_empty()).await);
    let calls = roblox.calls();
    let (refused, sent) = (&calls[0], calls.iter().find(|c| c.status == 200).unwrap());
    assert_eq!(refused.status, 429);
    let waited = (sent.at - refused.at).to_std().unwrap();
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 was honoured ({waited:?})");

    // Roblox down for longer than the give-up limit: one roblox.push_failed.
    roblox.fail_for(Duration::from_secs(30), 503, None);
    ban_in_discord(&app, ids::PAT_ID, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_count(&app, "roblox.push_failed") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(audit_count(&app, "roblox.push_failed"), 1, "given up once");
    let state = support::db_scalar(
        &app.db_url,
        &format!("select count(*) from roblox_push_event where state = 'failed' and roblox_id = {PAT_ROBLOX}"),
    );
    assert_eq!(state, Some(1));
}

#[tokio::test]
async fn the_slash_command_sets_shows_and_removes_a_push_without_showing_the_key() {
    let roblox = RobloxDouble::start().await;
    let (app, _) = spawn_with_roblox(&roblox, "").await;
    seed_links(&app).await;
    let set = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .group("roblox", "push", "set")
        .integer("universe", UNIVERSE as i64)
        .string("key", API_KEY)
        .integer("mode", 1) // restrict: poise sends choices by index
        .send()
        .await
        .expect("send /apikey roblox-push set");
    let reply = app.double.wait_for_response(&set, support::bot::WAIT).await.expect("a reply");
    let text = reply.all_text();
    assert!(text.contains(&format!("universe `{UNIVERSE}` as **restrict**")), "{text}");
    assert!(!text.contains(API_KEY), "the key is never shown back: {text}");

    ban_in_discord(&app, ids::PAT_ID, true);
    let banned = |d: &RobloxDouble| d.restriction(UNIVERSE, PAT_ROBLOX).is_some_and(|r| r["active"] == true);
    assert!(roblox.wait_until(WITHIN, banned).await);

    let show = app.double.slash(DEMO, ids::ALICE_ID).group("roblox", "push", "show").send().await.unwrap();
    let text = app.double.wait_for_response(&show, support::bot::WAIT).await.unwrap().all_text();
    assert!(
        text.contains(&format!("`{UNIVERSE}`")) && text.contains("restrict ban") && text.contains("done"),
        "{text}"
    );
    assert!(!text.contains(API_KEY));

    let remove = app.double.slash(DEMO, ids::ALICE_ID).group("roblox", "push", "remove").send().await.unwrap();
    let text = app.double.wait_for_response(&remove, support::bot::WAIT).await.unwrap().all_text();
    assert!(text.contains("no longer pushed"), "{text}");
    let stored = support::db_scalar(&app.db_url, "select count(*) from guild_credential where kind = 'open_cloud'");
    assert_eq!(stored, Some(0), "the key is forgotten");
    assert!(app.logs().iter().all(|l| !l.contains(API_KEY)), "the Open Cloud key is never logged");
    app.double.assert_no_violations();
}
