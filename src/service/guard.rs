//! Guarding a guild against its own keys, and the bot's access to Discord
//! against one guild.
//!
//! - **Roles a key may touch** ([`check_role`]): whatever a key's own
//!   `allowed_roles` say, a role that carries a dangerous permission, is
//!   managed, is `@everyone`, or sits at or above the bot's top role is never
//!   added or removed through the API. Checked against the gateway cache's
//!   hierarchy before any Discord call.
//! - **Members a key may ban** ([`check_ban_target`]): not the owner, not a
//!   member holding a dangerous permission, not one the bot cannot outrank.
//! - **What the bot may do** ([`check_bot_may`]): a write the bot lacks the
//!   permission for is refused here, not by Discord.
//! - **Discord's refusals** ([`DiscordGuard`]): Discord cuts a bot off from
//!   its API, for every guild, after 10,000 invalid requests (401, 403, 429)
//!   from one IP in 10 minutes. A refusal is remembered briefly and answered
//!   again without asking; a guild whose calls Discord keeps refusing gets
//!   its Discord calls paused until its count falls. The count is the
//!   bot's, every instance's together (`tasks::refusals`), and the bot as
//!   a whole has a budget too: as it runs out, the guilds refused most are
//!   paused first ([`DiscordGuard::cap`]).
//!
//! Pure rules over what the adapter ([`crate::discord`]) reports; no I/O.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::index::KeyInfo;
use super::{Error, Result};
use crate::discord::permissions as p;
use crate::discord::{DiscordError, InvalidAnswers, Standing};

/// Permissions that make a role (or a member) a way to take a server over,
/// or to moderate it: a key never grants or removes a role carrying one
/// (in the guild, or in any channel's permission overwrites), never bans a
/// member holding one, and never takes a role from such a member.
pub const DANGEROUS: [(u64, &str); 18] = [
    (p::ADMINISTRATOR, "Administrator"),
    (p::MANAGE_GUILD, "Manage Server"),
    (p::MANAGE_ROLES, "Manage Roles"),
    (p::BAN_MEMBERS, "Ban Members"),
    (p::KICK_MEMBERS, "Kick Members"),
    (p::MANAGE_CHANNELS, "Manage Channels"),
    (p::MANAGE_WEBHOOKS, "Manage Webhooks"),
    (p::MODERATE_MEMBERS, "Moderate Members"),
    (p::MANAGE_MESSAGES, "Manage Messages"),
    (p::MANAGE_THREADS, "Manage Threads"),
    (p::MANAGE_GUILD_EXPRESSIONS, "Manage Expressions"),
    (p::MENTION_EVERYONE, "Mention Everyone"),
    (p::MANAGE_NICKNAMES, "Manage Nicknames"),
    (p::MANAGE_EVENTS, "Manage Events"),
    (p::VIEW_AUDIT_LOG, "View Audit Log"),
    (p::MUTE_MEMBERS, "Mute Members"),
    (p::DEAFEN_MEMBERS, "Deafen Members"),
    (p::MOVE_MEMBERS, "Move Members"),
];

/// The first eight of [`DANGEROUS`]: the powers that take a server over.
/// `@everyone` holding one of these marks every member; the moderator
/// powers added after them count only from a member's own roles and
/// overwrites (a server whose `@everyone` may mention everyone, Discord's
/// old default, could otherwise ban no one).
const TAKEOVER: u64 = p::ADMINISTRATOR
    | p::MANAGE_GUILD
    | p::MANAGE_ROLES
    | p::BAN_MEMBERS
    | p::KICK_MEMBERS
    | p::MANAGE_CHANNELS
    | p::MANAGE_WEBHOOKS
    | p::MODERATE_MEMBERS;

/// The names of the dangerous permissions among `bits`.
fn dangerous_in(bits: u64) -> Vec<&'static str> {
    DANGEROUS.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, name)| *name).collect()
}

/// [`dangerous_in`] for a channel overwrite, where Manage Roles is called
/// Manage Permissions.
fn dangerous_in_overwrite(bits: u64) -> Vec<&'static str> {
    dangerous_in(bits).into_iter().map(|n| if n == "Manage Roles" { "Manage Permissions" } else { n }).collect()
}

/// The powers that protect a member (see [`TAKEOVER`]): every one for the
/// owner or an administrator; else their roles', `@everyone`'s takeover
/// powers, and what channel overwrites allow them or their roles.
fn member_powers(standing: &Standing, user_id: u64, roles: &[u64]) -> u64 {
    let guild = standing.permissions_of(user_id, roles);
    if guild == p::ALL {
        return p::ALL;
    }
    let own = roles.iter().filter_map(|r| standing.roles.get(r)).fold(0, |b, r| b | r.permissions);
    own | (guild & TAKEOVER) | standing.overwrite_allows_of(user_id, roles)
}

/// Why a member is beyond a key's reach, if they are.
enum Protected {
    Owner,
    Bot,
    Holds(Vec<&'static str>),
    OutranksBot,
}

/// Whether a member is protected: the owner, the bot, a member holding a
/// dangerous permission (guild-wide or in one channel), a member the bot
/// does not outrank. `member_roles` is `None` for a non-member.
fn protection(standing: &Standing, user_id: u64, member_roles: Option<&[u64]>) -> Option<Protected> {
    if user_id == standing.owner_id {
        return Some(Protected::Owner);
    }
    if user_id == standing.bot_id {
        return Some(Protected::Bot);
    }
    let roles = member_roles?;
    let dangerous = dangerous_in(member_powers(standing, user_id, roles));
    if !dangerous.is_empty() {
        return Some(Protected::Holds(dangerous));
    }
    if standing.bot_id != standing.owner_id && standing.top_position(roles) >= standing.bot_top_position() {
        return Some(Protected::OutranksBot);
    }
    None
}

/// How long a Discord refusal (403) is answered again without asking.
pub const REFUSAL_TTL: Duration = Duration::from_secs(30);

fn not_ready() -> Error {
    Error::Discord(
        "the bot has not yet received this server's roles from Discord (it is starting or reconnecting); \
         try again in a few seconds"
            .to_owned(),
    )
}

/// May this key add or remove `role_id`? The key's own list first, then the
/// rules no key can lift. `standing` is the gateway cache's view; without
/// it nothing is allowed (fail closed).
pub fn check_role(key: &KeyInfo, standing: Option<&Standing>, role_id: u64) -> Result<()> {
    check_role_list(key, role_id)?;
    check_role_safety(key.guild_id, standing, role_id)
}

/// The rules no key can lift, for a role of `guild_id` (see [`check_role`]).
pub fn check_role_safety(guild_id: u64, standing: Option<&Standing>, role_id: u64) -> Result<()> {
    if role_id == guild_id {
        return Err(Error::RoleNotAllowed("@everyone is not a role a key can give or take".to_owned()));
    }
    let standing = standing.ok_or_else(not_ready)?;
    let Some(role) = standing.roles.get(&role_id) else {
        // What Discord would answer, without asking it.
        return Err(Error::Discord(
            DiscordError::Refused {
                status: 404,
                code: crate::discord::codes::UNKNOWN_ROLE,
                message: "Unknown Role".into(),
            }
            .to_string(),
        ));
    };
    if role.managed {
        return Err(Error::RoleNotAllowed(format!(
            "<@&{role_id}> is managed by an integration (a bot's or the booster role); keys cannot change it"
        )));
    }
    let dangerous = dangerous_in(role.permissions);
    if !dangerous.is_empty() {
        return Err(Error::RoleNotAllowed(format!(
            "<@&{role_id}> carries {}; guildkey never lets a key give or take such a role",
            dangerous.join(", ")
        )));
    }
    for overwrite in standing.role_overwrites(role_id) {
        let dangerous = dangerous_in_overwrite(overwrite.allow);
        if !dangerous.is_empty() {
            return Err(Error::RoleNotAllowed(format!(
                "<@&{role_id}> carries {} in <#{}>'s permission overwrites; guildkey never lets a key give or take \
                 a role that moderates even one channel",
                dangerous.join(", "),
                overwrite.channel_id
            )));
        }
    }
    if standing.bot_id != standing.owner_id && role.position >= standing.bot_top_position() {
        return Err(Error::RoleNotAllowed(format!(
            "<@&{role_id}> sits at or above the bot's highest role; move the bot's role above it in Server \
             Settings → Roles if keys should manage it"
        )));
    }
    Ok(())
}

/// Does the key's own `allowed_roles` list (if it has one) name the role?
pub fn check_role_list(key: &KeyInfo, role_id: u64) -> Result<()> {
    if key.allows_role(role_id) {
        return Ok(());
    }
    Err(Error::RoleNotAllowed(format!(
        "this key may only change the roles in its allowed_roles list, and <@&{role_id}> is not in it"
    )))
}

/// May a key ban (or check the ban of) this user? `member_roles` is `None`
/// for a user who is not a member (anyone may be banned pre-emptively).
pub fn check_ban_target(standing: &Standing, user_id: u64, member_roles: Option<&[u64]>) -> Result<()> {
    let message = match protection(standing, user_id, member_roles) {
        None => return Ok(()),
        Some(Protected::Owner) => "the server's owner cannot be banned".to_owned(),
        Some(Protected::Bot) => "guildkey will not ban its own bot".to_owned(),
        Some(Protected::Holds(dangerous)) => format!(
            "<@{user_id}> holds {}; guildkey never lets a key ban a member with such permissions",
            dangerous.join(", ")
        ),
        Some(Protected::OutranksBot) => {
            format!("<@{user_id}>'s highest role is at or above the bot's, so Discord would refuse the ban")
        }
    };
    Err(Error::MemberProtected(message))
}

/// May a key take a role from this member? A protected member (see
/// [`check_ban_target`]: the owner, the bot, a moderator, one the bot does
/// not outrank) loses no role through a key: taking a role is how a key
/// would demote them.
pub fn check_role_removal(standing: Option<&Standing>, user_id: u64, member_roles: &[u64]) -> Result<()> {
    let standing = standing.ok_or_else(not_ready)?;
    let who = match protection(standing, user_id, Some(member_roles)) {
        None => return Ok(()),
        Some(Protected::Owner) => "the server's owner".to_owned(),
        Some(Protected::Bot) => "guildkey's own bot".to_owned(),
        Some(Protected::Holds(dangerous)) => format!("<@{user_id}>, who holds {},", dangerous.join(", ")),
        Some(Protected::OutranksBot) => format!("<@{user_id}>, whose highest role is at or above the bot's,"),
    };
    Err(Error::MemberProtected(format!("{who} cannot lose a role through an API key")))
}

/// Does the bot hold `permission` in the guild? Answered as Discord would
/// (Missing Permissions), without asking it.
pub fn check_bot_may(standing: Option<&Standing>, permission: u64, name: &str) -> Result<()> {
    let standing = standing.ok_or_else(not_ready)?;
    if standing.bot_permissions() & permission == permission {
        return Ok(());
    }
    Err(Error::Discord(format!(
        "Missing Permissions: the bot lacks {name} in this server (checked by guildkey; Discord was not asked). \
         Give the bot's role {name} in Server Settings → Roles"
    )))
}

/// What a remembered refusal was for: a ban check is refused guild-wide
/// (a missing permission), a write for its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    BanCheck,
    Ban(u64),
    Unban(u64),
    Member(u64),
    Role { user: u64, role: u64 },
    AutoMod,
    AuditPost(u64),
}

/// How many Discord calls one guild may have in flight at once. Bounds how
/// many refusals a burst can earn before the first one is remembered, and
/// keeps one guild from filling Discord's per-route buckets alone.
pub const CALLS_IN_FLIGHT_PER_GUILD: usize = 4;

/// Discord's recent refusals and each guild's pause. One per process.
pub struct DiscordGuard {
    /// Refusals one guild's calls may earn over the window.
    budget: u32,
    /// Refusals the whole bot's calls may earn over the window, every
    /// instance together (see [`DiscordGuard::cap`]).
    bot_budget: u32,
    in_flight: Mutex<HashMap<u64, std::sync::Arc<tokio::sync::Semaphore>>>,
    refusals: Mutex<HashMap<(u64, Call), (Instant, String)>>,
    /// Guilds whose pause has been announced, until when.
    announced: Mutex<HashMap<u64, Instant>>,
}

/// A guild's calls paused: the error to answer, whether this is news (to
/// announce once), and what the guild spent.
#[derive(Debug)]
pub struct Pause {
    pub error: Error,
    pub news: bool,
    /// The guild's refusals over the window, every instance's.
    pub recent: usize,
    pub frees_in: Duration,
}

impl DiscordGuard {
    const MAX_REFUSALS: usize = 10_000;

    /// `budget` refusals per guild, `bot_budget` for the bot in all, over
    /// Discord's 10-minute window.
    pub fn new(budget: u32, bot_budget: u32) -> Self {
        Self {
            budget: budget.max(1),
            bot_budget: bot_budget.max(1),
            in_flight: Mutex::default(),
            refusals: Mutex::default(),
            announced: Mutex::default(),
        }
    }

    pub fn budget(&self) -> u32 {
        self.budget
    }

    pub fn bot_budget(&self) -> u32 {
        self.bot_budget
    }

    /// The most refusals a guild may hold over the window while the bot in
    /// all holds `total`: its own budget while the bot has spent less than
    /// half of its budget; then falling in step with what is left, down to
    /// 1 once the bot's budget is spent. So as the bot's budget runs out,
    /// the guilds that spent most of it are paused first, and at the end
    /// every guild that earned a refusal is; a guild Discord has not
    /// refused is never held back by the others.
    pub fn cap(&self, total: u64) -> usize {
        let (bot, guild) = (u64::from(self.bot_budget), u64::from(self.budget));
        let half = (bot / 2).max(1);
        let left = bot.saturating_sub(total);
        if left >= half {
            return guild as usize;
        }
        (guild * left).div_ceil(half).clamp(1, guild) as usize
    }

    /// How many guilds are paused now (a metric).
    pub fn paused_guilds(&self, invalid: &InvalidAnswers) -> usize {
        let cap = self.cap(invalid.bot_total());
        invalid.guild_counts().into_iter().filter(|(_, n)| *n >= cap).count()
    }

    /// Whether the bot may still make a call that bypasses a guild's pause
    /// (the pause's own announcement): not once the bot's budget is spent.
    pub fn may_bypass(&self, invalid: &InvalidAnswers) -> bool {
        invalid.bot_total() < u64::from(self.bot_budget)
    }

    /// Waits for one of the guild's [`CALLS_IN_FLIGHT_PER_GUILD`] places.
    pub async fn place(&self, guild_id: u64) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock poisoned");
            if in_flight.len() >= 10_000 {
                in_flight.retain(|_, s| s.available_permits() < CALLS_IN_FLIGHT_PER_GUILD);
            }
            in_flight
                .entry(guild_id)
                .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT_PER_GUILD)))
                .clone()
        };
        semaphore.acquire_owned().await.expect("the semaphore is never closed")
    }

    /// A refusal Discord gave this call lately, answered again.
    pub fn remembered(&self, guild_id: u64, call: Call) -> Option<Error> {
        let refusals = self.refusals.lock().expect("refusals lock poisoned");
        let (at, message) = refusals.get(&(guild_id, call))?;
        let age = at.elapsed();
        (age < REFUSAL_TTL).then(|| {
            Error::Discord(format!(
                "{message} (Discord refused this {} s ago; guildkey asks again in {} s)",
                age.as_secs(),
                (REFUSAL_TTL - age).as_secs().max(1)
            ))
        })
    }

    /// Remembers a refusal worth not repeating (403: missing permission or
    /// access, which a retry would only repeat).
    pub fn note(&self, guild_id: u64, call: Call, error: &DiscordError) {
        if !matches!(error, DiscordError::Refused { status: 401 | 403, .. }) {
            return;
        }
        let mut refusals = self.refusals.lock().expect("refusals lock poisoned");
        if refusals.len() >= Self::MAX_REFUSALS {
            refusals.retain(|_, (at, _)| at.elapsed() < REFUSAL_TTL);
            if refusals.len() >= Self::MAX_REFUSALS {
                refusals.clear();
            }
        }
        refusals.insert((guild_id, call), (Instant::now(), error.to_string()));
    }

    /// Forgets a guild's remembered refusals: its roles, the bot's roles or
    /// the guild changed (an admin fixing the bot's permissions), so Discord
    /// may answer otherwise now. The pause stays: it counts what Discord
    /// has already seen.
    pub fn forget(&self, guild_id: u64) {
        self.refusals.lock().expect("refusals lock poisoned").retain(|(g, _), _| *g != guild_id);
    }

    /// Whether the guild's calls are paused: its refusals over the window
    /// (every instance's) at its cap ([`Self::cap`]: its own budget, or less
    /// while the bot's budget runs out). The answer carries the error, and
    /// whether this is news (to announce once).
    pub fn paused(&self, guild_id: u64, invalid: &InvalidAnswers) -> Option<Pause> {
        let total = invalid.bot_total();
        let cap = self.cap(total);
        let spent = invalid.spent(guild_id, cap);
        if spent.guild < cap {
            return None;
        }
        // Other instances' refusals count by the minute: ask again at the
        // next one when this instance's own would free nothing sooner.
        let frees_in = if spent.frees_in.is_zero() { Duration::from_secs(60) } else { spent.frees_in };
        let retry_after_secs = frees_in.as_secs().max(1);
        let until = Instant::now() + frees_in;
        let mut announced = self.announced.lock().expect("announced lock poisoned");
        announced.retain(|_, until| *until > Instant::now());
        let news = announced.insert(guild_id, until).is_none();
        let recent = spent.guild;
        let message = if cap >= self.budget as usize {
            format!(
                "guildkey has paused its Discord calls for this server: Discord refused {recent} of them in the last \
                 10 minutes (the most allowed is {}), and more could get the bot cut off from Discord for every \
                 server. Check the bot's role and permissions; calls resume in {retry_after_secs} s",
                self.budget
            )
        } else {
            format!(
                "guildkey has paused its Discord calls for this server: Discord refused {recent} of them in the last \
                 10 minutes, and the bot in all has earned {total} refusals of the {} it allows itself across every \
                 server (Discord cuts the bot off at 10,000); the servers refused most are paused first. Check the \
                 bot's role and permissions; calls resume in {retry_after_secs} s at the latest",
                self.bot_budget
            )
        };
        Some(Pause { error: Error::DiscordPaused { message, retry_after_secs }, news, recent, frees_in })
    }
}

/// How far back the circuit breaker counts a key's writes.
pub const BREAKER_WINDOW: Duration = Duration::from_secs(600);

/// What the circuit breaker counts: bans and unbans spend the ban
/// budget, role grants and removals the role budget; a test key's dry runs
/// spend its own budgets as live writes would. The counts are kept in the
/// database (`KeyService::spend_write`), so they hold across instances and
/// restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    Ban,
    Role,
}

impl WriteKind {
    pub fn plural(self) -> &'static str {
        match self {
            Self::Ban => "bans",
            Self::Role => "role changes",
        }
    }

    /// How the database names it (`breaker_write.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Role => "role",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::RoleFacts;

    const GUILD: u64 = 100;
    const BOT: u64 = 7;
    const OWNER: u64 = 1;
    const BOT_ROLE: u64 = 1_400_000_000_000_000_020;
    const PLAIN: u64 = 1_400_000_000_000_000_021;
    const HIGH: u64 = 1_400_000_000_000_000_022;
    const MOD: u64 = 1_400_000_000_000_000_023;
    const MANAGED: u64 = 1_400_000_000_000_000_024;

    fn standing() -> Standing {
        let role = |permissions, position, managed| RoleFacts { permissions, position, managed };
        Standing {
            guild_id: GUILD,
            owner_id: OWNER,
            bot_id: BOT,
            bot_roles: vec![BOT_ROLE],
            roles: HashMap::from([
                (GUILD, role(0, 0, false)),
                (BOT_ROLE, role(p::MANAGE_ROLES | p::BAN_MEMBERS, 5, true)),
                (PLAIN, role(0, 2, false)),
                (HIGH, role(0, 6, false)),
                (MOD, role(p::MODERATE_MEMBERS, 1, false)),
                (MANAGED, role(0, 1, true)),
            ]),
            overwrites: Vec::new(),
        }
    }

    fn key(allowed_roles: &str) -> KeyInfo {
        KeyInfo::from_row(&crate::store::IndexRow {
            id: crate::keys::KeyId::from_stored("key_0000000000000001".into()),
            guild_id: GUILD,
            name: "game".into(),
            prefix: "gk_live_Ab3d".into(),
            environment: crate::keys::Environment::Live,
            scopes: crate::keys::Scopes::parse("roles.write").unwrap(),
            expires_at: None,
            revoked_at: None,
            rate_limit_per_minute: 60,
            allowed_ips: Default::default(),
            allowed_roles: crate::keys::AllowedRoles::parse(allowed_roles).unwrap(),
            suspended: false,
            ban_budget: None,
            role_budget: None,
            hash: crate::keys::KeyHash([1; 32]),
            previous: None,
        })
    }

    fn refused(r: Result<()>) -> bool {
        matches!(r, Err(Error::RoleNotAllowed(_)))
    }

    #[test]
    fn a_plain_role_below_the_bot_is_allowed_and_nothing_dangerous_is() {
        let s = standing();
        assert!(check_role(&key(""), Some(&s), PLAIN).is_ok());
        assert!(refused(check_role(&key(""), Some(&s), HIGH)), "above the bot");
        assert!(refused(check_role(&key(""), Some(&s), MOD)), "moderate members");
        assert!(refused(check_role(&key(""), Some(&s), MANAGED)), "managed");
        assert!(refused(check_role(&key(""), Some(&s), BOT_ROLE)), "the bot's own role");
        assert!(refused(check_role(&key(""), Some(&s), GUILD)), "@everyone");
        assert!(matches!(check_role(&key(""), Some(&s), 999), Err(Error::Discord(m)) if m.contains("Unknown Role")));
        assert!(matches!(check_role(&key(""), None, PLAIN), Err(Error::Discord(_))), "no cache: fail closed");
    }

    #[test]
    fn every_dangerous_permission_makes_a_role_untouchable() {
        for (bit, name) in DANGEROUS {
            let mut s = standing();
            s.roles.get_mut(&PLAIN).unwrap().permissions = bit;
            match check_role(&key(""), Some(&s), PLAIN) {
                Err(Error::RoleNotAllowed(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_keys_own_list_narrows_and_never_widens() {
        let s = standing();
        let other = 1_400_000_000_000_000_099u64;
        assert!(refused(check_role(&key(&other.to_string()), Some(&s), PLAIN)), "not on the list");
        assert!(check_role(&key(&format!("{PLAIN}")), Some(&s), PLAIN).is_ok());
        assert!(refused(check_role(&key(&format!("{MOD}")), Some(&s), MOD)), "listed but dangerous");
    }

    #[test]
    fn bans_spare_the_owner_the_bot_moderators_and_the_bots_betters() {
        let s = standing();
        let protected = |r: Result<()>| matches!(r, Err(Error::MemberProtected(_)));
        assert!(check_ban_target(&s, 50, None).is_ok(), "a non-member");
        assert!(check_ban_target(&s, 50, Some(&[PLAIN])).is_ok());
        assert!(protected(check_ban_target(&s, OWNER, None)));
        assert!(protected(check_ban_target(&s, BOT, Some(&[BOT_ROLE]))));
        assert!(protected(check_ban_target(&s, 50, Some(&[MOD]))));
        assert!(protected(check_ban_target(&s, 50, Some(&[HIGH]))));
    }

    #[test]
    fn a_role_that_moderates_one_channel_is_untouchable_and_a_deny_changes_nothing() {
        let mut s = standing();
        let overwrite = |allow| crate::discord::Overwrite { channel_id: 77, id: PLAIN, member: false, allow };
        for (bit, name) in [
            (p::MANAGE_ROLES, "Manage Permissions"),
            (p::MANAGE_CHANNELS, "Manage Channels"),
            (p::MANAGE_WEBHOOKS, "Manage Webhooks"),
            (p::MANAGE_MESSAGES, "Manage Messages"),
        ] {
            s.overwrites = vec![overwrite(bit)];
            match check_role(&key(""), Some(&s), PLAIN) {
                Err(Error::RoleNotAllowed(m)) => assert!(m.contains(name) && m.contains("<#77>"), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        s.overwrites = vec![overwrite(1 << 11)]; // Send Messages
        assert!(check_role(&key(""), Some(&s), PLAIN).is_ok(), "a harmless overwrite");
        s.overwrites = vec![crate::discord::Overwrite { member: true, ..overwrite(p::MANAGE_MESSAGES) }];
        assert!(
            check_role(&key(""), Some(&s), PLAIN).is_ok(),
            "a member's overwrite with the role's id is not the role's"
        );
    }

    #[test]
    fn a_protected_member_loses_no_role_and_a_plain_one_may() {
        let mut s = standing();
        let protected = |r: Result<()>| matches!(r, Err(Error::MemberProtected(_)));
        assert!(protected(check_role_removal(Some(&s), OWNER, &[PLAIN])), "the owner");
        assert!(protected(check_role_removal(Some(&s), BOT, &[BOT_ROLE, PLAIN])), "the bot");
        assert!(protected(check_role_removal(Some(&s), 50, &[MOD, PLAIN])), "a moderator");
        assert!(protected(check_role_removal(Some(&s), 50, &[HIGH, PLAIN])), "above the bot");
        assert!(check_role_removal(Some(&s), 50, &[PLAIN]).is_ok());
        assert!(matches!(check_role_removal(None, 50, &[PLAIN]), Err(Error::Discord(_))), "no cache: fail closed");
        // A moderator of one channel is a moderator.
        s.overwrites =
            vec![crate::discord::Overwrite { channel_id: 77, id: 50, member: true, allow: p::MANAGE_MESSAGES }];
        assert!(protected(check_role_removal(Some(&s), 50, &[PLAIN])));
        assert!(protected(check_ban_target(&s, 50, Some(&[PLAIN]))));
    }

    #[test]
    fn everyones_moderator_powers_mark_no_one_but_its_takeover_powers_mark_everyone() {
        let mut s = standing();
        s.roles.get_mut(&GUILD).unwrap().permissions = p::MENTION_EVERYONE | p::VIEW_AUDIT_LOG;
        assert!(check_ban_target(&s, 50, Some(&[PLAIN])).is_ok(), "Discord's old default for @everyone");
        s.roles.get_mut(&PLAIN).unwrap().permissions = p::MENTION_EVERYONE;
        assert!(check_ban_target(&s, 50, Some(&[PLAIN])).is_err(), "a role of their own that carries it");
        s.roles.get_mut(&PLAIN).unwrap().permissions = 0;
        s.roles.get_mut(&GUILD).unwrap().permissions = p::KICK_MEMBERS;
        assert!(check_ban_target(&s, 50, Some(&[PLAIN])).is_err(), "as before: @everyone may kick");
    }

    #[test]
    fn the_bots_missing_permission_is_answered_locally() {
        let mut s = standing();
        assert!(check_bot_may(Some(&s), p::BAN_MEMBERS, "Ban Members").is_ok());
        s.roles.get_mut(&BOT_ROLE).unwrap().permissions = p::MANAGE_ROLES;
        assert!(
            matches!(check_bot_may(Some(&s), p::BAN_MEMBERS, "Ban Members"), Err(Error::Discord(m)) if m.contains("Ban Members"))
        );
    }

    #[test]
    fn a_refusal_is_remembered_and_a_spent_budget_pauses_once_announced() {
        let guard = DiscordGuard::new(3, 1000);
        let refused = DiscordError::Refused { status: 403, code: 50013, message: "Missing Permissions".into() };
        assert!(guard.remembered(GUILD, Call::BanCheck).is_none());
        guard.note(GUILD, Call::BanCheck, &refused);
        assert!(
            matches!(guard.remembered(GUILD, Call::BanCheck), Some(Error::Discord(m)) if m.contains("Missing Permissions"))
        );
        assert!(guard.remembered(GUILD + 1, Call::BanCheck).is_none(), "per guild");
        guard.note(GUILD, Call::Ban(5), &DiscordError::Unavailable("down".into()));
        assert!(guard.remembered(GUILD, Call::Ban(5)).is_none(), "only refusals are remembered");

        guard.forget(GUILD + 1);
        assert!(guard.remembered(GUILD, Call::BanCheck).is_some(), "another guild's change forgets nothing here");
        guard.forget(GUILD);
        assert!(guard.remembered(GUILD, Call::BanCheck).is_none(), "a role change here forgets");

        let invalid = InvalidAnswers::default();
        invalid.record(Some(GUILD));
        invalid.record(Some(GUILD));
        assert!(guard.paused(GUILD, &invalid).is_none());
        invalid.record(Some(GUILD));
        let first = guard.paused(GUILD, &invalid).unwrap();
        assert!(first.news);
        assert_eq!(first.recent, 3);
        assert!(matches!(first.error, Error::DiscordPaused { retry_after_secs: 550..=600, .. }), "{:?}", first.error);
        let again = guard.paused(GUILD, &invalid).unwrap().news;
        assert!(!again, "announced once per pause");
    }

    #[test]
    fn as_the_bots_budget_runs_out_the_guilds_refused_most_are_paused_first_and_a_quiet_one_never() {
        let guard = DiscordGuard::new(10, 40);
        assert_eq!((guard.cap(0), guard.cap(20)), (10, 10), "a guild's own budget while half is left");
        assert_eq!((guard.cap(30), guard.cap(39), guard.cap(40), guard.cap(500)), (5, 1, 1, 1));

        let invalid = InvalidAnswers::default();
        let (big, small, quiet) = (1, 2, 3);
        for _ in 0..9 {
            invalid.record(Some(big));
        }
        for _ in 0..3 {
            invalid.record(Some(small));
        }
        for _ in 0..18 {
            invalid.record(None);
        }
        // 30 of 40 spent: the cap is 5.
        assert!(guard.paused(big, &invalid).is_some(), "the biggest spender first");
        assert!(guard.paused(small, &invalid).is_none());
        assert!(guard.may_bypass(&invalid));
        for _ in 0..10 {
            invalid.record(None);
        }
        let pause = guard.paused(small, &invalid).expect("everyone refused, once the budget is spent");
        assert!(
            matches!(&pause.error, Error::DiscordPaused { message, .. } if message.contains("40 refusals of the 40"))
        );
        assert!(guard.paused(quiet, &invalid).is_none(), "a guild Discord has not refused is served");
        assert!(!guard.may_bypass(&invalid));
        assert_eq!(guard.paused_guilds(&invalid), 2);
    }
}
