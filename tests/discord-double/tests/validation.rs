//! The double catches what Discord would reject: request bodies that break the OpenAPI
//! request schema, its own responses that break the response schema, unknown routes, and
//! protocol rules (double acknowledgement, late acknowledgement, missing token).

mod common;

use std::time::Duration;

use common::{double_and_bot, http_for, init_tracing, WAIT};
use discord_double::*;
use poise::serenity_prelude as serenity;
use serde_json::json;
use serenity::{LightMethod, Request, Route};

async fn raw(
    http: &serenity::Http,
    method: LightMethod,
    route: Route<'_>,
    body: Option<serde_json::Value>,
) -> serenity::Result<reqwest::Response> {
    let req = Request::new(route, method).body(body.map(|b| serde_json::to_vec(&b).unwrap()));
    http.request(req).await
}

fn require_spec(double: &Double) -> bool {
    if !double.validating() {
        eprintln!("Discord's OpenAPI file is absent: skipping a validation test");
        return false;
    }
    true
}

#[tokio::test]
async fn wrong_request_body_is_a_violation() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    if !require_spec(&double) {
        return;
    }
    let http = http_for(&double);
    let channel_id = serenity::ChannelId::new(AUDIT_LOG_CHANNEL_ID);

    // A correct body passes.
    raw(&http, LightMethod::Post, Route::ChannelMessages { channel_id }, Some(json!({"content": "ok"}))).await.unwrap();
    double.assert_no_violations();

    // `embeds` must be an array: the double records the violation (and, like Discord's
    // lenient parser here, still answers).
    let _ = raw(
        &http,
        LightMethod::Post,
        Route::ChannelMessages { channel_id },
        Some(json!({"content": "x", "embeds": "not an array"})),
    )
    .await;
    let v = double.violations();
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].kind, ViolationKind::Request);
    assert_eq!(v[0].operation_id, "create_message");
    assert_eq!(v[0].instance_path, "/embeds");
    assert!(v[0].schema_path.contains("MessageCreateRequest"), "{}", v[0].schema_path);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| double.assert_no_violations())).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("create_message") && text.contains("/embeds"), "{text}");

    // The documented caveat: message content is limited to 2000 characters (the spec says
    // 4000); Discord answers 400 50035.
    double.clear_recorded();
    let err = raw(
        &http,
        LightMethod::Post,
        Route::ChannelMessages { channel_id },
        Some(json!({"content": "a".repeat(2001)})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("2000"), "{err}");
    let v = double.violations();
    assert!(v.iter().any(|v| v.instance_path == "/content"), "{v:#?}");

    // Wrong interaction callback: content must be a string.
    double.clear_recorded();
    let _ = raw(
        &http,
        LightMethod::Post,
        Route::InteractionResponse { interaction_id: serenity::InteractionId::new(1), token: "t" },
        Some(json!({"type": 4, "data": {"content": 5}})),
    )
    .await;
    let v = double.violations();
    assert!(
        v.iter()
            .any(|v| v.instance_path == "/data/content" && v.schema_path.contains("IncomingWebhookInteractionRequest")),
        "{v:#?}"
    );
}

#[tokio::test]
async fn wrong_response_is_a_violation() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    if !require_spec(&double) {
        return;
    }
    let http = http_for(&double);
    // Make the double answer with a message lacking every required field.
    double.fault(
        FaultRule::on("POST", "/channels/{channel_id}/messages").respond(200, json!({"id": "1", "content": 7})).once(),
    );
    let channel_id = serenity::ChannelId::new(GENERAL_CHANNEL_ID);
    let _ = raw(&http, LightMethod::Post, Route::ChannelMessages { channel_id }, Some(json!({"content": "hi"}))).await;
    let v = double.violations();
    assert!(!v.is_empty());
    assert!(v.iter().all(|v| v.kind == ViolationKind::Response), "{v:#?}");
    assert!(v.iter().any(|v| v.message.contains("\"author\" is a required property")), "{v:#?}");
    assert!(v.iter().any(|v| v.instance_path == "/content"), "{v:#?}");

    // A status the operation does not declare is a violation too.
    double.clear_recorded();
    double.fault(FaultRule::on("GET", "/users/@me").respond(201, json!({})).once());
    let _ = http.get_current_user().await;
    let v = double.violations();
    assert!(v.iter().any(|v| v.message.contains("status 201 is not declared")), "{v:#?}");
}

#[tokio::test]
async fn unknown_routes_and_missing_auth_are_violations() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let client = reqwest::Client::new();
    let auth = ("Authorization", "Bot test-token");

    let r = client.get(format!("{}/no/such/route", double.api_url())).header(auth.0, auth.1).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"code": 0, "message": "404: Not Found"}));
    let v = double.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::UnknownOperation);

    // v9 is not v10.
    let r = client.get(format!("{}/api/v9/users/@me", double.base_url())).header(auth.0, auth.1).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // No token.
    let r = client.get(format!("{}/users/@me", double.api_url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(double.violations().len(), 3);
    let calls = double.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].operation_id.as_deref(), Some("get_my_user"));
    assert_eq!(calls[2].route.as_deref(), Some("/users/@me"));

    // Known Discord errors.
    let r = client
        .get(format!("{}/guilds/{DEMO_GUILD_ID}/bans/{PAT_ID}", double.api_url()))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"code": 10026, "message": "Unknown Ban"}));
    let r = client.get(format!("{}/channels/42", double.api_url())).header(auth.0, auth.1).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 10003);
    let r = client
        .put(format!("{}/guilds/{DEMO_GUILD_ID}/members/{PAT_ID}/roles/{ADMIN_ROLE_ID}", double.api_url()))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the Admin role is above the bot's role");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 50013);
    let r = client
        .put(format!("{}/guilds/{DEMO_GUILD_ID}/members/{PAT_ID}/roles/42", double.api_url()))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 10011);
    let r = client
        .get(format!("{}/guilds/{DEMO_GUILD_ID}/members/42", double.api_url()))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 10007);
    let r = client.get(format!("{}/guilds/42", double.api_url())).header(auth.0, auth.1).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 10004);
    assert_eq!(double.violations().len(), 3, "Discord errors are not violations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_twice_or_late_is_refused() {
    let (double, bot) = double_and_bot().await;
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "a")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    double.wait_for_response(&sent, WAIT).await.unwrap();
    double.assert_no_violations();

    // A second callback: 400 40060.
    let err = raw(
        &bot.http,
        LightMethod::Post,
        Route::InteractionResponse { interaction_id: serenity::InteractionId::new(sent.id), token: &sent.token },
        Some(json!({"type": 4, "data": {"content": "again"}})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already been acknowledged"), "{err}");
    let v = double.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::Protocol);

    // A late first callback: 404 10062 Unknown interaction.
    let mut cfg = DoubleConfig::demo();
    cfg.interaction_ack_deadline = Duration::from_millis(1);
    let late = Double::start(cfg).await.unwrap();
    let _bot2 = common::start_bot(&late).await;
    late.wait_for_ready(WAIT).await.unwrap();
    late.wait_for_command(None, "apikey", WAIT).await.unwrap();
    let sent = late
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "a")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    let call =
        late.wait_for_call(|c| c.operation_id.as_deref() == Some("create_interaction_response"), WAIT).await.unwrap();
    assert_eq!(call.status, 404);
    assert_eq!(call.response.unwrap()["code"], 10062);
    assert!(late.interaction_response(&sent).is_none());
    assert!(late.violations().iter().any(|v| v.schema_path == "interaction-ack-deadline"));
}
