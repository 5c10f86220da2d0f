//! The per-guild limit.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::{Action, Actor};
use guildkey::keys::KeyStatus;
use guildkey::service::{Error, IssuedKey, KeyRequest};

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
