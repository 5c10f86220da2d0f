//! Process roles, black-box: `guildkey run --only http` (the listener, no
//! gateway: guild facts from Discord's REST API, cached), `--only bot` (the
//! gateway bot and the audit-channel posts, no listener), several of them
//! on one database, and a bad role refused at start.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use discord_double::{Double, DoubleConfig, RoleSeed};
use serde_json::{json, Value};
use support::reply::{delete, get, put};
use support::{ids, spawn_against, App, Options, BOT_TOKEN};

const DEMO: u64 = ids::DEMO_GUILD_ID;
/// A guild the double does not have.
const ABSENT_GUILD_ID: u64 = 1_000_000_000_000_000_777;
/// A role below the bot that carries Administrator: refused for its
/// permission alone.
const RAID_ROLE_ID: u64 = 1_400_000_000_000_000_007;
const WAIT: Duration = Duration::from_secs(10);
/// `GUILD_VIEW_TTL` in src/discord/rest.rs.
const GUILD_VIEW_TTL: Duration = Duration::from_secs(30);

const GUILD_ROUTE: &str = "/guilds/{guild_id}";
const MEMBER_ROUTE: &str = "/guilds/{guild_id}/members/{user_id}";
const ROLE_ROUTE: &str = "/guilds/{guild_id}/members/{user_id}/roles/{role_id}";
const BAN_ROUTE: &str = "/guilds/{guild_id}/bans/{user_id}";

fn world() -> DoubleConfig {
    let mut cfg = DoubleConfig::demo();
    let raid = RoleSeed::new(RAID_ROLE_ID, "Raid", 1, ids::permissions::ADMINISTRATOR);
    cfg.guilds[0].roles.push(raid);
    cfg
}

fn role_path(user: u64, role: u64) -> String {
    format!("/v1/guilds/{DEMO}/members/{user}/roles/{role}")
}

/// Creates a key with the CLI (on `cli`'s database) and waits until the
/// listener `app` knows it.
async fn key(cli: &App, app: &App, guild: u64, name: &str, scopes: &str) -> String {
    let token = cli.create_key(guild, name, scopes, &["--rate-limit", "1000"]);
    wait_until_known(app, &token).await;
    token
}

/// Waits until the listener `app` accepts `token` (another process's
/// change is live within a second).
async fn wait_until_known(app: &App, token: &str) {
    let started = Instant::now();
    while get(app, "/v1/verify", token).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the listener never learned of the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts no process opened a gateway session on `double`.
#[track_caller]
fn assert_no_gateway(double: &Double) {
    let stats = double.gateway_stats();
    assert_eq!((stats.connections, stats.identifies), (0, 0), "a gateway session was opened: {stats:?}");
    let bootstrap: Vec<String> = double
        .calls()
        .iter()
        .filter(|c| c.path.contains("/gateway") || c.path.contains("/applications/"))
        .map(|c| c.to_string())
        .collect();
    assert!(bootstrap.is_empty(), "gateway or command-registration calls: {bootstrap:?}");
}

#[tokio::test]
async fn an_http_only_listener_verifies_reads_the_guild_over_rest_writes_and_refuses_a_dangerous_role_with_no_gateway()
{
    let double = Double::start(world()).await.expect("double");
    let app = spawn_against(double, Options::only("http")).await;
    let token = key(&app, &app, DEMO, "game", "guild.read,bans.read,bans.write,roles.write").await;
    assert_eq!(get(&app, "/v1/verify", &token).await.ok()["name"], "game");

    // Guild info from REST: GET /guilds/{id}?with_counts=true (and the bot's member), once per TTL.
    let members = app.double.config().guilds[0].members.len() as u64;
    for _ in 0..5 {
        let data = get(&app, &format!("/v1/guilds/{DEMO}"), &token).await.ok().clone();
        assert_eq!(
            data,
            json!({ "id": DEMO.to_string(), "name": "Demo Guild", "member_count": members, "icon": null })
        );
    }
    let reads = app.double.calls_to("GET", GUILD_ROUTE);
    assert_eq!(reads.len(), 1, "one REST read for five requests: {reads:?}");
    // (serenity writes the query as `?&with_counts=true`, which Discord reads as meant)
    assert_eq!(reads[0].query.as_deref().map(|q| q.trim_start_matches('&')), Some("with_counts=true"));
    let bot_member = app.double.calls_to("GET", MEMBER_ROUTE);
    assert!(bot_member.iter().any(|c| c.path.ends_with(&ids::BOT_USER_ID.to_string())), "the bot's own roles");
    assert_eq!(app.double.calls_to("GET", "/users/@me").len(), 1, "the bot's id, once");

    // Writes go to Discord as a full instance's do, named for the key.
    let ban = put(&app, &format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID), &token).await;
    assert_eq!(ban.ok()["changed"], true);
    assert!(app.double.bans(DEMO).contains_key(&ids::PAT_ID));
    let banned = app.double.calls_to("PUT", BAN_ROUTE);
    assert_eq!(banned.len(), 1);
    assert_eq!(banned[0].audit_log_reason().as_deref(), Some(format!("An API key: game ({})", &token[..12]).as_str()));
    assert_eq!(put(&app, &role_path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID, ids::VERIFIED_ROLE_ID]);
    assert_eq!(app.double.calls_to("PUT", ROLE_ROUTE).len(), 1);

    // The guard's rules hold as on a full instance: a role carrying
    // Administrator (below the bot, so for its permission alone), a
    // managed role, @everyone; refused before any Discord call.
    app.double.clear_recorded();
    for (role, why) in [(RAID_ROLE_ID, "Administrator"), (ids::BOT_ROLE_ID, "managed"), (DEMO, "@everyone")] {
        let message = put(&app, &role_path(ids::PAT_ID, role), &token).await.err(403, "role_not_allowed").message();
        assert!(message.contains(why), "{why}: {message}");
        delete(&app, &role_path(ids::ALICE_ID, role), &token).await.err(403, "role_not_allowed");
    }
    let message = put(&app, &format!("/v1/guilds/{DEMO}/bans/{}", ids::ALICE_ID), &token)
        .await
        .err(403, "member_protected")
        .message();
    assert!(message.contains("owner"), "{message}");
    let asked: Vec<String> = app
        .double
        .calls()
        .iter()
        .filter(|c| c.method != "GET" || c.path.contains("/roles/") || c.path.ends_with(&ids::PAT_ID.to_string()))
        .map(|c| c.to_string())
        .collect();
    assert!(asked.is_empty(), "Discord was asked to write, or about the refused roles: {asked:?}");

    // A guild Discord does not know is one the bot is not in.
    let orphan = key(&app, &app, ABSENT_GUILD_ID, "orphan", "guild.read").await;
    let message = get(&app, &format!("/v1/guilds/{ABSENT_GUILD_ID}"), &orphan).await.err(404, "not_found").message();
    assert!(message.contains("not in this guild"), "{message}");
    get(&app, &format!("/v1/guilds/{ABSENT_GUILD_ID}"), &orphan).await.err(404, "not_found");
    assert_eq!(app.double.calls_to("GET", GUILD_ROUTE).len(), 1, "the answer is kept too");

    assert_no_gateway(&app.double);
    assert!(!app.logs().iter().any(|l| l.contains("connected to Discord")), "the bot started");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_http_only_listener_rereads_the_guild_after_a_403_and_sees_a_role_change_within_the_ttl() {
    let double = Double::start(world()).await.expect("double");
    let app = spawn_against(double, Options::only("http")).await;
    let token = key(&app, &app, DEMO, "verifier", "roles.write").await;
    let started = Instant::now();
    assert_eq!(put(&app, &role_path(ids::PAT_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);

    // The bot loses Manage Roles; no gateway tells this listener. Its view
    // lets the next write through, Discord refuses it with 403, and the
    // guild is read again: the write after that is refused by guildkey
    // without asking Discord.
    let without = ids::BOT_ROLE_PERMISSIONS & !ids::permissions::MANAGE_ROLES;
    app.double.set_role_permissions(DEMO, ids::BOT_ROLE_ID, without);
    app.double.clear_recorded();
    let message =
        delete(&app, &role_path(ids::DANA_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Missing Permissions") && !message.contains("Discord was not asked"), "{message}");
    assert_eq!(app.double.calls_to("DELETE", ROLE_ROUTE).len(), 1);
    let message =
        put(&app, &role_path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await.err(502, "discord_error").message();
    assert!(message.contains("Discord was not asked"), "{message}");
    assert_eq!(app.double.calls_to("GET", GUILD_ROUTE).len(), 1, "the guild was read again after the 403");
    assert!(app.double.calls_to("PUT", ROLE_ROUTE).is_empty());
    app.double.set_role_permissions(DEMO, ids::BOT_ROLE_ID, ids::BOT_ROLE_PERMISSIONS);

    // A role that gains a dangerous permission is refused once the view is
    // older than the TTL (and may pass until then: the documented cost of
    // running without the gateway).
    app.double.set_role_permissions(DEMO, ids::VERIFIED_ROLE_ID, guildkey::discord::permissions::MANAGE_WEBHOOKS);
    loop {
        let reply = put(&app, &role_path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await;
        if reply.status == 403 {
            assert!(reply.err(403, "role_not_allowed").message().contains("Manage Webhooks"));
            break;
        }
        let message = reply.err(502, "discord_error").message();
        assert!(message.contains("Discord was not asked"), "the bot still lacks Manage Roles in the view: {message}");
        assert!(started.elapsed() < GUILD_VIEW_TTL * 2 + WAIT, "the change was never seen");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_no_gateway(&app.double);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_bot_only_process_binds_no_port_and_answers_slash_commands() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut opts = Options::only("bot");
    opts.env.push(("GUILDKEY_HTTP_BIND".into(), format!("127.0.0.1:{port}")));
    let double = Double::start(DoubleConfig::demo()).await.expect("double");
    let app = spawn_against(double, opts).await;
    app.set_audit_channel().await;

    let sent = app
        .double
        .slash(DEMO, ids::ALICE_ID)
        .subcommand("apikey", "create")
        .string("name", "game")
        .string("scopes", "bans.read")
        .send()
        .await
        .expect("send /apikey create");
    let reply = app.double.wait_for_response(&sent, WAIT).await.expect("a reply");
    assert!(reply.ephemeral() && reply.all_text().contains("shown only once"), "{}", reply.all_text());
    let listed = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    let keys: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(keys[0]["name"], "game", "{keys}");
    // The bot posts the audit entry itself.
    app.double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key created"), WAIT)
        .await
        .expect("an audit post");

    // No listener: the configured port is free, nothing answers on it.
    assert!(app.base.is_empty());
    assert!(!app.logs().iter().any(|l| l.contains("listening on")), "a listener started");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "something answers on {port}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the configured port stays free");
    assert_eq!(app.double.gateway_stats().identifies, 1);
    app.double.assert_no_violations();
}

#[tokio::test]
async fn two_listeners_record_audit_events_and_the_one_bot_sharing_their_database_posts_them() {
    let double = Double::start(world()).await.expect("double");
    let mut bot = spawn_against(double.clone(), Options::only("bot")).await;
    bot.set_audit_channel().await;
    let opts = || Options { db_url: Some(bot.db_url.clone()), ..Options::only("http") };
    let first = spawn_against(double.clone(), opts()).await;
    let second = spawn_against(double.clone(), opts()).await;
    let token = key(&bot, &first, DEMO, "game", "bans.write,roles.write").await;
    wait_until_known(&second, &token).await; // one database, one key
    assert_eq!(double.gateway_stats().identifies, 1, "the listeners opened no gateway session");

    // With the bot down, a listener's write is recorded but not posted:
    // listeners never post to audit channels.
    assert_eq!(bot.stop().code(), Some(0));
    let titled = |m: &discord_double::RecordedMessage, title: &str| m.text().contains(title);
    let posts = || double.messages_in(ids::AUDIT_LOG_CHANNEL_ID).iter().filter(|m| titled(m, "Member banned")).count();
    put(&first, &format!("/v1/guilds/{DEMO}/bans/{}", ids::PAT_ID), &token).await.ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(posts(), 0, "a listener posted to the audit channel");
    let pending = support::db_scalar(&first.db_url, "select count(*) from audit_event where posted_at is null");
    assert!(pending.is_some_and(|n| n >= 1), "the ban is waiting to be posted: {pending:?}");

    // The bot back: it posts what the listeners recorded, once each.
    bot.restart().await;
    assert_eq!(put(&second, &role_path(ids::DANA_ID, RAID_ROLE_ID), &token).await.status, 403);
    assert_eq!(put(&second, &role_path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await.ok()["changed"], true);
    for (title, user) in [("Member banned", ids::PAT_ID), ("Role added", ids::MORGAN_ID)] {
        let post = double
            .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| titled(m, title) && m.text().contains("game"), WAIT)
            .await
            .unwrap_or_else(|e| panic!("the bot posts the listeners' {title}: {e}"));
        assert!(post.text().contains(&format!("<@{user}>")), "{}", post.text());
    }
    bot.wait_for_audit_outbox().await;
    assert_eq!(posts(), 1, "posted once");
    double.assert_no_violations();
}

/// Runs `guildkey ARGS` with a token and the double's URL never contacted.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DISCORD_TOKEN", BOT_TOKEN)
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.path().join("gk.db").display()))
        .env("GUILDKEY_HTTP_BIND", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run guildkey")
}

#[test]
fn a_bad_role_is_refused_at_start_with_exit_2_naming_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[run]\nonly = \"listener\"\n").unwrap();
    let config = config.to_str().unwrap();
    /// Arguments, environment, and what the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["run", "--only", "gateway"], &[], "--only"),
        (&["run", "--only", ""], &[], "--only"),
        (&["run"], &[("GUILDKEY_ONLY", "htp")], "GUILDKEY_ONLY (run.only)"),
        (&["--config", config, "run"], &[], "run.only"),
    ];
    for (args, env, names) in cases {
        let out = run_binary(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(names), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("is not http") && stderr.contains("bot"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let help = run_binary(&["run", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--only <ROLE>"), "run --help documents --only");
}
