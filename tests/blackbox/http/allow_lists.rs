//! IP allow-lists and X-Forwarded-For.

use super::*;

#[tokio::test]
async fn ip_allow_lists_admit_callers_inside_and_refuse_callers_outside() {
    let app = spawn_app_with(Options { config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    let outside = app.create_key(DEMO, "lan only", "bans.read", &["--allowed-ips", "10.0.0.0/8"]);
    let exact = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1/32"]);
    let mixed = app.create_key(DEMO, "mixed", "bans.read", &["--allowed-ips", "::1, 2001:db8::/32, 127.0.0.0/8"]);
    let v6_only = app.create_key(DEMO, "v6 only", "bans.read", &["--allowed-ips", "::1,2001:db8::/32"]);
    let_the_listener_catch_up().await;

    // The test connects from 127.0.0.1.
    get(&app, "/v1/verify", &outside).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &exact).await.ok();
    get(&app, "/v1/verify", &mixed).await.ok();
    get(&app, "/v1/verify", &v6_only).await.err(403, "ip_not_allowed");
    // Not trusted by default: a forged header cannot buy a way in.
    get_via(&app, "/v1/verify", &outside, "10.1.2.3").await.err(403, "ip_not_allowed");
    get_via(&app, "/v1/verify", &v6_only, "::1").await.err(403, "ip_not_allowed");
    // Nor lock a legitimate caller out.
    get_via(&app, "/v1/verify", &exact, "203.0.113.9").await.ok();
}

#[tokio::test]
async fn a_caller_on_ipv6_loopback_is_matched_against_v6_entries() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let env = vec![("GUILDKEY_HTTP_BIND".to_owned(), "[::1]:0".to_owned())];
    let app =
        spawn_app_with(Options { env, config: "[keys]\nmax_per_guild = 10\n".into(), ..Options::default() }).await;
    assert!(app.base.contains("[::1]"), "bound to {}", app.base);
    let exact = app.create_key(DEMO, "exact", "bans.read", &["--allowed-ips", "::1"]);
    let cidr = app.create_key(DEMO, "cidr", "bans.read", &["--allowed-ips", "::/127"]);
    let elsewhere = app.create_key(DEMO, "elsewhere", "bans.read", &["--allowed-ips", "2001:db8::/32"]);
    let v4 = app.create_key(DEMO, "v4", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let_the_listener_catch_up().await;

    get(&app, "/v1/verify", &exact).await.ok();
    get(&app, "/v1/verify", &cidr).await.ok();
    get(&app, "/v1/verify", &elsewhere).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &v4).await.err(403, "ip_not_allowed");
}

#[tokio::test]
async fn with_trust_forwarded_for_the_right_most_forwarded_address_is_the_client() {
    // Without http.trusted_proxies: any peer's header, as before the key existed.
    let config = "[http]\ntrust_forwarded_for = true\n[keys]\nmax_per_guild = 10\n";
    let app = spawn_app_with(Options { config: config.into(), ..Options::default() }).await;
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let v6 = app.create_key(DEMO, "v6", "bans.read", &["--allowed-ips", "2001:db8::/32, ::1"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1/32"]);
    let_the_listener_catch_up().await;

    let cases = [
        (&office, "203.0.113.7", 200),
        (&office, "198.51.100.1, 203.0.113.7", 200),
        (&office, "203.0.113.7, 198.51.100.1", 403),
        (&office, "198.51.100.1", 403),
        (&v6, "2001:db8::42", 200),
        (&v6, "::1", 200),
        (&v6, "2001:db9::1", 403),
        (&v6, "127.0.0.1", 403),
        (&loopback, "::ffff:127.0.0.1", 200),
        (&loopback, "10.0.0.1", 403),
        // Only the right-most entry counts, even when it is not an address:
        // a forged entry to its left never stands in for it.
        (&office, "203.0.113.7, unknown", 403),
        (&office, "203.0.113.7, ", 403),
        (&loopback, "10.0.0.1, garbage", 200),
        (&office, "203.0.113.7:4711", 200),
    ];
    for (token, forwarded, want) in cases {
        let reply = get_via(&app, "/v1/verify", token, forwarded).await;
        assert_eq!(reply.status, want, "X-Forwarded-For: {forwarded} for {}: {}", &token[..12], reply.text);
        if want == 403 {
            reply.err(403, "ip_not_allowed");
        }
    }
    // Without the header the socket address counts.
    get(&app, "/v1/verify", &office).await.err(403, "ip_not_allowed");
    get(&app, "/v1/verify", &loopback).await.ok();
}

#[tokio::test]
async fn forwarding_without_trusted_proxies_warns_at_start() {
    let app =
        spawn_app_with(Options { config: "[http]\ntrust_forwarded_for = true\n".into(), ..Options::default() }).await;
    let warned = app.logs().iter().any(|l| l.contains("WARN") && l.contains("http.trusted_proxies is empty"));
    assert!(warned, "no warning at start:\n{}", app.logs().join("\n"));
}

#[tokio::test]
async fn with_trusted_proxies_only_they_may_set_the_client_ip() {
    // The test talks from 127.0.0.1: first not a trusted proxy, then one.
    let elsewhere = "[http]\ntrust_forwarded_for = true\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n";
    let app = spawn_app_with(Options { config: elsewhere.into(), ..Options::default() }).await;
    assert!(!app.logs().iter().any(|l| l.contains("http.trusted_proxies is empty")), "no warning with proxies set");
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let_the_listener_catch_up().await;
    // A peer outside the list cannot claim an address...
    get_via(&app, "/v1/verify", &office, "203.0.113.7").await.err(403, "ip_not_allowed");
    get_via(&app, "/v1/verify", &loopback, "203.0.113.7").await.ok();
    // ...nor escape the failure throttle by claiming a new one each time
    // (the office key's refusal above counted towards it too).
    for i in 0..AUTH_FAILURE_BURST - 1 {
        get_via(&app, "/v1/verify", &unknown_token(), &format!("198.51.100.{i}")).await.err(401, "invalid_key");
    }
    get_via(&app, "/v1/verify", &unknown_token(), "198.51.100.200").await.err(429, "rate_limited");
    drop(app);

    // From the environment: loopback is a trusted proxy, and so is 10.0.0.0/8 in front of it.
    let env = vec![("GUILDKEY_HTTP_TRUSTED_PROXIES".to_owned(), "127.0.0.1/32, 10.0.0.0/8".to_owned())];
    let config = "[http]\ntrust_forwarded_for = true\n[keys]\nmax_per_guild = 10\n";
    let app = spawn_app_with(Options { config: config.into(), env, ..Options::default() }).await;
    assert!(!app.logs().iter().any(|l| l.contains("http.trusted_proxies is empty")), "no warning with proxies set");
    let office = app.create_key(DEMO, "office", "bans.read", &["--allowed-ips", "203.0.113.7"]);
    let loopback = app.create_key(DEMO, "loopback", "bans.read", &["--allowed-ips", "127.0.0.1"]);
    let inner = app.create_key(DEMO, "inner", "bans.read", &["--allowed-ips", "10.1.1.1"]);
    let_the_listener_catch_up().await;
    for (token, forwarded, want) in [
        (&office, "203.0.113.7", 200),
        (&office, "198.51.100.1, 203.0.113.7", 200),
        // Trusted hops to the right of the client are skipped...
        (&office, "198.51.100.1, 203.0.113.7, 10.2.2.2, 127.0.0.1", 200),
        // ...but never an untrusted one.
        (&office, "203.0.113.7, 198.51.100.1", 403),
        // Every entry a trusted proxy: the left-most one is the client.
        (&inner, "10.1.1.1, 10.2.2.2", 200),
        // An entry that is not an address: the last address read counts.
        (&office, "203.0.113.7, unknown", 403),
        (&loopback, "203.0.113.7, unknown", 200),
    ] {
        let reply = get_via(&app, "/v1/verify", token, forwarded).await;
        assert_eq!(reply.status, want, "X-Forwarded-For: {forwarded} for {}: {}", &token[..12], reply.text);
    }
    get(&app, "/v1/verify", &loopback).await.ok();
}
