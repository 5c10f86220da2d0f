//! PUT|DELETE /v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}.

use super::*;

#[tokio::test]
async fn adding_a_role_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!(
        data,
        json!({ "user_id": ids::PAT_ID.to_string(), "role_id": ids::VERIFIED_ROLE_ID.to_string(), "has_role": true,
            "changed": true, "dry_run": false, "audit_event_id": data["audit_event_id"] })
    );
    assert!(data["audit_event_id"].is_i64());

    let adds = calls(&app, "PUT", ROLE_ROUTE);
    assert_eq!(adds.len(), 1);
    assert_eq!(
        (adds[0].param_u64("guild_id"), adds[0].param_u64("user_id"), adds[0].param_u64("role_id")),
        (Some(DEMO), Some(ids::PAT_ID), Some(ids::VERIFIED_ROLE_ID))
    );
    assert_eq!(adds[0].audit_log_reason(), Some(reason_of("verifier", &token)));
    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID]);

    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1);
    assert_api_event(&events[0], "role.added", "verifier", &token, false);
    assert_eq!(
        events[0]["details"],
        json!({ "user_id": ids::PAT_ID.to_string(), "role_id": ids::VERIFIED_ROLE_ID.to_string() })
    );
    let post = audit_post(&app, "Role added").await;
    assert_posted_by_key(&post, "verifier", &token);
    assert!(field(&post, "Role").contains(&ids::VERIFIED_ROLE_ID.to_string()));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn removing_a_role_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = delete(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"], &data["dry_run"]), (&json!(false), &json!(true), &json!(false)));

    let removes = calls(&app, "DELETE", ROLE_ROUTE);
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0].param_u64("user_id"), Some(ids::DANA_ID));
    assert_eq!(removes[0].audit_log_reason(), Some(reason_of("verifier", &token)));
    assert!(app.double.member_roles(DEMO, ids::DANA_ID).is_empty());
    assert_api_event(&api_events(&app, &reader).await[0], "role.removed", "verifier", &token, false);
    assert_posted_by_key(&audit_post(&app, "Role removed").await, "verifier", &token);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn adding_a_held_role_or_removing_an_absent_one_succeeds_with_changed_false_and_no_write() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    let data = put(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"]), (&json!(true), &json!(false)));
    let data = delete(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!((&data["has_role"], &data["changed"]), (&json!(false), &json!(false)));

    assert_no_writes(&app);
    assert_eq!(calls(&app, "GET", MEMBER_ROUTE).len(), 2, "each looked at the member's roles");
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_role_changes_are_dry_runs() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "roles.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.clear_recorded();

    for (path, add, action) in [
        (role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), true, "role.added"),
        (role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), false, "role.removed"),
    ] {
        let reply = if add { put(&app, &path, &token).await } else { delete(&app, &path, &token).await };
        let data = reply.ok();
        assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)), "{action}");
        assert_api_event(&api_events(&app, &reader).await[0], action, "staging", &token, true);
    }
    assert!(app.double.calls().iter().all(|c| c.method == "GET" || !c.path.contains("/members/")), "no write");
    assert!(app.double.member_roles(DEMO, ids::PAT_ID).is_empty());
    assert_eq!(app.double.member_roles(DEMO, ids::DANA_ID), [ids::VERIFIED_ROLE_ID]);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn role_changes_need_roles_write_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;
    let other = key(&app, DEMO, "other", "bans.read,bans.write,guild.read,audit.read", &[]).await;
    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    put(&app, &path, &other).await.err(403, "insufficient_scope");
    delete(&app, &path, &other).await.err(403, "insufficient_scope");
    put(&app, &role_path(OTHER, ids::OSCAR_ID, ids::OTHER_ADMIN_ROLE_ID), &token).await.err(403, "guild_mismatch");
    delete(&app, &role_path(OTHER, ids::OSCAR_ID, ids::OTHER_ADMIN_ROLE_ID), &token).await.err(403, "guild_mismatch");
    for bad in [
        format!("/v1/guilds/{DEMO}/members/abc/roles/{}", ids::VERIFIED_ROLE_ID),
        format!("/v1/guilds/{DEMO}/members/{}/roles/0", ids::PAT_ID),
        format!("/v1/guilds/{DEMO}/members/{}/roles/99999999999999999999", ids::PAT_ID),
    ] {
        put(&app, &bad, &token).await.err(400, "bad_request");
        delete(&app, &bad, &token).await.err(400, "bad_request");
    }
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "refused before asking Discord");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_errors_on_role_changes_are_502s_with_discords_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;

    // Unknown Member: a user who is in no guild.
    for reply in [
        put(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token).await,
        delete(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token).await,
    ] {
        let message = reply.err(502, "discord_error").message();
        assert!(message.contains("Unknown Member") && message.contains("10007"), "{message}");
    }
    // A role the server does not have, adding or removing: 404 from the
    // bot's own view of the roles, without asking Discord.
    let role_writes = |app: &App| app.double.calls().into_iter().filter(|c| c.path.contains("/roles/")).count();
    let before = role_writes(&app);
    for reply in [
        put(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await,
        delete(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await,
    ] {
        let message = reply.err(404, "not_found").message();
        assert!(message.contains(&UNKNOWN_ROLE_ID.to_string()) && message.contains("does not exist"), "{message}");
    }
    assert_eq!(role_writes(&app), before, "Discord was asked about a role it does not have");
    // A role above the bot's highest role (and carrying Manage Server):
    // refused by guildkey, before Discord could say Missing Permissions.
    let message = put(&app, &role_path(DEMO, ids::PAT_ID, ids::MANAGER_ROLE_ID), &token)
        .await
        .err(403, "role_not_allowed")
        .message();
    assert!(message.contains("Manage Server"), "{message}");
    delete(&app, &role_path(DEMO, ids::MORGAN_ID, ids::MANAGER_ROLE_ID), &token).await.err(403, "role_not_allowed");
    assert!(calls(&app, "PUT", ROLE_ROUTE).is_empty() && calls(&app, "DELETE", ROLE_ROUTE).is_empty());

    // Injected: the bot lost Manage Roles; then Discord fails outright.
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message = put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token)
        .await
        .err(502, "discord_error")
        .message();
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();
    app.double.fault(FaultRule::on("*", ROLE_ROUTE).status(500));
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    delete(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error");
    app.double.clear_faults();
    // Injected Unknown Member on the write itself (the member left meanwhile).
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).discord_error(404, 10007, "Unknown Member").once());
    let message = put(&app, &role_path(DEMO, ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token)
        .await
        .err(502, "discord_error")
        .message();
    assert!(message.contains("Unknown Member"), "{message}");

    assert!(app.double.member_roles(DEMO, ids::PAT_ID).is_empty());
    assert_eq!(app.double.member_roles(DEMO, ids::DANA_ID), [ids::VERIFIED_ROLE_ID]);
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID]);
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for a change that did not happen");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_role_change_answered_429_is_retried_after_retry_after_and_succeeds() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).rate_limited(1.0, false).once());

    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    let attempts = calls(&app, "PUT", ROLE_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 204]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a 429 asking for 1 s");
    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID]);
    assert_eq!(api_events(&app, &reader).await.len(), 1);
    app.double.assert_no_violations();
}
