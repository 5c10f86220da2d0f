//! Every implemented REST operation answers like Discord and its responses validate against
//! the spec (zero violations); plus interaction follow-ups, DMs and commands CRUD.

mod common;

use common::{double_and_bot, init_tracing, Api, WAIT};
use discord_double::*;
use serde_json::json;

#[tokio::test]
async fn every_read_and_moderation_route_answers_within_the_schema() {
    init_tracing();
    let double = Double::start(DoubleConfig::demo()).await.unwrap();
    let api = Api::new(&double, "API%20key%20game");
    let g = DEMO_GUILD_ID;
    let app = APPLICATION_ID;

    let (s, v) = api.call("GET", "/gateway", None).await;
    assert_eq!((s, v["url"].as_str().unwrap()), (200, double.gateway_url().as_str()));
    let (s, v) = api.call("GET", "/gateway/bot", None).await;
    assert_eq!((s, v["shards"].as_u64()), (200, Some(1)));
    let (s, v) = api.call("GET", "/users/@me", None).await;
    assert_eq!((s, v["id"].as_str()), (200, Some(BOT_USER_ID.to_string().as_str())));
    assert_eq!(api.call("GET", &format!("/users/{ALICE_ID}"), None).await.1["username"], "alice");
    assert_eq!(api.call("GET", "/users/42", None).await.1["code"], 10013);
    assert_eq!(api.call("GET", "/applications/@me", None).await.0, 200);
    assert_eq!(api.call("GET", "/oauth2/applications/@me", None).await.0, 200);

    let (s, v) = api.call("GET", &format!("/guilds/{g}?with_counts=true"), None).await;
    assert_eq!((s, v["approximate_member_count"].as_u64()), (200, Some(5)));
    assert_eq!(api.call("GET", &format!("/guilds/{g}/channels"), None).await.1.as_array().unwrap().len(), 2);
    assert_eq!(api.call("GET", &format!("/guilds/{g}/roles"), None).await.1.as_array().unwrap().len(), 5);
    let (s, v) = api.call("GET", &format!("/guilds/{g}/members/{MORGAN_ID}"), None).await;
    assert_eq!((s, v["roles"].clone()), (200, json!([MANAGER_ROLE_ID.to_string()])));
    assert_eq!(api.call("GET", &format!("/channels/{GENERAL_CHANNEL_ID}"), None).await.1["name"], "general");

    // Messages.
    let (s, m) = api
        .call(
            "POST",
            &format!("/channels/{GENERAL_CHANNEL_ID}/messages"),
            Some(json!({"content": "hi", "embeds": [{"title": "t", "fields": [{"name": "a", "value": "b"}]}]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(m["embeds"][0]["type"], "rich");
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.call("GET", &format!("/channels/{GENERAL_CHANNEL_ID}/messages/{id}"), None).await.1["content"],
        "hi"
    );
    assert_eq!(
        api.call("GET", &format!("/channels/{GENERAL_CHANNEL_ID}/messages?limit=10"), None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, e) =
        api.call("POST", &format!("/channels/{GENERAL_CHANNEL_ID}/messages"), Some(json!({"content": ""}))).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(50006)));

    // Bans.
    assert_eq!(
        api.call("PUT", &format!("/guilds/{g}/bans/{STRANGER_ID}"), Some(json!({"delete_message_seconds": 0}))).await.0,
        204
    );
    assert_eq!(double.bans(g).get(&STRANGER_ID), Some(&Some("API key game".to_string())));
    let (s, b) = api.call("GET", &format!("/guilds/{g}/bans/{STRANGER_ID}"), None).await;
    assert_eq!((s, b["reason"].as_str()), (200, Some("API key game")));
    assert_eq!(api.call("GET", &format!("/guilds/{g}/bans"), None).await.1.as_array().unwrap().len(), 1);
    assert_eq!(api.call("DELETE", &format!("/guilds/{g}/bans/{STRANGER_ID}"), None).await.0, 204);
    assert_eq!(api.call("DELETE", &format!("/guilds/{g}/bans/{STRANGER_ID}"), None).await.1["code"], 10026);
    double.add_ban(g, PAT_ID, Some("by hand"));
    assert_eq!(api.call("GET", &format!("/guilds/{g}/bans/{PAT_ID}"), None).await.1["reason"], "by hand");

    // Roles: below the bot works, idempotently; above it and the bot's own managed role do not.
    let role_path = |u: u64, r: u64| format!("/guilds/{g}/members/{u}/roles/{r}");
    assert_eq!(api.call("PUT", &role_path(MORGAN_ID, VERIFIED_ROLE_ID), None).await.0, 204);
    assert_eq!(api.call("PUT", &role_path(MORGAN_ID, VERIFIED_ROLE_ID), None).await.0, 204);
    assert_eq!(double.member_roles(g, MORGAN_ID), vec![MANAGER_ROLE_ID, VERIFIED_ROLE_ID]);
    assert_eq!(api.call("DELETE", &role_path(MORGAN_ID, VERIFIED_ROLE_ID), None).await.0, 204);
    assert_eq!(double.member_roles(g, MORGAN_ID), vec![MANAGER_ROLE_ID]);
    assert_eq!(api.call("PUT", &role_path(MORGAN_ID, MANAGER_ROLE_ID), None).await.1["code"], 50013);
    assert_eq!(api.call("PUT", &role_path(MORGAN_ID, BOT_ROLE_ID), None).await.1["code"], 50013);
    assert_eq!(api.call("PUT", &role_path(42, VERIFIED_ROLE_ID), None).await.1["code"], 10007);

    // Kick.
    assert_eq!(api.call("DELETE", &format!("/guilds/{g}/members/{DANA_ID}"), None).await.0, 204);
    assert!(!double.is_member(g, DANA_ID));
    assert_eq!(api.call("DELETE", &format!("/guilds/{g}/members/{ALICE_ID}"), None).await.1["code"], 50013);

    // Commands: global and guild CRUD, ids stable across overwrites.
    let cmd =
        json!({"name": "ping", "description": "Ping", "type": 1, "default_member_permissions": "32", "options": []});
    let (s, list) = api.call("PUT", &format!("/applications/{app}/commands"), Some(json!([cmd]))).await;
    assert_eq!(s, 200);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (_, again) = api.call("PUT", &format!("/applications/{app}/commands"), Some(json!([cmd]))).await;
    assert_eq!(again[0]["id"], json!(id), "same name keeps its id");
    assert_eq!(api.call("GET", &format!("/applications/{app}/commands/{id}"), None).await.1["name"], "ping");
    assert_eq!(api.call("GET", &format!("/applications/{app}/commands"), None).await.1.as_array().unwrap().len(), 1);
    assert_eq!(api.call("DELETE", &format!("/applications/{app}/commands/{id}"), None).await.0, 204);
    let (s, _) = api.call("POST", &format!("/applications/{app}/guilds/{g}/commands"), Some(cmd.clone())).await;
    assert_eq!(s, 201);
    let (s, c) = api.call("POST", &format!("/applications/{app}/guilds/{g}/commands"), Some(cmd.clone())).await;
    assert_eq!(s, 200);
    let gid = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["guild_id"], json!(g.to_string()));
    assert_eq!(api.call("GET", &format!("/applications/{app}/guilds/{g}/commands/{gid}"), None).await.0, 200);
    assert_eq!(
        api.call("GET", &format!("/applications/{app}/guilds/{g}/commands"), None).await.1.as_array().unwrap().len(),
        1
    );
    assert_eq!(api.call("DELETE", &format!("/applications/{app}/guilds/{g}/commands/{gid}"), None).await.0, 204);
    let (s, e) = api.call("PUT", &format!("/applications/{app}/commands"), Some(json!([cmd, cmd]))).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(50035)));
    assert_eq!(api.call("GET", "/applications/42/commands", None).await.1["code"], 50001);

    // A method Discord does not have on an existing path.
    assert_eq!(api.call("PATCH", "/gateway", None).await.0, 405);
    let v = double.violations();
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].kind, ViolationKind::UnknownOperation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_edits_deletes_and_with_response() {
    let (double, _bot) = double_and_bot().await;
    let api = Api::new(&double, "API%20key%20game");
    let sent = double
        .slash(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .arg("name", "game")
        .arg("scopes", "bans.read")
        .send()
        .await
        .unwrap();
    let reply = double.wait_for_response(&sent, WAIT).await.unwrap();
    let hook = format!("/webhooks/{APPLICATION_ID}/{}", sent.token);

    // A public follow-up and an ephemeral one.
    let (s, f1) = api.call("POST", &hook, Some(json!({"content": "public follow-up"}))).await;
    assert_eq!(s, 200);
    let (_, f2) = api.call("POST", &format!("{hook}?wait=true"), Some(json!({"content": "secret", "flags": 64}))).await;
    assert_eq!(f2["flags"], 64);
    let f1_id = f1["id"].as_str().unwrap().to_string();
    let (s, edited) =
        api.call("PATCH", &format!("{hook}/messages/{f1_id}"), Some(json!({"content": "edited follow-up"}))).await;
    assert_eq!((s, edited["content"].as_str()), (200, Some("edited follow-up")));
    assert!(edited["edited_timestamp"].is_string());
    assert_eq!(api.call("GET", &format!("{hook}/messages/{f1_id}"), None).await.1["content"], "edited follow-up");
    let reply2 = double.interaction_response(&sent).unwrap();
    assert_eq!(reply2.followups.len(), 2);
    assert!(reply2.all_text().contains("edited follow-up"));
    assert_eq!(double.messages_in(reply.message.as_ref().unwrap().channel_id).len(), 1, "only the public follow-up");

    // @original: get, edit, delete.
    let (s, o) = api.call("GET", &format!("{hook}/messages/@original"), None).await;
    assert_eq!((s, o["id"].as_str().map(str::to_string)), (200, reply.message_id.map(|m| m.to_string())));
    assert_eq!(o["interaction_metadata"]["id"], json!(sent.id.to_string()));
    assert_eq!(
        api.call("PATCH", &format!("{hook}/messages/@original"), Some(json!({"content": "new"}))).await.1["content"],
        "new"
    );
    assert_eq!(double.interaction_response(&sent).unwrap().content, "new");
    assert_eq!(api.call("DELETE", &format!("{hook}/messages/@original"), None).await.0, 204);
    assert!(double.interaction_response(&sent).unwrap().deleted);
    assert_eq!(api.call("GET", &format!("{hook}/messages/@original"), None).await.1["code"], 10008);
    assert_eq!(api.call("DELETE", &format!("{hook}/messages/{f1_id}"), None).await.0, 204);

    // Bad tokens.
    assert_eq!(
        api.call("POST", &format!("/webhooks/{APPLICATION_ID}/nope"), Some(json!({"content": "x"}))).await.1["code"],
        50027
    );
    assert_eq!(
        api.call("POST", &format!("/webhooks/42/{}", sent.token), Some(json!({"content": "x"}))).await.1["code"],
        10015
    );

    // with_response=true returns the callback resource.
    let sent = double
        .autocomplete(DEMO_GUILD_ID, ALICE_ID)
        .subcommand("apikey", "create")
        .focused("scopes", "")
        .send()
        .await
        .unwrap();
    let r = double.wait_for_response(&sent, WAIT).await.unwrap();
    assert_eq!(r.choices.len(), 3);
    double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_types_with_response_and_double_ack() {
    let (double, _bot) = double_and_bot().await;
    let api = Api::new(&double, "API%20key%20game");
    // A guild command poise does not know: the bot leaves its interactions to the test.
    let cmd = json!({"name": "ping", "description": "Ping", "type": 1});
    let (s, _) =
        api.call("POST", &format!("/applications/{APPLICATION_ID}/guilds/{DEMO_GUILD_ID}/commands"), Some(cmd)).await;
    assert_eq!(s, 201);
    let sent = double.slash(DEMO_GUILD_ID, MORGAN_ID).command("ping").send().await.unwrap();
    let callback = format!("/interactions/{}/{}/callback", sent.id, sent.token);

    // Type 8 (autocomplete result) does not answer an application command.
    let (s, e) = api.call("POST", &callback, Some(json!({"type": 8, "data": {"choices": []}}))).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(50035)));
    // An empty message is refused.
    let (s, e) = api.call("POST", &callback, Some(json!({"type": 4, "data": {"content": ""}}))).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(50006)));
    // with_response=true: 200 with the interaction and the created message.
    let (s, r) = api
        .call("POST", &format!("{callback}?with_response=true"), Some(json!({"type": 4, "data": {"content": "pong"}})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["interaction"]["id"], json!(sent.id.to_string()));
    assert_eq!(r["interaction"]["response_message_ephemeral"], false);
    assert_eq!(r["resource"]["message"]["content"], "pong");
    assert_eq!(r["resource"]["message"]["type"], 20);
    // Public replies are channel messages.
    assert_eq!(double.messages_in(sent.channel_id)[0].content, "pong");
    double.assert_no_violations();

    // Twice: 400 40060 and a protocol violation.
    let (s, e) = api.call("POST", &callback, Some(json!({"type": 4, "data": {"content": "x"}}))).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(40060)));
    assert_eq!(double.violations().len(), 1);
    // Unknown interaction.
    let (s, e) =
        api.call("POST", "/interactions/1/tok/callback", Some(json!({"type": 4, "data": {"content": "x"}}))).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(10062)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_use_of_a_guild_only_command_is_refused_and_dm_payloads_have_no_member() {
    let (double, _bot) = double_and_bot().await;
    let err = double
        .dm_slash(PAT_ID)
        .subcommand("apikey", "create")
        .arg("name", "x")
        .arg("scopes", "y")
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("guild-only"), "{err}");
    // `.unchecked()` sends it anyway, to test the bot's own guard (here poise's guild_only
    // check stops it before the command runs; the test bot's on_error only logs).
    let sent = double
        .dm_slash(PAT_ID)
        .subcommand("apikey", "create")
        .arg("name", "x")
        .arg("scopes", "y")
        .unchecked()
        .send()
        .await
        .unwrap();
    assert!(double
        .gateway_frames()
        .iter()
        .any(|f| f.t.as_deref() == Some("INTERACTION_CREATE") && f.d["id"] == json!(sent.id.to_string())));
    // Register a DM-capable global command and use it in a DM: the payload has `user`, no
    // `member`, no `guild_id`, context 1.
    let http = common::http_for(&double);
    http.set_application_id(APPLICATION_ID.into());
    let cmd = json!({"name": "ping", "description": "Ping", "type": 1, "contexts": [0, 1]});
    http.create_global_command(&cmd).await.unwrap();
    let sent = double.dm_slash(PAT_ID).command("ping").send().await.unwrap();
    let frame =
        double.gateway_frames().into_iter().rev().find(|f| f.t.as_deref() == Some("INTERACTION_CREATE")).unwrap();
    assert_eq!(frame.d["id"], json!(sent.id.to_string()));
    assert!(frame.d.get("member").is_none() && frame.d.get("guild_id").is_none());
    assert_eq!(frame.d["user"]["id"], json!(PAT_ID.to_string()));
    assert_eq!(frame.d["context"], 1);
    assert_eq!(frame.d["authorizing_integration_owners"], json!({"0": "0"}));
    double.assert_no_violations();
}

#[tokio::test]
async fn a_guild_the_bot_is_not_in_is_missing_access_and_an_unknown_one_unknown_guild() {
    init_tracing();
    let mut cfg = DoubleConfig::demo();
    let other = cfg.guilds.iter_mut().find(|g| g.id == OTHER_GUILD_ID).expect("the other guild");
    other.members.retain(|m| m.user_id != BOT_USER_ID);
    let double = Double::start(cfg).await.unwrap();
    let api = Api::new(&double, "API%20key%20game");

    let (s, e) = api.call("GET", &format!("/guilds/{OTHER_GUILD_ID}?with_counts=true"), None).await;
    assert_eq!((s, e["code"].as_u64()), (403, Some(50001)));
    let (s, e) = api.call("GET", &format!("/guilds/{OTHER_GUILD_ID}/members/{BOT_USER_ID}"), None).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(10007)));
    let (s, e) = api.call("GET", "/guilds/1000000000000000777?with_counts=true", None).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(10004)));
    let (s, v) = api.call("GET", &format!("/guilds/{DEMO_GUILD_ID}?with_counts=true"), None).await;
    assert_eq!((s, v["owner_id"].as_str()), (200, Some(ALICE_ID.to_string().as_str())));
    double.assert_no_violations();
}
