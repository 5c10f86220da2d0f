//! The Discord bot, end to end: the real binary's serenity/poise client
//! connected to the Discord double, driven by INTERACTION_CREATE events,
//! judged by the REST calls it makes (validated against Discord's OpenAPI
//! description) and by the HTTP listener's answers.

mod support;

use std::time::{Duration, Instant};

use discord_double::{DoubleConfig, FaultRule, InteractionReply, SentInteraction};
use support::{ids, json, spawn_against, spawn_app, spawn_app_with, token_regex, App, Options, BOT_TOKEN};

const WAIT: Duration = Duration::from_secs(10);

async fn create(app: &App, user: u64, name: &str, scopes: &str) -> InteractionReply {
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, user)
        .subcommand("apikey", "create")
        .string("name", name)
        .string("scopes", scopes)
        .send()
        .await
        .expect("send /apikey create");
    app.double.wait_for_response(&sent, WAIT).await.expect("a reply")
}

fn secret_in(reply: &InteractionReply) -> String {
    token_regex().find(&reply.all_text()).expect("a token in the reply").as_str().to_owned()
}

async fn run(app: &App, user: u64, sub: &str, key: &str) -> (SentInteraction, InteractionReply) {
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, user)
        .subcommand("apikey", sub)
        .string("key", key)
        .send()
        .await
        .expect("send the command");
    let reply = app.double.wait_for_response(&sent, WAIT).await.expect("a reply");
    (sent, reply)
}

/// Presses a button on the bot's reply and waits for the message to change.
async fn press(app: &App, user: u64, reply: &InteractionReply, which: &str) -> InteractionReply {
    let id = reply.custom_ids().into_iter().find(|c| c.ends_with(which)).expect("the button");
    let message = reply.followups.last().cloned().or(reply.message.clone()).expect("the prompt message");
    let click = app.double.click(ids::DEMO_GUILD_ID, user, &message, &id).await.expect("click");
    app.double
        .wait_for_response_matching(&click, |r| r.components.is_empty() && !r.content.is_empty(), WAIT)
        .await
        .expect("the prompt is answered")
}

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
    let token = secret_in(&create(&app, ids::MORGAN_ID, "verifier", "roles.write").await);

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
async fn a_failing_audit_post_leaves_the_change_applied() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    app.double.fault(FaultRule::on("POST", "/channels/{channel_id}/messages").status(500));

    let first = secret_in(&create(&app, ids::ALICE_ID, "during outage", "bans.read").await);
    app.double.clear_faults();
    app.double.delete_channel(ids::AUDIT_LOG_CHANNEL_ID);
    let second = secret_in(&create(&app, ids::ALICE_ID, "channel gone", "bans.read").await);

    assert_eq!(app.get("/v1/verify", &first).await.status(), 200);
    assert_eq!(app.get("/v1/verify", &second).await.status(), 200);
    let listed = app.cli(&["keys", "list", "--guild", &ids::DEMO_GUILD_ID.to_string(), "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let logs = app.logs().join("\n");
    assert!(logs.contains("failed to post an audit entry"), "the failure is logged");
}

#[tokio::test]
async fn changes_made_with_the_cli_are_posted_to_the_audit_channel() {
    let app = spawn_app().await;
    app.set_audit_channel().await;

    app.create_key(ids::DEMO_GUILD_ID, "from the shell", "audit.read", &[]);

    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("from the shell"), WAIT)
        .await
        .expect("the CLI's change is posted");
    assert!(posted.text().contains("The operator CLI"), "{}", posted.text());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn keys_expiring_in_two_days_and_in_20_hours_get_one_reminder_each_even_across_a_restart() {
    // Checks every second (`keys.expiry_check_seconds`) instead of every minute.
    let opts = Options { config: "[keys]\nexpiry_check_seconds = 1\n".into(), ..Options::default() };
    let mut app = spawn_app_with(opts).await;
    app.set_audit_channel().await;

    let secret = app.create_key(ids::DEMO_GUILD_ID, "nightly export", "audit.read", &["--expires", "2d"]);
    // Past both thresholds at once: only the more urgent one is announced.
    app.create_key(ids::DEMO_GUILD_ID, "hourly sync", "audit.read", &["--expires", "20h"]);

    let is_reminder = |m: &discord_double::RecordedMessage| m.text().contains("API key expires within");
    let is_week = |m: &discord_double::RecordedMessage| is_reminder(m) && m.text().contains("nightly export");
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, is_week, WAIT)
        .await
        .expect("an expiry reminder in the audit channel");
    let day = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| is_reminder(m) && m.text().contains("hourly sync"), WAIT)
        .await
        .expect("the other key's reminder");
    assert!(day.text().contains("API key expires within 1 day"), "{}", day.text());
    let text = posted.text();
    assert!(text.contains("API key expires within 7 days"), "{text}");
    assert!(text.contains("nightly export") && text.contains(&secret[..12]), "the key's name and prefix: {text}");
    assert!(text.contains("guildkey"), "by guildkey: {text}");
    let expires_ms =
        support::db_scalar(&app.db_url, "select expires_at from api_key where name = 'nightly export'").unwrap();
    assert!(text.contains(&format!("<t:{}:R>", expires_ms / 1000)), "the expiry as a Discord timestamp: {text}");

    // A while later, and after a restart, still exactly one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.wait_for_audit_outbox().await;
    let reminders: Vec<_> =
        app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).into_iter().filter(|m| is_reminder(m)).collect();
    assert_eq!(
        reminders.len(),
        2,
        "one reminder per key, never repeated: {:?}",
        reminders.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    let recorded = support::db_scalar(&app.db_url, "select count(*) from audit_event where action = 'key.expiring'");
    assert_eq!(recorded, Some(2));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn the_command_is_registered_for_servers_only() {
    let app = spawn_app_with(Options {
        env: vec![("GUILDKEY_REGISTER_COMMANDS".into(), "global".into())],
        ..Options::default()
    })
    .await;
    let apikey = app.double.wait_for_command(None, "apikey", WAIT).await.expect("registered globally");

    assert_eq!(apikey["contexts"], serde_json::json!([0]), "guild context only: {apikey}");
    // Discord therefore never offers it in DMs; the double refuses like Discord would.
    let refused = app.double.dm_slash(ids::ALICE_ID).subcommand("apikey", "list").send().await;
    assert!(refused.is_err());
    app.double.assert_no_violations();
}

/// Prints the time from INTERACTION_CREATE to the interaction callback over
/// 100 commands (median and max); the figure is for the README and notes.
#[tokio::test]
async fn interaction_latency_report() {
    let app = spawn_app().await;
    let mut samples = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let sent =
            app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list").send().await.unwrap();
        let call = app
            .double
            .wait_for_call(|c| c.method == "POST" && c.path.contains(&format!("/interactions/{}/", sent.id)), WAIT)
            .await
            .expect("a callback");
        samples.push(call.at.saturating_duration_since(started));
        app.double.wait_for_response(&sent, WAIT).await.unwrap();
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!("interaction latency over {} commands: median {:?}, max {:?}", samples.len(), median, max);
    assert!(max < Duration::from_secs(3), "every interaction is answered inside Discord's 3-second window");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_key_named_like_a_masked_link_is_shown_as_text_in_the_audit_channel_and_the_bots_replies() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let name = "[click](https://evil.example)\u{202E}";

    app.create_key(ids::DEMO_GUILD_ID, name, "bans.read", &[]);

    let escaped = r"\[click\]\(https://evil.example\)\<U+202E>";
    let posted = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key created"), WAIT)
        .await
        .expect("an audit embed");
    let text = posted.text();
    assert!(text.contains(escaped), "the name is escaped: {text}");
    assert!(!text.contains("[click](") && !text.contains('\u{202E}'), "a live masked link or bidi override: {text}");
    let sent = app.double.slash(ids::DEMO_GUILD_ID, ids::ALICE_ID).subcommand("apikey", "list").send().await.unwrap();
    let list = app.double.wait_for_response(&sent, WAIT).await.unwrap().all_text();
    assert!(list.contains(escaped) && !list.contains("[click]("), "the list escapes it too: {list}");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn turning_audit_posts_off_and_on_again_shows_the_channel_what_changed_meanwhile() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let guild = ids::DEMO_GUILD_ID.to_string();
    let kept = app.create_key(ids::DEMO_GUILD_ID, "kept quiet", "bans.read", &[]);
    app.wait_for_audit_outbox().await;

    // Off: said in the channel being turned off.
    app.turn_audit_channel_off().await;
    let off = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("off (was"), WAIT)
        .await
        .expect("turning posts off is posted where they went");
    assert!(off.text().contains(&format!("<@{}>", ids::ALICE_ID)), "{}", off.text());

    // Changes while off, each handled by the outbox (and so posted nowhere).
    let hidden = app.create_key(ids::DEMO_GUILD_ID, "made in the dark", "bans.read", &[]);
    assert!(app.cli(&["keys", "revoke", &kept[..12], "--guild", &guild]).status.success());
    app.wait_for_audit_outbox().await;
    let before_on = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).len();

    // On again.
    app.set_audit_channel().await;

    let summary = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("While audit posts were off"), WAIT)
        .await
        .expect("the channel is told what happened while posts were off");
    let text = summary.text();
    assert!(text.contains("2 changes"), "how many: {text}");
    assert!(
        text.contains("key.created") && text.contains("made in the dark") && text.contains(&hidden[..12]),
        "{text}"
    );
    assert!(text.contains("key.revoked") && text.contains("kept quiet") && text.contains(&kept[..12]), "{text}");
    assert!(text.contains("The operator CLI"), "who: {text}");
    assert!(text.contains(&format!("turned off by <@{}>", ids::ALICE_ID)), "{text}");
    let after_on = app.double.messages_in(ids::AUDIT_LOG_CHANNEL_ID);
    assert_eq!(after_on.len(), before_on + 1, "one message: the channel set, with its summary");
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

async fn leak_guard(app: &App, state: &str) -> InteractionReply {
    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "leak-guard")
        // A choice option: its index, as Discord sends it.
        .integer("state", if state == "on" { 0 } else { 1 })
        .send()
        .await
        .expect("send /apikey leak-guard");
    app.double.wait_for_response(&sent, WAIT).await.expect("a reply")
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
