//! What guildkey sends Discord held to Discord's documented limits (the
//! double enforces them: `tests/discord-double/README.md`): `/apikey list`
//! within 6,000 characters a message, no blank embed field, an audit post
//! Discord refuses retried once without its details and then recorded as not
//! posted, and `/apikey requests` ending before its interaction token dies.

use super::*;

use discord_double::message_rules::{embeds_total, MAX_EMBEDS_TOTAL};
use discord_double::RecordedMessage;

const DEMO: u64 = ids::DEMO_GUILD_ID;

/// Every message an interaction's answer is made of (the reply, then its
/// follow-ups).
fn messages_of(reply: &InteractionReply) -> Vec<RecordedMessage> {
    reply.message.iter().chain(reply.followups.iter()).cloned().collect()
}

#[tokio::test]
async fn apikey_list_with_60_keys_some_revoked_sends_every_message_within_discords_limits() {
    // Arrange: 60 keys with long names and every scope, 20 of them revoked.
    let opts = Options { config: "[keys]\nmax_per_guild = 100\n".into(), ..Options::default() };
    let app = spawn_app_with(opts).await;
    let mut prefixes = Vec::new();
    for i in 0..60 {
        let name = format!("game server {i:02} — europe-west shard for the weekend tournament");
        let scopes = "guild.read,bans.read,bans.write,roles.write,audit.read";
        let secret = app.create_key(DEMO, &name, scopes, &["--expires", "300d"]);
        prefixes.push(secret[..12].to_owned());
    }
    for prefix in &prefixes[..20] {
        let out = app.cli(&["keys", "revoke", prefix]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Act
    let sent = app.double.slash(DEMO, ids::ALICE_ID).subcommand("apikey", "list").send().await.unwrap();
    let reply = app
        .double
        .wait_for_response_matching(&sent, |r| r.all_text().contains("20 revoked"), WAIT)
        .await
        .expect("the list");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = app.double.interaction_response(&sent).unwrap_or(reply);

    // Assert: every message within 6,000 characters as Discord counts them,
    // every live key listed, the revoked ones summed up.
    let messages = messages_of(&reply);
    let sizes: Vec<usize> = messages.iter().map(|m| embeds_total(&m.embeds)).collect();
    let largest = sizes.iter().copied().max().unwrap();
    let fields: Vec<usize> =
        messages.iter().map(|m| m.embeds.iter().map(|e| e["fields"].as_array().map_or(0, Vec::len)).sum()).collect();
    eprintln!(
        "/apikey list, 60 keys (20 revoked): {} messages of {sizes:?} characters, {fields:?} fields; largest {largest}",
        sizes.len()
    );
    assert!(largest <= MAX_EMBEDS_TOTAL, "{sizes:?}");
    let refused: Vec<_> = app.double.calls().into_iter().filter(|c| c.status == 400).collect();
    assert!(refused.is_empty(), "Discord refused: {refused:?}");
    let text = reply.all_text();
    for prefix in &prefixes[20..] {
        assert!(text.contains(prefix.as_str()), "{prefix} listed");
    }
    assert!(text.contains("20 revoked"), "{text}");
    assert_eq!(text.matches("**Revoked**").count(), 0, "revoked keys are summed up, not listed in full");
    app.double.assert_no_violations();
}

/// Waits until the listener knows a key the CLI just made.
async fn until_known(app: &App, token: &str) {
    let started = Instant::now();
    while app.get("/v1/verify", token).await.status().as_u16() != 200 {
        assert!(started.elapsed() < WAIT, "the listener never learnt of the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs a leak report for `token` with `source`.
async fn report_leak(app: &App, token: &str, source: &str) {
    let body = serde_json::json!([{ "token": token, "type": "guildkey_api_key", "source": source, "url": "" }]);
    let resp = app
        .http
        .post(app.url("/v1/leaked"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn a_leak_report_with_a_blank_source_posts_its_audit_entry() {
    // Arrange
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let token = app.create_key(DEMO, "game", "bans.read", &[]);
    until_known(&app, &token).await;

    // Act
    report_leak(&app, &token, " \t ").await;

    // Assert: posted, no field blank.
    let post = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key revoked"), WAIT)
        .await
        .expect("the revocation is posted");
    for field in post.embeds[0]["fields"].as_array().unwrap() {
        assert!(!field["value"].as_str().unwrap().trim().is_empty(), "{field}");
    }
    app.wait_for_audit_outbox().await;
    let failed = support::db_scalar(&app.db_url, "select count(*) from audit_event where post_failure is not null");
    assert_eq!(failed, Some(0));
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_audit_post_discord_refuses_is_posted_again_without_its_details_or_else_recorded_as_not_posted() {
    // Arrange
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let first = app.create_key(DEMO, "first", "bans.read", &[]);
    let second = app.create_key(DEMO, "second", "bans.read", &[]);
    until_known(&app, &first).await;
    until_known(&app, &second).await;
    app.wait_for_audit_outbox().await;
    let reported = |r: &discord_double::FaultRequest| r.body.is_some_and(|b| b.to_string().contains("Reported by"));
    // Discord refuses an entry naming the reporter, once.
    app.double.fault(FaultRule::matching(reported).discord_error(400, 50035, "Invalid Form Body").once());

    // Act: the first report is refused as written, then posted plain.
    report_leak(&app, &first, "the reporter's words").await;
    let post = app
        .double
        .wait_for_message(
            ids::AUDIT_LOG_CHANNEL_ID,
            |m| m.text().contains("API key revoked") && m.text().contains("first"),
            WAIT,
        )
        .await
        .expect("posted again without its details");

    // Assert
    let text = post.text();
    assert!(text.contains("Not shown") && !text.contains("reporter's words"), "{text}");
    app.wait_for_audit_outbox().await;
    let failed = support::db_scalar(&app.db_url, "select count(*) from audit_event where post_failure is not null");
    assert_eq!(failed, Some(0), "the retry was posted");

    // Act: Discord refuses every post now; the second report's entry fails twice.
    app.double.clear_faults();
    app.double.fault(FaultRule::on("POST", "/channels/{channel_id}/messages").discord_error(
        400,
        50035,
        "Invalid Form Body",
    ));
    report_leak(&app, &second, "again").await;
    let started = Instant::now();
    let not_posted = "select count(*) from audit_event where post_failure is not null and posted_at is not null";
    while support::db_scalar(&app.db_url, not_posted) != Some(1) {
        assert!(started.elapsed() < WAIT, "never recorded as not posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert: tried twice, then recorded as not posted, with Discord's answer.
    let why = support::db_scalar(
        &app.db_url,
        "select count(*) from audit_event where post_failure like '%Invalid Form Body%HTTP 400%'",
    );
    assert_eq!(why, Some(1), "{:?}", app.logs().iter().filter(|l| l.contains("audit")).collect::<Vec<_>>());
    let tries =
        app.double.calls_to("POST", "/channels/{channel_id}/messages").iter().filter(|c| c.status == 400).count();
    assert_eq!(tries, 3, "the first report's refusal, then the second report's post and its one retry");
    app.double.clear_faults();
}

#[tokio::test]
async fn apikey_requests_stops_paging_before_discords_interaction_token_dies() {
    // Arrange: 12 refused requests make two pages.
    let app = spawn_app().await;
    let token = app.create_key(DEMO, "logged", "guild.read", &[]);
    until_known(&app, &token).await;
    for _ in 0..12 {
        let path = format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID);
        assert_eq!(app.get(&path, &token).await.status().as_u16(), 403);
    }
    let sent = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("apikey", "requests")
        .string("key", "logged")
        .send()
        .await
        .unwrap();
    let first = app.double.wait_for_response_matching(&sent, |r| r.text().contains("page 1"), WAIT).await.unwrap();
    let message = first.followups.last().cloned().or(first.message.clone()).expect("the page message");
    let button = |r: &InteractionReply, which: &str| r.custom_ids().into_iter().find(|c| c.ends_with(which));
    let click = app.double.click(DEMO, ids::ALICE_ID, &message, &button(&first, ":next").unwrap()).await.unwrap();
    let second = app.double.wait_for_response_matching(&click, |r| r.text().contains("page 2"), WAIT).await.unwrap();

    // Act: 13½ minutes on Discord's clock, then a press.
    app.double.advance_clock(Duration::from_secs(13 * 60 + 30));
    let prev = button(&second, ":prev").expect("a Previous button");
    let click = app.double.click(DEMO, ids::ALICE_ID, &message, &prev).await.unwrap();
    let closed = app
        .double
        .wait_for_response_matching(&click, |r| r.components.is_empty(), WAIT)
        .await
        .expect("the pager ends on that press");

    // Assert: the buttons are gone with a closing note; past 15 minutes
    // nothing is left to fail.
    assert!(closed.all_text().contains("Paging has ended"), "{}", closed.all_text());
    assert!(closed.text().contains("page 2"), "the page stays: {}", closed.text());
    app.double.advance_clock(Duration::from_secs(2 * 60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed: Vec<_> = app.double.calls().into_iter().filter(|c| c.status >= 400).collect();
    assert!(failed.is_empty(), "{failed:?}");
    app.double.assert_no_violations();
}
