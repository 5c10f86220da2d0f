//! Black-box tests of the operator CLI (SPEC §1–§3, §5): the real `guildkey`
//! binary on a temporary SQLite file, judged by its exit code, its stdout and
//! stderr, and the rows it leaves in the database.
//!
//! Every command runs with a cleared environment in a fresh temporary
//! directory, so no stray `./config.toml`, `.env` or `DISCORD_TOKEN` of the
//! machine running the tests can change what is tested. Set `TEST_LOG=1` to
//! run the binary with `RUST_LOG=debug` and see its logs in failure messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;

const GUILD: &str = "111111111111111111";
const OTHER_GUILD: &str = "222222222222222222";
const LIMIT_MESSAGE: &str = "already has 3 active keys";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One temporary working directory with its own database file.
struct Sandbox {
    dir: TempDir,
    db: PathBuf,
    database_url: String,
}

/// What one run of the binary did.
#[derive(Debug)]
struct Outcome {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn from_output(args: &[&str], out: Output) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "guildkey {:?}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{}", self.describe());
        self
    }

    #[track_caller]
    fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }

    /// Asserts stderr is exactly one non-empty line and returns it.
    #[track_caller]
    fn one_stderr_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr should be exactly one line\n{}", self.describe());
        assert!(!lines[0].trim().is_empty(), "stderr line is blank\n{}", self.describe());
        lines[0]
    }

    /// Asserts stdout is exactly one line that is a well-formed secret.
    #[track_caller]
    fn secret(&self) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout should be the secret alone\n{}", self.describe());
        assert!(self.stdout.ends_with('\n'), "the secret line should end with a newline\n{}", self.describe());
        let secret = lines[0].to_owned();
        assert!(secret_shape().is_match(&secret), "not a well-formed secret: {secret:?}\n{}", self.describe());
        secret
    }
}

fn secret_shape() -> Regex {
    Regex::new(r"^gk_(live|test)_[0-9A-Za-z]{38}$").unwrap()
}

/// The 32 random characters of a token: what must never leak.
fn random_part(secret: &str) -> &str {
    let body = secret.len() - 6;
    &secret[body - 32..body]
}

fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime").block_on(future)
}

impl Sandbox {
    /// A sandbox whose database does not exist yet.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("gk.db");
        let database_url = format!("sqlite://{}?mode=rwc", db.display());
        Self { dir, db, database_url }
    }

    /// A sandbox with the schema applied.
    fn migrated() -> Self {
        let sandbox = Self::new();
        sandbox.run(&["migrate"]).assert_ok();
        sandbox
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary, in this sandbox, with nothing inherited from the caller's
    /// environment but what the test sets.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
        cmd.args(args).current_dir(self.path()).env_clear().env("DATABASE_URL", &self.database_url);
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, |_| {})
    }

    fn run_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Outcome {
        let mut cmd = self.command(args);
        tweak(&mut cmd);
        let out = cmd.output().expect("failed to start guildkey");
        Outcome::from_output(args, out)
    }

    /// Creates a key in `guild` (scope `bans.read` unless `extra` gives
    /// `--scopes`) and returns its secret.
    fn create(&self, guild: &str, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--guild", guild, "--name", name];
        if !extra.contains(&"--scopes") {
            args.extend_from_slice(&["--scopes", "bans.read"]);
        }
        args.extend_from_slice(extra);
        self.run(&args).assert_ok().secret()
    }

    /// `keys list --json` for a guild, parsed.
    fn list(&self, guild: &str) -> Vec<Value> {
        let out = self.run(&["keys", "list", "--guild", guild, "--json"]);
        out.assert_ok();
        let parsed: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("keys list --json is not JSON: {e}\n{}", out.describe()));
        parsed.as_array().unwrap_or_else(|| panic!("keys list --json is not an array\n{}", out.describe())).clone()
    }

    /// The listed key whose prefix is the secret's first 12 characters.
    fn listed(&self, guild: &str, secret: &str) -> Value {
        let prefix = &secret[..12];
        let keys = self.list(guild);
        keys.iter()
            .find(|k| k["prefix"] == prefix)
            .unwrap_or_else(|| panic!("no listed key with prefix {prefix}: {keys:#?}"))
            .clone()
    }

    fn key_id(&self, guild: &str, secret: &str) -> String {
        self.listed(guild, secret)["key_id"].as_str().expect("key_id is a string").to_owned()
    }

    async fn connect(&self) -> SqliteConnection {
        SqliteConnection::connect(&format!("sqlite://{}", self.db.display())).await.expect("open the test database")
    }

    /// Every row of every table, each cell rendered by SQLite's `quote()`, so
    /// two dumps are equal exactly when nothing in the database changed.
    fn dump(&self) -> BTreeMap<String, Vec<String>> {
        block_on(async {
            let mut conn = self.connect().await;
            let mut dump = BTreeMap::new();
            for table in tables(&mut conn).await {
                let cols = columns(&mut conn, &table).await;
                let row_expr = cols.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || ' | ' || ");
                let rows: Vec<(String,)> = sqlx::query_as(&format!("select {row_expr} from \"{table}\" order by 1"))
                    .fetch_all(&mut conn)
                    .await
                    .expect("dump a table");
                dump.insert(table, rows.into_iter().map(|(r,)| r).collect());
            }
            dump
        })
    }

    /// Every cell of every table as bytes (text and integers as their text).
    fn all_cells(&self) -> Vec<(String, Vec<u8>)> {
        block_on(async {
            let mut conn = self.connect().await;
            let mut cells = Vec::new();
            for table in tables(&mut conn).await {
                for col in columns(&mut conn, &table).await {
                    let rows: Vec<(Option<Vec<u8>>,)> =
                        sqlx::query_as(&format!("select cast(\"{col}\" as blob) from \"{table}\""))
                            .fetch_all(&mut conn)
                            .await
                            .expect("read a column");
                    cells.extend(rows.into_iter().filter_map(|(v,)| v).map(|v| (format!("{table}.{col}"), v)));
                }
            }
            cells
        })
    }

    /// `(action, actor_kind, api_key_id)` of every audit event, oldest first.
    fn audit(&self) -> Vec<(String, String, Option<String>)> {
        block_on(async {
            let mut conn = self.connect().await;
            sqlx::query_as("select action, actor_kind, api_key_id from audit_event order by audit_event_id")
                .fetch_all(&mut conn)
                .await
                .expect("read audit events")
        })
    }

    /// `(key_hash, previous_hash, previous_hash_expires_at)` of one key.
    fn hashes(&self, key_id: &str) -> (Vec<u8>, Option<Vec<u8>>, Option<i64>) {
        block_on(async {
            let mut conn = self.connect().await;
            sqlx::query_as("select key_hash, previous_hash, previous_hash_expires_at from api_key where api_key_id = ?")
                .bind(key_id)
                .fetch_one(&mut conn)
                .await
                .expect("read a key's hashes")
        })
    }

    /// Everything a bad command must leave untouched.
    fn snapshot(&self) -> Snapshot {
        Snapshot { listed: self.list(GUILD), other: self.list(OTHER_GUILD), rows: self.dump() }
    }

    /// Runs each `(what, args, needle)`: every one must exit 2 with one
    /// stderr line naming `needle`, print nothing on stdout and leave the
    /// database as it was. Returns that untouched snapshot.
    #[track_caller]
    fn assert_usage_errors(&self, cases: &[(&str, Vec<String>, &str)]) -> Snapshot {
        self.assert_refused(cases, 2)
    }

    /// As [`Self::assert_usage_errors`], for exit status `code`.
    #[track_caller]
    fn assert_refused(&self, cases: &[(&str, Vec<String>, &str)], code: i32) -> Snapshot {
        let before = self.snapshot();
        for (wrong, args, needle) in cases {
            // Act
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = self.run(&args);

            // Assert
            assert_eq!(out.code, Some(code), "{wrong}: should exit {code}\n{}", out.describe());
            let line = out.one_stderr_line();
            assert!(line.contains(needle), "{wrong}: stderr should mention {needle:?}\n{}", out.describe());
            assert!(out.stdout.is_empty(), "{wrong}: nothing on stdout\n{}", out.describe());
            assert_eq!(self.snapshot(), before, "{wrong}: the database changed");
        }
        before
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    listed: Vec<Value>,
    other: Vec<Value>,
    rows: BTreeMap<String, Vec<String>>,
}

async fn tables(conn: &mut SqliteConnection) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("select name from sqlite_master where type = 'table' order by name")
        .fetch_all(&mut *conn)
        .await
        .expect("list tables");
    rows.into_iter().map(|(n,)| n).collect()
}

async fn columns(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("select name from pragma_table_info(?1) order by cid")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .expect("list columns");
    rows.into_iter().map(|(n,)| n).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}")).with_timezone(&Utc)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

/// Waits for a child, killing it after `limit` so a hang fails the test.
fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "guildkey did not exit within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// migrate, help, run
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// config check
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// keys create / list
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// revoke / delete / rotate
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Bad input and refused operations
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Broken databases
// ---------------------------------------------------------------------------

#[test]
fn a_corrupt_database_file_exits_1_with_one_line_and_is_left_alone() {
    // Arrange
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&sandbox.db, &garbage).unwrap();

    for args in [
        &["migrate"][..],
        &["keys", "list", "--guild", GUILD],
        &["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.read"],
        &["keys", "revoke", "key_0000000000000000"],
    ] {
        // Act
        let out = sandbox.run(args);

        // Assert
        assert_eq!(out.code, Some(1), "{args:?}\n{}", out.describe());
        let line = out.one_stderr_line();
        assert!(line.contains("not a database"), "{args:?}: say why\n{}", out.describe());
        assert!(line.contains("DATABASE_URL"), "{args:?}: say what to do\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{args:?}\n{}", out.describe());
        assert_eq!(std::fs::read(&sandbox.db).unwrap(), garbage, "{args:?}: the file was modified");
    }
}

#[test]
fn an_unusable_database_path_exits_1_with_one_line() {
    // Tests run as root, so permissions cannot block them: use a path whose
    // "directory" is a regular file instead.
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let urls = [
        format!("sqlite://{}/gk.db?mode=rwc", file.display()),
        format!("sqlite://{}/missing-dir/gk.db?mode=rwc", file.display()),
        "sqlite:///proc/version/gk.db?mode=rwc".to_owned(),
    ];
    for url in &urls {
        for args in [
            &["migrate"][..],
            &["keys", "list", "--guild", GUILD],
            &["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.read"],
        ] {
            // Act
            let out = sandbox.run_with(args, |c| {
                c.env("DATABASE_URL", url);
            });

            // Assert
            assert_eq!(out.code, Some(1), "{url} {args:?}\n{}", out.describe());
            let line = out.one_stderr_line();
            assert!(line.contains("DATABASE_URL"), "{url} {args:?}: say what to do\n{}", out.describe());
            assert!(out.stdout.is_empty(), "{url} {args:?}\n{}", out.describe());
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

// ---------------------------------------------------------------------------
// Secret hygiene
// ---------------------------------------------------------------------------

#[test]
fn secrets_never_reach_logs_or_the_database() {
    for format in ["pretty", "json"] {
        // Arrange
        let sandbox = Sandbox::new();
        let traced = |args: &[&str]| {
            let out = sandbox.run_with(args, |c| {
                c.env("RUST_LOG", "trace").env("GUILDKEY_LOG_FORMAT", format);
            });
            out.assert_ok();
            out
        };

        // Act
        let created = traced(&["keys", "create", "--guild", GUILD, "--name", "k", "--scopes", "bans.write"]);
        let first = created.secret();
        let rotated = traced(&["keys", "rotate", &first[..12], "--grace", "1h"]);
        let second = rotated.secret();
        let listed = traced(&["keys", "list", "--guild", GUILD, "--json"]);

        // Assert
        assert!(created.stderr.lines().count() > 3, "{format}: RUST_LOG=trace should log\n{}", created.describe());
        for secret in [&first, &second] {
            for out in [&created, &rotated, &listed] {
                assert!(!out.stderr.contains(secret.as_str()), "{format}: secret in stderr\n{}", out.describe());
                assert!(
                    !out.stderr.contains(random_part(secret)),
                    "{format}: secret's random part in stderr\n{}",
                    out.describe()
                );
            }
            assert!(!listed.stdout.contains(random_part(secret)), "{format}: list shows a secret");
            for (column, cell) in sandbox.all_cells() {
                assert!(!contains(&cell, secret), "{format}: secret stored in {column}");
                assert!(!contains(&cell, random_part(secret)), "{format}: secret's random part stored in {column}");
            }
        }
        let id = sandbox.key_id(GUILD, &second);
        let (hash, previous, _) = sandbox.hashes(&id);
        assert_eq!(hash, sha256(&second), "{format}: only the hash is stored");
        assert_eq!(previous, Some(sha256(&first)), "{format}: only the hash is stored");
        for suffix in ["", "-wal"] {
            let path = PathBuf::from(format!("{}{suffix}", sandbox.db.display()));
            if let Ok(bytes) = std::fs::read(&path) {
                for secret in [&first, &second] {
                    assert!(!contains(&bytes, random_part(secret)), "{format}: secret in {}", path.display());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

#[test]
fn concurrent_creates_from_32_processes_never_exceed_the_limit() {
    // Arrange
    let sandbox = Sandbox::migrated();
    let children: Vec<(String, Child)> = (0..32)
        .map(|i| {
            let name = format!("racer {i}");
            let child = sandbox
                .command(&["keys", "create", "--guild", GUILD, "--name", &name, "--scopes", "bans.read"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start guildkey");
            (name, child)
        })
        .collect();

    // Act
    let outcomes: Vec<Outcome> = children
        .into_iter()
        .map(|(name, child)| Outcome::from_output(&[name.as_str()], wait_with_limit(child, Duration::from_secs(120))))
        .collect();

    // Assert
    let (won, lost): (Vec<&Outcome>, Vec<&Outcome>) = outcomes.iter().partition(|o| o.code == Some(0));
    assert_eq!(won.len(), 3, "exactly the limit succeeds: {outcomes:#?}");
    assert_eq!(lost.len(), 29, "{outcomes:#?}");
    for out in &lost {
        out.assert_code(1);
        assert!(out.stderr.contains(LIMIT_MESSAGE), "a loser should hear about the limit\n{}", out.describe());
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
    let winners: Vec<String> = won.iter().map(|o| o.secret()).collect();
    let keys = sandbox.list(GUILD);
    assert_eq!(keys.len(), 3, "{keys:#?}");
    assert!(keys.iter().all(|k| k["status"] == "active"), "{keys:#?}");
    for secret in &winners {
        sandbox.listed(GUILD, secret);
    }
    let created = sandbox.audit().into_iter().filter(|(action, _, _)| action == "key.created").count();
    assert_eq!(created, 3, "one key.created event per key, none for refused creates");
}

#[test]
fn concurrent_creates_on_a_database_never_migrated_each_succeed_or_hit_the_limit() {
    // No `migrate` first, as when two instances (or the CLI and a starting
    // listener) open a fresh database at the same moment. The race is timing
    // dependent, so try several fresh databases.
    for round in 0..5 {
        // Arrange
        let sandbox = Sandbox::new();
        let children: Vec<(String, Child)> = (0..32)
            .map(|i| {
                let name = format!("racer {i}");
                let child = sandbox
                    .command(&["keys", "create", "--guild", GUILD, "--name", &name, "--scopes", "bans.read"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start guildkey");
                (name, child)
            })
            .collect();

        // Act
        let outcomes: Vec<Outcome> = children
            .into_iter()
            .map(|(name, child)| {
                Outcome::from_output(&[name.as_str()], wait_with_limit(child, Duration::from_secs(120)))
            })
            .collect();

        // Assert
        for out in &outcomes {
            let ok = out.code == Some(0) || (out.code == Some(1) && out.stderr.contains(LIMIT_MESSAGE));
            assert!(ok, "round {round}: each create either succeeds or hits the limit\n{}", out.describe());
        }
        assert_eq!(outcomes.iter().filter(|o| o.code == Some(0)).count(), 3, "round {round}");
    }
}

// ---------------------------------------------------------------------------
// More bad input (docs/bad-input.md)
// ---------------------------------------------------------------------------

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
