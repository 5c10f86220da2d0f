//! `roblox:<userId>` member ids, black-box: the real binary, its bot on the
//! Discord double, and the account-linker double (`support::linkers`,
//! speaking Bloxlink's and RoVer's shapes). The guild's linker is set with
//! the operator CLI (its key read from stdin) or `/roblox linker`; its key
//! is sealed under `GUILDKEY_SECRETS_KEY` and must appear in no log line,
//! no database byte and no answer.

use crate::support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use support::linkers::{LinkerDouble, Mode, BLOXLINK_KEY, ROVER_KEY};
use support::reply::{delete, get, put};
use support::{ids, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;

/// A fresh 32-byte key in base64, as `GUILDKEY_SECRETS_KEY` takes it.
fn secrets_key() -> String {
    let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ rand_byte());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rand_byte() -> u8 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 251) as u8
}

struct Setup {
    app: App,
    linker: LinkerDouble,
    key: String,
}

/// The binary with both linkers pointed at the double and a secrets key;
/// `extra` config text.
async fn start(extra: &str) -> Setup {
    let linker = LinkerDouble::start().await;
    let key = secrets_key();
    let mut env = linker.env();
    env.push(("GUILDKEY_SECRETS_KEY".to_owned(), key.clone()));
    // Everything at trace (the suite's default quiets hyper, reqwest and
    // sqlx): no log line may hold a linker key or a webhook secret.
    env.push(("RUST_LOG".to_owned(), "trace".to_owned()));
    let app = spawn_app_with(Options { env, config: extra.to_owned(), ..Options::default() }).await;
    Setup { app, linker, key }
}

/// Runs the CLI on the app's database with these environment variables
/// and `stdin`.
fn cli(app: &App, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.args(args)
        .current_dir(app.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.db_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the CLI");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    app.record_body_for_test(&format!("cli stderr: {}", String::from_utf8_lossy(&out.stderr)));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `guildkey roblox linker set` with the key on stdin.
fn set_linker(s: &Setup, provider: &str, key: &str) {
    let out = cli(
        &s.app,
        &[("GUILDKEY_SECRETS_KEY", &s.key), ("RUST_LOG", "trace")],
        &["roblox", "linker", "set", "--guild", &DEMO.to_string(), "--provider", provider, "--key", "-"],
        key,
    );
    assert!(out.status.success(), "linker set: {}", stderr(&out));
    assert!(!stderr(&out).contains(key), "the CLI logged the key");
}

/// A key made with the CLI, once the listener knows it.
async fn key(app: &App, scopes: &str) -> String {
    let token = app.create_key(DEMO, "game", scopes, &["--rate-limit", "1000"]);
    let started = Instant::now();
    while get(app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token
}

fn ban_path(member: &str) -> String {
    format!("/v1/guilds/{DEMO}/bans/{member}")
}

/// Every byte of the SQLite database (and its WAL) as text.
fn database_bytes(app: &App) -> String {
    let mut bytes = std::fs::read(app.db_path()).unwrap_or_default();
    let wal = app.db_path().with_extension("db-wal");
    let wal_name = format!("{}-wal", app.db_path().display());
    for path in [wal, std::path::PathBuf::from(wal_name)] {
        bytes.extend(std::fs::read(path).unwrap_or_default());
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// No log line, database byte or CLI output holds a linker key.
#[track_caller]
fn assert_no_linker_key_anywhere(app: &App) {
    for secret in [BLOXLINK_KEY, ROVER_KEY] {
        assert!(!app.logs().iter().any(|l| l.contains(secret)), "a log line holds a linker key");
        assert!(!database_bytes(app).contains(secret), "the database file holds a linker key in clear");
    }
}

async fn check(app: &App, token: &str, member: &str) -> support::reply::Reply {
    get(app, &ban_path(member), token).await
}

#[tokio::test]
async fn a_ban_check_by_roblox_id_goes_through_bloxlink_once_and_then_answers_from_memory() {
    let s = start("").await;
    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    // Bans made before the key (and the ban list it has synced) exist.
    s.app.double.add_ban(DEMO, ids::PAT_ID, Some("exploiting"));
    let token = key(&s.app, "bans.read").await;
    s.linker.link(DEMO, 1001, &[ids::PAT_ID]);
    s.linker.link(DEMO, 1002, &[ids::MORGAN_ID]);

    let banned = check(&s.app, &token, "roblox:1001").await.ok();
    assert_eq!(banned, json!({ "banned": true, "reason": "exploiting" }));
    let clean = check(&s.app, &token, "roblox:1002").await.ok();
    assert_eq!(clean["banned"], false);
    assert_eq!((s.linker.bloxlink_calls(), s.linker.rover_calls(), s.linker.refused()), (2, 0, 0));

    // The same ids again within 10 minutes: no linker call.
    for _ in 0..3 {
        assert_eq!(check(&s.app, &token, "roblox:1001").await.ok()["banned"], true);
        assert_eq!(check(&s.app, &token, "roblox:1002").await.ok()["banned"], false);
    }
    assert_eq!(s.linker.calls(), 2, "the 10-minute memory makes no linker call");
    // A Discord id still works as before.
    assert_eq!(check(&s.app, &token, &ids::PAT_ID.to_string()).await.ok()["banned"], true);
    assert_no_linker_key_anywhere(&s.app);
}

#[tokio::test]
async fn a_ban_check_by_roblox_id_goes_through_rover_with_a_bearer_key() {
    let s = start("").await;
    set_linker(&s, "rover", ROVER_KEY);
    s.app.double.add_ban(DEMO, ids::OSCAR_ID, None);
    let token = key(&s.app, "bans.read").await;
    s.linker.link(DEMO, 2001, &[ids::OSCAR_ID]);
    s.linker.link(DEMO, 2002, &[ids::DANA_ID]);

    assert_eq!(check(&s.app, &token, "roblox:2001").await.ok()["banned"], true);
    assert_eq!(check(&s.app, &token, "roblox:2002").await.ok()["banned"], false);
    assert_eq!(check(&s.app, &token, "roblox:2001").await.ok()["banned"], true);
    assert_eq!((s.linker.rover_calls(), s.linker.bloxlink_calls(), s.linker.refused()), (2, 0, 0));
    assert_no_linker_key_anywhere(&s.app);
}

#[tokio::test]
async fn an_unlinked_id_is_not_linked_a_failing_linker_is_linker_error_and_a_quota_is_respected() {
    let s = start("").await;
    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    let token = key(&s.app, "bans.read").await;

    // No link: 404 not_linked, remembered (no second call).
    check(&s.app, &token, "roblox:3001").await.err(404, "not_linked");
    check(&s.app, &token, "roblox:3001").await.err(404, "not_linked");
    assert_eq!(s.linker.calls(), 1, "a 'not linked' answer is remembered");

    // The linker fails: 502 linker_error, saying nothing of the key.
    s.linker.set_mode(Mode::Broken);
    let failed = check(&s.app, &token, "roblox:3002").await;
    failed.err(502, "linker_error");
    assert!(!failed.text.contains(BLOXLINK_KEY));
    assert_eq!(s.linker.calls(), 2);

    // Its quota is spent: 503 linker_limited with Retry-After, and no call
    // at all while it runs, for any id.
    s.linker.set_mode(Mode::Quota(120));
    let limited = check(&s.app, &token, "roblox:3003").await;
    limited.err(503, "linker_limited");
    let wait = limited.header_u64("retry-after");
    assert!((119..=120).contains(&wait), "Retry-After {wait}");
    assert_eq!(s.linker.calls(), 3);
    for id in ["roblox:3004", "roblox:3005", "roblox:3003"] {
        let again = check(&s.app, &token, id).await;
        again.err(503, "linker_limited");
        assert!(again.header_u64("retry-after") <= wait);
    }
    assert_eq!(s.linker.calls(), 3, "no linker call during a Retry-After");
    // An id resolved before still answers from the store meanwhile.
    assert_no_linker_key_anywhere(&s.app);
}

#[tokio::test]
async fn a_slow_linker_is_cut_short_as_linker_error() {
    let s = start("").await;
    set_linker(&s, "rover", ROVER_KEY);
    let token = key(&s.app, "bans.read").await;
    s.linker.link(DEMO, 3101, &[ids::PAT_ID]);
    s.linker.set_mode(Mode::Slow(Duration::from_secs(6)));
    let started = Instant::now();
    check(&s.app, &token, "roblox:3101").await.err(502, "linker_error");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_roblox_account_linked_to_several_discord_accounts_is_banned_if_any_is_and_refuses_writes() {
    let s = start("").await;
    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    s.app.double.add_ban(DEMO, ids::MORGAN_ID, Some("alt"));
    let token = key(&s.app, "bans.read,bans.write,roles.write").await;
    s.linker.link(DEMO, 4001, &[ids::PAT_ID, ids::MORGAN_ID]);

    let status = check(&s.app, &token, "roblox:4001").await.ok();
    assert_eq!(status, json!({ "banned": true, "reason": "alt" }));

    let bans_before = s.app.double.bans(DEMO).len();
    let refused = put(&s.app, &ban_path("roblox:4001"), &token).await;
    refused.err(409, "ambiguous_link");
    assert!(refused.message().contains(&ids::PAT_ID.to_string()), "{}", refused.text);
    delete(&s.app, &ban_path("roblox:4001"), &token).await.err(409, "ambiguous_link");
    let role = format!("/v1/guilds/{DEMO}/members/roblox:4001/roles/{}", ids::VERIFIED_ROLE_ID);
    put(&s.app, &role, &token).await.err(409, "ambiguous_link");
    assert_eq!(s.app.double.bans(DEMO).len(), bans_before, "nothing reached Discord");
    assert_eq!(s.linker.calls(), 1);
}

#[tokio::test]
async fn a_ban_by_roblox_id_bans_the_discord_user_and_the_audit_entry_names_both() {
    let s = start("").await;
    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    let token = key(&s.app, "bans.read,bans.write,roles.write,audit.read").await;
    s.linker.link(DEMO, 5001, &[ids::STRANGER_ID]);
    s.linker.link(DEMO, 5002, &[ids::PAT_ID]);

    let data = put(&s.app, &ban_path("roblox:5001"), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"]), (&json!(true), &json!(true)));
    assert!(s.app.double.bans(DEMO).contains_key(&ids::STRANGER_ID), "Discord has the ban");
    let log = get(&s.app, &format!("/v1/guilds/{DEMO}/audit-log?limit=10"), &token).await.ok();
    let ban = log["events"].as_array().unwrap().iter().find(|e| e["action"] == "ban.added").expect("ban.added").clone();
    assert_eq!(ban["details"]["user_id"], ids::STRANGER_ID.to_string(), "{ban}");
    assert_eq!(ban["details"]["roblox_id"], 5001, "{ban}");

    // The banned user has left; the linker forgets them, the stored pair does not.
    s.linker.unlink(DEMO, 5001);
    assert_eq!(check(&s.app, &token, "roblox:5001").await.ok()["banned"], true);
    let unbanned = delete(&s.app, &ban_path("roblox:5001"), &token).await.ok();
    assert_eq!(unbanned["banned"], false);
    assert!(!s.app.double.bans(DEMO).contains_key(&ids::STRANGER_ID));

    // A role by roblox: id.
    let role = format!("/v1/guilds/{DEMO}/members/roblox:5002/roles/{}", ids::VERIFIED_ROLE_ID);
    let added = put(&s.app, &role, &token).await.ok();
    assert_eq!((&added["user_id"], &added["has_role"]), (&json!(ids::PAT_ID.to_string()), &json!(true)));
    // A bad roblox: id is a 400 before any call.
    let before = s.linker.calls();
    check(&s.app, &token, "roblox:0").await.err(400, "bad_request");
    check(&s.app, &token, "roblox:9007199254740993").await.err(400, "bad_request");
    assert_eq!(s.linker.calls(), before);
    s.app.double.assert_no_violations();
}

#[tokio::test]
async fn a_guild_without_a_linker_answers_linker_error_and_a_key_without_the_scope_makes_no_call() {
    let s = start("").await;
    let token = key(&s.app, "bans.read").await;
    let none = check(&s.app, &token, "roblox:6001").await;
    none.err(502, "linker_error");
    assert!(none.message().contains("/roblox linker"), "{}", none.text);

    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    s.linker.link(DEMO, 6001, &[ids::PAT_ID]);
    put(&s.app, &ban_path("roblox:6001"), &token).await.err(403, "insufficient_scope");
    assert_eq!(s.linker.calls(), 0, "a key that may not write makes no linker call");
}

#[tokio::test]
async fn the_linker_cli_refuses_bad_input_and_never_shows_the_key() {
    let s = start("").await;
    let guild = DEMO.to_string();
    let with_key = [("GUILDKEY_SECRETS_KEY", s.key.as_str())];
    let set = |env: &[(&str, &str)], provider: &str, stdin: &str| {
        cli(&s.app, env, &["roblox", "linker", "set", "--guild", &guild, "--provider", provider, "--key", "-"], stdin)
    };

    let bad = set(&with_key, "rowifi", BLOXLINK_KEY);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--provider") && stderr(&bad).contains("bloxlink or rover"), "{}", stderr(&bad));
    let empty = set(&with_key, "bloxlink", "  \n");
    assert_eq!(empty.status.code(), Some(2), "{}", stderr(&empty));
    assert!(stderr(&empty).contains("--key"), "{}", stderr(&empty));
    let unsealed = set(&[], "bloxlink", BLOXLINK_KEY);
    assert_eq!(unsealed.status.code(), Some(1), "{}", stderr(&unsealed));
    assert!(stderr(&unsealed).contains("GUILDKEY_SECRETS_KEY is not set"), "{}", stderr(&unsealed));

    // The key from the environment rather than the command line.
    let from_env = cli(
        &s.app,
        &[("GUILDKEY_SECRETS_KEY", &s.key), ("GUILDKEY_LINKER_KEY", ROVER_KEY)],
        &["roblox", "linker", "set", "--guild", &guild, "--provider", "RoVer"],
        "",
    );
    assert!(from_env.status.success(), "{}", stderr(&from_env));
    let show = cli(&s.app, &[], &["roblox", "linker", "show", "--guild", &guild], "");
    assert_eq!(String::from_utf8_lossy(&show.stdout).trim(), "rover");
    for out in [&bad, &empty, &unsealed, &from_env, &show] {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
        assert!(!all.contains(ROVER_KEY) && !all.contains(BLOXLINK_KEY), "the CLI printed a key: {all}");
    }
    let removed = cli(&s.app, &[], &["roblox", "linker", "remove", "--guild", &guild], "");
    assert!(removed.status.success(), "{}", stderr(&removed));
    let show = cli(&s.app, &[], &["roblox", "linker", "show", "--guild", &guild], "");
    assert!(show.stdout.is_empty() && stderr(&show).contains("no account linker"), "{}", stderr(&show));
    assert_no_linker_key_anywhere(&s.app);
}

#[tokio::test]
async fn an_admin_sets_the_linker_with_a_slash_command_that_never_shows_the_key() {
    let s = start("").await;
    let token = key(&s.app, "bans.read,audit.read").await;
    let command = s
        .app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("roblox", "linker")
        .integer("provider", 0)
        .string("key", BLOXLINK_KEY);
    let reply = support::bot::answer(&s.app, command).await;
    assert!(reply.ephemeral(), "the reply is ephemeral");
    assert!(reply.text().contains("Bloxlink") && !reply.text().contains(BLOXLINK_KEY), "{}", reply.text());

    let shown =
        support::bot::answer(&s.app, s.app.double.slash(DEMO, ids::ALICE_ID).subcommand("roblox", "linker")).await;
    assert!(shown.text().contains("Bloxlink") && !shown.text().contains(BLOXLINK_KEY), "{}", shown.text());

    s.linker.link(DEMO, 7001, &[ids::PAT_ID]);
    assert_eq!(check(&s.app, &token, "roblox:7001").await.ok()["banned"], false);
    assert_eq!(s.linker.bloxlink_calls(), 1);

    let log = get(&s.app, &format!("/v1/guilds/{DEMO}/audit-log?limit=10"), &token).await.ok();
    let set: Vec<&Value> =
        log["events"].as_array().unwrap().iter().filter(|e| e["action"] == "roblox.linker_set").collect();
    assert_eq!(set.len(), 1, "{log}");
    assert_eq!(set[0]["details"], json!({ "provider": "bloxlink" }));
    assert_eq!(set[0]["actor"], format!("<@{}>", ids::ALICE_ID), "{}", set[0]);
    assert!(!log.to_string().contains(BLOXLINK_KEY));
    for body in s.app.double.calls() {
        assert!(!format!("{:?}", body.body).contains(BLOXLINK_KEY), "a Discord call holds the key");
    }
    assert_no_linker_key_anywhere(&s.app);
}

/// Receives webhook deliveries on loopback: (headers, body) of each.
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>) {
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits)
}

#[tokio::test]
async fn webhook_secrets_are_sealed_and_still_sign_and_reseal_follows_a_key_rotation() {
    let s = start("[webhooks]\nallow_http = true\nallow_private_addresses = true\n").await;
    let guild = DEMO.to_string();
    set_linker(&s, "bloxlink", BLOXLINK_KEY);
    let (url, hits) = receiver().await;
    let set = cli(
        &s.app,
        &[("GUILDKEY_SECRETS_KEY", &s.key)],
        &["keys", "webhook", "set", "--guild", &guild, "--url", &url, "--events", "key.created"],
        "",
    );
    assert!(set.status.success(), "{}", stderr(&set));
    let secret = String::from_utf8_lossy(&set.stdout).trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(!database_bytes(&s.app).contains(&secret), "the database file holds the webhook secret in clear");

    // A delivery is still signed with the secret the operator was shown.
    s.app.create_key(DEMO, "hooked", "bans.read", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (headers, body) = loop {
        if let Some(hit) = hits.lock().unwrap().first().cloned() {
            break hit;
        }
        assert!(Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let raw = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&raw).unwrap();
    mac.update(format!("{}.{}.{body}", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header("webhook-signature"), want);

    // A wrong key: a clear error naming the variable, nothing changed.
    let wrong = secrets_key();
    let refused = cli(&s.app, &[("GUILDKEY_SECRETS_KEY", &wrong)], &["secrets", "reseal"], "");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("GUILDKEY_SECRETS_KEY"), "{}", stderr(&refused));
    let garbage = cli(&s.app, &[("GUILDKEY_SECRETS_KEY", "not-a-key")], &["secrets", "reseal"], "");
    assert_eq!(garbage.status.code(), Some(2), "{}", stderr(&garbage));
    assert!(stderr(&garbage).contains("GUILDKEY_SECRETS_KEY") && !stderr(&garbage).contains("not-a-key"));

    // Rotation: the new key, the old one as previous; reseal counts both.
    let resealed = cli(
        &s.app,
        &[("GUILDKEY_SECRETS_KEY", &wrong), ("GUILDKEY_SECRETS_KEY_PREVIOUS", &s.key)],
        &["secrets", "reseal"],
        "",
    );
    assert!(resealed.status.success(), "{}", stderr(&resealed));
    assert_eq!(String::from_utf8_lossy(&resealed.stdout).trim(), "2", "{}", stderr(&resealed));
    // Everything now opens with the new key alone.
    let again = cli(&s.app, &[("GUILDKEY_SECRETS_KEY", &wrong)], &["secrets", "reseal"], "");
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!database_bytes(&s.app).contains(&secret));
    assert_no_linker_key_anywhere(&s.app);
    assert!(!s.app.logs().iter().any(|l| l.contains(&secret)), "a log line holds the webhook secret");
}

#[tokio::test]
async fn a_webhook_secret_stored_in_clear_without_a_key_is_sealed_when_guildkey_starts_with_one() {
    // No secrets key at first: webhooks work as before, their secret clear.
    let webhooks = "[webhooks]\nallow_http = true\nallow_private_addresses = true\n";
    let mut app = spawn_app_with(Options { config: webhooks.to_owned(), ..Options::default() }).await;
    let (url, _hits) = receiver().await;
    let set =
        cli(&app, &[], &["keys", "webhook", "set", "--guild", &DEMO.to_string(), "--url", &url, "--events", "all"], "");
    assert!(set.status.success(), "{}", stderr(&set));
    let count = |app: &App, like: &str| {
        support::db_scalar(&app.db_url, &format!("select count(*) from webhook where secret like '{like}'"))
    };
    assert_eq!(count(&app, "whsec_%"), Some(1));
    // With a key, the binary seals clear secrets as it starts (a migration cannot encrypt).
    let key = secrets_key();
    std::fs::write(app.dir.path().join("config.toml"), format!("{webhooks}[secrets]\nkey = \"{key}\"\n")).unwrap();
    app.restart().await;
    assert_eq!((count(&app, "whsec_%"), count(&app, "v1:%")), (Some(0), Some(1)), "sealed at start");
    let resealed = cli(&app, &[("GUILDKEY_SECRETS_KEY", &key)], &["secrets", "reseal"], "");
    assert_eq!(String::from_utf8_lossy(&resealed.stdout).trim(), "1", "{}", stderr(&resealed));
}
