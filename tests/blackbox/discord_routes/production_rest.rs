//! Discord's production REST path end to end: no proxy, serenity's
//! ratelimiter on, the double reached as `https://discord.com` over TLS
//! ([`Options::production_rest`]). Discord's waits are bounded: a short
//! 429 is waited out and the work delivered; a long one is answered at once
//! as not done; a 429 Discord does not count (`X-RateLimit-Scope: shared`)
//! is not counted toward the invalid-request shield.

use super::*;

const FOLLOW_UP_ROUTE: &str = "/webhooks/{webhook_id}/{webhook_token}";

async fn production_app() -> App {
    let double = discord_double::Double::start(DoubleConfig::demo()).await.expect("start the Discord double");
    let opts = Options::production_rest(&double);
    spawn_against(double, opts).await
}

fn statuses(calls: &[RecordedCall]) -> Vec<u16> {
    calls.iter().map(|c| c.status).collect()
}

#[tokio::test]
async fn a_follow_up_rate_limited_for_2_s_is_waited_out_and_the_reply_delivered() {
    let app = production_app().await;
    assert!(
        app.double.calls().iter().all(|c| c.headers.get("user-agent").is_some_and(|ua| ua.contains("serenity"))),
        "the bot talks to the double through serenity"
    );
    app.double.fault(FaultRule::on("POST", FOLLOW_UP_ROUTE).rate_limited(2.0, false).once());

    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "game")
        .string("scopes", "bans.read")
        .send()
        .await
        .expect("send /apikey create");
    let started = Instant::now();
    let reply = app
        .double
        .wait_for_response_matching(&sent, |r| r.all_text().contains("shown only once"), WAIT)
        .await
        .expect("the reply is delivered after the 429");
    let took = started.elapsed();
    assert!(reply.all_text().contains("shown only once"), "{}", reply.all_text());

    let follow_ups = app.double.calls_to("POST", FOLLOW_UP_ROUTE);
    assert_eq!(statuses(&follow_ups), [429, 200], "one 429, then the follow-up");
    let waited = follow_ups[1].at.duration_since(follow_ups[0].at);
    eprintln!("follow-up 429 retry_after 2 s: retried after {waited:?}, reply delivered {took:?} after the command");
    assert!(waited >= Duration::from_millis(1950), "retried {waited:?} after a 429 asking for 2 s");
    assert!(waited < Duration::from_secs(4), "retried {waited:?} after a 429 asking for 2 s");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_ban_rate_limited_for_10_s_is_answered_within_8_s_as_not_done() {
    let app = production_app().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;
    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(10.0, false).once());

    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.err(502, "discord_error").message();
    let took = started.elapsed();
    eprintln!("ban write 429 retry_after 10 s: answered in {took:?}: {message}");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    assert!(message.contains("nothing was done") && !message.contains("may or may not"), "{message}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "not retried before retry_after");
    assert!(app.double.bans(DEMO).is_empty(), "Discord saw no ban");

    // serenity's bucket for the guild's bans now has 10 s to run: the next
    // ban is not even sent, and says so at once.
    let started = Instant::now();
    let message = put(&app, &ban_path(DEMO, ids::DANA_ID), &token).await.err(502, "discord_error").message();
    let took = started.elapsed();
    eprintln!("the next ban inside the bucket's 10 s: answered in {took:?}: {message}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    assert!(message.contains("not sent") && message.contains("nothing was done"), "{message}");
    assert_eq!(calls(&app, "PUT", BAN_ROUTE).len(), 1, "the second ban never reached Discord");
    assert!(app.double.bans(DEMO).is_empty());
    app.double.assert_no_violations();
}

fn invalid_total(metrics: &str) -> u64 {
    let name = "guildkey_discord_invalid_requests_total";
    let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn metrics(app: &App) -> String {
    app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_shared_scope_429_is_not_counted_as_invalid_but_a_user_scope_one_is() {
    let app = spawn_app().await;
    let token = key(&app, DEMO, "game", "bans.write", &[]).await;

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).shared_rate_limited(0.3).once());
    assert_eq!(put(&app, &ban_path(DEMO, ids::PAT_ID), &token).await.ok()["changed"], true);
    assert_eq!(statuses(&calls(&app, "PUT", BAN_ROUTE)), [429, 204]);
    assert_eq!(invalid_total(&metrics(&app).await), 0, "Discord does not count a shared-scope 429");

    app.double.fault(FaultRule::on("PUT", BAN_ROUTE).rate_limited(0.3, false).once());
    assert_eq!(put(&app, &ban_path(DEMO, ids::DANA_ID), &token).await.ok()["changed"], true);
    assert_eq!(invalid_total(&metrics(&app).await), 1, "a user-scope 429 counts");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_first_response_rate_limited_past_discords_3_s_is_given_up_not_sent_late() {
    const CALLBACK_ROUTE: &str = "/interactions/{interaction_id}/{interaction_token}/callback";
    let app = production_app().await;
    app.double.fault(FaultRule::on("POST", CALLBACK_ROUTE).rate_limited(5.0, false).once());

    let sent = app
        .double
        .slash(ids::DEMO_GUILD_ID, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "late")
        .string("scopes", "bans.read")
        .send()
        .await
        .expect("send /apikey create");
    let started = Instant::now();
    // serenity alone would sleep the 5 s out and answer a dead interaction
    // (404 Unknown interaction): wait past that and look.
    let gave_up = |logs: &[String]| logs.iter().any(|l| l.contains("window for a first response has closed"));
    while !gave_up(&app.logs()) {
        assert!(started.elapsed() < Duration::from_secs(5), "the bot never gave up the reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gave_up_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    let callbacks = app.double.calls_to("POST", CALLBACK_ROUTE);
    eprintln!(
        "first response 429 retry_after 5 s: given up {gave_up_after:?} after the command; callbacks {:?}",
        statuses(&callbacks)
    );
    assert!(gave_up_after < Duration::from_millis(3500), "gave up after {gave_up_after:?}");
    assert_eq!(statuses(&callbacks), [429], "nothing sent after Discord's 3 s");
    assert!(app.double.interaction_response(&sent).is_none());
    assert!(app.double.calls_to("POST", FOLLOW_UP_ROUTE).is_empty());
    app.double.assert_no_violations();
}
