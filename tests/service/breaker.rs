//! The circuit breaker's counts, shared by instances through the database
//! (issue 21, item 8): however many instances spend a key's budget at
//! once, the database grants it once; the window slides on the service's
//! clock.

use crate::helpers::*;
use guildkey::keys::KeyId;
use guildkey::service::guard::WriteKind;
use guildkey::service::{Clock, KeyService};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_five_grants_five_of_64_concurrent_spends_from_two_instances() {
    // Arrange
    let db = Db::new();
    let (_, first) = db.open(3).await;
    let (_, second) = db.open(3).await;
    let key = KeyId::generate();

    // Act
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (service, key) = (if i % 2 == 0 { first.clone() } else { second.clone() }, key.clone());
            tokio::spawn(async move { service.spend_write(&key, WriteKind::Ban, 5).await })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.expect("task").expect("the database answers"));
    }

    eprintln!("64 concurrent spends of one key's budget from two instances: {:?}", started.elapsed());

    // Assert: five, and the key's role budget and other keys are apart.
    assert_eq!(granted, 5);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        first.spend_write(&KeyId::generate(), WriteKind::Role, 5).await.unwrap();
    }
    eprintln!("one spend (a transaction of four statements): {:?}", started.elapsed() / 100);
    assert!(!second.spend_write(&key, WriteKind::Ban, 5).await.unwrap());
    assert!(first.spend_write(&key, WriteKind::Role, 5).await.unwrap(), "role changes count apart");
    assert!(first.spend_write(&KeyId::generate(), WriteKind::Ban, 5).await.unwrap(), "keys count apart");
    assert!(first.spend_write(&key, WriteKind::Ban, 6).await.unwrap(), "a larger budget lets one more through");
}

#[tokio::test]
async fn a_spent_budget_comes_back_as_its_writes_leave_the_ten_minute_window() {
    let db = Db::new();
    let store = guildkey::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let clock = Clock::at(chrono::Utc::now());
    let service = KeyService::with_clock(store, config(3), Default::default(), clock.clone()).await.unwrap();
    let key = KeyId::generate();

    assert!(service.spend_write(&key, WriteKind::Ban, 2).await.unwrap());
    clock.advance(chrono::Duration::minutes(5));
    assert!(service.spend_write(&key, WriteKind::Ban, 2).await.unwrap());
    assert!(!service.spend_write(&key, WriteKind::Ban, 2).await.unwrap(), "two in ten minutes");
    clock.advance(chrono::Duration::minutes(5));
    assert!(service.spend_write(&key, WriteKind::Ban, 2).await.unwrap(), "the first left the window");
    assert!(!service.spend_write(&key, WriteKind::Ban, 2).await.unwrap());
}
