//! `guildkey roblox push set|show|remove` and `keys create --roblox-universe`
//! without Roblox: usage errors, the secrets key required, the Open Cloud
//! key never printed nor stored in clear, and no key made when delivery
//! cannot happen.

use crate::helpers::*;

const OPEN_CLOUD_KEY: &str = "open-cloud-key-never-shown-7f3a";
const SECRETS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn set_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["roblox", "push", "set", "--guild", GUILD, "--universe", "42", "--key", "-"];
    args.extend_from_slice(extra);
    args
}

fn with_key(sandbox: &Sandbox, args: &[&str], secrets: bool) -> Outcome {
    use std::io::Write as _;
    let mut cmd = sandbox.command(args);
    if secrets {
        cmd.env("GUILDKEY_SECRETS_KEY", SECRETS_KEY);
    }
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start guildkey");
    child.stdin.take().unwrap().write_all(OPEN_CLOUD_KEY.as_bytes()).unwrap();
    Outcome::from_output(args, child.wait_with_output().unwrap())
}

#[test]
fn push_set_needs_the_secrets_key_and_checks_its_options() {
    let sandbox = Sandbox::migrated();
    let out = with_key(&sandbox, &set_args(&[]), false);
    out.assert_code(1);
    assert!(out.stderr.contains("GUILDKEY_SECRETS_KEY is not set"), "{}", out.describe());
    with_key(&sandbox, &set_args(&["--mode", "kick"]), true).assert_code(2);
    let long = "t".repeat(81);
    let out = with_key(&sandbox, &set_args(&["--topic", &long]), true);
    out.assert_code(2);
    assert!(out.stderr.contains("--topic"), "{}", out.describe());
}

#[test]
fn push_set_show_remove_never_show_or_store_the_key_in_clear() {
    let sandbox = Sandbox::migrated();
    let out = with_key(&sandbox, &set_args(&["--mode", "both", "--topic", "bans"]), true);
    out.assert_ok();
    assert!(out.stderr.contains("universe 42 as both (topic bans)"), "{}", out.describe());
    let show = sandbox.run_with(&["roblox", "push", "show", "--guild", GUILD], |c| {
        c.env("GUILDKEY_SECRETS_KEY", SECRETS_KEY);
    });
    show.assert_ok();
    assert!(show.stdout.contains("universe 42, mode both, topic bans"), "{}", show.describe());
    for o in [&out, &show] {
        assert!(!o.stdout.contains(OPEN_CLOUD_KEY) && !o.stderr.contains(OPEN_CLOUD_KEY), "{}", o.describe());
    }
    for (column, cell) in sandbox.all_cells() {
        assert!(!contains(&cell, OPEN_CLOUD_KEY), "the key is stored in clear in {column}");
    }
    sandbox.run(&["roblox", "push", "remove", "--guild", GUILD]).assert_ok();
    let show = sandbox.run(&["roblox", "push", "show", "--guild", GUILD]);
    assert!(show.stdout.contains("no bans pushed"), "{}", show.describe());
}

#[test]
fn a_delivered_key_needs_the_public_url_and_is_not_made_without_it() {
    let sandbox = Sandbox::migrated();
    with_key(&sandbox, &set_args(&["--mode", "none"]), true).assert_ok();
    let args =
        ["keys", "create", "--guild", GUILD, "--name", "game", "--scopes", "bans.read", "--roblox-universe", "42"];
    let out = sandbox.run_with(&args, |c| {
        c.env("GUILDKEY_SECRETS_KEY", SECRETS_KEY);
    });
    out.assert_code(1);
    assert!(out.stderr.contains("http.public_url"), "{}", out.describe());
    assert!(sandbox.list(GUILD).is_empty(), "no key is made");
    let bad = ["keys", "create", "--guild", GUILD, "--name", "game", "--scopes", "bans.read", "--roblox-secret", "x"];
    sandbox.run(&bad).assert_code(2);
}
