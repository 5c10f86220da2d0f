//! PUT /v1/guilds/{guild_id}/bans/{user_id}.

use super::*;

#[tokio::test]
async fn a_ban_reaches_discord_with_the_keys_audit_reason_and_is_audited() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game server", "bans.write").await;

    let data =
        put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "delete_message_seconds": 3600 })).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(true), &json!(true), &json!(false)));

    let bans = calls(&app, "PUT", BAN_ROUTE);
    assert_eq!(bans.len(), 1, "one ban call");
    let call = &bans[0];
    assert_eq!((call.param_u64("guild_id"), call.param_u64("user_id")), (Some(DEMO), Some(ids::PAT_ID)));
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 3600 })));
    assert_eq!(call.audit_log_reason(), Some(reason_of("game server", &token)));
    assert!(app.double.bans(DEMO).contains_key(&ids::PAT_ID), "Discord now has the ban");
    assert!(!app.double.is_member(DEMO, ids::PAT_ID), "a ban removes the member");

    let events = api_events(&app, &reader).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_api_event(&events[0], "ban.added", "game server", &token, false);
    assert_eq!(events[0]["id"], data["audit_event_id"]);
    assert_eq!(events[0]["details"]["user_id"], ids::PAT_ID.to_string());
    assert_eq!(events[0]["details"]["delete_message_seconds"], 3600);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_bans_reason_follows_the_key_in_discords_audit_log_and_is_stored_as_the_ban_reason() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write,bans.read").await;

    put_json(&app, &ban_path(DEMO, ids::STRANGER_ID), &token, &json!({ "reason": "cheating" })).await.ok();

    let call = &calls(&app, "PUT", BAN_ROUTE)[0];
    let expected = format!("{}: cheating", reason_of("game", &token));
    assert_eq!(call.audit_log_reason(), Some(expected.clone()));
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 0 })), "no deletion unless asked");
    assert_eq!(app.double.bans(DEMO).get(&ids::STRANGER_ID), Some(&Some(expected.clone())));
    let data = get(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!(data, json!({ "banned": true, "reason": expected }));
    assert_eq!(api_events(&app, &reader).await[0]["details"]["reason"], "cheating");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_name_with_spaces_and_non_ascii_reaches_discords_audit_log_intact() {
    let app = spawn_app().await;
    let name = "Spiel-Server ü/ß 🎮 #1";
    let token = key(&app, DEMO, name, "bans.write,roles.write", &[]).await;

    put(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();

    let reason = reason_of(name, &token);
    assert_eq!(calls(&app, "PUT", BAN_ROUTE)[0].audit_log_reason(), Some(reason.clone()));
    assert_eq!(calls(&app, "PUT", ROLE_ROUTE)[0].audit_log_reason(), Some(reason));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn banning_a_banned_user_succeeds_with_changed_false_and_no_second_ban_or_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.add_ban(DEMO, ids::STRANGER_ID, Some("earlier"));

    let data = put(&app, &ban_path(DEMO, ids::STRANGER_ID), &token).await.ok();
    assert_eq!((&data["banned"], &data["changed"], &data["dry_run"]), (&json!(true), &json!(false), &json!(false)));
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "no second ban sent");
    assert_eq!(app.double.bans(DEMO).get(&ids::STRANGER_ID), Some(&Some("earlier".to_owned())), "reason kept");
    assert!(api_events(&app, &reader).await.is_empty(), "nothing changed, nothing audited");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn concurrent_identical_bans_make_one_change_and_one_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    // Slow bans widen the window in which the calls overlap.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).latency(Duration::from_millis(300)).once());

    let path = ban_path(DEMO, ids::PAT_ID);
    let replies = futures_join_all((0..4).map(|_| put(&app, &path, &token))).await;
    let changed: Vec<bool> = replies.iter().map(|r| r.ok()["changed"].as_bool().unwrap()).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "exactly one call made the change: {changed:?}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "one ban sent to Discord");
    assert_eq!(api_events(&app, &reader).await.len(), 1, "one audit entry");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn concurrent_identical_role_adds_make_one_change_and_one_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.fault(FaultRule::on("PUT", ROLE_ROUTE).latency(Duration::from_millis(300)).once());

    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);
    let replies = futures_join_all((0..4).map(|_| put(&app, &path, &token))).await;
    let changed: Vec<bool> = replies.iter().map(|r| r.ok()["changed"].as_bool().unwrap()).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "exactly one call made the change: {changed:?}");
    assert_eq!(calls(&app, "PUT", ROLE_ROUTE).len(), 1, "one role add sent to Discord");
    assert_eq!(api_events(&app, &reader).await.len(), 1, "one audit entry");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_ban_is_a_dry_run_that_sends_no_discord_write_and_is_audited_as_a_test() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;
    let reader = key(&app, DEMO, "auditor", "audit.read", &[]).await;
    app.double.clear_recorded();

    let data = put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "reason": "x" })).await.ok();
    assert_eq!((&data["dry_run"], &data["changed"]), (&json!(true), &json!(false)));
    let writes: Vec<_> = app.double.calls().iter().filter(|c| c.method != "GET").map(|c| c.to_string()).collect();
    assert!(writes.iter().all(|c| !c.contains("/bans/")), "a dry run writes nothing: {writes:?}");
    assert!(app.double.bans(DEMO).is_empty() && app.double.is_member(DEMO, ids::PAT_ID));
    let events = api_events(&app, &reader).await;
    assert_api_event(&events[0], "ban.added", "staging", &token, true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_needs_bans_write_the_keys_own_guild_snowflakes_and_a_valid_body() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    let reader_only = key(&app, DEMO, "reader", "bans.read,guild.read,roles.write", &[]).await;
    let path = ban_path(DEMO, ids::PAT_ID);

    put(&app, &path, &reader_only).await.err(403, "insufficient_scope");
    put(&app, &ban_path(OTHER, ids::OSCAR_ID), &token).await.err(403, "guild_mismatch");
    put(&app, &format!("/v1/guilds/{DEMO}/bans/pat"), &token).await.err(400, "bad_request");
    put(&app, &format!("/v1/guilds/1.5/bans/{}", ids::PAT_ID), &token).await.err(400, "bad_request");

    let message =
        put_json(&app, &path, &token, &json!({ "reason": "x".repeat(513) })).await.err(400, "bad_request").message();
    assert!(message.contains("reason") && message.contains("512"), "{message}");
    for seconds in [-1, 604_801, i64::from(u32::MAX) + 1] {
        let message = put_json(&app, &path, &token, &json!({ "delete_message_seconds": seconds }))
            .await
            .err(400, "bad_request")
            .message();
        assert!(message.contains("delete_message_seconds"), "{message}");
    }
    for body in ["{", "not json", "{\"reason\": 5}", "{\"delete_message_seconds\": 1.5}", "{\"unknown\": 1}", "[]"] {
        let reply = send(
            app.http.put(app.url(&path)).bearer_auth(&token).header("content-type", "application/json").body(body),
        )
        .await;
        reply.err(400, "bad_request");
    }
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "nothing invalid reached Discord");
    assert!(api_events(&app, &reader).await.is_empty());

    // The limits themselves are allowed.
    let data = put_json(&app, &path, &token, &json!({ "reason": "é".repeat(512), "delete_message_seconds": 604_800 }))
        .await
        .ok();
    assert_eq!(data["changed"], true);
    let call = &calls(&app, "PUT", BAN_ROUTE)[0];
    assert_eq!(call.body, Some(json!({ "delete_message_seconds": 604_800 })));
    let header = call.audit_log_reason().unwrap();
    assert!(header.starts_with(&reason_of("game", &token)) && header.chars().count() <= 512, "{header}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn discord_refusing_a_ban_is_a_502_with_its_message_and_no_audit_entry() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    // The owner: refused by guildkey, before Discord could refuse it.
    let message = put(&app, &ban_path(DEMO, ids::ALICE_ID), &token).await.err(403, "member_protected").message();
    assert!(message.contains("owner"), "{message}");
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty());

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Missing Permissions"), "{message}");
    app.double.clear_faults();

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).status(500));
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    assert!(!message.is_empty());
    app.double.clear_faults();

    assert!(app.double.bans(DEMO).is_empty(), "no ban happened");
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for a ban that did not happen");
    // The cache did not learn a ban either.
    let checker = key(&app, DEMO, "checker", "bans.read", &[]).await;
    assert_eq!(get(&app, &ban_path(DEMO, ids::PAT_ID), &checker).await.ok()["banned"], false);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_answered_429_is_retried_after_retry_after_and_succeeds() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(1.2, false).once());

    let data = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();
    assert_eq!(data["changed"], true);

    let attempts = calls(&app, "PUT", BAN_ROUTE);
    assert_eq!(attempts.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 204]);
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(waited >= Duration::from_millis(1150), "the retry came {waited:?} after a 429 asking for 1.2 s");
    assert!(waited < Duration::from_secs(4), "the retry came {waited:?} later");
    assert!(app.double.bans(DEMO).contains_key(&ids::PAT_ID));
    assert_eq!(api_events(&app, &reader).await.len(), 1, "audited once");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_that_stays_rate_limited_fails_cleanly_as_502_and_the_listener_keeps_answering() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    // Discord keeps saying 429: a few bounded retries, then a clean 502.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(0.3, false));
    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    assert!(message.to_lowercase().contains("rate limit"), "{message}");
    app.double.clear_faults();

    // A retry_after longer than a caller should wait: fail at once, no retry.
    app.double.clear_recorded();
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(120.0, false));
    let started = Instant::now();
    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error");
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for a 2-minute rate limit", started.elapsed());
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "no retry before retry_after");
    app.double.clear_faults();

    assert!(api_events(&app, &reader).await.is_empty());
    send(app.http.get(app.url("/healthz"))).await.ok();
    assert_eq!(put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["changed"], true);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_discord_does_not_answer_is_a_502_well_before_the_listeners_own_timeout() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).latency(Duration::from_secs(15)).once());

    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "answered after {took:?}");
    assert!(message.contains("did not answer") && message.contains("may or may not"), "{message}");
    send(app.http.get(app.url("/healthz"))).await.ok();
    // The fault delays only the first PUT: a retry would have gone through
    // at once and been recorded. The abandoned request never completed.
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "a timed-out write is not sent again");
    assert!(app.double.bans(DEMO).is_empty());
    assert!(api_events(&app, &reader).await.is_empty(), "no audit entry for an unconfirmed ban");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_api_ban_is_posted_to_the_audit_channel_naming_the_key_not_a_user() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game server", "bans.write", &[]).await;
    let tester = key(&app, DEMO, "staging", "bans.write", &["--env", "test"]).await;

    put_json(&app, &ban_path(DEMO, ids::PAT_ID), &token, &json!({ "reason": "spam" })).await.ok();
    put(&app, &ban_path(DEMO, ids::DANA_ID), &tester).await.ok();

    let post = audit_post(&app, "Member banned").await;
    assert_posted_by_key(&post, "game server", &token);
    assert!(field(&post, "User").contains(&ids::PAT_ID.to_string()));
    assert_eq!(field(&post, "Reason"), "spam");
    let dry = audit_post(&app, "Member banned (test key").await;
    assert_posted_by_key(&dry, "staging", &tester);
    assert!(dry.embeds[0]["title"].as_str().unwrap().contains("dry run"));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_audit_post_answered_429_is_retried_after_retry_after_and_arrives() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;
    let is_ban_post = |body: Option<&Value>| {
        body.and_then(|b| b["embeds"][0]["title"].as_str()).is_some_and(|t| t.starts_with("Member banned"))
    };
    app.double
        .fault(FaultRule::matching(move |r| r.method == "POST" && is_ban_post(r.body)).rate_limited(1.0, false).once());

    put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok();

    assert_posted_by_key(&audit_post(&app, "Member banned").await, "game", &token);
    let posts: Vec<_> = calls(&app, "POST", "/channels/{channel_id}/messages")
        .into_iter()
        .filter(|c| is_ban_post(c.body.as_ref()))
        .collect();
    let statuses: Vec<u16> = posts.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = posts[1].at.duration_since(posts[0].at);
    assert!(waited >= Duration::from_millis(950), "retried {waited:?} after a 429 asking for 1 s: {statuses:?}");
    app.double.assert_no_violations();
}
