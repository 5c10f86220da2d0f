//! Which database a test runs on. The service and HTTP suites are one
//! suite over both backends: by default each test gets a fresh SQLite file;
//! with `GUILDKEY_TEST_BACKEND=postgres` it gets a fresh PostgreSQL
//! database made on the server `GUILDKEY_TEST_POSTGRES` names (an admin URL
//! such as `postgres://guildkey:guildkey@127.0.0.1/postgres`).
//!
//! Tests that need PostgreSQL whatever the backend (several instances on
//! one database) call [`postgres_admin_url`]: without the variable they are
//! skipped, saying so, unless `GUILDKEY_REQUIRE_POSTGRES=1` (CI) makes that
//! a failure.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this run's backend is PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("GUILDKEY_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A fresh database for one test: a SQLite file in `dir`, or a new
/// PostgreSQL database when the backend is PostgreSQL.
pub fn fresh_url(dir: &Path) -> String {
    if on_postgres() {
        let admin = postgres_admin_url().expect("GUILDKEY_TEST_BACKEND=postgres needs GUILDKEY_TEST_POSTGRES");
        return fresh_postgres(&admin);
    }
    format!("sqlite://{}?mode=rwc", dir.join("gk.db").display())
}

/// The PostgreSQL server tests may make databases on, or `None` (the
/// test is skipped; it says so) when none is configured. Panics when CI
/// requires PostgreSQL and none is configured.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("GUILDKEY_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("GUILDKEY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
            panic!(
                "GUILDKEY_REQUIRE_POSTGRES=1 but GUILDKEY_TEST_POSTGRES is not set: PostgreSQL tests cannot be skipped"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED: this test needs PostgreSQL; set GUILDKEY_TEST_POSTGRES=postgres://user:pass@host/postgres \
                 (scripts/test does, when PostgreSQL is installed)"
            );
            None
        }
    }
}

/// Makes a new, empty database on the server at `admin` and returns its URL.
pub fn fresh_postgres(admin: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "gk_test_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let url = admin.to_owned();
    let statement = format!("create database {name}");
    // A thread of its own, so this works inside and outside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect to GUILDKEY_TEST_POSTGRES");
            sqlx::query(&statement).execute(&mut conn).await.expect("create a test database");
        });
    })
    .join()
    .expect("create a test database");
    let (base, _) = admin.rsplit_once('/').expect("GUILDKEY_TEST_POSTGRES ends in /database");
    format!("{base}/{name}")
}
