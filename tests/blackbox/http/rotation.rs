//! Rotation.

use super::*;

#[tokio::test]
async fn rotating_with_the_cli_retires_the_old_secret_within_a_second() {
    let app = spawn_app().await;
    let old = app.create_key(DEMO, "rotating", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let key_id = get(&app, "/v1/verify", &old).await.ok()["key_id"].clone();

    let new = cli_ok(&app, &["keys", "rotate", key_id.as_str().unwrap()]);
    assert!(token_regex().is_match(&new) && new != old, "rotate prints the new secret alone: {new:?}");
    let (reply, took) = poll(&app, "/v1/verify", &old, Duration::from_secs(3), |r| r.status != 200).await;
    reply.err(401, "invalid_key");
    assert!(took <= CROSS_PROCESS, "the rotation took {took:?} to retire the old secret");

    let (reply, took) = poll(&app, "/v1/verify", &new, Duration::from_secs(3), |r| r.status == 200).await;
    let data = reply.ok();
    assert!(took <= CROSS_PROCESS, "the new secret took {took:?} to work");
    assert_eq!((&data["key_id"], &data["name"], &data["prefix"]), (&key_id, &json!("rotating"), &json!(&new[..12])));
}

#[tokio::test]
async fn a_rotation_grace_period_keeps_the_old_secret_working_until_it_ends() {
    let app = spawn_app().await;
    let old = app.create_key(DEMO, "graceful", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &old).await.ok();

    let rotated = Instant::now();
    let new = cli_ok(&app, &["keys", "rotate", &old[..12], "--grace", "3s"]);
    // The grace is counted from a moment inside the command: it ends at most
    // 3 s after the command returned.
    let returned = Instant::now();
    let (reply, _) = poll(&app, "/v1/verify", &new, Duration::from_secs(2), |r| r.status == 200).await;
    reply.ok();
    assert!(rotated.elapsed() < Duration::from_millis(2500), "too slow to test the grace period");
    assert_eq!(get(&app, "/v1/verify", &old).await.ok()["prefix"], &new[..12], "the old secret works during the grace");

    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(returned.elapsed())).await;
    get(&app, "/v1/verify", &old).await.err(401, "invalid_key");
    get(&app, "/v1/verify", &new).await.ok();
}

/// Milliseconds since the epoch on this machine's clock (the binary's too).
fn wall_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[tokio::test]
async fn a_rotation_until_unused_keeps_the_old_secret_while_presented_and_retires_it_once_unused() {
    let app = spawn_app().await;
    let old = app.create_key(DEMO, "game servers", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &old).await.ok();
    let completed = "select count(*) from audit_event where action = 'key.rotation_completed'";

    let new = cli_ok(&app, &["keys", "rotate", &old[..12], "--grace-until-unused", "2s"]);
    let (reply, _) = poll(&app, "/v1/verify", &new, Duration::from_secs(3), |r| r.status == 200).await;
    reply.ok();

    // Servers that started with the old secret keep presenting it: every
    // 0.5 s for 3 s, longer than its idle time, it keeps working.
    let started = Instant::now();
    let mut last_use = wall_ms();
    while started.elapsed() < Duration::from_secs(3) {
        get(&app, "/v1/verify", &old).await.ok();
        last_use = wall_ms();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(support::db_scalar(&app.db_url, completed), Some(0), "retired while still presented");
    let seen_from = support::db_scalar(
        &app.db_url,
        "select count(*) from api_key where previous_seen_ip = '127.0.0.1' and previous_seen_at is not null",
    );
    assert_eq!(seen_from, Some(1), "when and where the old secret was last presented is written");

    // Then they stop: the old secret is retired, once, about its idle time
    // after its last use (watched in the audit log: presenting the old
    // secret to see would keep it alive).
    let deadline = Instant::now() + Duration::from_secs(8);
    while support::db_scalar(&app.db_url, completed) != Some(1) {
        assert!(Instant::now() < deadline, "the old secret was not retired within 8 s of its last use");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retired_at =
        support::db_scalar(&app.db_url, "select created_at from audit_event where action = 'key.rotation_completed'")
            .unwrap();
    let after = Duration::from_millis(u64::try_from(retired_at - last_use).unwrap_or(0));
    eprintln!("old secret retired {after:?} after its last use (idle time 2 s)");
    assert!(after >= Duration::from_secs(2), "retired {after:?} after its last use, before its idle time");
    assert!(after <= Duration::from_millis(4500), "retired {after:?} after its last use: idle time + margin + check");
    get(&app, "/v1/verify", &old).await.err(401, "invalid_key");
    get(&app, "/v1/verify", &new).await.ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(support::db_scalar(&app.db_url, completed), Some(1), "one key.rotation_completed entry");
}
