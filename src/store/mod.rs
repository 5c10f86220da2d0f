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
//! `webhooks.rs`, `usage.rs`, `alerts.rs`, `limits.rs`, `roblox.rs`, `ban_lists.rs`. `db_run!` runs it on
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
mod ban_lists;
mod keys;
mod limits;
mod postgres;
mod roblox;
mod roblox_push;
mod rows;
mod sqlite;
mod usage;
mod webhooks;

pub use alerts::{ExpiringKey, ExpiryReminder};
pub use audit::{AuditChannelBefore, PostsOff};
pub use ban_lists::{BanChange, BanChanges, BanSyncState};
pub use keys::{IndexRow, KeyChanges, NewKeyRow, PreviousSeen, Rotation};
pub use limits::RateGrant;
pub use roblox::{RobloxLink, SealedCredential};
pub use roblox_push::{KeyDelivery, NewPush, PushEvent, PushNext, PushSetting};
pub use usage::{
    HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep, REFUSAL_STATUSES,
};
pub use webhooks::{
    AttemptNext, AttemptRecord, DeliveryRecord, DeliveryState, DueDelivery, Failing, NewDelivery, NewWebhook, Skipped,
    WebhookRecord, SKIPPED_EVENT_TYPE,
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
        // Checked before sqlx reads the URL: it logs a parameter it does not
        // know, value and all.
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if query.split('&').any(|p| p.to_ascii_lowercase().starts_with("sslpassword=")) {
            return Err(format!(
                "'{}': sslpassword is not supported (guildkey cannot read an encrypted client key); give sslkey \
                 an unencrypted key file readable by guildkey alone",
                mask_url_password(url)
            ));
        }
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
            "'{}' names no database file (or an in-memory one); use a file like sqlite://data/guildkey.db?mode=rwc",
            mask_url_password(url)
        ));
    }
    Ok(())
}

/// What a password shows as wherever a database URL is shown.
const MASK: &str = "********";

/// `url` with every password in it replaced by asterisks: what logs, error
/// messages and `config check` may show of a database setting, whatever its
/// form. The user info's password (up to the last `@`, so a raw `@` in the
/// password hides it all), and `password`/`sslpassword` parameters, in a
/// URL's query (`?password=…`) or a `key=value` connection string
/// (`host=db password='s3 cret'`). When in doubt, more is hidden.
pub fn mask_url_password(url: &str) -> String {
    let masked = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => {
                let (userinfo, host) = (&rest[..at], &rest[at..]);
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:{MASK}{host}"),
                    None => url.to_owned(),
                }
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    mask_password_params(&masked)
}

/// Masks the values of `password=` and `sslpassword=` wherever they start a
/// parameter: after `?`, `&`, whitespace or at the start (a `key=value`
/// string's value may be quoted, with `\'` inside).
fn mask_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let at_boundary = out.is_empty() || out.ends_with(['?', '&', ' ', '\t', '\n']);
        let key = ["sslpassword=", "password="]
            .into_iter()
            .find(|k| at_boundary && rest.get(..k.len()).is_some_and(|head| head.eq_ignore_ascii_case(k)));
        let Some(key) = key else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        out.push_str(&rest[..key.len()]);
        out.push_str(MASK);
        rest = &rest[key.len()..];
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(rest.len(), |(i, _)| i + 2)
        } else {
            rest.find(['&', ' ', '\t', '\n', '#']).unwrap_or(rest.len())
        };
        rest = &rest[end..];
    }
    out
}

/// `url` with the TLS settings of the config (`database.sslmode`,
/// `database.sslrootcert`) as its `sslmode` and `sslrootcert` parameters,
/// replacing any the URL has: how a PostgreSQL connection is encrypted and
/// which CA it trusts. A SQLite URL is returned as it is.
pub fn with_tls_settings(url: &str, sslmode: Option<&str>, sslrootcert: Option<&str>) -> String {
    if !is_postgres_url(url) || (sslmode.is_none() && sslrootcert.is_none()) {
        return url.to_owned();
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let replaced = |p: &&str| {
        let name = p.split('=').next().unwrap_or_default();
        (sslmode.is_some() && name == "sslmode") || (sslrootcert.is_some() && name == "sslrootcert")
    };
    let mut params: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && !replaced(p)).map(str::to_owned).collect();
    if let Some(mode) = sslmode {
        params.push(format!("sslmode={}", percent_encode(mode)));
    }
    if let Some(path) = sslrootcert {
        params.push(format!("sslrootcert={}", percent_encode(path)));
    }
    format!("{base}?{}", params.join("&"))
}

/// Percent-encodes all but unreserved characters and `/` (a query value).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_database_password_is_masked() {
        let cases = [
            ("postgres://gk:s3cret@db/guildkey", "postgres://gk:********@db/guildkey"),
            // A raw `@` in the password: all of it hidden, not its tail shown.
            ("postgres://gk:p@ss@word@db:5432/gk", "postgres://gk:********@db:5432/gk"),
            ("postgresql://gk:a%40b@db/gk?sslmode=require", "postgresql://gk:********@db/gk?sslmode=require"),
            ("postgres://db/gk?user=gk&password=s3cret", "postgres://db/gk?user=gk&password=********"),
            (
                "postgres://db/gk?password=s3cret&sslmode=verify-full",
                "postgres://db/gk?password=********&sslmode=verify-full",
            ),
            ("postgres://db/gk?sslpassword=keypass", "postgres://db/gk?sslpassword=********"),
            ("host=db user=gk password=s3cret dbname=gk", "host=db user=gk password=******** dbname=gk"),
            ("host=db password='s3 c\\'ret' dbname=gk", "host=db password=******** dbname=gk"),
            ("password=s3cret host=db", "password=******** host=db"),
            ("ünïcode passwörd=x password=é", "ünïcode passwörd=x password=********"),
            ("postgres://gk@db/gk", "postgres://gk@db/gk"),
            ("sqlite://data/guildkey.db?mode=rwc", "sqlite://data/guildkey.db?mode=rwc"),
        ];
        for (url, masked) in cases {
            assert_eq!(mask_url_password(url), masked, "{url}");
        }
    }

    #[test]
    fn a_url_that_is_refused_is_named_masked() {
        let why = check_url("host=db user=gk password=s3cret").unwrap_err();
        assert!(!why.contains("s3cret"), "{why}");
    }

    #[test]
    fn the_tls_settings_replace_the_urls_own() {
        let url = "postgres://gk:pw@db/gk?sslmode=disable&application_name=x";
        assert_eq!(with_tls_settings(url, None, None), url);
        assert_eq!(
            with_tls_settings(url, Some("verify-full"), Some("/etc/ssl/db ca.pem")),
            "postgres://gk:pw@db/gk?application_name=x&sslmode=verify-full&sslrootcert=/etc/ssl/db%20ca.pem"
        );
        assert_eq!(with_tls_settings("sqlite://x.db", Some("require"), None), "sqlite://x.db");
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(&with_tls_settings(
            "postgres://db/gk",
            Some("verify-ca"),
            Some("/tmp/a b.pem"),
        ))
        .unwrap();
        assert!(matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::VerifyCa));
    }
}
