//! The CLI suite's helpers: a temporary working directory with its own
//! database, the binary run in it with a cleared environment, and readers of
//! what it leaves behind.

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

pub const GUILD: &str = "111111111111111111";
pub const OTHER_GUILD: &str = "222222222222222222";
pub const LIMIT_MESSAGE: &str = "already has 3 active keys";

/// One temporary working directory with its own database file.
pub struct Sandbox {
    pub dir: TempDir,
    pub db: PathBuf,
    pub database_url: String,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Outcome {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn from_output(args: &[&str], out: Output) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "guildkey {:?}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }

    /// Asserts stderr is exactly one non-empty line and returns it.
    #[track_caller]
    pub fn one_stderr_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr should be exactly one line\n{}", self.describe());
        assert!(!lines[0].trim().is_empty(), "stderr line is blank\n{}", self.describe());
        lines[0]
    }

    /// Asserts stdout is exactly one line that is a well-formed secret.
    #[track_caller]
    pub fn secret(&self) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout should be the secret alone\n{}", self.describe());
        assert!(self.stdout.ends_with('\n'), "the secret line should end with a newline\n{}", self.describe());
        let secret = lines[0].to_owned();
        assert!(secret_shape().is_match(&secret), "not a well-formed secret: {secret:?}\n{}", self.describe());
        secret
    }
}

pub fn secret_shape() -> Regex {
    Regex::new(r"^gk_(live|test)_[0-9A-Za-z]{38}$").unwrap()
}

/// The 32 random characters of a token: what must never leak.
pub fn random_part(secret: &str) -> &str {
    let body = secret.len() - 6;
    &secret[body - 32..body]
}

pub fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime").block_on(future)
}

impl Sandbox {
    /// A sandbox whose database does not exist yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("gk.db");
        let database_url = format!("sqlite://{}?mode=rwc", db.display());
        Self { dir, db, database_url }
    }

    /// A sandbox with the schema applied.
    pub fn migrated() -> Self {
        let sandbox = Self::new();
        sandbox.run(&["migrate"]).assert_ok();
        sandbox
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary, in this sandbox, with nothing inherited from the caller's
    /// environment but what the test sets.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
        cmd.args(args).current_dir(self.path()).env_clear().env("DATABASE_URL", &self.database_url);
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, |_| {})
    }

    pub fn run_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Outcome {
        let mut cmd = self.command(args);
        tweak(&mut cmd);
        let out = cmd.output().expect("failed to start guildkey");
        Outcome::from_output(args, out)
    }

    /// Creates a key in `guild` (scope `bans.read` unless `extra` gives
    /// `--scopes`) and returns its secret.
    pub fn create(&self, guild: &str, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--guild", guild, "--name", name];
        if !extra.contains(&"--scopes") {
            args.extend_from_slice(&["--scopes", "bans.read"]);
        }
        args.extend_from_slice(extra);
        self.run(&args).assert_ok().secret()
    }

    /// `keys list --json` for a guild, parsed.
    pub fn list(&self, guild: &str) -> Vec<Value> {
        let out = self.run(&["keys", "list", "--guild", guild, "--json"]);
        out.assert_ok();
        let parsed: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("keys list --json is not JSON: {e}\n{}", out.describe()));
        parsed.as_array().unwrap_or_else(|| panic!("keys list --json is not an array\n{}", out.describe())).clone()
    }

    /// The listed key whose prefix is the secret's first 12 characters.
    pub fn listed(&self, guild: &str, secret: &str) -> Value {
        let prefix = &secret[..12];
        let keys = self.list(guild);
        keys.iter()
            .find(|k| k["prefix"] == prefix)
            .unwrap_or_else(|| panic!("no listed key with prefix {prefix}: {keys:#?}"))
            .clone()
    }

    pub fn key_id(&self, guild: &str, secret: &str) -> String {
        self.listed(guild, secret)["key_id"].as_str().expect("key_id is a string").to_owned()
    }

    pub async fn connect(&self) -> SqliteConnection {
        SqliteConnection::connect(&format!("sqlite://{}", self.db.display())).await.expect("open the test database")
    }

    /// Every row of every table, each cell rendered by SQLite's `quote()`, so
    /// two dumps are equal exactly when nothing in the database changed.
    pub fn dump(&self) -> BTreeMap<String, Vec<String>> {
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
    pub fn all_cells(&self) -> Vec<(String, Vec<u8>)> {
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
    pub fn audit(&self) -> Vec<(String, String, Option<String>)> {
        block_on(async {
            let mut conn = self.connect().await;
            sqlx::query_as("select action, actor_kind, api_key_id from audit_event order by audit_event_id")
                .fetch_all(&mut conn)
                .await
                .expect("read audit events")
        })
    }

    /// `(key_hash, previous_hash, previous_hash_expires_at)` of one key.
    pub fn hashes(&self, key_id: &str) -> (Vec<u8>, Option<Vec<u8>>, Option<i64>) {
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
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { listed: self.list(GUILD), other: self.list(OTHER_GUILD), rows: self.dump() }
    }

    /// Runs each `(what, args, needle)`: every one must exit 2 with one
    /// stderr line naming `needle`, print nothing on stdout and leave the
    /// database as it was. Returns that untouched snapshot.
    #[track_caller]
    pub fn assert_usage_errors(&self, cases: &[(&str, Vec<String>, &str)]) -> Snapshot {
        self.assert_refused(cases, 2)
    }

    /// As [`Self::assert_usage_errors`], for exit status `code`.
    #[track_caller]
    pub fn assert_refused(&self, cases: &[(&str, Vec<String>, &str)], code: i32) -> Snapshot {
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
pub struct Snapshot {
    pub listed: Vec<Value>,
    pub other: Vec<Value>,
    pub rows: BTreeMap<String, Vec<String>>,
}

pub async fn tables(conn: &mut SqliteConnection) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("select name from sqlite_master where type = 'table' order by name")
        .fetch_all(&mut *conn)
        .await
        .expect("list tables");
    rows.into_iter().map(|(n,)| n).collect()
}

pub async fn columns(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("select name from pragma_table_info(?1) order by cid")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .expect("list columns");
    rows.into_iter().map(|(n,)| n).collect()
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}")).with_timezone(&Utc)
}

pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

/// Waits for a child, killing it after `limit` so a hang fails the test.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
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
