//! [`GuildOps`] for an HTTP listener without a gateway connection
//! (`guildkey run --only http`): writes, ban checks and member reads are the
//! same REST calls [`SerenityGuildOps`] makes; the guild facts the gateway
//! cache would hold (name, icon, member count, roles, owner, the bot's own
//! roles) are read over REST and kept per guild for [`GUILD_VIEW_TTL`]:
//! `GET /guilds/{id}?with_counts=true`, then `GET /guilds/{id}/members/{bot}`
//! (the bot's id from `GET /users/@me`, once).
//!
//! What that means: a change to a role (a permission added, a position
//! moved) or to the bot's roles is seen by such a listener within the TTL,
//! not at once as a gateway-fed process sees it. Two things shorten that:
//! a write Discord refuses with 403 drops the guild's entry, so the next
//! request re-reads the guild before the guard judges it; and a guild the
//! bot is not in (Discord's 403 or 404 for it) is remembered for the TTL
//! too, so a key for such a guild costs Discord one read per TTL, not one
//! per request. A read that failed otherwise (5xx, timeout, 429) is kept for
//! [`FAILED_VIEW_TTL`]. Concurrent requests for one guild share one read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use serenity::all::{GuildId, Http, LightMethod, Route, UserId};
use serenity::http::Request;

use super::{DiscordError, GuildInfo, GuildOps, InvalidAnswers, Overwrite, RoleFacts, SerenityGuildOps, Standing};
use crate::audit::AuditEvent;

/// How long a guild's facts read over REST are used before they are read
/// again: the longest an `--only http` listener may judge a write on a
/// role's old permissions or position.
pub const GUILD_VIEW_TTL: Duration = Duration::from_secs(30);
/// How long a failed read (Discord unavailable, 5xx, 429) is answered
/// again before Discord is asked anew.
pub const FAILED_VIEW_TTL: Duration = Duration::from_secs(5);
/// Guilds whose entries are kept; past it, stale ones are dropped.
const MAX_GUILDS: usize = 10_000;

/// One guild as REST describes it: what the API shows and what the guard
/// judges by.
#[derive(Debug, Clone)]
pub struct GuildView {
    pub info: GuildInfo,
    pub standing: Standing,
}

type Fetched = Result<Arc<GuildView>, DiscordError>;

/// [`GuildOps`] over Discord's REST API alone (see the module docs).
pub struct RestGuildOps {
    rest: SerenityGuildOps,
    bot_id: tokio::sync::OnceCell<u64>,
    views: ViewCache<Fetched>,
}

/// Discord's answer for a guild the bot is not in: 403 Missing Access, or
/// 404 (Unknown Guild; Unknown Member for the bot itself).
fn not_in_guild(error: &DiscordError) -> bool {
    matches!(error, DiscordError::Refused { status: 403 | 404, .. })
}

impl RestGuildOps {
    /// `client` is the one `http` was built with.
    pub fn new(http: Arc<Http>, client: reqwest::Client) -> Self {
        Self {
            rest: SerenityGuildOps::rest_only(http, client),
            bot_id: tokio::sync::OnceCell::new(),
            views: ViewCache::default(),
        }
    }

    /// The guild's facts, from the cache while fresh, else read now.
    async fn view(&self, guild_id: u64) -> Fetched {
        self.views
            .get(guild_id, || async {
                let fetched = self.fetch(guild_id).await;
                let ttl = match &fetched {
                    Ok(_) => GUILD_VIEW_TTL,
                    Err(e) if not_in_guild(e) => GUILD_VIEW_TTL,
                    Err(_) => FAILED_VIEW_TTL,
                };
                if let Err(e) = &fetched {
                    tracing::debug!(guild_id, error = %e, "could not read the guild from Discord");
                }
                (fetched, ttl)
            })
            .await
    }

    async fn fetch(&self, guild_id: u64) -> Fetched {
        let bot_id = *self.bot_id.get_or_try_init(|| self.fetch_bot_id()).await?;
        let g = GuildId::new(guild_id);
        let guild = self
            .rest
            .send(guild_id, || {
                Request::new(Route::Guild { guild_id: g }, LightMethod::Get)
                    .params(Some(vec![("with_counts", "true".to_owned())]))
            })
            .await?;
        let u = UserId::new(bot_id);
        let member = self
            .rest
            .send(guild_id, || Request::new(Route::GuildMember { guild_id: g, user_id: u }, LightMethod::Get))
            .await?;
        // Channel overwrites: a role with no permission of its own may
        // still moderate one channel (the guard reads them).
        let channels =
            self.rest.send(guild_id, || Request::new(Route::GuildChannels { guild_id: g }, LightMethod::Get)).await?;
        parse_view(guild_id, bot_id, &guild, &member, &channels).map(Arc::new)
    }

    /// The bot's own user id (`GET /users/@me`); a failure is not kept.
    async fn fetch_bot_id(&self) -> Result<u64, DiscordError> {
        let me = self.rest.send_with(None, || Request::new(Route::UserMe, LightMethod::Get), true).await?;
        snowflake(&me["id"])
            .ok_or_else(|| DiscordError::Unavailable("Discord's answer for the bot's user had no id".into()))
    }

    /// A 403 for a write in the guild means the view it was judged on may
    /// be stale: drop it, so the next request re-reads the guild.
    fn watch<T>(&self, guild_id: u64, outcome: Result<T, DiscordError>) -> Result<T, DiscordError> {
        if let Err(DiscordError::Refused { status: 403, .. }) = &outcome {
            tracing::debug!(guild_id, "Discord refused a call with 403; the guild is read again on the next request");
            self.views.invalidate(guild_id);
        }
        outcome
    }
}

fn snowflake(v: &Value) -> Option<u64> {
    v.as_str()?.parse().ok()
}

/// Builds the view from `GET /guilds/{id}?with_counts=true`, the bot's
/// member object and `GET /guilds/{id}/channels`.
pub fn parse_view(
    guild_id: u64,
    bot_id: u64,
    guild: &Value,
    member: &Value,
    channels: &Value,
) -> Result<GuildView, DiscordError> {
    let bad =
        |what: &str| DiscordError::Unavailable(format!("Discord's description of guild {guild_id} had no {what}"));
    let owner_id = snowflake(&guild["owner_id"]).ok_or_else(|| bad("owner_id"))?;
    let roles = guild["roles"]
        .as_array()
        .ok_or_else(|| bad("roles"))?
        .iter()
        .map(|r| {
            let facts = RoleFacts {
                permissions: r["permissions"].as_str()?.parse().ok()?,
                position: r["position"].as_u64()?.min(u64::from(u16::MAX)) as u16,
                managed: r["managed"].as_bool().unwrap_or(false),
            };
            Some((snowflake(&r["id"])?, facts))
        })
        .collect::<Option<HashMap<u64, RoleFacts>>>()
        .ok_or_else(|| bad("well-formed roles"))?;
    let bot_roles = member["roles"]
        .as_array()
        .ok_or_else(|| bad("bot member roles"))?
        .iter()
        .map(snowflake)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| bad("well-formed bot member roles"))?;
    let info = GuildInfo {
        id: guild_id.to_string(),
        name: guild["name"].as_str().ok_or_else(|| bad("name"))?.to_owned(),
        member_count: guild["approximate_member_count"].as_u64().unwrap_or(0),
        icon: guild["icon"].as_str().map(str::to_owned),
    };
    let overwrites = channels
        .as_array()
        .ok_or_else(|| bad("channels"))?
        .iter()
        .flat_map(|c| {
            let channel_id = snowflake(&c["id"]);
            c["permission_overwrites"].as_array().into_iter().flatten().map(move |o| {
                Some(Overwrite {
                    channel_id: channel_id?,
                    id: snowflake(&o["id"])?,
                    member: o["type"].as_u64()? == 1,
                    allow: o["allow"].as_str()?.parse().ok()?,
                })
            })
        })
        .collect::<Option<Vec<Overwrite>>>()
        .ok_or_else(|| bad("well-formed channel permission overwrites"))?
        .into_iter()
        .filter(|o| o.allow != 0)
        .collect();
    Ok(GuildView { info, standing: Standing { guild_id, owner_id, bot_id, bot_roles, roles, overwrites } })
}

#[async_trait]
impl GuildOps for RestGuildOps {
    async fn guild_info(&self, guild_id: u64) -> Result<Option<GuildInfo>, DiscordError> {
        match self.view(guild_id).await {
            Ok(view) => Ok(Some(view.info.clone())),
            Err(e) if not_in_guild(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn standing(&self, guild_id: u64) -> Result<Option<Standing>, DiscordError> {
        self.view(guild_id).await.map(|view| Some(view.standing.clone()))
    }

    async fn role_exists(&self, guild_id: u64, role_id: u64) -> Option<bool> {
        self.view(guild_id).await.ok().map(|view| view.standing.roles.contains_key(&role_id))
    }

    async fn bans_page(&self, guild_id: u64, after: u64, limit: u32) -> Result<super::BansPage, DiscordError> {
        self.watch(guild_id, self.rest.bans_page(guild_id, after, limit).await)
    }

    async fn ban_status(&self, guild_id: u64, user_id: u64) -> Result<Option<Option<String>>, DiscordError> {
        self.watch(guild_id, self.rest.ban_status(guild_id, user_id).await)
    }

    async fn ban(
        &self,
        guild_id: u64,
        user_id: u64,
        delete_message_seconds: u32,
        audit_reason: &str,
    ) -> Result<(), DiscordError> {
        self.watch(guild_id, self.rest.ban(guild_id, user_id, delete_message_seconds, audit_reason).await)
    }

    async fn unban(&self, guild_id: u64, user_id: u64, audit_reason: &str) -> Result<(), DiscordError> {
        self.watch(guild_id, self.rest.unban(guild_id, user_id, audit_reason).await)
    }

    async fn member_roles(&self, guild_id: u64, user_id: u64) -> Result<Option<Vec<u64>>, DiscordError> {
        self.watch(guild_id, self.rest.member_roles(guild_id, user_id).await)
    }

    async fn set_role(
        &self,
        guild_id: u64,
        user_id: u64,
        role_id: u64,
        add: bool,
        audit_reason: &str,
    ) -> Result<(), DiscordError> {
        self.watch(guild_id, self.rest.set_role(guild_id, user_id, role_id, add, audit_reason).await)
    }

    async fn post_audit(&self, channel_id: u64, event: &AuditEvent) -> Result<(), DiscordError> {
        self.rest.post_audit(channel_id, event).await
    }

    async fn create_leak_rule(
        &self,
        guild_id: u64,
        pattern: &str,
        alert_channel: Option<u64>,
    ) -> Result<u64, DiscordError> {
        self.watch(guild_id, self.rest.create_leak_rule(guild_id, pattern, alert_channel).await)
    }

    async fn delete_automod_rule(&self, guild_id: u64, rule_id: u64) -> Result<(), DiscordError> {
        self.watch(guild_id, self.rest.delete_automod_rule(guild_id, rule_id).await)
    }

    fn invalid_answers(&self) -> Option<&InvalidAnswers> {
        self.rest.invalid_answers()
    }
}

/// When an entry was read, how long it holds, and what was read.
type Entry<T> = Option<(Instant, Duration, T)>;

/// Per-key entries that expire, each read by one caller at a time: callers
/// arriving while a read is under way wait for it and share its answer.
pub struct ViewCache<T> {
    slots: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Entry<T>>>>>,
}

impl<T> Default for ViewCache<T> {
    fn default() -> Self {
        Self { slots: Mutex::default() }
    }
}

impl<T: Clone> ViewCache<T> {
    /// The entry for `key` while fresh; else `read` makes it (the value and
    /// how long it holds, counted from when the read began).
    pub async fn get<F, Fut>(&self, key: u64, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (T, Duration)>,
    {
        let slot = self.slot(key);
        let mut entry = slot.lock().await;
        if let Some((at, ttl, value)) = entry.as_ref() {
            if at.elapsed() < *ttl {
                return value.clone();
            }
        }
        let started = Instant::now();
        let (value, ttl) = read().await;
        *entry = Some((started, ttl, value.clone()));
        value
    }

    /// Drops `key`'s entry: the next `get` reads again (a read under way
    /// finishes for those already waiting on it, and is not kept).
    pub fn invalidate(&self, key: u64) {
        self.slots.lock().expect("view cache poisoned").remove(&key);
    }

    fn slot(&self, key: u64) -> Arc<tokio::sync::Mutex<Entry<T>>> {
        let mut slots = self.slots.lock().expect("view cache poisoned");
        if slots.len() >= MAX_GUILDS && !slots.contains_key(&key) {
            // Keep entries in use or still fresh; a locked slot is in use.
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |e| e.as_ref().is_some_and(|(at, ttl, _)| at.elapsed() < *ttl))
            });
        }
        slots.entry(key).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_of_one_guild_share_one_read_and_an_entry_holds_for_its_ttl() {
        let cache = ViewCache::<u32>::default();
        let reads = AtomicU32::new(0);
        let read = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (reads.fetch_add(1, Ordering::SeqCst) + 1, Duration::from_millis(200))
        };
        let answers = tokio::join!(cache.get(1, read), cache.get(1, read), cache.get(1, read));
        assert_eq!(answers, (1, 1, 1), "one read for three callers");
        assert_eq!(cache.get(2, read).await, 2, "another guild is read on its own");
        assert_eq!(cache.get(1, read).await, 1, "fresh: not read again");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.get(1, read).await, 3, "past its TTL: read again");
        cache.invalidate(1);
        assert_eq!(cache.get(1, read).await, 4, "dropped: read again");
        assert_eq!(cache.get(1, read).await, 4);
    }

    #[tokio::test]
    async fn a_failed_read_holds_for_its_own_shorter_ttl() {
        let cache = ViewCache::<Result<u32, String>>::default();
        let failed = || async { (Err("Discord is unavailable".to_owned()), Duration::from_millis(30)) };
        assert!(cache.get(1, failed).await.is_err());
        let ok = || async { (Ok(7), Duration::from_secs(60)) };
        assert!(cache.get(1, ok).await.is_err(), "the failure is answered again for a moment");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.get(1, ok).await, Ok(7));
    }

    #[test]
    fn a_view_is_read_from_discords_guild_and_the_bots_member() {
        let guild = json!({
            "id": "10", "name": "Demo", "icon": "abc", "owner_id": "1", "approximate_member_count": 5,
            "roles": [
                {"id": "10", "permissions": "1024", "position": 0, "managed": false},
                {"id": "20", "permissions": "268435460", "position": 2, "managed": true},
                {"id": "30", "permissions": "8", "position": 4, "managed": false},
            ],
        });
        let member = json!({"roles": ["20"]});
        let channels = json!([
            {"id": "40", "permission_overwrites": [
                {"id": "30", "type": 0, "allow": "8192", "deny": "0"},
                {"id": "10", "type": 0, "allow": "0", "deny": "2048"},
                {"id": "5", "type": 1, "allow": "16", "deny": "0"},
            ]},
            {"id": "41"},
        ]);
        let view = parse_view(10, 7, &guild, &member, &channels).unwrap();
        assert_eq!(
            (view.info.name.as_str(), view.info.member_count, view.info.icon.as_deref()),
            ("Demo", 5, Some("abc"))
        );
        let s = &view.standing;
        assert_eq!((s.owner_id, s.bot_id, s.bot_roles.as_slice()), (1, 7, &[20][..]));
        assert_eq!(s.roles[&30], RoleFacts { permissions: 8, position: 4, managed: false });
        assert_eq!(s.bot_top_position(), 2);
        assert_eq!(s.bot_permissions(), 1024 | 268_435_460);
        assert_eq!(
            s.overwrites,
            [
                Overwrite { channel_id: 40, id: 30, member: false, allow: 8192 },
                Overwrite { channel_id: 40, id: 5, member: true, allow: 16 },
            ],
            "deny-only overwrites grant nothing and are not kept"
        );
        let broken = json!({"name": "Demo", "owner_id": "1", "roles": [{"id": "x"}]});
        assert!(parse_view(10, 7, &broken, &member, &channels).is_err());
    }

    #[test]
    fn discords_403_and_404_for_a_guild_mean_the_bot_is_not_in_it() {
        let refused = |status| DiscordError::Refused { status, code: 0, message: String::new() };
        assert!(not_in_guild(&refused(403)) && not_in_guild(&refused(404)));
        assert!(!not_in_guild(&refused(401)) && !not_in_guild(&refused(429)) && !not_in_guild(&refused(500)));
        assert!(!not_in_guild(&DiscordError::Unavailable("down".into())));
    }
}
