//! Dead keys and guessers throttled alike, and client addresses counted by
//! block (an IPv6 /64 is one client) and bounded per key and hour. The
//! listener trusts `X-Forwarded-For` from loopback here
//! (`http.trust_forwarded_for`), so one test client can be many addresses.

use super::*;

use support::{spawn_app_with, Options};

fn forwarding() -> Options {
    Options { config: "[http]\ntrust_forwarded_for = true\n".into(), ..Options::default() }
}

/// `GET path` with `token` as if from `from`; the status.
async fn status_from(app: &App, path: &str, token: &str, from: &str) -> u16 {
    let resp =
        app.http.get(app.url(path)).bearer_auth(token).header("x-forwarded-for", from).send().await.expect("request");
    let status = resp.status().as_u16();
    support::text(resp).await;
    status
}

#[tokio::test]
async fn a_known_key_refused_a_hundred_times_from_one_address_or_one_64_gets_429_from_the_next_request_on() {
    // Arrange: a revoked key, and a key whose allow-list leaves out the
    // addresses it is used from.
    let app = spawn_app_with(forwarding()).await;
    let revoked = key(&app, DEMO, "revoked", "bans.read", &[]).await;
    let out = app.cli(&["keys", "revoke", "--guild", &DEMO.to_string(), "revoked"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fenced = key(&app, DEMO, "fenced", "bans.read", &["--allowed-ips", "203.0.113.0/24,127.0.0.1"]).await;
    let started = Instant::now();
    while status_from(&app, "/v1/verify", &revoked, "198.51.100.1").await != 401 {
        assert!(started.elapsed() < Duration::from_secs(5), "the revoke never reached the listener");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Act: 100 refusals from one address, and 100 from one /64 (each from
    // another address of it).
    let mut revoked_statuses = Vec::new();
    for _ in 0..100 {
        revoked_statuses.push(status_from(&app, "/v1/verify", &revoked, "198.51.100.1").await);
    }
    let next_revoked = status_from(&app, "/v1/verify", &revoked, "198.51.100.1").await;
    let mut fenced_statuses = Vec::new();
    for i in 0..100 {
        fenced_statuses.push(status_from(&app, "/v1/verify", &fenced, &format!("2001:db8:5:6::{i:x}")).await);
    }
    let next_fenced = status_from(&app, "/v1/verify", &fenced, "2001:db8:5:6:ffff::1").await;

    // Assert: refused, then throttled, and throttled from the next on.
    eprintln!("revoked: {revoked_statuses:?}\nfenced: {fenced_statuses:?}");
    assert_eq!((revoked_statuses[0], fenced_statuses[0]), (401, 403));
    assert_eq!((next_revoked, next_fenced), (429, 429));
    assert!(revoked_statuses.iter().skip_while(|s| **s != 429).all(|s| *s == 429), "{revoked_statuses:?}");
    // The key itself, from where it is allowed, and other addresses pass.
    assert_eq!(status_from(&app, "/v1/verify", &fenced, "203.0.113.9").await, 200);
    assert_eq!(status_from(&app, "/v1/verify", &revoked, "198.51.100.2").await, 401);
}

#[tokio::test]
async fn three_hundred_addresses_of_one_ipv6_64_are_one_client_to_the_throttle_and_the_usage_counts() {
    let app = spawn_app_with(forwarding()).await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;

    // Guessing from 300 addresses of one /64 is guessing from one client.
    let mut guesses = Vec::new();
    for i in 0..300 {
        let from = format!("2001:db8:7:8:{i:x}::{i:x}");
        guesses.push(status_from(&app, "/v1/verify", "gk_live_not-a-key", &from).await);
    }
    assert_eq!(guesses[0], 401);
    assert_eq!(guesses[299], 429, "{guesses:?}");
    assert!(guesses.iter().filter(|s| **s == 429).count() >= 250, "{guesses:?}");

    // A key used from 300 addresses of another /64 is counted from one.
    for i in 0..300 {
        assert_eq!(status_from(&app, "/v1/verify", &token, &format!("2001:db8:9:a:{i:x}::1")).await, 200);
    }
    let usage = get(&app, "/v1/usage?period=24h", &token).await.ok();
    let blocks: Vec<(String, u64)> = usage["top_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["ip"].as_str().unwrap().to_owned(), i["count"].as_u64().unwrap()))
        .collect();
    assert!(blocks.contains(&("2001:db8:9:a::/64".to_owned(), 300)), "{usage}");
    assert_eq!(usage["distinct_ips"], 2, "the /64 and loopback: {usage}");
}

#[tokio::test]
async fn a_key_used_from_three_hundred_addresses_keeps_at_most_a_hundred_an_hour_and_sums_the_rest() {
    let mut app = spawn_app_with(forwarding()).await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();
    for i in 0..300 {
        let from = format!("10.20.{}.{}", i / 250, i % 250 + 1);
        assert_eq!(status_from(&app, "/v1/verify", &token, &from).await, 200);
    }
    // A clean stop writes every counter.
    assert!(app.stop().success());
    let held = rows(&app, &format!("select count(*) from usage_ip_hour where api_key_id = '{key_id}'"));
    let counted =
        rows(&app, &format!("select cast(sum(count) as bigint) from usage_ip_hour where api_key_id = '{key_id}'"));
    let other = rows(
        &app,
        &format!("select cast(sum(count) as bigint) from usage_ip_hour where api_key_id = '{key_id}' and ip = 'other'"),
    );
    eprintln!("{held} address rows, {counted} requests, {other} as other");
    // Two hours at most (the test may cross one): 101 rows each.
    assert!(held <= 202, "{held} rows");
    assert!(counted >= 300 && other >= 100, "{counted} counted, {other} other");
}
