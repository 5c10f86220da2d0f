//! keys create / list.

use crate::helpers::*;
use chrono::Utc;
use serde_json::Value;

#[test]
fn keys_create_prints_only_the_secret_and_stores_the_key() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let started = Utc::now();

    // Act
    let out = sandbox.run(&["keys", "create", "--guild", GUILD, "--name", "Game server", "--scopes", "bans.read"]);

    // Assert
    out.assert_ok();
    let secret = out.secret();
    assert!(secret.starts_with("gk_live_"), "default environment is live: {secret}");
    assert_eq!(secret.len(), 46);
    assert!(!out.stderr.contains(random_part(&secret)), "stderr repeats the secret\n{}", out.describe());
    let key = sandbox.listed(GUILD, &secret);
    assert_eq!(key["name"], "Game server");
    assert_eq!(key["guild_id"], GUILD);
    assert_eq!(key["environment"], "live");
    assert_eq!(key["status"], "active");
    assert_eq!(key["created_by"], "cli");
    assert_eq!(strings(&key["scopes"]), ["bans.read"]);
    assert_eq!(key["rate_limit_per_minute"], 60, "default rate limit");
    assert_eq!(key["expires_at"], Value::Null);
    assert_eq!(key["revoked_at"], Value::Null);
    assert_eq!(key["last_used_at"], Value::Null);
    assert!(strings(&key["allowed_ips"]).is_empty());
    assert!(key["key_id"].as_str().unwrap().starts_with("key_"), "{key}");
    assert!(time(&key["created_at"]) >= started - chrono::Duration::seconds(1));
    let id = key["key_id"].as_str().unwrap();
    assert!(out.stderr.contains(id), "stderr should say which key was created\n{}", out.describe());
    assert_eq!(sandbox.hashes(id).0, sha256(&secret), "the stored hash is SHA-256 of the whole token");
    assert_eq!(sandbox.audit(), [("key.created".to_owned(), "cli".to_owned(), Some(id.to_owned()))]);
}

#[test]
fn keys_create_says_on_stderr_that_the_key_has_no_makers_bound() {
    // Arrange
    let sandbox = Sandbox::migrated();

    // Act
    let out = sandbox.run(&["keys", "create", "--guild", GUILD, "--name", "ops", "--scopes", "bans.write,roles.write"]);

    // Assert: the operator is trusted, and told so; the key records no maker.
    out.assert_ok();
    assert!(out.stderr.contains("this key has no maker's bound"), "{}", out.describe());
    assert!(!out.stdout.contains("maker"), "stdout is the secret alone\n{}", out.describe());
    let key = sandbox.listed(GUILD, &out.secret());
    assert_eq!(key["maker_id"], Value::Null, "{key}");
}

#[test]
fn keys_create_with_env_test_issues_a_test_key() {
    let sandbox = Sandbox::migrated();

    let secret = sandbox.create(GUILD, "staging", &["--env", "test"]);

    assert!(secret.starts_with("gk_test_"), "{secret}");
    assert_eq!(sandbox.listed(GUILD, &secret)["environment"], "test");
}

#[test]
fn keys_create_records_expiry_rate_limit_allowed_ips_and_scopes() {
    // Arrange
    let sandbox = Sandbox::migrated();

    // Act
    let secret = sandbox.create(
        GUILD,
        "  dashboard  ",
        &[
            "--scopes",
            "guild.read, audit.read roles.write",
            "--expires",
            "30d",
            "--rate-limit",
            "10",
            "--allowed-ips",
            "203.0.113.7, 10.1.2.3/8,2001:db8::/32",
        ],
    );

    // Assert
    let key = sandbox.listed(GUILD, &secret);
    assert_eq!(key["name"], "dashboard", "names are trimmed");
    assert_eq!(strings(&key["scopes"]), ["guild.read", "roles.write", "audit.read"]);
    assert_eq!(key["rate_limit_per_minute"], 10);
    assert_eq!(strings(&key["allowed_ips"]), ["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]);
    let lifetime = time(&key["expires_at"]) - time(&key["created_at"]);
    assert_eq!(lifetime, chrono::Duration::days(30), "--expires 30d: {key}");
}

#[test]
fn keys_create_accepts_a_64_character_unicode_name() {
    let sandbox = Sandbox::migrated();
    let name = "é".repeat(64);

    let secret = sandbox.create(GUILD, &name, &[]);

    assert_eq!(sandbox.listed(GUILD, &secret)["name"], name.as_str());
}

#[test]
fn keys_create_accepts_every_duration_unit() {
    let sandbox = Sandbox::migrated();
    for (guild, expires, seconds) in
        [("1", "90s", 90), ("2", "10m", 600), ("3", "12h", 43_200), ("4", "3650d", 315_360_000)]
    {
        let secret = sandbox.create(guild, "k", &["--expires", expires]);

        let key = sandbox.listed(guild, &secret);
        let lifetime = time(&key["expires_at"]) - time(&key["created_at"]);
        assert_eq!(lifetime, chrono::Duration::seconds(seconds), "--expires {expires}");
    }
}

#[test]
fn keys_list_prints_a_table_with_statuses_and_the_active_count() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let kept = sandbox.create(GUILD, "kept key", &[]);
    let gone = sandbox.create(GUILD, "gone key", &[]);
    let other = sandbox.create(OTHER_GUILD, "other guild's key", &[]);
    sandbox.run(&["keys", "revoke", &gone[..12]]).assert_ok();

    // Act
    let out = sandbox.run(&["keys", "list", "--guild", GUILD]);

    // Assert
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header, two keys, count\n{}", out.describe());
    for column in ["ID", "NAME", "PREFIX", "ENV", "STATUS", "SCOPES", "CREATED", "LAST USED", "EXPIRES"] {
        assert!(lines[0].contains(column), "header lacks {column}\n{}", out.describe());
    }
    let row = |secret: &str| *lines.iter().find(|l| l.contains(&secret[..12])).expect("a row per key");
    let kept_row = row(&kept);
    assert!(kept_row.contains("kept key") && kept_row.contains("active"), "{}", out.describe());
    assert!(kept_row.contains(&sandbox.key_id(GUILD, &kept)), "{}", out.describe());
    let gone_row = row(&gone);
    assert!(gone_row.contains("gone key") && gone_row.contains("revoked"), "{}", out.describe());
    assert!(!out.stdout.contains(&other[..12]), "another guild's key listed\n{}", out.describe());
    assert_eq!(lines[3], format!("1 of 3 active keys in guild {GUILD}"), "the count names the guild");
    assert!(!out.stdout.contains(random_part(&kept)), "list shows a secret\n{}", out.describe());
}

#[test]
fn keys_list_of_a_guild_without_keys_says_so() {
    let sandbox = Sandbox::migrated();

    let table = sandbox.run(&["keys", "list", "--guild", GUILD]);
    let json = sandbox.list(GUILD);

    table.assert_ok();
    assert!(table.stdout.contains("no keys"), "{}", table.describe());
    assert!(table.stdout.contains("0 of 3 active keys"), "{}", table.describe());
    assert!(json.is_empty());
}

#[test]
fn keys_commands_work_on_a_database_not_yet_migrated() {
    let sandbox = Sandbox::new();

    let secret = sandbox.create(GUILD, "first", &[]);

    assert_eq!(sandbox.list(GUILD).len(), 1, "{secret}");
}
