//! A request log its own key cannot wipe: the refusals that matter are
//! kept apart from the noise, and each key logs a bounded number of
//! requests a minute.

use super::*;

use support::{spawn_app_with, Options};

#[tokio::test]
async fn a_keys_request_log_keeps_its_last_fifty_notable_refusals_however_many_unknown_paths_follow() {
    // Arrange: a key allowed from loopback only; the listener believes
    // X-Forwarded-For, so its requests can come from elsewhere.
    let opts = Options { config: "[http]\ntrust_forwarded_for = true\n".into(), ..Options::default() };
    let mut app = spawn_app_with(opts).await;
    let token = key(&app, DEMO, "fenced", "bans.read", &["--allowed-ips", "127.0.0.1"]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();

    // Act: 45 uses from outside the allow-list (each from its own address,
    // so the throttle never steps in), 10 with a scope the key lacks, then
    // 3,000 requests to paths that do not exist.
    for i in 0..45 {
        let resp = app
            .http
            .get(app.url("/v1/verify"))
            .bearer_auth(&token)
            .header("x-forwarded-for", format!("198.51.100.{}", i + 1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        support::text(resp).await;
    }
    for _ in 0..10 {
        get(&app, &format!("/v1/guilds/{DEMO}"), &token).await.err(403, "insufficient_scope");
    }
    for i in 0..3_000 {
        let resp = app.http.get(app.url(&format!("/v1/nothing/{i}"))).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404);
    }
    // A clean stop writes the log.
    assert!(app.stop().success());

    // Assert: the newest 50 notable refusals are all there; the noise is
    // bounded apart from them.
    let count = |filter: &str| {
        rows(&app, &format!("select count(*) from request_log where api_key_id = '{key_id}' and {filter}"))
    };
    let (scope, allow_list, unknown) =
        (count("reason = 'insufficient_scope'"), count("reason = 'ip_not_allowed'"), count("route = '(no route)'"));
    eprintln!("request log: {scope} insufficient_scope, {allow_list} ip_not_allowed, {unknown} (no route)");
    assert_eq!((scope, allow_list), (10, 40), "the newest 50 notable refusals");
    assert!(unknown <= 200, "{unknown}");
}
