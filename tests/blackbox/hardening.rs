//! Hostile input against the real listener: guessing keys gets nowhere and
//! gets throttled, and the listener keeps answering meanwhile.

use crate::support;

use guildkey::keys::token;
use support::{json, mode_of, spawn_app, spawn_app_with, Options};

/// A token with a valid shape and checksum that no one issued.
fn well_formed_guess() -> String {
    let body = format!("gk_live_{}", token::random_base62(token::RANDOM_LEN));
    let sum = token::checksum(&body);
    format!("{body}{sum}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_guessed_keys_get_invalid_key_or_rate_limited_never_success() {
    let app = spawn_app().await;
    let mut invalid = 0;
    let mut limited = 0;

    for _ in 0..1000 {
        let guess = well_formed_guess();
        let resp = app.get("/v1/verify", &guess).await;
        let status = resp.status().as_u16();
        let reason = json(resp).await["error"]["reason"].as_str().unwrap_or_default().to_owned();
        match (status, reason.as_str()) {
            (401, "invalid_key") => invalid += 1,
            (429, "rate_limited") => limited += 1,
            other => panic!("a guessed key got {other:?}"),
        }
    }

    println!("1000 guessed keys: {invalid} invalid_key, {limited} rate_limited, 0 accepted");
    assert!(invalid >= 1, "the first guesses are judged on their merits");
    assert!(limited > 900, "failed authentications from one IP are throttled");
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the listener keeps answering");
    for line in app.logs() {
        assert!(!line.contains("gk_live_"), "a presented token reached the log: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_listener_keeps_its_database_directory_and_files_private_whatever_the_umask() {
    // Arrange: a database directory that does not exist yet, and umask 0.
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("state/gk.db");
    let db_url = format!("sqlite://{}?mode=rwc", db.display());

    // Act
    let app = spawn_app_with(Options { db_url: Some(db_url), umask: Some(0), ..Options::default() }).await;
    app.create_key(support::ids::DEMO_GUILD_ID, "game", "bans.read", &[]);

    // Assert: while it runs, the WAL companions exist and are private too.
    assert_eq!(mode_of(&data.path().join("state")), 0o700, "the directory guildkey made");
    for name in ["gk.db", "gk.db-wal", "gk.db-shm"] {
        assert_eq!(mode_of(&data.path().join("state").join(name)), 0o600, "{name} should be -rw-------");
    }
}
