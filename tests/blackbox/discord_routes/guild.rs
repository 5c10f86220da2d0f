//! GET /v1/guilds/{guild_id}.

use super::*;

#[tokio::test]
async fn guild_info_comes_from_the_gateway_cache_without_a_rest_call_per_request() {
    let mut cfg = DoubleConfig::demo();
    cfg.guilds[0].icon = Some("a_0123456789abcdef0123456789abcdef".into());
    let members = cfg.guilds[0].members.len() as u64;
    let double = discord_double::Double::start(cfg).await.expect("double");
    let app = spawn_against(double, Options::default()).await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    app.double.clear_recorded();

    for _ in 0..5 {
        let data = get(&app, &guild_path(DEMO), &token).await.ok();
        assert_eq!(
            data,
            json!({
                "id": DEMO.to_string(),
                "name": "Demo Guild",
                "member_count": members,
                "icon": "a_0123456789abcdef0123456789abcdef",
            })
        );
    }
    // (GUILD_CREATE resyncs the guild's ban list: that is not guild info.)
    let rest: Vec<_> = app
        .double
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/v10/guilds/") && c.route.as_deref() != Some("/guilds/{guild_id}/bans"))
        .map(|c| c.to_string())
        .collect();
    assert!(rest.is_empty(), "guild info must not call Discord: {rest:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_follows_the_gateway_when_discord_sends_the_guild_again() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    assert_eq!(get(&app, &guild_path(DEMO), &token).await.ok()["name"], "Demo Guild");

    // The guild as the gateway described it, renamed, sent again.
    let mut guild = app
        .double
        .gateway_frames()
        .into_iter()
        .find(|f| f.t.as_deref() == Some("GUILD_CREATE") && f.d["id"].as_str() == Some(DEMO.to_string().as_str()))
        .expect("the demo guild's GUILD_CREATE")
        .d;
    guild["name"] = json!("Renamed Guild");
    assert_eq!(app.double.dispatch("GUILD_CREATE", guild), 1, "one gateway session gets the event");

    let started = Instant::now();
    loop {
        let data = get(&app, &guild_path(DEMO), &token).await.ok();
        if data["name"] == "Renamed Guild" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the cache never saw the rename: {data}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (GUILD_CREATE resyncs the guild's ban list: that is not guild info.)
    let rest: Vec<_> = app
        .double
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/v10/guilds/") && c.route.as_deref() != Some("/guilds/{guild_id}/bans"))
        .map(|c| c.to_string())
        .collect();
    assert!(rest.is_empty(), "guild info must not call Discord: {rest:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_for_a_guild_the_bot_is_not_in_is_not_found() {
    let app = spawn_app().await;
    let token = key(&app, ABSENT_GUILD_ID, "orphan", "guild.read", &[]).await;

    let message = get(&app, &guild_path(ABSENT_GUILD_ID), &token).await.err(404, "not_found").message();
    assert!(message.contains("not in this guild"), "{message}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_is_not_found_once_the_bot_is_removed_from_the_guild() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    get(&app, &guild_path(DEMO), &token).await.ok();

    assert_eq!(app.double.dispatch("GUILD_DELETE", json!({ "id": DEMO.to_string() })), 1);
    let started = Instant::now();
    loop {
        let reply = get(&app, &guild_path(DEMO), &token).await;
        if reply.status == 404 {
            reply.err(404, "not_found");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still answered after GUILD_DELETE: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.double.assert_no_violations();
}

#[tokio::test]
async fn guild_info_needs_guild_read_the_keys_own_guild_and_a_snowflake() {
    let app = spawn_app().await;
    let reader = key(&app, DEMO, "reader", "guild.read", &[]).await;
    let other = key(&app, DEMO, "bans only", "bans.read,bans.write,roles.write,audit.read", &[]).await;

    get(&app, &guild_path(DEMO), &other).await.err(403, "insufficient_scope");
    get(&app, &guild_path(OTHER), &reader).await.err(403, "guild_mismatch");
    for bad in ["abc", "0", "-1", "99999999999999999999"] {
        get(&app, &format!("/v1/guilds/{bad}"), &reader).await.err(400, "bad_request");
    }
    app.double.assert_no_violations();
}
