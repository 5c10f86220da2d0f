//! More bad input (docs/bad-input.md).

use crate::helpers::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn more_bad_flags_exit_2_with_one_line_naming_the_flag_and_change_nothing() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let secret = sandbox.create(GUILD, "k", &[]);
    let long_name = "n".repeat(10_000);
    let many_ips: String = (0..65).map(|i| format!("10.0.{i}.1")).collect::<Vec<_>>().join(",");
    let create = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["keys", "create", "--guild", GUILD, "--name", "new", "--scopes", "bans.read"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).collect() };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        // (what is wrong, arguments, what stderr must mention)
        ("rate limit over 100000", create(&["--rate-limit", "100001"]), "--rate-limit: 100001 is not a rate limit"),
        ("65 allowed IPs", create(&["--allowed-ips", &many_ips]), "--allowed-ips: 65 entries given"),
        (
            "a 10 000-character name",
            owned(&["keys", "create", "--guild", GUILD, "--scopes", "bans.read", "--name", &long_name]),
            "10000 characters long",
        ),
        ("revoke an empty KEY", owned(&["keys", "revoke", ""]), "KEY: give the key's id"),
        ("delete a blank KEY", owned(&["keys", "delete", "   "]), "KEY: give the key's id"),
        ("rotate an empty KEY", owned(&["keys", "rotate", ""]), "KEY: give the key's id"),
        ("rotate without a KEY", owned(&["keys", "rotate"]), "<KEY>"),
        (
            "an extra argument to list",
            owned(&["keys", "list", "--guild", GUILD, "extra"]),
            "unexpected argument 'extra'",
        ),
        ("an extra argument to migrate", owned(&["migrate", "extra"]), "unexpected argument 'extra'"),
        ("an unknown flag to config check", owned(&["config", "check", "--bogus"]), "--bogus"),
        ("a flag given twice", create(&["--env", "live", "--env", "test"]), "--env"),
    ];
    let before = sandbox.assert_usage_errors(&cases);
    assert!(!before.rows.values().flatten().any(|r| r.contains(&secret[8..40])));
}

#[test]
fn values_at_the_limits_and_any_case_environment_are_accepted() {
    let sandbox = Sandbox::migrated();
    let cases: [&[&str]; 4] = [
        &["--expires", "3650d", "--rate-limit", "100000"],
        &["--env", "TEST"],
        &["--rate-limit", "1", "--expires", "1s"],
        &["--allowed-ips", " 10.0.0.1 , ::1 "],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let guild = format!("90{i}");
        let secret = sandbox.create(&guild, "edge", extra);
        if extra.contains(&"TEST") {
            assert!(secret.starts_with("gk_test_"), "--env TEST makes a test key");
        }
        assert_eq!(sandbox.list(&guild).len(), 1, "{extra:?}");
    }
}

#[test]
fn more_bad_config_files_and_variables_exit_2_with_one_line_naming_the_key() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("a-directory")).unwrap();
    std::fs::write(sandbox.path().join("latin1.toml"), b"[keys]\nprefix = \"\xff\"\n").unwrap();
    let files = [
        ("[http]\nmax_body_bytes = 67108865\n", "http.max_body_bytes: 67108865 is out of range"),
        ("[keys]\nmax_per_guild = 1001\n", "keys.max_per_guild: 1001 is out of range"),
        ("[keys]\nmax_per_guild = 0\n", "keys.max_per_guild: 0 is out of range"),
        ("[keys]\nprefix = \"abcdefghijklmnopq\"\n", "keys.prefix"),
        ("[keys]\nprefix = \"1gk\"\n", "keys.prefix"),
        ("[keys]\ndefault_rate_limit_per_minute = 100001\n", "keys.default_rate_limit_per_minute"),
        ("[keys]\nlast_used_flush_seconds = 3601\n", "keys.last_used_flush_seconds"),
        ("[log]\nformat = \"JSON\"\n", "log.format: 'JSON' is not pretty or json"),
        ("[log]\nlevel = \"debug\"\n", "log.level: unknown key"),
        ("[http]\nbind = \"127.0.0.1:8080\\nx\"\n", "http.bind: '127.0.0.1:8080\\nx'"),
        ("[database]\nurl = \"sqlite://\"\n", "database.url"),
        ("[database]\nurl = \"sqlite::memory:\"\n", "database.url"),
        ("[discord]\ntoken = \"\"\n", "discord.token"),
        ("keys.max_per_guild = \"3\"\n", "keys.max_per_guild"),
        ("[[keys]]\nprefix = \"gk\"\n", "keys"),
        ("\u{feff}[keys]\nmax_per_guild = 1001\n", "keys.max_per_guild"),
    ];
    for (i, (text, needle)) in files.iter().enumerate() {
        let file = format!("more-{i}.toml");
        std::fs::write(sandbox.path().join(&file), text).unwrap();

        let out = sandbox.run(&["--config", &file, "config", "check"]);

        assert_eq!(out.code, Some(2), "file {text:?} should be refused\n{}", out.describe());
        assert!(out.one_stderr_line().contains(needle), "file {text:?}: should mention {needle:?}\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
    for (path, needle) in [("a-directory", "cannot read a-directory"), ("latin1.toml", "not contain valid UTF-8")] {
        let out = sandbox.run(&["--config", path, "config", "check"]);
        out.assert_code(2);
        let line = out.one_stderr_line();
        assert!(line.contains("config file") && line.contains(needle), "{path}\n{}", out.describe());
    }
    let vars = [
        ("GUILDKEY_REGISTER_COMMANDS", "GLOBAL"),
        ("GUILDKEY_REGISTER_COMMANDS", "guild:-1"),
        ("GUILDKEY_HTTP_BIND", "127.0.0.1"),
        ("GUILDKEY_HTTP_BIND", "127.0.0.1:8080\n9"),
        ("GUILDKEY_LOG_FORMAT", "JSON"),
        ("DATABASE_URL", "sqlite://"),
        ("DATABASE_URL", "sqlite://gk.db?mode=bogus"),
        ("DATABASE_URL", "sqlite://gk.db?mode=memory"),
        ("DISCORD_API_BASE_URL", "https://"),
    ];
    for (var, value) in vars {
        let out = sandbox.run_with(&["config", "check"], |c| {
            c.env(var, value);
        });
        assert_eq!(out.code, Some(2), "{var}={value:?} should be refused\n{}", out.describe());
        assert!(out.one_stderr_line().contains(var), "{var}={value:?}: name the variable\n{}", out.describe());
    }
}

#[test]
fn empty_environment_values_mean_unset_and_a_bad_rust_log_is_reported_and_falls_back() {
    let sandbox = Sandbox::new();
    let out = sandbox.run_with(&["config", "check"], |c| {
        c.env("GUILDKEY_HTTP_BIND", "")
            .env("GUILDKEY_LOG_FORMAT", "")
            .env("GUILDKEY_REGISTER_COMMANDS", "")
            .env("DISCORD_TOKEN", "")
            .env("RUST_LOG", "[[[not a filter");
    });
    out.assert_ok();
    for line in ["http.bind = 127.0.0.1:8080", "log.format = pretty", "discord.register_commands = global"] {
        assert!(out.stdout.lines().any(|l| l == line), "missing {line:?}\n{}", out.describe());
    }
    assert!(out.stdout.contains("discord.token = (not set"), "{}", out.describe());
    assert!(out.stderr.contains("RUST_LOG") && out.stderr.contains("WARN"), "say RUST_LOG is bad\n{}", out.describe());
}

#[test]
fn run_with_an_address_already_in_use_exits_1_naming_http_bind() {
    // Arrange: hold a port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sandbox = Sandbox::new();
    let child = sandbox
        .command(&["run"])
        .env("DISCORD_TOKEN", "MTIz.not-a-real.token")
        .env("DISCORD_API_BASE_URL", "http://127.0.0.1:9")
        .env("GUILDKEY_HTTP_BIND", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start guildkey");

    // Act
    let out = Outcome::from_output(&["run"], wait_with_limit(child, Duration::from_secs(30)));

    // Assert
    out.assert_code(1);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("http.bind") && last.contains(&addr), "{}", out.describe());
    assert!(!out.stderr.contains("not-a-real"), "the token is never shown\n{}", out.describe());
    drop(taken);
}

#[test]
fn a_database_url_without_a_mode_creates_the_file_and_an_explicit_mode_is_respected() {
    // Arrange: a URL with no `?mode=`, as operators often write it.
    let sandbox = Sandbox::new();
    let fresh = sandbox.path().join("fresh").join("gk.db");
    let url = format!("sqlite://{}", fresh.display());

    // Act
    let created =
        sandbox.run_with(&["keys", "create", "--guild", GUILD, "--name", "n", "--scopes", "bans.read"], |c| {
            c.env("DATABASE_URL", &url);
        });

    // Assert: directory and file made, the key stored there.
    assert_eq!(created.code, Some(0), "{}", created.describe());
    assert!(fresh.exists(), "the database file was created");
    let listed = sandbox.run_with(&["keys", "list", "--guild", GUILD, "--json"], |c| {
        c.env("DATABASE_URL", &url);
    });
    assert!(listed.stdout.contains("\"name\": \"n\""), "{}", listed.describe());

    // `mode=rw` means "must exist": a missing file is a failure (exit 1), not created.
    let missing = sandbox.path().join("missing.db");
    let refused = sandbox.run_with(&["keys", "list", "--guild", GUILD], |c| {
        c.env("DATABASE_URL", format!("sqlite://{}?mode=rw", missing.display()));
    });
    assert_eq!(refused.code, Some(1), "{}", refused.describe());
    assert!(!missing.exists(), "mode=rw never creates the file");
}
