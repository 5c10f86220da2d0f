//! Discord's rate limits as documented (`topics/rate-limits.mdx`): per-route buckets kept per
//! top-level resource with Discord's headers, the global 50 a second that interaction
//! endpoints are exempt from, 429 bodies and scopes; and the double over TLS as discord.com.

use std::time::Duration;

use discord_double::*;
use serde_json::Value;

const AUTH: &str = "Bot test-token";

async fn get(double: &Double, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", double.api_url()))
        .header("authorization", AUTH)
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn route_buckets_count_per_resource_with_discords_headers() {
    let mut cfg = DoubleConfig::demo();
    cfg.rate_limits = RateLimitConfig::off().with_route("GET", "/guilds/{guild_id}", 2, Duration::from_millis(1500));
    let double = Double::start(cfg).await.unwrap();
    let demo = format!("/guilds/{DEMO_GUILD_ID}");

    let first = get(&double, &demo).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("1"));
    let reset_after: f64 = header(&first, "x-ratelimit-reset-after").unwrap().parse().unwrap();
    assert!(reset_after > 0.0 && reset_after <= 1.5, "{reset_after}");
    let reset: f64 = header(&first, "x-ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((reset - now - reset_after).abs() < 1.0, "reset {reset} is epoch seconds");
    let bucket = header(&first, "x-ratelimit-bucket").unwrap().to_owned();
    assert!(header(&first, "x-ratelimit-scope").is_none(), "Scope comes only on 429s");

    let second = get(&double, &demo).await;
    assert_eq!(header(&second, "x-ratelimit-remaining"), Some("0"));
    let limited = get(&double, &demo).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "x-ratelimit-scope"), Some("user"));
    assert_eq!(header(&limited, "x-ratelimit-bucket"), Some(bucket.as_str()));
    assert!(header(&limited, "x-ratelimit-global").is_none());
    let retry_header: u64 = header(&limited, "retry-after").unwrap().parse().unwrap();
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["global"], false);
    assert_eq!(body["message"], "You are being rate limited.");
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 1.5 && retry_header as f64 >= retry_after, "{body}");

    // Another guild is another bucket (guild_id is a top-level resource), with the same id.
    let other = get(&double, &format!("/guilds/{OTHER_GUILD_ID}")).await;
    assert_eq!(other.status(), 200);
    assert_eq!(header(&other, "x-ratelimit-bucket"), Some(bucket.as_str()));

    // After the window the bucket is full again.
    tokio::time::sleep(Duration::from_secs_f64(retry_after + 0.05)).await;
    let again = get(&double, &demo).await;
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "x-ratelimit-remaining"), Some("1"));
    double.assert_no_violations();
}

#[tokio::test]
async fn the_global_limit_refuses_with_global_true_and_spares_interaction_endpoints() {
    let mut cfg = DoubleConfig::demo();
    cfg.rate_limits = RateLimitConfig { global_per_second: Some(5), ..RateLimitConfig::off() };
    let double = Double::start(cfg).await.unwrap();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = get(&double, "/users/@me").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            limited = Some(r);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "50/s in Discord, 5/s here");
    let limited = limited.unwrap();
    assert_eq!(header(&limited, "x-ratelimit-global"), Some("true"));
    assert_eq!(header(&limited, "x-ratelimit-scope"), Some("global"));
    assert!(header(&limited, "retry-after").is_some());
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["global"], true);
    assert!(body["retry_after"].as_f64().unwrap() <= 1.0);

    // Interaction endpoints are not bound to the global limit: not a 429 (an unknown
    // interaction is 404 10062).
    let callback = reqwest::Client::new()
        .post(format!("{}/interactions/1/token/callback", double.api_url()))
        .json(&serde_json::json!({"type": 1}))
        .send()
        .await
        .unwrap();
    assert_ne!(callback.status(), 429);

    // Another token has its own global limit.
    let other = reqwest::Client::new()
        .get(format!("{}/users/@me", double.api_url()))
        .header("authorization", "Bot another-token")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn default_limits_are_real_but_generous() {
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    for _ in 0..40 {
        assert_eq!(get(&double, &format!("/guilds/{DEMO_GUILD_ID}")).await.status(), 200);
    }
    let r = get(&double, &format!("/guilds/{DEMO_GUILD_ID}")).await;
    assert_eq!(header(&r, "x-ratelimit-limit"), Some("50"));
    assert!(header(&r, "x-ratelimit-remaining").unwrap().parse::<u32>().unwrap() <= 9);
    let defaults = RateLimitConfig::default();
    assert_eq!(defaults.global_per_second, Some(50), "Discord's documented global limit");
}

#[tokio::test]
async fn forced_429s_carry_the_scope_asked_for() {
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    double.fault(FaultRule::on("GET", "/guilds/{guild_id}").shared_rate_limited(3.5).once());
    let shared = get(&double, &format!("/guilds/{DEMO_GUILD_ID}")).await;
    assert_eq!(shared.status(), 429);
    assert_eq!(header(&shared, "x-ratelimit-scope"), Some("shared"));
    assert_eq!(header(&shared, "retry-after"), Some("4"));
    assert!(header(&shared, "x-ratelimit-bucket").is_some(), "the route's headers come too");
    let body: Value = shared.json().await.unwrap();
    assert_eq!(body["message"], "The resource is being rate limited.");
    assert_eq!(body["retry_after"], 3.5);

    double.fault(FaultRule::on("GET", "/guilds/{guild_id}").rate_limited(10.0, false).once());
    let user = get(&double, &format!("/guilds/{DEMO_GUILD_ID}")).await;
    assert_eq!(header(&user, "x-ratelimit-scope"), Some("user"));
    assert_eq!(header(&user, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&user, "retry-after"), Some("10"));
}

#[tokio::test]
async fn served_over_tls_as_discord_com() {
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls::CA_PEM).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .resolve("discord.com", double.tls_addr())
        .build()
        .unwrap();
    let r = client.get("https://discord.com/api/v10/gateway").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["url"], double.gateway_url());

    // Without the test CA the certificate is refused.
    let stranger =
        reqwest::Client::builder().use_rustls_tls().resolve("discord.com", double.tls_addr()).build().unwrap();
    assert!(stranger.get("https://discord.com/api/v10/gateway").send().await.is_err());
}

#[tokio::test]
async fn ban_lists_page_ascending_up_to_1000_and_their_route_takes_its_own_rate() {
    let mut cfg = DoubleConfig::demo();
    cfg.rate_limits = RateLimitConfig::off().with_route("GET", "/guilds/{guild_id}/bans", 3, Duration::from_secs(1));
    let double = Double::start(cfg).await.unwrap();
    let first = 1_500_000_000_000_000_000u64;
    double.seed_bans(DEMO_GUILD_ID, first, 2_500, 2);
    assert_eq!(double.bans(DEMO_GUILD_ID).len(), 2_500);
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array().unwrap().iter().map(|b| b["user"]["id"].as_str().unwrap().parse().unwrap()).collect()
    };

    let page = get(&double, &format!("/guilds/{DEMO_GUILD_ID}/bans")).await;
    assert_eq!(header(&page, "x-ratelimit-limit"), Some("3"));
    assert_eq!(header(&page, "x-ratelimit-remaining"), Some("2"));
    let body: Value = page.json().await.unwrap();
    assert_eq!(ids(&body), (0..1000).map(|i| first + i * 2).collect::<Vec<_>>(), "1,000 by default, ascending");
    assert_eq!(body[0]["reason"], "seeded");
    let after = first + 999 * 2;
    let body: Value =
        get(&double, &format!("/guilds/{DEMO_GUILD_ID}/bans?after={after}&limit=1000")).await.json().await.unwrap();
    assert_eq!(ids(&body).first(), Some(&(first + 2000)));
    let body: Value = get(&double, &format!("/guilds/{DEMO_GUILD_ID}/bans?before={}&limit=2", first + 10))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [first + 6, first + 8], "the nearest before, ascending");
    let limited = get(&double, &format!("/guilds/{DEMO_GUILD_ID}/bans?after={after}")).await;
    assert_eq!(limited.status(), 429, "a fourth page within the second");
    assert_eq!(header(&limited, "x-ratelimit-scope"), Some("user"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let too_many = get(&double, &format!("/guilds/{DEMO_GUILD_ID}/bans?limit=1001")).await;
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.unwrap();
    assert_eq!(body["code"], 50035);
    double.assert_no_violations();
}
