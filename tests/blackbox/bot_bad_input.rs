//! Bad slash-command input, end to end through the Discord double: every
//! option of `/apikey` given a value it must refuse, a DM, a missing option.
//! Values Discord's client would never send (too long for `max_length`, out
//! of `min`/`max`, not one of the choices, a DM for a guild-only command) go
//! through [`SlashBuilder::unchecked`], because the bot must defend itself
//! anyway. Each refusal is an ephemeral message that says what is wrong, and
//! nothing changes. Rows of docs/bad-input.md point here.

use crate::support;

use std::time::Duration;

use discord_double::{InteractionReply, SlashBuilder};
use support::{ids, spawn_app, token_regex, App};

const WAIT: Duration = Duration::from_secs(10);
const GUILD: u64 = ids::DEMO_GUILD_ID;

/// A string, integer or raw (untyped) option value.
#[derive(Clone, Copy, Debug)]
enum Opt<'a> {
    S(&'a str),
    I(i64),
    /// Sent as a string even when the option is typed otherwise.
    Raw(&'a str),
}

/// Options as `(name, value)`.
type Opts<'a> = Vec<(&'a str, Opt<'a>)>;

fn with(mut b: SlashBuilder, options: &[(&str, Opt<'_>)]) -> SlashBuilder {
    for (name, value) in options {
        b = match *value {
            Opt::S(s) => b.string(name, s),
            Opt::I(n) => b.integer(name, n),
            Opt::Raw(s) => b.arg(name, s),
        };
    }
    b
}

async fn reply_to(app: &App, b: SlashBuilder) -> InteractionReply {
    let sent = b.send().await.expect("send the command");
    app.double
        .wait_for_response_matching(&sent, |r| !r.all_text().trim().is_empty(), WAIT)
        .await
        .expect("a reply with text")
}

fn keys_json(app: &App) -> String {
    let out = app.cli(&["keys", "list", "--guild", &GUILD.to_string(), "--json"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[track_caller]
fn assert_refused(what: &str, reply: &InteractionReply, needle: &str) {
    let text = reply.all_text();
    assert!(reply.ephemeral() || reply.followups.iter().all(|f| f.ephemeral()), "{what}: not ephemeral: {text}");
    assert!(text.contains(needle), "{what}: the reply should mention {needle:?}: {text}");
    assert!(text.starts_with('❌') || text.starts_with('🔒'), "{what}: not an error message: {text}");
    assert!(token_regex().find(&text).is_none(), "{what}: a secret in a refusal");
    for bad in ["panicked", "Error {", "backtrace", "internal error"] {
        assert!(!text.contains(bad), "{what}: a stack trace or debug text: {text}");
    }
}

#[tokio::test]
async fn every_bad_create_option_gets_an_ephemeral_reason_and_creates_nothing() {
    let app = spawn_app().await;
    let long_name = "n".repeat(65);
    let many_ips: String = (0..65).map(|i| format!("10.0.{i}.1")).collect::<Vec<_>>().join(",");
    let base = [("name", Opt::S("x")), ("scopes", Opt::S("bans.read"))];
    let plus = |extra: (&'static str, Opt<'static>)| -> Vec<(&'static str, Opt<'static>)> {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    // (what, options, needle, unchecked: Discord's client would not send it)
    let cases: Vec<(&str, Opts<'static>, &str, bool)> = vec![
        (
            "name of 65 characters",
            vec![("name", Opt::S(leak(&long_name))), ("scopes", Opt::S("bans.read"))],
            "65 characters long",
            true,
        ),
        (
            "name with a line break",
            vec![("name", Opt::S("two\nlines")), ("scopes", Opt::S("bans.read"))],
            "control character",
            false,
        ),
        ("blank name", vec![("name", Opt::S("   ")), ("scopes", Opt::S("bans.read"))], "the name is empty", false),
        (
            "unknown scope",
            vec![("name", Opt::S("x")), ("scopes", Opt::S("bans.read,admin"))],
            "unknown scope 'admin'",
            false,
        ),
        ("no scope at all", vec![("name", Opt::S("x")), ("scopes", Opt::S(" , "))], "give at least one scope", false),
        (
            "a scope twice",
            vec![("name", Opt::S("x")), ("scopes", Opt::S("bans.read bans.read"))],
            "listed twice",
            false,
        ),
        (
            "an environment that is not a choice",
            plus(("environment", Opt::Raw("prod"))),
            "do not fit this command",
            true,
        ),
        ("zero expiry", plus(("expires_in", Opt::S("0s"))), "zero", false),
        ("negative expiry", plus(("expires_in", Opt::S("-1d"))), "not a duration", false),
        ("expiry without a unit", plus(("expires_in", Opt::S("10"))), "not a duration", false),
        ("expiry in weeks", plus(("expires_in", Opt::S("2w"))), "not a duration", false),
        ("expiry over ten years", plus(("expires_in", Opt::S("3651d"))), "too long", false),
        ("rate limit 0", plus(("rate_limit", Opt::I(0))), "0 is not a rate limit", true),
        ("rate limit over 100000", plus(("rate_limit", Opt::I(100_001))), "100001 is not a rate limit", true),
        ("rate limit that is a word", plus(("rate_limit", Opt::Raw("fast"))), "do not fit this command", true),
        ("CIDR prefix too long", plus(("allowed_ips", Opt::S("10.0.0.0/33"))), "not an IP address or CIDR", false),
        ("an IP that is a word", plus(("allowed_ips", Opt::S("abc"))), "'abc' is not an IP address", false),
        ("65 allowed IPs", plus(("allowed_ips", Opt::S(leak(&many_ips)))), "65 entries given", false),
    ];
    for (what, options, needle, unchecked) in &cases {
        // Act
        let mut b = with(app.double.slash(GUILD, ids::ALICE_ID).subcommand("apikey", "create"), options);
        if *unchecked {
            b = b.unchecked();
        }
        let reply = reply_to(&app, b).await;

        // Assert
        assert_refused(what, &reply, needle);
    }
    assert_eq!(keys_json(&app), "[]", "nothing was created");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_create_missing_a_required_option_is_refused_with_a_message() {
    let app = spawn_app().await;

    let reply = reply_to(
        &app,
        app.double.slash(GUILD, ids::ALICE_ID).subcommand("apikey", "create").string("name", "no scopes").unchecked(),
    )
    .await;

    assert_refused("create without scopes", &reply, "do not fit this command");
    assert_eq!(keys_json(&app), "[]");
}

#[tokio::test]
async fn bad_key_and_grace_options_get_an_ephemeral_reason_and_change_nothing() {
    let app = spawn_app().await;
    let secret = app.create_key(GUILD, "twin", "bans.read", &[]);
    app.create_key(GUILD, "twin", "bans.read", &[]);
    let before = keys_json(&app);
    let prefix = &secret[..12];
    // (what, subcommand, options, needle)
    let cases: Vec<(&str, &str, Opts<'_>, &str)> = vec![
        (
            "revoke an unknown key",
            "revoke",
            vec![("key", Opt::S("no-such-key"))],
            "No key in this server matches `no-such-key`",
        ),
        (
            "delete an unknown key",
            "delete",
            vec![("key", Opt::S("key_0000000000000000"))],
            "No key in this server matches",
        ),
        ("rotate an unknown key", "rotate", vec![("key", Opt::S("gk_live_ZZZZ"))], "No key in this server matches"),
        (
            "info with backticks",
            "info",
            vec![("key", Opt::S("`@everyone`"))],
            "No key in this server matches `'@everyone'`",
        ),
        ("a name two keys share", "revoke", vec![("key", Opt::S("twin"))], "matches more than one key"),
        ("delete an active key", "delete", vec![("key", Opt::S(prefix))], "still active"),
        (
            "grace over seven days",
            "rotate",
            vec![("key", Opt::S(prefix)), ("grace", Opt::S("8d"))],
            "the most allowed, 7d",
        ),
        ("zero grace", "rotate", vec![("key", Opt::S(prefix)), ("grace", Opt::S("0s"))], "zero"),
        ("grace that is a word", "rotate", vec![("key", Opt::S(prefix)), ("grace", Opt::S("abc"))], "not a duration"),
    ];
    for (what, sub, options, needle) in &cases {
        // Act
        let reply =
            reply_to(&app, with(app.double.slash(GUILD, ids::ALICE_ID).subcommand("apikey", sub), options)).await;

        // Assert
        assert_refused(what, &reply, needle);
        assert!(reply.custom_ids().is_empty(), "{what}: no confirm buttons for a refused request");
    }
    assert_eq!(keys_json(&app), before, "nothing changed");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn an_audit_channel_that_is_not_a_channel_is_refused() {
    let app = spawn_app().await;

    let reply = reply_to(
        &app,
        app.double
            .slash(GUILD, ids::ALICE_ID)
            .subcommand("apikey", "audit-channel")
            .arg("channel", "not-a-channel")
            .unchecked(),
    )
    .await;

    assert_refused("channel option that is a word", &reply, "do not fit this command");
}

#[tokio::test]
async fn the_command_in_a_direct_message_is_refused_with_a_hint() {
    let app = spawn_app().await;

    for sub in ["create", "list"] {
        let mut b = app.double.dm_slash(ids::ALICE_ID).subcommand("apikey", sub).unchecked();
        if sub == "create" {
            b = b.string("name", "dm").string("scopes", "bans.read");
        }
        let reply = reply_to(&app, b).await;

        assert_refused(&format!("/apikey {sub} in a DM"), &reply, "in a server");
    }
    assert_eq!(keys_json(&app), "[]");
}

#[tokio::test]
async fn a_plain_member_is_refused_for_every_subcommand() {
    let app = spawn_app().await;
    let secret = app.create_key(GUILD, "k", "bans.read", &[]);
    let before = keys_json(&app);
    let prefix = &secret[..12];
    let cases: Vec<(&str, Vec<(&str, Opt<'_>)>)> = vec![
        ("create", vec![("name", Opt::S("x")), ("scopes", Opt::S("bans.read"))]),
        ("list", vec![]),
        ("info", vec![("key", Opt::S(prefix))]),
        ("revoke", vec![("key", Opt::S(prefix))]),
        ("delete", vec![("key", Opt::S(prefix))]),
        ("rotate", vec![("key", Opt::S(prefix))]),
        ("audit-channel", vec![]),
    ];
    for (sub, options) in &cases {
        let reply = reply_to(&app, with(app.double.slash(GUILD, ids::PAT_ID).subcommand("apikey", sub), options)).await;

        assert_refused(&format!("/apikey {sub} by a plain member"), &reply, "Manage Server");
    }
    assert_eq!(keys_json(&app), before, "nothing changed");
}

#[tokio::test]
async fn a_subcommand_the_bot_does_not_have_gets_an_answer() {
    let app = spawn_app().await;

    let reply =
        reply_to(&app, app.double.slash(GUILD, ids::ALICE_ID).subcommand("apikey", "frobnicate").unchecked()).await;

    assert_refused("/apikey frobnicate", &reply, "not known");
    app.double.assert_no_violations();
}

#[tokio::test]
async fn a_confirm_prompt_is_private_so_no_one_else_can_press_it() {
    // Arrange: Alice asks to revoke a key.
    let app = spawn_app().await;
    let secret = app.create_key(GUILD, "guarded", "bans.read", &[]);
    let sent = app.double.slash(GUILD, ids::ALICE_ID).subcommand("apikey", "revoke").string("key", &secret[..12]);
    let prompt = reply_to(&app, sent).await;
    let confirm = prompt.custom_ids().into_iter().find(|c| c.ends_with("confirm")).expect("a Revoke button");
    let message = prompt.followups.last().cloned().or(prompt.message.clone()).expect("the prompt message");

    // Act: Pat tries to press Revoke. (The bot also answers a press by anyone
    // but the author with "Only the admin who ran this command can answer
    // it", but Discord never delivers one: the prompt is ephemeral.)
    let click = app.double.click(GUILD, ids::PAT_ID, &message, &confirm).await;

    // Assert
    let refused = click.expect_err("only Alice can see, so press, the prompt");
    assert!(refused.to_string().contains("ephemeral"), "{refused}");
    assert!(keys_json(&app).contains("\"active\""), "the key is still active: {}", keys_json(&app));
}
