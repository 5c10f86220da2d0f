//! DELETE /v1/guilds/{guild_id}/bans/{user_id}.

use super::*;

#[tokio::test]
async fn an_unban_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("earlier"));

    let data = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(false), &json!(true), &json!(false)));

    let unbans = calls(&app, "DELETE", BAN_ROUTE);
    assert_eq!(unbans.len(), 1);
    assert_eq!(unbans[0].param_u64("user_id"), Some(ids::STRANGER_ID));
    assert_eq!(unbans[0].audit_log_reason(), Some(reason_of("game", &token)));
    assert!(app.double.bans(DEMO).is_empty(), "Discord no longer has the ban");
    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1);
    assert_api_event(&events[0], "ban.removed", "game", &token, false);
    assert_eq!(events[0]["details"]["user_id"], ids::STRANGER_ID.to_string());
    assert_posted_by_key(&audit_post(&app, "Member unbanned").await, "game", &token);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn unbanning_a_user_who_is_not_banned_succeeds_with_changed_false_and_no_call() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    let data = delete(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"]), (&json!(false), &json!(false)));
    assert!(calls(&app, "DELETE", BAN_ROUTE).is_empty());
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_unban_is_a_dry_run() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, None);
    app.double.clear_recorded();

    let data = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)));
    assert!(calls(&app, "DELETE", BAN_ROUTE).is_empty(), "a dry run writes nothing");
    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID), "still banned");
    assert_api_event(&api_events(&app, &reader).await[0], "ban.removed", "staging", &token, true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_unban_needs_bans_write_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;
    let reader = key(&app, DEMO, "reader", "bans.read,guild.read,roles.write,audit.read", &[]).await;

    delete(&app, &ban_path(DEMO, ids::PAT_ID), &reader).await.err(403, "insufficient_scope");
    delete(&app, &ban_path(OTHER, ids::PAT_ID), &token).await.err(403, "guild_mismatch");
    delete(&app, &format!("/v1/guilds/{DEMO}/bans/-1"), &token).await.err(400, "bad_request");
    assert_no_writes(&app);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_refusing_an_unban_is_a_502_with_its_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, None);

    app.double.fault(FaultRule::on("DELETE", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message = delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();
    app.double.fault(FaultRule::on("DELETE", BAN_ROUTE).status(500));
    delete(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.err(502, "discord_error");
    app.double.clear_faults();

    assert!(app.double.bans(DEMO).contains_key(&ids::STRANGER_ID), "still banned");
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for an unban that did not happen");
    app.double.assert_no_violations();
}
