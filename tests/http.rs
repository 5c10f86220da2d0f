//! The HTTP listener, black-box: the real binary on a temp database, its
//! bot connected to the Discord double, spoken to over loopback HTTP.

mod support;

use support::{ids, json, spawn_app};

#[tokio::test]
async fn verify_accepts_a_key_created_by_the_cli_and_describes_it() {
    let app = spawn_app().await;
    let token = app.create_key(ids::DEMO_GUILD_ID, "game server", "bans.read,guild.read", &[]);

    // The CLI runs in another process: the listener sees the key within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let resp = app.get("/v1/verify", &token).await;

    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-ratelimit-limit"));
    let body = json(resp).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["guild_id"], ids::DEMO_GUILD_ID.to_string());
    assert_eq!(body["data"]["name"], "game server");
    assert_eq!(body["data"]["scopes"], serde_json::json!(["guild.read", "bans.read"]));
    assert_eq!(body["data"]["prefix"], &token[..12]);
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let app = spawn_app().await;
    let body = json(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(body, serde_json::json!({"success": true, "data": {"status": "ok"}}));
}
