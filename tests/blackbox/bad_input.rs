//! Bad HTTP input the main HTTP suite does not already try, black-box
//! against the real binary: odd `Authorization` forms, ban bodies out of
//! range, odd paths and methods, query strings, a forged `X-Forwarded-For`
//! without a trusted proxy. Also the suite-wide secret scan of
//! tests/support (it must catch a planted leak). Rows of docs/bad-input.md
//! point here.

use crate::support;

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use support::{find_secrets, ids, is_one_time_secret_reply, spawn_app, token_regex, BOT_TOKEN};

const DEMO: u64 = ids::DEMO_GUILD_ID;

/// A key made by the CLI is live in the listener within a second.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[track_caller]
fn assert_error(what: &str, status: u16, body: &str, want_status: u16, want_reason: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert_eq!(
        (status, v["error"]["reason"].as_str()),
        (want_status, Some(want_reason)),
        "{what}: expected {want_status} {want_reason}: {body}"
    );
    assert_eq!(v["success"], false, "{what}: {body}");
    assert_eq!(v["error"]["code"], want_status, "{what}: {body}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty() && !message.contains('\n'), "{what}: a one-line message: {body}");
}

#[tokio::test]
async fn odd_authorization_headers_get_missing_or_malformed_key_never_success() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "auth forms", "bans.read", &[]);
    settle().await;
    let url = app.url("/v1/verify");
    let cases: Vec<(&str, HeaderValue, &str)> = vec![
        ("the scheme alone", HeaderValue::from_static("Bearer"), "missing_key"),
        ("a tab after the scheme", HeaderValue::from_str(&format!("Bearer\t{token}")).unwrap(), "missing_key"),
        ("Token scheme", HeaderValue::from_str(&format!("Token {token}")).unwrap(), "missing_key"),
        ("non-ASCII bytes", HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(), "missing_key"),
        ("the key then more words", HeaderValue::from_str(&format!("Bearer {token} extra")).unwrap(), "malformed_key"),
        ("the key twice", HeaderValue::from_str(&format!("Bearer {token},{token}")).unwrap(), "malformed_key"),
        ("quoted key", HeaderValue::from_str(&format!("Bearer \"{token}\"")).unwrap(), "malformed_key"),
        (
            "a 10 000-character token",
            HeaderValue::from_str(&format!("Bearer gk_live_{}", "A".repeat(10_000))).unwrap(),
            "malformed_key",
        ),
    ];
    for (what, value, reason) in cases {
        let (status, body) = app.send(app.http.get(&url).header(AUTHORIZATION, value)).await;
        assert_error(what, status, &body, 401, reason);
        assert!(!body.contains(&token[8..40]), "{what}: the reply echoes the key");
    }
    // Padding around the key is forgiven; two headers are refused, whatever they hold.
    let (status, _) = app.send(app.http.get(&url).header(AUTHORIZATION, format!("  Bearer   {token}  "))).await;
    assert_eq!(status, 200, "spaces around the key");
    let two = app.http.get(&url).header(AUTHORIZATION, "Basic x").header(AUTHORIZATION, format!("Bearer {token}"));
    let (status, body) = app.send(two).await;
    assert_error("a Basic header before the Bearer one", status, &body, 400, "bad_request");
}

#[tokio::test]
async fn ban_bodies_with_values_out_of_range_are_bad_requests() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "bodies", "bans.write", &["--env", "test"]);
    settle().await;
    let url = app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID));
    let cases = [
        ("negative delete_message_seconds", json!({"delete_message_seconds": -1}).to_string()),
        ("delete_message_seconds over 7 days", json!({"delete_message_seconds": 604_801}).to_string()),
        ("delete_message_seconds as a string", json!({"delete_message_seconds": "60"}).to_string()),
        ("delete_message_seconds as a fraction", json!({"delete_message_seconds": 1.5}).to_string()),
        ("delete_message_seconds past i64", "{\"delete_message_seconds\": 1e19}".to_owned()),
        ("delete_message_seconds 7 days and a bit", "{\"delete_message_seconds\": 604800.5}".to_owned()),
        ("a reason of 513 characters", json!({"reason": "r".repeat(513)}).to_string()),
        ("a reason that is an object", json!({"reason": {"text": "x"}}).to_string()),
        ("JSON null", "null".to_owned()),
        ("a JSON string", "\"spam\"".to_owned()),
        ("a lone surrogate escape", "{\"reason\": \"\\udc80\"}".to_owned()),
    ];
    let mut cases: Vec<(&str, Vec<u8>)> = cases.into_iter().map(|(w, b)| (w, b.into_bytes())).collect();
    cases.push(("invalid UTF-8", b"{\"reason\": \"\xff\"}".to_vec()));
    for (what, body) in cases {
        let req = app.http.put(&url).bearer_auth(&token).header("content-type", "application/json").body(body);
        let (status, reply) = app.send(req).await;
        assert_error(what, status, &reply, 400, "bad_request");
    }
    // No body, a blank body, or JSON without a Content-Type: all accepted.
    for (what, req) in [
        ("no body", app.http.put(&url).bearer_auth(&token)),
        ("a blank body", app.http.put(&url).bearer_auth(&token).body("  \n")),
        ("JSON as text/plain", app.http.put(&url).bearer_auth(&token).header("content-type", "text/plain").body("{}")),
        // JSON Schema (and so the OpenAPI document) counts 60.0 as an integer.
        (
            "a whole number written 60.0",
            app.http.put(&url).bearer_auth(&token).body("{\"delete_message_seconds\": 60.0}"),
        ),
        (
            "the limits exactly",
            app.http
                .put(&url)
                .bearer_auth(&token)
                .body(json!({"reason": "r".repeat(512), "delete_message_seconds": 604_800}).to_string()),
        ),
    ] {
        let (status, reply) = app.send(req).await;
        assert_eq!(status, 200, "{what}: {reply}");
        assert_eq!(serde_json::from_str::<Value>(&reply).unwrap()["data"]["dry_run"], true, "{what}: {reply}");
    }
}

#[tokio::test]
async fn odd_paths_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "paths", "guild.read,bans.read,audit.read", &[]);
    settle().await;
    let long = format!("/v1/guilds/{}", "1".repeat(5000));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("a trailing slash", app.http.get(app.url("/v1/verify/")), 404, "not_found"),
        ("a doubled slash", app.http.get(app.url("//v1/verify")), 404, "not_found"),
        ("upper-case path", app.http.get(app.url("/V1/VERIFY")), 404, "not_found"),
        ("a 5000-digit guild id", app.http.get(app.url(&long)), 400, "bad_request"),
        ("a guild id with a plus sign", app.http.get(app.url("/v1/guilds/+123")), 400, "bad_request"),
        ("a guild id with a space", app.http.get(app.url("/v1/guilds/12%2034")), 400, "bad_request"),
        ("a guild id that is not UTF-8", app.http.get(app.url("/v1/guilds/%FF")), 400, "bad_request"),
        (
            "a user id that is not UTF-8",
            app.http.get(app.url(&format!("/v1/guilds/{DEMO}/bans/%C3%28"))),
            400,
            "bad_request",
        ),
        ("an empty user id", app.http.get(app.url(&format!("/v1/guilds/{DEMO}/bans/"))), 404, "not_found"),
        ("OPTIONS", app.http.request(reqwest::Method::OPTIONS, app.url("/v1/verify")), 405, "method_not_allowed"),
        (
            "PATCH on a ban",
            app.http.patch(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID))),
            405,
            "method_not_allowed",
        ),
        (
            "a made-up method",
            app.http.request(reqwest::Method::from_bytes(b"FROB").unwrap(), app.url("/v1/verify")),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, req, want_status, want_reason) in cases {
        let (status, body) = app.send(req.bearer_auth(&token)).await;
        assert_error(what, status, &body, want_status, want_reason);
    }
    // HEAD is GET without a body.
    let head = app.http.head(app.url("/v1/verify")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn odd_audit_log_queries_are_clamped_ignored_or_refused() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "queries", "audit.read", &[]);
    settle().await;
    let path = |q: &str| app.url(&format!("/v1/guilds/{DEMO}/audit-log{q}"));
    for (query, want) in [
        ("?limit=0", 200),
        ("?limit=-1", 200),
        ("?limit=101", 200),
        ("?limit=99999999999999999999999", 400),
        ("?before=99999999999999999999999", 400),
        ("?before=123456", 200),
        ("?unknown=1", 200),
        ("?limit=5&limit=6", 400),
        ("?limit=%FF", 400),
    ] {
        let (status, body) = app.send(app.http.get(path(query)).bearer_auth(&token)).await;
        assert_eq!(status, want, "{query}: {body}");
        if want == 400 {
            assert_error(query, status, &body, 400, "bad_request");
        }
    }
    // A long bad value is echoed in part only.
    let long = "x".repeat(500);
    for name in ["limit", "before"] {
        let (status, body) = app.send(app.http.get(path(&format!("?{name}={long}"))).bearer_auth(&token)).await;
        assert_error(name, status, &body, 400, "bad_request");
        assert!(
            body.contains(&long[..32]) && !body.contains(&long[..33]),
            "{name}: echo at most 32 characters: {body}"
        );
    }
}

#[tokio::test]
async fn a_forged_forwarded_for_is_ignored_without_a_trusted_proxy() {
    let app = spawn_app().await;
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let anywhere = app.create_key(DEMO, "anywhere", "bans.read", &[]);
    settle().await;
    let url = app.url("/v1/verify");
    for forwarded in ["203.0.113.7", "198.51.100.1, 203.0.113.7", "garbage", ""] {
        let (status, body) =
            app.send(app.http.get(&url).bearer_auth(&office).header("x-forwarded-for", forwarded)).await;
        assert_error(&format!("X-Forwarded-For: {forwarded:?}"), status, &body, 403, "ip_not_allowed");
        let (status, body) =
            app.send(app.http.get(&url).bearer_auth(&anywhere).header("x-forwarded-for", forwarded)).await;
        assert_eq!(status, 200, "{forwarded:?}: {body}");
    }
}

// ---------------------------------------------------------------------------
// The suite-wide secret scan itself
// ---------------------------------------------------------------------------

const FAKE_KEY: &str = "gk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2xOUxb";

#[test]
fn the_secret_scanner_finds_keys_of_any_prefix_and_the_bot_token() {
    let leaks = [
        ("log", format!("2026-01-01T00:00:00Z DEBUG verify token={FAKE_KEY}")),
        ("log", "{\"fields\":{\"key\":\"acme_test_0123456789abcdefghijABCDEFGHIJkl338gq2\"}}".to_owned()),
        ("audit row", format!("{{\"details\":{{\"secret\":\"{FAKE_KEY}\"}}}}")),
        ("REST body", format!("{{\"content\":\"Authorization: Bot {BOT_TOKEN}\"}}")),
        ("log", "token part bot-token-never-logged".to_owned()),
    ];
    for (place, text) in &leaks {
        let found = find_secrets(&[(place.to_string(), text.clone())]);
        assert_eq!(found.len(), 1, "{place}: {text}: {found:?}");
        assert!(!found[0].contains(&FAKE_KEY[12..]), "a finding must not repeat the secret: {}", found[0]);
    }
    let clean = [
        ("log", "verify ok key_id=key_Ab3dEf9hIjKlMnOp prefix=gk_live_Ab3d".to_owned()),
        ("log", format!("truncated {}", &FAKE_KEY[..45])),
        ("body", "{\"prefix\":\"gk_test_0123\",\"status\":\"active\"}".to_owned()),
    ];
    for (place, text) in &clean {
        assert!(find_secrets(&[(place.to_string(), text.clone())]).is_empty(), "{place}: {text}");
    }
}

#[test]
fn only_the_one_time_secret_reply_may_carry_a_key() {
    let secret = format!(
        "{{\"type\":4,\"data\":{{\"content\":\"🔑 **API key created: x**\\n⚠️ **Copy this secret now. It is shown only once** ...\\n{FAKE_KEY}\"}}}}"
    );
    assert!(is_one_time_secret_reply("/interactions/{interaction_id}/{interaction_token}/callback", &secret));
    assert!(is_one_time_secret_reply("/webhooks/{application_id}/{webhook_token}/messages/@original", &secret));
    assert!(!is_one_time_secret_reply("/channels/{channel_id}/messages", &secret), "an audit post is no place for it");
    let other = format!("{{\"data\":{{\"content\":\"Revoked {FAKE_KEY}\"}}}}");
    assert!(!is_one_time_secret_reply("/interactions/{interaction_id}/{interaction_token}/callback", &other));
}

#[tokio::test]
async fn an_app_reports_a_planted_leak_in_a_response_body_and_is_clean_after_a_real_create() {
    // Arrange: a real key made through the bot (the one-time reply is exempt)
    // and through the CLI, used on the listener.
    let mut app = spawn_app().await;
    let sent = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "scanned")
        .string("scopes", "guild.read")
        .send()
        .await
        .unwrap();
    let reply = app.double.wait_for_response(&sent, Duration::from_secs(10)).await.unwrap();
    let from_bot = token_regex().find(&reply.all_text()).expect("a secret in the reply").as_str().to_owned();
    let from_cli = app.create_key(DEMO, "cli", "guild.read", &[]);
    settle().await;
    for token in [&from_bot, &from_cli] {
        let (status, _) = app.send(app.http.get(app.url("/v1/verify")).bearer_auth(token)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.secret_findings(), Vec::<String>::new(), "a clean run has no findings");

    // Act: a response that echoes a key (as a broken listener might).
    app.record_body_for_test(&format!("{{\"error\":{{\"message\":\"bad key {from_cli}\"}}}}"));

    // Assert
    let findings = app.secret_findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].contains("response body"), "{findings:?}");
    assert!(!findings[0].contains(&from_cli), "findings are masked");
    app.check_secrets = false; // the planted leak would fail the drop check
}
