//! What both backends read back, decoded once: a key row, an audit event
//! row and an index row, each from the same column names and types (ids
//! and times as 64-bit integers, text, a boolean), so the domain types are
//! built in one place whichever database answered.

use chrono::{DateTime, TimeZone, Utc};

use crate::audit::{Action, Actor, AuditEvent};
use crate::keys::{AllowedIps, AllowedRoles, KeyHash, KeyId, KeyRecord, Scopes};

use super::IndexRow;

/// The columns [`KeyRow`] reads, in a `select` list.
pub(super) const KEY_COLUMNS: &str = "api_key_id, guild_id, name, prefix, environment, scopes, created_at, \
     created_by, last_used_at, use_count, expires_at, revoked_at, rate_limit_per_minute, allowed_ips, \
     previous_hash_expires_at, allowed_roles, suspended_at, ban_budget, role_budget, maker_id, \
     previous_idle_ms, previous_seen_at, previous_seen_ip";

/// The columns [`EventRow`] reads, in a `select` list.
pub(super) const EVENT_COLUMNS: &str = "audit_event_id, guild_id, created_at, action, actor_kind, actor_user_id, \
     api_key_id, key_name, key_prefix, test, details";

pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Snowflakes are stored as signed 64-bit integers (both backends).
pub(crate) fn id_to_sql(id: u64) -> i64 {
    id as i64
}

pub(crate) fn id_from_sql(id: i64) -> u64 {
    id as u64
}

/// One `api_key` row as [`KEY_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct KeyRow {
    api_key_id: String,
    guild_id: i64,
    name: String,
    prefix: String,
    environment: String,
    scopes: String,
    created_at: i64,
    created_by: String,
    last_used_at: Option<i64>,
    use_count: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    rate_limit_per_minute: i64,
    allowed_ips: String,
    previous_hash_expires_at: Option<i64>,
    allowed_roles: String,
    suspended_at: Option<i64>,
    ban_budget: Option<i64>,
    role_budget: Option<i64>,
    maker_id: Option<i64>,
    previous_idle_ms: Option<i64>,
    previous_seen_at: Option<i64>,
    previous_seen_ip: Option<String>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = anyhow::Error;

    fn try_from(r: KeyRow) -> anyhow::Result<Self> {
        Ok(KeyRecord {
            id: KeyId::from_stored(r.api_key_id),
            guild_id: id_from_sql(r.guild_id),
            name: r.name,
            prefix: r.prefix,
            environment: r.environment.parse().map_err(|e| anyhow::anyhow!("corrupt environment: {e}"))?,
            scopes: Scopes::parse(&r.scopes).map_err(|e| anyhow::anyhow!("corrupt scopes: {e}"))?,
            created_at: from_millis(r.created_at),
            created_by: r.created_by,
            last_used_at: r.last_used_at.map(from_millis),
            use_count: r.use_count,
            expires_at: r.expires_at.map(from_millis),
            revoked_at: r.revoked_at.map(from_millis),
            rate_limit_per_minute: r.rate_limit_per_minute as u32,
            allowed_ips: AllowedIps::parse(&r.allowed_ips).map_err(|e| anyhow::anyhow!("corrupt allowed_ips: {e}"))?,
            previous_secret_expires_at: r.previous_hash_expires_at.map(from_millis),
            allowed_roles: AllowedRoles::parse(&r.allowed_roles)
                .map_err(|e| anyhow::anyhow!("corrupt allowed_roles: {e}"))?,
            suspended_at: r.suspended_at.map(from_millis),
            ban_budget: r.ban_budget.map(|n| n as u32),
            role_budget: r.role_budget.map(|n| n as u32),
            maker_id: r.maker_id.map(id_from_sql),
            previous_secret_until_unused: r.previous_idle_ms.map(|ms| crate::keys::Ttl::from_seconds(ms / 1000)),
            previous_secret_seen: r
                .previous_seen_at
                .map(|at| (from_millis(at), r.previous_seen_ip.unwrap_or_default())),
        })
    }
}

pub(super) fn records(rows: Vec<KeyRow>) -> anyhow::Result<Vec<KeyRecord>> {
    rows.into_iter().map(KeyRecord::try_from).collect()
}

/// One `audit_event` row as [`EVENT_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    audit_event_id: i64,
    guild_id: i64,
    created_at: i64,
    action: String,
    actor_kind: String,
    actor_user_id: Option<i64>,
    api_key_id: Option<String>,
    key_name: Option<String>,
    key_prefix: Option<String>,
    test: bool,
    details: String,
}

impl TryFrom<EventRow> for AuditEvent {
    type Error = anyhow::Error;

    fn try_from(r: EventRow) -> anyhow::Result<Self> {
        let actor = match (r.actor_kind.as_str(), r.actor_user_id) {
            ("user", Some(id)) => Actor::User(id_from_sql(id)).label(),
            ("api_key", _) => "An API key".to_owned(),
            ("system", _) => Actor::System.label(),
            _ => "The operator CLI".to_owned(),
        };
        Ok(AuditEvent {
            id: r.audit_event_id,
            guild_id: id_from_sql(r.guild_id),
            at: from_millis(r.created_at),
            action: Action::parse(&r.action).ok_or_else(|| anyhow::anyhow!("unknown audit action {}", r.action))?,
            actor,
            actor_kind: r.actor_kind,
            key_id: r.api_key_id,
            key_name: r.key_name,
            key_prefix: r.key_prefix,
            test: r.test,
            details: serde_json::from_str(&r.details).unwrap_or_else(|_| serde_json::json!({})),
        })
    }
}

pub(super) fn events(rows: Vec<EventRow>) -> anyhow::Result<Vec<AuditEvent>> {
    rows.into_iter().map(AuditEvent::try_from).collect()
}

/// A page of index rows: the JSON array of arrays SQLite aggregated, one
/// array per row, positional in [`TypedIndexRow`]'s order (hashes in hex,
/// `suspended` as 0 or 1): one text value per page of rows instead of one
/// decoded row at a time, which made loading a million keys from SQLite
/// take half a minute. (PostgreSQL streams [`TypedIndexRow`]s instead.)
pub(super) fn index_rows(json: &str) -> anyhow::Result<Vec<IndexRow>> {
    serde_json::from_str::<Vec<TypedIndexRow>>(json)?.into_iter().map(IndexRow::try_from).collect()
}

/// The columns [`TypedIndexRow`] reads, in a `select` list (one key on
/// either backend, and PostgreSQL's scan).
pub(super) const INDEX_COLUMNS: &str = "api_key_id, guild_id, name, prefix, environment, scopes, expires_at, \
     revoked_at, rate_limit_per_minute, allowed_ips, key_hash, previous_hash, previous_hash_expires_at, \
     allowed_roles, suspended_at is not null as suspended, ban_budget, role_budget";

/// One index row as [`INDEX_COLUMNS`] selects it, decoded by the driver
/// (one key, or PostgreSQL's scan), or as one positional JSON array of
/// [`index_rows`] (SQLite's scan).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct TypedIndexRow {
    api_key_id: String,
    guild_id: i64,
    name: String,
    prefix: String,
    environment: String,
    scopes: String,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    rate_limit_per_minute: i64,
    allowed_ips: String,
    #[serde(deserialize_with = "from_hex")]
    key_hash: Vec<u8>,
    #[serde(deserialize_with = "from_hex_opt")]
    previous_hash: Option<Vec<u8>>,
    previous_hash_expires_at: Option<i64>,
    allowed_roles: String,
    #[serde(deserialize_with = "from_int_bool")]
    suspended: bool,
    ban_budget: Option<i64>,
    role_budget: Option<i64>,
}

/// Bytes from hex text (SQLite's `hex()`); bad or missing hex is no bytes,
/// which [`index_row`] refuses as a corrupt hash.
fn from_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    Ok(from_hex_opt(d)?.unwrap_or_default())
}

fn from_hex_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let hex: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(hex.and_then(|h| hex::decode(h).ok()))
}

/// A flag SQLite gives as 0 or 1.
fn from_int_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let n: i64 = serde::Deserialize::deserialize(d)?;
    Ok(n != 0)
}

impl TryFrom<TypedIndexRow> for IndexRow {
    type Error = anyhow::Error;

    fn try_from(r: TypedIndexRow) -> anyhow::Result<Self> {
        index_row(r)
    }
}

fn index_row(r: TypedIndexRow) -> anyhow::Result<IndexRow> {
    let hash_of = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).ok().map(KeyHash);
    let hash = hash_of(&r.key_hash).ok_or_else(|| anyhow::anyhow!("corrupt key hash"))?;
    Ok(IndexRow {
        id: KeyId::from_stored(r.api_key_id),
        guild_id: id_from_sql(r.guild_id),
        name: r.name,
        prefix: r.prefix,
        environment: r.environment.parse().map_err(|e| anyhow::anyhow!("corrupt environment: {e}"))?,
        scopes: Scopes::parse(&r.scopes).map_err(|e| anyhow::anyhow!("corrupt scopes: {e}"))?,
        expires_at: r.expires_at.map(from_millis),
        revoked_at: r.revoked_at.map(from_millis),
        rate_limit_per_minute: r.rate_limit_per_minute as u32,
        allowed_ips: AllowedIps::parse(&r.allowed_ips).map_err(|e| anyhow::anyhow!("corrupt allowed_ips: {e}"))?,
        allowed_roles: AllowedRoles::parse(&r.allowed_roles)
            .map_err(|e| anyhow::anyhow!("corrupt allowed_roles: {e}"))?,
        suspended: r.suspended,
        ban_budget: r.ban_budget.map(|n| n as u32),
        role_budget: r.role_budget.map(|n| n as u32),
        hash,
        previous: r.previous_hash.as_deref().and_then(hash_of).zip(r.previous_hash_expires_at.map(from_millis)),
    })
}

/// The columns [`WebhookRow`] reads, in a `select` list.
pub(super) const WEBHOOK_COLUMNS: &str = "guild_id, url, secret, events, enabled, enabled_at, disabled_at, \
     disabled_reason, failed_messages, created_at, updated_at";

/// The columns [`DeliveryRow`] reads, in a `select` list (the body is read
/// only where it is sent).
pub(super) const DELIVERY_COLUMNS: &str = "webhook_delivery_id, message_id, guild_id, event_type, \
     audit_event_id, created_at, state, attempts, next_attempt_at, last_attempt_at, last_status, last_error, done_at";

/// One `webhook` row as [`WEBHOOK_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    guild_id: i64,
    url: String,
    secret: String,
    events: String,
    enabled: bool,
    enabled_at: i64,
    disabled_at: Option<i64>,
    disabled_reason: Option<String>,
    failed_messages: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<WebhookRow> for super::WebhookRecord {
    fn from(r: WebhookRow) -> Self {
        Self {
            guild_id: id_from_sql(r.guild_id),
            url: r.url,
            secret: r.secret,
            events: r.events,
            enabled: r.enabled,
            enabled_at: from_millis(r.enabled_at),
            disabled_at: r.disabled_at.map(from_millis),
            disabled_reason: r.disabled_reason,
            failed_messages: r.failed_messages.clamp(0, i64::from(u32::MAX)) as u32,
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        }
    }
}

/// One `webhook_delivery` row as [`DELIVERY_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    webhook_delivery_id: i64,
    message_id: String,
    guild_id: i64,
    event_type: String,
    audit_event_id: Option<i64>,
    created_at: i64,
    state: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    done_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for super::DeliveryRecord {
    type Error = anyhow::Error;

    fn try_from(r: DeliveryRow) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.webhook_delivery_id,
            message_id: r.message_id,
            guild_id: id_from_sql(r.guild_id),
            event_type: r.event_type,
            audit_event_id: r.audit_event_id,
            created_at: from_millis(r.created_at),
            state: r.state.parse()?,
            attempts: r.attempts.clamp(0, i64::from(u32::MAX)) as u32,
            next_attempt_at: r.next_attempt_at.map(from_millis),
            last_attempt_at: r.last_attempt_at.map(from_millis),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            done_at: r.done_at.map(from_millis),
        })
    }
}

pub(super) fn deliveries(rows: Vec<DeliveryRow>) -> anyhow::Result<Vec<super::DeliveryRecord>> {
    rows.into_iter().map(super::DeliveryRecord::try_from).collect()
}

/// A due delivery with what sending it needs: its body and the webhook's
/// URL and secret.
#[derive(sqlx::FromRow)]
pub(super) struct DueRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    body: String,
    url: String,
    secret: String,
}

pub(super) fn due(rows: Vec<DueRow>) -> anyhow::Result<Vec<super::DueDelivery>> {
    rows.into_iter()
        .map(|r| {
            Ok(super::DueDelivery { delivery: r.delivery.try_into()?, body: r.body, url: r.url, secret: r.secret })
        })
        .collect()
}
/// The columns [`ExpiringRow`] reads from `api_key` (with the `reminded`
/// subquery each backend adds).
pub(super) const EXPIRING_COLUMNS: &str = "api_key_id, guild_id, name, prefix, expires_at";

/// A key that expires soon, as the expiry reminders read it: the key, and
/// the most urgent threshold it was reminded of (`reminded`, seconds).
#[derive(sqlx::FromRow)]
pub(super) struct ExpiringRow {
    api_key_id: String,
    guild_id: i64,
    name: String,
    prefix: String,
    expires_at: i64,
    reminded: Option<i64>,
}

impl From<ExpiringRow> for super::ExpiringKey {
    fn from(r: ExpiringRow) -> Self {
        super::ExpiringKey {
            key: crate::keys::KeyRef { id: KeyId::from_stored(r.api_key_id), name: r.name, prefix: r.prefix },
            guild_id: id_from_sql(r.guild_id),
            expires_at: from_millis(r.expires_at),
            reminded: r.reminded,
        }
    }
}

/// The columns [`RequestLogRow`] reads, in a `select` list.
pub(super) const REQUEST_LOG_COLUMNS: &str = "request_log_id, at, method, route, status, reason, ip, latency_us, \
     target_user_id, target_role_id";

/// One `request_log` row as [`REQUEST_LOG_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct RequestLogRow {
    request_log_id: i64,
    at: i64,
    method: String,
    route: String,
    status: i64,
    reason: Option<String>,
    ip: String,
    latency_us: i64,
    target_user_id: Option<i64>,
    target_role_id: Option<i64>,
}

pub(super) fn request_log(rows: Vec<RequestLogRow>) -> Vec<super::RequestLogEntry> {
    rows.into_iter()
        .map(|r| super::RequestLogEntry {
            id: r.request_log_id,
            at: from_millis(r.at),
            method: r.method,
            route: r.route,
            status: u16::try_from(r.status).unwrap_or_default(),
            reason: r.reason,
            ip: r.ip,
            latency_us: r.latency_us.max(0) as u64,
            target_user_id: r.target_user_id.map(|id| id_from_sql(id).to_string()),
            target_role_id: r.target_role_id.map(|id| id_from_sql(id).to_string()),
        })
        .collect()
}

/// The columns [`HourRow`] reads, in a `select` list; `minutes` must be
/// selected as JSON text (each backend's `dialect::MINUTES_AS_JSON`).
pub(super) const HOUR_COLUMNS: &str = "hour, method, route, status, outcome, count";

/// One `usage_hour` row as [`HOUR_COLUMNS`] and its minutes select it.
#[derive(sqlx::FromRow)]
pub(super) struct HourRow {
    hour: i64,
    method: String,
    route: String,
    status: i64,
    outcome: String,
    count: i64,
    minutes: Option<String>,
}

pub(super) fn hours(rows: Vec<HourRow>) -> Vec<super::HourCount> {
    rows.into_iter()
        .map(|r| super::HourCount {
            hour: r.hour,
            method: r.method,
            route: r.route,
            status: u16::try_from(r.status).unwrap_or_default(),
            outcome: r.outcome,
            count: r.count.max(0) as u64,
            minutes: r.minutes.and_then(|m| serde_json::from_str::<Vec<i64>>(&m).ok()).map(|m| {
                let mut m: Vec<u64> = m.into_iter().map(|n| n.max(0) as u64).collect();
                m.resize(60, 0);
                m
            }),
        })
        .collect()
}

/// `(text, count)` pairs as both backends select them (IPs, outcomes).
pub(super) fn counted(rows: Vec<(String, i64)>) -> Vec<(String, u64)> {
    rows.into_iter().map(|(s, n)| (s, n.max(0) as u64)).collect()
}
