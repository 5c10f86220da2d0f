//! migrate, help, run.

use crate::helpers::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn migrate_creates_the_schema_and_can_run_again() {
    // Arrange
    let sandbox = Sandbox::new();

    // Act
    let first = sandbox.run(&["migrate"]);
    let second = sandbox.run(&["migrate"]);

    // Assert
    first.assert_ok();
    second.assert_ok();
    assert!(first.stdout.is_empty(), "migrate prints nothing on stdout\n{}", first.describe());
    let tables: Vec<String> = sandbox.dump().into_keys().collect();
    for table in ["api_key", "audit_event", "guild_setting"] {
        assert!(tables.iter().any(|t| t == table), "table {table} missing after migrate: {tables:?}");
    }
}

#[test]
fn migrate_creates_a_missing_database_directory() {
    // Arrange
    let sandbox = Sandbox::new();
    let nested = sandbox.path().join("data/deeper/gk.db");
    let url = format!("sqlite://{}?mode=rwc", nested.display());

    // Act
    let out = sandbox.run_with(&["migrate"], |c| {
        c.env("DATABASE_URL", &url);
    });

    // Assert
    out.assert_ok();
    assert!(nested.is_file(), "the database file was not created at {}", nested.display());
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn migrate_makes_the_database_directory_and_file_private_whatever_the_umask() {
    // Arrange: a path two directories deep that does not exist, and a
    // process umask that would leave everything world-writable.
    let sandbox = Sandbox::new();
    let nested = sandbox.path().join("state/guildkey/gk.db");
    let url = format!("sqlite://{}?mode=rwc", nested.display());
    let existing = mode_of(sandbox.path());

    // Act
    let out = sandbox.run_with(&["migrate"], |c| {
        c.env("DATABASE_URL", &url);
        use std::os::unix::process::CommandExt;
        // SAFETY: umask(2) is async-signal-safe and touches no memory.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    });

    // Assert
    out.assert_ok();
    let made = [sandbox.path().join("state"), sandbox.path().join("state/guildkey")];
    for dir in &made {
        assert_eq!(mode_of(dir), 0o700, "{} should be drwx------", dir.display());
    }
    assert_eq!(mode_of(&nested), 0o600, "the database file should be -rw-------");
    assert_eq!(mode_of(sandbox.path()), existing, "a directory guildkey did not make is left as it was");
}

#[test]
fn an_existing_database_readable_by_others_is_tightened_at_start_and_says_so() {
    // Arrange: a database whose file, -wal and -shm (kept by an open
    // connection) are 0644, as older versions left them.
    let sandbox = Sandbox::migrated();
    let wal = sandbox.path().join("gk.db-wal");
    let shm = sandbox.path().join("gk.db-shm");
    let conn = block_on(async {
        let mut conn = sandbox.connect().await;
        sqlx::query("create table if not exists keep_open (x)").execute(&mut conn).await.expect("write");
        conn
    });
    for path in [&sandbox.db, &wal, &shm] {
        assert!(path.exists(), "{} should exist while a connection is open", path.display());
        set_mode(path, 0o644);
    }

    // Act
    let out = sandbox.run_with(&["migrate"], |c| {
        c.env("RUST_LOG", "info");
    });

    // Assert
    out.assert_ok();
    for path in [&sandbox.db, &wal, &shm] {
        assert_eq!(mode_of(path), 0o600, "{} should be tightened to -rw-------\n{}", path.display(), out.describe());
    }
    let told = out.stderr.lines().filter(|l| l.contains("tightened the database file's mode")).count();
    assert_eq!(told, 3, "one info line per tightened file\n{}", out.describe());
    drop(conn);
}

#[test]
fn help_and_version_exit_0() {
    let sandbox = Sandbox::new();

    let help = sandbox.run(&["--help"]);
    help.assert_ok();
    for word in ["run", "migrate", "config", "keys"] {
        assert!(help.stdout.contains(word), "--help does not mention {word}\n{}", help.describe());
    }

    let version = sandbox.run(&["--version"]);
    version.assert_ok();
    assert!(version.stdout.starts_with("guildkey "), "{}", version.describe());
}

#[test]
fn unknown_commands_exit_2_with_one_line() {
    let sandbox = Sandbox::new();
    for args in [&["frobnicate"][..], &["keys", "frobnicate"], &["config", "frobnicate"], &["--bogus", "migrate"]] {
        let out = sandbox.run(args);
        out.assert_code(2);
        let line = out.one_stderr_line();
        assert!(line.contains(args[args.len() - 1]) || line.contains("--bogus"), "{}", out.describe());
    }
}

#[test]
fn run_without_a_discord_token_exits_2_naming_the_key() {
    // `guildkey` alone is `guildkey run`; both need discord.token.
    let sandbox = Sandbox::new();
    for args in [&[][..], &["run"]] {
        // Arrange
        let child = sandbox
            .command(args)
            .env("GUILDKEY_HTTP_BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start guildkey");

        // Act
        let out = Outcome::from_output(args, wait_with_limit(child, Duration::from_secs(30)));

        // Assert
        out.assert_code(2);
        assert!(out.stderr.contains("discord.token"), "{}", out.describe());
        assert!(out.stderr.contains("DISCORD_TOKEN"), "the hint should name the variable\n{}", out.describe());
    }
}
