//! All SQL lives here, and only here: the one module that knows which
//! database holds the keys. Above it, the service speaks in domain types.
//!
//! Two backends answer the same calls with the same rules:
//! - SQLite (`sqlite/`): one file, the embedded default that needs nothing;
//!   one process writes at a time, and others (the CLI, a second instance
//!   on the same file) are noticed through SQLite's `data_version`.
//! - PostgreSQL (`postgres/`, `database.url = postgres://…`): for several
//!   instances; each change wakes every instance through `LISTEN`/`NOTIFY`,
//!   and the change log stays the truth (a lost notification costs one
//!   poll).
//!
//! Each statement is written once, in `$N` form (sqlx's SQLite driver binds
//! `$N` by number), in the file of its tables: `keys.rs`, `audit.rs`,
//! `webhooks.rs`, `usage.rs`, `alerts.rs`, `limits.rs`. `db_run!` runs it on
//! whichever connection the store holds. The backend modules keep what the
//! databases really do differently: connecting, migrating, the change
//! signal, and in their `dialect` the few statements spelled apart (the
//! start-up index scan, the last-used flush, the usage counters and
//! request log, the minute buckets). Rows come back through `rows.rs`,
//! decoded once for both.

/// What `guildkey backup` says for a PostgreSQL database.
pub const POSTGRES_BACKUP_ADVICE: &str = "guildkey backup copies a SQLite database; for PostgreSQL use pg_dump \
     (pg_dump --format=custom --file=guildkey.dump \"$DATABASE_URL\"), as the README's Backups say";

/// Runs a body written once on whichever database the store holds, in the
/// shape of vaultwarden's `db_run!`: the body is expanded once per backend,
/// with `$c` that backend's own connection (`&mut SqliteConnection` or
/// `&mut PgConnection`), so each driver checks its binds and row types, and
/// `dialect` names that backend's module of statements spelled its own way.
/// `?` in the body returns the error; `return` returns from the caller.
///
/// - `read`: a connection from the pool.
/// - `write`: one write outside a transaction. SQLite: this process's one
///   writer connection, so its writes never look like another process's
///   commit to the key index (`data_version`), and SQLite has one writer at
///   a time anyway. PostgreSQL: a connection from the pool.
/// - `transaction`: a write transaction, committed when the body ends; a
///   `return` or `?` in the body rolls it back. SQLite: a transaction on the
///   writer connection, whose first write takes the database's write lock
///   (so bodies write first, then read what they depend on). PostgreSQL: a
///   pooled transaction; with `lock_guild_keys`, first a per-guild advisory
///   lock held to commit (a count-then-insert that SQLite's single writer
///   serialises needs it here), otherwise the rows a body changes lock
///   themselves.
/// - `snapshot`: a read-only transaction that sees one snapshot (SQLite's
///   transactions always do; PostgreSQL sets `repeatable read`).
/// - `conn`: a [`Conn`] handed in, for statements several transactions
///   share (an audit event, a guild setting).
macro_rules! db_run {
    (read $store:expr, |$c:ident| $body:block) => {
        db_run!(@on $store, |db, conn| $c $body,
            sqlite { let mut conn = db.pool.acquire().await?; },
            postgres { let mut conn = db.pool.acquire().await?; })
    };
    (write $store:expr, |$c:ident| $body:block) => {
        db_run!(@on $store, |db, conn| $c $body,
            sqlite { let mut conn = db.writer.lock().await; },
            postgres { let mut conn = db.pool.acquire().await?; })
    };
    (transaction $store:expr, |$c:ident| $body:block) => {
        db_run!(@transaction $store, None, |$c| $body)
    };
    (transaction $store:expr, lock_guild_keys = $guild:expr, |$c:ident| $body:block) => {
        db_run!(@transaction $store, Some($guild), |$c| $body)
    };
    (@transaction $store:expr, $lock:expr, |$c:ident| $body:block) => {
        db_run!(@on $store, |db, conn| $c $body,
            sqlite {
                let _: Option<u64> = $lock; // the one writer serialises every write
                let mut writer = db.writer.lock().await;
                let mut conn = sqlx::Connection::begin(&mut *writer).await?;
            },
            postgres {
                let mut conn = db.pool.begin().await?;
                if let Some(guild_id) = $lock {
                    $crate::store::postgres::dialect::lock_guild_keys(&mut conn, guild_id).await?;
                }
            },
            commit)
    };
    (snapshot $store:expr, |$c:ident| $body:block) => {
        db_run!(@on $store, |db, conn| $c $body,
            sqlite { let mut conn = db.pool.begin().await?; },
            postgres {
                let mut conn = db.pool.begin().await?;
                sqlx::query("set transaction isolation level repeatable read read only").execute(&mut *conn).await?;
            },
            commit)
    };
    // Opens `$conn` as each backend says, runs the body on it, and commits
    // when asked (a transaction).
    (@on $store:expr, |$db:ident, $conn:ident| $c:ident $body:block,
        sqlite { $($sqlite:tt)* }, postgres { $($postgres:tt)* } $(, $commit:ident)?) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($db) => {
                #[allow(unused_imports)]
                use $crate::store::sqlite::dialect;
                $($sqlite)*
                let out = {
                    let $c: &mut sqlx::SqliteConnection = &mut $conn;
                    $body
                };
                $($conn.$commit().await?;)?
                out
            }
            $crate::store::Backend::Postgres($db) => {
                #[allow(unused_imports)]
                use $crate::store::postgres::dialect;
                $($postgres)*
                let out = {
                    let $c: &mut sqlx::PgConnection = &mut $conn;
                    $body
                };
                $($conn.$commit().await?;)?
                out
            }
        }
    };
    (conn $conn:expr, |$c:ident| $body:block) => {
        match Into::<$crate::store::Conn<'_>>::into($conn) {
            $crate::store::Conn::Sqlite($c) => {
                #[allow(unused_imports)]
                use $crate::store::sqlite::dialect;
                $body
            }
            $crate::store::Conn::Postgres($c) => {
                #[allow(unused_imports)]
                use $crate::store::postgres::dialect;
                $body
            }
        }
    };
}

mod alerts;
mod audit;
mod keys;
mod limits;
mod postgres;
mod rows;
mod sqlite;
mod usage;
mod webhooks;

pub use alerts::{ExpiringKey, ExpiryReminder};
pub use audit::{AuditChannelBefore, PostsOff};
pub use keys::{IndexRow, KeyChanges, NewKeyRow, Rotation};
pub use limits::RateGrant;
pub use usage::{
    HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep, REFUSAL_STATUSES,
};
pub use webhooks::{
    AttemptNext, AttemptRecord, DeliveryRecord, DeliveryState, DueDelivery, Failing, NewDelivery, NewWebhook,
    WebhookRecord,
};

use std::sync::Arc;

use tokio::sync::Notify;

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// A connection inside one of the store's transactions, on either backend:
/// what statements shared by several calls take (see `db_run!(conn …)`).
enum Conn<'c> {
    Sqlite(&'c mut sqlx::SqliteConnection),
    Postgres(&'c mut sqlx::PgConnection),
}

impl<'c> From<&'c mut sqlx::SqliteConnection> for Conn<'c> {
    fn from(c: &'c mut sqlx::SqliteConnection) -> Self {
        Self::Sqlite(c)
    }
}

impl<'c> From<&'c mut sqlx::PgConnection> for Conn<'c> {
    fn from(c: &'c mut sqlx::PgConnection) -> Self {
        Self::Postgres(c)
    }
}

/// Which backend a database URL selects.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether `url` names a database guildkey can keep keys in: a PostgreSQL
/// URL, or a SQLite URL naming a file (an in-memory database would accept
/// keys and forget them at exit, and the CLI would print secrets no
/// listener ever knows). The reason, when not, masks any password.
pub fn check_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    if is_postgres_url(url) {
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        return Ok(());
    }
    if !url.starts_with("sqlite:") {
        return Err(format!(
            "'{}' is not a SQLite URL like sqlite://data/guildkey.db?mode=rwc nor a PostgreSQL URL like \
             postgres://guildkey@db.internal/guildkey",
            mask_url_password(url)
        ));
    }
    sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return Err(format!(
            "'{url}' names no database file (or an in-memory one); use a file like sqlite://data/guildkey.db?mode=rwc"
        ));
    }
    Ok(())
}

/// `url` with the password of its user info, if any, replaced by asterisks:
/// what logs and error messages may show of a database URL.
pub fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:********{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `e` means the database could not be reached (rather than that
/// it refused or failed the query): a connection that could not be made
/// or broke, a pool that waited too long, PostgreSQL shutting down or not
/// yet accepting connections (SQLSTATE classes 08 and 57P).
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<sqlx::Error>()).any(|e| match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    })
}

impl Store {
    /// Opens the database at `url`: `postgres://…` or `postgresql://…`
    /// selects PostgreSQL, anything else is a SQLite URL (the file and its
    /// directory are created when missing, unless the URL sets a `mode` of
    /// its own).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let backend = if is_postgres_url(url) {
            Backend::Postgres(postgres::PgStore::connect(url).await?)
        } else {
            Backend::Sqlite(sqlite::SqliteStore::connect(url).await?)
        };
        Ok(Self { backend })
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether several instances may share this database (PostgreSQL): an
    /// unreachable database then means no instance can commit a change
    /// either, so what the index holds stays the latest there is.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Applies every migration not yet applied; safe when several
    /// instances start at once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.migrate().await,
            Backend::Postgres(db) => db.migrate().await,
        }
    }

    /// Changes whenever the keys may have changed since it was last read,
    /// and costs no table scan: the index calls it often. SQLite: another
    /// connection committed (`data_version`, never this store's own
    /// writes). PostgreSQL: the head of the change log, which moves with
    /// every key change, this instance's own included (applying one twice
    /// is harmless).
    pub async fn change_counter(&self) -> anyhow::Result<i64> {
        match &self.backend {
            Backend::Sqlite(db) => db.change_counter().await,
            Backend::Postgres(_) => self.key_change_head().await,
        }
    }

    /// Woken when another instance changed a key (PostgreSQL's `NOTIFY`,
    /// or the listening connection was lost and notices may be missing);
    /// `None` when the backend has no such signal and is polled instead.
    pub fn key_changes_signal(&self) -> Option<Arc<Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.key_changes_signal()),
        }
    }

    /// Woken when any instance recorded an audit event, as
    /// [`Self::key_changes_signal`].
    pub fn audit_events_signal(&self) -> Option<Arc<Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.audit_events_signal()),
        }
    }

    /// Writes a consistent copy of the database to `path`, a new file, while
    /// it is in use: SQLite's `VACUUM INTO` reads one snapshot, so every
    /// change committed before it began is in the copy and none half made.
    /// The copy is private (0600) and works as `database.url` as it is.
    /// PostgreSQL has its own tools (`pg_dump`): refused, saying so.
    pub async fn backup_into(&self, path: &std::path::Path) -> anyhow::Result<u64> {
        match &self.backend {
            Backend::Sqlite(db) => db.backup_into(path).await,
            Backend::Postgres(_) => anyhow::bail!(POSTGRES_BACKUP_ADVICE),
        }
    }

    /// Closes every connection, waiting for those in use (SQLite then
    /// empties its WAL into the database file).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }
}
