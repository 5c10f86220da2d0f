//! The audit channel: what the bot posts there, and turning it off and on.

use super::*;

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
