//! GET /v1/guilds/{guild_id}/bans/{user_id}.

use super::*;

#[tokio::test]
async fn a_ban_check_says_not_banned_on_unknown_ban_and_gives_the_reason_when_banned() {
    let app = spawn_app().await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("griefing"));
    app.double.add_ban(DEMO, ids::DANA_ID, None);

    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": false, "reason": null }));
    let data = get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": "griefing" }));
    let data = get(&app, &ban_path(DEMO, ids::DANA_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": null }));

    let checks = calls(&app, "GET", BAN_ROUTE);
    assert_eq!(checks.len(), 3, "one REST call per user");
    assert_eq!(checks[0].status, 404, "Discord answers Unknown Ban for a user who is not banned");
    assert_eq!(checks[0].response.as_ref().unwrap()["code"], 10026);
    assert_no_writes(&app);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_second_ban_check_within_the_ttl_makes_no_rest_call_and_a_later_one_does() {
    let app = spawn_app().await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;

    let first = Instant::now();
    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    // A ban made behind our back, with no gateway event: the cache may not know.
    app.double.add_ban(DEMO, ids::PAT_ID, Some("by hand"));
    for _ in 0..5 {
        assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    }
    assert!(first.elapsed() < BAN_CACHE_TTL, "the checks ran within the TTL");
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 1, "repeated checks are served from the cache");

    // Once the TTL is over the next check asks Discord again.
    tokio::time::sleep(BAN_CACHE_TTL.saturating_sub(first.elapsed()) + Duration::from_millis(100)).await;
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": "by hand" }));
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 2);
    app.double.assert_no_violations();
}

/// Polls the ban check until it says `banned`, for less than the TTL since
/// `since` (so only an invalidation can explain the change).
async fn wait_for_ban_status(app: &App, token: &str, user: u64, banned: bool, since: Instant) {
    loop {
        let data = get(app, &ban_path(DEMO, user), token).await.ok();
        if data["banned"] == banned {
            return;
        }
        assert!(
            since.elapsed() < BAN_CACHE_TTL - Duration::from_millis(500),
            "the ban check still says {data} after the gateway event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn guild_ban_add_and_remove_gateway_events_invalidate_the_cached_check() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let user = json!({ "id": ids::STRANGER_ID.to_string(), "username": "stranger", "discriminator": "0",
        "global_name": null, "avatar": null });

    let since = Instant::now();
    assert_eq!(get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok()["banned"], false);
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("raid"));
    assert_eq!(app.double.dispatch("GUILD_BAN_ADD", json!({ "guild_id": DEMO.to_string(), "user": user })), 1);
    wait_for_ban_status(&app, &token, ids::STRANGER_ID, true, since).await;

    // Unbanned by a moderator in Discord's own client: the double lifts the
    // ban and sends GUILD_BAN_REMOVE.
    let since = Instant::now();
    let unban = app
        .http
        .delete(format!("{}/guilds/{DEMO}/bans/{}", app.double.api_url(), ids::STRANGER_ID))
        .header("authorization", format!("Bot {}", support::BOT_TOKEN))
        .send()
        .await
        .expect("the double answers");
    assert_eq!(unban.status(), 204);
    wait_for_ban_status(&app, &token, ids::STRANGER_ID, false, since).await;
    app.double.assert_no_violations();
}

#[tokio::test]
async fn our_own_ban_and_unban_refresh_the_cached_check_at_once() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "moderator", "bans.read,bans.write", &[]).await;

    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["banned"], false);
    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["banned"], true, "the check right after our ban: {data}");
    delete(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["banned"], false, "the check right after our unban: {data}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_needs_bans_read_the_keys_own_guild_and_snowflakes() {
    let app = spawn_app().await;
    let reader = key(&app, DEMO, "reader", "bans.read", &[]).await;
    let writer = key(&app, DEMO, "writer", "bans.write,guild.read,roles.write", &[]).await;

    get(&app, &ban_path(DEMO, ids::PAT_ID), &writer).await.err(403, "insufficient_scope");
    get(&app, &ban_path(OTHER, ids::PAT_ID), &reader).await.err(403, "guild_mismatch");
    for path in
        [format!("/v1/guilds/{DEMO}/bans/abc"), format!("/v1/guilds/{DEMO}/bans/0"), "/v1/guilds/x/bans/1".to_owned()]
    {
        get(&app, &path, &reader).await.err(400, "bad_request");
    }
    assert!(calls(&app, "GET", BAN_ROUTE).is_empty(), "refused before asking Discord");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_discord_refuses_is_a_502_with_discords_message_and_is_remembered_briefly() {
    let app = spawn_app().await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.fault(FaultRule::on("GET", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));

    let message = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Missing Permissions"), "{message}");

    // Asking again at once would only earn another 403, which Discord
    // counts towards cutting the bot off: the refusal is answered again,
    // for any user of the guild, without asking.
    app.double.clear_faults();
    for user in [ids::PAT_ID, ids::DANA_ID, ids::STRANGER_ID] {
        let message = get(&app, &ban_path(DEMO, user), &token).await.err(502, "discord_error").message();
        assert!(message.contains("Missing Permissions") && message.contains("asks again"), "{message}");
    }
    assert_eq!(calls(&app, "GET", BAN_ROUTE).len(), 1, "Discord was asked once");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_in_a_guild_the_bot_is_not_in_is_a_502_not_a_false_not_banned() {
    let app = spawn_app().await;
    let token = key(&app, ABSENT_GUILD_ID, "orphan", "bans.read", &[]).await;

    let message = get(&app, &ban_path(ABSENT_GUILD_ID, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Unknown Guild"), "{message}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_check_answered_429_is_retried_after_retry_after() {
    let app = spawn_app().await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    app.double.fault(FaultRule::on("GET", BAN_ROUTE).rate_limited(1.0, true).once());

    let data = get(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": false, "reason": null }));
    let attempts = calls(&app, "GET", BAN_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 404]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a global 429 asking for 1 s");
    app.double.assert_no_violations();
}
