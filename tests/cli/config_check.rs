//! config check.

use crate::helpers::*;
use regex::Regex;
use std::path::Path;
use std::process::Command;

#[test]
fn config_check_prints_built_in_defaults_without_a_config_file() {
    // Arrange
    let sandbox = Sandbox::new();
    let database_line = format!("database.url = {}", sandbox.database_url);

    // Act
    let out = sandbox.run(&["config", "check"]);

    // Assert
    out.assert_ok();
    for line in [
        "discord.api_base_url = https://discord.com",
        "discord.register_commands = global",
        database_line.as_str(),
        "http.bind = 127.0.0.1:8080",
        "http.trust_forwarded_for = false",
        "http.max_body_bytes = 16384",
        "keys.max_per_guild = 3",
        "keys.prefix = gk",
        "keys.default_rate_limit_per_minute = 60",
        "keys.last_used_flush_seconds = 5",
        "log.format = pretty",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "missing {line:?}\n{}", out.describe());
    }
}

#[test]
fn config_check_prints_file_values_with_environment_overrides_on_top() {
    // Arrange
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path().join("custom.toml"),
        "[discord]\nregister_commands = \"none\"\n\n[http]\nbind = \"127.0.0.1:9000\"\nmax_body_bytes = 1024\n\
         trust_forwarded_for = true\n\n[keys]\nmax_per_guild = 5\nprefix = \"acme\"\n\n[log]\nformat = \"json\"\n",
    )
    .unwrap();

    // Act
    let out = sandbox.run_with(&["--config", "custom.toml", "config", "check"], |c| {
        c.env("GUILDKEY_HTTP_BIND", "127.0.0.1:0").env("GUILDKEY_REGISTER_COMMANDS", "guild:42");
    });

    // Assert
    out.assert_ok();
    for line in [
        "discord.register_commands = guild:42",
        "http.bind = 127.0.0.1:0",
        "http.max_body_bytes = 1024",
        "http.trust_forwarded_for = true",
        "keys.max_per_guild = 5",
        "keys.prefix = acme",
        "log.format = json",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "missing {line:?}\n{}", out.describe());
    }
}

#[test]
fn config_check_warns_when_any_peer_may_set_the_client_ip_and_shows_the_trusted_proxies() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("open.toml"), "[http]\ntrust_forwarded_for = true\n").unwrap();
    std::fs::write(
        sandbox.path().join("proxied.toml"),
        "[http]\ntrust_forwarded_for = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
    )
    .unwrap();

    let open = sandbox.run(&["--config", "open.toml", "config", "check"]);
    let proxied = sandbox.run(&["--config", "proxied.toml", "config", "check"]);
    let from_env = sandbox.run_with(&["--config", "open.toml", "config", "check"], |c| {
        c.env("GUILDKEY_HTTP_TRUSTED_PROXIES", "192.0.2.0/24, 192.0.2.9");
    });

    open.assert_ok();
    assert!(open.stdout.lines().any(|l| l == "http.trusted_proxies = (none)"), "{}", open.describe());
    let warnings: Vec<&str> = open.stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert!(warnings.len() == 1 && warnings[0].contains("http.trusted_proxies is empty"), "{}", open.describe());
    proxied.assert_ok();
    assert!(
        proxied.stdout.lines().any(|l| l == "http.trusted_proxies = 10.0.0.0/8, ::1/128"),
        "{}",
        proxied.describe()
    );
    assert!(!proxied.stderr.contains("warning"), "{}", proxied.describe());
    from_env.assert_ok();
    let line = "http.trusted_proxies = 192.0.2.0/24, 192.0.2.9/32";
    assert!(from_env.stdout.lines().any(|l| l == line), "{}", from_env.describe());
    assert!(!from_env.stderr.contains("warning"), "{}", from_env.describe());
}

#[test]
fn config_check_reads_the_file_named_by_guildkey_config() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("other.toml"), "[keys]\nmax_per_guild = 7\n").unwrap();

    let out = sandbox.run_with(&["config", "check"], |c| {
        c.env("GUILDKEY_CONFIG", "other.toml");
    });

    out.assert_ok();
    assert!(out.stdout.lines().any(|l| l == "keys.max_per_guild = 7"), "{}", out.describe());
}

#[test]
fn config_check_reads_the_file_named_by_guildkey_config_in_dotenv() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("other.toml"), "[keys]\nmax_per_guild = 9\n").unwrap();
    std::fs::write(sandbox.path().join(".env"), "GUILDKEY_CONFIG=other.toml\n").unwrap();

    let out = sandbox.run(&["config", "check"]);

    out.assert_ok();
    assert!(out.stdout.lines().any(|l| l == "keys.max_per_guild = 9"), "{}", out.describe());
}

#[test]
fn config_check_never_shows_the_discord_token() {
    const TOKEN: &str = "MTIzNDU2Nzg5.GhIjKl.very-secret-bot-token_value";
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("with-token.toml"), format!("[discord]\ntoken = \"{TOKEN}\"\n")).unwrap();
    let dotenv_dir = sandbox.path().join("dotenv");
    std::fs::create_dir(&dotenv_dir).unwrap();
    std::fs::write(dotenv_dir.join(".env"), format!("DISCORD_TOKEN={TOKEN}\n")).unwrap();

    type Setup = fn(&mut Command, &Path);
    let sources: [(&str, Setup); 3] = [
        ("environment", |c, _| {
            c.env("DISCORD_TOKEN", TOKEN);
        }),
        ("config file", |c, dir| {
            c.arg("--config").arg(dir.join("with-token.toml"));
        }),
        (".env", |c, dir| {
            c.current_dir(dir.join("dotenv"));
        }),
    ];
    for (source, setup) in sources {
        // Act
        let out = sandbox.run_with(&["config", "check"], |c| setup(c, sandbox.path()));

        // Assert
        out.assert_ok();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains(TOKEN), "token from the {source} shown\n{}", out.describe());
        assert!(!all.contains("very-secret"), "part of the token from the {source} shown\n{}", out.describe());
        assert!(
            out.stdout.lines().any(|l| l.starts_with("discord.token = ********")),
            "token from the {source} not reported as set and masked\n{}",
            out.describe()
        );
    }
}

#[test]
fn config_check_rejects_bad_file_values_with_one_line_naming_the_key() {
    let cases = [
        // (file contents, key the error must name)
        ("[discord]\ntoken = 5\n", "discord.token"),
        ("[discord]\ntoken = \"has white space\"\n", "discord.token"),
        ("[discord]\napi_base_url = \"ftp://example.com\"\n", "discord.api_base_url"),
        ("[discord]\napi_base_url = 443\n", "discord.api_base_url"),
        ("[discord]\nregister_commands = \"guild:abc\"\n", "discord.register_commands"),
        ("[discord]\nregister_commands = \"everywhere\"\n", "discord.register_commands"),
        ("[database]\nurl = \"mysql://localhost/gk\"\n", "database.url"),
        ("[database]\nurl = \"postgres://localhost:99999/gk\"\n", "database.url"),
        ("[database]\nurl = true\n", "database.url"),
        ("[http]\nbind = \"nope\"\n", "http.bind"),
        ("[http]\nbind = 8080\n", "http.bind"),
        ("[http]\ntrust_forwarded_for = \"yes\"\n", "http.trust_forwarded_for"),
        ("[http]\nmax_body_bytes = 0\n", "http.max_body_bytes"),
        ("[http]\nmax_body_bytes = \"16k\"\n", "http.max_body_bytes"),
        ("[http]\nmax_body_bytes = 1.5\n", "http.max_body_bytes"),
        ("[keys]\nmax_per_guild = -1\n", "keys.max_per_guild"),
        ("[keys]\nmax_per_guild = \"3\"\n", "keys.max_per_guild"),
        ("[keys]\nprefix = \"GK_\"\n", "keys.prefix"),
        ("[keys]\nprefix = \"\"\n", "keys.prefix"),
        ("[keys]\ndefault_rate_limit_per_minute = 0\n", "keys.default_rate_limit_per_minute"),
        ("[keys]\nlast_used_flush_seconds = \"5\"\n", "keys.last_used_flush_seconds"),
        ("[keys]\nlast_used_flush_seconds = 0\n", "keys.last_used_flush_seconds"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[log]\nformat = [\"json\"]\n", "log.format"),
        ("http = 5\n", "http"),
        ("[http]\nbnid = \"127.0.0.1:1\"\n", "http.bnid"),
        ("[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]\n", "http.trusted_proxies"),
        ("[http]\ntrusted_proxies = \"10.0.0.1, proxy.internal\"\n", "http.trusted_proxies"),
        ("[http]\ntrusted_proxies = [10]\n", "http.trusted_proxies"),
        ("[htp]\nbind = \"127.0.0.1:1\"\n", "htp"),
        ("[http\nbind = 1\n", "config file"),
    ];
    let sandbox = Sandbox::new();
    for (i, (text, key)) in cases.iter().enumerate() {
        // Arrange
        let file = format!("bad-{i}.toml");
        std::fs::write(sandbox.path().join(&file), text).unwrap();

        // Act
        let out = sandbox.run(&["--config", &file, "config", "check"]);

        // Assert
        assert_eq!(out.code, Some(2), "file {text:?} should be refused\n{}", out.describe());
        let line = out.one_stderr_line();
        assert!(line.contains(key), "file {text:?}: error should name {key}\n{}", out.describe());
        assert!(out.stdout.is_empty(), "file {text:?}: nothing on stdout\n{}", out.describe());
    }
}

#[test]
fn config_check_rejects_bad_environment_overrides_with_one_line_naming_the_variable() {
    let cases = [
        ("DISCORD_TOKEN", "two words"),
        ("DISCORD_API_BASE_URL", "discord.com"),
        ("GUILDKEY_REGISTER_COMMANDS", "guild:"),
        ("GUILDKEY_REGISTER_COMMANDS", "guild:0"),
        ("DATABASE_URL", "mysql://localhost/gk"),
        ("DATABASE_URL", "postgres://localhost:99999/gk"),
        ("GUILDKEY_HTTP_BIND", "localhost"),
        ("GUILDKEY_HTTP_BIND", "127.0.0.1:99999"),
        ("GUILDKEY_LOG_FORMAT", "xml"),
        ("GUILDKEY_HTTP_TRUSTED_PROXIES", "10.0.0.0/8,300.0.0.1"),
    ];
    let sandbox = Sandbox::new();
    for (var, value) in cases {
        // Act
        let out = sandbox.run_with(&["config", "check"], |c| {
            c.env(var, value);
        });

        // Assert
        assert_eq!(out.code, Some(2), "{var}={value:?} should be refused\n{}", out.describe());
        let line = out.one_stderr_line();
        let named = if var == "DISCORD_TOKEN" { "discord.token" } else { var };
        assert!(line.contains(named), "{var}={value:?}: error should name {named}\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{var}={value:?}: nothing on stdout\n{}", out.describe());
    }
}

#[test]
fn a_malformed_dotenv_file_exits_2_naming_it() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join(".env"), "this is not an assignment\n").unwrap();

    let out = sandbox.run(&["config", "check"]);

    out.assert_code(2);
    assert!(out.one_stderr_line().contains(".env"), "{}", out.describe());
}

#[test]
fn config_check_rejects_a_missing_explicit_config_file() {
    let sandbox = Sandbox::new();
    type Setup = fn(&mut Command);
    let ways: [(&str, Setup); 2] = [
        ("--config", |c| {
            c.arg("--config").arg("nowhere.toml");
        }),
        ("GUILDKEY_CONFIG", |c| {
            c.env("GUILDKEY_CONFIG", "nowhere.toml");
        }),
    ];
    for (how, setup) in ways {
        // Act
        let out = sandbox.run_with(&["config", "check"], setup);

        // Assert
        assert_eq!(out.code, Some(2), "missing file via {how}\n{}", out.describe());
        let line = out.one_stderr_line();
        assert!(line.contains("nowhere.toml"), "missing file via {how}: name the file\n{}", out.describe());
    }
}

#[test]
fn keys_commands_follow_the_config_file() {
    // Arrange
    let sandbox = Sandbox::migrated();
    std::fs::write(sandbox.path().join("one.toml"), "[keys]\nmax_per_guild = 1\nprefix = \"acme\"\n").unwrap();
    let create = ["--config", "one.toml", "keys", "create", "--guild", GUILD, "--name", "a", "--scopes", "bans.read"];

    // Act
    let first = sandbox.run(&create);
    let second = sandbox.run(&create);

    // Assert
    first.assert_ok();
    let secret = first.stdout.trim();
    assert!(Regex::new(r"^acme_live_[0-9A-Za-z]{38}$").unwrap().is_match(secret), "{}", first.describe());
    second.assert_code(1);
    assert!(second.one_stderr_line().contains("already has 1 active keys"), "{}", second.describe());
}

#[test]
fn config_check_names_the_file_it_read_on_stderr() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["config", "check"]);
    out.assert_ok();
    assert!(out.stderr.contains("config file: none (no ./config.toml)"), "{}", out.describe());

    std::fs::write(sandbox.path().join("config.toml"), "[keys]\nmax_per_guild = 5\n").unwrap();
    std::fs::write(sandbox.path().join("other.toml"), "[keys]\nmax_per_guild = 7\n").unwrap();
    let out = sandbox.run(&["config", "check"]);
    let default = sandbox.path().join("config.toml");
    assert!(out.stderr.contains(&format!("config file: {}", default.display())), "{}", out.describe());
    let out = sandbox.run(&["--config", "other.toml", "config", "check"]);
    let other = sandbox.path().join("other.toml");
    assert!(out.stderr.contains(&format!("config file: {}", other.display())), "{}", out.describe());
    assert!(out.stdout.lines().any(|l| l == "keys.max_per_guild = 7"), "{}", out.describe());
}

#[test]
fn trust_forwarded_for_has_an_environment_override() {
    let sandbox = Sandbox::new();
    let out = sandbox.run_with(&["config", "check"], |c| {
        c.env("GUILDKEY_HTTP_TRUST_FORWARDED_FOR", "true").env("GUILDKEY_HTTP_TRUSTED_PROXIES", "10.0.0.5");
    });
    out.assert_ok();
    assert!(out.stdout.lines().any(|l| l == "http.trust_forwarded_for = true"), "{}", out.describe());
    let out = sandbox.run_with(&["config", "check"], |c| {
        c.env("GUILDKEY_HTTP_TRUST_FORWARDED_FOR", "perhaps");
    });
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(out.stderr.contains("GUILDKEY_HTTP_TRUST_FORWARDED_FOR"), "{}", out.describe());
}

#[test]
fn config_check_and_database_errors_mask_the_password_whatever_the_urls_form() {
    // Arrange: PostgreSQL URLs nobody listens at, each holding a password a
    // different way (a raw `@` in it, a `password` or `sslpassword`
    // parameter), and a key=value connection string, which is refused.
    let sandbox = Sandbox::new();
    let urls = [
        "postgres://gk:hunter2@tail@127.0.0.1:1/gk",
        "postgres://127.0.0.1:1/gk?user=gk&password=hunter2",
        "postgres://gk@127.0.0.1:1/gk?sslmode=require&sslpassword=hunter2",
        "host=127.0.0.1 port=1 user=gk password=hunter2",
    ];

    for url in urls {
        // Act
        let check = sandbox.run_with(&["config", "check"], |c| {
            c.env("DATABASE_URL", url);
        });
        let migrate = sandbox.run_with(&["migrate"], |c| {
            c.env("DATABASE_URL", url);
        });

        // Assert: shown, refused or failing, never with the password.
        for out in [&check, &migrate] {
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(!all.contains("hunter2") && !all.contains("tail@"), "{url}: {}", out.describe());
            assert!(all.contains("********"), "{url}: the URL is named, masked: {}", out.describe());
        }
        assert_ne!(migrate.code, Some(0), "{url}: nothing listens there");
    }
}
