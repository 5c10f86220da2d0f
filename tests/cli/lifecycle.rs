//! revoke / delete / rotate.

use crate::helpers::*;
use chrono::Utc;
use std::time::Duration;

/// How a test names a key on the command line.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Id,
    Prefix,
}

impl Ref {
    fn of(self, sandbox: &Sandbox, secret: &str) -> String {
        match self {
            Ref::Id => sandbox.key_id(GUILD, secret),
            Ref::Prefix => secret[..12].to_owned(),
        }
    }
}

#[test]
fn keys_revoke_marks_the_key_revoked_by_id_or_prefix() {
    for how in [Ref::Id, Ref::Prefix] {
        // Arrange
        let sandbox = Sandbox::migrated();
        let secret = sandbox.create(GUILD, "doomed", &[]);
        let bystander = sandbox.create(GUILD, "bystander", &[]);
        let id = sandbox.key_id(GUILD, &secret);
        let reference = how.of(&sandbox, &secret);

        // Act
        let out = sandbox.run(&["keys", "revoke", &reference]);

        // Assert
        out.assert_ok();
        assert!(out.stdout.is_empty(), "{how:?}: revoke prints nothing on stdout\n{}", out.describe());
        let key = sandbox.listed(GUILD, &secret);
        assert_eq!(key["status"], "revoked", "{how:?}");
        assert!(key["revoked_at"].is_string(), "{how:?}: {key}");
        assert_eq!(sandbox.listed(GUILD, &bystander)["status"], "active", "{how:?}: only the named key");
        let audit = sandbox.audit();
        assert_eq!(audit.len(), 3, "{how:?}: {audit:?}");
        assert_eq!(audit[2], ("key.revoked".to_owned(), "cli".to_owned(), Some(id)), "{how:?}");
    }
}

#[test]
fn keys_delete_removes_a_revoked_key_by_id_or_prefix() {
    for how in [Ref::Id, Ref::Prefix] {
        // Arrange
        let sandbox = Sandbox::migrated();
        let secret = sandbox.create(GUILD, "doomed", &[]);
        let bystander = sandbox.create(GUILD, "bystander", &[]);
        let id = sandbox.key_id(GUILD, &secret);
        sandbox.run(&["keys", "revoke", &id]).assert_ok();
        let reference = how.of(&sandbox, &secret);

        // Act
        let out = sandbox.run(&["keys", "delete", &reference]);

        // Assert
        out.assert_ok();
        assert!(out.stdout.is_empty(), "{how:?}: delete prints nothing on stdout\n{}", out.describe());
        let keys = sandbox.list(GUILD);
        assert_eq!(keys.len(), 1, "{how:?}: {keys:#?}");
        assert_eq!(keys[0]["prefix"], &bystander[..12], "{how:?}");
        let audit = sandbox.audit();
        assert_eq!(audit.len(), 4, "{how:?}: {audit:?}");
        assert_eq!(audit[3], ("key.deleted".to_owned(), "cli".to_owned(), Some(id)), "{how:?}");
    }
}

#[test]
fn keys_rotate_gives_the_same_key_a_new_secret_by_id_or_prefix() {
    for how in [Ref::Id, Ref::Prefix] {
        // Arrange
        let sandbox = Sandbox::migrated();
        let old = sandbox.create(
            GUILD,
            "rotating",
            &["--expires", "30d", "--rate-limit", "5", "--allowed-ips", "10.0.0.0/8", "--env", "test"],
        );
        let before = sandbox.listed(GUILD, &old);
        let id = before["key_id"].as_str().unwrap().to_owned();
        let reference = how.of(&sandbox, &old);

        // Act
        let out = sandbox.run(&["keys", "rotate", &reference]);

        // Assert
        out.assert_ok();
        let new = out.secret();
        assert_ne!(new, old, "{how:?}");
        assert!(new.starts_with("gk_test_"), "{how:?}: rotation keeps the environment: {new}");
        let after = sandbox.listed(GUILD, &new);
        assert_eq!(after["key_id"], id.as_str(), "{how:?}: same key");
        assert_eq!(sandbox.list(GUILD).len(), 1, "{how:?}: no second key");
        for field in
            ["name", "scopes", "environment", "expires_at", "rate_limit_per_minute", "allowed_ips", "created_at"]
        {
            assert_eq!(after[field], before[field], "{how:?}: rotation changed {field}");
        }
        assert_eq!(after["status"], "active");
        let (hash, previous, previous_until) = sandbox.hashes(&id);
        assert_eq!(hash, sha256(&new), "{how:?}: the new secret is stored");
        assert_eq!(previous, None, "{how:?}: without --grace the old secret is dropped at once");
        assert_eq!(previous_until, None, "{how:?}");
        let audit = sandbox.audit();
        assert_eq!(audit.len(), 2, "{how:?}: {audit:?}");
        assert_eq!(audit[1], ("key.rotated".to_owned(), "cli".to_owned(), Some(id)), "{how:?}");
    }
}

#[test]
fn keys_rotate_with_grace_keeps_the_old_secret_for_that_long() {
    for (grace, seconds) in [("10m", 600), ("7d", 7 * 86_400)] {
        // Arrange
        let sandbox = Sandbox::migrated();
        let old = sandbox.create(GUILD, "rotating", &[]);
        let id = sandbox.key_id(GUILD, &old);
        let started = Utc::now().timestamp_millis();

        // Act
        let out = sandbox.run(&["keys", "rotate", &id, "--grace", grace]);

        // Assert
        out.assert_ok();
        let new = out.secret();
        let finished = Utc::now().timestamp_millis();
        let (hash, previous, until) = sandbox.hashes(&id);
        assert_eq!(hash, sha256(&new), "--grace {grace}");
        assert_eq!(previous, Some(sha256(&old)), "--grace {grace}: the old secret still works");
        let until = until.unwrap_or_else(|| panic!("--grace {grace}: no end to the grace period"));
        let window = (started + seconds * 1000)..=(finished + seconds * 1000);
        assert!(window.contains(&until), "--grace {grace}: old secret valid until {until}, want {window:?}");
        assert!(out.stderr.contains("previous secret"), "--grace {grace}: say so\n{}", out.describe());
        assert!(!out.stderr.contains(random_part(&old)), "--grace {grace}\n{}", out.describe());
    }
}

#[test]
fn an_expired_key_cannot_be_rotated_but_can_be_deleted_without_revoking() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let secret = sandbox.create(GUILD, "short-lived", &["--expires", "1s"]);
    let id = sandbox.key_id(GUILD, &secret);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(sandbox.listed(GUILD, &secret)["status"], "expired");

    // Act
    let rotate = sandbox.run(&["keys", "rotate", &id]);
    let delete = sandbox.run(&["keys", "delete", &id]);

    // Assert
    rotate.assert_code(1);
    assert!(rotate.one_stderr_line().contains("expired"), "{}", rotate.describe());
    delete.assert_ok();
    assert!(sandbox.list(GUILD).is_empty());
}

#[test]
fn a_key_named_or_prefixed_in_several_guilds_is_refused_without_guild_and_the_guilds_are_listed() {
    // Arrange: "game" in two guilds, "solo" in one, and a prefix two
    // guilds' keys share (made so in the database: 4 random characters
    // collide across enough keys).
    let sandbox = Sandbox::migrated();
    let game = sandbox.create(GUILD, "game", &[]);
    let other_game = sandbox.create(OTHER_GUILD, "game", &[]);
    sandbox.create(GUILD, "solo", &[]);
    let shared = sandbox.create(GUILD, "shared prefix", &[]);
    let twin = sandbox.create(OTHER_GUILD, "prefix twin", &[]);
    let twin_id = sandbox.key_id(OTHER_GUILD, &twin);
    let shared_id = sandbox.key_id(GUILD, &shared);
    block_on(async {
        let mut conn = sandbox.connect().await;
        sqlx::query("update api_key set prefix = ? where api_key_id = ?")
            .bind(&shared[..12])
            .bind(&twin_id)
            .execute(&mut conn)
            .await
            .expect("share a prefix");
    });
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).collect() };
    let both = format!("{GUILD}, {OTHER_GUILD}");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("revoking a name two guilds use", owned(&["keys", "revoke", "game"]), &both),
        ("rotating a name two guilds use", owned(&["keys", "rotate", "game"]), &both),
        ("deleting a name two guilds use", owned(&["keys", "delete", "game"]), &both),
        ("revoking a name only one guild uses", owned(&["keys", "revoke", "solo"]), GUILD),
        ("revoking a prefix two guilds share", owned(&["keys", "revoke", &shared[..12]]), &both),
        ("rotating a prefix two guilds share", owned(&["keys", "rotate", &shared[..12]]), &both),
    ];

    // Act / Assert: refused, exit 1, one line naming the guilds and --guild.
    sandbox.assert_refused(&cases, 1);
    let out = sandbox.run(&["keys", "revoke", "game"]);
    assert!(out.one_stderr_line().contains("--guild"), "say how to choose\n{}", out.describe());

    // --guild settles it, and only that guild's key changes.
    let out = sandbox.run(&["keys", "revoke", "game", "--guild", OTHER_GUILD]);
    out.assert_ok();
    let line = out.one_stderr_line();
    assert!(line.contains("'game'") && line.ends_with(&format!("in guild {OTHER_GUILD}")), "{}", out.describe());
    assert_eq!(sandbox.listed(OTHER_GUILD, &other_game)["status"], "revoked");
    assert_eq!(sandbox.listed(GUILD, &game)["status"], "active", "the other guild's 'game' is untouched");
    let out = sandbox.run(&["keys", "rotate", &shared[..12], "--guild", GUILD]);
    let new = out.assert_ok().secret();
    assert!(out.one_stderr_line().contains(&format!("in guild {GUILD}")), "{}", out.describe());
    assert_eq!(sandbox.key_id(GUILD, &new), shared_id, "the named guild's key rotated");
    assert_eq!(sandbox.hashes(&twin_id).0, sha256(&twin), "the other guild's key kept its secret");
    let out = sandbox.run(&["keys", "delete", "game", "--guild", OTHER_GUILD]);
    assert!(out.assert_ok().one_stderr_line().contains(&format!("in guild {OTHER_GUILD}")), "{}", out.describe());

    // A name in the wrong guild is not found there; a bad --guild is usage.
    let out = sandbox.run(&["keys", "revoke", "solo", "--guild", OTHER_GUILD]);
    assert!(out.assert_code(1).one_stderr_line().contains("no key matches"), "{}", out.describe());
    for bad in ["abc", "0", "-1"] {
        let out = sandbox.run(&["keys", "delete", "solo", "--guild", bad]);
        assert!(out.assert_code(2).one_stderr_line().contains("--guild"), "--guild {bad}\n{}", out.describe());
    }
}

#[test]
fn a_full_key_id_needs_no_guild_and_every_answer_names_the_guild() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let secret = sandbox.create(OTHER_GUILD, "by id", &[]);
    let id = sandbox.key_id(OTHER_GUILD, &secret);
    let in_guild = format!("in guild {OTHER_GUILD}");

    // Act
    let rotate = sandbox.run(&["keys", "rotate", &id]);
    let revoke = sandbox.run(&["keys", "revoke", &id]);
    let delete = sandbox.run(&["keys", "delete", &id]);

    // Assert
    rotate.assert_ok().secret();
    for out in [&rotate, &revoke, &delete] {
        let line = out.assert_ok().one_stderr_line();
        assert!(line.contains(&id) && line.contains(&in_guild), "name the key and its guild\n{}", out.describe());
    }
    assert!(revoke.stdout.is_empty() && delete.stdout.is_empty());
}

#[test]
fn keys_suspend_and_resume_stop_and_restart_a_key_and_refuse_what_makes_no_sense() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let secret = sandbox.create(GUILD, "game", &["--allowed-roles", "1400000000000000004", "--ban-budget", "5"]);
    let id = sandbox.key_id(GUILD, &secret);

    // Act / Assert: suspended, listed so, audited with its reason.
    let out = sandbox.run(&["keys", "suspend", "game", "--guild", GUILD, "--reason", "checking a leak"]);
    let line = out.assert_ok().one_stderr_line();
    assert!(line.starts_with("suspended key") && line.contains(&format!("in guild {GUILD}")), "{}", out.describe());
    assert!(out.stdout.is_empty());
    let listed = sandbox.listed(GUILD, &secret);
    assert_eq!(listed["status"], "suspended", "{listed}");
    assert_eq!(
        (&listed["allowed_roles"], &listed["ban_budget"]),
        (&serde_json::json!(["1400000000000000004"]), &serde_json::json!(5))
    );
    assert!(listed["suspended_at"].is_string(), "{listed}");
    // Twice is refused; so is resuming an active key, and deleting a suspended one.
    let again = sandbox.run(&["keys", "suspend", &id]);
    assert!(again.assert_code(1).one_stderr_line().contains("is suspended"), "{}", again.describe());
    let delete = sandbox.run(&["keys", "delete", &id]);
    assert!(delete.assert_code(1).one_stderr_line().contains("still active"), "{}", delete.describe());

    let out = sandbox.run(&["keys", "resume", &id]);
    assert!(out.assert_ok().one_stderr_line().starts_with("resumed key"), "{}", out.describe());
    assert_eq!(sandbox.listed(GUILD, &secret)["status"], "active");
    let twice = sandbox.run(&["keys", "resume", &id]);
    assert!(twice.assert_code(1).one_stderr_line().contains("not suspended"), "{}", twice.describe());
    // A name without --guild is refused as for revoke.
    sandbox.run(&["keys", "suspend", "game"]).assert_code(1);
}

#[test]
fn bad_allowed_roles_and_budgets_exit_2_naming_the_flag() {
    let sandbox = Sandbox::migrated();
    let create = |flag: &str, value: &str| -> Vec<String> {
        ["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "roles.write", flag, value]
            .map(str::to_owned)
            .to_vec()
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("a role name, not an id", create("--allowed-roles", "Admin"), "--allowed-roles"),
        ("a short number", create("--allowed-roles", "12345"), "--allowed-roles"),
        ("a zero budget", create("--ban-budget", "0"), "--ban-budget"),
        ("a huge budget", create("--role-budget", "10001"), "--role-budget"),
        ("a negative budget", create("--role-budget", "-3"), "--role-budget"),
    ];
    sandbox.assert_refused(&cases, 2);
    assert!(sandbox.list(GUILD).is_empty(), "nothing was created");
}
