//! The real listener as the client's Roblox side meets it: the binary with
//! its bot on the Discord double, the guild's account linker set (with the
//! operator CLI) to the linker double speaking Bloxlink's shape, and a
//! `bans.read` key of 120 requests a minute. Bans are made on the Discord
//! double; Roblox accounts are linked on the linker double, and, for a
//! banned user, also stored as the linker answered them earlier (a banned
//! user has usually left, and the export names the Roblox ids it knows).

use crate::support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use support::linkers::{LinkerDouble, BLOXLINK_KEY};
use support::{ids, spawn_app_with, App, Options};

use super::{Harness, CROSS_PROCESS};

const DEMO: u64 = ids::DEMO_GUILD_ID;
/// The key's requests a minute (its `X-RateLimit-Limit`).
pub const LIMIT: u64 = 120;

pub struct World {
    pub app: App,
    pub linker: LinkerDouble,
    pub key: String,
    /// A key of the test's own, to see what the listener answers without
    /// spending the client's requests.
    watcher: String,
}

impl World {
    /// Starts the binary, sets the demo guild's linker and makes the key.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Self::start`], with `seed` run on the Discord double before the
    /// key is made: bans made long ago, in the list the guild's key has
    /// the bot sync.
    pub async fn start_with(seed: impl FnOnce(&App)) -> Self {
        use base64::Engine as _;
        let linker = LinkerDouble::start().await;
        let secrets = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let mut env = linker.env();
        env.push(("GUILDKEY_SECRETS_KEY".to_owned(), secrets.clone()));
        let app = spawn_app_with(Options { env, ..Options::default() }).await;

        let demo = DEMO.to_string();
        let mut cli = Command::new(env!("CARGO_BIN_EXE_guildkey"))
            .args(["roblox", "linker", "set", "--guild", &demo, "--provider", "bloxlink", "--key", "-"])
            .current_dir(app.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db_url)
            .env("GUILDKEY_SECRETS_KEY", &secrets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the CLI");
        cli.stdin.take().unwrap().write_all(BLOXLINK_KEY.as_bytes()).unwrap();
        let out = cli.wait_with_output().unwrap();
        assert!(out.status.success(), "linker set: {}", String::from_utf8_lossy(&out.stderr));

        seed(&app);
        let key = app.create_key(DEMO, "game server", "bans.read", &["--rate-limit", &LIMIT.to_string()]);
        let watcher = app.create_key(DEMO, "watcher", "bans.read", &["--rate-limit", "100000"]);
        tokio::time::sleep(CROSS_PROCESS).await;
        Self { app, linker, key, watcher }
    }

    /// The client in a fresh VM against this listener, with the thread
    /// helpers, configured by `extra` (Luau table fields).
    pub fn harness(&self, extra: &str) -> Harness {
        let h = Harness::new(&self.app, &self.key);
        h.with_threads();
        h.client(&format!("guildId = '{DEMO}', {extra}"));
        h
    }

    /// Bans a Discord account as a moderator would (Discord then sends
    /// GUILD_BAN_ADD), and waits until the listener knows; with a Roblox
    /// id, links it too, as the linker answered it before.
    pub async fn ban(&self, discord: u64, roblox: Option<u64>) {
        self.app.double.add_ban(DEMO, discord, None);
        let user = serde_json::json!({ "id": discord.to_string(), "username": "member", "discriminator": "0",
            "global_name": null, "avatar": null });
        self.app.double.dispatch("GUILD_BAN_ADD", serde_json::json!({ "guild_id": DEMO.to_string(), "user": user }));
        if let Some(roblox) = roblox {
            self.store_links(&[(roblox, discord)]);
        }
        let path = format!("/v1/guilds/{DEMO}/bans/{discord}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let answer: serde_json::Value = self.app.get(&path, &self.watcher).await.json().await.unwrap_or_default();
            if answer["data"]["banned"] == true {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the listener never heard of the ban: {answer}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Links a Roblox account to a Discord account on the linker double.
    pub fn link(&self, roblox: u64, discord: u64) {
        self.linker.link(DEMO, roblox, &[discord]);
    }

    /// Records pairs as the guild's linker answered them a moment ago.
    pub fn store_links(&self, pairs: &[(u64, u64)]) {
        for chunk in pairs.chunks(500) {
            let now = chrono::Utc::now().timestamp_millis();
            let rows: Vec<String> = chunk.iter().map(|(r, d)| format!("({DEMO}, {r}, {d}, {now})")).collect();
            let sql = format!(
                "insert into roblox_link (guild_id, roblox_id, discord_id, resolved_at) values {} \
                 returning cast(1 as bigint)",
                rows.join(", ")
            );
            assert_eq!(support::db_scalar(&self.app.db_url, &sql), Some(1), "stored the links");
            for &(roblox, discord) in chunk {
                self.linker.link(DEMO, roblox, &[discord]);
            }
        }
    }
}
