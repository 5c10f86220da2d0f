//! Discord's refusals are the bot's, not one server's: Discord cuts the
//! whole bot off at 10,000 in 10 minutes, so the bot-wide budget
//! (`discord.bot_invalid_request_budget`) pauses the servers refused most,
//! counted by every instance together.

use super::*;

use discord_double::{config::synthetic_guild_id, DoubleConfig, FaultRule};
use support::{db, spawn_against, Options};

const HOSTILE: u32 = 8;
const BOT_BUDGET: usize = 50;
/// `CALLS_IN_FLIGHT_PER_GUILD` in src/service/guard.rs.
const IN_FLIGHT_PER_GUILD: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_hostile_servers_together_never_earn_more_refusals_than_the_bots_budget_and_a_quiet_one_is_served() {
    // Arrange: eight servers whose audit channel the bot may not post in,
    // each with a test key whose dry runs are audit events (posted, so
    // refused), and a quiet server with a key of its own.
    let double =
        discord_double::Double::start(DoubleConfig::demo().with_synthetic_guilds(HOSTILE)).await.expect("double");
    let config = format!("[discord]\nbot_invalid_request_budget = {BOT_BUDGET}\n");
    let app = spawn_against(double, Options { config, ..Options::default() }).await;
    let hostile: Vec<u64> = (0..HOSTILE).map(synthetic_guild_id).collect();
    let mut tokens = Vec::new();
    for &guild in &hostile {
        let channel = guild + 0x11; // #audit-log
        app.double.set_bot_can_send(channel, false);
        let set = format!(
            "insert into guild_setting (guild_id, audit_channel_id, created_at, updated_at) \
             values ({guild}, {channel}, 0, 0) returning guild_id"
        );
        assert!(db_scalar(&app.db_url, &set).is_some(), "audit channel set for {guild}");
        tokens.push(key(&app, guild, "hostile", "bans.write", &["--env", "test"]).await);
    }
    let quiet = key(&app, DEMO, "quiet", "bans.read", &[]).await;
    // (Each key's creation was an audit post Discord refused already.)
    app.wait_for_audit_outbox().await;

    // Act: round after round, each hostile server makes a dry-run ban (an
    // audit post Discord refuses) and edits a role (so the bot forgets the
    // refusal it remembered and asks again), until every one is paused.
    let bound = BOT_BUDGET + IN_FLIGHT_PER_GUILD * HOSTILE as usize;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut paused = 0;
        for (i, (&guild, token)) in hostile.iter().zip(&tokens).enumerate() {
            let user = 1_200_000_000_000_600_000 + rounds * 100 + i as u64;
            let reply = put(&app, &ban_path(guild, user), token).await;
            match reply.status {
                200 => {}
                503 => {
                    reply.err(503, "discord_paused");
                    paused += 1;
                }
                other => panic!("a dry run answered {other}: {}", reply.text),
            }
            app.double.set_role_permissions(guild, guild + 3, 0);
        }
        app.wait_for_audit_outbox().await;
        let seen = refusals_seen(&app);
        assert!(seen <= bound, "round {rounds}: Discord saw {seen} refusals, more than {BOT_BUDGET} + in flight");
        // The quiet server is served all along.
        get(&app, &ban_path(DEMO, ids::PAT_ID), &quiet).await.ok();
        if paused == hostile.len() {
            break;
        }
        assert!(rounds < 40, "after {rounds} rounds {paused} servers are paused; Discord saw {seen} refusals");
    }

    // Assert: Discord saw at most the budget plus what was in flight; every
    // hostile server is paused, the quiet one is served, and the metrics say so.
    let seen = refusals_seen(&app);
    eprintln!(
        "{HOSTILE} hostile servers, bot-wide budget {BOT_BUDGET}: Discord saw {seen} refusals in {rounds} rounds"
    );
    assert!(seen >= BOT_BUDGET / 2, "the hostile servers were refused ({seen})");
    for _ in 0..3 {
        get(&app, &ban_path(DEMO, ids::PAT_ID), &quiet).await.ok();
    }
    assert_eq!(metric(&app, "guildkey_discord_invalid_request_budget_bot").await, BOT_BUDGET as u64);
    assert_eq!(metric(&app, "guildkey_discord_invalid_requests_bot_10m").await, seen as u64);
    assert_eq!(metric(&app, "guildkey_discord_paused_guilds").await, u64::from(HOSTILE));
    app.double.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_listeners_on_one_postgres_and_a_restart_hold_one_servers_refusal_budget_together() {
    let Some(admin) = db::postgres_admin_url() else {
        eprintln!("skipped: GUILDKEY_TEST_POSTGRES is not set");
        return;
    };
    let url = db::fresh_postgres(&admin);
    let opts = || Options {
        db_url: Some(url.clone()),
        config: "[discord]\ninvalid_request_budget = 5\n".into(),
        ..Options::only("http")
    };
    let mut first = support::spawn_app_with(opts()).await;
    let second = spawn_against(first.double.clone(), opts()).await;
    let token = key(&first, DEMO, "game", "bans.write", &[]).await;
    // Every ban is refused, each for another user: only the budget helps.
    first.double.fault(FaultRule::on("PUT", "/guilds/{guild_id}/bans/{user_id}").discord_error(
        403,
        50013,
        "Missing Permissions",
    ));
    first.double.clear_recorded();
    let mut user = 1_200_000_000_000_700_000;
    let mut ban = |app: &App| {
        user += 1;
        let path = ban_path(DEMO, user);
        let app_url = app.url(&path);
        let client = app.http.clone();
        let token = token.clone();
        async move {
            let resp = client.put(app_url).bearer_auth(token).send().await.expect("PUT");
            resp.status().as_u16()
        }
    };

    // Three refusals through the first listener; the second learns of them.
    for _ in 0..3 {
        assert_eq!(ban(&first).await, 502);
    }
    wait_for_metric(&second, "guildkey_discord_invalid_requests_bot_10m", 3).await;
    // Two more through the second: the budget of 5 is spent for both.
    for _ in 0..2 {
        assert_eq!(ban(&second).await, 502);
    }
    assert_eq!(ban(&second).await, 503, "the second listener paused at the shared budget");
    wait_for_metric(&first, "guildkey_discord_invalid_requests_bot_10m", 5).await;
    assert_eq!(ban(&first).await, 503, "the first listener too");
    assert_eq!(refusals_seen(&first), 5);

    // A restarted listener still counts what Discord saw before.
    first.restart().await;
    wait_for_metric(&first, "guildkey_discord_invalid_requests_bot_10m", 5).await;
    for _ in 0..3 {
        assert_eq!(ban(&first).await, 503);
    }
    assert_eq!(refusals_seen(&first), 5, "Discord saw the budget's worth, however many listeners");
}

/// Polls `/metrics` (no Discord call) until `name` reaches `at_least`.
async fn wait_for_metric(app: &App, name: &str, at_least: u64) {
    let started = Instant::now();
    loop {
        let now = metric(app, name).await;
        if now >= at_least {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{name} stayed at {now}, never {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
