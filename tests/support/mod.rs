//! Test helpers shared by the black-box suites: start the local Discord
//! double, spawn the real `guildkey` binary against it on a temp SQLite file
//! with the listener on port 0, and talk to both.
//!
//! Every line the binary logs is kept ([`App::logs`]) so suites can assert
//! that no secret ever reaches a log. `TEST_LOG=1` also echoes them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = opts.db_url.clone().unwrap_or_else(|| format!("sqlite://{}/gk.db?mode=rwc", dir.path().display()));
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &opts.config).expect("write config");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (child, addr) = start_binary(&double, &db_url, &config_path, &opts.env, dir.path(), logs.clone()).await;
    double.wait_for_ready(Duration::from_secs(20)).await.expect("the bot connects to the double");
    App {
        double,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
        dir,
        db_url,
        child: Some(child),
        logs,
    }
}

async fn start_binary(
    double: &Double,
    db_url: &str,
    config: &Path,
    extra_env: &[(String, String)],
    cwd: &Path,
    logs: Arc<Mutex<Vec<String>>>,
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guildkey"));
    cmd.arg("--config")
        .arg(config)
        .arg("run")
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
    let addr = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("guildkey logs 'listening on ADDR'");
    (child, addr)
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request")
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
        Command::new(env!("CARGO_BIN_EXE_guildkey"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db_url)
            .output()
            .expect("run the CLI")
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

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again on the same database and double.
    pub async fn restart(&mut self) {
        self.kill();
        let config = self.dir.path().join("config.toml");
        let (child, addr) =
            start_binary(&self.double, &self.db_url, &config, &[], self.dir.path(), self.logs.clone()).await;
        self.child = Some(child);
        self.base = format!("http://{addr}");
        self.double.wait_for_ready(Duration::from_secs(20)).await.expect("the bot reconnects");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a JSON body.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.expect("JSON body")
}

/// The token regex of SPEC §3.
pub fn token_regex() -> regex::Regex {
    regex::Regex::new(r"gk_(live|test)_[0-9A-Za-z]{38}").unwrap()
}
