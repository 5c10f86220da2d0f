//! Backups that hold: after a clean stop or a lone CLI command the database
//! file alone holds every change (nothing acknowledged lives only in the
//! WAL), and `guildkey backup` taken while `run` serves restores every
//! change acknowledged before it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

use crate::crash::{audit_rows, list_keys};
use crate::support::{ids, spawn_against, spawn_app_with, App, Options};

const DEMO: u64 = ids::DEMO_GUILD_ID;

/// Copies the database file alone (none of its `-wal` or `-shm`), as an
/// operator backing up a stopped instance would, and returns its URL.
fn copy_of_the_file_alone(app: &App, name: &str) -> String {
    let copy = app.dir.path().join(name);
    std::fs::create_dir_all(&copy).expect("make the copy's directory");
    let target = copy.join("gk.db");
    std::fs::copy(app.db_path(), &target).expect("copy the database file");
    format!("sqlite://{}", target.display())
}

/// Every key's (id, revoked) in a copied database.
async fn key_states(db_url: &str) -> BTreeMap<String, bool> {
    let mut conn = sqlx::SqliteConnection::connect(db_url).await.expect("open the copy");
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("select api_key_id, revoked_at from api_key").fetch_all(&mut conn).await.expect("read keys");
    conn.close().await.ok();
    rows.into_iter().map(|(id, revoked)| (id, revoked.is_some())).collect()
}

/// After a clean stop (SIGTERM), and after a lone CLI command, the database
/// file alone holds every acknowledged change: nothing lives only in the WAL.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_clean_stop_or_a_lone_cli_command_the_database_file_alone_holds_every_change() {
    let mut app = spawn_app_with(Options::default()).await;
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--ban-budget", "100"]);
    let doomed = app.create_key(DEMO, "doomed", "guild.read", &[]);
    let revoked = app.cli(&["keys", "revoke", &doomed[..12], "--guild", &DEMO.to_string()]);
    assert!(revoked.status.success(), "revoke: {}", String::from_utf8_lossy(&revoked.stderr));
    let keys_before = list_keys(&app);
    tokio::time::sleep(Duration::from_millis(1200)).await; // the CLI's keys are live within 1 s

    let url = app.url(&format!("/v1/guilds/{DEMO}/bans/1500000000000000777"));
    let resp = app.http.put(url).bearer_auth(&writer).json(&serde_json::json!({ "reason": "backup" })).send().await;
    let body: Value = resp.expect("ban").json().await.expect("JSON");
    let ban_event =
        body["data"]["audit_event_id"].as_i64().unwrap_or_else(|| panic!("the ban is acknowledged: {body}"));

    assert!(app.stop().success(), "a clean stop");
    let copy = copy_of_the_file_alone(&app, "after-stop");
    let states = key_states(&copy).await;
    assert_eq!(states.len(), 2, "both keys are in the copied file: {states:?}");
    for (id, key) in &keys_before {
        let is_revoked = key["status"] == "revoked";
        assert_eq!(states.get(id), Some(&is_revoked), "key {id} as acknowledged ({key})");
    }
    let rows = audit_rows(&copy).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["key.created", "key.created", "key.revoked", "ban.added"], "the copied audit log");
    assert_eq!(rows.last().map(|r| r.id), Some(ban_event), "the API write's own entry");

    // With nothing else running, one CLI command and a copy of the file.
    let lone = app.create_key(DEMO, "lone", "guild.read", &[]);
    let states = key_states(&copy_of_the_file_alone(&app, "after-cli")).await;
    let lone_id = list_keys(&app).into_values().find(|k| k["prefix"] == lone[..12]).expect("listed")["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(states.get(&lone_id), Some(&false), "the lone CLI command's key is in the copied file: {states:?}");
}

/// Bans a user with `token` through the API; returns the write's audit event id.
async fn ban(app: &App, token: &str, user: u64) -> i64 {
    let url = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    let resp = app.http.put(url).bearer_auth(token).json(&serde_json::json!({ "reason": "backup" })).send().await;
    let body: Value = resp.expect("ban").json().await.expect("JSON");
    body["data"]["audit_event_id"].as_i64().unwrap_or_else(|| panic!("the ban is acknowledged: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_running_restores_every_change_acknowledged_before_it() {
    let app = spawn_app_with(Options::default()).await;
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--ban-budget", "100"]);
    let doomed = app.create_key(DEMO, "doomed", "guild.read", &[]);
    let revoked = app.cli(&["keys", "revoke", &doomed[..12], "--guild", &DEMO.to_string()]);
    assert!(revoked.status.success(), "revoke: {}", String::from_utf8_lossy(&revoked.stderr));
    tokio::time::sleep(Duration::from_millis(1200)).await; // the CLI's keys are live within 1 s
    let ban_event = ban(&app, &writer, 1_500_000_000_000_000_778).await;
    let keys_before = list_keys(&app);

    let backup = app.dir.path().join("backups").join("guildkey.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let path = backup.to_str().unwrap();
    let out = app.cli(&["backup", path]);
    assert!(out.status.success(), "backup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backed up the database to"), "says what it did");
    assert_eq!(crate::support::mode_of(&backup) & 0o777, 0o600, "the copy is private");
    // Never over an existing file.
    let again = app.cli(&["backup", path]);
    assert_eq!(again.status.code(), Some(1), "a second backup to the same file is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"), "says why");

    // Changes after the backup are not in it.
    let later = app.create_key(DEMO, "later", "guild.read", &[]);
    ban(&app, &writer, 1_500_000_000_000_000_779).await;

    let url = format!("sqlite://{path}");
    let states = key_states(&url).await;
    let expected: BTreeMap<String, bool> =
        keys_before.iter().map(|(id, k)| (id.clone(), k["status"] == "revoked")).collect();
    assert_eq!(states, expected, "the backup holds the keys as they were acknowledged");
    let rows = audit_rows(&url).await;
    assert_eq!(rows.last().map(|r| (r.id, r.action.as_str())), Some((ban_event, "ban.added")), "the last entry");

    // Restored: a listener on the copy verifies the writer and not the later key.
    let restored = spawn_against(app.double.clone(), Options { db_url: Some(url), ..Options::only("http") }).await;
    let verify = |token: &str| restored.http.get(restored.url("/v1/verify")).bearer_auth(token.to_owned()).send();
    assert_eq!(verify(&writer).await.expect("verify").status(), 200);
    assert_eq!(verify(&later).await.expect("verify").status(), 401, "a key made after the backup");
    assert_eq!(verify(&doomed).await.expect("verify").status(), 401, "a key revoked before the backup");
}
