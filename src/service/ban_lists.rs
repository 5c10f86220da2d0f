//! Each guild's ban list, held in memory, so a ban check makes no Discord
//! call (issue 24, "Ban lists in memory").
//!
//! **Held**: one sorted `Vec<u64>` of banned user ids per guild (8 bytes a
//! ban: 100,000 bans are 0.8 MB), answered by binary search. Reasons are
//! not held: a banned user's reason is read from the store (`guild_ban`),
//! so only checks of banned users touch the database.
//!
//! **Synced** by a process running the bot, one guild at a time per page:
//! Discord's `GET /guilds/{id}/bans`, 1,000 a page, ascending `after`,
//! paced by the answer's `X-RateLimit-Remaining` / `Reset-After`
//! ([`BanLists::sync`]). Each page settles its id range `(after, last]`:
//! ids the page lacks are dropped, ids it adds are added, in memory and in
//! one store transaction with the sync's cursor, so a restart resumes a
//! sync where it stopped; a resumed sync goes round to where it began. Ids a
//! ban event touched while the page was in flight keep what the event said.
//! A guild is synced when the bot sees it (its GUILD_CREATE: a start, a
//! re-identify, a join, the end of an outage; not a resume) if it has an
//! active key or a list already, when the bot regains Ban Members, and at
//! the first ban check a process running the bot answers for it.
//!
//! **Kept current** by GUILD_BAN_ADD / GUILD_BAN_REMOVE and this process's
//! own API bans and unbans ([`BanLists::record`]). When the bot can no longer
//! hear ban events (it lost both Ban Members and View Audit Log) the list is
//! marked incomplete, and checks ask Discord again until a sync finishes.
//!
//! **Followed**: an `--only http` listener hears no gateway events; it loads
//! the lists from the store and applies the store's ban change log
//! (`guild_ban_change`, written by triggers) every [`FOLLOW_EVERY`], as the
//! key index follows keys ([`BanLists::follow`]).
//!
//! Until a guild's list is complete, checks answer as before (Discord,
//! through the short ban cache).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::discord::{BansPage, DiscordError, GuildOps};
use crate::store::{BanSyncState, Store};

use super::actions::GuildActions;
use super::clock::Clock;
use super::guard::Call;
use super::roblox::links::MemberId;
use super::{Authenticated, Error, Result};
use crate::keys::Scope;

/// Discord's largest page of bans.
pub const PAGE: u32 = 1000;
/// How often a listener without the gateway reads the ban change log.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Pages of ban lists asked of Discord at once, across guilds: syncs stay
/// a trickle beside the API's own calls.
const PAGES_AT_ONCE: usize = 2;
/// The longest a sync waits out one rate limit before trying again.
const MAX_PACE_WAIT: Duration = Duration::from_secs(60);
/// Failed pages in a row before a sync gives up (a later trigger resumes it).
const MAX_FAILURES: u32 = 5;
/// How long after a failed sync a ban check does not start another.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);
/// Change-log entries applied per read.
const CHANGES_PER_READ: usize = 1000;

/// One guild's list.
#[derive(Debug, Default)]
struct GuildList {
    /// Banned user ids, ascending.
    ids: Vec<u64>,
    /// A whole sync finished and ban events are heard: checks answer from `ids`.
    complete: bool,
}

/// A sync under way for a guild.
#[derive(Debug, Default)]
struct Syncing {
    /// Ids a ban event or an own write changed while the current page was
    /// in flight: the page does not settle them.
    touched: HashSet<u64>,
    /// Another sync was asked for meanwhile (a re-identify mid-sync): run
    /// again from the start once this one ends.
    again: bool,
}

/// Every guild's ban list (see the module docs). Cheap to share (`Arc`).
pub struct BanLists {
    store: Store,
    clock: Clock,
    lists: RwLock<HashMap<u64, GuildList>>,
    syncing: Mutex<HashMap<u64, Syncing>>,
    /// When a guild's last sync stopped on an error: a check does not start
    /// another for [`RETRY_FAILED_AFTER`].
    failed: Mutex<HashMap<u64, std::time::Instant>>,
    /// Whether the bot held Ban Members (can list bans) at the last sight.
    can_list: Mutex<HashMap<u64, bool>>,
    /// Guilds where the bot hears no ban events (neither Ban Members nor
    /// View Audit Log): a sync finishing there does not make the list complete.
    deaf: Mutex<HashSet<u64>>,
    /// This process runs the bot: it syncs lists and hears ban events.
    syncs: AtomicBool,
    pages: tokio::sync::Semaphore,
}

/// How much memory the lists take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BanListsSize {
    pub guilds: usize,
    pub bans: usize,
    /// Bytes held by the lists' ids (capacity, not length) and their map.
    pub bytes: usize,
}

impl BanLists {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self {
            store,
            clock,
            lists: RwLock::default(),
            syncing: Mutex::default(),
            failed: Mutex::default(),
            can_list: Mutex::default(),
            deaf: Mutex::default(),
            syncs: AtomicBool::new(false),
            pages: tokio::sync::Semaphore::new(PAGES_AT_ONCE),
        }
    }

    /// This process runs the bot: it syncs lists (set once at start).
    pub fn set_syncs(&self) {
        self.syncs.store(true, Ordering::SeqCst);
    }

    pub fn syncs(&self) -> bool {
        self.syncs.load(Ordering::SeqCst)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, GuildList>> {
        self.lists.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, GuildList>> {
        self.lists.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user_id` is banned, from memory; `None` until the guild's
    /// list is complete.
    pub fn banned(&self, guild_id: u64, user_id: u64) -> Option<bool> {
        let lists = self.read();
        let list = lists.get(&guild_id).filter(|l| l.complete)?;
        Some(list.ids.binary_search(&user_id).is_ok())
    }

    /// Whether the guild's list is complete (checks answer from memory).
    pub fn is_complete(&self, guild_id: u64) -> bool {
        self.read().get(&guild_id).is_some_and(|l| l.complete)
    }

    /// Up to `limit` banned ids after `after`, ascending; `None` until the
    /// guild's list is complete.
    pub fn page(&self, guild_id: u64, after: u64, limit: usize) -> Option<Vec<u64>> {
        let lists = self.read();
        let list = lists.get(&guild_id).filter(|l| l.complete)?;
        let from = list.ids.partition_point(|&id| id <= after);
        Some(list.ids[from..].iter().take(limit).copied().collect())
    }

    /// The memory the lists hold.
    pub fn size(&self) -> BanListsSize {
        let lists = self.read();
        let per_guild = std::mem::size_of::<(u64, GuildList)>() + 1;
        BanListsSize {
            guilds: lists.len(),
            bans: lists.values().map(|l| l.ids.len()).sum(),
            bytes: lists.capacity() * per_guild
                + lists.values().map(|l| l.ids.capacity() * std::mem::size_of::<u64>()).sum::<usize>(),
        }
    }

    /// Sets one id in memory (and marks it touched for a sync under way).
    fn set(&self, guild_id: u64, user_id: u64, banned: bool) {
        if let Some(s) = self.syncing.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&guild_id) {
            s.touched.insert(user_id);
        }
        let mut lists = self.write();
        let list = lists.entry(guild_id).or_default();
        match (list.ids.binary_search(&user_id), banned) {
            (Err(at), true) => list.ids.insert(at, user_id),
            (Ok(at), false) => {
                list.ids.remove(at);
            }
            _ => {}
        }
    }

    /// A ban or unban the gateway reported, or this process made: applied
    /// in memory at once, then stored (`reason` when known).
    pub async fn record(&self, guild_id: u64, user_id: u64, banned: bool, reason: Option<&str>) {
        // Only lists kept (or being synced) are changed: a guild with none
        // gets one from a sync, which reads every ban anyway.
        let syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&guild_id);
        if !syncing && !self.read().contains_key(&guild_id) {
            return;
        }
        self.set(guild_id, user_id, banned);
        if let Err(e) = self.store.put_guild_ban(guild_id, user_id, banned, reason).await {
            tracing::warn!(guild_id, user_id, banned, error = format!("{e:#}"), "failed to store a ban change");
        }
    }

    /// Loads every list from the store (replacing memory); returns the
    /// change log's head as of before the load.
    pub async fn load(&self) -> anyhow::Result<i64> {
        let head = self.store.ban_change_head().await?;
        let mut loaded = HashMap::new();
        for (guild_id, state) in self.store.ban_sync_states().await? {
            let ids = self.store.guild_ban_ids(guild_id).await?;
            loaded.insert(guild_id, GuildList { ids, complete: state.complete });
        }
        let (guilds, bans) = (loaded.len(), loaded.values().map(|l| l.ids.len()).sum::<usize>());
        *self.write() = loaded;
        tracing::debug!(guilds, bans, "loaded the ban lists from the database");
        Ok(head)
    }

    /// Whether a guild's list should be synced when the bot sees it: it has
    /// one already, or the guild has an active key.
    pub async fn wanted(&self, guild_id: u64) -> bool {
        if self.read().contains_key(&guild_id) {
            return true;
        }
        self.store.count_active(guild_id, self.clock.now()).await.is_ok_and(|n| n > 0)
    }

    /// The bot's permissions in a guild, as the gateway shows them:
    /// without any permission that brings ban events the list can no longer
    /// be kept current (marked incomplete); returns whether the list should
    /// be synced now (Ban Members came back).
    pub async fn observe_permissions(&self, guild_id: u64, permissions: u64) -> bool {
        use crate::discord::permissions as p;
        let admin = permissions & p::ADMINISTRATOR != 0;
        let can_list = admin || permissions & p::BAN_MEMBERS != 0;
        let hears = admin || permissions & (p::BAN_MEMBERS | p::VIEW_AUDIT_LOG) != 0;
        let before = self.can_list.lock().unwrap_or_else(|e| e.into_inner()).insert(guild_id, can_list);
        {
            let mut deaf = self.deaf.lock().unwrap_or_else(|e| e.into_inner());
            if hears {
                deaf.remove(&guild_id);
            } else {
                deaf.insert(guild_id);
            }
        }
        if !hears && self.is_complete(guild_id) {
            if let Some(list) = self.write().get_mut(&guild_id) {
                list.complete = false;
            }
            tracing::info!(guild_id, "the bot no longer hears ban events here; ban checks ask Discord again");
            if let Err(e) = self.store.mark_ban_list_stale(guild_id, self.clock.now()).await {
                tracing::warn!(guild_id, error = format!("{e:#}"), "failed to mark a ban list stale");
            }
        }
        before == Some(false) && can_list
    }

    /// Syncs a guild's list (see the module docs), unless a sync of it is
    /// under way (that one then runs again). Errors are logged: a later
    /// trigger resumes from the stored cursor.
    pub async fn sync(&self, ops: &dyn GuildOps, guild_id: u64) {
        {
            let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = syncing.get_mut(&guild_id) {
                s.again = true;
                return;
            }
            syncing.insert(guild_id, Syncing::default());
        }
        loop {
            let started = std::time::Instant::now();
            match self.sync_once(ops, guild_id).await {
                Ok(bans) => {
                    self.failed.lock().unwrap_or_else(|e| e.into_inner()).remove(&guild_id);
                    tracing::info!(
                        guild_id,
                        bans,
                        ms = started.elapsed().as_millis() as u64,
                        "synced the guild's ban list"
                    );
                    if bans >= TRIM_AFTER_BANS {
                        release_freed_memory();
                    }
                }
                Err(e) => {
                    tracing::warn!(guild_id, error = %e, "the ban list sync stopped; it resumes at the next trigger");
                    self.failed.lock().unwrap_or_else(|e| e.into_inner()).insert(guild_id, std::time::Instant::now());
                }
            }
            let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
            match syncing.get_mut(&guild_id) {
                Some(s) if s.again => *s = Syncing::default(),
                _ => {
                    syncing.remove(&guild_id);
                    return;
                }
            }
        }
    }

    /// One whole pass; the number of bans in the list at its end.
    async fn sync_once(&self, ops: &dyn GuildOps, guild_id: u64) -> Result<usize, String> {
        let stored = self.store.ban_sync_state(guild_id).await.map_err(|e| format!("{e:#}"))?;
        let BanSyncState { sync_after, .. } = stored;
        let start = sync_after.unwrap_or(0);
        let mut after = start;
        // A resumed sync goes round: from 0 up to where it began.
        let mut wrapped = start == 0;
        loop {
            let page = self.fetch(ops, guild_id, after).await?;
            let last = page.bans.last().map(|(id, _)| *id);
            let end = page.bans.len() < PAGE as usize;
            let reached = wrapped && start > 0 && last.is_some_and(|l| l >= start);
            let done = (end && wrapped) || reached;
            // The range this page settles: (after, last], or (after, ∞) at the end.
            let upper = if end { u64::MAX } else { last.unwrap_or(u64::MAX) };
            let next = if done {
                None
            } else if end {
                wrapped = true;
                Some(0)
            } else {
                last
            };
            self.settle(guild_id, after, upper, page.bans, next).await?;
            if let (Some(0), Some(wait)) = (page.remaining, page.reset_after) {
                tokio::time::sleep(wait.min(MAX_PACE_WAIT)).await;
            }
            match next {
                None => return Ok(self.read().get(&guild_id).map_or(0, |l| l.ids.len())),
                Some(n) => after = n,
            }
        }
    }

    /// One page, waiting out Discord's rate limits (and retrying a few
    /// failures).
    async fn fetch(&self, ops: &dyn GuildOps, guild_id: u64, after: u64) -> Result<BansPage, String> {
        let mut failures = 0;
        loop {
            let permit = self.pages.acquire().await.map_err(|e| e.to_string())?;
            if let Some(s) = self.syncing.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&guild_id) {
                s.touched.clear();
            }
            let answer = ops.bans_page(guild_id, after, PAGE).await;
            drop(permit);
            let wait = match answer {
                Ok(mut page) => {
                    page.bans.sort_unstable_by_key(|(id, _)| *id);
                    page.bans.dedup_by_key(|(id, _)| *id);
                    return Ok(page);
                }
                Err(DiscordError::Refused { status: 429, message, .. }) => {
                    tracing::debug!(guild_id, %message, "ban list page rate limited; waiting");
                    retry_after_of(&message).unwrap_or(Duration::from_secs(1))
                }
                Err(e @ DiscordError::Refused { status: 400..=499, .. }) => return Err(e.to_string()),
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(e.to_string());
                    }
                    Duration::from_secs(1 << failures.min(5))
                }
            };
            tokio::time::sleep(wait.min(MAX_PACE_WAIT)).await;
        }
    }

    /// Settles the ids in `(after, upper]` to what the page said (but ids
    /// touched meanwhile), in memory and in the store with the cursor.
    async fn settle(
        &self,
        guild_id: u64,
        after: u64,
        upper: u64,
        bans: Vec<(u64, Option<String>)>,
        next: Option<u64>,
    ) -> Result<(), String> {
        let touched = self
            .syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&guild_id)
            .map(|s| s.touched.clone())
            .unwrap_or_default();
        let hears = !self.deaf.lock().unwrap_or_else(|e| e.into_inner()).contains(&guild_id);
        let (added, removed) = {
            let mut lists = self.write();
            let list = lists.entry(guild_id).or_default();
            let lo = list.ids.partition_point(|&id| id <= after);
            let hi = list.ids.partition_point(|&id| id <= upper);
            let old = &list.ids[lo..hi];
            let page: Vec<u64> = bans.iter().map(|(id, _)| *id).filter(|id| *id > after && *id <= upper).collect();
            let removed: Vec<u64> =
                old.iter().copied().filter(|id| !touched.contains(id) && page.binary_search(id).is_err()).collect();
            let added: Vec<(u64, Option<String>)> = bans
                .into_iter()
                .filter(|(id, _)| *id > after && *id <= upper)
                .filter(|(id, _)| !touched.contains(id) && old.binary_search(id).is_err())
                .collect();
            if !added.is_empty() || !removed.is_empty() {
                let mut range: Vec<u64> = old
                    .iter()
                    .copied()
                    .filter(|id| removed.binary_search(id).is_err())
                    .chain(added.iter().map(|(id, _)| *id))
                    .collect();
                range.sort_unstable();
                list.ids.splice(lo..hi, range);
            }
            if next.is_none() && hears {
                list.complete = true;
            }
            (added, removed)
        };
        self.store
            .apply_ban_page(guild_id, &added, &removed, next, hears, self.clock.now())
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// Follows the store's ban change log until `stop` (a process without
    /// the bot), from entry `seen` (what [`Self::load`] answered; `None`:
    /// load first), applying each change.
    pub async fn follow(&self, mut seen: Option<i64>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {
                    if let Err(e) = self.catch_up(&mut seen).await {
                        tracing::warn!(error = format!("{e:#}"), "failed to follow the ban lists; retrying");
                    }
                }
            }
        }
    }

    /// Applies the change log since `seen` (loading whole when there is no
    /// `seen` or the log lost entries since).
    pub async fn catch_up(&self, seen: &mut Option<i64>) -> anyhow::Result<()> {
        loop {
            let Some(after) = *seen else {
                *seen = Some(self.load().await?);
                continue;
            };
            let Some(log) = self.store.ban_changes_since(after, CHANGES_PER_READ).await? else {
                *seen = None;
                continue;
            };
            let Some(last) = log.changes.last().map(|c| c.seq) else { return Ok(()) };
            let mut states = Vec::new();
            for change in &log.changes {
                match change.user_id {
                    Some(user) => self.set(change.guild_id, user, change.banned),
                    None => states.push(change.guild_id),
                }
            }
            states.dedup();
            for guild_id in states {
                let state = self.store.ban_sync_state(guild_id).await?;
                self.write().entry(guild_id).or_default().complete = state.complete;
            }
            *seen = Some(last);
            if log.changes.len() < CHANGES_PER_READ {
                return Ok(());
            }
        }
    }
}

/// The wait a 429's message names ("… Retry after 1.5 s; …"), as
/// [`crate::discord`] writes it.
fn retry_after_of(message: &str) -> Option<Duration> {
    let rest = message.split("Retry after ").nth(1)?;
    let secs: f64 = rest.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Starts a sync of `guild_id` in the background (see [`BanLists::sync`]);
/// one under way runs again from the start once it ends.
pub fn spawn_sync(lists: &Arc<BanLists>, ops: &Arc<dyn GuildOps>, guild_id: u64) {
    if !lists.syncs() {
        return;
    }
    let (lists, ops) = (lists.clone(), ops.clone());
    tokio::spawn(async move { lists.sync(ops.as_ref(), guild_id).await });
}

/// A sync this large passed megabytes of pages through the allocator.
const TRIM_AFTER_BANS: usize = 10_000;

/// Hands the heap memory a large sync freed back to the system: glibc keeps
/// what each thread's arena held (about 12 MiB after a 100,000-ban sync,
/// against the 1 MB the list itself holds) unless asked.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts a sync of a guild whose list a check found incomplete, unless
/// one is under way or the last one failed within [`RETRY_FAILED_AFTER`].
pub fn spawn_sync_if_idle(lists: &Arc<BanLists>, ops: &Arc<dyn GuildOps>, guild_id: u64) {
    if !lists.syncs() || lists.syncing.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&guild_id) {
        return;
    }
    let failed = lists.failed.lock().unwrap_or_else(|e| e.into_inner()).get(&guild_id).copied();
    if failed.is_some_and(|at| at.elapsed() < RETRY_FAILED_AFTER) {
        return;
    }
    spawn_sync(lists, ops, guild_id);
}

/// The most ids one bulk ban check carries.
pub const MAX_BULK_CHECK: usize = 100;
/// The most bans one export page carries (Discord's page, too).
pub const MAX_EXPORT_PAGE: u32 = PAGE;

/// One answer of a bulk ban check, in the order asked.
#[derive(Debug)]
pub struct BulkCheck {
    /// The id as sent.
    pub user_id: String,
    pub banned: bool,
    /// Why this id could not be answered (it is then `banned: false`).
    pub error: Option<Error>,
}

/// One ban of an export page.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ExportedBan {
    #[schema(example = "1100000000000000001")]
    pub user_id: String,
    /// The Roblox account the guild's linker named for this user, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 123456789)]
    pub roblox_id: Option<u64>,
}

/// A page of a guild's ban list.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BanExport {
    pub bans: Vec<ExportedBan>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(example = "1100000000000000001")]
    pub next_after: Option<String>,
}

impl GuildActions {
    /// A ban or unban the gateway reported: applied to the guild's list;
    /// for a ban, Discord's reason is read once (the event carries none) and
    /// stored, so a check shows it as a check asked of Discord would.
    pub async fn heard_ban(&self, guild_id: u64, user_id: u64, banned: bool) {
        self.ban_lists.record(guild_id, user_id, banned, None).await;
        if !banned || !self.ban_lists.read().contains_key(&guild_id) {
            return;
        }
        match self.call(guild_id, Call::BanCheck, self.ops.ban_status(guild_id, user_id)).await {
            Ok(Some(Some(reason))) => {
                if let Err(e) = self.keys.store().set_guild_ban_reason(guild_id, user_id, &reason).await {
                    tracing::warn!(guild_id, user_id, error = format!("{e:#}"), "failed to store a ban's reason");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(guild_id, user_id, error = %e, "could not read a heard ban's reason"),
        }
    }

    /// Whether each of these members is banned, in the order asked: from
    /// memory once the guild's list is complete, else as a single check
    /// asks. `members` are the ids as sent, each parsed (or why not).
    pub async fn check_bans(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        members: Vec<(String, Result<MemberId>)>,
    ) -> Result<Vec<BulkCheck>> {
        caller.authorize(guild_id, Scope::BansRead)?;
        let mut out = Vec::with_capacity(members.len());
        for (user_id, member) in members {
            let resolved = match member {
                Ok(member) => self.keys.resolve_member(guild_id, &member).await,
                Err(e) => Err(e),
            };
            let ids = match resolved {
                Ok(ids) => ids,
                Err(error) => {
                    out.push(BulkCheck { user_id, banned: false, error: Some(error) });
                    continue;
                }
            };
            let mut banned = false;
            for id in ids {
                banned |= match self.ban_lists.banned(guild_id, id) {
                    Some(banned) => banned,
                    None => self.ban_status(caller, guild_id, id).await?.banned,
                };
            }
            out.push(BulkCheck { user_id, banned, error: None });
        }
        Ok(out)
    }

    /// A page of the guild's bans after `after`, ascending, with each
    /// user's Roblox id where known: from memory once the list is
    /// complete, else one page read from Discord.
    pub async fn export_bans(
        &self,
        caller: &Authenticated,
        guild_id: u64,
        after: u64,
        limit: u32,
    ) -> Result<BanExport> {
        caller.authorize(guild_id, Scope::BansRead)?;
        let limit = limit.clamp(1, MAX_EXPORT_PAGE);
        let (ids, more) = match self.ban_lists.page(guild_id, after, limit as usize + 1) {
            Some(mut ids) => {
                let more = ids.len() > limit as usize;
                ids.truncate(limit as usize);
                (ids, more)
            }
            None => {
                super::ban_lists::spawn_sync_if_idle(&self.ban_lists, &self.ops, guild_id);
                let page = self.call(guild_id, Call::BanCheck, self.ops.bans_page(guild_id, after, limit)).await?;
                let mut ids: Vec<u64> = page.bans.into_iter().map(|(id, _)| id).collect();
                ids.sort_unstable();
                let more = ids.len() >= limit as usize;
                (ids, more)
            }
        };
        let roblox: HashMap<u64, u64> = self
            .keys
            .store()
            .roblox_ids_of(guild_id, &ids)
            .await?
            .into_iter()
            .rev() // the lowest Roblox id of a Discord account wins
            .map(|link| (link.discord_id, link.roblox_id))
            .collect();
        let next_after = more.then(|| ids.last().map(u64::to_string)).flatten();
        let bans = ids
            .into_iter()
            .map(|id| ExportedBan { user_id: id.to_string(), roblox_id: roblox.get(&id).copied() })
            .collect();
        Ok(BanExport { bans, next_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_message_names_its_wait() {
        assert_eq!(
            retry_after_of("You are being rate limited. Retry after 1.5 s; nothing was done."),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after_of("Missing Permissions"), None);
    }
}
