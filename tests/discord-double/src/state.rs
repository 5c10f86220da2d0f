//! The double's model of Discord: guilds (channels, roles, members, bans), users, messages,
//! registered application commands and interactions, plus the JSON renderings Discord sends for
//! them (checked against both the OpenAPI spec and serenity's models in the tests).
//!
//! Everything here is synchronous and lives behind one mutex in [`crate::Double`]; handlers
//! never hold it across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use crate::config::{permissions, DoubleConfig, GuildSeed};

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// An error as Discord returns it: HTTP status plus `{"code", "message"[, "errors"]}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Discord's JSON error code.
    pub code: u64,
    /// Discord's message.
    pub message: String,
    /// Optional field errors (`Invalid Form Body`).
    pub errors: Option<Value>,
}

impl ApiError {
    /// An error with Discord's `code` and `message`.
    pub fn new(status: u16, code: u64, message: &str) -> Self {
        ApiError { status, code, message: message.to_string(), errors: None }
    }
    /// 10003 Unknown Channel.
    pub fn unknown_channel() -> Self {
        Self::new(404, 10003, "Unknown Channel")
    }
    /// 10004 Unknown Guild.
    pub fn unknown_guild() -> Self {
        Self::new(404, 10004, "Unknown Guild")
    }
    /// 10007 Unknown Member.
    pub fn unknown_member() -> Self {
        Self::new(404, 10007, "Unknown Member")
    }
    /// 10008 Unknown Message.
    pub fn unknown_message() -> Self {
        Self::new(404, 10008, "Unknown Message")
    }
    /// 10011 Unknown Role.
    pub fn unknown_role() -> Self {
        Self::new(404, 10011, "Unknown Role")
    }
    /// 10013 Unknown User.
    pub fn unknown_user() -> Self {
        Self::new(404, 10013, "Unknown User")
    }
    /// 10015 Unknown Webhook.
    pub fn unknown_webhook() -> Self {
        Self::new(404, 10015, "Unknown Webhook")
    }
    /// 10026 Unknown Ban.
    pub fn unknown_ban() -> Self {
        Self::new(404, 10026, "Unknown Ban")
    }
    /// 10062 Unknown interaction.
    pub fn unknown_interaction() -> Self {
        Self::new(404, 10062, "Unknown interaction")
    }
    /// 10063 Unknown application command.
    pub fn unknown_command() -> Self {
        Self::new(404, 10063, "Unknown application command")
    }
    /// 40060 Interaction has already been acknowledged.
    pub fn already_acknowledged() -> Self {
        Self::new(400, 40060, "Interaction has already been acknowledged.")
    }
    /// 50001 Missing Access.
    pub fn missing_access() -> Self {
        Self::new(403, 50001, "Missing Access")
    }
    /// 50013 Missing Permissions.
    pub fn missing_permissions() -> Self {
        Self::new(403, 50013, "Missing Permissions")
    }
    /// 50006 Cannot send an empty message.
    pub fn empty_message() -> Self {
        Self::new(400, 50006, "Cannot send an empty message")
    }
    /// 50027 Invalid Webhook Token.
    pub fn invalid_webhook_token() -> Self {
        Self::new(401, 50027, "Invalid Webhook Token")
    }
    /// 50035 Invalid Form Body with one field error.
    pub fn invalid_form(field: &str, code: &str, message: &str) -> Self {
        let mut errors = json!({"_errors": [{"code": code, "message": message}]});
        for part in field.split('.').rev().filter(|p| !p.is_empty()) {
            errors = json!({ part: errors });
        }
        ApiError { status: 400, code: 50035, message: "Invalid Form Body".into(), errors: Some(errors) }
    }
    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(e) = &self.errors {
            v["errors"] = e.clone();
        }
        v
    }
}

/// Discord's timestamp format (`2024-05-01T12:00:00.000000+00:00`).
pub fn timestamp_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// `n` pseudo-random lower-case hex digits (session ids, interaction tokens).
pub fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(n + 16);
    let mut i = 0u64;
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Monotonic snowflakes carrying the current time, like Discord's.
#[derive(Debug, Default)]
pub struct Snowflakes {
    last: u64,
    /// The double's clock (it dates the ids); see [`crate::clock`].
    pub clock: crate::clock::Clock,
}

impl Snowflakes {
    /// A fresh id, strictly greater than every id this generator returned before, dated by
    /// the double's clock.
    pub fn fresh(&mut self) -> u64 {
        let ms = self.clock.unix_ms().max(DISCORD_EPOCH_MS);
        let candidate = (ms.saturating_sub(DISCORD_EPOCH_MS)) << 22;
        self.last = candidate.max(self.last + 1);
        self.last
    }
}

/// A user Discord knows.
#[derive(Clone, Debug)]
pub struct User {
    /// Id.
    pub id: u64,
    /// Username.
    pub username: String,
    /// Whether it is a bot account.
    pub bot: bool,
}

/// A guild channel (the double models text channels).
#[derive(Clone, Debug)]
pub struct Channel {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Channel type (0 = text).
    pub kind: u8,
    /// Position in the list.
    pub position: u16,
    /// Whether the bot may send messages here (false simulates a permission overwrite that
    /// denies SEND_MESSAGES to the bot).
    pub bot_can_send: bool,
    /// Role permission overwrites: (role id, allow, deny), as `permission_overwrites` of
    /// type 0 show them.
    pub role_overwrites: Vec<(u64, u64, u64)>,
}

/// A role.
#[derive(Clone, Debug)]
pub struct Role {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Position.
    pub position: u16,
    /// Permission bits.
    pub permissions: u64,
    /// Managed by an integration (the bot's own role).
    pub bot_id: Option<u64>,
}

/// A guild member.
#[derive(Clone, Debug)]
pub struct Member {
    /// User id.
    pub user_id: u64,
    /// Role ids (without `@everyone`).
    pub roles: Vec<u64>,
    /// Resolved guild permissions.
    pub permissions: u64,
    /// Join time.
    pub joined_at: String,
}

/// A guild.
#[derive(Clone, Debug)]
pub struct Guild {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Icon hash.
    pub icon: Option<String>,
    /// Owner.
    pub owner_id: u64,
    /// Channels by id.
    pub channels: BTreeMap<u64, Channel>,
    /// Roles by id (includes `@everyone`, id = guild id).
    pub roles: BTreeMap<u64, Role>,
    /// Members by user id.
    pub members: BTreeMap<u64, Member>,
    /// Bans: user id → reason.
    pub bans: BTreeMap<u64, Option<String>>,
    /// AutoMod rules by id, stored as Discord returns them (`KeywordRuleResponse`).
    pub automod_rules: BTreeMap<u64, Value>,
}

/// A message the bot created (channel message, interaction response or follow-up).
#[derive(Clone, Debug)]
pub struct Message {
    /// Id.
    pub id: u64,
    /// Channel.
    pub channel_id: u64,
    /// Guild, if in one.
    pub guild_id: Option<u64>,
    /// Author (the bot, or a member for [`crate::Double::post_user_message`] and AutoMod
    /// alerts).
    pub author_id: u64,
    /// Text.
    pub content: String,
    /// Embeds (normalised: `type` = `rich`).
    pub embeds: Vec<Value>,
    /// Components (normalised: numeric `id`s).
    pub components: Vec<Value>,
    /// Message flags (64 = ephemeral, 128 = loading).
    pub flags: u64,
    /// Message type (0 default, 20 chat input command, 24 AutoMod action).
    pub kind: u8,
    /// Created at.
    pub timestamp: String,
    /// Last edit.
    pub edited_timestamp: Option<String>,
    /// Interaction this message answers.
    pub interaction_id: Option<u64>,
    /// Deleted.
    pub deleted: bool,
}

/// The bot's answer to an interaction callback.
#[derive(Clone, Debug)]
pub struct Callback {
    /// Callback type (4 message, 5 deferred, 6 deferred update, 7 update, 8 autocomplete, 9 modal).
    pub kind: u8,
    /// The callback's `data`.
    pub data: Value,
    /// When it arrived.
    pub at: SystemTime,
}

/// An interaction the double sent to the bot.
#[derive(Clone, Debug)]
pub struct Interaction {
    /// Id.
    pub id: u64,
    /// Token.
    pub token: String,
    /// 2 application command, 3 component, 4 autocomplete, 5 modal submit.
    pub kind: u8,
    /// Guild (None in DMs).
    pub guild_id: Option<u64>,
    /// Channel.
    pub channel_id: u64,
    /// Invoking user.
    pub user_id: u64,
    /// Command name (application commands).
    pub name: Option<String>,
    /// For components: the message the button is on.
    pub component_message: Option<u64>,
    /// When it was dispatched.
    pub created: Instant,
    /// The callback, once acknowledged.
    pub callback: Option<Callback>,
    /// The message `@original` refers to.
    pub original: Option<u64>,
    /// Follow-up messages.
    pub followups: Vec<u64>,
    /// The dispatched payload.
    pub payload: Value,
}

/// The whole modelled world.
pub struct State {
    /// Application id.
    pub app_id: u64,
    /// Bot user id.
    pub bot_user_id: u64,
    /// Guilds.
    pub guilds: BTreeMap<u64, Guild>,
    /// Users.
    pub users: BTreeMap<u64, User>,
    /// Messages by id.
    pub messages: BTreeMap<u64, Message>,
    /// Interactions by id.
    pub interactions: HashMap<u64, Interaction>,
    /// Global commands.
    pub global_commands: Vec<Value>,
    /// Guild commands.
    pub guild_commands: BTreeMap<u64, Vec<Value>>,
    /// Stable command ids by (guild, name): Discord keeps a command's id across bulk
    /// overwrites as long as the name stays.
    pub command_ids: HashMap<(Option<u64>, String), u64>,
    /// DM channel per user.
    pub dm_channels: BTreeMap<u64, u64>,
    /// Channels deleted by the test.
    pub deleted_channels: HashSet<u64>,
    /// Guilds in an outage ([`crate::Double::guild_outage`]): GUILD_DELETE with
    /// `unavailable: true` was sent, and no event about them is dispatched until they return.
    pub unavailable_guilds: HashSet<u64>,
    /// Id generator.
    pub ids: Snowflakes,
}

impl State {
    /// Builds the world from the config.
    pub fn new(cfg: &DoubleConfig) -> Self {
        let mut users = BTreeMap::new();
        users.insert(cfg.bot_user_id, User { id: cfg.bot_user_id, username: cfg.bot_username.clone(), bot: true });
        users.insert(
            crate::config::STRANGER_ID,
            User { id: crate::config::STRANGER_ID, username: "stranger".into(), bot: false },
        );
        let joined = timestamp_now();
        let mut guilds = BTreeMap::new();
        for seed in &cfg.guilds {
            let seed: GuildSeed = seed.clone().resolve_missing();
            let mut g = Guild {
                id: seed.id,
                name: seed.name.clone(),
                icon: seed.icon.clone(),
                owner_id: seed.owner_id,
                channels: BTreeMap::new(),
                roles: BTreeMap::new(),
                members: BTreeMap::new(),
                bans: BTreeMap::new(),
                automod_rules: BTreeMap::new(),
            };
            for (pos, (id, name)) in seed.channels.iter().enumerate() {
                g.channels.insert(
                    *id,
                    Channel {
                        id: *id,
                        name: name.clone(),
                        kind: 0,
                        position: pos as u16,
                        bot_can_send: true,
                        role_overwrites: Vec::new(),
                    },
                );
            }
            let bot_roles: Vec<u64> =
                seed.members.iter().find(|m| m.user_id == cfg.bot_user_id).map(|m| m.roles.clone()).unwrap_or_default();
            for r in &seed.roles {
                // The bot's highest role is its managed integration role.
                let managed = bot_roles
                    .iter()
                    .filter_map(|id| seed.roles.iter().find(|x| x.id == *id))
                    .max_by_key(|x| x.position)
                    .is_some_and(|top| top.id == r.id);
                g.roles.insert(
                    r.id,
                    Role {
                        id: r.id,
                        name: r.name.clone(),
                        position: r.position,
                        permissions: r.permissions,
                        bot_id: managed.then_some(cfg.bot_user_id),
                    },
                );
            }
            for m in &seed.members {
                users.entry(m.user_id).or_insert_with(|| User {
                    id: m.user_id,
                    username: m.username.clone(),
                    bot: m.user_id == cfg.bot_user_id,
                });
                g.members.insert(
                    m.user_id,
                    Member {
                        user_id: m.user_id,
                        roles: m.roles.clone(),
                        permissions: m.permissions,
                        joined_at: joined.clone(),
                    },
                );
            }
            guilds.insert(g.id, g);
        }
        State {
            app_id: cfg.application_id,
            bot_user_id: cfg.bot_user_id,
            guilds,
            users,
            messages: BTreeMap::new(),
            interactions: HashMap::new(),
            global_commands: Vec::new(),
            guild_commands: BTreeMap::new(),
            command_ids: HashMap::new(),
            dm_channels: BTreeMap::new(),
            deleted_channels: HashSet::new(),
            unavailable_guilds: HashSet::new(),
            ids: Snowflakes::default(),
        }
    }

    // ----- lookups -----------------------------------------------------------------------

    /// The guild, or 10004.
    pub fn guild(&self, id: u64) -> Result<&Guild, ApiError> {
        self.guilds.get(&id).ok_or_else(ApiError::unknown_guild)
    }

    /// The guild, or 10004.
    pub fn guild_mut(&mut self, id: u64) -> Result<&mut Guild, ApiError> {
        self.guilds.get_mut(&id).ok_or_else(ApiError::unknown_guild)
    }

    /// The guild that holds `channel_id`, with the channel.
    pub fn channel(&self, channel_id: u64) -> Option<(&Guild, &Channel)> {
        self.guilds.values().find_map(|g| g.channels.get(&channel_id).map(|c| (g, c)))
    }

    /// The user a DM channel belongs to.
    pub fn dm_user(&self, channel_id: u64) -> Option<u64> {
        self.dm_channels.iter().find(|(_, c)| **c == channel_id).map(|(u, _)| *u)
    }

    /// The DM channel with `user_id`, created on first use.
    pub fn dm_channel(&mut self, user_id: u64) -> u64 {
        if let Some(c) = self.dm_channels.get(&user_id) {
            return *c;
        }
        let id = self.ids.fresh();
        self.dm_channels.insert(user_id, id);
        id
    }

    /// A user (synthesised as `user-<id>` when unknown, like any valid Discord account).
    pub fn user(&mut self, id: u64) -> User {
        self.users.entry(id).or_insert_with(|| User { id, username: format!("user-{id}"), bot: false }).clone()
    }

    /// Position of the member's highest role (0 = only `@everyone`).
    pub fn top_position(guild: &Guild, user_id: u64) -> u16 {
        guild
            .members
            .get(&user_id)
            .map(|m| m.roles.iter().filter_map(|r| guild.roles.get(r)).map(|r| r.position).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Resolved guild permissions of a member from its current roles.
    pub fn resolve(guild: &Guild, user_id: u64, roles: &[u64]) -> u64 {
        if guild.owner_id == user_id {
            return permissions::ALL;
        }
        let mut bits = guild.roles.get(&guild.id).map_or(0, |r| r.permissions);
        for r in roles.iter().filter_map(|r| guild.roles.get(r)) {
            bits |= r.permissions;
        }
        if bits & permissions::ADMINISTRATOR != 0 {
            permissions::ALL
        } else {
            bits
        }
    }

    /// The bot's permissions in the guild (10004 when the bot is not in it).
    pub fn bot_permissions(&self, guild_id: u64) -> Result<u64, ApiError> {
        let g = self.guild(guild_id)?;
        let m = g.members.get(&self.bot_user_id).ok_or_else(ApiError::missing_access)?;
        Ok(m.permissions)
    }

    // ----- JSON renderings -----------------------------------------------------------------

    /// A user object (`UserResponse`).
    pub fn user_json(&self, id: u64) -> Value {
        let (username, bot) =
            self.users.get(&id).map_or((format!("user-{id}"), false), |u| (u.username.clone(), u.bot));
        let mut v = json!({
            "id": id.to_string(),
            "username": username,
            "avatar": null,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "global_name": if bot { Value::Null } else { json!(username) },
            "banner": null,
            "accent_color": null,
            "avatar_decoration_data": null,
            "collectibles": null,
            "primary_guild": null,
        });
        if bot {
            v["bot"] = json!(true);
        }
        v
    }

    /// The current (bot) user with the private fields of `GET /users/@me`.
    pub fn me_json(&self) -> Value {
        let mut v = self.user_json(self.bot_user_id);
        let obj = v.as_object_mut().expect("object");
        obj.insert("mfa_enabled".into(), json!(false));
        obj.insert("locale".into(), json!("en-US"));
        obj.insert("premium_type".into(), json!(0));
        obj.insert("email".into(), Value::Null);
        obj.insert("verified".into(), json!(true));
        v
    }

    /// A role object (`GuildRoleResponse`).
    pub fn role_json(role: &Role) -> Value {
        let mut v = json!({
            "id": role.id.to_string(),
            "name": role.name,
            "permissions": role.permissions.to_string(),
            "position": role.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false,
            "managed": role.bot_id.is_some(),
            "mentionable": false,
            "icon": null,
            "unicode_emoji": null,
            "flags": 0,
        });
        if let Some(bot) = role.bot_id {
            v["tags"] = json!({"bot_id": bot.to_string()});
        }
        v
    }

    /// A member object (`GuildMemberResponse`); `with_permissions` adds the resolved
    /// `permissions` string, as in interactions.
    pub fn member_json(&self, guild: &Guild, member: &Member, with_permissions: bool) -> Value {
        let mut v = json!({
            "user": self.user_json(member.user_id),
            "nick": null,
            "avatar": null,
            "banner": null,
            "roles": member.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "joined_at": member.joined_at,
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "communication_disabled_until": null,
            "unusual_dm_activity_until": null,
        });
        if with_permissions {
            v["permissions"] = json!(member.permissions.to_string());
        }
        let _ = guild;
        v
    }

    /// A guild text channel (`GuildChannelResponse`).
    pub fn channel_json(guild: &Guild, c: &Channel) -> Value {
        json!({
            "id": c.id.to_string(),
            "type": c.kind,
            "guild_id": guild.id.to_string(),
            "name": c.name,
            "position": c.position,
            "flags": 0,
            "parent_id": null,
            "topic": null,
            "nsfw": false,
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "permission_overwrites": c
                .role_overwrites
                .iter()
                .map(|(id, allow, deny)| json!({
                    "id": id.to_string(),
                    "type": 0,
                    "allow": allow.to_string(),
                    "deny": deny.to_string(),
                }))
                .collect::<Vec<_>>(),
        })
    }

    /// A DM channel (`PrivateChannelResponse`).
    pub fn dm_channel_json(&self, channel_id: u64, user_id: u64) -> Value {
        json!({
            "id": channel_id.to_string(),
            "type": 1,
            "flags": 0,
            "last_message_id": null,
            "recipients": [self.user_json(user_id)],
        })
    }

    /// The guild as `GET /guilds/{id}` returns it (`GuildWithCountsResponse`).
    pub fn guild_json(&self, g: &Guild, with_counts: bool) -> Value {
        let mut v = json!({
            "id": g.id.to_string(),
            "name": g.name,
            "icon": g.icon,
            "description": null,
            "home_header": null,
            "splash": null,
            "discovery_splash": null,
            "features": [],
            "banner": null,
            "owner_id": g.owner_id.to_string(),
            "application_id": null,
            "region": "deprecated",
            "afk_channel_id": null,
            "afk_timeout": 300,
            "system_channel_id": null,
            "system_channel_flags": 0,
            "widget_enabled": false,
            "widget_channel_id": null,
            "verification_level": 0,
            "roles": g.roles.values().map(Self::role_json).collect::<Vec<_>>(),
            "default_message_notifications": 0,
            "mfa_level": 0,
            "explicit_content_filter": 0,
            "max_presences": null,
            "max_members": 500000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": null,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "rules_channel_id": null,
            "safety_alerts_channel_id": null,
            "public_updates_channel_id": null,
            "premium_progress_bar_enabled": false,
            "nsfw": false,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "incidents_data": null,
        });
        if with_counts {
            v["approximate_member_count"] = json!(g.members.len());
            v["approximate_presence_count"] = json!(0);
        }
        v
    }

    /// The guild as GUILD_CREATE carries it for a session identified with `intents`: the REST
    /// object plus `joined_at`, `large`, `member_count`, `members`, `channels`, `threads`,
    /// `presences`, `voice_states`, ... Without GUILD_PRESENCES, `members` holds only the bot
    /// (Discord: "only contain your bot and users in voice channels"; nobody is in voice here);
    /// `member_count` is the whole guild's either way.
    pub fn guild_create_json(&self, g: &Guild, intents: u64) -> Value {
        let mut v = self.guild_json(g, false);
        let joined = g.members.get(&self.bot_user_id).map_or_else(timestamp_now, |m| m.joined_at.clone());
        let everyone = intents & crate::gateway::intents::GUILD_PRESENCES != 0;
        let members: Vec<Value> = g
            .members
            .values()
            .filter(|m| everyone || m.user_id == self.bot_user_id)
            .map(|m| self.member_json(g, m, false))
            .collect();
        let extra = json!({
            "joined_at": joined,
            "large": false,
            "unavailable": false,
            "member_count": g.members.len(),
            "members": members,
            "channels": g.channels.values().map(|c| Self::channel_json(g, c)).collect::<Vec<_>>(),
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "lazy": true,
            "application_command_counts": {},
        });
        for (k, val) in extra.as_object().expect("object") {
            v[k] = val.clone();
        }
        v
    }

    /// A message object (`MessageResponse`).
    pub fn message_json(&self, m: &Message) -> Value {
        let mut v = json!({
            "id": m.id.to_string(),
            "channel_id": m.channel_id.to_string(),
            "author": self.user_json(m.author_id),
            "content": m.content,
            "timestamp": m.timestamp,
            "edited_timestamp": m.edited_timestamp,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": m.embeds,
            "pinned": false,
            "type": m.kind,
            "flags": m.flags,
            "components": m.components,
        });
        if let Some(iid) = m.interaction_id {
            if let Some(i) = self.interactions.get(&iid) {
                v["webhook_id"] = json!(self.app_id.to_string());
                v["application_id"] = json!(self.app_id.to_string());
                let owners = authorizing_owners(i.guild_id);
                let mut meta = json!({
                    "id": i.id.to_string(),
                    "type": i.kind,
                    "user": self.user_json(i.user_id),
                    "authorizing_integration_owners": owners,
                });
                if let Some(orig) = i.original.filter(|o| *o != m.id) {
                    meta["original_response_message_id"] = json!(orig.to_string());
                }
                if i.kind == 3 {
                    if let Some(cm) = i.component_message {
                        meta["interacted_message_id"] = json!(cm.to_string());
                    }
                }
                v["interaction_metadata"] = meta;
                if let Some(name) = &i.name {
                    v["interaction"] = json!({
                        "id": i.id.to_string(),
                        "type": i.kind,
                        "name": name,
                        "user": self.user_json(i.user_id),
                    });
                }
            }
        }
        v
    }

    // ----- mutations -------------------------------------------------------------------

    /// Stores a new message by the bot and returns its id.
    pub fn create_message(
        &mut self,
        channel_id: u64,
        guild_id: Option<u64>,
        body: &Value,
        kind: u8,
        interaction_id: Option<u64>,
    ) -> u64 {
        let id = self.ids.fresh();
        let m = Message {
            id,
            channel_id,
            guild_id,
            author_id: self.bot_user_id,
            content: body["content"].as_str().unwrap_or_default().to_string(),
            embeds: normalise_embeds(&body["embeds"]),
            components: normalise_components(&body["components"]),
            flags: body["flags"].as_u64().unwrap_or(0),
            kind,
            timestamp: timestamp_now(),
            edited_timestamp: None,
            interaction_id,
            deleted: false,
        };
        self.messages.insert(id, m);
        id
    }

    /// Applies an edit (`content`, `embeds`, `components`, `flags` when present).
    pub fn edit_message(&mut self, id: u64, body: &Value) -> Result<(), ApiError> {
        let m = self.messages.get_mut(&id).filter(|m| !m.deleted).ok_or_else(ApiError::unknown_message)?;
        if let Some(obj) = body.as_object() {
            if let Some(c) = obj.get("content") {
                m.content = c.as_str().unwrap_or_default().to_string();
            }
            if let Some(e) = obj.get("embeds") {
                m.embeds = normalise_embeds(e);
            }
            if let Some(c) = obj.get("components") {
                m.components = normalise_components(c);
            }
            if let Some(f) = obj.get("flags").and_then(Value::as_u64) {
                // Only SUPPRESS_EMBEDS (4) may change on edit; ephemeral stays as created.
                m.flags = (m.flags & !4) | (f & 4);
            }
        }
        m.flags &= !128; // an edit ends the "loading" state of a deferred response
        m.edited_timestamp = Some(timestamp_now());
        Ok(())
    }
}

trait ResolveMissing {
    fn resolve_missing(self) -> Self;
}

impl ResolveMissing for GuildSeed {
    /// Adds `@everyone` and resolves members whose `permissions` were left at 0.
    fn resolve_missing(self) -> Self {
        let explicit: Vec<u64> = self.members.iter().map(|m| m.permissions).collect();
        let mut resolved = self.resolve();
        for (m, p) in resolved.members.iter_mut().zip(explicit) {
            if p != 0 {
                m.permissions = p;
            }
        }
        resolved
    }
}

/// `authorizing_integration_owners` for a guild install used in a guild or in a DM ("0").
pub fn authorizing_owners(guild_id: Option<u64>) -> Value {
    json!({"0": guild_id.map_or_else(|| "0".to_string(), |g| g.to_string())})
}

/// Drops `null`s recursively (Discord omits absent fields in what it returns).
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Embeds as Discord returns them (`type: "rich"` added, fields' `inline` defaulted).
pub fn normalise_embeds(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|embeds| {
            embeds
                .iter()
                .map(|e| {
                    let mut e = strip_nulls(e);
                    if let Some(obj) = e.as_object_mut() {
                        obj.entry("type").or_insert(json!("rich"));
                        if let Some(Value::Array(fields)) = obj.get_mut("fields") {
                            for f in fields.iter_mut().filter_map(Value::as_object_mut) {
                                f.entry("inline").or_insert(json!(false));
                            }
                        }
                    }
                    e
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Components as Discord returns them: every component gets a numeric `id` (1, 2, ... in
/// document order unless the bot set one), nulls dropped.
pub fn normalise_components(v: &Value) -> Vec<Value> {
    fn walk(v: &mut Value, next: &mut u64) {
        if let Some(obj) = v.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
            if !obj.contains_key("id") {
                obj.insert("id".into(), json!(*next));
            }
            *next += 1;
            if let Some(Value::Array(children)) = obj.get_mut("components") {
                for c in children {
                    walk(c, next);
                }
            }
        }
    }
    let mut next = 1;
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let mut r = r.clone();
                    walk(&mut r, &mut next);
                    r
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every `custom_id` in a component tree.
pub fn custom_ids(components: &[Value]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        if let Some(id) = v.get("custom_id").and_then(Value::as_str) {
            out.push(id.to_string());
        }
        if let Some(children) = v.get("components").and_then(Value::as_array) {
            children.iter().for_each(|c| walk(c, out));
        }
    }
    let mut out = Vec::new();
    components.iter().for_each(|c| walk(c, &mut out));
    out
}

/// Finds the component with `custom_id`.
pub fn find_component<'a>(components: &'a [Value], custom_id: &str) -> Option<&'a Value> {
    fn walk<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
        if v.get("custom_id").and_then(Value::as_str) == Some(id) {
            return Some(v);
        }
        v.get("components").and_then(Value::as_array).and_then(|cs| cs.iter().find_map(|c| walk(c, id)))
    }
    components.iter().find_map(|c| walk(c, custom_id))
}

/// Drops `null` members of a JSON object (serenity serialises some `None`s as `null`).
pub fn without_nulls(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|o| o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}
