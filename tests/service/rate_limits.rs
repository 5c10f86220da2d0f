//! Rate limits across instances (budgets leased from a shared database).

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::Actor;
use guildkey::service::lease::Take;
use guildkey::service::{KeyRequest, KeyService};
use guildkey::store::Store;
use std::time::{Duration, Instant};

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
