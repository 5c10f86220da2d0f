//! Rotations "until unused": the old secret works while it is presented
//! (by servers behind any instance), is retired once unused for its idle
//! time, at most 30 days on, with one `key.rotation_completed` entry
//! however many instances decide.

use crate::helpers::*;
use chrono::{Duration, Utc};
use guildkey::audit::{Action, Actor};
use guildkey::config::UsageConfig;
use guildkey::keys::Ttl;
use guildkey::service::{Clock, Error, KeyService, OldSecret};

/// Two "instances" on one database, on one test clock.
async fn two_instances(db: &Db, clock: &Clock) -> (KeyService, KeyService) {
    let mut out = Vec::new();
    for _ in 0..2 {
        let (store, _) = db.open(3).await;
        let service = KeyService::with_clock(store, config(3), UsageConfig::default(), clock.clone()).await.unwrap();
        out.push(service);
    }
    let second = out.pop().unwrap();
    (out.pop().unwrap(), second)
}

async fn completions(service: &KeyService) -> Vec<guildkey::audit::AuditEvent> {
    events(service, GUILD).await.into_iter().filter(|e| e.action == Action::KeyRotationCompleted).collect()
}

#[tokio::test]
async fn an_old_secret_presented_behind_another_instance_stays_and_is_retired_once_when_unused() {
    // Arrange: a key rotated "until unused for 10 s" on instance A.
    let db = Db::new();
    let t0 = Utc::now();
    let clock = Clock::at(t0);
    let (a, b) = two_instances(&db, &clock).await;
    let old = issue(&a, GUILD, "game").await;
    let old_secret = old.secret.expose().to_owned();
    let new =
        a.rotate_with(Some(GUILD), "game", OldSecret::UntilUnused(Ttl::from_seconds(10)), &Actor::Cli).await.unwrap();
    assert_eq!(new.record.previous_secret_until_unused, Some(Ttl::from_seconds(10)));
    b.refresh_index().await.unwrap();

    // Act: a server behind B presents the old secret 8 s on; B writes it.
    clock.set(t0 + Duration::seconds(8));
    b.authenticate(&old_secret, ip("203.0.113.9")).unwrap();
    assert_eq!(b.flush_previous_seen().await.unwrap(), 1);

    // Assert: 12 s after the rotation, A keeps it (B saw it 4 s ago)...
    clock.set(t0 + Duration::seconds(12));
    assert_eq!(a.complete_rotations(clock.now()).await.unwrap(), 0, "retired while presented behind B");
    a.authenticate(&old_secret, anywhere()).expect("the old secret still works");
    let info = a.find(Some(GUILD), "game").await.unwrap();
    let (seen_at, seen_from) = info.previous_secret_seen.expect("when and where it was last presented");
    assert_eq!(seen_at.timestamp_millis() / 1000, (t0 + Duration::seconds(12)).timestamp_millis() / 1000);
    assert_eq!(seen_from, "198.51.100.7", "A's own sighting, not yet written, is the latest");

    // ...and once unused for 10 s (plus the margin), both instances
    // deciding at once retire it once, with one entry.
    clock.set(t0 + Duration::seconds(12 + 10 + 2));
    let (x, y) = tokio::join!(a.complete_rotations(clock.now()), b.complete_rotations(clock.now()));
    assert_eq!(x.unwrap() + y.unwrap(), 1, "one instance retires it");
    assert_eq!(a.complete_rotations(clock.now()).await.unwrap(), 0);
    let done = completions(&a).await;
    assert_eq!(done.len(), 1, "exactly one key.rotation_completed");
    assert_eq!(done[0].details["reason"], "unused");
    assert_eq!(done[0].actor, "guildkey");
    a.refresh_index().await.unwrap();
    b.refresh_index().await.unwrap();
    for instance in [&a, &b] {
        assert!(matches!(instance.authenticate(&old_secret, anywhere()), Err(Error::NotFound(_))));
        instance.authenticate(new.secret.expose(), anywhere()).expect("the new secret works");
    }
}

#[tokio::test]
async fn an_old_secret_in_constant_use_stops_thirty_days_after_the_rotation() {
    let db = Db::new();
    let t0 = Utc::now();
    let clock = Clock::at(t0);
    let (a, _) = two_instances(&db, &clock).await;
    let old = issue(&a, GUILD, "busy").await;
    a.rotate_with(Some(GUILD), "busy", OldSecret::UntilUnused(Ttl::from_seconds(86_400)), &Actor::Cli).await.unwrap();
    for day in [1, 10, 20, 29] {
        clock.set(t0 + Duration::days(day));
        a.authenticate(old.secret.expose(), anywhere()).unwrap_or_else(|e| panic!("day {day}: {e}"));
        assert_eq!(a.complete_rotations(clock.now()).await.unwrap(), 0, "day {day}");
    }
    clock.set(t0 + Duration::days(30) + Duration::seconds(1));
    assert!(a.authenticate(old.secret.expose(), anywhere()).is_err(), "past 30 days, from memory alone");
    assert_eq!(a.complete_rotations(clock.now()).await.unwrap(), 1);
    let done = completions(&a).await;
    assert_eq!((done.len(), &done[0].details["reason"]), (1, &serde_json::json!("limit")));
}

#[test]
fn a_grace_until_unused_is_one_second_to_thirty_days_and_never_beside_a_grace() {
    assert_eq!(OldSecret::parse(None, Some("1s")).unwrap(), OldSecret::UntilUnused(Ttl::from_seconds(1)));
    assert_eq!(OldSecret::parse(None, Some("30d")).unwrap(), OldSecret::UntilUnused(Ttl::from_seconds(30 * 86_400)));
    assert_eq!(OldSecret::parse(Some("10m"), None).unwrap(), OldSecret::WorksFor(Ttl::from_seconds(600)));
    assert_eq!(OldSecret::parse(None, None).unwrap(), OldSecret::StopsNow);
    for (grace, unused, says) in [
        (None, Some("0s"), "zero"),
        (None, Some("31d"), "30d"),
        (None, Some("721h"), "30d"),
        (None, Some("soon"), "not a duration"),
        (None, Some("-5s"), "not a duration"),
        (Some("10m"), Some("1h"), "not both"),
    ] {
        let e = OldSecret::parse(grace, unused).unwrap_err();
        assert_eq!(e.field, "grace_until_unused", "{unused:?}");
        assert!(e.message.contains(says), "{unused:?}: {}", e.message);
    }
}
