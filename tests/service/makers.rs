//! No key outranks its maker: the bound at creation and adoption, the
//! re-check that suspends a key whose maker left or lost a power, and the
//! periodic task, against a port that answers from a table (both backends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use guildkey::audit::{Action, AuditEvent};
use guildkey::discord::permissions as p;
use guildkey::discord::{DiscordError, GuildInfo, GuildOps, RoleFacts, Standing};
use guildkey::keys::KeyStatus;
use guildkey::service::makers::{Maker, Makers};
use guildkey::service::{Error, KeyRequest};

use crate::helpers::*;

const OWNER: u64 = 1_000;
const MAKER: u64 = 1_001;
const MOD_ROLE: u64 = 2_000;

/// A guild whose "Moderator" role holds Manage Server and Ban Members, and
/// its members' roles, which a test changes.
struct Port {
    standing: Standing,
    members: Mutex<HashMap<u64, Vec<u64>>>,
}

impl Port {
    fn new() -> Arc<Self> {
        let role = |permissions, position| RoleFacts { permissions, position, managed: false };
        Arc::new(Self {
            standing: Standing {
                guild_id: GUILD,
                owner_id: OWNER,
                bot_id: 7,
                bot_roles: vec![],
                roles: HashMap::from([(GUILD, role(0, 0)), (MOD_ROLE, role(p::MANAGE_GUILD | p::BAN_MEMBERS, 1))]),
                overwrites: vec![],
            },
            members: Mutex::new(HashMap::from([(OWNER, vec![]), (MAKER, vec![MOD_ROLE])])),
        })
    }

    fn set_roles(&self, user: u64, roles: Option<Vec<u64>>) {
        let mut members = self.members.lock().unwrap();
        match roles {
            Some(r) => members.insert(user, r),
            None => members.remove(&user),
        };
    }
}

#[async_trait]
impl GuildOps for Port {
    async fn guild_info(&self, _: u64) -> Result<Option<GuildInfo>, DiscordError> {
        Ok(None)
    }
    async fn ban_status(&self, _: u64, _: u64) -> Result<Option<Option<String>>, DiscordError> {
        Ok(None)
    }
    async fn ban(&self, _: u64, _: u64, _: u32, _: &str) -> Result<(), DiscordError> {
        Ok(())
    }
    async fn unban(&self, _: u64, _: u64, _: &str) -> Result<(), DiscordError> {
        Ok(())
    }
    async fn member_roles(&self, _: u64, user_id: u64) -> Result<Option<Vec<u64>>, DiscordError> {
        Ok(self.members.lock().unwrap().get(&user_id).cloned())
    }
    async fn set_role(&self, _: u64, _: u64, _: u64, _: bool, _: &str) -> Result<(), DiscordError> {
        Ok(())
    }
    async fn post_audit(&self, _: u64, _: &AuditEvent) -> Result<(), DiscordError> {
        Ok(())
    }
    async fn standing(&self, _: u64) -> Result<Option<Standing>, DiscordError> {
        Ok(Some(self.standing.clone()))
    }
}

/// The maker's bound over `port`, through the guard as in `guildkey run`.
fn makers_on(keys: &guildkey::service::KeyService, port: &Arc<Port>) -> Makers {
    let guard = Arc::new(guildkey::service::guard::DiscordGuard::new(50, 2500));
    let bans = Arc::new(guildkey::service::actions::BanCache::default());
    Makers::new(Arc::new(guildkey::service::actions::GuildActions::new(keys.clone(), port.clone(), bans, guard)))
}

fn maker(user_id: u64, roles: &[u64]) -> Maker {
    Maker { user_id, permissions: None, roles: roles.to_vec() }
}

fn bans_write(name: &str) -> guildkey::service::KeyDraft {
    draft(KeyRequest { name, scopes: "bans.write", ..Default::default() })
}

#[tokio::test]
async fn a_key_is_bounded_by_its_maker_suspended_when_they_lose_the_power_and_adopted_by_an_admin() {
    // Arrange
    let db = Db::new();
    let keys = db.service().await;
    let port = Port::new();
    let makers = makers_on(&keys, &port);
    let actor = guildkey::audit::Actor::User(MAKER);

    // A member without Ban Members is refused, naming it; the moderator is not.
    let refused = makers.issue(GUILD, bans_write("no"), &actor, &maker(MAKER, &[])).await;
    assert!(
        matches!(&refused, Err(Error::OutranksMaker(m)) if m.contains("**Ban Members** (for bans.write)")),
        "{refused:?}"
    );
    let issued = makers.issue(GUILD, bans_write("game"), &actor, &maker(MAKER, &[MOD_ROLE])).await.unwrap();
    assert_eq!(issued.record.maker_id, Some(MAKER));
    let cli = issue(&keys, GUILD, "from the shell").await;
    assert_eq!(cli.record.maker_id, None);
    assert_eq!(makers.recheck(GUILD, None).await.unwrap(), 0, "nothing lost yet");

    // Act: the maker loses the role.
    port.set_roles(MAKER, Some(vec![]));
    let suspended = makers.recheck(GUILD, Some(MAKER)).await.unwrap();

    // Assert
    assert_eq!(suspended, 1);
    let key = keys.find(Some(GUILD), "game").await.unwrap();
    assert_eq!(key.status(keys.now()), KeyStatus::Suspended);
    assert_eq!(keys.find(Some(GUILD), "from the shell").await.unwrap().status(keys.now()), KeyStatus::Active);
    assert_eq!(makers.recheck(GUILD, None).await.unwrap(), 0, "suspended once");
    let recorded = events(&keys, GUILD).await;
    let suspension = recorded.iter().find(|e| e.action == Action::KeySuspended).expect("the suspension");
    assert_eq!(suspension.actor_kind, "system");
    assert_eq!(suspension.details["maker_id"], MAKER.to_string());
    assert_eq!(suspension.details["lost"], serde_json::json!(["Ban Members"]));

    // The former maker cannot adopt it back; the owner can, and becomes its maker.
    let again = makers.adopt(GUILD, "game", &maker(MAKER, &[])).await;
    assert!(matches!(again, Err(Error::OutranksMaker(_))), "{again:?}");
    let adopted = makers.adopt(GUILD, "game", &maker(OWNER, &[])).await.unwrap();
    assert_eq!(adopted.maker_id, Some(OWNER));
    assert_eq!(adopted.status(keys.now()), KeyStatus::Active);
    let resumed = events(&keys, GUILD).await.into_iter().find(|e| e.action == Action::KeyResumed).expect("resumed");
    assert_eq!(resumed.details["adopted"], true);
    assert_eq!(resumed.details["previous_maker_id"], MAKER.to_string());
}

#[tokio::test]
async fn the_periodic_check_suspends_the_key_of_a_maker_who_left() {
    // Arrange: a check every second.
    let db = Db::new();
    let store = guildkey::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let cfg = guildkey::config::KeysConfig { maker_check_seconds: 1, ..config(3) };
    let keys = guildkey::service::KeyService::new(store, cfg).await.unwrap();
    let port = Port::new();
    let makers = Arc::new(makers_on(&keys, &port));
    let actor = guildkey::audit::Actor::User(MAKER);
    makers.issue(GUILD, bans_write("game"), &actor, &maker(MAKER, &[MOD_ROLE])).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(guildkey::service::tasks::makers::run(makers, async move {
        let _ = stopped.await;
    }));

    // Act: the maker leaves; no event says so.
    port.set_roles(MAKER, None);

    // Assert: within two periods.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let key = keys.find(Some(GUILD), "game").await.unwrap();
        if key.status(keys.now()) == KeyStatus::Suspended {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not suspended within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorded = events(&keys, GUILD).await;
    let suspension = recorded.iter().find(|e| e.action == Action::KeySuspended).unwrap();
    assert_eq!(suspension.details["maker_left"], true);
    let _ = stop.send(());
    task.await.unwrap();
}
