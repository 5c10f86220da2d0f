//! No key outranks its maker (issue 22).
//!
//! A key made through the bot is bounded by the member who made it, its
//! *maker*: each scope needs the maker's own Discord permission
//! ([`power_for`]: Ban Members for `bans.*`, Manage Roles for `roles.write`,
//! View Audit Log for `audit.read`; Administrator and the server's owner
//! hold every one), and a `roles.write` key never reaches a role at or above
//! the maker's highest role ([`check_reach`], at every role write, against
//! the maker's roles then). The operator CLI stays trusted: its keys have no
//! maker and no such bound.
//!
//! The maker's powers are re-checked ([`Makers::recheck`]) when the gateway
//! shows they may have changed (a role's permissions edited or a role
//! deleted, an audit-log entry for a member's roles, a kick or a ban, the
//! maker's member update or removal) and by a periodic read
//! ([`Makers::run`], every `keys.maker_check_seconds`) for what no event
//! shows (a maker who left). A key whose maker left or lost a power one of
//! its scopes needs is suspended by guildkey, and the audit channel gets the
//! suspension with **Adopt** (an admin who holds the powers becomes the
//! key's maker, and it works again: [`Makers::adopt`]) and **Revoke**.
//!
//! Rules are pure functions beside their tests; [`Makers`] reads Discord
//! through the port and the keys through the service, nothing else.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::actions::GuildActions;
use super::guard::Call;
use super::{Error, IssuedKey, KeyDraft, KeyService, Result};
use crate::audit::Actor;
use crate::discord::permissions as p;
use crate::discord::Standing;
use crate::keys::{AllowedRoles, KeyChange, KeyRecord, KeyStatus, Scope, Scopes};

/// The Discord permission a scope needs of its maker, and its name as
/// Discord's client shows it; `None` for a scope anyone who may manage keys
/// may give (`guild.read`).
pub fn power_for(scope: Scope) -> Option<(u64, &'static str)> {
    match scope {
        Scope::GuildRead => None,
        Scope::BansRead | Scope::BansWrite => Some((p::BAN_MEMBERS, "Ban Members")),
        Scope::RolesWrite => Some((p::MANAGE_ROLES, "Manage Roles")),
        Scope::AuditRead => Some((p::VIEW_AUDIT_LOG, "View Audit Log")),
    }
}

/// A power a maker lacks, and the key's scopes that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lacking {
    pub power: &'static str,
    pub scopes: Vec<Scope>,
}

/// The powers `scopes` need that `permissions` (guild-level bits, as
/// Discord resolves them) do not hold; Administrator holds them all.
pub fn lacking(permissions: u64, scopes: &Scopes) -> Vec<Lacking> {
    if permissions & p::ADMINISTRATOR != 0 {
        return Vec::new();
    }
    let mut out: Vec<Lacking> = Vec::new();
    for scope in scopes.iter() {
        let Some((bit, power)) = power_for(scope) else { continue };
        if permissions & bit == bit {
            continue;
        }
        match out.iter_mut().find(|l| l.power == power) {
            Some(l) => l.scopes.push(scope),
            None => out.push(Lacking { power, scopes: vec![scope] }),
        }
    }
    out
}

/// "**Ban Members** (for bans.write) or **Manage Roles** (for roles.write)",
/// in bold for a reply, plain for an audit entry (whose text is escaped).
fn say_lacking(lacking: &[Lacking], bold: bool) -> String {
    let mark = if bold { "**" } else { "" };
    let each: Vec<String> = lacking
        .iter()
        .map(|l| {
            let scopes: Vec<&str> = l.scopes.iter().map(|s| s.as_str()).collect();
            format!("{mark}{}{mark} (for {})", l.power, scopes.join(", "))
        })
        .collect();
    each.join(" or ")
}

/// The names alone: "Ban Members, Manage Roles".
fn power_names(lacking: &[Lacking]) -> Vec<&'static str> {
    lacking.iter().map(|l| l.power).collect()
}

/// What an adapter knows of the member who makes (or adopts) a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maker {
    pub user_id: u64,
    /// The member's permissions as Discord resolved them for the
    /// interaction (`member.permissions`); `None` when not sent.
    pub permissions: Option<u64>,
    /// The member's role ids (without `@everyone`).
    pub roles: Vec<u64>,
}

impl Maker {
    /// The member's powers: what Discord resolved for the interaction and,
    /// where the guild's hierarchy is known, only what the member's roles
    /// grant server-wide too (a channel's overwrite grants no server power).
    pub fn powers(&self, standing: Option<&Standing>) -> u64 {
        let guild = standing.map(|s| s.permissions_of(self.user_id, &self.roles));
        match (self.permissions, guild) {
            (Some(resolved), Some(guild)) => resolved & guild,
            (Some(resolved), None) => resolved,
            (None, Some(guild)) => guild,
            (None, None) => 0,
        }
    }
}

/// Whether a key of `maker_id` (holding `maker_roles`) may reach `role_id`:
/// only a role below the maker's highest, as Discord lets a member manage
/// only roles below their own; the owner has no such ceiling. A role the
/// hierarchy does not hold is left to the guard (Unknown Role).
pub fn within_reach(standing: &Standing, maker_id: u64, maker_roles: &[u64], role_id: u64) -> bool {
    if maker_id == standing.owner_id {
        return true;
    }
    let Some(role) = standing.roles.get(&role_id) else { return true };
    role.position < standing.top_position(maker_roles)
}

/// May a key made by `maker_id` add or remove `role_id` now? `maker_roles`
/// is `None` when the maker is no longer a member. Checked at every role
/// write, after the guard's own rules.
pub fn check_reach(
    standing: Option<&Standing>,
    maker_id: u64,
    maker_roles: Option<&[u64]>,
    role_id: u64,
) -> Result<()> {
    let standing = standing.ok_or_else(not_ready)?;
    let Some(roles) = maker_roles else {
        return Err(Error::RoleNotAllowed(format!(
            "this key's maker <@{maker_id}> is no longer a member of this server, so the key may change no role; \
             an admin who holds its powers can adopt it"
        )));
    };
    if within_reach(standing, maker_id, roles, role_id) {
        return Ok(());
    }
    Err(Error::RoleNotAllowed(format!(
        "<@&{role_id}> sits at or above the highest role of this key's maker <@{maker_id}>; a key can do no more \
         than its maker"
    )))
}

/// Why a maker no longer bounds their key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// No longer a member (left, kicked or banned).
    Left,
    /// Lacks powers the key's scopes need.
    Lacks(Vec<Lacking>),
}

/// What a key's maker lost, if anything: `maker_roles` is `None` for a
/// maker no longer in the guild.
pub fn loss(standing: &Standing, maker_id: u64, maker_roles: Option<&[u64]>, scopes: &Scopes) -> Option<Loss> {
    let Some(roles) = maker_roles else { return Some(Loss::Left) };
    let lacking = lacking(standing.permissions_of(maker_id, roles), scopes);
    (!lacking.is_empty()).then_some(Loss::Lacks(lacking))
}

fn not_ready() -> Error {
    Error::Discord(
        "the bot has not yet received this server's roles from Discord (it is starting or reconnecting); \
         try again in a few seconds"
            .to_owned(),
    )
}

/// Why an adopter (or a creator) may not bound a key with these scopes
/// and roles, if they may not.
fn check_maker(
    standing: Option<&Standing>,
    scopes: &Scopes,
    allowed_roles: &AllowedRoles,
    maker: &Maker,
    doing: &str,
) -> Result<()> {
    let lacking = lacking(maker.powers(standing), scopes);
    if !lacking.is_empty() {
        let names = power_names(&lacking);
        let them = if names.len() == 1 { "it" } else { "them" };
        return Err(Error::OutranksMaker(format!(
            "No key can do more than its maker: you do not hold {} in this server, so you cannot {doing}. \
             Ask an admin who holds {them} to do it, or leave out the scopes that need {them}.",
            say_lacking(&lacking, true)
        )));
    }
    if scopes.contains(Scope::RolesWrite) && !allowed_roles.is_empty() {
        let standing = standing.ok_or_else(not_ready)?;
        if let Some(role) =
            allowed_roles.ids().iter().find(|&&r| !within_reach(standing, maker.user_id, &maker.roles, r))
        {
            return Err(Error::OutranksMaker(format!(
                "No key can do more than its maker: <@&{role}> sits at or above your highest role, so you cannot \
                 {doing} with it in allowed_roles. Leave it out, or ask an admin above it to do it."
            )));
        }
    }
    Ok(())
}

/// The maker's bound, applied: creating and adopting keys as a member, and
/// re-checking makers. One per process, shared by the bot and its tasks.
/// Discord is read through [`GuildActions`], so its guard (refusals
/// remembered, a guild's pause) holds for these reads too.
pub struct Makers {
    actions: Arc<GuildActions>,
}

impl Makers {
    pub fn new(actions: Arc<GuildActions>) -> Self {
        Self { actions }
    }

    fn keys(&self) -> &KeyService {
        self.actions.keys()
    }

    /// The guild's hierarchy, waiting briefly for the gateway cache.
    async fn standing(&self, guild_id: u64) -> Result<Option<Standing>> {
        self.actions.standing(guild_id).await
    }

    /// A member's roles (`None`: not a member), read through the guard.
    async fn member_roles(&self, guild_id: u64, user_id: u64) -> Result<Option<Vec<u64>>> {
        let read = self.actions.ops().member_roles(guild_id, user_id);
        self.actions.call(guild_id, Call::Member(user_id), read).await
    }

    /// Creates a key bounded by `maker`, who made it: refused, naming what
    /// is missing, when a scope needs a power the maker does not hold or
    /// the key's `allowed_roles` name a role at or above the maker's
    /// highest.
    #[tracing::instrument(skip_all, fields(guild_id, maker_id = maker.user_id))]
    pub async fn issue(&self, guild_id: u64, draft: KeyDraft, actor: &Actor, maker: &Maker) -> Result<IssuedKey> {
        let standing = self.standing(guild_id).await?;
        check_maker(standing.as_ref(), &draft.scopes, &draft.allowed_roles, maker, "create this key")?;
        self.keys().issue_made_by(guild_id, draft, actor, Some(maker.user_id)).await
    }

    /// `maker` takes the key over: becomes its maker, and the key works
    /// again if guildkey had suspended it. Refused as a create would be
    /// when `maker` lacks a power its scopes need.
    #[tracing::instrument(skip_all, fields(guild_id, maker_id = maker.user_id))]
    pub async fn adopt(&self, guild_id: u64, reference: &str, maker: &Maker) -> Result<KeyRecord> {
        let key = self.keys().find_for(Some(guild_id), reference, KeyChange::Adopt).await?;
        let standing = self.standing(guild_id).await?;
        check_maker(standing.as_ref(), &key.scopes, &key.allowed_roles, maker, "adopt this key")?;
        self.keys().adopt(&key, maker.user_id).await
    }

    /// Resumes a suspended key as a member asks (`/apikey resume`, the
    /// breaker's Resume button), unless its maker left or lost a power its
    /// scopes need: resuming would hand the key back to a maker it would
    /// outrank, so that is refused, pointing at Adopt. The operator CLI
    /// resumes through the service directly (trusted).
    #[tracing::instrument(skip_all, fields(guild_id))]
    pub async fn resume(&self, guild_id: u64, reference: &str, actor: &Actor) -> Result<KeyRecord> {
        let key = self.keys().find_for(Some(guild_id), reference, KeyChange::Resume).await?;
        if let Some(maker_id) = key.maker_id {
            let standing = self.standing(guild_id).await?.ok_or_else(not_ready)?;
            let roles = self.member_roles(guild_id, maker_id).await?;
            let refusal = match loss(&standing, maker_id, roles.as_deref(), &key.scopes) {
                None => None,
                Some(Loss::Left) => Some(format!("its maker <@{maker_id}> is no longer a member of this server")),
                Some(Loss::Lacks(lacking)) => {
                    Some(format!("its maker <@{maker_id}> no longer holds {}", say_lacking(&lacking, true)))
                }
            };
            if let Some(why) = refusal {
                return Err(Error::OutranksMaker(format!(
                    "No key can do more than its maker, and {why}, so resuming the key would let it outrank them. \
                     Adopt it instead (`/apikey adopt`, or Adopt in the audit channel) if you hold its powers, or \
                     revoke it."
                )));
            }
        }
        self.keys().set_suspended(Some(guild_id), key.id.as_str(), false, actor, json!({})).await
    }

    /// Re-checks the makers of a guild's keys (of one maker's, with
    /// `user_id`) and suspends each active key whose maker left or lost a
    /// power it needs. Returns how many it suspended. A maker Discord
    /// cannot be asked about is left for the next check.
    #[tracing::instrument(skip_all, fields(guild_id))]
    pub async fn recheck(&self, guild_id: u64, user_id: Option<u64>) -> Result<usize> {
        let keys = self.keys().store().maker_bound_keys(Some(guild_id), user_id, self.keys().now()).await?;
        self.recheck_keys(guild_id, keys).await
    }

    /// Re-checks every maker-bound key, guild by guild (the periodic read).
    pub async fn recheck_all(&self) -> Result<usize> {
        let keys = self.keys().store().maker_bound_keys(None, None, self.keys().now()).await?;
        let mut suspended = 0;
        let mut rest = keys.as_slice();
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|k| k.guild_id == first.guild_id).count();
            let (guild, tail) = rest.split_at(n);
            match self.recheck_keys(first.guild_id, guild.to_vec()).await {
                Ok(s) => suspended += s,
                Err(e) => {
                    tracing::warn!(guild_id = first.guild_id, error = %e, "failed to re-check a guild's key makers")
                }
            }
            rest = tail;
        }
        Ok(suspended)
    }

    async fn recheck_keys(&self, guild_id: u64, keys: Vec<KeyRecord>) -> Result<usize> {
        let now = self.keys().now();
        let active: Vec<KeyRecord> = keys.into_iter().filter(|k| k.status(now) == KeyStatus::Active).collect();
        if active.is_empty() {
            return Ok(0);
        }
        let Some(standing) = self.standing(guild_id).await? else {
            tracing::debug!(guild_id, "the guild's roles are not known yet; its makers are checked later");
            return Ok(0);
        };
        let mut makers: Vec<u64> = active.iter().filter_map(|k| k.maker_id).collect();
        makers.sort_unstable();
        makers.dedup();
        let mut suspended = 0;
        for maker_id in makers {
            let roles = match self.member_roles(guild_id, maker_id).await {
                Ok(roles) => roles,
                Err(e) => {
                    tracing::warn!(guild_id, maker_id, error = %e, "cannot read a key maker's roles; checked later");
                    continue;
                }
            };
            for key in active.iter().filter(|k| k.maker_id == Some(maker_id)) {
                let Some(loss) = loss(&standing, maker_id, roles.as_deref(), &key.scopes) else { continue };
                if self.suspend(key, maker_id, &loss).await {
                    suspended += 1;
                }
            }
        }
        Ok(suspended)
    }

    /// Suspends `key` for its maker's loss; false when it changed meanwhile.
    async fn suspend(&self, key: &KeyRecord, maker_id: u64, loss: &Loss) -> bool {
        // Plain text: the audit entry escapes it, and names the maker in a field of its own.
        let (why, lost) = match loss {
            Loss::Left => (
                "its maker is no longer a member of this server, and no key outranks its maker; an admin who \
                 holds its powers can adopt it"
                    .to_owned(),
                Vec::new(),
            ),
            Loss::Lacks(lacking) => (
                format!(
                    "its maker no longer holds {}, and no key outranks its maker; an admin who holds its powers \
                     can adopt it",
                    say_lacking(lacking, false)
                ),
                power_names(lacking),
            ),
        };
        let details = json!({
            "why": why,
            "maker_id": maker_id.to_string(),
            "maker_left": matches!(loss, Loss::Left),
            "lost": lost,
        });
        tracing::warn!(key_id = %key.id, guild_id = key.guild_id, maker_id, "a key's maker lost its powers; suspending the key");
        match self.keys().set_suspended(Some(key.guild_id), key.id.as_str(), true, &Actor::System, details).await {
            Ok(_) => true,
            Err(Error::Suspended(_) | Error::Revoked(_) | Error::Expired(_) | Error::NotFound(_)) => false,
            Err(e) => {
                tracing::error!(key_id = %key.id, error = %e, "failed to suspend a key whose maker lost its powers");
                false
            }
        }
    }

    /// How often the periodic check runs (`keys.maker_check_seconds`).
    pub fn check_every(&self) -> Duration {
        Duration::from_secs(self.keys().config().maker_check_seconds.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::RoleFacts;
    use std::collections::HashMap;

    const GUILD: u64 = 100;
    const OWNER: u64 = 1;
    const MAKER: u64 = 2;
    const HIGH: u64 = 1_400_000_000_000_000_010;
    const MID: u64 = 1_400_000_000_000_000_011;
    const LOW: u64 = 1_400_000_000_000_000_012;

    fn standing() -> Standing {
        let role = |permissions, position| RoleFacts { permissions, position, managed: false };
        Standing {
            guild_id: GUILD,
            owner_id: OWNER,
            bot_id: 7,
            bot_roles: vec![],
            roles: HashMap::from([
                (GUILD, role(0, 0)),
                (HIGH, role(p::MANAGE_GUILD | p::BAN_MEMBERS, 3)),
                (MID, role(p::MANAGE_ROLES, 2)),
                (LOW, role(0, 1)),
            ]),
            overwrites: vec![],
        }
    }

    fn scopes(s: &str) -> Scopes {
        Scopes::parse(s).unwrap()
    }

    #[test]
    fn each_scope_needs_its_power_and_administrator_holds_them_all() {
        let all = scopes("guild.read bans.read bans.write roles.write audit.read");
        let missing = lacking(p::MANAGE_GUILD, &all);
        assert_eq!(
            missing,
            vec![
                Lacking { power: "Ban Members", scopes: vec![Scope::BansRead, Scope::BansWrite] },
                Lacking { power: "Manage Roles", scopes: vec![Scope::RolesWrite] },
                Lacking { power: "View Audit Log", scopes: vec![Scope::AuditRead] },
            ]
        );
        assert!(lacking(p::ADMINISTRATOR, &all).is_empty());
        assert!(lacking(p::BAN_MEMBERS | p::MANAGE_ROLES | p::VIEW_AUDIT_LOG, &all).is_empty());
        assert!(lacking(0, &scopes("guild.read")).is_empty(), "guild.read needs no power");
        assert_eq!(say_lacking(&missing[..1], true), "**Ban Members** (for bans.read, bans.write)");
        assert_eq!(
            say_lacking(&missing[1..], false),
            "Manage Roles (for roles.write) or View Audit Log (for audit.read)"
        );
    }

    #[test]
    fn a_channel_overwrite_grants_no_server_power() {
        let s = standing();
        let maker = Maker { user_id: MAKER, permissions: Some(p::MANAGE_ROLES | p::MANAGE_GUILD), roles: vec![HIGH] };
        assert_eq!(maker.powers(Some(&s)) & p::MANAGE_ROLES, 0, "the roles grant no Manage Roles");
        assert_ne!(maker.powers(None) & p::MANAGE_ROLES, 0, "without the hierarchy, Discord's word");
        let owner = Maker { user_id: OWNER, permissions: Some(u64::MAX), roles: vec![] };
        assert!(lacking(owner.powers(Some(&s)), &scopes("bans.write roles.write audit.read")).is_empty());
    }

    #[test]
    fn a_key_reaches_only_below_its_makers_highest_role() {
        let s = standing();
        assert!(within_reach(&s, MAKER, &[MID], LOW));
        assert!(!within_reach(&s, MAKER, &[MID], MID), "at the maker's highest role");
        assert!(!within_reach(&s, MAKER, &[MID], HIGH), "above it");
        assert!(within_reach(&s, OWNER, &[], HIGH), "the owner has no ceiling");
        assert!(
            matches!(check_reach(Some(&s), MAKER, None, LOW), Err(Error::RoleNotAllowed(m)) if m.contains("no longer a member"))
        );
        assert!(
            matches!(check_reach(Some(&s), MAKER, Some(&[MID]), MID), Err(Error::RoleNotAllowed(m)) if m.contains("highest role"))
        );
        assert!(check_reach(Some(&s), MAKER, Some(&[MID]), LOW).is_ok());
        assert!(matches!(check_reach(None, MAKER, Some(&[MID]), LOW), Err(Error::Discord(_))), "fail closed");
    }

    #[test]
    fn a_maker_who_left_or_lost_a_needed_power_is_a_loss() {
        let s = standing();
        assert_eq!(loss(&s, MAKER, None, &scopes("guild.read")), Some(Loss::Left));
        assert_eq!(loss(&s, MAKER, Some(&[HIGH]), &scopes("bans.write")), None);
        assert!(
            matches!(loss(&s, MAKER, Some(&[LOW]), &scopes("bans.write")), Some(Loss::Lacks(l)) if l[0].power == "Ban Members")
        );
        assert_eq!(loss(&s, MAKER, Some(&[LOW]), &scopes("guild.read")), None, "a power the key does not need");
    }

    #[test]
    fn creating_names_what_the_maker_lacks() {
        let s = standing();
        let morgan = Maker { user_id: MAKER, permissions: Some(p::MANAGE_GUILD), roles: vec![] };
        let refused =
            check_maker(Some(&s), &scopes("bans.write"), &AllowedRoles::default(), &morgan, "create this key");
        let Err(Error::OutranksMaker(message)) = refused else { panic!("{refused:?}") };
        assert!(message.contains("**Ban Members** (for bans.write)"), "{message}");
        let manager = Maker { user_id: MAKER, permissions: Some(u64::MAX), roles: vec![MID] };
        let roles = AllowedRoles::parse(&HIGH.to_string()).unwrap();
        let refused = check_maker(Some(&s), &scopes("roles.write"), &roles, &manager, "create this key");
        assert!(matches!(refused, Err(Error::OutranksMaker(m)) if m.contains(&format!("<@&{HIGH}>"))));
        let low = AllowedRoles::parse(&LOW.to_string()).unwrap();
        assert!(check_maker(Some(&s), &scopes("roles.write"), &low, &manager, "create this key").is_ok());
    }
}
