//! Verification.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::Actor;
use guildkey::keys::{token, Environment, KeyStatus, Scope};
use guildkey::service::{Error, KeyRequest, KeyService};
use guildkey::store::Store;
use std::time::Duration;

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
    // SQLite's race (eight processes creating one file) shows only now and
    // then: many rounds. PostgreSQL serialises migrations with an advisory
    // lock, and each round there is a new database (about 0.8 s): a few.
    let rounds = if crate::db::on_postgres() { 5 } else { 50 };
    for round in 0..rounds {
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
