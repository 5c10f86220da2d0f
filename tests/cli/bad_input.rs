//! Bad input and refused operations.

use crate::helpers::*;
use std::time::Duration;

#[test]
fn bad_usage_exits_2_with_one_line_and_changes_nothing() {
    // Arrange: a database with some history, so a change would show.
    let sandbox = Sandbox::migrated();
    let active = sandbox.create(GUILD, "active", &[]);
    let revoked = sandbox.create(GUILD, "revoked", &[]);
    sandbox.run(&["keys", "revoke", &revoked[..12]]).assert_ok();
    let active_id = sandbox.key_id(GUILD, &active);
    let long_name = "x".repeat(65);
    let create = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["keys", "create", "--guild", GUILD, "--name", "new", "--scopes", "bans.read"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let with_name = |name: &str| -> Vec<String> {
        ["keys", "create", "--guild", GUILD, "--scopes", "bans.read", "--name", name].map(str::to_owned).to_vec()
    };
    let with_scopes = |scopes: &str| -> Vec<String> {
        ["keys", "create", "--guild", GUILD, "--name", "new", "--scopes", scopes].map(str::to_owned).to_vec()
    };
    let with_guild = |guild: &str| -> Vec<String> {
        ["keys", "create", "--name", "new", "--scopes", "bans.read", &format!("--guild={guild}")]
            .map(str::to_owned)
            .to_vec()
    };
    let rotate = |grace: &str| -> Vec<String> {
        ["keys", "rotate", &active_id, &format!("--grace={grace}")].map(str::to_owned).to_vec()
    };
    let until_unused = |idle: &str| -> Vec<String> {
        ["keys", "rotate", &active_id, &format!("--grace-until-unused={idle}")].map(str::to_owned).to_vec()
    };
    let both: Vec<String> =
        ["keys", "rotate", &active_id, "--grace", "10m", "--grace-until-unused", "1h"].map(str::to_owned).to_vec();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        // (what is wrong, arguments, what stderr must mention)
        ("empty name", with_name(""), "--name"),
        ("blank name", with_name("   "), "--name"),
        ("65-character name", with_name(&long_name), "--name"),
        ("name with a line break", with_name("two\nlines"), "--name"),
        ("unknown scope", with_scopes("bans.read,admin"), "unknown scope 'admin'"),
        ("duplicate scope", with_scopes("bans.read bans.read"), "listed twice"),
        ("no scope", with_scopes(""), "--scopes"),
        ("unknown environment", create(&["--env", "prod"]), "--env"),
        ("zero duration", create(&["--expires", "0s"]), "--expires"),
        ("negative duration", create(&["--expires=-1d"]), "--expires"),
        ("duration without a unit", create(&["--expires", "10"]), "--expires"),
        ("duration with an unknown unit", create(&["--expires", "2w"]), "--expires"),
        ("duration that is a word", create(&["--expires", "abc"]), "--expires"),
        ("duration over ten years", create(&["--expires", "3651d"]), "--expires"),
        ("zero rate limit", create(&["--rate-limit", "0"]), "--rate-limit"),
        ("negative rate limit", create(&["--rate-limit", "-5"]), "--rate-limit"),
        ("rate limit that is a word", create(&["--rate-limit", "fast"]), "--rate-limit"),
        ("CIDR prefix too long", create(&["--allowed-ips", "10.0.0.0/33"]), "--allowed-ips"),
        ("IPv6 CIDR prefix too long", create(&["--allowed-ips", "2001:db8::/129"]), "--allowed-ips"),
        ("IP that is a word", create(&["--allowed-ips", "abc"]), "--allowed-ips"),
        ("one bad IP among good", create(&["--allowed-ips", "10.0.0.1,1.2.3"]), "--allowed-ips"),
        ("guild that is a word", with_guild("abc"), "--guild"),
        ("guild zero", with_guild("0"), "--guild"),
        ("negative guild", with_guild("-1"), "--guild"),
        ("guild beyond a snowflake", with_guild("99999999999999999999"), "--guild"),
        (
            "missing --name",
            ["keys", "create", "--guild", GUILD, "--scopes", "bans.read"].map(str::to_owned).to_vec(),
            "--name",
        ),
        ("unknown flag", create(&["--bogus"]), "--bogus"),
        ("list with a bad guild", ["keys", "list", "--guild", "abc"].map(str::to_owned).to_vec(), "--guild"),
        ("list without a guild", ["keys", "list"].map(str::to_owned).to_vec(), "--guild"),
        ("revoke without a key", ["keys", "revoke"].map(str::to_owned).to_vec(), "KEY"),
        ("grace over seven days", rotate("8d"), "--grace"),
        ("zero grace", rotate("0s"), "--grace"),
        ("grace that is a word", rotate("abc"), "--grace"),
        ("negative grace", rotate("-10m"), "--grace"),
        ("zero grace until unused", until_unused("0s"), "--grace-until-unused: '0s' is zero"),
        (
            "grace until unused over 30 days",
            until_unused("31d"),
            "--grace-until-unused: '31d' is longer than the most allowed, 30d",
        ),
        (
            "grace until unused that is a word",
            until_unused("garbage"),
            "--grace-until-unused: 'garbage' is not a duration",
        ),
        ("both graces", both, "--grace-until-unused: give either a grace period or a grace until unused, not both"),
    ];
    sandbox.assert_usage_errors(&cases);
}

#[test]
fn a_negative_value_given_as_a_separate_argument_is_named_in_the_error() {
    let sandbox = Sandbox::migrated();
    let secret = sandbox.create(GUILD, "k", &[]);
    let id = sandbox.key_id(GUILD, &secret);
    let cases: [(&[&str], &str); 3] = [
        (
            &["keys", "create", "--guild", GUILD, "--name", "n", "--scopes", "bans.read", "--expires", "-1d"],
            "--expires",
        ),
        (&["keys", "rotate", &id, "--grace", "-10m"], "--grace"),
        (&["keys", "create", "--guild", "-1", "--name", "n", "--scopes", "bans.read"], "--guild"),
    ];
    for (args, flag) in cases {
        let out = sandbox.run(args);

        out.assert_code(2);
        assert!(out.one_stderr_line().contains(flag), "the error should name {flag}\n{}", out.describe());
    }
}

#[test]
fn refused_operations_exit_1_with_one_line_and_change_nothing() {
    // Arrange: three active keys (the default limit) and one revoked key.
    let sandbox = Sandbox::migrated();
    let revoked = sandbox.create(GUILD, "old one", &[]);
    sandbox.run(&["keys", "revoke", &revoked[..12]]).assert_ok();
    let active: Vec<String> = (1..=3).map(|i| sandbox.create(GUILD, &format!("active {i}"), &[])).collect();
    let revoked_id = sandbox.key_id(GUILD, &revoked);
    let active_id = sandbox.key_id(GUILD, &active[0]);
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).collect() };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        // (what is refused, arguments, what stderr must mention)
        ("revoking an unknown id", owned(&["keys", "revoke", "key_0000000000000000"]), "no key matches"),
        ("revoking an unknown prefix", owned(&["keys", "revoke", "gk_live_ZZZZ"]), "no key matches"),
        ("deleting an unknown key", owned(&["keys", "delete", "key_0000000000000000"]), "no key matches"),
        ("rotating an unknown key", owned(&["keys", "rotate", "key_0000000000000000"]), "no key matches"),
        ("deleting an active key by id", owned(&["keys", "delete", &active_id]), "revoke it first"),
        ("deleting an active key by prefix", owned(&["keys", "delete", &active[1][..12]]), "revoke it first"),
        ("revoking a revoked key", owned(&["keys", "revoke", &revoked_id]), "revoked"),
        ("rotating a revoked key", owned(&["keys", "rotate", &revoked_id]), "revoked"),
        ("rotating a revoked key with grace", owned(&["keys", "rotate", &revoked[..12], "--grace", "1h"]), "revoked"),
        (
            "a fourth active key",
            owned(&["keys", "create", "--guild", GUILD, "--name", "fourth", "--scopes", "bans.read"]),
            LIMIT_MESSAGE,
        ),
    ];
    sandbox.assert_refused(&cases, 1);
}

#[test]
fn the_limit_message_tells_the_operator_to_revoke_a_key() {
    // Arrange
    let sandbox = Sandbox::migrated();
    for i in 1..=3 {
        sandbox.create(GUILD, &format!("k{i}"), &[]);
    }

    // Act
    let out = sandbox.run(&["keys", "create", "--guild", GUILD, "--name", "k4", "--scopes", "bans.read"]);

    // Assert
    out.assert_code(1);
    let line = out.one_stderr_line();
    assert!(line.contains(LIMIT_MESSAGE), "{}", out.describe());
    assert!(line.contains("guildkey keys revoke"), "the hint should name the command\n{}", out.describe());
}

#[test]
fn revoked_and_expired_keys_do_not_count_toward_the_limit_and_guilds_are_separate() {
    // Arrange: a guild at its limit, then one key revoked.
    let sandbox = Sandbox::migrated();
    let keys: Vec<String> = (1..=3).map(|i| sandbox.create(GUILD, &format!("k{i}"), &[])).collect();
    sandbox.run(&["keys", "revoke", &keys[0][..12]]).assert_ok();
    let expiring = sandbox.create(OTHER_GUILD, "short-lived", &["--expires", "1s"]);

    // Act
    let after_revoke = sandbox.run(&["keys", "create", "--guild", GUILD, "--name", "k4", "--scopes", "bans.read"]);
    let other_guild: Vec<Outcome> = (1..=2)
        .map(|i| {
            sandbox.run(&[
                "keys",
                "create",
                "--guild",
                OTHER_GUILD,
                "--name",
                &format!("o{i}"),
                "--scopes",
                "bans.read",
            ])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1300));
    let after_expiry =
        sandbox.run(&["keys", "create", "--guild", OTHER_GUILD, "--name", "o3", "--scopes", "bans.read"]);

    // Assert
    after_revoke.assert_ok();
    for out in &other_guild {
        out.assert_ok();
    }
    after_expiry.assert_ok();
    assert_eq!(sandbox.listed(OTHER_GUILD, &expiring)["status"], "expired");
    assert_eq!(sandbox.list(OTHER_GUILD).len(), 4);
}
