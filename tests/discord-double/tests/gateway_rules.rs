//! The gateway's documented rules (discord-api-docs `events/gateway.mdx`,
//! `events/gateway-events.mdx`) against a real serenity client: permission-gated events, the
//! bot's own member updates, GUILD_CREATE without the presences intent, outages, 4007, and
//! Identify concurrency.

mod common;

use std::time::{Duration, Instant};

use common::*;
use discord_double::*;
use serde_json::json;
use serenity::all::{GuildId, UserId};

fn sent_events(double: &Double, name: &str) -> Vec<GatewayFrame> {
    double
        .gateway_frames()
        .into_iter()
        .filter(|f| f.direction == Direction::Sent && f.t.as_deref() == Some(name))
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < WAIT, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ban_event() -> serde_json::Value {
    json!({"guild_id": DEMO_GUILD_ID.to_string(), "user": {"id": STRANGER_ID.to_string(), "username": "stranger", "discriminator": "0", "avatar": null, "global_name": null}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_audit_log_and_automod_events_need_the_bots_permissions() {
    let (double, _bot) = double_and_bot().await;
    use permissions::*;
    let without = BOT_ROLE_PERMISSIONS & !(BAN_MEMBERS | VIEW_AUDIT_LOG);

    // Ban Members or View Audit Log: either lets ban events through.
    assert_eq!(double.dispatch("GUILD_BAN_ADD", ban_event()), 1, "the demo bot role has both");
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, without);
    assert_eq!(double.dispatch("GUILD_BAN_ADD", ban_event()), 0, "neither: not sent");
    assert_eq!(double.dispatch("GUILD_BAN_REMOVE", ban_event()), 0);
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, without | VIEW_AUDIT_LOG);
    assert_eq!(double.dispatch("GUILD_BAN_ADD", ban_event()), 1, "View Audit Log alone");
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, without | BAN_MEMBERS);
    assert_eq!(double.dispatch("GUILD_BAN_REMOVE", ban_event()), 1, "Ban Members alone");

    // The audit-log entry needs View Audit Log (Ban Members is not enough).
    assert_eq!(double.edit_member_roles(DEMO_GUILD_ID, DANA_ID, &[], ALICE_ID), 0);
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, without | VIEW_AUDIT_LOG);
    assert_eq!(double.edit_member_roles(DEMO_GUILD_ID, DANA_ID, &[VERIFIED_ROLE_ID], ALICE_ID), 1);

    // AutoMod events need Manage Server; Administrator holds it.
    let execution = json!({"guild_id": DEMO_GUILD_ID.to_string(), "action": {"type": 1}, "rule_id": "1",
        "rule_trigger_type": 1, "user_id": PAT_ID.to_string(), "content": "", "matched_keyword": null, "matched_content": null});
    assert_eq!(double.dispatch("AUTO_MODERATION_ACTION_EXECUTION", execution.clone()), 0);
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, BOT_ROLE_PERMISSIONS | MANAGE_GUILD);
    assert_eq!(double.dispatch("AUTO_MODERATION_ACTION_EXECUTION", execution.clone()), 1);
    double.set_role_permissions(DEMO_GUILD_ID, BOT_ROLE_ID, ADMINISTRATOR);
    assert_eq!(double.dispatch("AUTO_MODERATION_ACTION_EXECUTION", execution), 1);
    assert_eq!(double.dispatch("GUILD_BAN_ADD", ban_event()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bots_own_member_update_arrives_without_the_members_intent() {
    let (double, bot) = double_and_bot().await;
    let stats = double.gateway_stats();
    assert_eq!(stats.intents.unwrap() & intents::GUILD_MEMBERS, 0, "the bot has no GUILD_MEMBERS");

    // Someone else's roles: not sent. The bot's own: sent, and serenity's cache follows.
    double.edit_member_roles(DEMO_GUILD_ID, DANA_ID, &[], ALICE_ID);
    double.edit_member_roles(DEMO_GUILD_ID, BOT_USER_ID, &[BOT_ROLE_ID, VERIFIED_ROLE_ID], ALICE_ID);
    let updates = sent_events(&double, "GUILD_MEMBER_UPDATE");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].d["user"]["id"], BOT_USER_ID.to_string());
    until("the cache holds the bot's new roles", || {
        let roles = bot
            .cache
            .guild(GuildId::new(DEMO_GUILD_ID))
            .and_then(|g| g.members.get(&UserId::new(BOT_USER_ID)).map(|m| m.roles.len()));
        roles == Some(2)
    })
    .await;
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guild_create_carries_only_the_bots_member_without_the_presences_intent() {
    let (double, _bot) = double_and_bot().await;
    let creates = sent_events(&double, "GUILD_CREATE");
    let id = DEMO_GUILD_ID.to_string();
    let demo = creates.iter().find(|f| f.d["id"].as_str() == Some(id.as_str())).expect("demo GUILD_CREATE");
    let members = demo.d["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["user"]["id"], BOT_USER_ID.to_string());
    assert_eq!(demo.d["member_count"], 5, "member_count is the whole guild's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_guild_delete_unavailable_then_guild_create_on_return() {
    let (double, bot) = double_and_bot().await;
    let demo = GuildId::new(DEMO_GUILD_ID);
    assert_eq!(double.guild_outage(DEMO_GUILD_ID), 1);
    let deletes = sent_events(&double, "GUILD_DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].d, json!({"id": DEMO_GUILD_ID.to_string(), "unavailable": true}));
    until("serenity marks the guild unavailable", || {
        bot.cache.unavailable_guilds().get(&demo).is_some() && bot.cache.guild(demo).is_none()
    })
    .await;
    // Nothing about the guild is sent during the outage.
    assert_eq!(double.dispatch("GUILD_BAN_ADD", ban_event()), 0);
    assert_eq!(double.edit_member_roles(DEMO_GUILD_ID, BOT_USER_ID, &[BOT_ROLE_ID], ALICE_ID), 0);

    assert_eq!(double.guild_restored(DEMO_GUILD_ID), 1);
    until("the guild is back in the cache", || bot.cache.guild(demo).is_some()).await;
    assert!(bot.cache.unavailable_guilds().get(&demo).is_none());
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_code_4007_a_resume_gets_invalid_session_and_the_client_identifies_again() {
    let (double, _bot) = double_and_bot().await;
    let before = double.gateway_stats();
    double.close_gateway(4007, "Invalid seq.").await;
    let after = double
        .wait_for_gateway(|s| s.identifies > before.identifies && s.open >= 1, Duration::from_secs(30))
        .await
        .expect("the client identifies again");
    assert_eq!(after.resumes, before.resumes, "no resume is accepted");
    assert!(after.failed_resumes > before.failed_resumes, "serenity tried to resume: {after:?}");
    let frames = double.gateway_frames();
    assert!(frames.iter().any(|f| f.direction == Direction::Sent && f.op == 9 && f.d == json!(false)));
    double.wait_for_ready(WAIT).await.expect("ready again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identify_beyond_max_concurrency_gets_invalid_session() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.expect("double");
    // Two processes of one app identify at once with `max_concurrency` 1.
    let (_a, _b) = (start_bot(&double).await, start_bot(&double).await);
    let stats = double
        .wait_for_gateway(|s| s.refused_identifies >= 1, WAIT)
        .await
        .expect("the second Identify within 5 s is refused");
    assert_eq!(stats.identifies, 1, "{stats:?}");
    let refused = double.gateway_frames().into_iter().find(|f| f.direction == Direction::Sent && f.op == 9);
    assert_eq!(refused.expect("op 9").d, json!(false));
    // serenity identifies again after its 5 s wait, and both run.
    double
        .wait_for_gateway(|s| s.identifies >= 2 && s.open >= 2, Duration::from_secs(30))
        .await
        .expect("the refused client identifies later");
}
