//! Authentication.

use super::*;

#[tokio::test]
async fn requests_without_a_bearer_token_get_missing_key_and_a_bearer_challenge() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "challenge", "bans.read", &[]);
    let_the_listener_catch_up().await;
    let url = app.url("/v1/verify");

    let cases: [(&str, RequestBuilder); 5] = [
        ("no Authorization header", app.http.get(&url)),
        ("Basic scheme", app.http.get(&url).header("authorization", "Basic xyz")),
        ("Basic scheme carrying a real key", app.http.get(&url).header("authorization", format!("Basic {token}"))),
        ("empty Bearer", app.http.get(&url).header("authorization", "Bearer ")),
        ("token without a scheme", app.http.get(&url).header("authorization", token.clone())),
    ];
    for (what, req) in cases {
        let reply = send(req).await;
        reply.err(401, "missing_key");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}: WWW-Authenticate");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "schemes", "bans.read", &[]);
    let_the_listener_catch_up().await;

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply =
            send(app.http.get(app.url("/v1/verify")).header("authorization", format!("{scheme} {token}"))).await;
        assert_eq!(reply.ok()["name"], "schemes", "scheme {scheme:?}");
    }
}

#[tokio::test]
async fn tokens_of_the_wrong_shape_or_checksum_are_malformed_and_well_formed_unknown_ones_invalid() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "shape", "bans.read", &[]);
    let_the_listener_catch_up().await;

    // The CLI's token is exactly SPEC §3's format, checksum included.
    assert!(token_regex().is_match(&token) && token.len() == 46, "{token:?}");
    assert_eq!(token[40..], checksum(&token[..40]), "the checksum is CRC-32 in base62");

    let random = &token[8..40];
    let cases = [
        ("another prefix, valid checksum", with_checksum(&format!("xx_live_{random}"))),
        ("upper-case prefix", token.replacen("gk_", "GK_", 1)),
        ("an unknown environment, valid checksum", with_checksum(&format!("gk_prod_{random}"))),
        ("31 random characters, valid checksum", with_checksum(&format!("gk_live_{}", &random[1..]))),
        ("33 random characters, valid checksum", with_checksum(&format!("gk_live_{random}A"))),
        ("a non-base62 character, valid checksum", with_checksum(&format!("gk_live_-{}", &random[1..]))),
        ("truncated by one character", token[..45].to_owned()),
        ("one character too many", format!("{token}A")),
        ("a mistyped checksum", change_char(&token, 45)),
        ("a mistyped random character", change_char(&token, 20)),
        ("the display prefix alone", token[..12].to_owned()),
    ];
    assert!(cases.len() < AUTH_FAILURE_BURST, "stay under the failure throttle");
    for (what, bad) in &cases {
        let reply = get(&app, "/v1/verify", bad).await;
        assert_eq!(reply.json()["error"]["reason"], "malformed_key", "{what}: {bad}: {}", reply.text);
        reply.err(401, "malformed_key");
        assert!(!reply.text.contains(bad.as_str()), "{what}: the error echoes the presented token");
    }

    let unknown = unknown_token();
    assert!(token_regex().is_match(&unknown));
    let reply = get(&app, "/v1/verify", &unknown).await;
    reply.err(401, "invalid_key");
    assert!(!reply.text.contains(&unknown), "the error echoes the presented token");

    // The real key still works: none of this touched it.
    assert_eq!(get(&app, "/v1/verify", &token).await.ok()["name"], "shape");
}

#[tokio::test]
async fn a_key_revoked_with_the_cli_is_refused_within_a_second() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "doomed", "bans.read", &[]);
    let_the_listener_catch_up().await;
    get(&app, "/v1/verify", &token).await.ok();

    cli_ok(&app, &["keys", "revoke", &token[..12]]);
    let (reply, took) = poll(&app, "/v1/verify", &token, Duration::from_secs(3), |r| r.status != 200).await;

    reply.err(401, "key_revoked");
    assert!(took <= CROSS_PROCESS, "the revocation took {took:?} to reach the listener");
    // And it stays revoked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
}

#[tokio::test]
async fn an_expired_key_is_refused_with_key_expired() {
    let app = spawn_app().await;
    // Long enough for a busy machine to start the CLI and the listener to see the key.
    let token = app.create_key(DEMO, "short-lived", "bans.read", &["--expires", "6s"]);
    let_the_listener_catch_up().await;

    let data = get(&app, "/v1/verify", &token).await.ok();
    let expires_at = rfc3339(&data["expires_at"]);
    let from_now = expires_at - Utc::now();
    assert!(from_now > chrono::Duration::zero() && from_now <= chrono::Duration::seconds(6), "expires_at {expires_at}");

    // Until just past the expiry the key itself states (the CLI counts the
    // 6 s from its own start, which a busy machine may delay).
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    get(&app, "/v1/verify", &token).await.err(401, "key_expired");
}

#[tokio::test]
async fn a_key_acting_on_another_guild_gets_guild_mismatch_and_one_lacking_the_scope_insufficient_scope() {
    let app = spawn_app().await;
    let reader = app.create_key(DEMO, "reader", "audit.read", &[]);
    let banner = app.create_key(DEMO, "banner", "bans.read", &[]);
    let other = app.create_key(OTHER, "elsewhere", "audit.read", &[]);
    let_the_listener_catch_up().await;

    get(&app, &audit_path(DEMO, ""), &reader).await.ok();
    get(&app, &audit_path(OTHER, ""), &reader).await.err(403, "guild_mismatch").has_rate_limit_headers();
    get(&app, &audit_path(DEMO, ""), &other).await.err(403, "guild_mismatch").has_rate_limit_headers();
    get(&app, &audit_path(DEMO, ""), &banner).await.err(403, "insufficient_scope").has_rate_limit_headers();
    // The mismatch is reported even when the key also lacks the scope.
    get(&app, &audit_path(OTHER, ""), &banner).await.err(403, "guild_mismatch");
}
