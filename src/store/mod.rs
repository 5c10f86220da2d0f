//! All SQL lives here, and only here: the one module that knows which
//! database holds the keys. Above it, the service speaks in domain types.
//!
//! Two backends answer the same calls with the same rules:
//! - [`sqlite`]: one file, the embedded default that needs nothing; one
//!   process writes at a time, and others (the CLI, a second instance on
//!   the same file) are noticed through SQLite's `data_version`.
//! - [`postgres`]: `database.url = postgres://…`, for several instances;
//!   each change wakes every instance through `LISTEN`/`NOTIFY`, and the
//!   change log stays the truth (a lost notification costs one poll).
//!
//! Rows come back through [`rows`], decoded once for both.

mod postgres;
mod rows;
mod sqlite;
mod usage;
mod webhooks;

pub use usage::{
    HourCount, IpCount, MinuteCount, NewRequestLog, RequestLogEntry, UsageRowsHeld, UsageUpkeep, REFUSAL_STATUSES,
};
pub use webhooks::{
    AttemptNext, AttemptRecord, DeliveryRecord, DeliveryState, DueDelivery, NewDelivery, NewWebhook, WebhookRecord,
};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::audit::{AuditEvent, NewAuditEvent};
use crate::keys::{AllowedIps, AllowedRoles, Environment, KeyHash, KeyId, KeyRecord, Scopes};

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Which backend a database URL selects.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether `url` names a database guildkey can keep keys in: a PostgreSQL
/// URL, or a SQLite URL naming a file (an in-memory database would accept
/// keys and forget them at exit, and the CLI would print secrets no
/// listener ever knows). The reason, when not, masks any password.
pub fn check_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    if is_postgres_url(url) {
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        return Ok(());
    }
    if !url.starts_with("sqlite:") {
        return Err(format!(
            "'{}' is not a SQLite URL like sqlite://data/guildkey.db?mode=rwc nor a PostgreSQL URL like \
             postgres://guildkey@db.internal/guildkey",
            mask_url_password(url)
        ));
    }
    sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return Err(format!(
            "'{url}' names no database file (or an in-memory one); use a file like sqlite://data/guildkey.db?mode=rwc"
        ));
    }
    Ok(())
}

/// `url` with the password of its user info, if any, replaced by asterisks:
/// what logs and error messages may show of a database URL.
pub fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:********{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `e` means the database could not be reached (rather than that
/// it refused or failed the query): a connection that could not be made
/// or broke, a pool that waited too long, PostgreSQL shutting down or not
/// yet accepting connections (SQLSTATE classes 08 and 57P).
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<sqlx::Error>()).any(|e| match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    })
}

/// Runs the same call on whichever backend this store is.
macro_rules! on_backend {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens the database at `url`: `postgres://…` or `postgresql://…`
    /// selects PostgreSQL, anything else is a SQLite URL (the file and its
    /// directory are created when missing, unless the URL sets a `mode` of
    /// its own).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let backend = if is_postgres_url(url) {
            Backend::Postgres(postgres::PgStore::connect(url).await?)
        } else {
            Backend::Sqlite(sqlite::SqliteStore::connect(url).await?)
        };
        Ok(Self { backend })
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether several instances may share this database (PostgreSQL): an
    /// unreachable database then means no instance can commit a change
    /// either, so what the index holds stays the latest there is.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Applies every migration not yet applied; safe when several
    /// instances start at once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        on_backend!(self, b => b.migrate().await)
    }

    /// Changes whenever the keys may have changed since it was last read
    /// (SQLite: another connection committed; PostgreSQL: the change log
    /// grew). Costs no table scan: the index calls it often.
    pub async fn change_counter(&self) -> anyhow::Result<i64> {
        on_backend!(self, b => b.change_counter().await)
    }

    /// Woken when another instance changed a key (PostgreSQL's `NOTIFY`,
    /// or the listening connection was lost and notices may be missing);
    /// `None` when the backend has no such signal and is polled instead.
    pub fn key_changes_signal(&self) -> Option<Arc<Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.key_changes_signal()),
        }
    }

    /// Woken when any instance recorded an audit event, as
    /// [`Self::key_changes_signal`].
    pub fn audit_events_signal(&self) -> Option<Arc<Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.audit_events_signal()),
        }
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }

    /// Inserts the key only if the guild has fewer than `max_active` active
    /// keys, atomically: concurrent creates (from any instance) can never
    /// exceed it. Returns false when the limit is reached.
    pub async fn insert_key_within_limit(
        &self,
        row: &NewKeyRow<'_>,
        max_active: u32,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.insert_key_within_limit(row, max_active, now, event).await)
    }

    /// Active keys of a guild right now.
    pub async fn count_active(&self, guild_id: u64, now: DateTime<Utc>) -> anyhow::Result<u32> {
        on_backend!(self, b => b.count_active(guild_id, now).await)
    }

    /// A guild's keys, oldest first.
    pub async fn list_keys(&self, guild_id: u64) -> anyhow::Result<Vec<KeyRecord>> {
        on_backend!(self, b => b.list_keys(guild_id).await)
    }

    /// Keys matching `reference` as an id, a display prefix or an exact name,
    /// within one guild or (for the operator CLI) all of them.
    pub async fn find_keys(&self, guild_id: Option<u64>, reference: &str) -> anyhow::Result<Vec<KeyRecord>> {
        on_backend!(self, b => b.find_keys(guild_id, reference).await)
    }

    pub async fn get_key(&self, id: &KeyId) -> anyhow::Result<Option<KeyRecord>> {
        on_backend!(self, b => b.get_key(id).await)
    }

    /// How many keys there are (to size the index).
    pub async fn count_keys(&self) -> anyhow::Result<u64> {
        on_backend!(self, b => b.count_keys().await)
    }

    /// Every key as the index keeps it, handed to `each` one at a time:
    /// pages of rows from one snapshot, so a million keys never sit in
    /// memory as rows all at once.
    pub async fn scan_index_rows(&self, each: impl FnMut(IndexRow)) -> anyhow::Result<()> {
        on_backend!(self, b => b.scan_index_rows(each).await)
    }

    /// One key as the index keeps it (the index applies changes from it).
    pub async fn index_row(&self, id: &KeyId) -> anyhow::Result<Option<IndexRow>> {
        on_backend!(self, b => b.index_row(id).await)
    }

    /// The newest entry of the key change log (0 when it is empty): where a
    /// full load of the index starts following it.
    pub async fn key_change_head(&self) -> anyhow::Result<i64> {
        on_backend!(self, b => b.key_change_head().await)
    }

    /// The keys changed after log entry `after`, oldest change first, each
    /// once, with the newest entry read. `None` when the log no longer
    /// holds every entry since `after` (the oldest were dropped) or holds
    /// more than `limit`: the caller reloads whole instead.
    pub async fn key_changes_since(&self, after: i64, limit: usize) -> anyhow::Result<Option<KeyChanges>> {
        on_backend!(self, b => b.key_changes_since(after, limit).await)
    }

    /// Records the guild's leak-guard AutoMod rule (`None`: the guard is off)
    /// with its audit event.
    pub async fn set_leak_guard_rule(
        &self,
        guild_id: u64,
        rule_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<()> {
        on_backend!(self, b => b.set_leak_guard_rule(guild_id, rule_id, now, event).await)
    }

    /// The guild's leak-guard AutoMod rule, if the guard is on.
    pub async fn leak_guard_rule(&self, guild_id: u64) -> anyhow::Result<Option<u64>> {
        on_backend!(self, b => b.guild_setting(guild_id, GuildSetting::LeakGuardRule).await)
    }

    /// Marks a key revoked unless it already is. Returns false if it was.
    pub async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        on_backend!(self, b => b.revoke_key(id, now, event).await)
    }

    /// Suspends (`true`) or resumes (`false`) a key that is not revoked or
    /// expired. Returns false when the key is not in a state to change
    /// (already so, revoked, expired or gone).
    pub async fn set_suspended(
        &self,
        id: &KeyId,
        suspend: bool,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.set_suspended(id, suspend, now, event).await)
    }

    /// Deletes a key only if it is revoked or expired. Returns false if not.
    pub async fn delete_key(&self, id: &KeyId, now: DateTime<Utc>, event: &NewAuditEvent) -> anyhow::Result<bool> {
        on_backend!(self, b => b.delete_key(id, now, event).await)
    }

    /// Gives an active key a new secret. Returns false if it is not active.
    pub async fn rotate_key(
        &self,
        r: &Rotation<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.rotate_key(r, now, event).await)
    }

    /// Adds batched request counts and last-used times, in one transaction.
    /// A last-used time never moves backwards, whichever instance flushes
    /// last.
    pub async fn record_usage(&self, batch: &[(KeyId, DateTime<Utc>, u64)]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.record_usage(batch).await)
    }

    /// Sets (or with `None`, clears) the guild's audit channel, and writes
    /// `event` with the details `details` makes from what the setting was
    /// ([`AuditChannelBefore`], with up to `recent` of the events recorded
    /// while posts were off), all in one transaction: no event can slip in
    /// between what is read and what is written.
    pub async fn set_audit_channel(
        &self,
        guild_id: u64,
        channel_id: Option<u64>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        recent: u32,
        details: impl FnOnce(&AuditChannelBefore) -> serde_json::Value,
    ) -> anyhow::Result<()> {
        on_backend!(self, b => b.set_audit_channel(guild_id, channel_id, now, event, recent, details).await)
    }

    pub async fn audit_channel(&self, guild_id: u64) -> anyhow::Result<Option<u64>> {
        on_backend!(self, b => b.guild_setting(guild_id, GuildSetting::AuditChannel).await)
    }

    /// Writes an event that goes with no other change (an API write to
    /// Discord, recorded once Discord accepted it).
    pub async fn insert_audit(&self, e: &NewAuditEvent, now: DateTime<Utc>) -> anyhow::Result<i64> {
        on_backend!(self, b => b.insert_audit(e, now).await)
    }

    /// A guild's events, newest first, older than `before` when given.
    pub async fn audit_events(
        &self,
        guild_id: u64,
        limit: u32,
        before: Option<i64>,
    ) -> anyhow::Result<Vec<AuditEvent>> {
        on_backend!(self, b => b.audit_events(guild_id, limit, before).await)
    }

    /// The most recent events a key made or received.
    pub async fn audit_events_for_key(&self, key_id: &str, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        on_backend!(self, b => b.audit_events_for_key(key_id, limit).await)
    }

    /// Events not yet posted to an audit channel and not claimed by an
    /// outbox right now, oldest first.
    pub async fn unposted_audit_events(&self, limit: u32, now: DateTime<Utc>) -> anyhow::Result<Vec<AuditEvent>> {
        on_backend!(self, b => b.unposted_audit_events(limit, now).await)
    }

    /// Claims an event for posting until `until`, so that however many
    /// instances run, one posts it; an outbox that dies holding a claim
    /// leaves the event to another once the claim runs out. Returns false
    /// if it was posted or another outbox holds it.
    pub async fn claim_audit_post(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        on_backend!(self, b => b.claim_audit_post(id, now, until).await)
    }

    /// Marks a claimed event as handled (posted, or nowhere to post).
    pub async fn mark_audit_posted(&self, id: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        on_backend!(self, b => b.mark_audit_posted(id, now).await)
    }
}

/// The id-valued columns of `guild_setting` (named here, never from input).
#[derive(Clone, Copy)]
pub(crate) enum GuildSetting {
    AuditChannel,
    LeakGuardRule,
}

impl GuildSetting {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AuditChannel => "audit_channel_id",
            Self::LeakGuardRule => "leak_guard_rule_id",
        }
    }
}

/// A key about to be inserted.
pub struct NewKeyRow<'a> {
    pub id: &'a KeyId,
    pub guild_id: u64,
    pub name: &'a str,
    pub hash: KeyHash,
    pub prefix: &'a str,
    pub environment: Environment,
    pub scopes: &'a Scopes,
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: u32,
    pub allowed_ips: &'a AllowedIps,
    pub allowed_roles: &'a AllowedRoles,
    pub ban_budget: Option<u32>,
    pub role_budget: Option<u32>,
}

/// A new secret for an existing key.
pub struct Rotation<'a> {
    pub id: &'a KeyId,
    pub hash: KeyHash,
    pub prefix: &'a str,
    /// When the old secret stops working; `None` stops it now.
    pub previous_until: Option<DateTime<Utc>>,
}

/// Keys changed since a point in the key change log.
#[derive(Debug)]
pub struct KeyChanges {
    /// Each changed key once.
    pub keys: Vec<KeyId>,
    /// The newest log entry these cover.
    pub through: i64,
}

impl KeyChanges {
    /// What a read of the log says: `rows` are the entries after `after`
    /// (up to `limit + 1` of them, oldest first), `oldest` the oldest entry
    /// the log still holds. `None` when the caller must reload whole.
    fn from_log(after: i64, oldest: Option<i64>, rows: Vec<(i64, String)>, limit: usize) -> Option<Self> {
        if rows.len() > limit || (!rows.is_empty() && oldest.is_some_and(|oldest| oldest > after + 1)) {
            return None;
        }
        let through = rows.last().map_or(after, |r| r.0);
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let keys = rows.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| KeyId::from_stored(id));
        Some(KeyChanges { keys: keys.collect(), through })
    }
}

/// What the in-memory index keeps of a key: what verification and its
/// callers need (no bookkeeping columns), with the hashes presented tokens
/// are matched against.
pub struct IndexRow {
    pub id: KeyId,
    pub guild_id: u64,
    pub name: String,
    pub prefix: String,
    pub environment: Environment,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: u32,
    pub allowed_ips: AllowedIps,
    pub allowed_roles: AllowedRoles,
    pub suspended: bool,
    pub ban_budget: Option<u32>,
    pub role_budget: Option<u32>,
    pub hash: KeyHash,
    /// A rotated-out secret's hash and when it stops working.
    pub previous: Option<(KeyHash, DateTime<Utc>)>,
}

/// What a guild's audit channel setting was when it was changed.
#[derive(Debug, Clone, Default)]
pub struct AuditChannelBefore {
    /// The channel it replaces; `None` when posts were off or never set.
    pub channel_id: Option<u64>,
    /// When posts had been turned off (rather than never set): since when,
    /// and what was recorded since.
    pub off: Option<PostsOff>,
}

/// The events a guild recorded while its audit posts were off.
#[derive(Debug, Clone)]
pub struct PostsOff {
    /// The event that turned posts off.
    pub turned_off: AuditEvent,
    /// Events recorded since (not counting that one).
    pub count: u64,
    /// The latest of them, newest first.
    pub recent: Vec<AuditEvent>,
}

/// The webhook calls, on whichever backend this store is.
impl Store {
    /// Sets the guild's webhook (enabled, its failures forgotten), keeping
    /// its secret unless `replace_secret` or it is new, and writes the
    /// event `details` makes from whether the secret is `w.secret`, in one
    /// transaction. Returns whether it is.
    pub async fn set_webhook(
        &self,
        w: &NewWebhook<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
        details: impl FnOnce(bool) -> serde_json::Value,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.set_webhook(w, now, event, details).await)
    }

    /// Removes the guild's webhook and its deliveries, with `event`.
    /// Returns false if it had none.
    pub async fn remove_webhook(
        &self,
        guild_id: u64,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.remove_webhook(guild_id, now, event).await)
    }

    /// Disables an enabled webhook, drops its pending deliveries and
    /// writes `event`, in one transaction. Returns false if it was not
    /// enabled (another instance disabled it first, or it is gone).
    pub async fn disable_webhook(
        &self,
        guild_id: u64,
        reason: &str,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.disable_webhook(guild_id, reason, now, event).await)
    }

    /// The guild's webhook, if it has one.
    pub async fn webhook(&self, guild_id: u64) -> anyhow::Result<Option<WebhookRecord>> {
        on_backend!(self, b => b.webhook(guild_id).await)
    }

    /// The guild's latest deliveries, newest first.
    pub async fn webhook_deliveries(&self, guild_id: u64, limit: u32) -> anyhow::Result<Vec<DeliveryRecord>> {
        on_backend!(self, b => b.webhook_deliveries(guild_id, limit).await)
    }

    /// Marks every audit event not yet looked at whose guild has no enabled
    /// webhook (or one set after the event) as looked at, at once; returns
    /// how many.
    pub async fn skip_unhooked_audit_events(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        on_backend!(self, b => b.skip_unhooked_audit_events(now).await)
    }

    /// Audit events the webhook dispatcher has not looked at, oldest first.
    pub async fn unchecked_audit_events(&self, limit: u32) -> anyhow::Result<Vec<AuditEvent>> {
        on_backend!(self, b => b.unchecked_audit_events(limit).await)
    }

    /// Marks an audit event looked at and queues `delivery` for it (if the
    /// guild's webhook is still enabled), in one transaction. Returns false
    /// if another dispatcher looked at it first (nothing queued).
    pub async fn check_audit_event(
        &self,
        audit_event_id: i64,
        now: DateTime<Utc>,
        delivery: Option<&NewDelivery<'_>>,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.check_audit_event(audit_event_id, now, delivery).await)
    }

    /// Queues a delivery if the guild's webhook is enabled; returns whether.
    pub async fn queue_delivery(&self, d: &NewDelivery<'_>) -> anyhow::Result<bool> {
        on_backend!(self, b => b.queue_delivery(d).await)
    }

    /// Deliveries due at `now`, unclaimed, to enabled webhooks, the most
    /// overdue first.
    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> anyhow::Result<Vec<DueDelivery>> {
        on_backend!(self, b => b.due_deliveries(now, limit).await)
    }

    /// When the next pending delivery is due and unclaimed, if any is.
    pub async fn next_delivery_at(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        on_backend!(self, b => b.next_delivery_at().await)
    }

    /// Claims a due delivery until `until`, so that however many instances
    /// run, one attempts it. Returns false if another holds it or it is no
    /// longer pending.
    pub async fn claim_delivery(&self, id: i64, now: DateTime<Utc>, until: DateTime<Utc>) -> anyhow::Result<bool> {
        on_backend!(self, b => b.claim_delivery(id, now, until).await)
    }

    /// Records an attempt under its claim; on success the webhook's failed
    /// messages go back to 0, on giving up they count one more. Returns
    /// the webhook's count of failed messages in a row after it, or `None`
    /// if nothing was recorded (the claim was lost, the webhook removed).
    pub async fn finish_attempt(&self, a: &AttemptRecord<'_>, now: DateTime<Utc>) -> anyhow::Result<Option<u32>> {
        on_backend!(self, b => b.finish_attempt(a, now).await)
    }

    /// Deletes finished deliveries done before `before`; returns how many.
    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        on_backend!(self, b => b.prune_deliveries(before).await)
    }
}

// ---------------------------------------------------------------------------
// Expiry reminders (`sqlite/alerts.rs`, `postgres/alerts.rs`)
// ---------------------------------------------------------------------------

/// A key that is not revoked and expires soon.
#[derive(Debug, Clone)]
pub struct ExpiringKey {
    pub key: crate::keys::KeyRef,
    pub guild_id: u64,
    pub expires_at: DateTime<Utc>,
    /// The most urgent threshold (seconds before expiry) the key was
    /// already reminded of, if any.
    pub reminded: Option<i64>,
}

/// An expiry reminder about to be claimed and recorded.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryReminder<'a> {
    pub key_id: &'a KeyId,
    /// The expiry the reminder is about: a key whose expiry changed
    /// meanwhile is not reminded of the old one.
    pub expires_at: DateTime<Utc>,
    /// The threshold announced, in seconds before expiry.
    pub threshold_seconds: i64,
    /// Less urgent thresholds this one makes moot (a key created to expire
    /// within a day never hears "within 7 days" after "within 1 day"):
    /// marked as done, without an event of their own.
    pub passed_over: &'a [i64],
}

impl Store {
    /// Keys not revoked (suspended ones included) that expire after `now`
    /// and no later than `until`, with the most urgent reminder each got,
    /// in order of expiry then id, after `after` (the last of the previous
    /// page), at most `limit`.
    pub async fn expiring_keys(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, &KeyId)>,
        limit: u32,
    ) -> anyhow::Result<Vec<ExpiringKey>> {
        on_backend!(self, b => b.expiring_keys(now, until, after, limit).await)
    }

    /// Claims one expiry reminder and records its audit event, in one
    /// transaction: the claim is a row keyed by key and threshold, so
    /// however many instances try at once (or again after a restart), one
    /// records it. Returns false, writing nothing, when the reminder was
    /// already claimed or the key is revoked, gone, expired at `now` or
    /// expires at another time than `r.expires_at`.
    pub async fn claim_expiry_reminder(
        &self,
        r: &ExpiryReminder<'_>,
        now: DateTime<Utc>,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.claim_expiry_reminder(r, now, event).await)
    }
}

// ---------------------------------------------------------------------------
// The rate limit shared by instances (see `service::lease`)
// ---------------------------------------------------------------------------

/// What one lease of a key's window budget handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    /// Requests this lease added to the instance's budget (0 when the
    /// window's budget was already all taken).
    pub granted: u32,
    /// How much of the window's budget every instance has taken, this
    /// lease included (at most the limit).
    pub taken: u32,
}

impl RateGrant {
    fn from_row(taken: i64, granted: i64) -> Self {
        let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        Self { granted: clamp(granted), taken: clamp(taken) }
    }
}

impl Store {
    /// Takes up to `chunk` requests of key `key`'s budget of `limit` for
    /// the minute window starting at `window_start_ms` (milliseconds since
    /// the epoch), in one atomic statement: however many instances lease at
    /// once, what they are granted in a window never adds up to more than
    /// `limit`.
    pub async fn lease_rate(
        &self,
        key: &KeyId,
        window_start_ms: i64,
        limit: u32,
        chunk: u32,
    ) -> anyhow::Result<RateGrant> {
        on_backend!(self, b => b.lease_rate(key, window_start_ms, limit, chunk).await)
    }

    /// Records that instance `instance_id` is alive at `now_ms`, forgets
    /// instances not seen since `live_after_ms`, and returns how many are
    /// alive (this one included).
    pub async fn beat_instance(&self, instance_id: &str, now_ms: i64, live_after_ms: i64) -> anyhow::Result<u32> {
        on_backend!(self, b => b.beat_instance(instance_id, now_ms, live_after_ms).await)
    }

    /// Removes an instance's heartbeat (it is stopping).
    pub async fn forget_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        on_backend!(self, b => b.forget_instance(instance_id).await)
    }

    /// Deletes the leases of windows that started before `window_start_ms`;
    /// returns how many.
    pub async fn delete_rate_leases_before(&self, window_start_ms: i64) -> anyhow::Result<u64> {
        on_backend!(self, b => b.delete_rate_leases_before(window_start_ms).await)
    }
}

/// The usage calls (see `usage.rs`), on whichever backend this store is.
impl Store {
    /// Adds counted requests, in one transaction: each minute's counts to
    /// its hour row's total and minute bucket at once (so an hour always
    /// holds the sum of its minutes, whichever instance flushed them), and
    /// requests per client IP and hour. Counts with the same key must have
    /// been added up already.
    pub async fn record_counters(&self, minutes: &[MinuteCount], ips: &[IpCount]) -> anyhow::Result<()> {
        if minutes.is_empty() && ips.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.record_counters(minutes, ips).await)
    }

    /// Appends requests to the log and trims each key in `trim` to its
    /// newest `keep_per_key`, in one transaction.
    pub async fn record_requests(
        &self,
        rows: &[NewRequestLog],
        trim: &[KeyId],
        keep_per_key: u32,
    ) -> anyhow::Result<()> {
        if rows.is_empty() && trim.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.record_requests(rows, trim, keep_per_key).await)
    }

    /// A key's requests per hour in `[from_hour, to_hour)`, by method,
    /// route, status and outcome, with the minute buckets still kept.
    pub async fn usage_hours(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<HourCount>> {
        on_backend!(self, b => b.usage_hours(key, from_hour, to_hour).await)
    }

    /// A key's requests per client IP over `[from_hour, to_hour)`, most first.
    pub async fn usage_ips(&self, key: &KeyId, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<(String, u64)>> {
        on_backend!(self, b => b.usage_ips(key, from_hour, to_hour).await)
    }

    /// A key's refusals (401, 403, 429) by outcome over minutes
    /// `[from_minute, to_minute)` (flushed minutes only, while kept).
    pub async fn refusals(&self, key: &KeyId, from_minute: i64, to_minute: i64) -> anyhow::Result<Vec<(String, u64)>> {
        let hours = self.usage_hours(key, from_minute.div_euclid(60), to_minute.div_euclid(60) + 1).await?;
        let mut by_outcome: std::collections::BTreeMap<String, u64> = Default::default();
        for h in hours.iter().filter(|h| REFUSAL_STATUSES.contains(&h.status)) {
            let Some(minutes) = &h.minutes else { continue };
            let n: u64 = (0..60i64)
                .filter(|m| (from_minute..to_minute).contains(&(h.hour * 60 + m)))
                .map(|m| minutes[m as usize])
                .sum();
            if n > 0 {
                *by_outcome.entry(h.outcome.clone()).or_default() += n;
            }
        }
        let mut out: Vec<(String, u64)> = by_outcome.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// A page of a key's request log, newest first, older than the entry
    /// `before` when given; with `errors_only`, statuses 400 and up only.
    pub async fn request_log(
        &self,
        key: &KeyId,
        before: Option<i64>,
        limit: u32,
        errors_only: bool,
    ) -> anyhow::Result<Vec<RequestLogEntry>> {
        on_backend!(self, b => b.request_log(key, before, limit, errors_only).await)
    }

    /// Records that `key` is spiking at `now` and, when this is a new spike
    /// (none seen in the `quiet_ms` before) and the last alert is at least
    /// `every_ms` old, that it is alerted, writing `event` in the same
    /// transaction. Returns whether it was: however many instances see the
    /// spike, one alert is written.
    pub async fn claim_usage_alert(
        &self,
        key: &KeyId,
        now: DateTime<Utc>,
        quiet_ms: i64,
        every_ms: i64,
        event: &NewAuditEvent,
    ) -> anyhow::Result<bool> {
        on_backend!(self, b => b.claim_usage_alert(key, now, quiet_ms, every_ms, event).await)
    }

    /// Drops the minute buckets of hours before `minutes_before` (their
    /// totals stay), hour and IP buckets before `hours_before`, log entries
    /// before `log_before`, and alert states older than `alerts_before`.
    pub async fn prune_usage(
        &self,
        minutes_before: i64,
        hours_before: i64,
        log_before: DateTime<Utc>,
        alerts_before: DateTime<Utc>,
    ) -> anyhow::Result<UsageUpkeep> {
        on_backend!(self, b => b.prune_usage(minutes_before, hours_before, log_before, alerts_before).await)
    }

    /// Forgets a deleted key's counters, log and alert state.
    pub async fn forget_usage(&self, key: &KeyId) -> anyhow::Result<()> {
        on_backend!(self, b => b.forget_usage(key).await)
    }

    /// How many usage rows the store holds for a key (tests, operations).
    pub async fn usage_rows_held(&self, key: &KeyId) -> anyhow::Result<UsageRowsHeld> {
        on_backend!(self, b => b.usage_rows_held(key).await)
    }
}
