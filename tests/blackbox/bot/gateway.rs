//! The gateway as Discord runs it (the double's documented rules): events
//! gated on the bot's permissions, the bot's own member updates, outages,
//! a session ended with 4007.

use super::*;

use discord_double::GatewayStats;
use support::reply::{get, put};

/// Discord's promise the notice keeps: within 10 s of the event that shows it.
const NOTICE_WITHIN: Duration = Duration::from_secs(10);

async fn leak_guard_on(app: &App) {
    let command = app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "leak-guard");
    let on = support::bot::answer(app, command.integer("state", 0)).await;
    assert!(on.text().contains("Leak guard on"), "{}", on.text());
}

/// Sets the bot role's permissions and waits until the bot has the GUILD_ROLE_UPDATE.
async fn set_bot_role(app: &App, permissions: u64) {
    let before = role_updates(app);
    app.double.set_role_permissions(ids::DEMO_GUILD_ID, ids::BOT_ROLE_ID, permissions);
    let started = Instant::now();
    while role_updates(app) == before {
        assert!(started.elapsed() < WAIT, "the role update was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn role_updates(app: &App) -> usize {
    app.double.gateway_frames().iter().filter(|f| f.t.as_deref() == Some("GUILD_ROLE_UPDATE")).count()
}

/// Waits for an audit-channel post containing `text`, at most [`NOTICE_WITHIN`] after `since`.
async fn notice(app: &App, text: &str, since: Instant) -> String {
    let post = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains(text), NOTICE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("no audit post with {text:?}: {e}"));
    assert!(since.elapsed() <= NOTICE_WITHIN, "{text:?} took {:?}", since.elapsed());
    post.text()
}

#[tokio::test]
async fn losing_manage_server_says_leak_guard_revocation_is_off_and_regaining_it_says_it_is_back() {
    let mut cfg = DoubleConfig::demo();
    cfg.privileged_intents = discord_double::intents::MESSAGE_CONTENT;
    let double = discord_double::Double::start(cfg).await.expect("double");
    let opts = Options { config: "[discord]\nmessage_content_intent = true\n".into(), ..Options::default() };
    let app = spawn_against(double, opts).await;
    app.set_audit_channel().await;
    let with = ids::BOT_ROLE_PERMISSIONS | ids::permissions::MANAGE_GUILD;
    set_bot_role(&app, with).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    leak_guard_on(&app).await;

    // An admin takes Manage Server from the bot's role: Discord stops sending AutoMod events.
    let taken = Instant::now();
    set_bot_role(&app, ids::BOT_ROLE_PERMISSIONS).await;
    let off = notice(&app, "Leak-guard revocation is off", taken).await;
    assert!(off.contains("Manage Server") && off.contains("no longer revokes"), "{off}");
    let token = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);
    let posted = app
        .double
        .post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, &format!("key {token}"))
        .unwrap();
    assert!(posted.blocked && !posted.executions.is_empty(), "the rule still blocks: {posted:?}");
    assert!(
        !app.double.gateway_frames().iter().any(|f| f.t.as_deref() == Some("AUTO_MODERATION_ACTION_EXECUTION")),
        "Discord sends no AutoMod event to a bot without Manage Server"
    );

    let given = Instant::now();
    set_bot_role(&app, with).await;
    notice(&app, "Leak-guard revocation is back on", given).await;
    let posts = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID);
    assert_eq!(posts.iter().filter(|m| m.text().contains("Leak-guard revocation is off")).count(), 1, "said once");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn ban_events_follow_ban_members_or_view_audit_log_and_the_audit_channel_says_so() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    use ids::permissions::{BAN_MEMBERS, VIEW_AUDIT_LOG};
    let without = ids::BOT_ROLE_PERMISSIONS & !(BAN_MEMBERS | VIEW_AUDIT_LOG);

    // View Audit Log alone keeps ban events: nothing to say.
    set_bot_role(&app, without | VIEW_AUDIT_LOG).await;
    let taken = Instant::now();
    set_bot_role(&app, without).await;
    let off = notice(&app, "Ban events from Discord is off", taken).await;
    assert!(off.contains("Ban Members or View Audit Log"), "{off}");
    app.double.add_ban(ids::DEMO_GUILD_ID, ids::STRANGER_ID, Some("spam"));
    let user = serde_json::json!({"id": ids::STRANGER_ID.to_string(), "username": "stranger", "discriminator": "0", "avatar": null, "global_name": null});
    let ban = serde_json::json!({"guild_id": ids::DEMO_GUILD_ID.to_string(), "user": user});
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", ban.clone()), 0, "Discord withholds the event");

    let given = Instant::now();
    set_bot_role(&app, without | BAN_MEMBERS).await;
    notice(&app, "Ban events from Discord is back on", given).await;
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", ban), 1);
    let posts = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID);
    assert!(!posts.iter().any(|m| m.text().contains("Leak-guard revocation")), "no leak guard here");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_outage_keeps_keys_verifying_and_the_guild_known_and_the_bot_does_not_leave() {
    let app = spawn_app().await;
    let token = app.create_key(ids::DEMO_GUILD_ID, "game", "guild.read", &["--rate-limit", "1000"]);
    let started = Instant::now();
    while get(&app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let guild = format!("/v1/guilds/{}", ids::DEMO_GUILD_ID);
    assert_eq!(get(&app, &guild, &token).await.status, 200);

    assert_eq!(app.double.guild_outage(ids::DEMO_GUILD_ID), 1);
    let started = Instant::now();
    while !app.double.gateway_frames().iter().any(|f| f.t.as_deref() == Some("GUILD_DELETE")) {
        assert!(started.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(get(&app, "/v1/verify", &token).await.ok()["name"], "game", "keys keep verifying");
        let info = get(&app, &guild, &token).await;
        assert_eq!(info.ok()["name"], "Demo Guild", "the guild is still the bot's");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    app.double.guild_restored(ids::DEMO_GUILD_ID);
    let reply =
        support::bot::answer(&app, app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list"))
            .await;
    assert!(reply.all_text().contains("game"), "the key survived: {}", reply.all_text());
    assert!(
        !app.double.calls().iter().any(|c| c.method == "DELETE" && c.path.contains("/users/@me/guilds")),
        "the bot never left"
    );
    app.double.assert_no_violations();
}

#[tokio::test]
async fn after_close_code_4007_the_bot_gets_invalid_session_and_identifies_again() {
    let app = spawn_app().await;
    let before: GatewayStats = app.double.gateway_stats();
    app.double.close_gateway(4007, "Invalid seq.").await;
    let after = app
        .double
        .wait_for_gateway(|s| s.identifies > before.identifies && s.open >= 1, Duration::from_secs(30))
        .await
        .expect("the bot identifies again");
    assert_eq!(after.resumes, before.resumes, "a session ended by 4007 is not resumed");
    assert!(
        app.double.gateway_frames().iter().any(|f| f.op == 9 && f.d == serde_json::json!(false)),
        "the double answered the resume with Invalid Session"
    );
    app.double.wait_for_ready(WAIT).await.expect("ready");
    let reply =
        support::bot::answer(&app, app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list"))
            .await;
    assert!(reply.ephemeral(), "{}", reply.all_text());
}

#[tokio::test]
async fn the_bots_own_member_update_shows_a_lost_role_without_waiting() {
    let app = spawn_app().await;
    let token = app.create_key(ids::DEMO_GUILD_ID, "game", "roles.write", &["--rate-limit", "1000"]);
    let started = Instant::now();
    while get(&app, "/v1/verify", &token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An admin takes the bot's role (and with it Manage Roles) in Discord's client.
    app.double.edit_member_roles(ids::DEMO_GUILD_ID, ids::BOT_USER_ID, &[], ids::ALICE_ID);
    let started = Instant::now();
    while !app.double.gateway_frames().iter().any(|f| f.t.as_deref() == Some("GUILD_MEMBER_UPDATE")) {
        assert!(started.elapsed() < WAIT, "Discord sends the bot its own member update");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.double.clear_recorded();
    let path = format!("/v1/guilds/{}/members/{}/roles/{}", ids::DEMO_GUILD_ID, ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let reply = put(&app, &path, &token).await;
    assert!(reply.status >= 400, "{} {}", reply.status, reply.text);
    assert!(
        app.double.calls_to("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}").is_empty(),
        "refused by guildkey from its cache, not by Discord: {}",
        reply.text
    );
}
