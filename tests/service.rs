//! Direct tests of the service rules (SPEC §3, §5 and the hot path of §6) on
//! a real temporary SQLite file, or with `GUILDKEY_TEST_BACKEND=postgres` a
//! fresh PostgreSQL database (see `support/db.rs`): limits under concurrency, revoke, rotate,
//! delete, expiry, lookups, audit events, verification from memory and the
//! batched last-used times.
//!
//! Two `Store`/`KeyService` pairs opened on one file stand in for two
//! processes (a running listener and the operator CLI, or two instances).
//! Set `TEST_LOG=1` to see the service's logs.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use guildkey::audit::{Action, Actor, AuditEvent};
use guildkey::config::KeysConfig;
use guildkey::keys::{token, Environment, KeyStatus, Scope};
use guildkey::service::lease::Take;
use guildkey::service::{parse_grace, Error, IssuedKey, KeyDraft, KeyRequest, KeyService};
use guildkey::store::Store;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;

#[path = "support/db.rs"]
mod db;

const GUILD: u64 = 111_111_111_111_111_111;
const OTHER_GUILD: u64 = 222_222_222_222_222_222;
const ADMIN: u64 = 333_333_333_333_333_333;
const CHANNEL: u64 = 444_444_444_444_444_444;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// True (and says so) when this run is on PostgreSQL and the test, which
/// reaches under the store, only makes sense on SQLite.
fn sqlite_only(why: &str) -> bool {
    let skip = db::on_postgres();
    if skip {
        eprintln!("SKIPPED on PostgreSQL: {why}");
    }
    skip
}

/// A temporary database (file) that several instances can open.
struct Db {
    _dir: TempDir,
    url: String,
}

impl Db {
    fn new() -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let url = db::fresh_url(dir.path());
        Self { _dir: dir, url }
    }

    /// One "process": its own store (connection pool) and service.
    async fn open(&self, max_per_guild: u32) -> (Store, KeyService) {
        let store = Store::connect(&self.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let service = KeyService::new(store.clone(), config(max_per_guild)).await.expect("build the service");
        (store, service)
    }

    async fn service(&self) -> KeyService {
        self.open(3).await.1
    }
}

fn config(max_per_guild: u32) -> KeysConfig {
    KeysConfig {
        max_per_guild,
        prefix: "gk".to_owned(),
        default_rate_limit_per_minute: 60,
        last_used_flush_seconds: 5,
        ..guildkey::config::Config::default().keys
    }
}

fn draft(request: KeyRequest<'_>) -> KeyDraft {
    KeyDraft::parse(&request).unwrap_or_else(|e| panic!("bad draft {request:?}: {e}"))
}

fn named(name: &str) -> KeyDraft {
    draft(KeyRequest { name, scopes: "bans.read", ..Default::default() })
}

async fn issue(service: &KeyService, guild: u64, name: &str) -> IssuedKey {
    service.issue(guild, named(name), &Actor::Cli).await.unwrap_or_else(|e| panic!("issue {name:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// An address outside any allow-list the tests use.
fn anywhere() -> IpAddr {
    ip("198.51.100.7")
}

async fn events(service: &KeyService, guild: u64) -> Vec<AuditEvent> {
    service.audit_log(guild, 100, None).await.expect("audit log")
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
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
async fn sleep_until_after(at: chrono::DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(150)).await;
}

/// Runs `service`'s background upkeep (as `guildkey run` does) until the
/// returned sender is dropped or fired.
fn start_upkeep(service: &KeyService) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
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

// ---------------------------------------------------------------------------
// The per-guild limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_never_exceeds_the_limit_under_64_concurrent_calls_from_two_instances() {
    // Arrange
    let db = Db::new();
    let (_, first) = db.open(3).await;
    let (_, second) = db.open(3).await;

    // Act
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let service = if i % 2 == 0 { first.clone() } else { second.clone() };
            tokio::spawn(async move {
                let name = format!("racer {i}");
                service.issue(GUILD, named(&name), &Actor::User(ADMIN)).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task panicked"));
    }

    // Assert
    let issued: Vec<&IssuedKey> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(issued.len(), 3, "exactly max_per_guild creates succeed");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, Error::LimitReached { max: 3 }), "a refused create must be LimitReached, got {e:?}");
        }
    }
    let keys = first.list(GUILD).await.unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.status(Utc::now()) == KeyStatus::Active));
    assert_eq!(first.active_count(GUILD).await.unwrap(), (3, 3));
    let created = events(&first, GUILD).await.into_iter().filter(|e| e.action == Action::KeyCreated).count();
    assert_eq!(created, 3, "one key.created event per key, none for refused creates");
}

#[tokio::test]
async fn revoked_keys_do_not_count_toward_the_limit() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let first = issue(&service, GUILD, "one").await;
    issue(&service, GUILD, "two").await;
    issue(&service, GUILD, "three").await;
    let refused = service.issue(GUILD, named("four"), &Actor::Cli).await;
    assert!(matches!(refused, Err(Error::LimitReached { max: 3 })), "{refused:?}");

    // Act
    service.revoke(Some(GUILD), first.record.id.as_str(), &Actor::Cli).await.unwrap();
    let after_revoke = service.issue(GUILD, named("four"), &Actor::Cli).await;
    let other_guild = service.issue(OTHER_GUILD, named("elsewhere"), &Actor::Cli).await;

    // Assert
    assert!(after_revoke.is_ok(), "{after_revoke:?}");
    assert!(other_guild.is_ok(), "the limit is per guild: {other_guild:?}");
    assert_eq!(service.active_count(GUILD).await.unwrap(), (3, 3));
}

#[tokio::test]
async fn an_expired_key_is_rejected_and_does_not_count_toward_the_limit() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let short = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "short", scopes: "bans.read", expires_in: Some("2s"), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    let valid_before = service.authenticate(short.secret.expose(), anywhere());
    issue(&service, GUILD, "two").await;
    issue(&service, GUILD, "three").await;
    let refused = service.issue(GUILD, named("four"), &Actor::Cli).await;
    assert!(valid_before.is_ok(), "valid before it expires: {valid_before:?}");
    assert!(matches!(refused, Err(Error::LimitReached { .. })), "an unexpired key counts: {refused:?}");

    // Act
    sleep_until_after(short.record.expires_at.expect("an expiry")).await;
    let verified = service.authenticate(short.secret.expose(), anywhere());
    let replacement = service.issue(GUILD, named("four"), &Actor::Cli).await;

    // Assert
    assert!(matches!(verified, Err(Error::Expired(_))), "{verified:?}");
    assert!(replacement.is_ok(), "an expired key must not count: {replacement:?}");
    let listed = service.find(Some(GUILD), short.record.id.as_str()).await.unwrap();
    assert_eq!(listed.status(Utc::now()), KeyStatus::Expired);
    assert_eq!(service.active_count(GUILD).await.unwrap(), (3, 3));
}

// ---------------------------------------------------------------------------
// Revoke, rotate, delete
// ---------------------------------------------------------------------------

#[tokio::test]
async fn authenticate_rejects_a_revoked_key_immediately() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let key = issue(&service, GUILD, "doomed").await;
    let bystander = issue(&service, GUILD, "bystander").await;
    assert!(service.authenticate(key.secret.expose(), anywhere()).is_ok());

    // Act
    let revoked = service.revoke(Some(GUILD), &key.record.prefix, &Actor::User(ADMIN)).await.unwrap();

    // Assert
    let verified = service.authenticate(key.secret.expose(), anywhere());
    assert!(matches!(verified, Err(Error::Revoked(_))), "{verified:?}");
    assert_eq!(revoked.status(Utc::now()), KeyStatus::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert!(service.authenticate(bystander.secret.expose(), anywhere()).is_ok(), "only the named key is revoked");
    let again = service.revoke(Some(GUILD), key.record.id.as_str(), &Actor::Cli).await;
    assert!(matches!(again, Err(Error::Revoked(_))), "revoking twice is refused: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_another_instance_takes_effect_within_one_second() {
    // Arrange: a listener instance with its upkeep running, and the CLI.
    let db = Db::new();
    let (_, cli) = db.open(3).await;
    let (_, listener) = db.open(3).await;
    let (stop, upkeep) = start_upkeep(&listener);
    let key = issue(&cli, GUILD, "shared").await;
    let seen = within(Duration::from_secs(1), || listener.authenticate(key.secret.expose(), anywhere()).is_ok()).await;
    assert!(seen.is_some(), "a key created by another instance must work there within 1 s");

    // Act
    cli.revoke(None, key.record.id.as_str(), &Actor::Cli).await.unwrap();
    let took = within(Duration::from_secs(1), || {
        matches!(listener.authenticate(key.secret.expose(), anywhere()), Err(Error::Revoked(_)))
    })
    .await;

    // Assert
    let _ = stop.send(());
    upkeep.await.unwrap();
    assert!(took.is_some(), "the other instance still accepts a revoked key after 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_another_instance_takes_effect_within_one_second() {
    // Arrange
    let db = Db::new();
    let (_, cli) = db.open(3).await;
    let (_, listener) = db.open(3).await;
    let key = issue(&cli, GUILD, "shared").await;
    listener.refresh_index().await.unwrap();
    assert!(listener.authenticate(key.secret.expose(), anywhere()).is_ok());
    let (stop, upkeep) = start_upkeep(&listener);

    // Act
    let rotated = cli.rotate(None, &key.record.prefix, None, &Actor::Cli).await.unwrap();
    let took = within(Duration::from_secs(1), || {
        listener.authenticate(rotated.secret.expose(), anywhere()).is_ok()
            && listener.authenticate(key.secret.expose(), anywhere()).is_err()
    })
    .await;

    // Assert
    let _ = stop.send(());
    upkeep.await.unwrap();
    assert!(took.is_some(), "after 1 s the other instance should accept only the new secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_catch_up_refuses_every_key_until_it_can() {
    if sqlite_only("it edits the file's schema through a raw SQLite connection") {
        return;
    }
    // Arrange: a listener with its upkeep running, two keys it accepts.
    let db = Db::new();
    let (_, cli) = db.open(3).await;
    let (_, listener) = db.open(3).await;
    let (stop, upkeep) = start_upkeep(&listener);
    let doomed = issue(&cli, GUILD, "doomed").await;
    let bystander = issue(&cli, GUILD, "bystander").await;
    let auth = |key: &IssuedKey| listener.authenticate(key.secret.expose(), anywhere());
    let seen = within(Duration::from_secs(2), || auth(&doomed).is_ok() && auth(&bystander).is_ok()).await;
    assert!(seen.is_some(), "both keys work on the listener");

    // Act: another process revokes a key and, in the same commit, takes the
    // key change log away, so the listener's checks fail from now on.
    let mut other = sqlx::SqliteConnection::connect(&db.url).await.expect("a raw connection");
    let mut tx = other.begin().await.unwrap();
    sqlx::query("update api_key set revoked_at = ?, updated_at = ? where api_key_id = ?")
        .bind(Utc::now().timestamp_millis())
        .bind(Utc::now().timestamp_millis())
        .bind(doomed.record.id.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("alter table key_change rename to key_change_away").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    // Assert: within the bound (5 s, checks every 250 ms) every key is refused,
    // the revoked one included, rather than the revoked one accepted.
    let refused = within(Duration::from_secs(8), || {
        matches!(auth(&doomed), Err(Error::IndexStale)) && matches!(auth(&bystander), Err(Error::IndexStale))
    })
    .await;
    assert!(refused.is_some(), "a listener that cannot catch up still accepts keys: {:?}", auth(&doomed));

    // Act: the log comes back.
    sqlx::query("alter table key_change_away rename to key_change").execute(&mut other).await.unwrap();

    // Assert: the next check catches up; the bystander works, the revoked key is revoked.
    let back = within(Duration::from_secs(3), || auth(&bystander).is_ok()).await;
    assert!(back.is_some(), "keys are accepted again once the index catches up: {:?}", auth(&bystander));
    assert!(matches!(auth(&doomed), Err(Error::Revoked(_))), "{:?}", auth(&doomed));
    println!(
        "every key refused {:?} after the checks began failing; accepted again {:?} after repair",
        refused.unwrap(),
        back.unwrap()
    );
    let _ = stop.send(());
    upkeep.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_revocation_the_index_cannot_apply_refuses_every_key_at_once_until_a_reload() {
    if sqlite_only("it edits the file's schema through a raw SQLite connection") {
        return;
    }
    // Arrange: a listener that revokes a key itself, and a trigger (made by
    // another connection) that leaves the revoked row unreadable, so the
    // revocation commits but cannot be applied to the index.
    let db = Db::new();
    let (_, listener) = db.open(3).await;
    let (stop, upkeep) = start_upkeep(&listener);
    let doomed = issue(&listener, GUILD, "doomed").await;
    let bystander = issue(&listener, GUILD, "bystander").await;
    let auth = |key: &IssuedKey| listener.authenticate(key.secret.expose(), anywhere());
    assert!(auth(&doomed).is_ok() && auth(&bystander).is_ok());
    let mut other = sqlx::SqliteConnection::connect(&db.url).await.expect("a raw connection");
    sqlx::query(
        "create trigger spoil_on_revoke after update of revoked_at on api_key begin \
         update api_key set scopes = 'not a scope' where api_key_id = new.api_key_id; end",
    )
    .execute(&mut other)
    .await
    .unwrap();

    // Act
    let revoked = listener.revoke(Some(GUILD), doomed.record.id.as_str(), &Actor::Cli).await;

    // Assert: the change failed to apply, so nothing is accepted, at once.
    assert!(matches!(revoked, Err(Error::Internal(_))), "{revoked:?}");
    assert!(matches!(auth(&doomed), Err(Error::IndexStale)), "the revoked key: {:?}", auth(&doomed));
    assert!(matches!(auth(&bystander), Err(Error::IndexStale)), "every key: {:?}", auth(&bystander));

    // Act: the row is readable again.
    sqlx::query("drop trigger spoil_on_revoke").execute(&mut other).await.unwrap();
    sqlx::query("update api_key set scopes = 'bans.read' where api_key_id = ?")
        .bind(doomed.record.id.as_str())
        .execute(&mut other)
        .await
        .unwrap();

    // Assert: a full reload brings the keys back, the revocation with them.
    let back = within(Duration::from_secs(3), || auth(&bystander).is_ok()).await;
    assert!(back.is_some(), "keys are accepted again after the reload: {:?}", auth(&bystander));
    assert!(matches!(auth(&doomed), Err(Error::Revoked(_))), "{:?}", auth(&doomed));
    assert!(listener.index_stats().full_loads >= 2, "a full reload, not a key-by-key catch-up");
    let _ = stop.send(());
    upkeep.await.unwrap();
}

#[tokio::test]
async fn refresh_index_reloads_only_after_another_instance_commits() {
    // Arrange
    let db = Db::new();
    let (_, cli) = db.open(3).await;
    let (_, listener) = db.open(3).await;
    let quiet = listener.refresh_index().await.unwrap();
    let key = issue(&cli, GUILD, "from the cli").await;
    let stale = listener.authenticate(key.secret.expose(), anywhere());

    // Act
    let reloaded = listener.refresh_index().await.unwrap();
    let fresh = listener.authenticate(key.secret.expose(), anywhere());
    let quiet_again = listener.refresh_index().await.unwrap();

    // Assert
    assert!(!quiet, "nothing was committed, nothing to reload");
    assert!(matches!(stale, Err(Error::NotFound(_))), "the index is memory; unknown until refreshed: {stale:?}");
    assert!(reloaded, "another instance committed; refresh must reload");
    assert!(fresh.is_ok(), "{fresh:?}");
    assert!(!quiet_again, "no commit since the last reload");
}

#[tokio::test]
async fn another_instances_changes_are_applied_key_by_key_without_a_full_reload() {
    // Arrange: keys made elsewhere, one of them already in use here.
    let db = Db::new();
    let (_, cli) = db.open(10).await;
    let (_, listener) = db.open(10).await;
    let (gone, plain, graced) =
        (issue(&cli, GUILD, "gone").await, issue(&cli, GUILD, "plain").await, issue(&cli, GUILD, "graced").await);
    assert!(listener.refresh_index().await.unwrap());
    let in_use = listener.authenticate(plain.secret.expose(), anywhere()).unwrap();
    let after_creates = listener.index_stats();

    // Act: revoke then delete one, rotate one without and one with grace.
    cli.revoke(None, gone.record.id.as_str(), &Actor::Cli).await.unwrap();
    cli.delete(None, gone.record.id.as_str(), &Actor::Cli).await.unwrap();
    let plain2 = cli.rotate(None, plain.record.id.as_str(), None, &Actor::Cli).await.unwrap();
    let graced2 =
        cli.rotate(None, graced.record.id.as_str(), Some(parse_grace("1h").unwrap()), &Actor::Cli).await.unwrap();
    assert!(listener.refresh_index().await.unwrap());
    let after_changes = listener.index_stats();
    // Another instance's last-used flush changes nothing the index holds.
    cli.authenticate(plain2.secret.expose(), anywhere()).unwrap();
    assert_eq!(cli.flush_usage().await.unwrap(), 1);
    let committed = listener.refresh_index().await.unwrap();
    let after_flush = listener.index_stats();

    // Assert
    assert_eq!(after_creates.full_loads, 1, "only the load at start: {after_creates:?}");
    assert_eq!(after_creates.keys_applied, 3, "{after_creates:?}");
    assert_eq!(after_changes.full_loads, 1, "{after_changes:?}");
    assert_eq!(after_changes.keys_applied, 6, "three keys changed: {after_changes:?}");
    if db::on_postgres() {
        assert!(!committed, "on PostgreSQL a last-used flush leaves the change log alone: {after_flush:?}");
    } else {
        assert!(committed, "the flush is another connection's commit");
    }
    assert_eq!(after_flush, after_changes, "a last-used flush applies nothing");
    let auth = |secret: &str| listener.authenticate(secret, anywhere());
    assert!(matches!(auth(gone.secret.expose()), Err(Error::NotFound(_))), "deleted elsewhere");
    assert!(matches!(auth(plain.secret.expose()), Err(Error::NotFound(_))), "rotated out elsewhere, no grace");
    let now_plain = auth(plain2.secret.expose()).expect("the new secret works");
    assert!(std::ptr::eq(in_use.key.limiter(), now_plain.key.limiter()), "the key keeps its budget");
    assert!(auth(graced.secret.expose()).is_ok() && auth(graced2.secret.expose()).is_ok(), "both during the grace");
    assert_eq!(listener.indexed_keys(), 3, "plain, graced and graced's previous secret");
}

#[tokio::test]
async fn a_change_log_that_cannot_say_what_changed_means_a_full_reload() {
    if sqlite_only("it edits the file's schema through a raw SQLite connection") {
        return;
    }
    use sqlx::Connection;
    // Arrange
    let db = Db::new();
    let (_, cli) = db.open(3).await;
    let (_, listener) = db.open(3).await;
    let key = issue(&cli, GUILD, "before").await;
    let mut raw = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let many = |n: u32| {
        format!(
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < {n}) \
             insert into key_change (api_key_id) select 'key_nosuchkey' || i from n"
        )
    };

    // Act: more entries than are applied one by one; then a few, of which
    // the oldest were dropped before the listener read them.
    sqlx::query(&many(3000)).execute(&mut raw).await.unwrap();
    listener.refresh_index().await.unwrap();
    let too_many = listener.index_stats();
    let (head,): (i64,) = sqlx::query_as("select max(seq) from key_change").fetch_one(&mut raw).await.unwrap();
    let later = issue(&cli, GUILD, "after").await;
    sqlx::query(&many(5)).execute(&mut raw).await.unwrap();
    sqlx::query("delete from key_change where seq <= ?").bind(head + 2).execute(&mut raw).await.unwrap();
    listener.refresh_index().await.unwrap();
    let dropped = listener.index_stats();
    sqlx::query(&many(12_000)).execute(&mut raw).await.unwrap();
    let (kept,): (i64,) = sqlx::query_as("select count(*) from key_change").fetch_one(&mut raw).await.unwrap();

    // Assert
    assert_eq!(too_many.full_loads, 2, "{too_many:?}");
    assert_eq!(dropped.full_loads, 3, "{dropped:?}");
    assert_eq!(dropped.keys_applied, too_many.keys_applied, "{dropped:?}");
    assert_eq!(kept, 10_000, "the log keeps its newest 10,000 entries");
    assert!(listener.authenticate(key.secret.expose(), anywhere()).is_ok());
    assert!(listener.authenticate(later.secret.expose(), anywhere()).is_ok());
}

#[tokio::test]
async fn rotate_without_grace_rejects_the_old_secret_at_once() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let old = service
        .issue(
            GUILD,
            draft(KeyRequest {
                name: "rotating",
                scopes: "bans.read roles.write",
                environment: Some("test"),
                expires_in: Some("30d"),
                rate_limit: Some(7),
                allowed_ips: Some("10.0.0.0/8"),
                allowed_roles: Some("1400000000000000004, <@&1400000000000000007>"),
                ..Default::default()
            }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    let inside = ip("10.1.2.3");

    // Act
    let new = service.rotate(Some(GUILD), old.record.id.as_str(), None, &Actor::User(ADMIN)).await.unwrap();

    // Assert
    let rejected = service.authenticate(old.secret.expose(), inside);
    assert!(matches!(rejected, Err(Error::NotFound(_))), "the old secret must stop at once: {rejected:?}");
    let accepted = service.authenticate(new.secret.expose(), inside).expect("the new secret works");
    assert_eq!(accepted.key.id, old.record.id, "same key, new secret");
    assert_ne!(new.secret.expose(), old.secret.expose());
    assert!(new.secret.expose().starts_with("gk_test_"), "rotation keeps the environment");
    assert_eq!(new.record.prefix, &new.secret.expose()[..12]);
    let (a, b) = (&old.record, &new.record);
    assert_eq!((&a.name, &a.scopes, a.environment), (&b.name, &b.scopes, b.environment));
    assert_eq!(
        (a.expires_at, a.rate_limit_per_minute, &a.allowed_ips, &a.allowed_roles),
        (b.expires_at, b.rate_limit_per_minute, &b.allowed_ips, &b.allowed_roles)
    );
    assert_eq!(b.allowed_roles.ids(), [1_400_000_000_000_000_004, 1_400_000_000_000_000_007]);
    assert_eq!(b.previous_secret_expires_at, None);
    assert_eq!(service.list(GUILD).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rotate_with_grace_keeps_the_old_secret_until_the_grace_ends() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let old = issue(&service, GUILD, "rotating").await;
    let grace = parse_grace("2s").unwrap();
    let started = Utc::now();

    // Act
    let new = service.rotate(Some(GUILD), &old.record.prefix, Some(grace), &Actor::Cli).await.unwrap();
    let old_during = service.authenticate(old.secret.expose(), anywhere());
    let new_during = service.authenticate(new.secret.expose(), anywhere());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let old_after = service.authenticate(old.secret.expose(), anywhere());
    let new_after = service.authenticate(new.secret.expose(), anywhere());

    // Assert
    assert!(old_during.is_ok(), "the old secret works during the grace period: {old_during:?}");
    assert!(new_during.is_ok(), "{new_during:?}");
    assert!(matches!(old_after, Err(Error::NotFound(_))), "the old secret must stop after the grace: {old_after:?}");
    assert!(new_after.is_ok(), "{new_after:?}");
    let until = new.record.previous_secret_expires_at.expect("the record says when the old secret stops");
    let offset = until - started;
    assert!(
        offset >= chrono::Duration::milliseconds(1990) && offset <= chrono::Duration::milliseconds(3000),
        "old secret valid until {until}, rotation started {started}"
    );
}

#[tokio::test]
async fn revoking_during_a_grace_period_stops_both_secrets() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let old = issue(&service, GUILD, "rotating").await;
    let new =
        service.rotate(None, old.record.id.as_str(), Some(parse_grace("1h").unwrap()), &Actor::Cli).await.unwrap();

    // Act
    service.revoke(None, old.record.id.as_str(), &Actor::Cli).await.unwrap();

    // Assert
    assert!(service.authenticate(old.secret.expose(), anywhere()).is_err(), "the old secret must stop");
    let new_result = service.authenticate(new.secret.expose(), anywhere());
    assert!(matches!(new_result, Err(Error::Revoked(_))), "{new_result:?}");
}

#[tokio::test]
async fn rotate_refuses_revoked_expired_and_unknown_keys() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let revoked = issue(&service, GUILD, "revoked").await;
    service.revoke(None, revoked.record.id.as_str(), &Actor::Cli).await.unwrap();
    let expiring = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "expiring", scopes: "bans.read", expires_in: Some("1s"), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    sleep_until_after(expiring.record.expires_at.unwrap()).await;
    let events_before = events(&service, GUILD).await.len();

    // Act
    let of_revoked = service.rotate(None, revoked.record.id.as_str(), None, &Actor::Cli).await;
    let of_expired = service.rotate(None, expiring.record.id.as_str(), None, &Actor::Cli).await;
    let of_unknown = service.rotate(None, "key_0000000000000000", None, &Actor::Cli).await;

    // Assert
    assert!(matches!(of_revoked, Err(Error::Revoked(_))), "{of_revoked:?}");
    assert!(matches!(of_expired, Err(Error::Expired(_))), "{of_expired:?}");
    assert!(matches!(of_unknown, Err(Error::NotFound(_))), "{of_unknown:?}");
    assert_eq!(events(&service, GUILD).await.len(), events_before, "a refused rotation writes no event");
}

#[test]
fn grace_periods_are_at_most_seven_days() {
    assert_eq!(parse_grace("7d").unwrap().seconds(), 7 * 86_400);
    assert_eq!(parse_grace("10m").unwrap().seconds(), 600);
    for bad in ["8d", "169h", "0s", "-1d", "abc", ""] {
        let err = parse_grace(bad).unwrap_err();
        assert_eq!(err.field, "grace", "{bad:?}");
    }
}

#[tokio::test]
async fn delete_refuses_an_active_key_and_removes_a_revoked_one() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let key = issue(&service, GUILD, "doomed").await;
    let id = key.record.id.clone();

    // Act
    let while_active = service.delete(Some(GUILD), id.as_str(), &Actor::Cli).await;
    service.revoke(Some(GUILD), id.as_str(), &Actor::Cli).await.unwrap();
    let after_revoke = service.delete(Some(GUILD), &key.record.prefix, &Actor::Cli).await;

    // Assert
    assert!(matches!(while_active, Err(Error::StillActive(_))), "{while_active:?}");
    assert!(after_revoke.is_ok(), "{after_revoke:?}");
    assert!(service.list(GUILD).await.unwrap().is_empty(), "the key is gone");
    let found = service.find(Some(GUILD), id.as_str()).await;
    assert!(matches!(found, Err(Error::NotFound(_))), "{found:?}");
    let verified = service.authenticate(key.secret.expose(), anywhere());
    assert!(matches!(verified, Err(Error::NotFound(_))), "{verified:?}");
    let again = service.delete(Some(GUILD), id.as_str(), &Actor::Cli).await;
    assert!(matches!(again, Err(Error::NotFound(_))), "{again:?}");
}

#[tokio::test]
async fn an_expired_key_can_be_deleted_without_revoking_it() {
    let db = Db::new();
    let service = db.service().await;
    let key = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "short", scopes: "bans.read", expires_in: Some("1s"), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    sleep_until_after(key.record.expires_at.unwrap()).await;

    let deleted = service.delete(Some(GUILD), key.record.id.as_str(), &Actor::Cli).await;

    assert!(deleted.is_ok(), "{deleted:?}");
    assert!(service.list(GUILD).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Issue and find
// ---------------------------------------------------------------------------

#[tokio::test]
async fn issue_returns_a_well_formed_secret_and_stores_the_draft() {
    // Arrange
    let db = Db::new();
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let mut cfg = config(3);
    cfg.default_rate_limit_per_minute = 42;
    let service = KeyService::new(store.clone(), cfg).await.unwrap();
    let shape = regex::Regex::new(r"^gk_(live|test)_[0-9A-Za-z]{38}$").unwrap();
    let started = Utc::now();

    // Act
    let live = service.issue(GUILD, named("  live key "), &Actor::User(ADMIN)).await.unwrap();
    let test = service
        .issue(
            GUILD,
            draft(KeyRequest {
                name: "test key",
                scopes: "guild.read,audit.read",
                environment: Some("test"),
                expires_in: Some("12h"),
                rate_limit: Some(5),
                allowed_ips: Some("2001:db8::/32"),
                ..Default::default()
            }),
            &Actor::Cli,
        )
        .await
        .unwrap();

    // Assert
    assert!(shape.is_match(live.secret.expose()) && live.secret.expose().starts_with("gk_live_"));
    assert!(shape.is_match(test.secret.expose()) && test.secret.expose().starts_with("gk_test_"));
    assert_eq!(token::parse("gk", live.secret.expose()), Ok(Environment::Live), "the checksum is valid");
    let l = &live.record;
    assert_eq!(l.name, "live key", "names are trimmed");
    assert_eq!(l.prefix, &live.secret.expose()[..12]);
    assert!(l.id.as_str().starts_with("key_"));
    assert_eq!(l.created_by, ADMIN.to_string());
    assert_eq!(l.rate_limit_per_minute, 42, "the configured default rate limit");
    assert_eq!((l.expires_at, l.revoked_at, l.last_used_at), (None, None, None));
    assert!(l.allowed_ips.is_empty());
    assert!(l.created_at >= started - chrono::Duration::seconds(1));
    let t = &test.record;
    assert_eq!(t.created_by, "cli");
    assert_eq!(t.environment, Environment::Test);
    assert_eq!(t.scopes.names(), ["guild.read", "audit.read"]);
    assert_eq!(t.rate_limit_per_minute, 5);
    assert_eq!(t.allowed_ips.entries(), ["2001:db8::/32"]);
    assert_eq!(t.expires_at.map(|at| at - t.created_at), Some(chrono::Duration::hours(12)));
    let stored = store.get_key(&t.id).await.unwrap().expect("stored");
    assert_eq!((stored.name, stored.prefix), (t.name.clone(), t.prefix.clone()));
    assert!(service.authenticate(test.secret.expose(), ip("2001:db8::1")).unwrap().is_test());
}

#[tokio::test]
async fn find_resolves_a_key_by_id_prefix_or_name_within_its_guild() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let key = issue(&service, GUILD, "game server").await;
    issue(&service, GUILD, "dashboard").await;
    let id = key.record.id.as_str().to_owned();
    let prefix = key.record.prefix.clone();

    for (how, reference) in [
        ("id", id.clone()),
        ("prefix", prefix.clone()),
        ("name", "game server".to_owned()),
        ("id with spaces", format!("  {id} ")),
    ] {
        // Across all guilds, a name needs its guild (see below).
        let guilds: &[Option<u64>] = if how == "name" { &[Some(GUILD)] } else { &[Some(GUILD), None] };
        for &guild in guilds {
            // Act
            let found = service.find(guild, &reference).await;

            // Assert
            let found = found.unwrap_or_else(|e| panic!("by {how} in {guild:?}: {e:?}"));
            assert_eq!(found.id, key.record.id, "by {how} in {guild:?}");
        }
        let elsewhere = service.find(Some(OTHER_GUILD), &reference).await;
        assert!(matches!(elsewhere, Err(Error::NotFound(_))), "by {how} from another guild: {elsewhere:?}");
    }
    let unknown = service.find(Some(GUILD), "no such key").await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    let unknown_anywhere = service.find(None, "no such key").await;
    assert!(matches!(unknown_anywhere, Err(Error::NotFound(_))), "{unknown_anywhere:?}");
    let name_anywhere = service.find(None, "game server").await;
    match name_anywhere {
        Err(Error::GuildNeeded { guilds, .. }) => assert_eq!(guilds, [GUILD], "the guild to choose"),
        other => panic!("a name across all guilds needs its guild, got {other:?}"),
    }
}

#[tokio::test]
async fn find_reports_an_ambiguous_name_and_prefers_the_only_active_match() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let first = issue(&service, GUILD, "twin").await;
    let second = issue(&service, GUILD, "twin").await;
    issue(&service, OTHER_GUILD, "twin").await;

    // Act
    let both_active = service.find(Some(GUILD), "twin").await;
    let any_guild = service.find(None, "twin").await;
    service.revoke(Some(GUILD), first.record.id.as_str(), &Actor::Cli).await.unwrap();
    let one_active = service.find(Some(GUILD), "twin").await;
    let by_id = service.find(Some(GUILD), first.record.id.as_str()).await;

    // Assert
    match both_active {
        Err(Error::Ambiguous { candidates, .. }) => {
            assert!(candidates.contains(first.record.id.as_str()), "{candidates}");
            assert!(candidates.contains(second.record.id.as_str()), "{candidates}");
        }
        other => panic!("two active keys named twin must be ambiguous, got {other:?}"),
    }
    match any_guild {
        Err(Error::GuildNeeded { guilds, .. }) => assert_eq!(guilds, [GUILD, OTHER_GUILD], "both guilds listed"),
        other => panic!("a name across all guilds needs its guild, got {other:?}"),
    }
    assert_eq!(one_active.expect("the active twin").id, second.record.id);
    assert_eq!(by_id.expect("an id is never ambiguous").id, first.record.id);
}

#[tokio::test]
async fn revoke_and_delete_of_an_ambiguous_or_unknown_key_change_nothing() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let a = issue(&service, GUILD, "twin").await;
    let b = issue(&service, GUILD, "twin").await;
    let before = events(&service, GUILD).await.len();

    // Act
    let revoke = service.revoke(Some(GUILD), "twin", &Actor::Cli).await;
    let revoke_unknown = service.revoke(Some(GUILD), "key_0000000000000000", &Actor::Cli).await;
    let delete_unknown = service.delete(Some(GUILD), "gk_live_ZZZZ", &Actor::Cli).await;

    // Assert
    assert!(matches!(revoke, Err(Error::Ambiguous { .. })), "{revoke:?}");
    assert!(matches!(revoke_unknown, Err(Error::NotFound(_))), "{revoke_unknown:?}");
    assert!(matches!(delete_unknown, Err(Error::NotFound(_))), "{delete_unknown:?}");
    assert!(service.authenticate(a.secret.expose(), anywhere()).is_ok());
    assert!(service.authenticate(b.secret.expose(), anywhere()).is_ok());
    assert_eq!(events(&service, GUILD).await.len(), before);
}

// ---------------------------------------------------------------------------
// Audit events
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_change_writes_exactly_one_audit_event_naming_its_actor() {
    let db = Db::new();
    let service = db.service().await;
    let admin = Actor::User(ADMIN);
    let admin_label = format!("<@{ADMIN}>");
    let mut expected = 0;

    /// Asserts exactly one new event and returns it.
    async fn one_new(service: &KeyService, expected: &mut usize, action: Action, actor: &str) -> AuditEvent {
        *expected += 1;
        let log = events(service, GUILD).await;
        assert_eq!(log.len(), *expected, "{action:?} must write exactly one event: {log:#?}");
        let newest = log.into_iter().next().unwrap();
        assert_eq!(newest.action, action, "{newest:#?}");
        assert_eq!(newest.actor, actor, "{newest:#?}");
        newest
    }

    // Created by an admin through a slash command.
    let key = service.issue(GUILD, named("audited"), &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyCreated, &admin_label).await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    assert_eq!(e.key_name.as_deref(), Some("audited"));
    assert_eq!(e.key_prefix.as_deref(), Some(key.record.prefix.as_str()));
    assert!(!e.test);

    // Rotated by the operator CLI.
    let rotated = service.rotate(None, key.record.id.as_str(), None, &Actor::Cli).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyRotated, "The operator CLI").await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    assert_eq!(e.key_prefix.as_deref(), Some(rotated.record.prefix.as_str()), "names the key by its new prefix");

    // A write made through the API with the key.
    let caller = service.authenticate(rotated.secret.expose(), anywhere()).unwrap();
    service.record_api_write(&caller, Action::BanAdded, serde_json::json!({"user_id": "5"})).await.unwrap();
    let e = one_new(&service, &mut expected, Action::BanAdded, "An API key").await;
    assert_eq!(e.key_name.as_deref(), Some("audited"));
    assert_eq!(e.key_prefix.as_deref(), Some(rotated.record.prefix.as_str()));
    assert!(!e.test, "a live key's write is not a test");

    // A test key's dry run is marked as a test.
    let test_key = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "dry", scopes: "bans.write", environment: Some("test"), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    one_new(&service, &mut expected, Action::KeyCreated, "The operator CLI").await;
    let test_caller = service.authenticate(test_key.secret.expose(), anywhere()).unwrap();
    service.record_api_write(&test_caller, Action::RoleAdded, serde_json::json!({})).await.unwrap();
    let e = one_new(&service, &mut expected, Action::RoleAdded, "An API key").await;
    assert!(e.test, "a test key's write is marked as a test");

    // Audit channel set and turned off by an admin.
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::AuditChannelSet, &admin_label).await;
    assert_eq!(e.key_id, None);
    assert_eq!(e.details["channel_id"], CHANNEL.to_string());
    assert_eq!(service.audit_channel(GUILD).await.unwrap(), Some(CHANNEL));
    service.set_audit_channel(GUILD, None, &admin).await.unwrap();
    one_new(&service, &mut expected, Action::AuditChannelSet, &admin_label).await;
    assert_eq!(service.audit_channel(GUILD).await.unwrap(), None);

    // Revoked by an admin, deleted by the CLI.
    service.revoke(Some(GUILD), &rotated.record.prefix, &admin).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyRevoked, &admin_label).await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
    service.delete(None, key.record.id.as_str(), &Actor::Cli).await.unwrap();
    let e = one_new(&service, &mut expected, Action::KeyDeleted, "The operator CLI").await;
    assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));

    // Refused changes write nothing.
    let _ = service.revoke(None, key.record.id.as_str(), &admin).await.unwrap_err();
    let _ = service.delete(None, test_key.record.id.as_str(), &admin).await.unwrap_err();
    let _ = service.rotate(None, "key_0000000000000000", None, &admin).await.unwrap_err();
    let log = events(&service, GUILD).await;
    assert_eq!(log.len(), expected, "refused changes must not be audited: {log:#?}");

    // No event holds a secret, and other guilds see none of them.
    let all = serde_json::to_string(&log).unwrap();
    for secret in [&key.secret, &rotated.secret, &test_key.secret] {
        assert!(!all.contains(&secret.expose()[8..40]), "a secret in the audit log: {all}");
    }
    assert!(events(&service, OTHER_GUILD).await.is_empty());
}

#[tokio::test]
async fn setting_the_audit_channel_after_posts_were_off_records_what_happened_meanwhile() {
    // Arrange: posts on, then off, then twelve changes.
    let db = Db::new();
    let service = db.service().await;
    let admin = Actor::User(42);
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();
    service.set_audit_channel(GUILD, None, &admin).await.unwrap();
    let mut last = None;
    for i in 0..6 {
        let key = issue(&service, GUILD, &format!("k{i}")).await;
        service.revoke(Some(GUILD), key.record.id.as_str(), &Actor::Cli).await.unwrap();
        last = Some(key);
    }
    issue(&service, OTHER_GUILD, "elsewhere").await;

    // Act
    service.set_audit_channel(GUILD, Some(CHANNEL + 1), &admin).await.unwrap();
    service.set_audit_channel(GUILD, Some(CHANNEL), &admin).await.unwrap();

    // Assert
    let log = events(&service, GUILD).await;
    let (switched, back_on, off) = (&log[0].details, &log[1].details, &log[14].details);
    assert_eq!(off["channel_id"], serde_json::Value::Null);
    assert_eq!(off["previous_channel_id"], CHANNEL.to_string(), "the off event names the channel it turns off");
    let summary = &back_on["while_off"];
    assert_eq!(summary["count"], 12, "this guild's changes only: {summary}");
    assert_eq!(summary["turned_off_by"], "<@42>");
    assert_eq!(summary["since"], serde_json::to_value(log[14].at).unwrap());
    let recent = summary["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 10, "the latest ten");
    assert_eq!(recent[0]["action"], "key.revoked");
    assert_eq!(recent[0]["key_name"], "k5");
    assert_eq!(recent[0]["key_prefix"], last.unwrap().record.prefix.as_str());
    assert_eq!(recent[9]["key_name"], "k1", "newest first");
    assert!(switched.get("while_off").is_none(), "a switch from one channel to another hid nothing: {switched}");
    assert_eq!(switched["previous_channel_id"], (CHANNEL + 1).to_string());
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    for channel in 1..=5 {
        service.set_audit_channel(GUILD, Some(channel), &Actor::Cli).await.unwrap();
    }

    // Act
    let page = service.audit_log(GUILD, 2, None).await.unwrap();
    let next = service.audit_log(GUILD, 2, Some(page[1].id)).await.unwrap();
    let last = service.audit_log(GUILD, 100, Some(next[1].id)).await.unwrap();

    // Assert
    let channels = |events: &[AuditEvent]| -> Vec<String> {
        events.iter().map(|e| e.details["channel_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(channels(&page), ["5", "4"]);
    assert_eq!(channels(&next), ["3", "2"]);
    assert_eq!(channels(&last), ["1"]);
    assert_eq!(service.audit_log(GUILD, 0, None).await.unwrap().len(), 1, "a limit below 1 is clamped to 1");
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

#[tokio::test]
async fn authenticate_rejects_malformed_tokens() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let good = issue(&service, GUILD, "real").await.secret.expose().to_owned();
    let last = good.chars().last().unwrap();
    let wrong_checksum = format!("{}{}", &good[..45], if last == 'A' { 'B' } else { 'A' });
    let mistyped = format!("{}{}{}", &good[..20], if &good[20..21] == "x" { "y" } else { "x" }, &good[21..]);
    let cases = [
        ("empty", String::new()),
        ("a Bearer header", format!("Bearer {good}")),
        ("wrong prefix", good.replacen("gk_", "xk_", 1)),
        ("no prefix", good[3..].to_owned()),
        ("unknown environment", good.replacen("_live_", "_prod_", 1)),
        ("truncated", good[..45].to_owned()),
        ("one character too many", format!("{good}0")),
        ("a character outside base62", format!("{}-{}", &good[..20], &good[21..])),
        ("surrounding white space", format!(" {good} ")),
        ("wrong checksum", wrong_checksum),
        ("a mistyped character", mistyped),
    ];

    for (what, token) in &cases {
        // Act
        let result = service.authenticate(token, anywhere());

        // Assert
        assert!(matches!(result, Err(Error::Malformed(_))), "{what}: {token:?} gave {result:?}");
    }
    let unknown = token::generate("gk", Environment::Live);
    let result = service.authenticate(unknown.expose(), anywhere());
    assert!(matches!(result, Err(Error::NotFound(_))), "a well-formed unknown key is not malformed: {result:?}");
    assert!(service.authenticate(&good, anywhere()).is_ok(), "the genuine key still works");
}

#[tokio::test]
async fn authenticate_checks_ipv4_and_ipv6_allow_lists() {
    // Arrange
    let db = Db::new();
    let service = db.service().await;
    let fenced = service
        .issue(
            GUILD,
            draft(KeyRequest {
                name: "fenced",
                scopes: "bans.read",
                allowed_ips: Some("203.0.113.7, 10.0.0.0/8 2001:db8::/32"),
                ..Default::default()
            }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    let open = issue(&service, GUILD, "open").await;
    let cases = [
        ("203.0.113.7", true),
        ("203.0.113.8", false),
        ("10.0.0.1", true),
        ("10.255.255.255", true),
        ("11.0.0.1", false),
        ("::ffff:10.1.2.3", true),
        ("2001:db8::1", true),
        ("2001:db8:ffff::1", true),
        ("2001:db9::1", false),
        ("::1", false),
        ("127.0.0.1", false),
    ];

    for (address, allowed) in cases {
        // Act
        let result = service.authenticate(fenced.secret.expose(), ip(address));

        // Assert
        if allowed {
            assert!(result.is_ok(), "{address} should be allowed: {result:?}");
        } else {
            assert!(matches!(result, Err(Error::IpNotAllowed)), "{address} should be refused: {result:?}");
        }
        assert!(service.authenticate(open.secret.expose(), ip(address)).is_ok(), "an empty list allows {address}");
    }
}

#[tokio::test]
async fn authorize_checks_the_guild_and_the_scope() {
    let db = Db::new();
    let service = db.service().await;
    let key = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "scoped", scopes: "bans.read,roles.write", ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();

    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();

    assert!(caller.authorize(GUILD, Scope::BansRead).is_ok());
    assert!(caller.authorize(GUILD, Scope::RolesWrite).is_ok());
    assert!(matches!(caller.authorize(GUILD, Scope::BansWrite), Err(Error::InsufficientScope(Scope::BansWrite))));
    assert!(matches!(caller.authorize(OTHER_GUILD, Scope::BansRead), Err(Error::GuildMismatch)));
}

#[tokio::test]
async fn authenticate_works_from_memory_after_the_database_is_closed() {
    // Arrange
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let live = issue(&service, GUILD, "live").await;
    let revoked = issue(&service, GUILD, "revoked").await;
    service.revoke(None, revoked.record.id.as_str(), &Actor::Cli).await.unwrap();

    // Act
    store.close().await;
    let results = [
        service.authenticate(live.secret.expose(), anywhere()),
        service.authenticate(revoked.secret.expose(), anywhere()),
        service.authenticate(token::generate("gk", Environment::Live).expose(), anywhere()),
    ];

    // Assert
    assert!(results[0].is_ok(), "a valid key needs no database: {:?}", results[0]);
    assert!(matches!(results[1], Err(Error::Revoked(_))), "{:?}", results[1]);
    assert!(matches!(results[2], Err(Error::NotFound(_))), "{:?}", results[2]);
    assert!(service.list(GUILD).await.is_err(), "the database really is closed");
}

#[tokio::test]
async fn flushes_from_several_instances_add_up_and_never_move_last_used_backwards() {
    // Arrange: one key used on two instances, the earlier use on the one
    // that flushes last.
    let db = Db::new();
    let (store, early) = db.open(3).await;
    let (_, late) = db.open(3).await;
    let key = issue(&early, GUILD, "shared").await;
    late.refresh_index().await.unwrap();
    early.authenticate(key.secret.expose(), anywhere()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..2 {
        late.authenticate(key.secret.expose(), anywhere()).unwrap();
    }

    // Act
    assert_eq!(late.flush_usage().await.unwrap(), 1);
    let after_late = store.get_key(&key.record.id).await.unwrap().unwrap();
    assert_eq!(early.flush_usage().await.unwrap(), 1);
    let after_both = store.get_key(&key.record.id).await.unwrap().unwrap();

    // Assert
    assert_eq!(after_both.use_count, 3, "both instances' uses count");
    assert_eq!(after_both.last_used_at, after_late.last_used_at, "the earlier flush-last use does not win");
}

#[tokio::test]
async fn last_used_times_are_written_only_when_flushed() {
    // Arrange
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "busy").await;
    let idle = issue(&service, GUILD, "idle").await;
    let started = Utc::now();

    // Act
    for _ in 0..3 {
        service.authenticate(key.secret.expose(), anywhere()).unwrap();
    }
    let row_before = store.get_key(&key.record.id).await.unwrap().unwrap();
    let listed_before = service.find(Some(GUILD), key.record.id.as_str()).await.unwrap();
    let flushed = service.flush_usage().await.unwrap();
    let row_after = store.get_key(&key.record.id).await.unwrap().unwrap();
    let flushed_again = service.flush_usage().await.unwrap();

    // Assert
    assert_eq!(row_before.last_used_at, None, "no database write per request");
    assert_eq!(row_before.use_count, 0);
    assert!(listed_before.last_used_at.is_some(), "reads fold in the pending use");
    assert_eq!(listed_before.use_count, 3);
    assert_eq!(flushed, 1, "one key had pending uses");
    let at = row_after.last_used_at.expect("written by the flush");
    assert!(at >= started - chrono::Duration::milliseconds(1) && at <= Utc::now(), "last used at {at}");
    assert_eq!(row_after.use_count, 3);
    assert_eq!(flushed_again, 0, "nothing left to flush");
    let idle_row = store.get_key(&idle.record.id).await.unwrap().unwrap();
    assert_eq!((idle_row.last_used_at, idle_row.use_count), (None, 0), "an unused key is untouched");
}

#[tokio::test]
async fn failed_authentications_are_not_counted_as_uses() {
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let fenced = service
        .issue(
            GUILD,
            draft(KeyRequest {
                name: "fenced",
                scopes: "bans.read",
                allowed_ips: Some("10.0.0.0/8"),
                ..Default::default()
            }),
            &Actor::Cli,
        )
        .await
        .unwrap();

    assert!(service.authenticate(fenced.secret.expose(), anywhere()).is_err());
    service.flush_usage().await.unwrap();

    let row = store.get_key(&fenced.record.id).await.unwrap().unwrap();
    assert_eq!((row.last_used_at, row.use_count), (None, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_migrating_a_fresh_database_at_the_same_time_all_succeed() {
    for round in 0..50 {
        // Arrange: eight "processes" opening one fresh file.
        let db = Db::new();
        let mut stores = Vec::new();
        for _ in 0..8 {
            stores.push(Store::connect(&db.url).await.expect("connect"));
        }

        // Act
        let tasks: Vec<_> = stores.iter().cloned().map(|s| tokio::spawn(async move { s.migrate().await })).collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task panicked"));
        }

        // Assert
        for result in &results {
            assert!(result.is_ok(), "round {round}: a concurrent migration failed: {result:?}");
        }
        let service = KeyService::new(stores[0].clone(), config(3)).await.expect("the schema is usable");
        assert!(service.list(GUILD).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_suspended_key_is_refused_here_and_in_another_instance_until_resumed_and_keeps_its_place() {
    // Arrange: two instances on one database, a limit of two keys.
    let db = Db::new();
    let (_, admin) = db.open(2).await;
    let (_, listener) = db.open(2).await;
    let key = issue(&admin, GUILD, "game").await;
    issue(&admin, GUILD, "second").await;
    assert!(listener.refresh_index().await.unwrap());
    listener.authenticate(key.secret.expose(), anywhere()).expect("active");

    // Act
    let suspended = admin
        .set_suspended(Some(GUILD), "game", true, &Actor::User(ADMIN), serde_json::json!({"reason": "leak?"}))
        .await
        .unwrap();

    // Assert: refused at once here, within a refresh there, and still
    // holding its place (resuming must not go over the limit).
    assert_eq!(suspended.status(Utc::now()), KeyStatus::Suspended);
    let here = admin.authenticate(key.secret.expose(), anywhere());
    assert!(matches!(here, Err(Error::Suspended(_))), "{here:?}");
    assert!(listener.refresh_index().await.unwrap());
    let there = listener.authenticate(key.secret.expose(), anywhere());
    assert!(matches!(there, Err(Error::Suspended(_))), "{there:?}");
    assert!(matches!(admin.issue(GUILD, named("third"), &Actor::Cli).await, Err(Error::LimitReached { max: 2 })));
    let again = admin.set_suspended(Some(GUILD), "game", true, &Actor::Cli, serde_json::json!({})).await;
    assert!(matches!(again, Err(Error::Suspended(_))), "{again:?}");
    assert!(matches!(admin.delete(Some(GUILD), "game", &Actor::Cli).await, Err(Error::StillActive(_))));

    let resumed = admin.set_suspended(Some(GUILD), "game", false, &Actor::Cli, serde_json::json!({})).await.unwrap();
    assert_eq!(resumed.status(Utc::now()), KeyStatus::Active);
    assert!(listener.refresh_index().await.unwrap());
    listener.authenticate(key.secret.expose(), anywhere()).expect("the same secret works again");
    let twice = admin.set_suspended(Some(GUILD), "game", false, &Actor::Cli, serde_json::json!({})).await;
    assert!(matches!(twice, Err(Error::NotSuspended(_))), "{twice:?}");

    // A revoked key can be neither suspended nor resumed.
    admin.revoke(Some(GUILD), "game", &Actor::Cli).await.unwrap();
    let revoked =
        admin.set_suspended(Some(GUILD), key.record.id.as_str(), true, &Actor::Cli, serde_json::json!({})).await;
    assert!(matches!(revoked, Err(Error::Revoked(_))), "{revoked:?}");
    let actions: Vec<String> =
        admin.audit_log(GUILD, 100, None).await.unwrap().iter().map(|e| e.action.as_str().to_owned()).collect();
    assert_eq!(actions[..3], ["key.revoked", "key.resumed", "key.suspended"], "{actions:?}");
}

// ---------------------------------------------------------------------------
// Expiry reminders
// ---------------------------------------------------------------------------

/// A key of `guild` that expires in `ttl` (e.g. `6d`, `12h`).
async fn expiring(service: &KeyService, guild: u64, name: &str, ttl: &str) -> IssuedKey {
    service
        .issue(
            guild,
            draft(KeyRequest { name, scopes: "bans.read", expires_in: Some(ttl), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap_or_else(|e| panic!("issue {name:?}: {e}"))
}

/// A guild's expiry reminders, oldest first: (key name, "7 days" or "1 day").
async fn reminders(service: &KeyService, guild: u64) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = events(service, guild)
        .await
        .into_iter()
        .filter(|e| e.action == Action::KeyExpiring)
        .map(|e| (e.key_name.unwrap_or_default(), e.details["within"].as_str().unwrap_or_default().to_owned()))
        .collect();
    found.reverse();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(k, w)| ((*k).to_owned(), (*w).to_owned())).collect()
}

#[tokio::test]
async fn each_expiry_threshold_is_announced_once_per_key_as_time_passes() {
    // Arrange: keys expiring in 10 days, 6 days, 12 hours and one already
    // expired (at `now`, a few seconds on), plus a revoked one and a
    // suspended one within the week.
    let db = Db::new();
    let (_, service) = db.open(10).await;
    let ten = expiring(&service, GUILD, "ten days", "10d").await;
    let six = expiring(&service, GUILD, "six days", "6d").await;
    let half = expiring(&service, GUILD, "twelve hours", "12h").await;
    expiring(&service, GUILD, "gone", "1s").await;
    expiring(&service, GUILD, "revoked", "5d").await;
    service.revoke(Some(GUILD), "revoked", &Actor::Cli).await.unwrap();
    expiring(&service, GUILD, "suspended", "3d").await;
    service.set_suspended(Some(GUILD), "suspended", true, &Actor::Cli, serde_json::json!({})).await.unwrap();
    let now = Utc::now() + chrono::Duration::seconds(5);
    let day = chrono::Duration::days(1);
    let hour = chrono::Duration::hours(1);

    // Act and assert, step by step through 11 days.
    assert_eq!(service.send_expiry_reminders(now).await.unwrap(), 3, "6 days, 12 hours and the suspended key");
    assert_eq!(
        reminders(&service, GUILD).await,
        pairs(&[("twelve hours", "1 day"), ("suspended", "7 days"), ("six days", "7 days")]),
        "soonest expiry first"
    );
    assert_eq!(service.send_expiry_reminders(now).await.unwrap(), 0, "the same check again announces nothing");
    assert_eq!(service.send_expiry_reminders(now + chrono::Duration::minutes(1)).await.unwrap(), 0);
    // A restart: a new instance on the same database remembers.
    let (_, restarted) = db.open(10).await;
    assert_eq!(restarted.send_expiry_reminders(now + chrono::Duration::minutes(2)).await.unwrap(), 0);
    // A rotation keeps the key (and what it was told): no second "7 days".
    let rotated = service.rotate(Some(GUILD), "six days", None, &Actor::Cli).await.unwrap();
    assert_eq!(service.send_expiry_reminders(now + hour).await.unwrap(), 0);

    assert_eq!(restarted.send_expiry_reminders(now + day * 2 + hour).await.unwrap(), 1, "suspended, under 1 day");
    assert_eq!(restarted.send_expiry_reminders(now + day * 4).await.unwrap(), 1, "ten days, now 6 days away");
    assert_eq!(restarted.send_expiry_reminders(now + day * 4 + hour).await.unwrap(), 0);
    assert_eq!(service.send_expiry_reminders(now + day * 5 + hour).await.unwrap(), 1, "six days, now under 1 day");
    assert_eq!(service.send_expiry_reminders(now + day * 9 + hour).await.unwrap(), 1, "ten days, now under 1 day");
    for later in [day * 9 + hour * 2, day * 11, day * 30] {
        assert_eq!(service.send_expiry_reminders(now + later).await.unwrap(), 0, "{later}");
    }

    let all = reminders(&service, GUILD).await;
    assert_eq!(
        all,
        pairs(&[
            ("twelve hours", "1 day"),
            ("suspended", "7 days"),
            ("six days", "7 days"),
            ("suspended", "1 day"),
            ("ten days", "7 days"),
            ("six days", "1 day"),
            ("ten days", "1 day"),
        ]),
        "each threshold once per key; none for the expired or the revoked key, no \"7 days\" after \"1 day\""
    );
    let entries: Vec<AuditEvent> =
        events(&service, GUILD).await.into_iter().filter(|e| e.action == Action::KeyExpiring).collect();
    for e in &entries {
        assert_eq!((e.actor.as_str(), e.actor_kind.as_str()), ("guildkey", "system"));
        assert!(!e.test);
        let key = [&ten, &six, &half].into_iter().find(|k| Some(k.record.name.as_str()) == e.key_name.as_deref());
        if let Some(key) = key {
            assert_eq!(e.key_id.as_deref(), Some(key.record.id.as_str()));
            let expires: chrono::DateTime<Utc> = serde_json::from_value(e.details["expires_at"].clone()).unwrap();
            assert_eq!(Some(expires), key.record.expires_at, "{e:?}");
        }
    }
    let six_days_later =
        entries.iter().find(|e| e.key_name.as_deref() == Some("six days") && e.details["within"] == "1 day");
    assert_eq!(
        six_days_later.and_then(|e| e.key_prefix.as_deref()),
        Some(rotated.record.prefix.as_str()),
        "the current prefix"
    );
    assert_eq!(service.audit_log(OTHER_GUILD, 100, None).await.unwrap().len(), 0, "nothing for another guild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_checking_at_once_announce_each_reminder_once() {
    // Arrange: two instances on one database, twelve keys in three guilds
    // expiring in 30, 40, ... 140 hours.
    let db = Db::new();
    let (_, first) = db.open(10).await;
    let (_, second) = db.open(10).await;
    let guilds = [GUILD, OTHER_GUILD, 555_555_555_555_555_555];
    for i in 0..12 {
        let ttl = format!("{}h", 30 + i * 10);
        expiring(if i % 2 == 0 { &first } else { &second }, guilds[i % 3], &format!("key {i}"), &ttl).await;
    }
    let now = Utc::now() + chrono::Duration::seconds(1);
    let later = now + chrono::Duration::minutes(30 * 60 + 30);

    // Act: at each moment, each instance checks twice, all four at once.
    let mut counts = Vec::new();
    for at in [now, now, now + chrono::Duration::minutes(1), later, later] {
        let calls: Vec<_> = [&first, &second, &first, &second]
            .into_iter()
            .map(|service| {
                let service = service.clone();
                tokio::spawn(async move { service.send_expiry_reminders(at).await })
            })
            .collect();
        let mut total = 0;
        for call in calls {
            total += call.await.expect("task").expect("check");
        }
        counts.push(total);
    }

    // Assert: every key hears "7 days" once; 30 h 30 min on, key 0 has
    // expired and keys 1 and 2 (9 h 30 min and 19 h 30 min left) hear
    // "1 day" once.
    assert_eq!(counts, [12, 0, 0, 2, 0]);
    let mut per_reminder = std::collections::HashMap::<(String, String), usize>::new();
    for guild in guilds {
        for reminder in reminders(&first, guild).await {
            *per_reminder.entry(reminder).or_default() += 1;
        }
    }
    assert!(per_reminder.values().all(|&n| n == 1), "each reminder once: {per_reminder:?}");
    assert_eq!(per_reminder.keys().filter(|(_, within)| within == "7 days").count(), 12);
    let mut day: Vec<&str> =
        per_reminder.keys().filter(|(_, within)| within == "1 day").map(|(k, _)| k.as_str()).collect();
    day.sort_unstable();
    assert_eq!(day, ["key 1", "key 2"]);
}

// ---------------------------------------------------------------------------
// Rate limits across instances (budgets leased from a shared database)
// ---------------------------------------------------------------------------

/// Sleeps into the next minute window unless at least `room` of the
/// current one is left (a test counting one window's requests must not
/// straddle two).
async fn with_room_in_the_window(room: Duration) {
    let into = Utc::now().timestamp_millis().rem_euclid(60_000) as u64;
    let left = Duration::from_millis(60_000 - into);
    if left < room {
        tokio::time::sleep(left + Duration::from_millis(100)).await;
    }
}

/// One request as the listener admits it (`http::auth`): the key, its
/// budget shared with other instances (waiting for a lease if need be),
/// then its local limiter, which puts a shared request back if it refuses.
async fn admit(service: &KeyService, token: &str) -> Result<(), Take> {
    let caller = service.authenticate(token, anywhere()).expect("the key verifies");
    let mut shared = service.take_shared(&caller);
    if shared == Take::Wait {
        shared = service.wait_shared(&caller).await;
    }
    if let Take::Exhausted { .. } = shared {
        return Err(shared);
    }
    if caller.key.limiter().check().is_err() {
        service.give_back_shared(&caller, &shared);
        return Err(Take::Local);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_of_one_window_never_add_up_to_more_than_the_limit() {
    // Arrange: two instances' stores on one database, a key (the lease
    // table names keys without holding them).
    let db = Db::new();
    let (a, _) = db.open(3).await;
    let (b, _) = db.open(3).await;
    let key = guildkey::keys::KeyId::generate();
    let window = (Utc::now().timestamp_millis() / 60_000) * 60_000;

    // Act: 2 × 20 leases of 7 at once, against a limit of 100.
    let leases = (0..40).map(|i| {
        let (store, key) = (if i % 2 == 0 { a.clone() } else { b.clone() }, key.clone());
        tokio::spawn(async move { store.lease_rate(&key, window, 100, 7).await.expect("lease") })
    });
    let mut grants = Vec::new();
    for lease in leases {
        grants.push(lease.await.unwrap());
    }

    // Assert: exactly the limit handed out, no lease over its chunk, and
    // the window's total as the last lease saw it.
    let granted: u32 = grants.iter().map(|g| g.granted).sum();
    assert_eq!(granted, 100, "{grants:?}");
    assert!(grants.iter().all(|g| g.granted <= 7 && g.taken <= 100), "{grants:?}");
    assert_eq!(grants.iter().filter(|g| g.granted == 0).count(), 40 - 15, "14 full chunks and one of 2");
    assert_eq!(grants.iter().map(|g| g.taken).max(), Some(100));
    let spent = a.lease_rate(&key, window, 100, 7).await.unwrap();
    assert_eq!((spent.granted, spent.taken), (0, 100), "a spent window grants nothing");
    let lowered = b.lease_rate(&key, window, 50, 7).await.unwrap();
    assert_eq!((lowered.granted, lowered.taken), (0, 100), "a lowered limit takes nothing back");
    let next = a.lease_rate(&key, window + 60_000, 100, 7).await.unwrap();
    assert_eq!((next.granted, next.taken), (7, 7), "the next window is a budget of its own");
    let small = b.lease_rate(&guildkey::keys::KeyId::generate(), window, 3, 7).await.unwrap();
    assert_eq!((small.granted, small.taken), (3, 3), "a first lease is capped at the limit too");

    // The upkeep's calls: heartbeats count the live instances; old windows go.
    let now = Utc::now().timestamp_millis();
    assert_eq!(a.beat_instance("one", now - 60_000, now - 120_000).await.unwrap(), 1);
    assert_eq!(a.beat_instance("two", now, now - 15_000).await.unwrap(), 1, "a silent instance is not counted");
    assert_eq!(b.beat_instance("three", now, now - 15_000).await.unwrap(), 2);
    assert_eq!(a.beat_instance("two", now + 5_000, now - 10_000).await.unwrap(), 2);
    b.forget_instance("three").await.unwrap();
    assert_eq!(a.beat_instance("two", now + 10_000, now - 5_000).await.unwrap(), 1, "a stopped instance is gone");
    assert_eq!(a.delete_rate_leases_before(window + 60_000).await.unwrap(), 2, "window's two keys");
    let kept = a.lease_rate(&key, window + 60_000, 100, 7).await.unwrap();
    assert_eq!((kept.granted, kept.taken), (7, 14), "the next window is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_hold_a_keys_limit_within_ten_percent() {
    const LIMIT: u32 = 120;
    let Some(admin) = db::postgres_admin_url() else { return };
    // Arrange: two instances (store and service each, their upkeep running,
    // so each counts the other by its heartbeat) and a key of 120 a minute.
    let url = db::fresh_postgres(&admin);
    let open = |url: String| async move {
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        KeyService::new(store, config(3)).await.expect("service")
    };
    let (a, b) = (open(url.clone()).await, open(url).await);
    let (stop_a, upkeep_a) = start_upkeep(&a);
    let (stop_b, upkeep_b) = start_upkeep(&b);
    let key = a
        .issue(
            GUILD,
            draft(KeyRequest { name: "game", scopes: "bans.read", rate_limit: Some(120), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    let both = within(Duration::from_secs(12), || a.lease_stats().instances == 2 && b.lease_stats().instances == 2);
    assert!(both.await.is_some(), "each instance counts two: {:?} {:?}", a.lease_stats(), b.lease_stats());
    assert!(b.refresh_index().await.is_ok());
    let chunk = (a.lease_chunk(LIMIT), b.lease_chunk(LIMIT));
    assert_eq!(chunk, (4, 4), "120 / (15 × 2)");

    // Act: 8 clients, each alternating between the two instances (round
    // robin) as fast as they can, for 3 s of one window.
    with_room_in_the_window(Duration::from_secs(8)).await;
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (a, b, token) = (a.clone(), b.clone(), key.secret.expose().to_owned());
            tokio::spawn(async move {
                let (mut accepted, mut refused, mut sent) = ([0u32; 2], 0u32, c);
                while started.elapsed() < Duration::from_secs(3) {
                    let which = sent % 2;
                    match admit(if which == 0 { &a } else { &b }, &token).await {
                        Ok(()) => accepted[which] += 1,
                        Err(_) => refused += 1,
                    }
                    sent += 1;
                    if sent % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = ([0u32; 2], 0u32);
    for client in clients {
        let (ok, no) = client.await.unwrap();
        accepted = [accepted[0] + ok[0], accepted[1] + ok[1]];
        refused += no;
    }

    // Assert: within 10% of the limit over both instances, and never over.
    let total = accepted[0] + accepted[1];
    let (stats_a, stats_b) = (a.lease_stats(), b.lease_stats());
    println!(
        "limit {LIMIT}/min, 2 instances, chunk {chunk:?}: accepted {total} ({} on A, {} on B), refused {refused}, \
         leases {} + {}",
        accepted[0], accepted[1], stats_a.leases, stats_b.leases
    );
    assert!(!stats_a.down && !stats_b.down, "the database answered throughout");
    assert!(total * 10 >= LIMIT * 9 && total <= LIMIT, "accepted {total} of {LIMIT} over two instances");
    assert!(accepted[0] > 0 && accepted[1] > 0, "{accepted:?}");
    let after = admit(&a, key.secret.expose()).await;
    let left = 60 - (Utc::now().timestamp_millis().rem_euclid(60_000) / 1000) as u64;
    assert!(
        matches!(after, Err(Take::Exhausted { retry_after_secs }) if (1..=left + 1).contains(&retry_after_secs)),
        "refused until the window ends in {left} s: {after:?}"
    );
    let _ = (stop_a.send(()), stop_b.send(()));
    upkeep_a.await.unwrap();
    upkeep_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_unreachable_the_local_limiter_alone_holds_the_limit() {
    let Some(admin) = db::postgres_admin_url() else { return };
    // Arrange: an instance on PostgreSQL and a key of 10 a minute.
    let url = db::fresh_postgres(&admin);
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let service = KeyService::new(store.clone(), config(3)).await.expect("service");
    let key = service
        .issue(
            GUILD,
            draft(KeyRequest { name: "game", scopes: "bans.read", rate_limit: Some(10), ..Default::default() }),
            &Actor::Cli,
        )
        .await
        .unwrap();
    with_room_in_the_window(Duration::from_secs(5)).await;
    admit(&service, key.secret.expose()).await.expect("a first request, on a lease");
    assert!(service.lease_stats().leases >= 1 && !service.lease_stats().down);

    // Act: the database goes away.
    store.close().await;
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        outcomes.push(admit(&service, key.secret.expose()).await);
    }

    // Assert: requests are admitted, not refused, up to the local limit
    // (what the lease had left, then the local limiter alone).
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 9, "the rest of the local budget of 10: {outcomes:?}");
    assert!(outcomes[9..].iter().all(|o| *o == Err(Take::Local)), "then the local limiter refuses: {outcomes:?}");
    assert!(service.lease_stats().down, "the instance knows it holds the limit alone");
}

// ---------------------------------------------------------------------------
// Usage: counters, the request log, retention, refusal spikes
// ---------------------------------------------------------------------------

use guildkey::config::UsageConfig;
use guildkey::service::usage::{RequestFacts, UNMATCHED_ROUTE};
use guildkey::service::usage_report::Period;

/// A fixed time well inside a UTC hour, for tests that move time by hand.
fn usage_epoch() -> chrono::DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(2026, 3, 4, 13, 20, 10).unwrap()
}

fn usage_minute(at: chrono::DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// One request of `method route` answered `status` (`reason`) at `at`.
fn request(
    at: chrono::DateTime<Utc>,
    method: &'static str,
    route: &'static str,
    status: u16,
    reason: Option<&'static str>,
    from: &str,
) -> RequestFacts {
    RequestFacts {
        at_ms: at.timestamp_millis(),
        method,
        route,
        status,
        reason,
        ip: ip(from),
        latency_us: 42,
        target_user: None,
        target_role: None,
    }
}

const BANS: &str = "/v1/guilds/{guild_id}/bans/{user_id}";

/// 7 verifications, 3 refused for scope, 2 rate-limited and 1 to no route,
/// one second apart from `at`.
fn known_traffic(at: chrono::DateTime<Utc>) -> Vec<RequestFacts> {
    let mut sent = Vec::new();
    for _ in 0..7 {
        sent.push(request(at, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    }
    for _ in 0..3 {
        sent.push(request(at, "GET", BANS, 403, Some("insufficient_scope"), "203.0.113.2"));
    }
    for _ in 0..2 {
        sent.push(request(at, "GET", "/v1/verify", 429, Some("rate_limited"), "203.0.113.1"));
    }
    sent.push(request(at, "GET", UNMATCHED_ROUTE, 404, Some("not_found"), "203.0.113.3"));
    for (i, r) in sent.iter_mut().enumerate() {
        r.at_ms += i as i64 * 1000;
    }
    sent
}

async fn usage_service(db: &Db, usage: UsageConfig) -> (Store, KeyService) {
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let service = KeyService::with_usage(store.clone(), config(3), usage).await.expect("build the service");
    (store, service)
}

#[tokio::test]
async fn usage_counts_each_outcome_exactly_before_and_after_the_flush() {
    // Arrange
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "counted").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();

    // Act
    for r in known_traffic(t0) {
        service.record_request(&caller.key, &r);
    }
    let pending = service.usage(&key.record.id, Period::Day, t0 + chrono::Duration::seconds(30)).await.unwrap();
    // The first flush after the minute ended writes its counters.
    service.flush_usage_at(t0 + chrono::Duration::seconds(70), false).await.unwrap();
    let written = service.usage(&key.record.id, Period::Day, t0 + chrono::Duration::seconds(80)).await.unwrap();
    service.flush_usage_at(t0 + chrono::Duration::seconds(90), false).await.unwrap();
    let week = service.usage(&key.record.id, Period::Week, t0 + chrono::Duration::seconds(95)).await.unwrap();

    // Assert
    let expected: std::collections::BTreeMap<String, u64> =
        [("ok", 7), ("insufficient_scope", 3), ("rate_limited", 2), ("not_found", 1)]
            .into_iter()
            .map(|(o, n)| (o.to_owned(), n))
            .collect();
    for report in [&pending, &written, &week] {
        assert_eq!(report.outcomes, expected, "{:?}", report.period);
        assert_eq!(report.total, 13);
        assert!((report.error_share - 6.0 / 13.0).abs() < 1e-9);
        let last = report.buckets.last().unwrap();
        assert_eq!((last.ok, last.client_error, last.rate_limited, last.server_error), (7, 4, 2, 0));
        assert_eq!(report.top_routes[0].route, "GET /v1/verify");
        assert_eq!((report.top_routes[0].count, report.top_routes[0].errors), (9, 2));
        assert_eq!(report.top_ips[0].ip, "203.0.113.1");
        assert_eq!((report.top_ips[0].count, report.distinct_ips), (9, 3));
    }
    assert_eq!((pending.buckets.len(), week.buckets.len()), (24, 28));
}

#[tokio::test]
async fn the_request_log_keeps_every_request_but_successful_verifications_newest_first_per_key() {
    // Arrange: a log of 5 per key.
    let db = Db::new();
    let (_, service) = usage_service(&db, UsageConfig { request_log_per_key: 5, ..UsageConfig::default() }).await;
    let key = issue(&service, GUILD, "logged").await;
    let other = issue(&service, GUILD, "other").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let others = service.authenticate(other.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();

    // Act
    let traffic = known_traffic(t0);
    for r in &traffic {
        service.record_request(&caller.key, r);
    }
    let mut ban = request(t0 + chrono::Duration::seconds(20), "PUT", BANS, 200, None, "203.0.113.9");
    ban.target_user = Some(ADMIN);
    service.record_request(&others.key, &ban);
    let page = service.requests(&key.record.id, None, 100).await.unwrap();
    let first = service.requests(&key.record.id, None, 2).await.unwrap();
    let second = service.requests(&key.record.id, first.next_before, 2).await.unwrap();
    let theirs = service.requests(&other.record.id, None, 10).await.unwrap();

    // Assert: the 6 refusals of 13 requests are logged, the newest 5 kept.
    let seen: Vec<(String, String, u16, Option<String>, String)> = page
        .entries
        .iter()
        .map(|e| (e.method.clone(), e.route.clone(), e.status, e.reason.clone(), e.ip.clone()))
        .collect();
    let row = |route: &str, status, reason: &str, ip: &str| {
        ("GET".to_owned(), route.to_owned(), status, Some(reason.to_owned()), ip.to_owned())
    };
    assert_eq!(
        seen,
        [
            row(UNMATCHED_ROUTE, 404, "not_found", "203.0.113.3"),
            row("/v1/verify", 429, "rate_limited", "203.0.113.1"),
            row("/v1/verify", 429, "rate_limited", "203.0.113.1"),
            row(BANS, 403, "insufficient_scope", "203.0.113.2"),
            row(BANS, 403, "insufficient_scope", "203.0.113.2"),
        ]
    );
    assert_eq!(page.entries[0].at.timestamp_millis(), traffic[12].at_ms);
    assert_eq!(page.entries[0].latency_us, 42);
    assert!(page.next_before.is_none());
    assert_eq!(first.entries.len(), 2);
    assert_eq!(second.entries.iter().map(|e| e.status).collect::<Vec<_>>(), [429, 403]);
    assert_eq!(second.entries[0].id, page.entries[2].id, "pages continue where the last ended");
    assert_eq!(theirs.entries.len(), 1);
    let put = &theirs.entries[0];
    assert_eq!((put.method.as_str(), put.status, put.target_user_id.clone()), ("PUT", 200, Some(ADMIN.to_string())));
}

#[tokio::test]
async fn retention_drops_minute_buckets_after_48_hours_and_hour_buckets_after_90_days() {
    // Arrange
    let db = Db::new();
    let (store, service) = db.open(3).await;
    let key = issue(&service, GUILD, "kept").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    for r in known_traffic(t0) {
        service.record_request(&caller.key, &r);
    }
    service.flush_usage_at(at(1), false).await.unwrap();

    // Act and assert: each hour row holds its total and its minutes.
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert!(held.with_minutes > 0 && held.with_minutes == held.hour_rows, "{held:?}");
    let report = service.usage(&key.record.id, Period::Week, at(2)).await.unwrap();
    assert_eq!(report.total, 13);
    let refusals = store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap();
    assert_eq!(refusals, [("insufficient_scope".to_owned(), 3), ("rate_limited".to_owned(), 2)]);
    // A flush late for its minute still adds to the hour and the minute.
    service.record_request(&caller.key, &request(t0, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    service.flush_usage_at(at(60 + 42), false).await.unwrap();
    assert_eq!(service.usage(&key.record.id, Period::Week, at(60 + 43)).await.unwrap().total, 14);
    let nothing = service.maintain_usage(at(47 * 60)).await.unwrap();
    assert_eq!(nothing, Default::default(), "nothing is old enough to drop yet");

    // Past 48 hours the minutes go, the hours stay (and still count).
    let dropped = service.maintain_usage(at(49 * 60)).await.unwrap();
    assert!(dropped.minutes_dropped > 0, "{dropped:?}");
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!(held.with_minutes, 0, "{held:?}");
    assert!(held.hour_rows > 0 && held.ip_rows > 0 && held.log_rows > 0, "{held:?}");
    assert!(store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap().is_empty());
    let report = service.usage(&key.record.id, Period::Week, at(49 * 60)).await.unwrap();
    assert_eq!((report.total, report.outcomes["insufficient_scope"]), (14, 3));
    assert_eq!(report.distinct_ips, 3);
    // A batch held back past the minutes' retention still adds to its
    // hour's total, and brings no minute buckets back.
    service.record_request(&caller.key, &request(t0, "GET", "/v1/verify", 200, None, "203.0.113.1"));
    service.flush_usage_at(at(49 * 60 + 1), false).await.unwrap();
    assert_eq!(store.usage_rows_held(&key.record.id).await.unwrap().with_minutes, 0);
    assert!(store.refusals(&key.record.id, usage_minute(t0), usage_minute(t0) + 1).await.unwrap().is_empty());
    assert_eq!(service.usage(&key.record.id, Period::Week, at(49 * 60 + 2)).await.unwrap().total, 15);

    // Past 90 days the hours, the addresses and the log go too.
    let dropped = service.maintain_usage(at(91 * 24 * 60)).await.unwrap();
    assert!(dropped.hour_rows_dropped > 0 && dropped.log_rows_dropped > 0, "{dropped:?}");
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!((held.with_minutes, held.hour_rows, held.ip_rows, held.log_rows), (0, 0, 0, 0));

    // Deleting a key forgets what is left of its usage.
    service.record_request(
        &caller.key,
        &request(at(91 * 24 * 60), "GET", "/v1/verify", 429, Some("rate_limited"), "203.0.113.1"),
    );
    service.flush_usage_at(at(91 * 24 * 60 + 2), false).await.unwrap();
    assert!(store.usage_rows_held(&key.record.id).await.unwrap().hour_rows > 0);
    service.revoke(Some(GUILD), "kept", &Actor::Cli).await.unwrap();
    service.delete(Some(GUILD), "kept", &Actor::Cli).await.unwrap();
    let held = store.usage_rows_held(&key.record.id).await.unwrap();
    assert_eq!((held.hour_rows, held.log_rows), (0, 0));
}

fn spike_alerts(events: &[AuditEvent], key: &IssuedKey) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.action == Action::UsageSpike && e.key_id.as_deref() == Some(key.record.id.as_str()))
        .cloned()
        .collect()
}

/// `n` refusals for scope of `caller`'s key at `at`.
fn refuse(service: &KeyService, caller: &guildkey::service::Authenticated, at: chrono::DateTime<Utc>, n: usize) {
    for _ in 0..n {
        service.record_request(&caller.key, &request(at, "GET", BANS, 403, Some("insufficient_scope"), "203.0.113.66"));
    }
}

#[tokio::test]
async fn a_refusal_spike_is_alerted_once_per_spike_and_at_most_hourly() {
    // Arrange
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "hammered").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);

    // Act and assert: 49 refusals are not a spike; the 50th is.
    refuse(&service, &caller, at(0), 49);
    service.flush_usage_at(at(1), false).await.unwrap();
    assert!(spike_alerts(&events(&service, GUILD).await, &key).is_empty());
    refuse(&service, &caller, at(30), 1);
    service.flush_usage_at(at(65), false).await.unwrap();
    let alerts = spike_alerts(&events(&service, GUILD).await, &key);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!((alert.actor.as_str(), alert.actor_kind.as_str()), ("guildkey", "system"));
    assert_eq!(alert.details["refusals"], 50);
    assert_eq!(alert.details["reasons"]["insufficient_scope"], 50);
    assert_eq!(alert.details["top_ips"]["203.0.113.66"], 50);

    // The spike goes on: no second alert.
    for minute in 2..8 {
        refuse(&service, &caller, at(minute * 60), 60);
        service.flush_usage_at(at(minute * 60 + 5), false).await.unwrap();
    }
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 1);

    // A new spike after a quiet spell, within the hour of the first: none.
    refuse(&service, &caller, at(40 * 60), 60);
    service.flush_usage_at(at(40 * 60 + 5), false).await.unwrap();
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 1, "at most one an hour");

    // A new spike after a quiet spell, over an hour after the alert: one more.
    refuse(&service, &caller, at(120 * 60), 60);
    service.flush_usage_at(at(120 * 60 + 5), false).await.unwrap();
    assert_eq!(spike_alerts(&events(&service, GUILD).await, &key).len(), 2);
}

#[tokio::test]
async fn a_key_refused_all_day_needs_ten_times_its_usual_rate_to_spike() {
    // Arrange: 120 refusals an hour for the 24 hours before (10 per 5
    // minutes), then a quiet spell.
    let db = Db::new();
    let (_, service) = db.open(3).await;
    let key = issue(&service, GUILD, "noisy").await;
    let caller = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let t0 = usage_epoch();
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    for hour in 0..24 {
        refuse(&service, &caller, at(hour * 60), 120);
        service.flush_usage_at(at(hour * 60 + 1), false).await.unwrap();
    }
    let before = spike_alerts(&events(&service, GUILD).await, &key).len();

    // Act: 99 refusals in five minutes is not ten times the usual 10…
    let later = 24 * 60 + 30;
    refuse(&service, &caller, at(later), 99);
    service.flush_usage_at(at(later) + chrono::Duration::seconds(10), false).await.unwrap();
    let after_99 = spike_alerts(&events(&service, GUILD).await, &key).len();
    // …100 is.
    refuse(&service, &caller, at(later + 1), 1);
    service.flush_usage_at(at(later + 2), false).await.unwrap();
    let after_100 = spike_alerts(&events(&service, GUILD).await, &key).len();

    // Assert
    assert_eq!(after_99, before);
    assert_eq!(after_100, before + 1);
}
