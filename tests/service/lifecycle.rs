//! Revoke, rotate, delete.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::Actor;
use guildkey::keys::KeyStatus;
use guildkey::service::{parse_grace, Error, IssuedKey, KeyRequest};
use sqlx::Connection;
use std::time::Duration;

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
