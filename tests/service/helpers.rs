//! The service suite's helpers: a database each test opens one or more
//! "processes" (store and service pairs) on, drafts, and waits.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use guildkey::audit::{Actor, AuditEvent};
use guildkey::config::KeysConfig;
use guildkey::service::{IssuedKey, KeyDraft, KeyRequest, KeyService};
use guildkey::store::Store;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub(crate) use crate::db;

pub const GUILD: u64 = 111_111_111_111_111_111;
pub const OTHER_GUILD: u64 = 222_222_222_222_222_222;
pub const ADMIN: u64 = 333_333_333_333_333_333;
pub const CHANNEL: u64 = 444_444_444_444_444_444;

/// True (and says so) when this run is on PostgreSQL and the test, which
/// reaches under the store, only makes sense on SQLite.
pub fn sqlite_only(why: &str) -> bool {
    let skip = db::on_postgres();
    if skip {
        eprintln!("SKIPPED on PostgreSQL: {why}");
    }
    skip
}

/// A temporary database (file) that several instances can open.
pub struct Db {
    pub _dir: TempDir,
    pub url: String,
}

impl Db {
    pub fn new() -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let url = db::fresh_url(dir.path());
        Self { _dir: dir, url }
    }

    /// One "process": its own store (connection pool) and service.
    pub async fn open(&self, max_per_guild: u32) -> (Store, KeyService) {
        let store = Store::connect(&self.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let service = KeyService::new(store.clone(), config(max_per_guild)).await.expect("build the service");
        (store, service)
    }

    pub async fn service(&self) -> KeyService {
        self.open(3).await.1
    }
}

pub fn config(max_per_guild: u32) -> KeysConfig {
    KeysConfig {
        max_per_guild,
        prefix: "gk".to_owned(),
        default_rate_limit_per_minute: 60,
        last_used_flush_seconds: 5,
        ..guildkey::config::Config::default().keys
    }
}

pub fn draft(request: KeyRequest<'_>) -> KeyDraft {
    KeyDraft::parse(&request).unwrap_or_else(|e| panic!("bad draft {request:?}: {e}"))
}

pub fn named(name: &str) -> KeyDraft {
    draft(KeyRequest { name, scopes: "bans.read", ..Default::default() })
}

pub async fn issue(service: &KeyService, guild: u64, name: &str) -> IssuedKey {
    service.issue(guild, named(name), &Actor::Cli).await.unwrap_or_else(|e| panic!("issue {name:?}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// An address outside any allow-list the tests use.
pub fn anywhere() -> IpAddr {
    ip("198.51.100.7")
}

pub async fn events(service: &KeyService, guild: u64) -> Vec<AuditEvent> {
    service.audit_log(guild, 100, None).await.expect("audit log")
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
pub async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sleeps until shortly after `at` (a key's expiry).
pub async fn sleep_until_after(at: chrono::DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(150)).await;
}

/// Runs `service`'s background upkeep (as `guildkey run` does) until the
/// returned sender is dropped or fired.
pub fn start_upkeep(service: &KeyService) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let service = service.clone();
    let task = tokio::spawn(async move {
        service
            .run_upkeep(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}
