//! The Roblox push worker on an injected clock against the Open Cloud
//! double: two workers (two instances) on one database send a ban once, and
//! a push Roblox keeps failing is given up an hour after it was queued.

use std::time::Duration;

use chrono::Utc;
use guildkey::service::credentials::{SecretsKey, SecretsKeys};
use guildkey::service::roblox::push::PushMode;
use guildkey::service::tasks::roblox_push::PushWorker;
use guildkey::service::{Clock, KeyService};
use roblox_double::{RobloxDouble, API_KEY};

use crate::helpers::{config, Db, ADMIN, GUILD};

const UNIVERSE: u64 = 99;
const ROBLOX_ID: u64 = 4_321;

async fn instance(db: &Db, clock: &Clock, key: &SecretsKey) -> KeyService {
    let store = guildkey::store::Store::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let svc = KeyService::with_clock(store, config(3), Default::default(), clock.clone()).await.expect("service");
    svc.set_secrets(SecretsKeys::new(Some(key.clone()), None));
    svc
}

async fn count(svc: &KeyService, action: &str) -> usize {
    let events = svc.store().audit_events(GUILD, 100, None).await.unwrap();
    events.iter().filter(|e| e.action.as_str() == action).count()
}

#[tokio::test]
async fn two_workers_on_one_database_push_a_ban_once() {
    let roblox = RobloxDouble::start().await;
    let db = Db::new();
    let clock = Clock::at(Utc::now());
    let key = SecretsKey::generate();
    let (a, b) = (instance(&db, &clock, &key).await, instance(&db, &clock, &key).await);
    a.set_roblox_push(GUILD, UNIVERSE, API_KEY, PushMode::Both, None).await.unwrap();
    a.store().put_roblox_links(GUILD, ROBLOX_ID, &[ADMIN], clock.now()).await.unwrap();
    assert_eq!(a.queue_ban_push(GUILD, ADMIN, true).await.unwrap(), 2, "one publish, one restrict");

    let wa = PushWorker::new(a.clone(), &roblox.base_url(), Duration::from_secs(3600));
    let wb = PushWorker::new(b.clone(), &roblox.base_url(), Duration::from_secs(3600));
    clock.advance(chrono::Duration::seconds(2));
    let (ra, rb) = tokio::join!(wa.tick(), wb.tick());
    ra.unwrap();
    rb.unwrap();
    let (ra, rb) = tokio::join!(wa.tick(), wb.tick());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(roblox.published().len(), 1, "published once");
    let patches = roblox.calls().iter().filter(|c| c.method == "PATCH").count();
    assert_eq!(patches, 1, "restricted once");
    assert_eq!(count(&a, "roblox.push").await, 2);
    assert!(roblox.violations().is_empty(), "{:#?}", roblox.violations());
}

#[tokio::test]
async fn a_push_roblox_keeps_refusing_is_given_up_after_an_hour() {
    let roblox = RobloxDouble::start().await;
    let db = Db::new();
    let clock = Clock::at(Utc::now());
    let key = SecretsKey::generate();
    let svc = instance(&db, &clock, &key).await;
    svc.set_roblox_push(GUILD, UNIVERSE, API_KEY, PushMode::Publish, None).await.unwrap();
    svc.store().put_roblox_links(GUILD, ROBLOX_ID, &[ADMIN], clock.now()).await.unwrap();
    svc.queue_ban_push(GUILD, ADMIN, true).await.unwrap();
    let worker = PushWorker::new(svc.clone(), &roblox.base_url(), Duration::from_secs(3600));
    roblox.fail_for(Duration::from_secs(120), 503, None);

    clock.advance(chrono::Duration::seconds(2));
    worker.tick().await.unwrap();
    for _ in 0..5 {
        clock.advance(chrono::Duration::minutes(10));
        worker.tick().await.unwrap();
    }
    clock.advance(chrono::Duration::minutes(9)); // 59 min 2 s after the ban
    worker.tick().await.unwrap();
    assert_eq!(count(&svc, "roblox.push_failed").await, 0, "not given up within the hour");
    clock.advance(chrono::Duration::minutes(1));
    worker.tick().await.unwrap();
    assert_eq!(count(&svc, "roblox.push_failed").await, 1, "given up once the hour is out");
    clock.advance(chrono::Duration::minutes(10));
    worker.tick().await.unwrap();
    assert_eq!(count(&svc, "roblox.push_failed").await, 1, "and only once");
    assert_eq!(count(&svc, "roblox.push").await, 0);
    let recent = svc.store().recent_roblox_pushes(GUILD, 5).await.unwrap();
    assert_eq!(recent[0].state, "failed");
    assert!(recent[0].last_error.as_deref().unwrap_or_default().contains("503"), "{recent:?}");
}
