//! Discord's permission bits guildkey reasons about, and the guild's
//! hierarchy ([`Standing`]): how Discord resolves a member's permissions and
//! top role, so a write can be judged before Discord is asked. Pure rules,
//! no I/O.

pub const KICK_MEMBERS: u64 = 1 << 1;
pub const BAN_MEMBERS: u64 = 1 << 2;
pub const ADMINISTRATOR: u64 = 1 << 3;
pub const MANAGE_CHANNELS: u64 = 1 << 4;
pub const MANAGE_GUILD: u64 = 1 << 5;
pub const VIEW_AUDIT_LOG: u64 = 1 << 7;
pub const MANAGE_MESSAGES: u64 = 1 << 13;
pub const MENTION_EVERYONE: u64 = 1 << 17;
pub const MUTE_MEMBERS: u64 = 1 << 22;
pub const DEAFEN_MEMBERS: u64 = 1 << 23;
pub const MOVE_MEMBERS: u64 = 1 << 24;
pub const MANAGE_NICKNAMES: u64 = 1 << 27;
/// In a channel's permission overwrites this bit is "Manage Permissions".
pub const MANAGE_ROLES: u64 = 1 << 28;
pub const MANAGE_WEBHOOKS: u64 = 1 << 29;
/// "Manage Expressions" (emoji, stickers, soundboard).
pub const MANAGE_GUILD_EXPRESSIONS: u64 = 1 << 30;
pub const MANAGE_EVENTS: u64 = 1 << 33;
pub const MANAGE_THREADS: u64 = 1 << 34;
pub const MODERATE_MEMBERS: u64 = 1 << 40;
/// Every permission (what the owner and an administrator resolve to).
pub const ALL: u64 = u64::MAX;

/// A role as Discord describes it (gateway cache or REST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleFacts {
    pub permissions: u64,
    /// Higher is more powerful; `@everyone` is 0.
    pub position: u16,
    /// Managed by an integration (a bot's own role, a booster role).
    pub managed: bool,
}

/// One channel's permission overwrite that allows something (overwrites
/// that only deny are not kept: they grant no power).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overwrite {
    pub channel_id: u64,
    /// A role's id, or a member's (`member`).
    pub id: u64,
    pub member: bool,
    pub allow: u64,
}

/// The guild's hierarchy as the gateway cache (or a recent REST read) sees
/// it: enough to tell, before asking Discord, whether Discord would refuse
/// a write.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub guild_id: u64,
    pub owner_id: u64,
    pub bot_id: u64,
    /// The bot's own roles (without `@everyone`).
    pub bot_roles: Vec<u64>,
    /// Every role of the guild, `@everyone` (id = guild id) included.
    pub roles: std::collections::HashMap<u64, RoleFacts>,
    /// Every channel's overwrites that allow something: a role with no
    /// permission of its own may still moderate one channel.
    pub overwrites: Vec<Overwrite>,
}

impl Standing {
    /// Guild-level permissions of a member with these roles, as Discord
    /// resolves them: the owner and an administrator have every one.
    pub fn permissions_of(&self, user_id: u64, member_roles: &[u64]) -> u64 {
        if user_id == self.owner_id {
            return ALL;
        }
        let everyone = self.roles.get(&self.guild_id).map_or(0, |r| r.permissions);
        let bits = member_roles.iter().filter_map(|r| self.roles.get(r)).fold(everyone, |b, r| b | r.permissions);
        if bits & ADMINISTRATOR != 0 {
            ALL
        } else {
            bits
        }
    }

    /// The position of a member's highest role (0 with none).
    pub fn top_position(&self, member_roles: &[u64]) -> u16 {
        member_roles.iter().filter_map(|r| self.roles.get(r)).map(|r| r.position).max().unwrap_or(0)
    }

    /// What channel overwrites allow a role, channel by channel.
    pub fn role_overwrites(&self, role_id: u64) -> impl Iterator<Item = &Overwrite> {
        self.overwrites.iter().filter(move |o| !o.member && o.id == role_id)
    }

    /// What channel overwrites allow a member in any one channel, through
    /// the member's own roles or an overwrite naming the member
    /// (`@everyone`'s overwrites are everyone's, and mark no one).
    pub fn overwrite_allows_of(&self, user_id: u64, member_roles: &[u64]) -> u64 {
        self.overwrites
            .iter()
            .filter(|o| if o.member { o.id == user_id } else { member_roles.contains(&o.id) })
            .fold(0, |bits, o| bits | o.allow)
    }

    pub fn bot_permissions(&self) -> u64 {
        self.permissions_of(self.bot_id, &self.bot_roles)
    }

    pub fn bot_top_position(&self) -> u16 {
        self.top_position(&self.bot_roles)
    }
}
