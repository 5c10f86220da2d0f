//! Keys delivered into a Roblox experience's Secrets store, end to end: the
//! Open Cloud double unseals what guildkey sealed to its key, and that
//! plaintext must verify; the secret never reaches stdout or Discord (the
//! suite's secret scan checks logs, Discord bodies, the database and
//! CLI stderr when each App drops).

use crate::roblox_push::{cli, setup, wait_live, UNIVERSE};
use crate::support;

use support::{bot, ids, token_regex};

const DEMO: u64 = ids::DEMO_GUILD_ID;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// Multi-threaded: the CLI is waited for synchronously while the double answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_delivered_by_the_cli_is_what_verifies_and_rotation_updates_it() {
    let (roblox, app, key) = setup("none", "").await;
    let demo = DEMO.to_string();
    let universe = UNIVERSE.to_string();
    let args = ["keys", "create", "--guild", &demo, "--name", "game", "--scopes", "bans.read"];
    let out = cli(&app, &roblox, &key, &[&args[..], &["--roblox-universe", &universe]].concat(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!token_regex().is_match(&stdout(&out)), "stdout never holds the secret: {}", stdout(&out));
    assert!(stdout(&out).starts_with("key_"), "the key's id and prefix: {}", stdout(&out));
    assert!(stderr(&out).contains(&format!("delivered to universe {UNIVERSE} as secret guildkey")), "{}", stderr(&out));

    let delivered = roblox.secret(UNIVERSE, "guildkey").expect("the secret is in the universe's store");
    assert_eq!(delivered.domain.as_deref(), Some("keys.example.com"), "the domain is http.public_url's host");
    assert!(token_regex().is_match(&delivered.plaintext), "a whole key: {}…", &delivered.plaintext[..12]);
    wait_live(&app, &delivered.plaintext).await;

    // Rotation writes the new secret to the same place; the old one stops.
    let id = stdout(&out).split_whitespace().next().unwrap().to_owned();
    let out = cli(&app, &roblox, &key, &["keys", "rotate", &id], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!token_regex().is_match(&stdout(&out)), "stdout never holds the secret");
    let rotated = roblox.secret(UNIVERSE, "guildkey").unwrap();
    assert_ne!(rotated.plaintext, delivered.plaintext);
    assert!(rotated.updated >= delivered.updated);
    wait_live(&app, &rotated.plaintext).await;
    let old = app.get("/v1/verify", &delivered.plaintext).await.status().as_u16();
    assert_eq!(old, 401, "the old secret stopped");
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
    assert!(roblox.calls().iter().any(|c| c.method == "PATCH" && c.path.ends_with("/secrets/guildkey")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_leaves_no_key_and_says_why() {
    let (roblox, app, key) = setup("none", "").await;
    let demo = DEMO.to_string();
    let universe = UNIVERSE.to_string();
    roblox.fail_method("POST", 1, 500);
    let args = ["keys", "create", "--guild", &demo, "--name", "broken", "--scopes", "bans.read"];
    let out = cli(
        &app,
        &roblox,
        &key,
        &[&args[..], &["--roblox-universe", &universe, "--roblox-secret", "gk"]].concat(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("could not deliver the key into Roblox universe"), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 500"), "the double's refusal, not a timeout: {}", stderr(&out));
    assert!(!token_regex().is_match(&(stdout(&out) + &stderr(&out))));
    let keys = support::db_scalar(&app.db_url, "select count(*) from api_key where name = 'broken'");
    assert_eq!(keys, Some(0), "the key is not left half-made");
    let bad = cli(
        &app,
        &roblox,
        &key,
        &[&args[..], &["--roblox-universe", &universe, "--roblox-secret", "1bad"]].concat(),
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--roblox-secret"), "{}", stderr(&bad));
}

#[tokio::test]
async fn the_slash_command_delivers_and_rotates_without_showing_the_secret() {
    let (roblox, app, _) = setup("none", "").await;
    let sent = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "roblox game")
        .string("scopes", "bans.read")
        .integer("roblox_universe", UNIVERSE as i64)
        .string("roblox_secret", "game_key")
        .send()
        .await
        .expect("send /apikey create");
    let reply = app.double.wait_for_response(&sent, bot::WAIT).await.expect("a reply");
    let text = reply.all_text();
    assert!(text.contains(&format!("Delivered to Roblox universe `{UNIVERSE}` as secret `game_key`")), "{text}");
    assert!(!token_regex().is_match(&text), "Discord never sees the secret: {text}");
    let delivered = roblox.secret(UNIVERSE, "game_key").expect("delivered");
    wait_live(&app, &delivered.plaintext).await;

    let (_, prompt) = bot::run(&app, ids::ALICE_ID, "rotate", "roblox game").await;
    let done = bot::press(&app, ids::ALICE_ID, &prompt, ":confirm").await;
    let text = done.all_text();
    assert!(text.contains("Delivered to Roblox universe"), "{text}");
    assert!(!token_regex().is_match(&text), "{text}");
    let rotated = roblox.secret(UNIVERSE, "game_key").unwrap();
    assert_ne!(rotated.plaintext, delivered.plaintext);
    wait_live(&app, &rotated.plaintext).await;
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
    app.double.assert_no_violations();
}
