//! The black-box binary's helpers (`tests/blackbox/`; `db` also serves
//! `tests/service/`): start the local Discord double, spawn the real
//! `guildkey` binary against it on a temp database with the listener on
//! port 0, and talk to both: [`reply`] reads the listener's answers (one
//! `Reply` for every suite), [`bot`] sends slash commands, [`alone`] lets a
//! test that measures load or time run with no other test's app.
//!
//! Every line the binary logs is kept ([`App::logs`]) so suites can assert
//! that no secret ever reaches a log. `TEST_LOG=1` also echoes them.
//!
//! Secret hygiene, suite-wide: when an [`App`] is dropped (and the test is
//! not already failing) it scans, for any full API key and for the bot token,
//! every captured log line (the binary runs at `RUST_LOG=trace`), every cell
//! of every table in its SQLite file (audit rows included), every REST body
//! the bot sent to the Discord double, the stderr of every [`App::cli`] run,
//! and every HTTP response body read through [`json`], [`text`],
//! [`App::send`] or [`reply`]. The one place a full key may appear is the
//! one-time secret reply to `/apikey create` and `rotate` (an interaction
//! callback or webhook message carrying the "shown only once" warning);
//! those bodies are exempt. See [`find_secrets`] (in `secrets.rs`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod alone;
pub mod bot;
pub mod db;
pub mod linkers;
pub mod proxy;
pub mod reply;
mod secrets;

pub use alone::alone;
pub use secrets::{find_secrets, is_one_time_secret_reply};

pub use discord_double::{config as ids, Double, DoubleConfig};

/// The bot token the binary is given; tests assert it never leaks.
pub const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.double.bot-token-never-logged";

pub struct App {
    pub double: Double,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    /// Response bodies read through the helpers, and CLI stderr (scanned at drop).
    bodies: Arc<Mutex<Vec<String>>>,
    /// Scan for leaked secrets when dropped (see the module docs). A test
    /// that plants a leak on purpose turns this off after checking it.
    pub check_secrets: bool,
    /// How it was started, for [`App::restart`].
    run_args: Vec<String>,
    no_gateway: bool,
    no_listener: bool,
    /// Its share of the machine while tests that run [`alone`] wait.
    _turn: alone::Turn,
}

/// Options for [`spawn_app_with`].
#[derive(Clone, Default)]
pub struct Options {
    /// Extra `config.toml` text.
    pub config: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Reuse this database URL (for restarts).
    pub db_url: Option<String>,
    /// Start the binary with this umask instead of the test runner's.
    pub umask: Option<u32>,
    /// Start the binary with these open-files limits (soft, hard), as
    /// `prlimit --nofile` would.
    pub open_files: Option<(u64, u64)>,
    /// Extra arguments after `run` (e.g. `--only http`).
    pub run_args: Vec<String>,
    /// Do not wait for the bot's gateway session: the process runs none
    /// (`--only http`).
    pub no_gateway: bool,
    /// Do not wait for the listener's address: the process binds none
    /// (`--only bot`); [`App::base`] is then empty.
    pub no_listener: bool,
}

impl Options {
    /// Discord's production REST path: no proxy, so serenity's ratelimiter
    /// is on; the binary reaches the double as `https://discord.com` over
    /// TLS (`discord.connect_to`, and the double's test CA in
    /// `discord.ca_file`).
    pub fn production_rest(double: &Double) -> Self {
        let env = [
            ("DISCORD_API_BASE_URL", "https://discord.com".to_owned()),
            ("GUILDKEY_DISCORD_CONNECT_TO", double.tls_addr().to_string()),
            ("GUILDKEY_DISCORD_CA_FILE", discord_double::tls::CA_PEM.to_owned()),
        ];
        Self { env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), ..Self::default() }
    }

    /// `guildkey run --only <role>` (`http` or `bot`), waiting only for
    /// what that role starts.
    pub fn only(role: &str) -> Self {
        Self {
            run_args: vec!["--only".into(), role.into()],
            no_gateway: role == "http",
            no_listener: role == "bot",
            ..Self::default()
        }
    }
}

pub async fn spawn_app() -> App {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> App {
    let double = Double::start(DoubleConfig::demo()).await.expect("start the Discord double");
    spawn_against(double, opts).await
}

/// Starts the binary against an already running double.
pub async fn spawn_against(double: Double, opts: Options) -> App {
    let turn = alone::turn().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = opts.db_url.clone().unwrap_or_else(|| db::fresh_url(dir.path()));
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &opts.config).expect("write config");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let start = Start {
        args: &opts.run_args,
        env: &opts.env,
        umask: opts.umask,
        open_files: opts.open_files,
        wait_for_listener: !opts.no_listener,
    };
    let (child, addr) = start_binary(&double, &db_url, &config_path, start, dir.path(), logs.clone()).await;
    if !opts.no_gateway {
        double.wait_for_ready(Duration::from_secs(20)).await.expect("the bot connects to the double");
    }
    let bodies = Arc::new(Mutex::new(Vec::new()));
    if let Some(addr) = &addr {
        register_bodies(addr, &bodies);
    }
    App {
        double,
        base: addr.map(|a| format!("http://{a}")).unwrap_or_default(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
        dir,
        db_url,
        child: Some(child),
        logs,
        bodies,
        check_secrets: true,
        run_args: opts.run_args,
        no_gateway: opts.no_gateway,
        no_listener: opts.no_listener,
        _turn: turn,
    }
}

/// Response bodies by listener address, so [`json`] and [`text`] (which see
/// only a response) can file a body under the App that answered it.
type Bodies = Arc<Mutex<Vec<String>>>;

fn body_registry() -> &'static Mutex<HashMap<String, Bodies>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Bodies>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn register_bodies(addr: &str, bodies: &Arc<Mutex<Vec<String>>>) {
    body_registry().lock().unwrap().insert(addr.to_owned(), bodies.clone());
}

fn record_body(url: &reqwest::Url, body: &str) {
    let addr = format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or_default());
    if let Some(bodies) = body_registry().lock().unwrap().get(&addr) {
        bodies.lock().unwrap().push(body.to_owned());
    }
}

/// How [`start_binary`] starts the process.
struct Start<'a> {
    /// Arguments after `run`.
    args: &'a [String],
    env: &'a [(String, String)],
    umask: Option<u32>,
    open_files: Option<(u64, u64)>,
    /// Wait for "listening on ADDR" (a process with the listener).
    wait_for_listener: bool,
}

/// Starts the binary; returns it and, when it runs the listener, the
/// address it logged.
async fn start_binary(
    double: &Double,
    db_url: &str,
    config: &Path,
    start: Start<'_>,
    cwd: &Path,
    logs: Arc<Mutex<Vec<String>>>,
) -> (Child, Option<String>) {
    let Start { args, env: extra_env, umask, open_files, wait_for_listener } = start;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DISCORD_TOKEN", BOT_TOKEN)
        .env("DISCORD_API_BASE_URL", double.base_url())
        .env("DATABASE_URL", db_url)
        .env("GUILDKEY_HTTP_BIND", "127.0.0.1:0")
        .env("GUILDKEY_REGISTER_COMMANDS", format!("guild:{}", ids::DEMO_GUILD_ID))
        .env("RUST_LOG", std::env::var("GUILDKEY_TEST_RUST_LOG").unwrap_or_else(|_| "trace,h2=info,hyper=info,reqwest=info,rustls=info,tungstenite=info,tokio_tungstenite=info,sqlx=info".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    if let Some(mask) = umask {
        with_umask(&mut cmd, mask);
    }
    if let Some((soft, hard)) = open_files {
        with_open_files(&mut cmd, soft, hard);
    }
    let mut child = cmd.spawn().expect("spawn guildkey");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let echo = std::env::var("TEST_LOG").is_ok();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[guildkey] {line}");
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default().trim_matches('"').to_owned();
                let _ = tx.send(addr);
            }
            logs.lock().unwrap().push(line);
        }
    });
    if !wait_for_listener {
        return (child, None);
    }
    let addr = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("guildkey logs 'listening on ADDR'");
    (child, Some(addr))
}

/// Makes `cmd` start its process with umask `mask`.
pub fn with_umask(cmd: &mut Command, mask: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        });
    }
}

/// Makes `cmd` start its process with open-files limits `soft` and `hard`.
pub fn with_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit(2) is async-signal-safe and reads only its argument.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The open-files limits (soft, hard) of process `pid`, from `/proc/PID/limits`.
pub fn open_files_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

/// The permission bits of `path` (e.g. `0o600`).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o777
}

impl App {
    /// Waits until the audit outbox has handled (posted, or found nowhere
    /// to post) every recorded event.
    pub async fn wait_for_audit_outbox(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pending = db_scalar(&self.db_url, "select count(*) from audit_event where posted_at is null");
            if pending == Some(0) {
                return;
            }
            assert!(Instant::now() < deadline, "audit events still pending after 10 s: {pending:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    /// Sends a request and reads the whole body (recorded for the secret scan).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, text(resp).await)
    }

    /// Records `body` as if a helper had read it: for testing the scan.
    pub fn record_body_for_test(&self, body: &str) {
        self.bodies.lock().unwrap().push(body.to_owned());
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("gk.db")
    }

    /// Runs `guildkey ARGS` (the operator CLI) on the same database.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_guildkey"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db_url)
            .output()
            .expect("run the CLI");
        // stdout of create/rotate is the secret itself; stderr never is.
        self.bodies.lock().unwrap().push(format!("cli stderr: {}", String::from_utf8_lossy(&out.stderr)));
        out
    }

    /// Creates a key through the CLI; returns the secret.
    pub fn create_key(&self, guild: u64, name: &str, scopes: &str, extra: &[&str]) -> String {
        let guild = guild.to_string();
        let mut args = vec!["keys", "create", "--guild", &guild, "--name", name, "--scopes", scopes];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("guildkey did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running binary's process id (e.g. to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again on the same database and double (with the
    /// same `run` arguments; without the extra environment).
    pub async fn restart(&mut self) {
        self.kill();
        let config = self.dir.path().join("config.toml");
        let start = Start {
            args: &self.run_args,
            env: &[],
            umask: None,
            open_files: None,
            wait_for_listener: !self.no_listener,
        };
        let (child, addr) =
            start_binary(&self.double, &self.db_url, &config, start, self.dir.path(), self.logs.clone()).await;
        self.child = Some(child);
        if let Some(addr) = addr {
            self.base = format!("http://{addr}");
            register_bodies(&addr, &self.bodies);
        }
        if !self.no_gateway {
            self.double.wait_for_ready(Duration::from_secs(20)).await.expect("the bot reconnects");
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
        let addr = self.base.trim_start_matches("http://").to_owned();
        body_registry().lock().unwrap().remove(&addr);
        if self.check_secrets && !std::thread::panicking() {
            let findings = self.secret_findings();
            assert!(findings.is_empty(), "secrets leaked:\n{}", findings.join("\n"));
        }
    }
}

/// Runs `body` with a raw connection to `db_url`, of whichever backend it
/// names, on a thread and runtime of its own; `None` if it cannot connect.
macro_rules! with_raw_connection {
    ($db_url:expr, |$conn:ident, $tables:ident| $body:expr) => {{
        let url = $db_url.replace("mode=rwc", "mode=rw");
        std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                if guildkey::store::is_postgres_url(&url) {
                    let mut $conn = sqlx::PgConnection::connect(&url).await.ok()?;
                    let $tables = "select tablename::text from pg_tables where schemaname = 'public'";
                    let out = $body;
                    let _ = $conn.close().await;
                    Some(out)
                } else {
                    let mut $conn = sqlx::SqliteConnection::connect(&url).await.ok()?;
                    let $tables = "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'";
                    let out = $body;
                    let _ = $conn.close().await;
                    Some(out)
                }
            })
        })
        .join()
        .ok()
        .flatten()
    }};
}

/// One integer from `sql` on the database at `db_url`.
pub fn db_scalar(db_url: &str, sql: &str) -> Option<i64> {
    let sql = sql.to_owned();
    with_raw_connection!(db_url, |conn, _tables| sqlx::query_scalar(&sql).fetch_one(&mut conn).await.ok()).flatten()
}

/// Every text or blob cell of every table, as `(table.column, text)`.
fn db_cells(db_url: &str) -> Vec<(String, String)> {
    with_raw_connection!(db_url, |conn, tables| {
        use sqlx::{Column, Row};
        let tables: Vec<String> = sqlx::query_scalar(tables).fetch_all(&mut conn).await.unwrap_or_default();
        let mut cells = Vec::new();
        for table in tables {
            let rows = sqlx::query(&format!("select * from \"{table}\"")).fetch_all(&mut conn).await;
            for row in rows.unwrap_or_default() {
                for (i, column) in row.columns().iter().enumerate() {
                    let name = format!("{table}.{}", column.name());
                    if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                        cells.push((name, text));
                    } else if let Ok(Some(bytes)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        cells.push((name, String::from_utf8_lossy(&bytes).into_owned()));
                    }
                }
            }
        }
        cells
    })
    .unwrap_or_default()
}

/// Reads a JSON body (recorded for the secret scan).
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let body = text(resp).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
}

/// Reads a body as text (recorded for the secret scan).
pub async fn text(resp: reqwest::Response) -> String {
    let url = resp.url().clone();
    let body = resp.text().await.expect("body");
    record_body(&url, &body);
    body
}

/// The token regex of SPEC §3.
pub fn token_regex() -> regex::Regex {
    regex::Regex::new(r"gk_(live|test)_[0-9A-Za-z]{38}").unwrap()
}
