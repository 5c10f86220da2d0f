//! Last-used times.

use super::*;

#[tokio::test]
async fn last_used_times_are_flushed_in_batches() {
    let config = "[keys]\nlast_used_flush_seconds = 1\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    app.create_key(DEMO, "busy", "bans.read", &[]);
    let token = app.create_key(DEMO, "busy2", "bans.read", &[]);
    let_the_listener_catch_up().await;
    assert_eq!(listed(&app, DEMO, "busy2")["last_used_at"], Value::Null, "never used yet");

    let before = Utc::now() - chrono::Duration::milliseconds(5);
    for _ in 0..3 {
        get(&app, "/v1/verify", &token).await.ok();
    }
    let after = Utc::now() + chrono::Duration::milliseconds(5);
    let started = Instant::now();
    let key = loop {
        let key = listed(&app, DEMO, "busy2");
        // A flush may fall between the three requests: wait for the one
        // that has them all.
        if key["use_count"] == 3 || started.elapsed() > Duration::from_secs(3) {
            break key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!key["last_used_at"].is_null(), "flushed within about a second: {key}");
    let last_used = rfc3339(&key["last_used_at"]);
    assert!(before <= last_used && last_used <= after, "{last_used} is the last request's time");
    assert_eq!(key["use_count"], 3, "{key}");
    assert_eq!(listed(&app, DEMO, "busy")["last_used_at"], Value::Null, "an unused key stays unused");
}

#[tokio::test]
async fn pending_last_used_times_are_written_at_shutdown_not_per_request() {
    let config = "[keys]\nlast_used_flush_seconds = 3600\n";
    let mut app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let token = app.create_key(DEMO, "lazy", "bans.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &token).await.ok();
    get(&app, "/v1/verify", &token).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listed(&app, DEMO, "lazy")["last_used_at"], Value::Null, "no write per request");

    let status = app.stop();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    let key = listed(&app, DEMO, "lazy");
    assert!(!key["last_used_at"].is_null(), "flushed at shutdown: {key}");
    assert_eq!(key["use_count"], 2, "{key}");
}
