//! The PostgreSQL backend: one database shared by several instances (N
//! listeners, one bot, the CLI).
//!
//! Each key change lands in the change log by trigger and sends a `NOTIFY`
//! at commit; every instance keeps one connection `LISTEN`ing and wakes its
//! index at once ([`PgStore::key_changes_signal`]). The log stays the truth:
//! a notification lost with a dropped connection wakes the index anyway
//! (the reconnect is a wake-up), and the index polls besides.
//!
//! Pools fail fast (a short acquire timeout), so while PostgreSQL is
//! unreachable a write answers an error in seconds instead of hanging,
//! and succeeds again by itself once the database is back.
//!
//! Its statements are the shared ones (`store/*.rs`, run through
//! `db_run!` on [`PgStore::pool`]); [`dialect`] holds the few PostgreSQL
//! spells its own way.

pub(super) mod dialect;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;

/// The migrations, embedded at build time (sqlx takes an advisory lock
/// while applying them, so instances starting at once apply each once).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channels the triggers notify.
const KEY_CHANNEL: &str = "guildkey_key_change";
const AUDIT_CHANNEL: &str = "guildkey_audit";

/// Connections per instance: writes are short, reads of the index come in
/// pages, and the listener holds one more of its own.
const MAX_CONNECTIONS: u32 = 10;

/// How long a query waits for a connection before failing: while the
/// database is down, writes fail in this time with a clear error.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A handle on a PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    pub(super) pool: PgPool,
    key_changes: Arc<Notify>,
    audit_events: Arc<Notify>,
    listening: Arc<Listening>,
}

/// The task that listens for notifications, stopped with the last handle.
struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse().context("failed to parse the PostgreSQL URL")?;
        let options = options.application_name("guildkey");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .context("failed to connect to PostgreSQL")?;
        let key_changes = Arc::new(Notify::new());
        let audit_events = Arc::new(Notify::new());
        let listener =
            PgListener::connect_with(&pool).await.context("failed to listen for PostgreSQL notifications")?;
        let task = tokio::spawn(listen(listener, key_changes.clone(), audit_events.clone()));
        Ok(Self { pool, key_changes, audit_events, listening: Arc::new(Listening(task)) })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("failed to apply database migrations")
    }

    pub fn key_changes_signal(&self) -> Arc<Notify> {
        self.key_changes.clone()
    }

    pub fn audit_events_signal(&self) -> Arc<Notify> {
        self.audit_events.clone()
    }

    pub async fn close(&self) {
        self.listening.0.abort();
        self.pool.close().await;
    }
}

/// Wakes the index or the outbox for each notification. A lost connection
/// (sqlx reconnects on the next receive) wakes both: notifications sent
/// meanwhile are gone, and the change log says what they were.
async fn listen(mut listener: PgListener, key_changes: Arc<Notify>, audit_events: Arc<Notify>) {
    let mut listening = false;
    loop {
        if !listening {
            match listener.listen_all([KEY_CHANNEL, AUDIT_CHANNEL]).await {
                Ok(()) => listening = true,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for PostgreSQL notifications yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == KEY_CHANNEL => key_changes.notify_one(),
            Ok(Some(_)) => audit_events.notify_one(),
            Ok(None) => {
                tracing::warn!("lost the PostgreSQL notification connection; reconnecting (the index polls meanwhile)");
                key_changes.notify_one();
                audit_events.notify_one();
            }
            Err(e) => {
                tracing::debug!(error = %e, "PostgreSQL notifications unavailable; retrying");
                key_changes.notify_one();
                audit_events.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
