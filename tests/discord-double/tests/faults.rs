//! Fault injection reaches the client and the recorder: 500, 429 with `retry_after`, Discord
//! error JSON, latency, counts; and gateway faults: dropped connection, op 7, op 9.

mod common;

use std::time::{Duration, Instant};

use common::{double_and_bot, http_for, init_tracing, WAIT};
use discord_double::*;
use poise::serenity_prelude as serenity;
use serde_json::json;

#[tokio::test]
async fn injected_500_and_429_reach_serenity_and_are_recorded() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let http = http_for(&double);
    let channel = serenity::ChannelId::new(AUDIT_LOG_CHANNEL_ID);
    let post = || channel.say(&http, "audit entry");

    double.fault(FaultRule::on("POST", "/channels/{channel_id}/messages").status(500).once());
    let err = post().await.unwrap_err();
    match &err {
        serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)) => {
            assert_eq!(r.status_code.as_u16(), 500);
            assert_eq!(r.error.message, "500: Internal Server Error");
        }
        other => panic!("unexpected {other:?}"),
    }
    // `once`: the next post works.
    post().await.unwrap();
    assert_eq!(double.messages_in(AUDIT_LOG_CHANNEL_ID).len(), 1);

    double.fault(FaultRule::on("POST", "/api/v10/channels/{channel_id}/messages").rate_limited(2.5, false).times(2));
    for _ in 0..2 {
        let err = post().await.unwrap_err();
        let serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)) = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(r.status_code.as_u16(), 429);
        assert_eq!(r.error.message, "You are being rate limited.");
    }
    post().await.unwrap();

    let calls = double.calls_to("POST", "/channels/{channel_id}/messages");
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![500, 200, 429, 429, 200]);
    assert!(calls[0].fault.is_some() && calls[1].fault.is_none());
    let limited = calls[2].response.clone().unwrap();
    assert_eq!(limited["retry_after"], 2.5);
    assert_eq!(limited["global"], false);
    // Faulted requests leave the state alone.
    assert_eq!(double.messages_in(AUDIT_LOG_CHANNEL_ID).len(), 2);
    // The injected bodies are valid Discord error bodies.
    double.assert_no_violations();
}

#[tokio::test]
async fn retry_after_header_discord_codes_predicates_and_latency() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/channels/{AUDIT_LOG_CHANNEL_ID}/messages", double.api_url());
    let post = || client.post(&url).header("Authorization", "Bot t").json(&json!({"content": "x"})).send();

    double.fault(FaultRule::on("POST", "/channels/{channel_id}/messages").rate_limited(1.2, true).once());
    let r = post().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["x-ratelimit-global"], "true");

    double.fault(
        FaultRule::matching(|r| {
            r.operation_id == Some("create_message") && r.body.is_some_and(|b| b["content"] == "x")
        })
        .discord_error(403, 50013, "Missing Permissions")
        .once(),
    );
    let r = post().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"code": 50013, "message": "Missing Permissions"}));

    double.fault(FaultRule::on("*", "/channels/{channel_id}/messages").latency(Duration::from_millis(300)).once());
    let t = Instant::now();
    assert_eq!(post().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    double.fault(FaultRule::on("POST", "/channels/{channel_id}/messages").status(404));
    assert_eq!(post().await.unwrap().status(), 404);
    assert_eq!(post().await.unwrap().status(), 404, "always until cleared");
    double.clear_faults();
    assert_eq!(post().await.unwrap().status(), 200);
    double.assert_no_violations();
}

#[tokio::test]
async fn real_state_errors_deleted_channel_and_denied_send() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let http = http_for(&double);
    let channel = serenity::ChannelId::new(AUDIT_LOG_CHANNEL_ID);
    double.set_bot_can_send(AUDIT_LOG_CHANNEL_ID, false);
    let err = channel.say(&http, "x").await.unwrap_err();
    assert!(err.to_string().contains("Missing Permissions"), "{err}");
    double.set_bot_can_send(AUDIT_LOG_CHANNEL_ID, true);
    double.delete_channel(AUDIT_LOG_CHANNEL_ID);
    let err = channel.say(&http, "x").await.unwrap_err();
    assert!(err.to_string().contains("Unknown Channel"), "{err}");
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_drop_and_op7_resume_and_op9_reidentifies() {
    let (double, _bot) = double_and_bot().await;
    let stats = double.gateway_stats();
    assert_eq!((stats.identifies, stats.resumes), (1, 0));

    // A dropped connection: serenity reconnects and resumes; events sent meanwhile are
    // replayed.
    double.drop_gateway().await;
    double.wait_for_gateway(|s| s.resumes == 1 && s.open == 1, WAIT).await.unwrap();
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "after-drop")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    double.wait_for_response(&sent, WAIT).await.unwrap();

    // op 7 Reconnect: resume on the same URL.
    double.send_reconnect().await;
    double.wait_for_gateway(|s| s.resumes == 2, WAIT).await.unwrap();

    // op 9 Invalid Session (not resumable): a fresh Identify and READY.
    double.send_invalid_session(false).await;
    double.wait_for_gateway(|s| s.identifies == 2, Duration::from_secs(30)).await.unwrap();
    double.wait_for_ready(WAIT).await.unwrap();
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "after-op9")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert!(reply.content.contains("after-op9"));
    let frames = double.gateway_frames();
    assert!(frames.iter().any(|f| f.direction == Direction::Sent && f.t.as_deref() == Some("RESUMED")));
    assert!(frames.iter().any(|f| f.direction == Direction::Received && f.op == 6));
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeat_ack_makes_serenity_identify_again() {
    init_tracing();
    let mut cfg = DoubleConfig::demo();
    cfg.heartbeat_interval_ms = 400;
    let double = Double::start(cfg).await.unwrap();
    let _bot = common::start_bot(&double).await;
    double.wait_for_ready(WAIT).await.unwrap();
    double.wait_for_gateway(|s| s.heartbeats >= 1, WAIT).await.unwrap();
    double.set_heartbeat_ack(false);
    double.wait_for_gateway(|s| s.identifies >= 2 || s.resumes >= 1, Duration::from_secs(30)).await.unwrap();
    double.set_heartbeat_ack(true);
    double.wait_for_ready(WAIT).await.unwrap();
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_intents_are_refused_with_4014() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let mut client = serenity::ClientBuilder::new_with_http(
        http_for(&double),
        serenity::GatewayIntents::non_privileged() | serenity::GatewayIntents::GUILD_MEMBERS,
    )
    .await
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.start()).await;
    let v = double.violations();
    assert!(v.iter().any(|v| v.message.contains("privileged intents")), "{v:#?}");
    assert_eq!(double.gateway_stats().identifies, 0);
}
