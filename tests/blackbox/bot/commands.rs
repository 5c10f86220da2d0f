//! The slash commands: create, list, info, revoke, delete, rotate, suspend; who may run them and what bad options get.

use super::*;

#[tokio::test]
async fn an_admin_creates_a_key_whose_secret_is_shown_once_and_works_on_the_listener() {
    let app = spawn_app().await;
    app.set_audit_channel().await;

    let reply = create(&app, ids::ALICE_ID, "game server", "bans.read, guild.read").await;

    assert!(reply.ephemeral(), "the reply must be ephemeral");
    let text = reply.all_text();
    let token = secret_in(&reply);
    assert!(text.contains("shown only once"), "{text}");
    assert!(text.contains(&format!("Authorization: Bearer {token}")), "{text}");
    assert!(text.contains("bans.read") && text.contains(&token[..12]), "{text}");
    let verify = json(app.get("/v1/verify", &token).await).await;
    assert_eq!(verify["data"]["name"], "game server");
    assert_eq!(verify["data"]["guild_id"], ids::DEMO_GUILD_ID.to_string());

    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key created"), WAIT)
        .await
        .expect("an audit embed");
    assert!(posted.text().contains(&format!("<@{}>", ids::ALICE_ID)), "{}", posted.text());
    assert!(posted.text().contains("game server"));
    let audit_posts = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID);
    assert_eq!(audit_posts.iter().filter(|m| m.text().contains("API key created")).count(), 1);
    for m in &audit_posts {
        assert!(!m.json.to_string().contains(&token[12..]), "the audit post holds the secret");
    }
    // The secret went out exactly once, in the reply; never in a log.
    let logs = app.logs().join("\n");
    assert!(!logs.contains(&token[12..]) && !logs.contains(BOT_TOKEN), "a secret reached the logs");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn list_and_info_show_the_key_with_relative_times_and_the_active_count() {
    let app = spawn_app().await;
    // Made by Alice (Morgan holds Manage Server alone: no key of Morgan's may write roles).
    let token = secret_in(&create(&app, ids::ALICE_ID, "verifier", "roles.write").await);

    let sent = app.double.slash(ids::DEMO_GUILD_ID, ids::MORGAN_ID).subcommand("apikey", "list").send().await.unwrap();
    let list = app.double.wait_for_response(&sent, WAIT).await.unwrap();
    let (_, info) = run(&app, ids::MORGAN_ID, "info", "verifier").await;

    assert!(list.ephemeral() && info.ephemeral());
    let text = list.all_text();
    assert!(text.contains("1 of 3 active keys"), "{text}");
    assert!(text.contains("verifier") && text.contains(&token[..12]) && text.contains("roles.write"), "{text}");
    assert!(text.contains("<t:") && text.contains(":R>"), "relative timestamps: {text}");
    assert!(!text.contains(&token[12..]), "list must never show the secret");
    let info_text = info.all_text();
    assert!(info_text.contains("60/min") && info_text.contains("Allowed IPs"), "{info_text}");
    assert!(info_text.contains("key.created"), "recent activity: {info_text}");
    assert!(!text.contains("consider revoking"), "a new key is not flagged as unused: {text}");

    // A key created 40 days ago and never used is flagged.
    let backdated = support::db_scalar(
        &app.db_url,
        "update api_key set created_at = created_at - 3456000000 where name = 'verifier' returning created_at",
    );
    assert!(backdated.is_some(), "backdate the key");
    let sent = app.double.slash(ids::DEMO_GUILD_ID, ids::MORGAN_ID).subcommand("apikey", "list").send().await.unwrap();
    let text = app.double.wait_for_response(&sent, WAIT).await.unwrap().all_text();
    assert!(text.contains("Unused for 40 days") && text.contains("(never used)"), "{text}");
    assert!(text.contains("consider revoking"), "{text}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn revoke_asks_to_confirm_and_the_token_fails_on_the_very_next_request() {
    let app = spawn_app().await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "bot", "bans.read").await);

    let (_, prompt) = run(&app, ids::ALICE_ID, "revoke", "bot").await;
    assert!(prompt.all_text().contains("Revoke the key"), "{}", prompt.all_text());
    let done = press(&app, ids::ALICE_ID, &prompt, ":confirm").await;

    assert!(done.content.contains("Revoked"), "{}", done.content);
    let resp = app.get("/v1/verify", &token).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json(resp).await["error"]["reason"], "key_revoked");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn cancel_changes_nothing_and_delete_of_an_active_key_is_refused() {
    let app = spawn_app().await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "bot", "bans.read").await);

    let (_, prompt) = run(&app, ids::ALICE_ID, "revoke", "bot").await;
    let done = press(&app, ids::ALICE_ID, &prompt, ":cancel").await;
    assert!(done.content.contains("Cancelled"), "{}", done.content);
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200);

    let (_, refused) = run(&app, ids::ALICE_ID, "delete", "bot").await;
    assert!(refused.all_text().contains("still active"), "{}", refused.all_text());
    assert!(refused.custom_ids().is_empty(), "no confirm buttons for a refused delete");
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn rotate_with_grace_shows_a_new_secret_and_keeps_the_old_one_until_the_grace_ends() {
    let app = spawn_app().await;
    let old = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);

    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "rotate")
        .string("key", "game")
        .string("grace", "3s")
        .send()
        .await
        .unwrap();
    let prompt = app.double.wait_for_response(&sent, WAIT).await.unwrap();
    let done = press(&app, ids::ALICE_ID, &prompt, ":confirm").await;
    let new = token_regex().find(&done.content).expect("the new secret").as_str().to_owned();

    assert_ne!(new, old);
    assert!(done.content.contains("shown only once"));
    assert_eq!(app.get("/v1/verify", &new).await.status(), 200);
    assert_eq!(app.get("/v1/verify", &old).await.status(), 200, "the old secret works during the grace");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(app.get("/v1/verify", &old).await.status(), 401, "the old secret stops after the grace");
    assert_eq!(app.get("/v1/verify", &new).await.status(), 200);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn rotate_until_unused_shows_where_the_old_secret_was_last_used_and_posts_its_retirement() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let old = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);

    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "rotate")
        .string("key", "game")
        .string("grace_until_unused", "2s")
        .send()
        .await
        .unwrap();
    let prompt = app.double.wait_for_response(&sent, WAIT).await.unwrap();
    assert!(prompt.all_text().contains("until it has not been used for 2s"), "{}", prompt.all_text());
    let done = press(&app, ids::ALICE_ID, &prompt, ":confirm").await;
    assert!(done.content.contains("until it has not been used for 2s"), "{}", done.content);
    assert_eq!(app.get("/v1/verify", &old).await.status(), 200, "a running server's old secret still works");

    let (_, info) = run(&app, ids::ALICE_ID, "info", "game").await;
    let text = info.all_text();
    assert!(text.contains("until unused for 2s") && text.contains("from `127.0.0.1`"), "{text}");

    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("rotation completed"), WAIT * 2)
        .await
        .expect("the retirement is posted to the audit channel");
    assert!(posted.text().contains("was not presented for 2s"), "{}", posted.text());
    assert_eq!(app.get("/v1/verify", &old).await.status(), 401, "retired once unused");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn members_without_manage_server_are_refused_even_when_the_command_is_exposed() {
    let app = spawn_app().await;

    let plain = create(&app, ids::PAT_ID, "sneaky", "bans.write").await;
    // A server override exposes the command, but the member still lacks Manage Server.
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::DANA_ID)
        .subcommand("apikey", "list")
        .permissions(discord_double::config::permissions::EVERYONE_DEFAULT)
        .send()
        .await
        .unwrap();
    let overridden = app.double.wait_for_response(&sent, WAIT).await.unwrap();

    for reply in [&plain, &overridden] {
        assert!(reply.ephemeral());
        assert!(reply.all_text().contains("Manage Server"), "{}", reply.all_text());
        assert!(token_regex().find(&reply.all_text()).is_none());
    }
    let listed = app.cli(&["keys", "list", "--guild", &ids::DEMO_GUILD_ID.to_string(), "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]", "nothing was created");
    let apikey = app.double.wait_for_command(Some(ids::DEMO_GUILD_ID), "apikey", WAIT).await.expect("registered");
    assert_eq!(apikey["default_member_permissions"], "32", "Manage Server by default");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn the_fourth_create_hits_the_limit_with_a_hint_to_revoke() {
    let app = spawn_app().await;
    for n in 0..3 {
        secret_in(&create(&app, ids::ALICE_ID, &format!("key {n}"), "bans.read").await);
    }

    let fourth = create(&app, ids::ALICE_ID, "one too many", "bans.read").await;

    let text = fourth.all_text();
    assert!(text.contains("3 active") && text.contains("/apikey revoke"), "{text}");
    assert!(token_regex().find(&text).is_none());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn bad_options_get_clear_messages_and_create_nothing() {
    let app = spawn_app().await;
    let cases = [
        (vec![("name", "x"), ("scopes", "bans.read,admin")], "unknown scope"),
        (vec![("name", "x"), ("scopes", "bans.read"), ("expires_in", "0s")], "zero"),
        (vec![("name", "x"), ("scopes", "bans.read"), ("expires_in", "soon")], "not a duration"),
        (vec![("name", "x"), ("scopes", "bans.read"), ("allowed_ips", "10.0.0.0/33")], "not an IP"),
        (vec![("name", "   "), ("scopes", "bans.read")], "empty"),
    ];
    for (options, needle) in cases {
        let mut b = app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "create");
        for (k, v) in &options {
            b = b.string(k, v);
        }
        let sent = b.send().await.unwrap();
        let reply = app.double.wait_for_response(&sent, WAIT).await.unwrap();
        assert!(reply.ephemeral());
        assert!(reply.all_text().contains(needle), "{options:?}: {}", reply.all_text());
    }
    let (_, unknown) = run(&app, ids::ALICE_ID, "info", "no-such-key").await;
    assert!(unknown.all_text().contains("No key in this server matches"), "{}", unknown.all_text());
    let listed = app.cli(&["keys", "list", "--guild", &ids::DEMO_GUILD_ID.to_string(), "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn another_guilds_keys_never_appear_in_list_info_or_autocomplete() {
    let app = spawn_app_with(Options {
        env: vec![("GUILDKEY_REGISTER_COMMANDS".into(), "global".into())],
        ..Options::default()
    })
    .await;
    app.create_key(ids::OTHER_GUILD_ID, "other secret thing", "bans.read", &[]);
    secret_in(&create(&app, ids::ALICE_ID, "mine", "bans.read").await);

    let sent = app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list").send().await.unwrap();
    let list = app.double.wait_for_response(&sent, WAIT).await.unwrap();
    let (_, info) = run(&app, ids::ALICE_ID, "info", "other secret thing").await;
    let ac = app
        .double
        .autocomplete(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "info")
        .focused("key", "")
        .send()
        .await
        .unwrap();
    let choices = app.double.wait_for_response(&ac, WAIT).await.unwrap();

    assert!(list.all_text().contains("mine") && !list.all_text().contains("other secret thing"));
    assert!(info.all_text().contains("No key in this server matches"), "{}", info.all_text());
    assert_eq!(choices.callback_type, 8);
    assert!(choices.choice_names().iter().any(|n| n.contains("mine")), "{:?}", choices.choice_names());
    assert!(choices.choice_names().iter().all(|n| !n.contains("other")), "{:?}", choices.choice_names());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn scope_autocomplete_continues_the_list() {
    let app = spawn_app().await;
    let ac = app
        .double
        .autocomplete(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "x")
        .focused("scopes", "bans.read, ba")
        .send()
        .await
        .unwrap();
    let reply = app.double.wait_for_response(&ac, WAIT).await.unwrap();
    assert_eq!(reply.choice_values(), ["bans.read, bans.write"]);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_admin_suspends_a_key_which_is_refused_until_resumed() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = secret_in(&create(&app, ids::ALICE_ID, "game", "bans.read").await);
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200);

    let (_, reply) = run(&app, ids::ALICE_ID, "suspend", "game").await;
    assert!(reply.ephemeral() && reply.text().contains("Suspended"), "{}", reply.text());
    let refused = app.get("/v1/verify", &token).await;
    assert_eq!(refused.status(), 401, "refused at once, before the reply");
    assert_eq!(json(refused).await["error"]["reason"], "key_suspended");
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key suspended"), WAIT)
        .await
        .expect("an audit embed");
    assert!(posted.text().contains(&format!("<@{}>", ids::ALICE_ID)), "{}", posted.text());

    // Listed as suspended; suspending again, or deleting it, is refused.
    let (_, listed) = run(&app, ids::ALICE_ID, "info", "game").await;
    assert!(listed.text().contains("suspended"), "{}", listed.text());
    let (_, again) = run(&app, ids::ALICE_ID, "suspend", "game").await;
    assert!(again.text().contains("is suspended"), "{}", again.text());
    let (_, delete) = run(&app, ids::ALICE_ID, "delete", "game").await;
    assert!(delete.text().contains("still active"), "{}", delete.text());

    let (_, resumed) = run(&app, ids::ALICE_ID, "resume", "game").await;
    assert!(resumed.text().contains("Resumed"), "{}", resumed.text());
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200, "the same secret works again");
    let (_, twice) = run(&app, ids::ALICE_ID, "resume", "game").await;
    assert!(twice.text().contains("not suspended"), "{}", twice.text());
    // A plain member cannot suspend.
    let (_, pat) = run(&app, ids::PAT_ID, "suspend", "game").await;
    assert!(!pat.text().contains("Suspended"), "{}", pat.text());
    assert_eq!(app.get("/v1/verify", &token).await.status(), 200);
    app.double.assert_no_violations();
}
