//! The leak guard: a pasted key is blocked, or revoked at once.

use super::*;

async fn leak_guard(app: &App, state: &str) -> InteractionReply {
    let command = app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "leak-guard");
    // A choice option: its index, as Discord sends it.
    support::bot::answer(app, command.integer("state", if state == "on" { 0 } else { 1 })).await
}

/// Gives the bot's role Manage Server (AutoMod needs it) and waits until the
/// bot has seen the change.
async fn grant_manage_server(app: &App) {
    let with = ids::BOT_ROLE_PERMISSIONS | ids::permissions::MANAGE_GUILD;
    app.double.set_role_permissions(ids::DEMO_GUILD_ID, ids::BOT_ROLE_ID, with);
    let started = Instant::now();
    while !app.double.gateway_frames().iter().any(|f| f.t.as_deref() == Some("GUILD_ROLE_UPDATE")) {
        assert!(started.elapsed() < WAIT, "the role update was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_leak_guard_blocks_a_pasted_key_and_comes_off_again() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);

    // AutoMod needs Manage Server; without it the admin is told so.
    let refused = leak_guard(&app, "on").await;
    assert!(refused.text().contains("Manage Server"), "{}", refused.text());
    assert!(app.double.automod_rules(ids::DEMO_GUILD_ID).is_empty());

    grant_manage_server(&app).await;
    let on = leak_guard(&app, "on").await;
    assert!(on.ephemeral() && on.text().contains("Leak guard on"), "{}", on.text());
    let rules = app.double.automod_rules(ids::DEMO_GUILD_ID);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["actions"][1]["metadata"]["channel_id"], ids::AUDIT_LOG_CHANNEL_ID.to_string());
    assert!(leak_guard(&app, "on").await.text().contains("already on"));
    assert_eq!(app.double.automod_rules(ids::DEMO_GUILD_ID).len(), 1, "no second rule");

    let pasted = format!("here is the key for the game: {token} (don't share)");
    let posted =
        app.double.post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, &pasted).unwrap();
    assert!(posted.blocked && posted.message_id.is_none(), "{posted:?}");
    assert_eq!(posted.alert_message_ids.len(), 1, "AutoMod alerted the audit channel");
    let fine = app
        .double
        .post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, "gk_live_short")
        .unwrap();
    assert!(!fine.blocked, "a message without a whole key posts");
    // Without the MESSAGE_CONTENT intent guildkey cannot see the key: it still works.
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200);

    let off = leak_guard(&app, "off").await;
    assert!(off.text().contains("off"), "{}", off.text());
    assert!(app.double.automod_rules(ids::DEMO_GUILD_ID).is_empty());
    let posted =
        app.double.post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, &pasted).unwrap();
    assert!(!posted.blocked);
    app.double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("Leak guard changed"), WAIT)
        .await
        .expect("the change is audited");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn with_message_content_the_leak_guard_revokes_a_pasted_key_at_once() {
    let mut cfg = DoubleConfig::demo();
    cfg.privileged_intents = discord_double::intents::MESSAGE_CONTENT;
    let double = discord_double::Double::start(cfg).await.expect("double");
    let opts = Options { config: "[discord]\nmessage_content_intent = true\n".into(), ..Options::default() };
    let app = spawn_against(double, opts).await;
    app.set_audit_channel().await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);
    let other = secret_in(&create(&app, ids::ALICE_ID, "dashboard", "guild.read").await);
    grant_manage_server(&app).await;
    assert!(leak_guard(&app, "on").await.text().contains("Leak guard on"));

    let pasted = format!("try {token}");
    let posted =
        app.double.post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, &pasted).unwrap();
    assert!(posted.blocked);
    let started = Instant::now();
    while app.get("/v1/verify", &token).await.status() != 401 {
        assert!(started.elapsed() < WAIT, "the pasted key was never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(json(app.get("/v1/verify", &token).await).await["error"]["reason"], "key_revoked");
    assert_eq!(app.get("/v1/verify", &other).await.status(), 200, "only the pasted key");
    let post = app
        .double
        .wait_for_message(
            ids::AUDIT_LOG_CHANNEL_ID,
            |m| m.text().contains("API key revoked") && m.text().contains("leaked"),
            WAIT,
        )
        .await
        .expect("the revocation is audited");
    assert!(post.text().contains("guildkey") && post.text().contains(&token[..12]), "{}", post.text());
    assert!(!post.text().contains(&token[12..]), "never the secret");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_pasted_secret_past_its_rotation_grace_revokes_nothing() {
    // Arrange: the leak guard on, a key rotated with a 1 s grace, the grace over.
    let mut cfg = DoubleConfig::demo();
    cfg.privileged_intents = discord_double::intents::MESSAGE_CONTENT;
    let double = discord_double::Double::start(cfg).await.expect("double");
    let opts = Options { config: "[discord]\nmessage_content_intent = true\n".into(), ..Options::default() };
    let app = spawn_against(double, opts).await;
    let old = app.create_key(ids::DEMO_GUILD_ID, "game", "bans.read", &[]);
    grant_manage_server(&app).await;
    assert!(leak_guard(&app, "on").await.text().contains("Leak guard on"));
    let out = app.cli(&["keys", "rotate", &old[..12], "--grace", "1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let started = Instant::now();
    while app.get("/v1/verify", &old).await.status() != 401 || app.get("/v1/verify", &new).await.status() != 200 {
        assert!(started.elapsed() < WAIT, "the grace never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Act: the dead secret pasted; the bot logs once it has judged it.
    let pasted = format!("old {old}");
    app.double.post_user_message(ids::DEMO_GUILD_ID, ids::GENERAL_CHANNEL_ID, ids::PAT_ID, &pasted).unwrap();
    let started = Instant::now();
    while !app.logs().iter().any(|l| l.contains("the leak guard judged the keys") && l.contains("revoked=0")) {
        assert!(started.elapsed() < WAIT, "the bot never judged the pasted secret");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert: the rotated key's live secret still works.
    assert_eq!(app.get("/v1/verify", &new).await.status(), 200, "the dead secret revoked the live one");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn the_leak_guard_comes_off_after_an_admin_deleted_its_rule_by_hand_and_can_be_built_again() {
    // Arrange: the guard on, then its rule deleted in Discord's client.
    let app = spawn_app().await;
    grant_manage_server(&app).await;
    assert!(leak_guard(&app, "on").await.text().contains("Leak guard on"));
    let rules = app.double.automod_rules(ids::DEMO_GUILD_ID);
    let rule_id: u64 = rules[0]["id"].as_str().unwrap().parse().unwrap();
    assert!(app.double.delete_automod_rule_by_hand(ids::DEMO_GUILD_ID, rule_id));

    // Act: the admin turns it off (Discord answers 404 for the rule), then on again.
    let off = leak_guard(&app, "off").await;
    let on = leak_guard(&app, "on").await;

    // Assert
    assert!(off.text().contains("Leak guard off"), "a rule already gone is off: {}", off.text());
    let delete = app.double.calls_to("DELETE", "/guilds/{guild_id}/auto-moderation/rules/{rule_id}");
    assert_eq!(delete.len(), 1);
    assert_eq!(delete[0].status, 404, "Discord said the rule was unknown");
    assert!(on.text().contains("Leak guard on"), "{}", on.text());
    let rules = app.double.automod_rules(ids::DEMO_GUILD_ID);
    assert_eq!(rules.len(), 1, "a new rule: {rules:?}");
    app.double.assert_no_violations();
}
