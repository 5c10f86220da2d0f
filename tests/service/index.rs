//! The in-memory key index (`service::index`) on a real temporary SQLite
//! file: this process's own changes are applied in place, so they take
//! effect before the call returns and never cost a full reload; a key's rate
//! limiter and cached rendering follow it through its changes as they
//! should. (Reloads after another process's commits: the `lifecycle` module.)

use std::net::IpAddr;

use guildkey::audit::Actor;
use guildkey::config::KeysConfig;
use guildkey::service::{parse_grace, Error, KeyDraft, KeyRequest, KeyService};
use guildkey::store::Store;

const GUILD: u64 = 111_111_111_111_111_111;

async fn open(dir: &tempfile::TempDir) -> KeyService {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gk.db").display());
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let cfg = KeysConfig {
        max_per_guild: 10,
        prefix: "gk".to_owned(),
        default_rate_limit_per_minute: 60,
        last_used_flush_seconds: 5,
        ..guildkey::config::Config::default().keys
    };
    KeyService::new(store, cfg).await.expect("build the service")
}

fn named(name: &str) -> KeyDraft {
    KeyDraft::parse(&KeyRequest { name, scopes: "bans.read", ..Default::default() }).expect("draft")
}

fn anywhere() -> IpAddr {
    IpAddr::from([198, 51, 100, 1])
}

#[tokio::test]
async fn changes_by_this_process_apply_at_once_without_a_reload() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let service = open(&dir).await;
    let other = service.issue(GUILD, named("bystander"), &Actor::Cli).await.unwrap();

    // Act / Assert, one change at a time.
    let key = service.issue(GUILD, named("mine"), &Actor::Cli).await.unwrap();
    let auth = service.authenticate(key.secret.expose(), anywhere()).expect("a new key works at once");
    assert_eq!(auth.key.id, key.record.id);
    assert_eq!(auth.key.name, "mine");
    assert!(!service.refresh_index().await.unwrap(), "an own create must not trigger a reload");

    let rotated = service.rotate(None, key.record.id.as_str(), None, &Actor::Cli).await.unwrap();
    assert!(service.authenticate(rotated.secret.expose(), anywhere()).is_ok(), "the new secret works at once");
    let old = service.authenticate(key.secret.expose(), anywhere());
    assert!(matches!(old, Err(Error::NotFound(_))), "the old secret stops at once: {old:?}");
    assert!(!service.refresh_index().await.unwrap(), "an own rotation must not trigger a reload");

    service.revoke(None, key.record.id.as_str(), &Actor::Cli).await.unwrap();
    let revoked = service.authenticate(rotated.secret.expose(), anywhere());
    assert!(matches!(revoked, Err(Error::Revoked(_))), "{revoked:?}");
    assert!(!service.refresh_index().await.unwrap(), "an own revoke must not trigger a reload");

    service.delete(None, key.record.id.as_str(), &Actor::Cli).await.unwrap();
    let deleted = service.authenticate(rotated.secret.expose(), anywhere());
    assert!(matches!(deleted, Err(Error::NotFound(_))), "{deleted:?}");
    assert!(!service.refresh_index().await.unwrap(), "an own delete must not trigger a reload");

    assert!(service.authenticate(other.secret.expose(), anywhere()).is_ok(), "other keys are untouched");
    assert_eq!(service.indexed_keys(), 1);
}

#[tokio::test]
async fn a_rotation_keeps_the_keys_rate_limiter_and_renews_its_cached_rendering() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let service = open(&dir).await;
    let key = service.issue(GUILD, named("limited"), &Actor::Cli).await.unwrap();
    let before = service.authenticate(key.secret.expose(), anywhere()).unwrap();
    let rendered_before = before.key.rendered(|k| k.prefix.as_bytes().to_vec()).clone();

    // Act
    let grace = parse_grace("1h").unwrap();
    let rotated = service.rotate(None, key.record.id.as_str(), Some(grace), &Actor::Cli).await.unwrap();
    let new = service.authenticate(rotated.secret.expose(), anywhere()).unwrap();
    let old = service.authenticate(key.secret.expose(), anywhere()).expect("the old secret works in its grace");

    // Assert
    assert!(std::ptr::eq(before.key.limiter(), new.key.limiter()), "a rotation must not refill the budget");
    assert!(std::ptr::eq(new.key.limiter(), old.key.limiter()), "both secrets share one budget");
    assert_eq!(new.key.prefix, rotated.record.prefix.as_str());
    let rendered_after = new.key.rendered(|k| k.prefix.as_bytes().to_vec());
    assert_eq!(&rendered_before[..], key.record.prefix.as_bytes());
    assert_eq!(&rendered_after[..], rotated.record.prefix.as_bytes(), "the cached rendering is of the new key");
}
