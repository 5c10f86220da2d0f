//! The guard: a key is never a way to take a server over, and one guild never gets the bot cut off from Discord.

use super::*;

/// A plain role below the bot ("Games", position 1, no permissions) beside
/// the demo world's "Verified".
const GAMES_ROLE_ID: u64 = 1_400_000_000_000_000_007;

async fn spawn_with_games_role(opts: Options) -> App {
    let mut cfg = DoubleConfig::demo();
    cfg.guilds[0].roles.push(discord_double::RoleSeed::new(GAMES_ROLE_ID, "Games", 1, 0));
    let double = discord_double::Double::start(cfg).await.expect("double");
    spawn_against(double, opts).await
}

/// Polls `path` until it answers `status` (the gateway event is applied).
async fn wait_for_status(app: &App, put_path: &str, token: &str, status: u16) -> Reply {
    let started = Instant::now();
    loop {
        let reply = put(app, put_path, token).await;
        if reply.status == status {
            return reply;
        }
        assert!(started.elapsed() < WAIT, "never answered {status}: {} {}", reply.status, reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_roles_write_key_never_adds_or_removes_an_admin_managed_everyone_or_higher_role() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "verifier", "roles.write").await;
    app.double.clear_recorded();

    for (role, why) in [
        (ids::ADMIN_ROLE_ID, "Administrator"),
        (ids::MANAGER_ROLE_ID, "Manage Server"),
        (ids::BOT_ROLE_ID, "managed"),
        (DEMO, "@everyone"),
    ] {
        for reply in [
            put(&app, &role_path(DEMO, ids::PAT_ID, role), &token).await,
            delete(&app, &role_path(DEMO, ids::ALICE_ID, role), &token).await,
        ] {
            let message = reply.err(403, "role_not_allowed").message();
            assert!(message.contains(why), "{why}: {message}");
        }
    }
    // Refused before any Discord call: not even the member was looked up.
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "{:?}", app.double.calls());
    assert_eq!(app.double.member_roles(DEMO, ids::ALICE_ID), [ids::ADMIN_ROLE_ID]);
    assert!(api_events(&app, &reader).await.is_empty());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_role_that_gains_a_dangerous_permission_is_refused_from_the_next_request_on() {
    let app = spawn_app().await;
    let (token, _) = keys(&app, "verifier", "roles.write").await;
    let path = role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID);

    // An admin gives "Verified" Manage Webhooks: the gateway says so, and
    // guildkey checks the live hierarchy, not what the role was at start.
    app.double.set_role_permissions(DEMO, ids::VERIFIED_ROLE_ID, guildkey::discord::permissions::MANAGE_WEBHOOKS);
    let message = wait_for_status(&app, &path, &token, 403).await.err(403, "role_not_allowed").message();
    assert!(message.contains("Manage Webhooks"), "{message}");
    app.double.clear_recorded();
    let morgan = role_path(DEMO, ids::MORGAN_ID, ids::VERIFIED_ROLE_ID);
    for _ in 0..20 {
        put(&app, &morgan, &token).await.err(403, "role_not_allowed");
    }
    assert!(app.double.calls().iter().all(|c| !c.path.contains("/members/")), "Discord was not asked");

    app.double.set_role_permissions(DEMO, ids::VERIFIED_ROLE_ID, 0);
    assert_eq!(wait_for_status(&app, &morgan, &token, 200).await.ok()["changed"], true);
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID, ids::VERIFIED_ROLE_ID]);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_keys_allowed_roles_bound_what_it_may_change() {
    let app = spawn_with_games_role(Options::default()).await;
    let verified = ids::VERIFIED_ROLE_ID.to_string();
    let token = key(&app, DEMO, "verifier", "roles.write", &["--allowed-roles", &verified]).await;
    let any = key(&app, DEMO, "anything", "roles.write", &[]).await;

    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    let message =
        put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &token).await.err(403, "role_not_allowed").message();
    assert!(message.contains("allowed_roles"), "{message}");
    // A key without a list may change any safe role; a list never widens.
    assert_eq!(put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &any).await.ok()["changed"], true);
    let admin = ids::ADMIN_ROLE_ID.to_string();
    let listed_admin = key(&app, DEMO, "sneaky", "roles.write", &["--allowed-roles", &admin]).await;
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::ADMIN_ROLE_ID), &listed_admin).await.err(403, "role_not_allowed");

    assert_eq!(app.double.member_roles(DEMO, ids::PAT_ID), [ids::VERIFIED_ROLE_ID, GAMES_ROLE_ID]);
    let listed = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    let keys: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let verifier = keys.as_array().unwrap().iter().find(|k| k["name"] == "verifier").expect("listed");
    assert_eq!(verifier["allowed_roles"], json!([verified]));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_test_keys_dry_run_validates_like_a_live_write() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "staging", "roles.write,bans.write", &["--env", "test"]).await;

    let message = put(&app, &role_path(DEMO, ids::STRANGER_ID, ids::VERIFIED_ROLE_ID), &token)
        .await
        .err(502, "discord_error")
        .message();
    assert!(message.contains("Unknown Member"), "{message}");
    let message =
        put(&app, &role_path(DEMO, ids::PAT_ID, UNKNOWN_ROLE_ID), &token).await.err(404, "not_found").message();
    assert!(message.contains("does not exist"), "{message}");
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::ADMIN_ROLE_ID), &token).await.err(403, "role_not_allowed");
    put(&app, &ban_path(DEMO, ids::ALICE_ID), &token).await.err(403, "member_protected");
    // What a live write would leave unchanged is `changed: false` with no entry.
    let data = put(&app, &role_path(DEMO, ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    assert_eq!(
        (&data["dry_run"], &data["changed"], &data["audit_event_id"]),
        (&json!(true), &json!(false), &Value::Null)
    );
    assert!(writes(&app).is_empty(), "a dry run writes nothing: {:?}", writes(&app));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_bans_write_key_cannot_ban_the_owner_a_moderator_or_the_bot() {
    let app = spawn_app().await;
    let (token, reader) = keys(&app, "game", "bans.write").await;

    for (user, why) in [(ids::ALICE_ID, "owner"), (ids::MORGAN_ID, "Manage Server"), (ids::BOT_USER_ID, "its own bot")]
    {
        let message = put(&app, &ban_path(DEMO, user), &token).await.err(403, "member_protected").message();
        assert!(message.contains(why), "{why}: {message}");
    }
    assert!(calls(&app, "PUT", BAN_ROUTE).is_empty(), "no ban reached Discord");
    assert_eq!(put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["changed"], true);
    assert_eq!(api_events(&app, &reader).await.len(), 1);
    app.double.assert_no_violations();
}

/// `requests` ban checks for distinct users (so the ban cache never
/// answers), 16 at a time; the statuses seen.
async fn hammer_ban_checks(app: &App, token: &str, requests: u64) -> std::collections::BTreeMap<u16, u64> {
    let mut statuses = std::collections::BTreeMap::new();
    for chunk in (0..requests).collect::<Vec<_>>().chunks(16) {
        let paths: Vec<String> = chunk.iter().map(|i| ban_path(DEMO, 1_200_000_000_000_100_000 + i)).collect();
        let replies = futures_join_all(paths.iter().map(|path| get(app, path, token))).await;
        for r in replies {
            *statuses.entry(r.status).or_default() += 1;
        }
    }
    statuses
}

#[tokio::test]
async fn five_thousand_ban_checks_after_the_bot_lost_ban_members_reach_discord_a_bounded_number_of_times() {
    let app = spawn_app().await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    let token = key(&app, DEMO, "game", "bans.read", &["--rate-limit", "100000"]).await;

    // Unseen by the gateway (the cache still thinks the bot may ban):
    // Discord refuses, once; the refusal is answered again after that.
    app.double.set_member_roles(DEMO, ids::BOT_USER_ID, &[]);
    app.double.clear_recorded();
    let started = Instant::now();
    let statuses = hammer_ban_checks(&app, &token, 5_000).await;
    let unseen = calls(&app, "GET", BAN_ROUTE).len();
    eprintln!(
        "hostile load, change unseen by the gateway: 5000 ban checks in {:?}, answers {statuses:?}, Discord saw {unseen}",
        started.elapsed()
    );
    assert_eq!(statuses.get(&502), Some(&5_000), "{statuses:?}");
    // At most the guild's 4 calls in flight before the first refusal is
    // remembered, then one per 30 s (the load takes well under a minute).
    let bound = guildkey::service::guard::CALLS_IN_FLIGHT_PER_GUILD + 1;
    assert!((1..=bound).contains(&unseen), "Discord saw {unseen} ban checks");
    // Each refusal Discord gave is counted, for the operator to alert on.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let figure = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(figure("guildkey_discord_invalid_requests_total"), unseen as u64);
    assert_eq!(figure("guildkey_discord_invalid_requests_10m"), unseen as u64);

    // Seen by the gateway (an admin took Ban Members off the bot's role):
    // answered from the cache, Discord is not asked at all.
    app.double.set_member_roles(DEMO, ids::BOT_USER_ID, &[ids::BOT_ROLE_ID]);
    let without_ban = ids::BOT_ROLE_PERMISSIONS & !ids::permissions::BAN_MEMBERS;
    app.double.set_role_permissions(DEMO, ids::BOT_ROLE_ID, without_ban);
    let started = Instant::now();
    loop {
        let message =
            get(&app, &ban_path(DEMO, 1_200_000_000_000_099_999), &token).await.err(502, "discord_error").message();
        if message.contains("Discord was not asked") {
            break;
        }
        assert!(started.elapsed() < WAIT, "the role update never reached the cache: {message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.double.clear_recorded();
    let statuses = hammer_ban_checks(&app, &token, 5_000).await;
    let seen = calls(&app, "GET", BAN_ROUTE).len();
    eprintln!("hostile load, change seen by the gateway: answers {statuses:?}, Discord saw {seen}");
    assert_eq!((statuses.get(&502), seen), (Some(&5_000), 0));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn past_its_budget_a_guilds_discord_calls_pause_and_the_audit_channel_says_why() {
    let opts = Options { config: "[discord]\ninvalid_request_budget = 3\n".into(), ..Options::default() };
    let app = spawn_app_with(opts).await;
    unsynced(&app); // these checks ask Discord, as before a list is synced
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write,bans.read", &["--rate-limit", "100000"]).await;
    let other = key(&app, OTHER, "elsewhere", "bans.read", &[]).await;
    // Every ban write is refused, each for another user: the per-target
    // memory cannot help, the budget must.
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).discord_error(403, 50013, "Missing Permissions"));
    app.double.clear_recorded();

    for i in 0..3 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_200_000 + i), &token).await.err(502, "discord_error");
    }
    let resp =
        app.http.put(app.url(&ban_path(DEMO, 1_200_000_000_000_200_010))).bearer_auth(&token).send().await.unwrap();
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    let reply = Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
        took: Duration::ZERO,
    };
    let message = reply.err(503, "discord_paused").message();
    assert!(message.contains("paused") && message.contains('3'), "{message}");
    for i in 0..20 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_300_000 + i), &token).await.err(503, "discord_paused");
        get(&app, &ban_path(DEMO, 1_200_000_000_000_300_000 + i), &token).await.err(503, "discord_paused");
    }
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 3, "Discord saw the budget's worth and no more");
    // Another guild is not held back.
    assert_eq!(get(&app, &ban_path(OTHER, ids::OSCAR_ID), &other).await.ok()["banned"], false);

    let post = audit_post(&app, "Discord calls paused").await;
    assert!(field(&post, "By").contains("guildkey"), "{:?}", post.embeds);
    assert!(field(&post, "Why").contains("refused 3"), "{:?}", post.embeds);
    // Once per pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pauses =
        app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).iter().filter(|m| m.text().contains("paused")).count();
    assert_eq!(pauses, 1);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_past_its_ban_budget_is_suspended_and_an_admin_resumes_it_from_the_audit_channel() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.write", &["--ban-budget", "3"]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();

    for i in 0..3 {
        assert_eq!(put(&app, &ban_path(DEMO, 1_200_000_000_000_400_000 + i), &token).await.ok()["changed"], true);
    }
    let message =
        put(&app, &ban_path(DEMO, 1_200_000_000_000_400_003), &token).await.err(401, "key_suspended").message();
    assert!(message.contains("3 bans in 10 minutes"), "{message}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 3, "the fourth ban never reached Discord");
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    let post = audit_post(&app, "API key suspended").await;
    assert!(field(&post, "By").contains("guildkey"), "{:?}", post.embeds);
    assert!(field(&post, "Why").contains("3 bans"), "{:?}", post.embeds);
    let resume = format!("guildkey:resume:{key_id}");
    // A plain member's press changes nothing.
    let click = app.double.click(DEMO, ids::PAT_ID, &post, &resume).await.expect("click");
    let refused = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(refused.ephemeral() && refused.text().contains("Manage Server"), "{}", refused.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    let click = app.double.click(DEMO, ids::ALICE_ID, &post, &resume).await.expect("click");
    let answered = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(answered.text().contains("resumed") && answered.components.is_empty(), "{}", answered.text());
    get(&app, "/v1/verify", &token).await.ok();
    let resumed = audit_post(&app, "API key resumed").await;
    assert!(field(&resumed, "By").contains(&ids::ALICE_ID.to_string()), "{:?}", resumed.embeds);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn role_changes_past_the_configured_budget_suspend_the_key_and_revoke_is_one_press_away() {
    let opts = Options { config: "[keys]\ndefault_role_budget = 2\n".into(), ..Options::default() };
    let app = spawn_with_games_role(opts).await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "verifier", "roles.write", &[]).await;
    let key_id = get(&app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();

    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    // A no-op changes nothing and spends nothing.
    put(&app, &role_path(DEMO, ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::PAT_ID, GAMES_ROLE_ID), &token).await.ok();
    put(&app, &role_path(DEMO, ids::MORGAN_ID, GAMES_ROLE_ID), &token).await.err(401, "key_suspended");
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID]);

    let post = audit_post(&app, "API key suspended").await;
    let click = app.double.click(DEMO, ids::ALICE_ID, &post, &format!("guildkey:revoke:{key_id}")).await.unwrap();
    let answered = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(answered.text().contains("revoked"), "{}", answered.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_leaked_token_report_revokes_the_key_and_never_says_which_tokens_were_valid() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = key(&app, DEMO, "game", "bans.read", &[]).await;
    let bystander = key(&app, DEMO, "dashboard", "guild.read", &[]).await;
    let report = |tokens: &[&str]| -> Value {
        Value::Array(
            tokens
                .iter()
                .map(|t| {
                    json!({ "token": t, "type": "guildkey_api_key", "url": "https://github.com/octo/game/blob/main/.env", "source": "content" })
                })
                .collect(),
        )
    };
    let post =
        |body: String| app.http.post(app.url("/v1/leaked")).header("content-type", "application/json").body(body);

    // Act: one report with the real key among junk, one with junk alone.
    let unknown = "gk_live_00000000000000000000000000000000000000";
    let with_key = send(post(report(&[unknown, &token, "not a token"]).to_string())).await;
    let without = send(post(report(&[unknown, "gk_test_short"]).to_string())).await;

    // Assert: the same answer whatever was valid; only the reported key stops.
    assert_eq!((with_key.status, without.status), (200, 200), "{} {}", with_key.text, without.text);
    assert_eq!(with_key.json()["data"], json!({ "received": 3 }));
    assert_eq!(without.json()["data"], json!({ "received": 2 }));
    let started = Instant::now();
    while get(&app, "/v1/verify", &token).await.status != 401 {
        assert!(started.elapsed() < WAIT, "the reported key was never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(&app, "/v1/verify", &token).await.err(401, "key_revoked");
    get(&app, "/v1/verify", &bystander).await.ok();
    let post_seen = audit_post(&app, "API key revoked").await;
    assert!(field(&post_seen, "By").contains("guildkey"), "{:?}", post_seen.embeds);
    assert!(field(&post_seen, "Found at").contains("github.com/octo/game"), "{:?}", post_seen.embeds);
    assert!(field(&post_seen, "Why").contains("leaked"), "{:?}", post_seen.embeds);

    // Bad bodies are 400 and change nothing; the address is limited.
    for body in ["{}".to_owned(), "not json".to_owned(), report(&[unknown; 101]).to_string()] {
        send(post(body)).await.err(400, "bad_request");
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(post(report(&[unknown]).to_string())).await.status);
    }
    assert!(statuses.contains(&429), "one address cannot report without end: {statuses:?}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_flood_of_audit_entries_into_a_channel_the_bot_may_not_write_in_earns_few_refusals() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    app.double.set_bot_can_send(ids::AUDIT_LOG_CHANNEL_ID, false);
    app.double.clear_recorded();
    // A test key's dry runs write an audit entry each and touch no guild.
    // Its dry runs spend its ban budget as live bans would: room for 60.
    let token =
        key(&app, DEMO, "staging", "bans.write", &["--env", "test", "--rate-limit", "100000", "--ban-budget", "100"])
            .await;

    for i in 0..60 {
        put(&app, &ban_path(DEMO, 1_200_000_000_000_500_000 + i), &token).await.ok();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let posts = app.double.calls_to("POST", "/channels/{channel_id}/messages");
    let refused = posts.iter().filter(|c| c.status == 403).count();
    eprintln!(
        "61 audit entries (a key created, 60 dry runs) into a channel the bot may not write in: {} posts tried, {refused} refused",
        posts.len()
    );
    assert!((1..=guildkey::service::guard::CALLS_IN_FLIGHT_PER_GUILD).contains(&refused), "{refused} refusals");
    app.double.assert_no_violations();
}
