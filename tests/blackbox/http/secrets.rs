//! Secret hygiene.

use super::*;

#[tokio::test]
async fn no_secret_appears_in_any_log_line_or_response() {
    let config = "[keys]\nmax_per_guild = 10\nlast_used_flush_seconds = 1\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let live = app.create_key(DEMO, "live", ALL_SCOPES, &[]);
    let test = app.create_key(DEMO, "test", ALL_SCOPES, &["--env", "test"]);
    let revoked = app.create_key(DEMO, "revoked", "bans.read", &[]);
    let fenced = app.create_key(DEMO, "fenced", "bans.read", &["--allowed-ips", "10.0.0.0/8"]);
    let rotated_out = app.create_key(DEMO, "rotated", "bans.read", &[]);
    let_the_listener_catch_up().await;
    cli_ok(&app, &["keys", "revoke", &revoked[..12]]);
    let rotated_in = cli_ok(&app, &["keys", "rotate", &rotated_out[..12], "--grace", "1m"]);
    let_the_listener_catch_up().await;

    let (user, role) = (ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let mistyped = change_char(&live, 30);
    let mut replies = Vec::new();
    for token in [&live, &test, &revoked, &fenced, &rotated_out, &rotated_in, &mistyped, &unknown_token()] {
        replies.push(get(&app, "/v1/verify", token).await);
        replies.push(get(&app, &audit_path(DEMO, "?limit=100"), token).await);
        replies.push(get(&app, &audit_path(OTHER, ""), token).await);
        replies.push(get(&app, "/v1/nope", token).await);
        replies.push(send(app.http.post(app.url("/v1/verify")).bearer_auth(token)).await);
    }
    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    replies.push(send(app.http.put(&ban).bearer_auth(&test).body("{\"reason\": \"spam\"}")).await);
    replies.push(send(app.http.put(&ban).bearer_auth(&test).body("{bad json")).await);
    let role_url = app.url(&format!("/v1/guilds/{DEMO}/members/{user}/roles/{role}"));
    replies.push(send(app.http.put(&role_url).bearer_auth(&test)).await);
    replies.push(send(app.http.get(app.url("/v1/verify")).header("authorization", format!("Basic {live}"))).await);
    replies.push(get_anon(&app, "/metrics").await);
    replies.push(get_anon(&app, "/openapi.json").await);
    tokio::time::sleep(Duration::from_millis(1500)).await; // a usage flush, too

    let secrets = [&live, &test, &revoked, &fenced, &rotated_out, &rotated_in];
    let pattern = token_regex();
    for reply in &replies {
        let headers = format!("{:?}", reply.headers);
        for secret in secrets {
            assert!(!reply.text.contains(secret.as_str()), "a response shows a secret: {}", reply.text);
            assert!(!headers.contains(secret.as_str()), "a response header shows a secret: {headers}");
        }
        assert!(!pattern.is_match(&reply.text), "a response holds a token: {}", reply.text);
    }
    let audit = get(&app, &audit_path(DEMO, "?limit=100"), &live).await.ok();
    assert!(!audit.to_string().contains(&rotated_in) && !audit.to_string().contains(&rotated_out));

    let logs = app.logs();
    assert!(logs.len() > 20, "the binary logs at trace level: {} lines", logs.len());
    for line in &logs {
        for secret in secrets.iter().map(|s| s.as_str()).chain([mistyped.as_str(), BOT_TOKEN]) {
            assert!(!line.contains(secret), "a log line shows a secret: {line}");
        }
        assert!(!pattern.is_match(line), "a log line holds something token-shaped: {line}");
    }
}
