//! The rules for acting on Discord through the API: scope and guild checks
//! (done by the caller's [`Authenticated`]), the guard's rules on roles,
//! members and the bot's permissions (`guard`), every Discord call through
//! the guard's memory of refusals and its per-guild pause, test-key dry runs
//! that read and check as a live write would, idempotent
//! PUT/DELETE semantics, `X-Audit-Log-Reason` naming the key, the audit
//! entry recorded (pending) before Discord is asked and settled after
//! ([`GuildActions::recorded`]: no Discord write without its record), and
//! a short ban cache so a game polling every joining player does not hammer
//! Discord.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::guard::{self, Call, DiscordGuard, WriteKind};
use super::{Authenticated, Error, KeyService, Result};
use crate::audit::{Action, Actor};
use crate::discord::permissions::{BAN_MEMBERS, MANAGE_GUILD, MANAGE_ROLES};
use crate::discord::{DiscordError, GuildInfo, GuildOps, Standing};
use crate::keys::Scope;

/// How long a ban check is reused. Own writes and the gateway's
/// GUILD_BAN_ADD / GUILD_BAN_REMOVE events invalidate it sooner.
pub const BAN_CACHE_TTL: Duration = Duration::from_secs(5);
const BAN_CACHE_MAX: usize = 10_000;
/// Discord's limit for a ban's audit reason.
pub const MAX_REASON_CHARS: usize = 512;
/// How long a write waits for the gateway cache to hold its guild (a
/// REST-backed view answers at once, either way).
const STANDING_WAIT: Duration = Duration::from_secs(1);
/// Discord's limit: 7 days.
pub const MAX_DELETE_MESSAGE_SECONDS: i64 = 604_800;

/// Whether a user is banned.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BanStatus {
    pub banned: bool,
    pub reason: Option<String>,
}

/// What a write did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WriteOutcome {
    /// True if Discord's state changed; false if it already was so, or for a
    /// dry run (whose `audit_event_id` is set when a live write would have
    /// changed something, and unset when it would have been a no-op).
    pub changed: bool,
    /// True for a test key: nothing was sent to Discord.
    pub dry_run: bool,
    /// The audit event recorded, if any.
    pub audit_event_id: Option<i64>,
}

/// When a ban check was made, and its answer (`Some(reason)` if banned).
type BanEntry = (Instant, Option<Option<String>>);

/// Recent ban checks: `Some(reason)` banned, `None` not banned.
#[derive(Default)]
pub struct BanCache {
    entries: Mutex<HashMap<(u64, u64), BanEntry>>,
    /// Bumped by every invalidation: a check that was in flight across one
    /// may hold the answer from before the change, so it is not kept.
    epoch: std::sync::atomic::AtomicU64,
}

impl BanCache {
    fn get(&self, guild_id: u64, user_id: u64) -> Option<Option<Option<String>>> {
        let entries = self.entries.lock().expect("ban cache poisoned");
        entries.get(&(guild_id, user_id)).filter(|(at, _)| at.elapsed() < BAN_CACHE_TTL).map(|(_, v)| v.clone())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps a check made since `epoch`, unless an invalidation came meanwhile.
    fn put(&self, guild_id: u64, user_id: u64, status: Option<Option<String>>, epoch: u64) {
        let mut entries = self.entries.lock().expect("ban cache poisoned");
        if self.epoch() != epoch {
            return;
        }
        if entries.len() >= BAN_CACHE_MAX {
            entries.retain(|_, (at, _)| at.elapsed() < BAN_CACHE_TTL);
            if entries.len() >= BAN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert((guild_id, user_id), (Instant::now(), status));
    }

    /// Forgets a check (own writes, the gateway's ban events).
    pub fn invalidate(&self, guild_id: u64, user_id: u64) {
        let mut entries = self.entries.lock().expect("ban cache poisoned");
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.remove(&(guild_id, user_id));
    }
}

/// One lock per write target (a user's ban, a member's role), striped: in
/// this process, concurrent identical writes run one after the other, so
/// the first makes the change and the rest see it done (`changed: false`,
/// one Discord call, one audit entry). Another instance can still race.
struct TargetLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl TargetLocks {
    const STRIPES: usize = 256;

    fn new() -> Self {
        Self { stripes: (0..Self::STRIPES).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    async fn lock(&self, target: impl std::hash::Hash) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(target);
        self.stripes[(hash % Self::STRIPES as u64) as usize].lock().await
    }
}

pub struct GuildActions {
    pub(super) keys: KeyService,
    pub(super) ops: Arc<dyn GuildOps>,
    bans: Arc<BanCache>,
    /// Each guild's ban list in memory (`ban_lists`).
    pub(super) ban_lists: Arc<super::ban_lists::BanLists>,
    targets: TargetLocks,
    guard: Arc<DiscordGuard>,
}

fn discord(e: DiscordError) -> Error {
    Error::Discord(e.to_string())
}

impl GuildActions {
    /// `guard` is shared with the bot, which tells it when a guild's roles
    /// change.
    pub fn new(keys: KeyService, ops: Arc<dyn GuildOps>, bans: Arc<BanCache>, guard: Arc<DiscordGuard>) -> Self {
        let ban_lists = Arc::new(super::ban_lists::BanLists::new(keys.store().clone(), keys.clock().clone()));
        Self { keys, ops, bans, ban_lists, targets: TargetLocks::new(), guard }
    }

    /// Each guild's ban list in memory.
    pub fn ban_lists(&self) -> &Arc<super::ban_lists::BanLists> {
        &self.ban_lists
    }

    pub fn keys(&self) -> &KeyService {
        &self.keys
    }

    pub fn ops(&self) -> &Arc<dyn GuildOps> {
        &self.ops
    }

    /// The guard on Discord calls (its budgets, for metrics and the
    /// sharing of refusal counts).
    pub fn guard(&self) -> &Arc<DiscordGuard> {
        &self.guard
    }

    /// Guild info from the gateway cache (no REST call), or on an `--only
    /// http` listener from Discord's REST API, cached briefly.
    pub async fn guild_info(&self, caller: &Authenticated, guild_id: u64) -> Result<GuildInfo> {
        caller.authorize(guild_id, Scope::GuildRead)?;
        self.ops
            .guild_info(guild_id)
            .await
            .map_err(discord)?
            .ok_or_else(|| Error::Missing("the bot is not in this guild".to_owned()))
    }

    /// Whether Discord may be asked for `call` now: not while the guild's
    /// calls are paused (the first refusal of a pause is announced in the
    /// audit channel), nor while Discord's last refusal of the same call is
    /// fresh.
    pub async fn may_call(&self, guild_id: u64, call: Call) -> Result<()> {
        if let Some(invalid) = self.ops.invalid_answers() {
            if let Some(pause) = self.guard.paused(guild_id, invalid) {
                if pause.news {
                    self.announce_pause(guild_id, pause.recent, pause.frees_in, &pause.error).await;
                }
                return Err(pause.error);
            }
        }
        match self.guard.remembered(guild_id, call) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Runs one Discord call through the guard.
    pub(super) async fn call<T>(
        &self,
        guild_id: u64,
        call: Call,
        request: impl std::future::Future<Output = Result<T, DiscordError>>,
    ) -> Result<T> {
        self.call_within(guild_id, call, guard::PLACE_WAIT, request).await
    }

    /// [`Self::call`], waiting at most `wait` for one of the guild's places.
    async fn call_within<T>(
        &self,
        guild_id: u64,
        call: Call,
        wait: Duration,
        request: impl std::future::Future<Output = Result<T, DiscordError>>,
    ) -> Result<T> {
        self.may_call(guild_id, call).await?;
        let _place = self.guard.place_within(guild_id, wait).await?;
        // Asked again: a call that waited may find a refusal or a pause
        // that came meanwhile.
        self.may_call(guild_id, call).await?;
        request.await.map_err(|e| {
            self.guard.note(guild_id, call, &e);
            discord(e)
        })
    }

    /// Posts an audit event to a channel through the guard: not while the
    /// guild's calls are paused (but the pause's own announcement), not
    /// while the channel's last refusal is fresh.
    pub async fn post_audit(&self, channel_id: u64, event: &crate::audit::AuditEvent) -> Result<()> {
        self.post_audit_within(channel_id, event, guard::PLACE_WAIT).await
    }

    /// [`Self::post_audit`], waiting at most `wait` for one of the guild's
    /// Discord places (the outbox has no caller waiting on it).
    pub async fn post_audit_within(
        &self,
        channel_id: u64,
        event: &crate::audit::AuditEvent,
        wait: Duration,
    ) -> Result<()> {
        let call = Call::AuditPost(channel_id);
        if event.action != Action::DiscordPaused {
            return self.call_within(event.guild_id, call, wait, self.ops.post_audit(channel_id, event)).await;
        }
        if let Some(error) = self.guard.remembered(event.guild_id, call) {
            return Err(error);
        }
        // Not past the bot's budget in all: then even the announcement waits.
        if let Some(pause) = self
            .ops
            .invalid_answers()
            .and_then(|i| (!self.guard.may_bypass(i)).then(|| self.guard.paused(event.guild_id, i)).flatten())
        {
            return Err(pause.error);
        }
        self.ops.post_audit(channel_id, event).await.map_err(|e| {
            self.guard.note(event.guild_id, call, &e);
            discord(e)
        })
    }

    async fn announce_pause(&self, guild_id: u64, recent: usize, frees_in: Duration, error: &Error) {
        tracing::warn!(
            guild_id,
            recent,
            budget = self.guard.budget(),
            "pausing Discord calls for a guild that Discord keeps refusing"
        );
        let until = chrono::Utc::now() + chrono::Duration::from_std(frees_in).unwrap_or_default();
        let details = json!({
            "why": error.to_string(),
            "invalid_answers": recent,
            "budget": self.guard.budget(),
            "bot_budget": self.guard.bot_budget(),
            "paused_until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if let Err(e) = self.keys.record_system_event(guild_id, Action::DiscordPaused, details).await {
            tracing::error!(error = %e, guild_id, "failed to record the pause of Discord calls");
        }
    }

    pub async fn ban_status(&self, caller: &Authenticated, guild_id: u64, user_id: u64) -> Result<BanStatus> {
        caller.authorize(guild_id, Scope::BansRead)?;
        if let Some(banned) = self.ban_lists.banned(guild_id, user_id) {
            // From memory: only a banned user's reason is read (the store).
            let reason = if banned { self.keys.store().guild_ban_reason(guild_id, user_id).await? } else { None };
            return Ok(BanStatus { banned, reason });
        }
        super::ban_lists::spawn_sync_if_idle(&self.ban_lists, &self.ops, guild_id);
        let epoch = self.bans.epoch();
        let status = match self.bans.get(guild_id, user_id) {
            Some(s) => s,
            None => {
                self.check_bot_may_ban(guild_id).await?;
                let fresh = self.current_ban(guild_id, user_id).await?;
                self.bans.put(guild_id, user_id, fresh.clone(), epoch);
                fresh
            }
        };
        Ok(BanStatus { banned: status.is_some(), reason: status.flatten() })
    }

    /// The guild's hierarchy (gateway cache, or a REST read). Right after
    /// the bot (re)connects the guild may not be cached yet: wait for it
    /// briefly rather than refuse a write that would pass a moment later.
    /// An error: Discord said the bot is not in the guild, or could not be
    /// asked (REST only).
    pub(super) async fn standing(&self, guild_id: u64) -> Result<Option<Standing>> {
        let deadline = tokio::time::Instant::now() + STANDING_WAIT;
        loop {
            if let Some(standing) = self.ops.standing(guild_id).await.map_err(discord)? {
                return Ok(Some(standing));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ban Members, from the cache when it can tell (a read may go on to
    /// ask Discord while the cache is still filling; the guard holds then).
    async fn check_bot_may_ban(&self, guild_id: u64) -> Result<()> {
        match self.ops.standing(guild_id).await.map_err(discord)? {
            Some(standing) => guard::check_bot_may(Some(&standing), BAN_MEMBERS, "Ban Members"),
            None => Ok(()),
        }
    }

    /// Spends one of the key's destructive writes, or trips the breaker:
    /// a key over its budget (bans and unbans, or role changes, per 10
    /// minutes, counted across instances and restarts) is suspended, the
    /// write is refused, and the audit channel gets the suspension with
    /// Resume and Revoke buttons. A test key's dry runs spend too.
    async fn spend(&self, caller: &Authenticated, kind: WriteKind) -> Result<()> {
        let (bans, roles) = caller.key.budgets();
        let cfg = self.keys.config();
        let budget = match kind {
            WriteKind::Ban => bans.unwrap_or(cfg.default_ban_budget),
            WriteKind::Role => roles.unwrap_or(cfg.default_role_budget),
        };
        if self.keys.spend_write(&caller.key.id, kind, budget).await? {
            return Ok(());
        }
        let why = format!(
            "made {budget} {} in 10 minutes, its budget, so guildkey suspended it: a leaked or runaway key cannot \
             empty the server",
            kind.plural()
        );
        tracing::warn!(key_id = %caller.key.id, guild_id = caller.key.guild_id, budget, kind = kind.plural(), "circuit breaker tripped; suspending the key");
        let details = json!({ "why": why, "budget": budget, "kind": kind.plural() });
        let id = caller.key.id.to_string();
        match self.keys.set_suspended(Some(caller.key.guild_id), &id, true, &Actor::System, details).await {
            Ok(_) | Err(Error::Suspended(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, key_id = %caller.key.id, "failed to suspend a key whose breaker tripped")
            }
        }
        Err(Error::BreakerTripped(format!("this key {why}; a server admin can resume it with /apikey resume")))
    }

    /// How Discord's own audit log names the key: as guildkey's audit entry
    /// shows the actor ("An API key: name (prefix)"), never the secret.
    fn audit_reason(caller: &Authenticated, reason: Option<&str>) -> String {
        let base = format!("An API key: {} ({})", caller.key.name, caller.key.prefix);
        match reason {
            Some(r) if !r.trim().is_empty() => format!("{base}: {}", r.trim()),
            _ => base,
        }
    }

    /// The ban as it stands on Discord (a test key's dry run asks too, so
    /// it answers as a live key would).
    async fn current_ban(&self, guild_id: u64, user_id: u64) -> Result<Option<Option<String>>> {
        self.call(guild_id, Call::BanCheck, self.ops.ban_status(guild_id, user_id)).await
    }

    pub async fn ban(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        user_id: u64,
        roblox_id: Option<u64>,
        reason: Option<String>,
        delete_message_seconds: Option<i64>,
    ) -> Result<WriteOutcome> {
        caller.authorize(guild_id, Scope::BansWrite)?;
        let reason = check_reason(reason)?;
        let delete_seconds = delete_message_seconds.unwrap_or(0);
        if !(0..=MAX_DELETE_MESSAGE_SECONDS).contains(&delete_seconds) {
            return Err(Error::Invalid(crate::keys::InvalidInput::new(
                "delete_message_seconds",
                format!("must be from 0 to {MAX_DELETE_MESSAGE_SECONDS} (7 days), not {delete_seconds}"),
            )));
        }
        let standing = self.standing(guild_id).await?;
        guard::check_bot_may(standing.as_ref(), BAN_MEMBERS, "Ban Members")?;
        let standing = standing.expect("checked above");
        let _target = self.targets.lock(("ban", guild_id, user_id)).await;
        let member = self.call(guild_id, Call::Member(user_id), self.ops.member_roles(guild_id, user_id)).await?;
        guard::check_ban_target(&standing, user_id, member.as_deref())?;
        if let Some(standing_reason) = self.current_ban(guild_id, user_id).await? {
            self.ban_lists.record(guild_id, user_id, true, standing_reason.as_deref()).await;
            return Ok(WriteOutcome { changed: false, dry_run: caller.is_test(), audit_event_id: None });
        }
        let mut details = json!({
            "user_id": user_id.to_string(),
            "reason": reason,
            "delete_message_seconds": delete_seconds,
        });
        note_roblox_id(&mut details, roblox_id);
        self.spend(caller, WriteKind::Ban).await?;
        if caller.is_test() {
            return self.dry_run(caller, Action::BanAdded, details).await;
        }
        let audit_reason = Self::audit_reason(caller, reason.as_deref());
        let ban = self.ops.ban(guild_id, user_id, delete_seconds as u32, &audit_reason);
        let outcome = self.recorded(caller, Action::BanAdded, details, guild_id, Call::Ban(user_id), ban).await;
        self.bans.invalidate(guild_id, user_id);
        if outcome.is_ok() {
            self.ban_lists.record(guild_id, user_id, true, Some(&audit_reason)).await;
        }
        outcome
    }

    pub async fn unban(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        user_id: u64,
        roblox_id: Option<u64>,
    ) -> Result<WriteOutcome> {
        caller.authorize(guild_id, Scope::BansWrite)?;
        guard::check_bot_may(self.standing(guild_id).await?.as_ref(), BAN_MEMBERS, "Ban Members")?;
        let _target = self.targets.lock(("ban", guild_id, user_id)).await;
        if self.current_ban(guild_id, user_id).await?.is_none() {
            self.ban_lists.record(guild_id, user_id, false, None).await;
            return Ok(WriteOutcome { changed: false, dry_run: caller.is_test(), audit_event_id: None });
        }
        let mut details = json!({ "user_id": user_id.to_string() });
        note_roblox_id(&mut details, roblox_id);
        self.spend(caller, WriteKind::Ban).await?;
        if caller.is_test() {
            return self.dry_run(caller, Action::BanRemoved, details).await;
        }
        let audit_reason = Self::audit_reason(caller, None);
        let unban = self.ops.unban(guild_id, user_id, &audit_reason);
        let outcome = self.recorded(caller, Action::BanRemoved, details, guild_id, Call::Unban(user_id), unban).await;
        self.bans.invalidate(guild_id, user_id);
        if outcome.is_ok() {
            self.ban_lists.record(guild_id, user_id, false, None).await;
        }
        outcome
    }

    /// Adds (`add`) or removes a member's role, within the guard's rules:
    /// checked against the guild's hierarchy (the gateway cache, or a REST
    /// read at most `rest::GUILD_VIEW_TTL` old) before Discord is asked to
    /// change anything.
    pub async fn set_role(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        user_id: u64,
        roblox_id: Option<u64>,
        role_id: u64,
        add: bool,
    ) -> Result<WriteOutcome> {
        caller.authorize(guild_id, Scope::RolesWrite)?;
        guard::check_role_list(&caller.key, role_id)?; // needs no cache
                                                       // A role the guild's roles (the gateway cache, or the REST view)
                                                       // show does not exist is 404 here, not a question for Discord.
        if self.ops.role_exists(guild_id, role_id).await == Some(false) {
            return Err(Error::Missing(format!("role {role_id} does not exist in this server")));
        }
        let standing = self.standing(guild_id).await?;
        guard::check_role_safety(caller.key.guild_id, standing.as_ref(), role_id)?;
        guard::check_bot_may(standing.as_ref(), MANAGE_ROLES, "Manage Roles")?;
        // No key outranks its maker: the role must sit below the maker's highest, now.
        if let Some(maker) = self.keys.maker_of(&caller.key.id).await? {
            let roles = self.call(guild_id, Call::Member(maker), self.ops.member_roles(guild_id, maker)).await?;
            super::makers::check_reach(standing.as_ref(), maker, roles.as_deref(), role_id)?;
        }
        let action = if add { Action::RoleAdded } else { Action::RoleRemoved };
        let _target = self.targets.lock(("role", guild_id, user_id, role_id)).await;
        let roles = self.call(guild_id, Call::Member(user_id), self.ops.member_roles(guild_id, user_id)).await?;
        let roles = roles.ok_or_else(|| {
            discord(DiscordError::Refused {
                status: 404,
                code: crate::discord::codes::UNKNOWN_MEMBER,
                message: "Unknown Member".to_owned(),
            })
        })?;
        if roles.contains(&role_id) == add {
            return Ok(WriteOutcome { changed: false, dry_run: caller.is_test(), audit_event_id: None });
        }
        if !add {
            guard::check_role_removal(standing.as_ref(), user_id, &roles)?;
        }
        let mut details = json!({ "user_id": user_id.to_string(), "role_id": role_id.to_string() });
        note_roblox_id(&mut details, roblox_id);
        self.spend(caller, WriteKind::Role).await?;
        if caller.is_test() {
            return self.dry_run(caller, action, details).await;
        }
        let audit_reason = Self::audit_reason(caller, None);
        let write = self.ops.set_role(guild_id, user_id, role_id, add, &audit_reason);
        self.recorded(caller, action, details, guild_id, Call::Role { user: user_id, role: role_id }, write).await
    }

    /// Turns the leak guard on: a Discord AutoMod rule that blocks every
    /// message holding one of guildkey's keys (the token format's regex) and
    /// alerts the audit channel, if one is set. Or off: the rule is deleted.
    /// Needs the bot to have Manage Server (Discord's rule for AutoMod).
    pub async fn set_leak_guard(&self, guild_id: u64, on: bool, actor: &Actor) -> Result<LeakGuard> {
        let current = self.keys.leak_guard_rule(guild_id).await?;
        let alerts_to = self.keys.audit_channel(guild_id).await?;
        match (on, current) {
            (true, Some(rule_id)) => return Ok(LeakGuard { rule_id: Some(rule_id), alerts_to, changed: false }),
            (false, None) => return Ok(LeakGuard { rule_id: None, alerts_to, changed: false }),
            _ => {}
        }
        let standing = self.standing(guild_id).await?;
        guard::check_bot_may(standing.as_ref(), MANAGE_GUILD, "Manage Server")?;
        let rule_id = match current {
            None => {
                let pattern = leak_pattern(&self.keys.config().prefix);
                let create = self.ops.create_leak_rule(guild_id, &pattern, alerts_to);
                Some(self.call(guild_id, Call::AutoMod, create).await?)
            }
            Some(rule_id) => {
                self.call(guild_id, Call::AutoMod, self.ops.delete_automod_rule(guild_id, rule_id)).await?;
                None
            }
        };
        self.keys.record_leak_guard(guild_id, rule_id, actor).await?;
        Ok(LeakGuard { rule_id, alerts_to, changed: true })
    }

    async fn dry_run(
        &self,
        caller: &Authenticated,
        action: Action,
        details: serde_json::Value,
    ) -> Result<WriteOutcome> {
        let event = self.keys.record_api_write(caller, action, details).await?;
        Ok(WriteOutcome { changed: false, dry_run: true, audit_event_id: Some(event.id) })
    }

    /// Record first, then act: the write's audit event is recorded
    /// (pending) before Discord is asked, so no change reaches Discord
    /// without its record. If it cannot be recorded (the database out of
    /// reach: 503) Discord is never asked, and a retry starts afresh. After
    /// the call the event is settled: done (it joins the audit log and is
    /// posted) or failed (Discord refused: kept out of the log). When
    /// Discord's answer was lost, what Discord shows is read to settle it;
    /// if that fails too, the event stays pending for the reconcile. When the
    /// outcome cannot be recorded (the database went away meanwhile), the
    /// write still stands and is answered as done; the outcome is retried in
    /// the background, and the reconcile settles it if this process dies.
    async fn recorded(
        &self,
        caller: &Authenticated,
        action: Action,
        details: serde_json::Value,
        guild_id: u64,
        call: Call,
        write: impl std::future::Future<Output = Result<(), DiscordError>>,
    ) -> Result<WriteOutcome> {
        let id = self.keys.record_pending_write(caller, action, details.clone()).await?;
        let unreachable = std::sync::atomic::AtomicBool::new(false);
        let write = async {
            let result = write.await;
            if matches!(result, Err(DiscordError::Unavailable(_))) {
                unreachable.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result
        };
        let result = self.call(guild_id, call, write).await;
        let done = if unreachable.load(std::sync::atomic::Ordering::Relaxed) {
            // Discord's answer was lost (a 5xx, a broken connection): read
            // whether the change is there now.
            match self.landed(guild_id, action, &details).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(event_id = id, guild_id, error = %e, "whether a write reached Discord is unknown; the reconcile will read it");
                    return result.and(Err(e));
                }
            }
        } else {
            result.is_ok()
        };
        if let Err(e) = self.keys.settle_write(id, done).await {
            tracing::warn!(event_id = id, guild_id, done, error = %e, "failed to record a write's outcome; retrying");
            let keys = self.keys.clone();
            tokio::spawn(async move { settle_later(&keys, id, done).await });
        }
        if !done {
            return Err(result.err().unwrap_or_else(|| Error::Discord("Discord did not make the change".to_owned())));
        }
        Ok(WriteOutcome { changed: true, dry_run: false, audit_event_id: Some(id) })
    }

    /// Settles a pending API write left by a process that died mid-write (or
    /// whose Discord call could not tell) from what Discord shows now.
    /// Returns whether the write was found done; an error (Discord
    /// unreachable) leaves the event pending for the next pass.
    pub async fn reconcile(&self, event: &crate::audit::AuditEvent) -> Result<bool> {
        let done = self.landed(event.guild_id, event.action, &event.details).await?;
        self.keys.settle_write(event.id, done).await?;
        Ok(done)
    }

    /// Whether Discord shows the change an API write asked for: the ban
    /// there or not, the member holding the role or not (a member who left
    /// shows nothing, so no).
    async fn landed(&self, guild_id: u64, action: Action, details: &serde_json::Value) -> Result<bool> {
        let id_in = |name: &str| details[name].as_str().and_then(|v| v.parse::<u64>().ok());
        Ok(match (action, id_in("user_id")) {
            (Action::BanAdded | Action::BanRemoved, Some(user_id)) => {
                let banned = self.ops.ban_status(guild_id, user_id).await.map_err(discord)?.is_some();
                self.bans.invalidate(guild_id, user_id);
                banned == (action == Action::BanAdded)
            }
            (Action::RoleAdded | Action::RoleRemoved, Some(user_id)) => {
                let roles = self.ops.member_roles(guild_id, user_id).await.map_err(discord)?;
                match (roles, id_in("role_id")) {
                    (Some(roles), Some(role)) => roles.contains(&role) == (action == Action::RoleAdded),
                    _ => false,
                }
            }
            _ => false,
        })
    }
}

/// Retries recording a write's outcome while the database is out of reach,
/// for as long as the writer owns the event ([`super::audit::PENDING_FOR`]);
/// the reconcile settles it after that.
async fn settle_later(keys: &KeyService, id: i64, done: bool) {
    let deadline = tokio::time::Instant::now() + super::audit::PENDING_FOR;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match keys.settle_write(id, done).await {
            Ok(_) => {
                tracing::info!(event_id = id, done, "recorded a write's outcome once the database was back");
                return;
            }
            Err(e) => tracing::debug!(event_id = id, error = %e, "still failing to record a write's outcome"),
        }
    }
}

/// The leak guard's state after a change.
#[derive(Debug, Clone)]
pub struct LeakGuard {
    /// The AutoMod rule, while the guard is on.
    pub rule_id: Option<u64>,
    /// Where AutoMod's alerts go (the audit channel at the time it was set).
    pub alerts_to: Option<u64>,
    /// False when it already was so.
    pub changed: bool,
}

/// The regex (Rust's `regex` syntax, which Discord's AutoMod uses) for any
/// key with this token prefix: SPEC §3's shape.
pub fn leak_pattern(prefix: &str) -> String {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] })
        .collect();
    format!("{escaped}_(live|test)_[0-9A-Za-z]{{38}}")
}

/// A write addressed by `roblox:` id names that id in its audit entry,
/// beside the Discord account it reached.
fn note_roblox_id(details: &mut serde_json::Value, roblox_id: Option<u64>) {
    if let Some(id) = roblox_id {
        details["roblox_id"] = json!(id);
    }
}

fn check_reason(reason: Option<String>) -> Result<Option<String>> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(Error::Invalid(crate::keys::InvalidInput::new(
            "reason",
            format!("is {} characters long; the most is {MAX_REASON_CHARS}", r.chars().count()),
        ))),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leak_pattern_matches_the_token_format_and_nothing_shorter() {
        let re = regex::Regex::new(&leak_pattern("gk")).unwrap();
        let token = crate::keys::token::generate("gk", crate::keys::Environment::Live);
        assert!(re.is_match(&format!("oops: {} here", token.expose())));
        assert!(!re.is_match(&token.expose()[..40]), "a truncated key is no key");
        assert!(!re.is_match("gk_prod_0123456789012345678901234567890123456789"));
    }

    #[test]
    fn a_ban_check_in_flight_across_an_invalidation_is_not_cached() {
        let cache = BanCache::default();
        let before = cache.epoch();
        // The check went out, then our ban (or a GUILD_BAN_ADD) landed...
        cache.invalidate(1, 2);
        // ...and the check came back with the old answer: not kept.
        cache.put(1, 2, None, before);
        assert_eq!(cache.get(1, 2), None);

        let now = cache.epoch();
        cache.put(1, 2, Some(Some("spam".into())), now);
        assert_eq!(cache.get(1, 2), Some(Some(Some("spam".into()))));
        cache.invalidate(1, 2);
        assert_eq!(cache.get(1, 2), None);
    }
}
