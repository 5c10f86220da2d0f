//! End-to-end: a real serenity 0.12 client with a poise 0.7 framework against the double —
//! READY and cache, command registration, slash command with an ephemeral reply, button
//! round trip through a component collector, autocomplete — all with zero violations.

mod common;

use std::time::Duration;

use common::{double_and_bot, WAIT};
use discord_double::*;
use poise::serenity_prelude as serenity;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serenity_connects_registers_and_answers_ephemerally() {
    let (double, bot) = double_and_bot().await;

    // READY + GUILD_CREATE reached serenity's cache.
    for _ in 0..100 {
        if bot.cache.guild(serenity::GuildId::new(OTHER_GUILD_ID)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let guild = bot
        .cache
        .guild(serenity::GuildId::new(DEMO_GUILD_ID))
        .map(|g| (g.name.clone(), g.channels.len(), g.roles.len(), g.members.len()))
        .expect("demo guild in serenity's cache");
    assert_eq!(guild, ("Demo Guild".to_string(), 2, 5, 1), "members: only the bot without GUILD_PRESENCES");
    assert!(bot.cache.guild(serenity::GuildId::new(OTHER_GUILD_ID)).is_some());
    assert_eq!(bot.cache.current_user().id.get(), BOT_USER_ID);

    // poise asked for the application and registered /apikey globally.
    assert!(!double.calls_to("GET", "/oauth2/applications/@me").is_empty());
    let put = double.calls_to("PUT", "/applications/{application_id}/commands");
    assert_eq!(put.len(), 1, "one bulk overwrite");
    let body = put[0].body.clone().expect("body");
    assert_eq!(body[0]["name"], "apikey");
    assert_eq!(body[0]["default_member_permissions"], "32");
    assert!(put[0].headers["authorization"].starts_with("Bot "));

    // A slash command with a subcommand, options and a resolved channel.
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "game")
        .string("scopes", "bans.read")
        .channel("channel", AUDIT_LOG_CHANNEL_ID)
        .send()
        .await
        .expect("sent");
    let reply = double.wait_for_response(&sent, WAIT).await.expect("reply");
    assert_eq!(reply.callback_type, 4);
    assert!(reply.ephemeral(), "flags: {}", reply.flags);
    assert_eq!(reply.content, "created game with bans.read in #audit-log");

    // The recorder has the callback with flags 64.
    let callback = double
        .wait_for_call(|c| c.is("POST", "/interactions/{interaction_id}/{interaction_token}/callback"), WAIT)
        .await
        .unwrap();
    assert_eq!(callback.operation_id.as_deref(), Some("create_interaction_response"));
    assert_eq!(callback.status, 204);
    let body = callback.body.unwrap();
    assert_eq!(body["type"], 4);
    assert_eq!(body["data"]["flags"].as_u64().unwrap() & 64, 64);
    assert_eq!(callback.params["interaction_id"], sent.id.to_string());

    // Ephemeral replies are not channel messages.
    assert!(double.messages_in(GENERAL_CHANNEL_ID).is_empty());
    double.assert_no_violations();
    assert!(double.validating() || std::env::var("CI").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_payload_deserializes_in_serenity() {
    let (double, _bot) = double_and_bot().await;
    let sent = double
        .slash(DEMO_GUILD_ID, MORGAN_ID)
        .subcommand("apikey", "create")
        .string("name", "x")
        .string("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    double.wait_for_response(&sent, WAIT).await.unwrap();
    let ac = double
        .autocomplete(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "x")
        .focused("scopes", "bans")
        .send()
        .await
        .unwrap();
    double.wait_for_response(&ac, WAIT).await.unwrap();
    double.dispatch(
        "GUILD_BAN_ADD",
        json!({"guild_id": DEMO_GUILD_ID.to_string(), "user": {"id": PAT_ID.to_string(), "username": "pat", "discriminator": "0", "global_name": "pat", "avatar": null}}),
    );

    let frames: Vec<GatewayFrame> =
        double.gateway_frames().into_iter().filter(|f| f.direction == Direction::Sent).collect();
    let mut names = Vec::new();
    for f in &frames {
        let raw = json!({"op": f.op, "d": f.d, "s": f.s, "t": f.t});
        let event: serenity::GatewayEvent =
            serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("serenity cannot read {raw}: {e}"));
        if let serenity::GatewayEvent::Dispatch(_, ev) = &event {
            let name = ev.name().unwrap_or_else(|| {
                panic!(
                    "serenity reads {} as an unknown event (a required field is missing): {raw:.600}",
                    f.t.as_deref().unwrap_or("?")
                )
            });
            names.push(name);
        }
    }
    for expected in ["READY", "GUILD_CREATE", "INTERACTION_CREATE", "GUILD_BAN_ADD"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    // Sequence numbers increase by one per dispatch.
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f.s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The interaction as serenity sees it.
    let interaction = frames.iter().find(|f| f.t.as_deref() == Some("INTERACTION_CREATE")).unwrap();
    let parsed: serenity::Interaction = serde_json::from_value(interaction.d.clone()).unwrap();
    let cmd = parsed.command().expect("application command");
    assert_eq!(cmd.data.name, "apikey");
    assert_eq!(cmd.user.id.get(), MORGAN_ID);
    let perms = cmd.member.as_ref().unwrap().permissions.unwrap();
    assert!(perms.manage_guild() && !perms.administrator());
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn button_click_reaches_the_collector_and_the_bot_edits_the_message() {
    let (double, _bot) = double_and_bot().await;
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "revoke")
        .string("key", "game")
        .send()
        .await
        .unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert!(reply.ephemeral());
    assert_eq!(reply.content, "Revoke game?");
    assert_eq!(reply.custom_ids(), vec!["revoke:confirm", "revoke:cancel"]);
    let message_id = reply.message_id.expect("message id");

    // The bot fetches @original to learn the message id, then starts its collector.
    double
        .wait_for_call(|c| c.is("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"), WAIT)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let click = double.click(DEMO_GUILD_ID, ALICE_ID, message_id, "revoke:confirm").await.unwrap();

    let ack = double.wait_for_response(&click, WAIT).await.unwrap();
    assert_eq!(ack.callback_type, 6, "deferred update");
    let edited = double.wait_for_response_matching(&sent, |r| r.content == "Revoked game", WAIT).await.unwrap();
    assert!(edited.edited);
    assert!(edited.components.is_empty(), "buttons removed");
    assert!(edited.ephemeral());
    let patch = double.calls_to("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original");
    assert_eq!(patch.len(), 1, "{:#?}", double.calls().iter().map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(patch[0].params["webhook_token"], sent.token);

    // The buttons are gone, so they cannot be clicked again.
    assert!(double.click(DEMO_GUILD_ID, ALICE_ID, message_id, "revoke:confirm").await.is_err());
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocomplete_round_trip() {
    let (double, _bot) = double_and_bot().await;
    let sent = double
        .autocomplete(DEMO_GUILD_ID, MORGAN_ID)
        .subcommand("apikey", "create")
        .string("name", "game")
        .focused("scopes", "bans")
        .send()
        .await
        .unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert_eq!(reply.callback_type, 8);
    assert_eq!(reply.choice_names(), vec!["bans.read", "bans.write"]);
    assert_eq!(reply.choice_values(), vec!["bans.read", "bans.write"]);
    assert!(reply.message_id.is_none());
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_reply_channel_post_role_and_ban_with_audit_reason() {
    let (double, _bot) = double_and_bot().await;

    // Deferred ephemeral reply + an embed posted to #audit-log.
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "audit")
        .channel("channel", AUDIT_LOG_CHANNEL_ID)
        .send()
        .await
        .unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert_eq!(reply.callback_type, 5);
    assert!(reply.ephemeral());
    let posts = double.messages_in(AUDIT_LOG_CHANNEL_ID);
    assert_eq!(posts.len(), 1);
    assert_eq!(reply.content, format!("posted {}", posts[0].id));
    assert_eq!(posts[0].embeds[0]["title"], "Key created");
    assert!(posts[0].text().contains("Key: game (gk_live_ab12)"));

    // Role below the bot's: assigned, with the reason header.
    let sent =
        double.slash(DEMO_GUILD_ID, ALICE_ID).subcommand("apikey", "verify").user("user", PAT_ID).send().await.unwrap();
    assert_eq!(double.wait_for_response(&sent, WAIT).await.unwrap().content, "verified");
    assert_eq!(double.member_roles(DEMO_GUILD_ID, PAT_ID), vec![VERIFIED_ROLE_ID]);
    let put = double.calls_to("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}");
    assert_eq!(put[0].audit_log_reason().as_deref(), Some("API key game (gk_live_ab12)"));

    // Ban: the reason is percent-encoded on the wire and decoded in the state.
    let sent =
        double.slash(DEMO_GUILD_ID, ALICE_ID).subcommand("apikey", "ban").user("user", PAT_ID).send().await.unwrap();
    assert_eq!(double.wait_for_response(&sent, WAIT).await.unwrap().content, "banned");
    assert_eq!(double.bans(DEMO_GUILD_ID).get(&PAT_ID), Some(&Some("spam ✓".to_string())));
    assert!(!double.is_member(DEMO_GUILD_ID, PAT_ID));

    // The owner outranks the bot: Discord answers 403 50013.
    let sent =
        double.slash(DEMO_GUILD_ID, ALICE_ID).subcommand("apikey", "ban").user("user", ALICE_ID).send().await.unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert!(reply.content.starts_with("failed"), "{}", reply.content);
    let last = double.calls_to("PUT", "/guilds/{guild_id}/bans/{user_id}").pop().unwrap();
    assert_eq!(last.status, 403);
    assert_eq!(last.response.unwrap()["code"], 50013);
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_must_exist_before_use() {
    let (double, _bot) = double_and_bot().await;
    let err = double.slash(DEMO_GUILD_ID, ALICE_ID).subcommand("apikey", "nope").send().await.unwrap_err();
    assert!(err.to_string().contains("no subcommand"), "{err}");
    let err = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "x")
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("requires option `scopes`"), "{err}");
    let err = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .command("other")
        .registration_wait(Duration::from_millis(50))
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    let registered: Value = double.registered_commands(None)[0].clone();
    assert_eq!(registered["contexts"], json!([0]), "poise's guild_only");
    assert!(double.calls().iter().all(|c| c.status != 404), "nothing was sent");
}
