//! What the double starts with: guilds, roles, channels and members ([`DoubleConfig`]), the
//! demo world most tests use ([`DoubleConfig::demo`]) and its well-known ids, and Discord's
//! permission bits.

use std::time::Duration;

/// Discord permission bits the double knows by name (see Discord's "Permissions" docs).
pub mod permissions {
    /// Kick Members.
    pub const KICK_MEMBERS: u64 = 1 << 1;
    /// Ban Members.
    pub const BAN_MEMBERS: u64 = 1 << 2;
    /// Administrator: every permission, every channel override ignored.
    pub const ADMINISTRATOR: u64 = 1 << 3;
    /// Manage Channels.
    pub const MANAGE_CHANNELS: u64 = 1 << 4;
    /// Manage Server.
    pub const MANAGE_GUILD: u64 = 1 << 5;
    /// View Audit Log.
    pub const VIEW_AUDIT_LOG: u64 = 1 << 7;
    /// View Channel.
    pub const VIEW_CHANNEL: u64 = 1 << 10;
    /// Send Messages.
    pub const SEND_MESSAGES: u64 = 1 << 11;
    /// Embed Links.
    pub const EMBED_LINKS: u64 = 1 << 14;
    /// Read Message History.
    pub const READ_MESSAGE_HISTORY: u64 = 1 << 16;
    /// Manage Roles.
    pub const MANAGE_ROLES: u64 = 1 << 28;
    /// Use Application Commands.
    pub const USE_APPLICATION_COMMANDS: u64 = 1 << 31;
    /// Moderate Members (timeouts).
    pub const MODERATE_MEMBERS: u64 = 1 << 40;
    /// Every permission bit Discord defined as of API v10 (bits 0..=50); what an
    /// administrator or the owner resolves to.
    pub const ALL: u64 = (1 << 51) - 1;
    /// What a fresh guild gives `@everyone`.
    pub const EVERYONE_DEFAULT: u64 =
        VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | READ_MESSAGE_HISTORY | USE_APPLICATION_COMMANDS;
}

/// The demo guild ("Demo Guild").
pub const DEMO_GUILD_ID: u64 = 1_000_000_000_000_000_001;
/// A second guild ("Other Guild") with its own admin, for cross-guild isolation tests.
pub const OTHER_GUILD_ID: u64 = 1_000_000_000_000_000_002;
/// The bot's application id (equal to its user id, as for every app created since 2020).
pub const APPLICATION_ID: u64 = 1_100_000_000_000_000_001;
/// The bot's user id.
pub const BOT_USER_ID: u64 = APPLICATION_ID;
/// Alice: owner of the demo guild, holds the Admin role (ADMINISTRATOR).
pub const ALICE_ID: u64 = 1_200_000_000_000_000_001;
/// Morgan: holds the Manager role (MANAGE_GUILD only).
pub const MORGAN_ID: u64 = 1_200_000_000_000_000_002;
/// Pat: a plain member without any management permission.
pub const PAT_ID: u64 = 1_200_000_000_000_000_003;
/// Oscar: owner and admin of the other guild, not a member of the demo guild.
pub const OSCAR_ID: u64 = 1_200_000_000_000_000_004;
/// Dana: a plain member of the demo guild that holds the Verified role.
pub const DANA_ID: u64 = 1_200_000_000_000_000_005;
/// A user known to Discord that is in no guild (for bans of non-members).
pub const STRANGER_ID: u64 = 1_200_000_000_000_000_009;
/// #general in the demo guild (where slash commands are used by default).
pub const GENERAL_CHANNEL_ID: u64 = 1_300_000_000_000_000_001;
/// #audit-log in the demo guild.
pub const AUDIT_LOG_CHANNEL_ID: u64 = 1_300_000_000_000_000_002;
/// #general in the other guild.
pub const OTHER_GENERAL_CHANNEL_ID: u64 = 1_300_000_000_000_000_003;
/// The demo guild's Admin role (ADMINISTRATOR), above the bot's role.
pub const ADMIN_ROLE_ID: u64 = 1_400_000_000_000_000_001;
/// The demo guild's Manager role (MANAGE_GUILD only).
pub const MANAGER_ROLE_ID: u64 = 1_400_000_000_000_000_002;
/// The bot's managed role in the demo guild (MANAGE_ROLES, BAN_MEMBERS, ...).
pub const BOT_ROLE_ID: u64 = 1_400_000_000_000_000_003;
/// The demo guild's Verified role, below the bot's role (so the bot may assign it).
pub const VERIFIED_ROLE_ID: u64 = 1_400_000_000_000_000_004;
/// The other guild's Admin role.
pub const OTHER_ADMIN_ROLE_ID: u64 = 1_400_000_000_000_000_005;
/// The bot's managed role in the other guild.
pub const OTHER_BOT_ROLE_ID: u64 = 1_400_000_000_000_000_006;

/// The permissions the bot's own role carries in the demo world.
pub const BOT_ROLE_PERMISSIONS: u64 = permissions::EVERYONE_DEFAULT
    | permissions::MANAGE_ROLES
    | permissions::BAN_MEMBERS
    | permissions::KICK_MEMBERS
    | permissions::VIEW_AUDIT_LOG;

/// When the first synthetic guild ([`DoubleConfig::with_synthetic_guilds`]) was created, in
/// milliseconds since Discord's epoch (2023-01-01T00:00:00Z): later than every demo id, so
/// synthetic guilds come after the demo guilds in id order (and GUILD_CREATE order).
pub const SYNTHETIC_EPOCH_MS: u64 = 252_460_800_000;
/// Milliseconds between two synthetic guilds' creation times: a prime, so consecutive guilds
/// fall on consecutive shards for every shard count below it (`(id >> 22) % num_shards`).
pub const SYNTHETIC_STEP_MS: u64 = 10_007;
/// The worker-id bits (17..=21) of every synthetic id, so no synthetic id equals an id built
/// another way from the same millisecond.
const SYNTHETIC_WORKER: u64 = 29 << 17;

/// The id of synthetic guild `index` (0-based), a snowflake created at
/// `SYNTHETIC_EPOCH_MS + index * SYNTHETIC_STEP_MS`. Its roles, channels and members' user ids
/// share its timestamp and differ in the low (increment) bits: see [`synthetic_guild`].
pub fn synthetic_guild_id(index: u32) -> u64 {
    ((SYNTHETIC_EPOCH_MS + u64::from(index) * SYNTHETIC_STEP_MS) << 22) | SYNTHETIC_WORKER
}

/// The index of a synthetic guild from its id; `None` for any other id.
pub fn synthetic_guild_index(guild_id: u64) -> Option<u32> {
    let ms = (guild_id >> 22).checked_sub(SYNTHETIC_EPOCH_MS)?;
    let index = u32::try_from(ms / SYNTHETIC_STEP_MS).ok()?;
    (ms % SYNTHETIC_STEP_MS == 0 && synthetic_guild_id(index) == guild_id).then_some(index)
}

/// Synthetic guild `index`, as [`DoubleConfig::with_synthetic_guilds`] adds it: "Guild
/// NNNNN" owned by `owner_NNNNN`, with
///
/// * roles `@everyone` (the default permissions), "Moderator" (position 3: kick, ban,
///   timeout, view audit log), the bot's "GuildKey" role (position 2, [`BOT_ROLE_PERMISSIONS`],
///   managed) and "Verified" (position 1, no permissions);
/// * text channels #general, #audit-log and #off-topic;
/// * members: the owner, a moderator (`mod_NNNNN`), two plain members (`member_NNNNN_1` holds
///   Verified, `member_NNNNN_2` nothing) and the bot.
///
/// Ids: the guild's is [`synthetic_guild_id`]; roles are `guild + 1..=3`, channels
/// `guild + 0x10..`, users `guild + 0x100..` (increment bits of the same snowflake).
pub fn synthetic_guild(index: u32, bot_user_id: u64) -> GuildSeed {
    use permissions::*;
    let id = synthetic_guild_id(index);
    let (moderator, bot_role, verified) = (id + 1, id + 2, id + 3);
    let user = |k: u64| id + 0x100 + k;
    GuildSeed {
        id,
        name: format!("Guild {index:05}"),
        icon: None,
        owner_id: user(0),
        channels: ["general", "audit-log", "off-topic"]
            .iter()
            .zip(0u64..)
            .map(|(name, k)| (id + 0x10 + k, (*name).to_string()))
            .collect(),
        roles: vec![
            RoleSeed::new(id, "@everyone", 0, EVERYONE_DEFAULT),
            RoleSeed::new(moderator, "Moderator", 3, KICK_MEMBERS | BAN_MEMBERS | MODERATE_MEMBERS | VIEW_AUDIT_LOG),
            RoleSeed::new(bot_role, "GuildKey", 2, BOT_ROLE_PERMISSIONS),
            RoleSeed::new(verified, "Verified", 1, 0),
        ],
        members: vec![
            MemberSeed::new(user(0), &format!("owner_{index:05}"), &[]),
            MemberSeed::new(user(1), &format!("mod_{index:05}"), &[moderator]),
            MemberSeed::new(user(2), &format!("member_{index:05}_1"), &[verified]),
            MemberSeed::new(user(3), &format!("member_{index:05}_2"), &[]),
            MemberSeed::new(bot_user_id, "GuildKey", &[bot_role]),
        ],
    }
    .resolve()
}

/// Everything the double starts with.
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// Guilds the bot is in (each becomes a GUILD_CREATE after READY).
    pub guilds: Vec<GuildSeed>,
    /// The application id (READY's `application.id`; interactions' `application_id`).
    pub application_id: u64,
    /// The bot's user id (READY's `user.id`); should be a member of every guild.
    pub bot_user_id: u64,
    /// The bot's username.
    pub bot_username: String,
    /// Hello's `heartbeat_interval` in milliseconds (Discord sends 41250).
    pub heartbeat_interval_ms: u64,
    /// How long after INTERACTION_CREATE the initial callback is accepted (Discord: 3 s);
    /// later callbacks get 404 `{"code":10062,"message":"Unknown interaction"}` and a violation.
    pub interaction_ack_deadline: Duration,
    /// When `Some`, the only accepted `Authorization` header is `Bot <token>`; else any
    /// `Bot ...` token is accepted.
    pub bot_token: Option<String>,
    /// Privileged intents the app has enabled in the Developer Portal (e.g.
    /// `intents::MESSAGE_CONTENT`); an Identify asking for any other privileged intent is
    /// closed with 4014. Default 0: guildkey needs none.
    pub privileged_intents: u64,
    /// The shard count `GET /gateway/bot` recommends (Discord: one per 1,000 guilds or so).
    pub recommended_shards: u32,
    /// When `Some(n)`, an Identify whose shard would hold more than `n` guilds is closed with
    /// 4011 "Sharding required" (Discord's limit is 2,500 guilds per shard).
    pub sharding_required_above: Option<usize>,
    /// Discord's rate limits: route buckets and the global 50 a second
    /// ([`crate::RateLimitConfig`]; generous by default, `RateLimitConfig::off()` for none).
    pub rate_limits: crate::RateLimitConfig,
    /// `session_start_limit.max_concurrency` of `GET /gateway/bot` (Discord: 1 for most bots):
    /// Identifies allowed per 5 s, one per bucket `shard_id % max_concurrency`. An Identify
    /// beyond it is answered with op 9 Invalid Session (`d: false`), as Discord documents.
    pub max_concurrency: u32,
}

/// The shard that owns a guild among `num_shards`: Discord's `(guild_id >> 22) % num_shards`.
pub fn shard_of(guild_id: u64, num_shards: u32) -> u32 {
    ((guild_id >> 22) % u64::from(num_shards.max(1))) as u32
}

/// One guild: its channels, roles and members. `@everyone` (id = guild id) is added when
/// `roles` has no role with the guild's id.
#[derive(Clone, Debug)]
pub struct GuildSeed {
    /// Guild id.
    pub id: u64,
    /// Guild name.
    pub name: String,
    /// Icon hash, if any.
    pub icon: Option<String>,
    /// The owner (resolves to every permission).
    pub owner_id: u64,
    /// Text channels: (id, name).
    pub channels: Vec<(u64, String)>,
    /// Roles.
    pub roles: Vec<RoleSeed>,
    /// Members (the bot must be one of them to act in the guild).
    pub members: Vec<MemberSeed>,
}

/// A role.
#[derive(Clone, Debug)]
pub struct RoleSeed {
    /// Role id.
    pub id: u64,
    /// Role name.
    pub name: String,
    /// Position (0 = `@everyone`; higher is more powerful).
    pub position: u16,
    /// Permission bits.
    pub permissions: u64,
}

/// A member.
#[derive(Clone, Debug)]
pub struct MemberSeed {
    /// User id.
    pub user_id: u64,
    /// Username.
    pub username: String,
    /// Role ids (without `@everyone`).
    pub roles: Vec<u64>,
    /// The member's resolved guild permissions, as Discord puts them into an interaction's
    /// `member.permissions` (see [`resolve_permissions`]).
    pub permissions: u64,
}

impl RoleSeed {
    /// A role.
    pub fn new(id: u64, name: &str, position: u16, permissions: u64) -> Self {
        RoleSeed { id, name: name.to_string(), position, permissions }
    }
}

impl MemberSeed {
    /// A member whose `permissions` are filled in later by [`GuildSeed::resolve`].
    pub fn new(user_id: u64, username: &str, roles: &[u64]) -> Self {
        MemberSeed { user_id, username: username.to_string(), roles: roles.to_vec(), permissions: 0 }
    }
}

/// Discord's guild-level permission resolution: the owner and anyone with ADMINISTRATOR get
/// every permission; everyone else gets `@everyone`'s bits OR their roles' bits.
pub fn resolve_permissions(guild: &GuildSeed, user_id: u64, member_roles: &[u64]) -> u64 {
    if guild.owner_id == user_id {
        return permissions::ALL;
    }
    let mut bits =
        guild.roles.iter().find(|r| r.id == guild.id).map_or(permissions::EVERYONE_DEFAULT, |r| r.permissions);
    for role in guild.roles.iter().filter(|r| member_roles.contains(&r.id)) {
        bits |= role.permissions;
    }
    if bits & permissions::ADMINISTRATOR != 0 {
        permissions::ALL
    } else {
        bits
    }
}

impl GuildSeed {
    /// Adds `@everyone` if missing and fills every member's `permissions` from its roles.
    pub fn resolve(mut self) -> Self {
        if !self.roles.iter().any(|r| r.id == self.id) {
            self.roles.insert(0, RoleSeed::new(self.id, "@everyone", 0, permissions::EVERYONE_DEFAULT));
        }
        let resolved: Vec<u64> = self.members.iter().map(|m| resolve_permissions(&self, m.user_id, &m.roles)).collect();
        for (member, perms) in self.members.iter_mut().zip(resolved) {
            member.permissions = perms;
        }
        self
    }
}

impl Default for DoubleConfig {
    /// One demo guild (the first guild of [`DoubleConfig::demo`]).
    fn default() -> Self {
        let mut cfg = DoubleConfig::demo();
        cfg.guilds.truncate(1);
        cfg
    }
}

impl DoubleConfig {
    /// The demo world: "Demo Guild" ([`DEMO_GUILD_ID`]) with Alice (owner, Admin role),
    /// Morgan (Manager role: MANAGE_GUILD only), Pat (plain member), Dana (Verified), the bot
    /// (its role above "Verified", below "Admin"), #general and #audit-log; and "Other Guild"
    /// ([`OTHER_GUILD_ID`]) owned by Oscar with the bot in it.
    pub fn demo() -> Self {
        use permissions::*;
        let demo = GuildSeed {
            id: DEMO_GUILD_ID,
            name: "Demo Guild".into(),
            icon: None,
            owner_id: ALICE_ID,
            channels: vec![(GENERAL_CHANNEL_ID, "general".into()), (AUDIT_LOG_CHANNEL_ID, "audit-log".into())],
            roles: vec![
                RoleSeed::new(DEMO_GUILD_ID, "@everyone", 0, EVERYONE_DEFAULT),
                RoleSeed::new(ADMIN_ROLE_ID, "Admin", 4, ADMINISTRATOR),
                RoleSeed::new(MANAGER_ROLE_ID, "Manager", 3, MANAGE_GUILD),
                RoleSeed::new(BOT_ROLE_ID, "GuildKey", 2, BOT_ROLE_PERMISSIONS),
                RoleSeed::new(VERIFIED_ROLE_ID, "Verified", 1, 0),
            ],
            members: vec![
                MemberSeed::new(ALICE_ID, "alice", &[ADMIN_ROLE_ID]),
                MemberSeed::new(MORGAN_ID, "morgan", &[MANAGER_ROLE_ID]),
                MemberSeed::new(PAT_ID, "pat", &[]),
                MemberSeed::new(DANA_ID, "dana", &[VERIFIED_ROLE_ID]),
                MemberSeed::new(BOT_USER_ID, "GuildKey", &[BOT_ROLE_ID]),
            ],
        }
        .resolve();
        let other = GuildSeed {
            id: OTHER_GUILD_ID,
            name: "Other Guild".into(),
            icon: None,
            owner_id: OSCAR_ID,
            channels: vec![(OTHER_GENERAL_CHANNEL_ID, "general".into())],
            roles: vec![
                RoleSeed::new(OTHER_GUILD_ID, "@everyone", 0, EVERYONE_DEFAULT),
                RoleSeed::new(OTHER_ADMIN_ROLE_ID, "Admin", 2, ADMINISTRATOR),
                RoleSeed::new(OTHER_BOT_ROLE_ID, "GuildKey", 1, BOT_ROLE_PERMISSIONS),
            ],
            members: vec![
                MemberSeed::new(OSCAR_ID, "oscar", &[OTHER_ADMIN_ROLE_ID]),
                MemberSeed::new(BOT_USER_ID, "GuildKey", &[OTHER_BOT_ROLE_ID]),
            ],
        }
        .resolve();
        DoubleConfig {
            guilds: vec![demo, other],
            application_id: APPLICATION_ID,
            bot_user_id: BOT_USER_ID,
            bot_username: "GuildKey".into(),
            heartbeat_interval_ms: 41_250,
            interaction_ack_deadline: Duration::from_secs(3),
            bot_token: None,
            privileged_intents: 0,
            recommended_shards: 1,
            sharding_required_above: None,
            rate_limits: crate::RateLimitConfig::default(),
            max_concurrency: 1,
        }
    }
}

impl DoubleConfig {
    /// Enables privileged intents for the app (see [`DoubleConfig::privileged_intents`]).
    pub fn with_privileged_intents(mut self, bits: u64) -> Self {
        self.privileged_intents |= bits;
        self
    }

    /// Adds `n` synthetic guilds ([`synthetic_guild`]) to the world, e.g.
    /// `DoubleConfig::demo().with_synthetic_guilds(10_000)`: each gets its GUILD_CREATE on the
    /// shard that owns it, like any other guild. Calling it again adds the next `n` (indices
    /// continue after the synthetic guilds already there).
    pub fn with_synthetic_guilds(mut self, n: u32) -> Self {
        let next = self.guilds.iter().filter_map(|g| synthetic_guild_index(g.id)).map(|i| i + 1).max().unwrap_or(0);
        self.guilds.reserve(n as usize);
        for index in next..next.saturating_add(n) {
            self.guilds.push(synthetic_guild(index, self.bot_user_id));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_permissions_resolve_like_discord() {
        let cfg = DoubleConfig::demo();
        let g = &cfg.guilds[0];
        let perms = |id| g.members.iter().find(|m| m.user_id == id).unwrap().permissions;
        assert_eq!(perms(ALICE_ID), permissions::ALL);
        assert_eq!(perms(MORGAN_ID), permissions::EVERYONE_DEFAULT | permissions::MANAGE_GUILD);
        assert_eq!(perms(PAT_ID), permissions::EVERYONE_DEFAULT);
        assert_eq!(perms(PAT_ID) & permissions::MANAGE_GUILD, 0);
        assert_eq!(DoubleConfig::default().guilds.len(), 1);
    }

    #[test]
    fn synthetic_guilds_have_unique_ids_and_spread_over_shards() {
        let cfg = DoubleConfig::demo().with_synthetic_guilds(30).with_synthetic_guilds(20);
        assert_eq!(cfg.guilds.len(), 52);
        // 1 guild, 3 roles, 3 channels and 4 users of its own per synthetic guild, none of them
        // an id of the demo world.
        let demo = DoubleConfig::demo();
        let demo_ids: std::collections::BTreeSet<u64> = demo
            .guilds
            .iter()
            .flat_map(|g| {
                let roles = g.roles.iter().map(|r| r.id);
                roles.chain(g.channels.iter().map(|c| c.0)).chain(g.members.iter().map(|m| m.user_id))
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for g in &cfg.guilds[2..] {
            ids.extend(g.roles.iter().map(|r| r.id));
            ids.extend(g.channels.iter().map(|c| c.0));
            ids.extend(g.members.iter().filter(|m| m.user_id != BOT_USER_ID).map(|m| m.user_id));
        }
        assert_eq!(ids.len(), 50 * 11, "every synthetic id is distinct");
        assert!(ids.is_disjoint(&demo_ids));
        for (i, g) in cfg.guilds[2..].iter().enumerate() {
            assert_eq!(synthetic_guild_index(g.id), Some(i as u32));
            assert!(g.id > OTHER_GUILD_ID, "after the demo guilds in id order");
            let bot = g.members.iter().find(|m| m.user_id == BOT_USER_ID).expect("bot is a member");
            assert_eq!(bot.permissions, BOT_ROLE_PERMISSIONS | permissions::EVERYONE_DEFAULT);
            assert_eq!(g.members.iter().find(|m| m.user_id == g.owner_id).unwrap().permissions, permissions::ALL);
        }
        assert_eq!(synthetic_guild_index(DEMO_GUILD_ID), None);
        for shards in [2, 3, 4, 10] {
            let per_shard: std::collections::BTreeSet<u32> =
                cfg.guilds[2..].iter().map(|g| shard_of(g.id, shards)).collect();
            assert_eq!(per_shard.len(), shards as usize, "{shards} shards");
        }
    }
}
