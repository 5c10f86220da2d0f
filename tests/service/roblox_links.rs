//! `roblox:` ids resolved by the service against the linker double, on a
//! test clock: the 10-minute memory runs out, a `Retry-After` runs out, a
//! stored pair outlives the linker forgetting it; and re-sealing guilds'
//! credentials and webhook secrets under a rotated key. On both backends.

use chrono::{TimeZone, Utc};
use guildkey::audit::Actor;
use guildkey::config::{Config, UsageConfig};
use guildkey::service::credentials::{CredentialKind, SecretsKey, SecretsKeys};
use guildkey::service::roblox::links::MemberId;
use guildkey::service::{Clock, Error, KeyService};

use crate::helpers::{config, Db, GUILD};
#[path = "../support/linkers.rs"]
mod linkers;
use linkers::{LinkerDouble, Mode, BLOXLINK_KEY, ROVER_KEY};

const PAT: u64 = 1_200_000_000_000_000_003;
const MORGAN: u64 = 1_200_000_000_000_000_002;

async fn service(db: &Db, clock: &Clock, keys: SecretsKeys, linker: &LinkerDouble) -> KeyService {
    let store = guildkey::store::Store::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let svc =
        KeyService::with_clock(store, config(3), UsageConfig::default(), clock.clone()).await.expect("the service");
    svc.set_secrets(keys);
    let mut roblox = Config::default().roblox;
    roblox.bloxlink_base_url = linker.base.clone();
    roblox.rover_base_url = linker.base.clone();
    svc.set_roblox(&roblox);
    svc
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

#[tokio::test]
async fn linker_answers_are_reused_for_ten_minutes_and_a_retry_after_holds_every_call_until_it_runs_out() {
    let db = Db::new();
    let linker = LinkerDouble::start().await;
    let clock = Clock::at(Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap());
    let keys = SecretsKeys::new(Some(SecretsKey::generate()), None);
    let svc = service(&db, &clock, keys, &linker).await;
    svc.set_linker(GUILD, "bloxlink", BLOXLINK_KEY, &Actor::Cli).await.unwrap();
    linker.link(GUILD, 1, &[PAT]);

    let one = MemberId::Roblox(1);
    assert_eq!(svc.resolve_member(GUILD, &one).await.unwrap(), [PAT]);
    clock.advance(minutes(9));
    assert_eq!(svc.resolve_member(GUILD, &one).await.unwrap(), [PAT]);
    assert_eq!(linker.calls(), 1, "within 10 minutes: from the store");
    clock.advance(minutes(2));
    assert_eq!(svc.resolve_member(GUILD, &one).await.unwrap(), [PAT]);
    assert_eq!(linker.calls(), 2, "after 10 minutes the linker is asked again");

    // "Not linked" is remembered as long.
    let two = MemberId::Roblox(2);
    assert!(matches!(svc.resolve_member(GUILD, &two).await, Err(Error::NotLinked(_))));
    clock.advance(minutes(5));
    assert!(matches!(svc.resolve_member(GUILD, &two).await, Err(Error::NotLinked(_))));
    assert_eq!(linker.calls(), 3);
    linker.link(GUILD, 2, &[MORGAN]);
    clock.advance(minutes(6));
    assert_eq!(svc.resolve_member(GUILD, &two).await.unwrap(), [MORGAN]);
    assert_eq!(linker.calls(), 4);

    // A quota: no call until Retry-After has passed, the seconds left counting down.
    linker.set_mode(Mode::Quota(30));
    let three = MemberId::Roblox(3);
    assert!(matches!(svc.resolve_member(GUILD, &three).await, Err(Error::LinkerLimited { retry_after_secs: 30, .. })));
    clock.advance(chrono::Duration::seconds(10));
    let left = svc.resolve_member(GUILD, &MemberId::Roblox(4)).await;
    assert!(matches!(left, Err(Error::LinkerLimited { retry_after_secs: 20, .. })), "{left:?}");
    assert_eq!(linker.calls(), 5);
    linker.set_mode(Mode::Normal);
    linker.link(GUILD, 3, &[PAT]);
    clock.advance(chrono::Duration::seconds(21));
    assert_eq!(svc.resolve_member(GUILD, &three).await.unwrap(), [PAT]);
    assert_eq!(linker.calls(), 6, "asked again once Retry-After ran out");

    // The member left: the linker forgets them, the stored pair answers.
    linker.unlink(GUILD, 1);
    clock.advance(minutes(11));
    assert_eq!(svc.resolve_member(GUILD, &one).await.unwrap(), [PAT]);
    // A Discord id needs no linker.
    assert_eq!(svc.resolve_member(GUILD, &MemberId::Discord(PAT)).await.unwrap(), [PAT]);
}

#[tokio::test]
async fn resealing_after_a_rotation_opens_with_the_new_key_alone() {
    let db = Db::new();
    let linker = LinkerDouble::start().await;
    let clock = Clock::system();
    let old = SecretsKey::generate();
    let new = SecretsKey::generate();
    let before = service(&db, &clock, SecretsKeys::new(Some(old.clone()), None), &linker).await;
    before.set_linker(GUILD, "rover", ROVER_KEY, &Actor::Cli).await.unwrap();
    let mut hooks = Config::default().webhooks;
    hooks.allow_http = true;
    hooks.allow_private_addresses = true;
    let webhooks = guildkey::service::webhooks::WebhookService::new(before.clone(), hooks);
    let set = webhooks.set(GUILD, "http://127.0.0.1:9/hook", "all", false, &Actor::Cli).await.unwrap();
    let shown = set.secret.expect("a new webhook's secret").expose().to_owned();
    let stored = before.store().webhook(GUILD).await.unwrap().unwrap().secret;
    assert!(stored.starts_with("v1:") && !stored.contains(&shown), "the webhook secret is stored sealed");
    let sealed = before.credentials().seal_webhook_secret(GUILD, "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0");
    assert!(sealed.starts_with("v1:") && !sealed.contains("whsec_"));

    // The new key alone cannot open what the old one sealed.
    let alone = service(&db, &clock, SecretsKeys::new(Some(new.clone()), None), &linker).await;
    assert!(matches!(alone.credentials().get(GUILD, CredentialKind::Linker).await, Err(Error::Missing(_))));
    assert!(alone.credentials().open_webhook_secret(GUILD, &sealed).is_err());

    let rotating = service(&db, &clock, SecretsKeys::new(Some(new.clone()), Some(old)), &linker).await;
    assert_eq!(rotating.reseal_secrets().await.unwrap(), (1, 1));
    let after = service(&db, &clock, SecretsKeys::new(Some(new), None), &linker).await;
    let opened = after.credentials().get(GUILD, CredentialKind::Linker).await.unwrap().unwrap();
    assert_eq!((opened.label.as_str(), opened.secret.expose()), ("rover", ROVER_KEY));
    let stored = after.store().webhook(GUILD).await.unwrap().unwrap().secret;
    assert_eq!(after.credentials().open_webhook_secret(GUILD, &stored).unwrap(), shown, "the same secret, sealed anew");
    // A clear webhook secret (stored before any key) opens as it is.
    assert_eq!(after.credentials().open_webhook_secret(GUILD, "whsec_abc").unwrap(), "whsec_abc");
    linker.link(GUILD, 9, &[PAT]);
    assert_eq!(after.resolve_member(GUILD, &MemberId::Roblox(9)).await.unwrap(), [PAT]);
    assert_eq!(linker.rover_calls(), 1);
}
