//! Issue and find.

use crate::helpers::*;
use chrono::Utc;
use guildkey::audit::Actor;
use guildkey::keys::{token, Environment};
use guildkey::service::{Error, KeyRequest, KeyService};
use guildkey::store::Store;

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
