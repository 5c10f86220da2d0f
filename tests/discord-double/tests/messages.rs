//! Discord's rules for message bodies (resources/message.mdx, "Embed Limits") and for
//! interaction tokens (receiving-and-responding.mdx: valid for 15 minutes), as the double
//! enforces them.

mod common;

use std::time::Duration;

use common::{double_and_bot, Api, WAIT};
use discord_double::*;
use serde_json::{json, Value};

fn post(channel: u64) -> String {
    format!("/channels/{channel}/messages")
}

/// One embed whose counted texts add up to `n` characters (title 100, the rest description).
fn embed_of(n: usize, fill: &str) -> Value {
    json!({"title": "t".repeat(100), "description": fill.repeat(n - 100)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_thousand_characters_over_all_embeds_pass_and_one_more_is_refused() {
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let api = Api::new(&double, "test");

    let (s, _) = api
        .call("POST", &post(AUDIT_LOG_CHANNEL_ID), Some(json!({"embeds": [embed_of(3000, "d"), embed_of(3000, "d")]})))
        .await;
    assert_eq!(s, 200, "6,000 is within the limit");

    // Each embed alone is under 6,000 (serenity's own check passes it): the sum is refused.
    let (s, body) = api
        .call("POST", &post(AUDIT_LOG_CHANNEL_ID), Some(json!({"embeds": [embed_of(3000, "d"), embed_of(3001, "d")]})))
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["code"], 50035, "{body}");
    assert_eq!(body["errors"]["embeds"]["_errors"][0]["code"], "MAX_EMBED_SIZE_EXCEEDED", "{body}");

    // Characters are code points: 😀 is one (two UTF-16 units), so 6,000 of them pass.
    let emoji = json!({"embeds": [embed_of(3000, "😀"), embed_of(3000, "😀")]});
    assert_eq!(api.call("POST", &post(AUDIT_LOG_CHANNEL_ID), Some(emoji)).await.0, 200);
    // Leading and trailing whitespace is not counted.
    let padded = json!({"embeds": [embed_of(3000, "d"), {"title": "t".repeat(100), "description": format!("   {}\n\n", "d".repeat(2900))}]});
    assert_eq!(api.call("POST", &post(AUDIT_LOG_CHANNEL_ID), Some(padded)).await.0, 200);
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_with_a_blank_name_or_value_is_refused() {
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let api = Api::new(&double, "test");
    for (name, value, bad) in [("Reported by", "", "value"), ("Reported by", "  \n ", "value"), (" ", "x", "name")] {
        let body = json!({"embeds": [{"title": "API key revoked", "fields": [
            {"name": "By", "value": "guildkey", "inline": true},
            {"name": name, "value": value, "inline": true},
        ]}]});
        let (s, answer) = api.call("POST", &post(AUDIT_LOG_CHANNEL_ID), Some(body)).await;
        assert_eq!(s, 400, "{name:?}/{value:?}");
        assert_eq!(answer["code"], 50035);
        assert_eq!(
            answer["errors"]["embeds"]["0"]["fields"]["1"][bad]["_errors"][0]["code"], "BASE_TYPE_REQUIRED",
            "{answer}"
        );
    }
    assert!(double.messages_in(AUDIT_LOG_CHANNEL_ID).is_empty(), "nothing was posted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interaction_token_dies_fifteen_minutes_after_the_interaction() {
    let (double, _bot) = double_and_bot().await;
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "a")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    double.wait_for_response(&sent, WAIT).await.unwrap();
    let api = Api::new(&double, "test");
    let followup = format!("/webhooks/{APPLICATION_ID}/{}", sent.token);
    let original = format!("{followup}/messages/@original");

    double.advance_clock(Duration::from_secs(14 * 60 + 50));
    assert_eq!(api.call("POST", &followup, Some(json!({"content": "at 14:50"}))).await.0, 200);
    assert_eq!(api.call("PATCH", &original, Some(json!({"content": "edited at 14:50"}))).await.0, 200);

    double.advance_clock(Duration::from_secs(11));
    for (method, path, body) in [
        ("POST", &followup, Some(json!({"content": "at 15:01"}))),
        ("PATCH", &original, Some(json!({"content": "edited at 15:01"}))),
        ("GET", &original, None),
    ] {
        let (s, answer) = api.call(method, path, body).await;
        assert_eq!((s, answer["code"].as_u64()), (401, Some(50027)), "{method} {path}: {answer}");
    }
    // Ids minted now carry the moved time.
    let id = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "b")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap()
        .id;
    let age_ms = (id >> 22) + 1_420_070_400_000;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(age_ms >= now_ms + 15 * 60 * 1000, "the snowflake is dated on the double's clock");
    double.assert_no_violations();
}
