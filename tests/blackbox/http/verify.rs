//! Verify and the envelope.

use super::*;

#[tokio::test]
async fn verify_accepts_a_key_created_by_the_cli_and_describes_it() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "game server", "bans.read,guild.read", &[]);

    // The CLI runs in another process: the listener sees the key within a second.
    let_the_listener_catch_up().await;
    let reply = get(&app, "/v1/verify", &token).await;

    let data = reply.ok();
    reply.has_rate_limit_headers();
    let key = listed(&app, DEMO, "game server");
    assert_eq!(
        data,
        json!({
            "key_id": key["key_id"],
            "guild_id": DEMO.to_string(),
            "name": "game server",
            "prefix": &token[..12],
            "scopes": ["guild.read", "bans.read"],
            "environment": "live",
            "expires_at": null,
            "rate_limit_per_minute": 60,
        })
    );
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let app = spawn_app().await;
    // The bot says it is connected as soon as its session is ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let body = json(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
        if body["data"]["bot"] == "connected" || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, json!({"success": true, "data": {"status": "ok", "bot": "connected"}}));
}

/// `/healthz` and the bot's state while Discord refuses or is away, polled
/// every 2 s for a minute: always 200, the key keeps verifying.
async fn healthy_for_a_minute(app: &App, token: &str, state: &str) {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        let resp = app.http.get(app.url("/healthz")).send().await.expect("the listener answers");
        assert_eq!(resp.status(), 200, "after {:?}", started.elapsed());
        seen.push(json(resp).await["data"]["bot"].as_str().unwrap_or_default().to_owned());
        let verified = app.get("/v1/verify", token).await;
        assert_eq!(verified.status(), 200, "the key verifies after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(seen.iter().skip(1).all(|s| s == state || s == "connecting"), "bot states {seen:?}");
    assert!(seen.iter().any(|s| s == state), "bot states {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stays_up_while_discord_refuses_the_token_or_cannot_be_reached_and_names_the_cause() {
    use support::{spawn_against, Double, DoubleConfig};
    let strict =
        Double::start(DoubleConfig { bot_token: Some(BOT_TOKEN.into()), ..DoubleConfig::demo() }).await.unwrap();
    let wrong_token = vec![("DISCORD_TOKEN".to_owned(), "MTEwMDAwMDAwMDAwMDAwMDAwMQ.double.not-the-token".to_owned())];
    let refused = spawn_against(strict, Options { env: wrong_token, no_gateway: true, ..Options::default() }).await;
    let away = "http://127.0.0.1:9/api/v10";
    let env = vec![("DISCORD_API_BASE_URL".to_owned(), away.to_owned())];
    let unreachable = spawn_app_with(Options { env, no_gateway: true, ..Options::default() }).await;
    let (a, b) =
        (refused.create_key(DEMO, "a", "guild.read", &[]), unreachable.create_key(DEMO, "b", "guild.read", &[]));
    let_the_listener_catch_up().await;

    tokio::join!(
        healthy_for_a_minute(&refused, &a, "token_refused"),
        healthy_for_a_minute(&unreachable, &b, "unreachable")
    );
    let logged = |app: &App, needle: &str| app.logs().iter().any(|l| l.contains(needle));
    assert!(logged(&refused, "Discord refused the bot token (401 from"), "the refusal is named");
    assert!(logged(&unreachable, &format!("Discord could not be reached at {away}")), "the address is named");
    assert!(!logged(&unreachable, "refused the bot token"), "an unreachable Discord is not blamed on the token");
}

#[tokio::test]
async fn success_and_error_bodies_carry_exactly_the_envelope_fields() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "envelope", "bans.read", &[]);
    let_the_listener_catch_up().await;

    // Success: exactly {success, data}.
    get(&app, "/v1/verify", &token).await.ok();
    let health = get_anon(&app, "/healthz").await.ok();
    assert_eq!(keys_of(&health), ["bot", "status"], "{health}");
    assert_eq!(health["status"], "ok", "{health}");

    // Failure: exactly {success, data: {}, error: {code, reason, message}},
    // for errors from the auth layer, the handlers and the router alike.
    get_anon(&app, "/v1/verify").await.err(401, "missing_key");
    get(&app, "/v1/verify", "gk_live_short").await.err(401, "malformed_key");
    get(&app, "/v1/verify", &unknown_token()).await.err(401, "invalid_key");
    get(&app, &audit_path(DEMO, ""), &token).await.err(403, "insufficient_scope");
    get(&app, &audit_path(OTHER, ""), &token).await.err(403, "guild_mismatch");
    get(&app, "/v1/guilds/abc/audit-log", &token).await.err(400, "bad_request");
    get_anon(&app, "/nope").await.err(404, "not_found");
    send(app.http.post(app.url("/healthz"))).await.err(405, "method_not_allowed");
}
