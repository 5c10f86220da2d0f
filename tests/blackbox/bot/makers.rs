//! No key outranks its maker (issue 22): `/apikey create` needs the member's own Discord
//! powers for each scope, a roles.write key never reaches a role at or above its maker's
//! highest, and a maker who is demoted or leaves gets their keys suspended, with Adopt and
//! Revoke in the audit channel.

use super::*;

use discord_double::config::permissions as perm;
use discord_double::{MemberSeed, RecordedMessage, RoleSeed};
use serde_json::Value;
use support::reply::{get, put};

const DEMO: u64 = ids::DEMO_GUILD_ID;
/// A role that lets Morgan manage keys and ban: Manage Server and Ban Members.
const BANNING_MANAGER: u64 = perm::MANAGE_GUILD | perm::BAN_MEMBERS;

/// `/apikey create` as `user` with `scopes` and any further string options.
async fn create_with(app: &App, user: u64, name: &str, scopes: &str, more: &[(&str, &str)]) -> InteractionReply {
    let mut command =
        app.double.slash(DEMO, user).subcommand("apikey", "create").string("name", name).string("scopes", scopes);
    for (option, value) in more {
        command = command.string(option, value);
    }
    support::bot::answer(app, command).await
}

/// The guild's keys as `guildkey keys list --json` shows them.
fn listed(app: &App) -> Vec<Value> {
    let out = app.cli(&["keys", "list", "--guild", &DEMO.to_string(), "--json"]);
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_array().cloned().unwrap_or_default()
}

/// Gives the Manager role (Morgan's) these permissions, as an admin editing it would;
/// the bot hears GUILD_ROLE_UPDATE.
fn manager_role_may(app: &App, permissions: u64) {
    assert_eq!(app.double.set_role_permissions(DEMO, ids::MANAGER_ROLE_ID, permissions), 1, "the bot hears it");
}

/// Morgan, given Ban Members, makes a bans.write key; returns its secret and id.
async fn morgans_ban_key(app: &App) -> (String, String) {
    manager_role_may(app, BANNING_MANAGER);
    let reply = create_with(app, ids::MORGAN_ID, "game", "bans.write", &[]).await;
    assert!(reply.all_text().contains("shown only once"), "{}", reply.all_text());
    let token = secret_in(&reply);
    let key_id = get(app, "/v1/verify", &token).await.ok()["key_id"].as_str().unwrap().to_owned();
    (token, key_id)
}

/// Waits for the audit channel's suspension post for a maker's loss (the one with Adopt).
async fn suspension_post(app: &App) -> RecordedMessage {
    app.double
        .wait_for_message(
            ids::AUDIT_LOG_CHANNEL_ID,
            |m| m.text().contains("API key suspended") && m.custom_ids().iter().any(|c| c.contains(":adopt:")),
            WAIT,
        )
        .await
        .expect("the suspension is posted with Adopt")
}

#[tokio::test]
async fn a_manage_server_only_admin_is_refused_a_bans_write_key_and_told_which_power_is_missing() {
    let app = spawn_app().await;

    let refused = create_with(&app, ids::MORGAN_ID, "sneaky", "bans.write", &[]).await;
    let all =
        create_with(&app, ids::MORGAN_ID, "everything", "guild.read, bans.read, roles.write, audit.read", &[]).await;

    let text = refused.all_text();
    assert!(refused.ephemeral(), "the refusal is ephemeral");
    assert!(
        text.contains(
            "No key can do more than its maker: you do not hold **Ban Members** (for bans.write) in this server, \
             so you cannot create this key."
        ),
        "{text}"
    );
    assert!(token_regex().find(&text).is_none(), "no key was made: {text}");
    let all = all.all_text();
    for power in
        ["**Ban Members** (for bans.read)", "**Manage Roles** (for roles.write)", "**View Audit Log** (for audit.read)"]
    {
        assert!(all.contains(power), "{power} in {all}");
    }
    assert!(listed(&app).is_empty(), "nothing stored");
    // What Morgan does hold, Morgan may give.
    let fine = create_with(&app, ids::MORGAN_ID, "info", "guild.read", &[]).await;
    assert!(fine.all_text().contains("shown only once"), "{}", fine.all_text());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_admin_holding_ban_members_gets_a_bans_write_key_bounded_by_them() {
    let app = spawn_app().await;

    let (token, _) = morgans_ban_key(&app).await;

    let keys = listed(&app);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["maker_id"], ids::MORGAN_ID.to_string(), "{keys:?}");
    assert_eq!(put(&app, &format!("/v1/guilds/{DEMO}/bans/{}", ids::STRANGER_ID), &token).await.ok()["changed"], true);
    // The owner (and any Administrator) holds every power.
    let owners = create_with(&app, ids::ALICE_ID, "all", "guild.read, bans.write, roles.write, audit.read", &[]).await;
    assert!(owners.all_text().contains("shown only once"), "{}", owners.all_text());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn demoting_the_maker_suspends_the_key_within_seconds_and_an_admin_with_the_powers_adopts_it() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, key_id) = morgans_ban_key(&app).await;

    // An admin takes Ban Members off Morgan's role: GUILD_ROLE_UPDATE.
    let demoted = Instant::now();
    manager_role_may(&app, perm::MANAGE_GUILD);
    let post = suspension_post(&app).await;
    let took = demoted.elapsed();

    assert!(took < Duration::from_secs(10), "suspended {took:?} after the demotion");
    eprintln!("a demoted maker's key was suspended and posted {took:?} after GUILD_ROLE_UPDATE");
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");
    let text = post.text();
    assert!(text.contains(r"no longer holds Ban Members \(for bans.write\)"), "{text}");
    assert!(text.contains(&format!("Maker: <@{}>", ids::MORGAN_ID)), "names the maker: {text}");
    let adopt = format!("guildkey:adopt:{key_id}");
    assert_eq!(post.custom_ids(), [adopt.clone(), format!("guildkey:revoke:{key_id}")]);

    // Morgan, who no longer holds the power, cannot adopt it back.
    let click = app.double.click(DEMO, ids::MORGAN_ID, &post, &adopt).await.expect("click");
    let refused = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(refused.ephemeral() && refused.text().contains("**Ban Members**"), "{}", refused.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    // Alice (the owner, Administrator) adopts it: it works again, bounded by her.
    let click = app.double.click(DEMO, ids::ALICE_ID, &post, &adopt).await.expect("click");
    let adopted = app.double.wait_for_response(&click, WAIT).await.expect("an answer");
    assert!(adopted.text().contains("adopted") && adopted.components.is_empty(), "{}", adopted.text());
    get(&app, "/v1/verify", &token).await.ok();
    assert_eq!(listed(&app)[0]["maker_id"], ids::ALICE_ID.to_string());
    let resumed = app
        .double
        .wait_for_message(ids::AUDIT_LOG_CHANNEL_ID, |m| m.text().contains("API key resumed"), WAIT)
        .await
        .expect("the adoption is posted");
    assert!(resumed.text().contains("adopted the key"), "{}", resumed.text());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_maker_whose_roles_an_admin_takes_away_loses_the_key_through_the_audit_log_event() {
    let app = spawn_app().await;
    app.set_audit_channel().await;
    let (token, _) = morgans_ban_key(&app).await;

    // Alice takes the Manager role off Morgan: the bot hears the audit-log entry (it has no
    // GUILD_MEMBERS intent, so no GUILD_MEMBER_UPDATE).
    let demoted = Instant::now();
    assert_eq!(app.double.edit_member_roles(DEMO, ids::MORGAN_ID, &[], ids::ALICE_ID), 1);
    suspension_post(&app).await;

    assert!(demoted.elapsed() < Duration::from_secs(10), "{:?}", demoted.elapsed());
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");

    // Resuming would hand the key back to a maker it outranks: refused, pointing at Adopt.
    let (_, resume) = run(&app, ids::ALICE_ID, "resume", "game").await;
    let text = resume.all_text();
    assert!(text.contains("no longer holds **Ban Members**") && text.contains("/apikey adopt"), "{text}");
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");
    // `/apikey adopt` does what the audit channel's button does.
    let (_, adopt) = run(&app, ids::ALICE_ID, "adopt", "game").await;
    assert!(adopt.all_text().contains("You adopted **game**"), "{}", adopt.all_text());
    get(&app, "/v1/verify", &token).await.ok();
    assert_eq!(listed(&app)[0]["maker_id"], ids::ALICE_ID.to_string());
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_maker_who_leaves_unseen_is_caught_by_the_periodic_check() {
    let opts = Options { config: "[keys]\nmaker_check_seconds = 1\n".into(), ..Options::default() };
    let app = spawn_app_with(opts).await;
    app.set_audit_channel().await;
    let (token, _) = morgans_ban_key(&app).await;
    // A CLI key has no maker, and nothing suspends it.
    let cli = app.create_key(DEMO, "from the shell", "bans.write", &[]);

    assert_eq!(app.double.member_leaves(DEMO, ids::MORGAN_ID), 0, "the bot is not told");
    let post = suspension_post(&app).await;

    assert!(post.text().contains("is no longer a member of this server"), "{}", post.text());
    get(&app, "/v1/verify", &token).await.err(401, "key_suspended");
    get(&app, "/v1/verify", &cli).await.ok();
    app.double.assert_no_violations();
}

/// The demo world re-ranked: Admin 6, Manager 5, GuildKey 4, Verified 3, then "Helper"
/// (position 2: Manage Server and Manage Roles), held by Pat, and "Games" (position 1).
const HELPER_ROLE_ID: u64 = 1_400_000_000_000_000_008;
const GAMES_ROLE_ID: u64 = 1_400_000_000_000_000_007;

async fn spawn_with_a_helper() -> App {
    let mut cfg = DoubleConfig::demo();
    let guild = &mut cfg.guilds[0];
    for role in &mut guild.roles {
        role.position = match role.id {
            ids::ADMIN_ROLE_ID => 6,
            ids::MANAGER_ROLE_ID => 5,
            ids::BOT_ROLE_ID => 4,
            ids::VERIFIED_ROLE_ID => 3,
            _ => role.position,
        };
    }
    guild.roles.push(RoleSeed::new(HELPER_ROLE_ID, "Helper", 2, perm::MANAGE_GUILD | perm::MANAGE_ROLES));
    guild.roles.push(RoleSeed::new(GAMES_ROLE_ID, "Games", 1, 0));
    guild.members.retain(|m| m.user_id != ids::PAT_ID);
    guild.members.push(MemberSeed::new(ids::PAT_ID, "pat", &[HELPER_ROLE_ID]));
    *guild = guild.clone().resolve();
    let double = discord_double::Double::start(cfg).await.expect("double");
    spawn_against(double, Options::default()).await
}

#[tokio::test]
async fn a_roles_write_key_never_reaches_a_role_at_or_above_its_makers_highest() {
    let app = spawn_with_a_helper().await;

    // At creation: Verified sits above Pat's highest role (Helper).
    let verified = ids::VERIFIED_ROLE_ID.to_string();
    let refused = create_with(&app, ids::PAT_ID, "too high", "roles.write", &[("allowed_roles", &verified)]).await;
    let text = refused.all_text();
    assert!(text.contains(&format!("<@&{verified}> sits at or above your highest role")), "{text}");
    assert!(token_regex().find(&text).is_none(), "{text}");

    // At each write: below Pat's highest is fine; at or above it is refused before Discord is asked.
    let token = secret_in(&create_with(&app, ids::PAT_ID, "games", "roles.write", &[]).await);
    let path = |user: u64, role: u64| format!("/v1/guilds/{DEMO}/members/{user}/roles/{role}");
    assert_eq!(put(&app, &path(ids::DANA_ID, GAMES_ROLE_ID), &token).await.ok()["changed"], true);
    let above = put(&app, &path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &token).await;
    let message = above.err(403, "role_not_allowed").message();
    assert!(message.contains("at or above the highest role of this key's maker"), "{message}");
    assert_eq!(app.double.member_roles(DEMO, ids::MORGAN_ID), [ids::MANAGER_ROLE_ID], "Discord was not asked");
    // The owner's keys have no ceiling but the bot's own.
    let owners = secret_in(&create_with(&app, ids::ALICE_ID, "owner's", "roles.write", &[]).await);
    assert_eq!(put(&app, &path(ids::MORGAN_ID, ids::VERIFIED_ROLE_ID), &owners).await.ok()["changed"], true);
    app.double.assert_no_violations();
}
