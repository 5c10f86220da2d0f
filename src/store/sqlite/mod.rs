//! The SQLite backend: one file, the embedded default that needs nothing.
//!
//! The store opens the file in WAL mode with foreign keys on and a busy
//! timeout, creates the file's directory when missing, keeps both private
//! (see [`private_files`]), applies the numbered migrations in
//! `migrations/`, and lets the key index notice commits made by other
//! processes ([`SqliteStore::change_counter`]) without reading any table.
//!
//! Its statements are the shared ones (`store/*.rs`, run through
//! `db_run!`, which opens writes on [`SqliteStore::writer`]); [`dialect`]
//! holds the few SQLite spells its own way.

pub(super) mod dialect;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on a SQLite database; cheap to clone.
#[derive(Clone)]
pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// The one connection this process writes with, and reads
    /// `PRAGMA data_version` on: that value changes only when *another*
    /// connection commits, so the index, which applies this process's own
    /// changes itself, reloads for other processes' commits alone. (SQLite
    /// has one writer at a time anyway.)
    pub(super) writer: std::sync::Arc<Mutex<SqliteConnection>>,
}

impl SqliteStore {
    /// Opens the database at `url`, creating the file (and its directory)
    /// when missing, unless the URL sets a `mode` of its own (`mode=rw`
    /// or `mode=ro` mean "must exist", and are respected).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let explicit_mode = url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("mode=")));
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "failed to parse the database URL")?
            .create_if_missing(!explicit_mode || url.contains("mode=rwc"))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let file = options.get_filename().to_owned();
        if !is_in_memory(url, &file) {
            private_files(&file, !explicit_mode || url.contains("mode=rwc"))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("failed to open the database {}", display(&file)))?;
        let writer = SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("failed to open the database {}", display(&file)))?;
        Ok(Self { pool, writer: std::sync::Arc::new(Mutex::new(writer)) })
    }

    /// A snapshot of the database into the new file `path` (see
    /// [`super::Store::backup_into`]); returns its size in bytes. The file
    /// is made first, empty and private, so that an existing one is never
    /// overwritten and the copy is never readable by others.
    pub async fn backup_into(&self, path: &Path) -> anyhow::Result<u64> {
        let mut new_file = std::fs::OpenOptions::new();
        new_file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut new_file, PRIVATE_FILE_MODE);
        new_file.open(path).with_context(|| format!("cannot create {}", path.display()))?;
        let target = path.to_str().with_context(|| format!("{} is not a UTF-8 path", path.display()))?;
        let copied = async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("vacuum into $1").bind(target).execute(&mut *conn).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = std::fs::remove_file(path); // no half-written copy left behind
            return Err(e.context(format!("the backup into {} failed", path.display())));
        }
        Ok(std::fs::metadata(path)?.len())
    }

    /// Applies every migration not yet applied.
    ///
    /// sqlx's SQLite migrator takes no lock, so processes opening a fresh
    /// database at once (two instances, the CLI beside a starting listener)
    /// race to apply the same migration; the losers retry, and by then see
    /// it applied.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                // Dozens of processes may race on a busy machine: up to about
                // 8 s in all, each process on its own beat (its pid) so the
                // losers do not collide again in step.
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                    let beat = u64::from(std::process::id() % 40);
                    tokio::time::sleep(Duration::from_millis((50 * attempt).min(400) + beat)).await;
                }
                Err(e) => return Err(anyhow::Error::from(e).context("failed to apply database migrations")),
            }
        }
    }

    /// Changes whenever another connection or process commits, never for
    /// this store's own writes. Costs no table read: the index calls it
    /// often and reloads only on change.
    pub async fn change_counter(&self) -> anyhow::Result<i64> {
        let mut conn = self.writer.lock().await;
        let (v,): (i64,) = sqlx::query_as("pragma data_version").fetch_one(&mut *conn).await?;
        Ok(v)
    }

    /// Closes every connection, waiting for those in use, then moves
    /// everything in the WAL into the database file and empties the WAL
    /// (`wal_checkpoint(TRUNCATE)`), so that after a clean stop or a lone
    /// CLI command the database file alone holds every committed change
    /// and can be copied by itself. Another process still reading keeps
    /// the checkpoint from completing; that is logged, and the changes stay
    /// safe in the WAL until that process checkpoints in turn.
    pub async fn close(&self) {
        self.pool.close().await;
        let mut writer = self.writer.lock().await;
        match sqlx::query_as::<_, (i64, i64, i64)>("pragma wal_checkpoint(TRUNCATE)").fetch_one(&mut *writer).await {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => {
                tracing::warn!(
                    wal_pages = log,
                    checkpointed = done,
                    "another process kept the WAL from being emptied at close"
                )
            }
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the WAL at close"),
        }
    }
}

/// The database directory a store creates is `0700`; the database file
/// and its `-wal` and `-shm` companions are `0600`. They hold every key's
/// hash and the whole audit trail, so no other local user may read them.
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;

fn is_in_memory(url: &str, file: &Path) -> bool {
    file.as_os_str().is_empty() || file == Path::new(":memory:") || url.contains("mode=memory")
}

/// Makes the database's directory (when missing, `0700`) and file (when
/// missing and `create`, `0600`) before SQLite opens it, and tightens an
/// existing file, `-wal` or `-shm` that others may read. Modes are set
/// explicitly, not left to the umask. SQLite gives the `-wal` and `-shm` it
/// creates the database file's own mode.
#[cfg(unix)]
fn private_files(file: &Path, create: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut missing = vec![dir];
        while let Some(parent) = missing.last().and_then(|d| d.parent()).filter(|p| !p.as_os_str().is_empty()) {
            if parent.exists() {
                break;
            }
            missing.push(parent);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir)
            .with_context(|| format!("failed to create the database directory {}", dir.display()))?;
        for made in missing {
            std::fs::set_permissions(made, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .with_context(|| format!("failed to make the database directory {} private", made.display()))?;
        }
    }
    if create && !file.exists() {
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE_MODE).open(file) {
            Ok(_) => std::fs::set_permissions(file, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .with_context(|| format!("failed to make the database file {} private", file.display()))?,
            // Another process made it first: tightened below like any other.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(
                    anyhow::Error::from(e).context(format!("failed to create the database file {}", file.display()))
                )
            }
        }
    }
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = file.as_os_str().to_owned();
    shm.push("-shm");
    for path in [file.to_path_buf(), wal.into(), shm.into()] {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & !PRIVATE_FILE_MODE == 0 {
            continue;
        }
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE)) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                was = format!("{mode:o}"),
                "tightened the database file's mode to 600: others could read it"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "the database file is readable by others and its mode could not be changed"
            ),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_files(file: &Path, _create: bool) -> anyhow::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the database directory {}", dir.display()))?;
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
