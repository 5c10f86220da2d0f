//! Routing and request validation.

use super::*;

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "router", ALL_SCOPES, &["--env", "test"]);
    let_the_listener_catch_up().await;

    for path in ["/", "/nope", "/v1", "/v1/nope", "/v2/verify", &format!("/v1/guilds/{DEMO}/nope"), "/v1/verify/extra"]
    {
        get_anon(&app, path).await.err(404, "not_found");
        get(&app, path, &token).await.err(404, "not_found");
    }
    let wrong = [
        (app.http.post(app.url("/v1/verify")), "GET,HEAD"),
        (app.http.delete(app.url("/v1/verify")), "GET,HEAD"),
        (app.http.post(app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID))), "GET,HEAD,PUT,DELETE"),
        (app.http.post(app.url(&audit_path(DEMO, ""))), "GET,HEAD"),
        (app.http.post(app.url("/healthz")), "GET,HEAD"),
        (app.http.put(app.url("/metrics")), "GET,HEAD"),
        (app.http.delete(app.url("/openapi.json")), "GET,HEAD"),
    ];
    for (req, allow) in wrong {
        let reply = send(req.bearer_auth(&token)).await;
        reply.err(405, "method_not_allowed");
        let listed: BTreeSet<&str> = reply.header("allow").unwrap_or_default().split(',').map(str::trim).collect();
        assert_eq!(listed, allow.split(',').collect(), "Allow header of a 405: {:?}", reply.headers);
    }
}

#[tokio::test]
async fn malformed_ids_query_values_and_bodies_are_bad_requests() {
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "validator", ALL_SCOPES, &["--env", "test", "--rate-limit", "1000"]);
    let_the_listener_catch_up().await;
    let (user, role) = (ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    let bad_ids = [
        "abc",
        "0",
        "-5",
        "1e5",
        "12.5",
        "123456789012345678901",
        "99999999999999999999",
        "%20123",
        "0123",
        "9223372036854775808",
    ];
    for bad in bad_ids {
        for path in [
            format!("/v1/guilds/{bad}"),
            format!("/v1/guilds/{bad}/audit-log"),
            format!("/v1/guilds/{bad}/bans/{user}"),
            format!("/v1/guilds/{DEMO}/bans/{bad}"),
            format!("/v1/guilds/{DEMO}/members/{bad}/roles/{role}"),
            format!("/v1/guilds/{DEMO}/members/{user}/roles/{bad}"),
        ] {
            let reply = get(&app, &path, &token).await;
            if path.contains("/members/") {
                // GET on a role route is 405; PUT is the real test.
                let reply = send(app.http.put(app.url(&path)).bearer_auth(&token)).await;
                assert_eq!(reply.status, 400, "PUT {path}: {}", reply.text);
                reply.err(400, "bad_request");
                continue;
            }
            assert_eq!(reply.status, 400, "GET {path}: {}", reply.text);
            reply.err(400, "bad_request");
        }
    }

    for query in ["?limit=abc", "?limit=1.5", "?limit=ten", "?before=abc", "?before=0", "?before=-3", "?before=1.5"] {
        let reply = get(&app, &audit_path(DEMO, query), &token).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        reply.err(400, "bad_request");
    }
    // Empty values mean the defaults.
    get(&app, &audit_path(DEMO, "?limit=&before="), &token).await.ok();

    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{user}"));
    // Arrays too: serde would read `["x", 0]` as the body's fields in order.
    let bodies =
        ["not json", "{\"reason\": 5}", "{\"reason\": \"x\", \"surprise\": 1}", "[1, 2]", "{\"reason\": \"x\""];
    for body in bodies.into_iter().chain(["[\"spam\", 0]", "[null, null]", " [\"x\"]", "\"x\"", "5", "null"]) {
        let reply =
            send(app.http.put(&ban).bearer_auth(&token).header("content-type", "application/json").body(body)).await;
        assert_eq!(reply.status, 400, "body {body:?}: {}", reply.text);
        reply.err(400, "bad_request");
    }
}

#[tokio::test]
async fn a_key_that_may_not_ban_here_gets_403_whatever_its_body() {
    let app = spawn_app_with(Options { config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    let reader = app.create_key(DEMO, "reader", "bans.read", &["--env", "test"]);
    let elsewhere = app.create_key(OTHER, "elsewhere", "bans.write", &["--env", "test"]);
    let writer = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    let_the_listener_catch_up().await;
    let ban = app.url(&format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID));

    for body in ["not json", "[\"spam\", 0]", "{\"surprise\": 1}", "{\"reason\": 5}", "{}", "null"] {
        let put = |token: &str| app.http.put(&ban).bearer_auth(token).body(body);
        send(put(&reader)).await.err(403, "insufficient_scope");
        send(put(&elsewhere)).await.err(403, "guild_mismatch");
        let reply = send(put(&writer)).await;
        if body == "{}" {
            assert_eq!(reply.ok()["dry_run"], true);
        } else {
            reply.err(400, "bad_request");
        }
    }
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_refused_with_413() {
    let app = spawn_app_with(Options { config: "[http]\nmax_body_bytes = 64\n".into(), ..Options::default() }).await;
    let token = app.create_key(DEMO, "writer", "bans.write", &["--env", "test"]);
    let_the_listener_catch_up().await;
    let path = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);
    let big = json!({ "reason": "x".repeat(500) }).to_string();

    // With Content-Length, with or without a key.
    let reply = send(app.http.put(app.url(&path)).bearer_auth(&token).body(big.clone())).await;
    reply.err(413, "payload_too_large");
    send(app.http.put(app.url(&path)).body(big.clone())).await.err(413, "payload_too_large");

    // Chunked, with no Content-Length to go by.
    let (status, body) = raw_chunked_put(&app, &path, &token, &big).await;
    assert_eq!(status, 413, "chunked: {body}");
    assert_error_envelope(&serde_json::from_str(&body).expect("JSON"), 413);
    assert!(body.contains("payload_too_large"), "{body}");

    // A body within the limit is read as usual (a test key: a dry run).
    let small = json!({ "reason": "spam" }).to_string();
    assert!(small.len() <= 64);
    let data = send(app.http.put(app.url(&path)).bearer_auth(&token).body(small)).await.ok();
    assert_eq!(data["dry_run"], true, "{data}");
}

/// PUT with `Transfer-Encoding: chunked` over a raw socket (reqwest here has
/// no streaming bodies); returns the status and the body.
async fn raw_chunked_put(app: &App, path: &str, token: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let half = body.len() / 2;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        half,
        &body[..half],
        body.len() - half,
        &body[half..]
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {raw}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}
