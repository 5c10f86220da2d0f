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
