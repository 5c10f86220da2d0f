//! Webhooks: every rule about them, in one place. The bot, the CLI and the
//! dispatcher call [`WebhookService`]; none of them decides anything.
//!
//! - **One webhook per guild**: a URL, the event types it wants and a
//!   signing secret (`whsec_` + base64 of 24 random bytes, Standard
//!   Webhooks' format), shown once when made, stored to sign with, never
//!   logged. `set` again changes the URL and events, keeps the secret
//!   (unless asked for a new one) and re-enables a disabled webhook.
//! - **Where it may point** ([`check_url`]): `https://` (`http://` only with
//!   `webhooks.allow_http`), no user or password in the URL, and a host that
//!   neither is nor resolves to a private, loopback, link-local,
//!   unique-local, CGNAT, unspecified (or other non-public) address, unless
//!   `webhooks.allow_private_addresses`. Checked when set and again on every
//!   delivery: the client resolves through [`PublicOnly`], which refuses
//!   such an answer, so the address checked is the address connected to.
//! - **What is sent** ([`EventType`]): key events and API writes (from the
//!   audit log, test keys' dry runs included, marked `test`), and bans seen
//!   on the gateway. Each is one message, queued in the database; its body
//!   is `{"type", "timestamp", "data"}` and never holds a secret.
//! - **Delivery** ([`run`], [`WebhookService::dispatch`]): a signed POST (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64 HMAC-SHA256>`), 10 s to answer; a 2xx is
//!   success, anything else (a redirect too) or no answer a failure, retried
//!   after each of `webhooks.retry_delays` (5 s, 1 min, 5 min, 30 min, 2 h,
//!   5 h, 10 h) and then given up. Each attempt is claimed first, as the
//!   audit outbox claims posts, so however many instances run, one makes it.
//! - **Disabling** ([`DISABLE_AFTER_FAILED_MESSAGES`]): three messages in a
//!   row given up (every attempt of each failed, no success between)
//!   disable the webhook, with a `webhook.disabled` audit event; its pending
//!   messages are dropped. `set` turns it back on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};

use super::{Error, KeyService, Result};
use crate::audit::{Action, Actor, AuditEvent, NewAuditEvent};
use crate::config::WebhooksConfig;
use crate::keys::InvalidInput;
use crate::store::{AttemptNext, AttemptRecord, DeliveryRecord, DueDelivery, NewDelivery, NewWebhook, Store};

/// How long a receiver gets to answer one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim on a delivery keeps other instances from attempting
/// it: longer than an attempt can take.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// Messages given up on in a row (each after every attempt failed) that
/// disable a webhook.
pub const DISABLE_AFTER_FAILED_MESSAGES: u32 = 3;
/// No message is retried past this long after it was queued, whatever the
/// configured waits add up to.
pub const MAX_RETRY_SPAN: Duration = Duration::from_secs(24 * 3600);
/// How many deliveries `/apikey webhook show` and the CLI list.
pub const SHOWN_DELIVERIES: u32 = 10;
/// Finished deliveries are kept this long (the delivery log), then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(7 * 86_400);
/// Attempts in flight at once, per instance.
const IN_FLIGHT: usize = 16;
/// The longest URL accepted.
const MAX_URL_CHARS: usize = 2000;
/// Random bytes in a signing secret.
const SECRET_BYTES: usize = 24;

/// What a webhook can be sent. The wire names are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    KeyCreated,
    KeyRevoked,
    KeyRotated,
    KeyDeleted,
    KeySuspended,
    KeyResumed,
    KeyExpiring,
    BanAdded,
    BanRemoved,
    RoleAdded,
    RoleRemoved,
    GatewayBanAdded,
    GatewayBanRemoved,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::KeyRotated,
        Self::KeyDeleted,
        Self::KeySuspended,
        Self::KeyResumed,
        Self::KeyExpiring,
        Self::BanAdded,
        Self::BanRemoved,
        Self::RoleAdded,
        Self::RoleRemoved,
        Self::GatewayBanAdded,
        Self::GatewayBanRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::KeyRotated => "key.rotated",
            Self::KeyDeleted => "key.deleted",
            Self::KeySuspended => "key.suspended",
            Self::KeyResumed => "key.resumed",
            Self::KeyExpiring => "key.expiring",
            Self::BanAdded => "ban.added",
            Self::BanRemoved => "ban.removed",
            Self::RoleAdded => "role.added",
            Self::RoleRemoved => "role.removed",
            Self::GatewayBanAdded => "gateway.ban.added",
            Self::GatewayBanRemoved => "gateway.ban.removed",
        }
    }

    /// The event type an audit action is sent as, if it is sent at all
    /// (settings changes such as the audit channel or the webhook itself
    /// are not).
    pub fn of_action(action: Action) -> Option<Self> {
        Some(match action {
            Action::KeyCreated => Self::KeyCreated,
            Action::KeyRevoked => Self::KeyRevoked,
            Action::KeyRotated => Self::KeyRotated,
            Action::KeyDeleted => Self::KeyDeleted,
            Action::KeySuspended => Self::KeySuspended,
            Action::KeyResumed => Self::KeyResumed,
            Action::KeyExpiring => Self::KeyExpiring,
            Action::BanAdded => Self::BanAdded,
            Action::BanRemoved => Self::BanRemoved,
            Action::RoleAdded => Self::RoleAdded,
            Action::RoleRemoved => Self::RoleRemoved,
            Action::AuditChannelSet
            | Action::DiscordPaused
            | Action::LeakGuardSet
            | Action::WebhookSet
            | Action::WebhookRemoved
            | Action::WebhookDisabled
            | Action::UsageSpike => return None,
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event types a webhook wants: `all` (types added later included) or
/// a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSet {
    All,
    Some(Vec<EventType>),
}

impl EventSet {
    /// A comma- or space-separated list of event types, or `all`. The
    /// error names the first value that is not one.
    pub fn parse(input: &str) -> std::result::Result<Self, InvalidInput> {
        let words: Vec<&str> = input.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            return Err(InvalidInput::new("events", format!("give event types ({}) or all", names())));
        }
        let mut types = Vec::new();
        for word in words {
            if word.eq_ignore_ascii_case("all") {
                return Ok(Self::All);
            }
            let Some(t) = EventType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(word)) else {
                let shown: String = word.chars().filter(|c| !c.is_control()).take(40).collect();
                return Err(InvalidInput::new(
                    "events",
                    format!("'{shown}' is not an event type; use all, or some of: {}", names()),
                ));
            };
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(Self::Some(types))
    }

    /// Reads what [`Self::to_storage`] wrote.
    pub fn from_storage(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Some(Vec::new()))
    }

    pub fn to_storage(&self) -> String {
        self.to_string()
    }

    pub fn contains(&self, t: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Some(types) => types.contains(&t),
        }
    }

    /// The names, for JSON.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["all"],
            Self::Some(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

impl std::fmt::Display for EventSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

fn names() -> String {
    EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// A webhook signing secret: `whsec_` + standard base64 of the key bytes.
/// Shown once; its `Debug` is masked.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` header for one attempt, per Standard Webhooks:
/// `v1,` + base64 of HMAC-SHA256, keyed with the secret's bytes (after
/// `whsec_`), over `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| anyhow::anyhow!("corrupt webhook secret (not base64)"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", b64.encode(mac.finalize().into_bytes())))
}

/// Why an address is no place for a webhook (`None`: a public address).
/// IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4) is judged as IPv4.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    use ipnet::{Ipv4Net, Ipv6Net};
    let v4 = |s: &str| s.parse::<Ipv4Net>().expect("a CIDR");
    let v6 = |s: &str| s.parse::<Ipv6Net>().expect("a CIDR");
    match ip {
        IpAddr::V4(a) => {
            let ranges = [
                ("0.0.0.0/8", "unspecified"),
                ("10.0.0.0/8", "private"),
                ("100.64.0.0/10", "CGNAT (shared)"),
                ("127.0.0.0/8", "loopback"),
                ("169.254.0.0/16", "link-local"),
                ("172.16.0.0/12", "private"),
                ("192.0.0.0/24", "reserved"),
                ("192.0.2.0/24", "documentation"),
                ("192.168.0.0/16", "private"),
                ("198.18.0.0/15", "benchmarking"),
                ("198.51.100.0/24", "documentation"),
                ("203.0.113.0/24", "documentation"),
                ("224.0.0.0/4", "multicast"),
                ("240.0.0.0/4", "reserved"),
            ];
            ranges.into_iter().find(|(net, _)| v4(net).contains(&a)).map(|(_, why)| why)
        }
        IpAddr::V6(a) => {
            if let Some(inner) = a.to_ipv4_mapped() {
                return non_public(IpAddr::V4(inner));
            }
            let seg = a.segments();
            // ::a.b.c.d (deprecated IPv4-compatible), 64:ff9b::a.b.c.d (NAT64), 2002:AABB:CCDD::/48 (6to4).
            let embedded =
                |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            if seg[..6] == [0; 6] && !a.is_unspecified() && !a.is_loopback() {
                return non_public(embedded(seg[6], seg[7]));
            }
            if v6("64:ff9b::/96").contains(&a) {
                return non_public(embedded(seg[6], seg[7]));
            }
            if v6("2002::/16").contains(&a) {
                return non_public(embedded(seg[1], seg[2]));
            }
            let ranges = [
                ("::/128", "unspecified"),
                ("::1/128", "loopback"),
                ("64:ff9b:1::/48", "private (local NAT64)"),
                ("100::/64", "reserved (discard)"),
                ("2001::/23", "reserved"),
                ("2001:db8::/32", "documentation"),
                ("fc00::/7", "unique-local"),
                ("fe80::/10", "link-local"),
                ("fec0::/10", "site-local"),
                ("ff00::/8", "multicast"),
            ];
            ranges.into_iter().find(|(net, _)| v6(net).contains(&a)).map(|(_, why)| why)
        }
    }
}

/// A URL's scheme, host and port, what messages and logs show of it: the
/// path and query of a webhook URL often hold a token of their own.
pub fn origin(url: &reqwest::Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// Checks a webhook URL's form: http(s) as allowed, a host, no user info,
/// no fragment, not too long; and an IP-literal host against the address
/// rules. (A host name is resolved by [`check_url`].)
pub fn parse_url(input: &str, cfg: &WebhooksConfig) -> std::result::Result<reqwest::Url, InvalidInput> {
    let input = input.trim();
    let shown: String = input.chars().filter(|c| !c.is_control()).take(100).collect();
    let bad = |why: &str| InvalidInput::new("url", format!("'{shown}' {why}"));
    if input.chars().count() > MAX_URL_CHARS {
        return Err(InvalidInput::new("url", format!("is longer than {MAX_URL_CHARS} characters")));
    }
    let url =
        reqwest::Url::parse(input).map_err(|e| bad(&format!("is not a URL like https://example.com/hooks ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if cfg.allow_http => {}
        "http" => {
            return Err(bad(
                "is not https; webhooks go over https only (the operator can allow http with webhooks.allow_http)",
            ))
        }
        _ => return Err(bad("is not an https URL like https://example.com/hooks")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "holds a user name or password; put credentials in the path or query, or verify the signature instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("has a #fragment, which is never sent; remove it"));
    }
    if let Some(ip) = ip_host(&url) {
        check_address(ip, cfg).map_err(|why| bad(&why))?;
    }
    Ok(url)
}

/// The URL's host if it is an IP address (the URL parser writes every
/// IPv4 form as dotted decimal, and IPv6 in brackets).
fn ip_host(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn check_address(ip: IpAddr, cfg: &WebhooksConfig) -> std::result::Result<(), String> {
    match non_public(ip) {
        Some(kind) if !cfg.allow_private_addresses => Err(format!(
            "points to {ip}, a {kind} address; webhooks go to public addresses only (the operator can allow \
             private ones with webhooks.allow_private_addresses)"
        )),
        _ => Ok(()),
    }
}

/// [`parse_url`], then the host name resolved and every address it gives
/// checked: the URL is refused if any is not public (unless allowed).
pub async fn check_url(input: &str, cfg: &WebhooksConfig) -> std::result::Result<reqwest::Url, InvalidInput> {
    let url = parse_url(input, cfg)?;
    if ip_host(&url).is_none() {
        let host = url.host_str().unwrap_or_default().to_owned();
        resolve_checked(&host, cfg.allow_private_addresses)
            .await
            .map_err(|why| InvalidInput::new("url", format!("'{}' {why}", origin(&url))))?;
    }
    Ok(url)
}

/// Resolves `host`; refuses it when it resolves to nothing, or (unless
/// `allow_private`) to any address that is not public.
async fn resolve_checked(host: &str, allow_private: bool) -> std::result::Result<Vec<SocketAddr>, String> {
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, 0))).await;
    let addrs: Vec<SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(format!("cannot be resolved ({e})")),
        Err(_) => return Err("cannot be resolved (no answer within 5 s)".to_owned()),
    };
    if addrs.is_empty() {
        return Err("resolves to no address".to_owned());
    }
    if !allow_private {
        if let Some((ip, kind)) = addrs.iter().find_map(|a| non_public(a.ip()).map(|k| (a.ip(), k))) {
            return Err(format!(
                "resolves to {ip}, a {kind} address; webhooks go to public addresses only (the operator can \
                 allow private ones with webhooks.allow_private_addresses)"
            ));
        }
    }
    Ok(addrs)
}

/// The webhook client's resolver: an answer holding a non-public address is
/// refused (unless allowed), so the address checked is the one connected
/// to, whatever DNS said when the webhook was set.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_private).await.map_err(|why| format!("{host} {why}"))?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A guild's webhook as adapters show it: never the secret.
#[derive(Debug, Clone)]
pub struct WebhookView {
    pub guild_id: u64,
    pub url: String,
    pub events: EventSet,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub failed_messages: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook and its latest deliveries, newest first.
#[derive(Debug, Clone)]
pub struct WebhookReport {
    pub webhook: WebhookView,
    pub deliveries: Vec<DeliveryRecord>,
}

/// What `set` did.
#[derive(Debug)]
pub struct SetWebhook {
    pub webhook: WebhookView,
    /// The new signing secret, to show once; `None` when the webhook kept
    /// the one it had.
    pub secret: Option<WebhookSecret>,
    /// It was disabled and is enabled again.
    pub re_enabled: bool,
}

/// The webhook rules, shared by every adapter and the dispatcher. Cheap to
/// clone.
#[derive(Clone)]
pub struct WebhookService {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeyService,
    cfg: WebhooksConfig,
    /// Wakes the dispatcher: a message was queued here.
    queued: Notify,
}

impl WebhookService {
    pub fn new(keys: KeyService, cfg: WebhooksConfig) -> Self {
        Self { inner: Arc::new(Inner { keys, cfg, queued: Notify::new() }) }
    }

    fn store(&self) -> &Store {
        self.inner.keys.store()
    }

    pub fn config(&self) -> &WebhooksConfig {
        &self.inner.cfg
    }

    /// Sets the guild's webhook (see the module docs): checks the URL and
    /// events, keeps the secret unless `new_secret` (a new webhook always
    /// gets one), enables it, audits `webhook.set`.
    #[tracing::instrument(skip_all, fields(guild_id = guild_id))]
    pub async fn set(
        &self,
        guild_id: u64,
        url: &str,
        events: &str,
        new_secret: bool,
        actor: &Actor,
    ) -> Result<SetWebhook> {
        let events = EventSet::parse(events)?;
        let url = check_url(url, &self.inner.cfg).await?;
        let before = self.store().webhook(guild_id).await?;
        let secret = WebhookSecret::generate();
        let shown = origin(&url);
        let event = NewAuditEvent {
            guild_id,
            action: Action::WebhookSet,
            actor: actor.clone(),
            key: None,
            test: false,
            details: json!({}),
        };
        let events_text = events.to_storage();
        let row = NewWebhook {
            guild_id,
            url: url.as_str(),
            events: &events_text,
            secret: secret.expose(),
            replace_secret: new_secret,
        };
        let details = |secret_changed: bool| {
            json!({
                "webhook": shown,
                "webhook_events": events.names().join(", "),
                "secret_changed": secret_changed,
                "re_enabled": before.as_ref().is_some_and(|b| !b.enabled),
            })
        };
        let is_new = self.store().set_webhook(&row, Utc::now(), &event, details).await?;
        self.inner.keys.audit_notifier().notify_one();
        tracing::info!(guild_id, webhook = %shown, events = %events, new_secret = is_new, "webhook set");
        let webhook = self.view(guild_id).await?.ok_or_else(|| anyhow::anyhow!("the webhook just set vanished"))?;
        Ok(SetWebhook { webhook, secret: is_new.then_some(secret), re_enabled: before.is_some_and(|b| !b.enabled) })
    }

    /// Removes the guild's webhook and its queued and logged deliveries.
    #[tracing::instrument(skip_all, fields(guild_id = guild_id))]
    pub async fn remove(&self, guild_id: u64, actor: &Actor) -> Result<WebhookView> {
        let Some(current) = self.view(guild_id).await? else { return Err(no_webhook()) };
        let shown = reqwest::Url::parse(&current.url).map(|u| origin(&u)).unwrap_or_default();
        let event = NewAuditEvent {
            guild_id,
            action: Action::WebhookRemoved,
            actor: actor.clone(),
            key: None,
            test: false,
            details: json!({ "webhook": shown }),
        };
        if !self.store().remove_webhook(guild_id, Utc::now(), &event).await? {
            return Err(no_webhook());
        }
        self.inner.keys.audit_notifier().notify_one();
        tracing::info!(guild_id, webhook = %shown, "webhook removed");
        Ok(current)
    }

    /// The guild's webhook, if any, without its secret.
    pub async fn view(&self, guild_id: u64) -> Result<Option<WebhookView>> {
        Ok(self.store().webhook(guild_id).await?.map(|w| WebhookView {
            guild_id: w.guild_id,
            url: w.url,
            events: EventSet::from_storage(&w.events),
            enabled: w.enabled,
            disabled_at: w.disabled_at,
            disabled_reason: w.disabled_reason,
            failed_messages: w.failed_messages,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }))
    }

    /// The guild's webhook and its latest deliveries.
    pub async fn report(&self, guild_id: u64) -> Result<WebhookReport> {
        let Some(webhook) = self.view(guild_id).await? else { return Err(no_webhook()) };
        let deliveries = self.store().webhook_deliveries(guild_id, SHOWN_DELIVERIES).await?;
        Ok(WebhookReport { webhook, deliveries })
    }

    /// A ban the gateway reported (GUILD_BAN_ADD / GUILD_BAN_REMOVE), made
    /// by anyone: queued for the guild's webhook if it wants it. Failures
    /// are logged; a ban is never refused for them.
    pub async fn gateway_ban(&self, guild_id: u64, user_id: u64, username: &str, added: bool) {
        let kind = if added { EventType::GatewayBanAdded } else { EventType::GatewayBanRemoved };
        let data = json!({
            "guild_id": guild_id.to_string(),
            "user": { "id": user_id.to_string(), "username": username },
        });
        if let Err(e) = self.queue(guild_id, kind, None, Utc::now(), data).await {
            tracing::warn!(guild_id, event_type = %kind, error = format!("{e:#}"), "failed to queue a webhook message");
        }
    }

    /// Queues one message if the guild's webhook is enabled and wants `kind`.
    async fn queue(
        &self,
        guild_id: u64,
        kind: EventType,
        audit_event_id: Option<i64>,
        at: DateTime<Utc>,
        data: serde_json::Value,
    ) -> anyhow::Result<()> {
        let Some(webhook) = self.store().webhook(guild_id).await? else { return Ok(()) };
        if !webhook.enabled || !EventSet::from_storage(&webhook.events).contains(kind) {
            return Ok(());
        }
        let message_id = new_message_id();
        let body = body(kind, at, data);
        let delivery = NewDelivery {
            message_id: &message_id,
            guild_id,
            event_type: kind.as_str(),
            audit_event_id,
            body: &body,
            created_at: Utc::now(),
        };
        if self.store().queue_delivery(&delivery).await? {
            self.inner.queued.notify_one();
        }
        Ok(())
    }

    /// Queues a message for every audit event not yet looked at whose
    /// guild's webhook wants it, each once however many instances look.
    async fn queue_audit_events(&self) -> anyhow::Result<()> {
        let store = self.store();
        store.skip_unhooked_audit_events(Utc::now()).await?;
        let mut webhooks: HashMap<u64, Option<crate::store::WebhookRecord>> = HashMap::new();
        loop {
            let events = store.unchecked_audit_events(100).await?;
            let full = events.len() == 100;
            for event in events {
                let webhook = match webhooks.get(&event.guild_id) {
                    Some(w) => w.clone(),
                    None => {
                        let w = store.webhook(event.guild_id).await?;
                        webhooks.insert(event.guild_id, w.clone());
                        w
                    }
                };
                let wanted = EventType::of_action(event.action).filter(|&kind| {
                    webhook.as_ref().is_some_and(|w| {
                        w.enabled && w.enabled_at <= event.at && EventSet::from_storage(&w.events).contains(kind)
                    })
                });
                let (message_id, body) = match wanted {
                    Some(kind) => (new_message_id(), body(kind, event.at, audit_data(&event))),
                    None => (String::new(), String::new()),
                };
                let delivery = wanted.map(|kind| NewDelivery {
                    message_id: &message_id,
                    guild_id: event.guild_id,
                    event_type: kind.as_str(),
                    audit_event_id: Some(event.id),
                    body: &body,
                    created_at: Utc::now(),
                });
                store.check_audit_event(event.id, Utc::now(), delivery.as_ref()).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// One attempt of a due delivery, under a claim; records the outcome
    /// and disables the webhook when this was the last straw.
    async fn attempt(&self, client: &reqwest::Client, due: DueDelivery) -> anyhow::Result<()> {
        let d = &due.delivery;
        let now = Utc::now();
        let claimed_until = now + chrono::Duration::from_std(CLAIM_FOR)?;
        if !self.store().claim_delivery(d.id, now, claimed_until).await? {
            return Ok(()); // another instance took it
        }
        let host = reqwest::Url::parse(&due.url).map(|u| origin(&u)).unwrap_or_default();
        let outcome = send(client, &due, &self.inner.cfg).await;
        let attempts = d.attempts + 1;
        let finished = Utc::now();
        let next = match &outcome {
            Ok(_) => AttemptNext::Delivered,
            Err(_) => self.after_failure(d, attempts, finished),
        };
        let (status, error) = match &outcome {
            Ok(status) => (Some(*status), None),
            Err(f) => (f.status, Some(f.error.as_str())),
        };
        match (&outcome, next) {
            (Ok(status), _) => tracing::info!(
                guild_id = d.guild_id, message_id = %d.message_id, event_type = %d.event_type, webhook = %host,
                status, attempts, "webhook message delivered"
            ),
            (Err(f), AttemptNext::RetryAt(at)) => tracing::info!(
                guild_id = d.guild_id, message_id = %d.message_id, event_type = %d.event_type, webhook = %host,
                attempts, error = %f.error, retry_at = %at.to_rfc3339(), "webhook attempt failed; will retry"
            ),
            (Err(f), _) => tracing::warn!(
                guild_id = d.guild_id, message_id = %d.message_id, event_type = %d.event_type, webhook = %host,
                attempts, error = %f.error, "webhook message given up: every attempt failed"
            ),
        }
        let record = AttemptRecord { delivery_id: d.id, guild_id: d.guild_id, claimed_until, status, error, next };
        let failed = self.store().finish_attempt(&record, finished).await?;
        if next == AttemptNext::GiveUp && failed.is_some_and(|n| n >= DISABLE_AFTER_FAILED_MESSAGES) {
            let last = error.unwrap_or("no answer");
            self.disable(d.guild_id, &host, failed.unwrap_or_default(), last).await?;
        }
        Ok(())
    }

    /// When a failed message is tried next, or that it is given up.
    fn after_failure(&self, d: &DeliveryRecord, attempts: u32, now: DateTime<Utc>) -> AttemptNext {
        let Some(wait) = self.inner.cfg.retry_delays.get(attempts as usize - 1) else { return AttemptNext::GiveUp };
        let at = now + chrono::Duration::from_std(*wait).unwrap_or_default();
        let span = chrono::Duration::from_std(MAX_RETRY_SPAN).unwrap_or_default();
        if at > d.created_at + span {
            return AttemptNext::GiveUp;
        }
        AttemptNext::RetryAt(at)
    }

    /// Disables the guild's webhook after `failed` messages in a row were
    /// given up, with an audit event (posted to the audit channel).
    async fn disable(&self, guild_id: u64, host: &str, failed: u32, last: &str) -> anyhow::Result<()> {
        let why = format!(
            "{failed} messages in a row could not be delivered (every attempt failed; the last: {last}); \
             set the webhook again to turn it back on"
        );
        let event = NewAuditEvent {
            guild_id,
            action: Action::WebhookDisabled,
            actor: Actor::System,
            key: None,
            test: false,
            details: json!({ "webhook": host, "why": why, "failed_messages": failed }),
        };
        if self.store().disable_webhook(guild_id, &why, Utc::now(), &event).await? {
            self.inner.keys.audit_notifier().notify_one();
            tracing::warn!(guild_id, webhook = %host, failed_messages = failed, "webhook disabled: its deliveries kept failing");
        }
        Ok(())
    }

    /// Queues and sends until `stop` resolves, then lets attempts in flight
    /// finish (each within [`ATTEMPT_TIMEOUT`]).
    pub async fn dispatch(&self, stop: impl std::future::Future<Output = ()>) {
        let client = match client(&self.inner.cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot build the webhook client; webhooks are not delivered"
                );
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut in_flight = tokio::task::JoinSet::new();
        let mut last_prune = tokio::time::Instant::now();
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.queue_audit_events().await {
                tracing::warn!(error = format!("{e:#}"), "failed to queue webhook messages for audit events");
            }
            if let Err(e) = self.start_due(&client, &slots, &mut in_flight).await {
                tracing::warn!(error = format!("{e:#}"), "failed to read due webhook deliveries");
            }
            while let Some(done) = in_flight.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a webhook attempt crashed");
                }
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = tokio::time::Instant::now();
                let before = Utc::now() - chrono::Duration::from_std(KEEP_FINISHED).unwrap_or_default();
                if let Err(e) = self.store().prune_deliveries(before).await {
                    tracing::warn!(error = format!("{e:#}"), "failed to prune old webhook deliveries");
                }
            }
            let wait = self.next_wait().await;
            tokio::select! {
                () = &mut stop => break,
                () = self.inner.queued.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Until the next tick: at most [`POLL`], sooner if a retry is due
    /// sooner (audit events are noticed by polling, within [`POLL`]).
    async fn next_wait(&self) -> Duration {
        let due = self.store().next_delivery_at().await.ok().flatten();
        let until = due.map(|at| (at - Utc::now()).to_std().unwrap_or_default()).unwrap_or(POLL);
        until.clamp(Duration::from_millis(20), POLL)
    }

    /// Starts an attempt for each due delivery there is room for.
    async fn start_due(
        &self,
        client: &reqwest::Client,
        slots: &Arc<Semaphore>,
        in_flight: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<()> {
        let room = slots.available_permits();
        if room == 0 {
            return Ok(());
        }
        for due in self.store().due_deliveries(Utc::now(), room as u32).await? {
            let Ok(slot) = slots.clone().try_acquire_owned() else { break };
            let (service, client) = (self.clone(), client.clone());
            in_flight.spawn(async move {
                let (id, guild_id) = (due.delivery.id, due.delivery.guild_id);
                if let Err(e) = service.attempt(&client, due).await {
                    tracing::warn!(
                        delivery_id = id,
                        guild_id,
                        error = format!("{e:#}"),
                        "failed to record a webhook attempt"
                    );
                }
                drop(slot);
                service.inner.queued.notify_one(); // the next retry's time, or room for another
            });
        }
        Ok(())
    }
}

/// The dispatcher ([`WebhookService::dispatch`]) until `stop` resolves: what
/// `guildkey run` spawns beside the audit outbox.
pub async fn run(service: WebhookService, stop: impl std::future::Future<Output = ()>) {
    service.dispatch(stop).await;
}

/// How often the dispatcher looks for new audit events at most.
const POLL: Duration = Duration::from_millis(500);

fn no_webhook() -> Error {
    Error::Missing(
        "this server has no webhook; set one with /apikey webhook set (or guildkey keys webhook set)".to_owned(),
    )
}

/// `msg_` + 27 random base62 characters: the `webhook-id` header.
fn new_message_id() -> String {
    format!("msg_{}", crate::keys::token::random_base62(27))
}

/// A message body: `{"type", "timestamp", "data"}`.
fn body(kind: EventType, at: DateTime<Utc>, data: serde_json::Value) -> String {
    json!({
        "type": kind.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// An audit event's `data`: the event as `GET /v1/guilds/{id}/audit-log`
/// shows it, with its guild.
fn audit_data(event: &AuditEvent) -> serde_json::Value {
    let mut data = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    data["guild_id"] = event.guild_id.to_string().into();
    data
}

/// Why an attempt failed.
struct Failed {
    status: Option<u16>,
    error: String,
}

/// The client every attempt goes through: no redirects, no proxy from the
/// environment, every host name resolved through [`PublicOnly`].
fn client(cfg: &WebhooksConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!cfg.allow_http)
        .user_agent(concat!("guildkey-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PublicOnly { allow_private: cfg.allow_private_addresses }))
        .build()?)
}

/// One signed POST. The URL is checked again (the settings may have
/// changed since it was set; an IP-literal host is not resolved, so the
/// resolver cannot check it).
async fn send(client: &reqwest::Client, due: &DueDelivery, cfg: &WebhooksConfig) -> std::result::Result<u16, Failed> {
    let refused = |why: String| Failed { status: None, error: why };
    let url = parse_url(&due.url, cfg).map_err(|e| refused(format!("refused: {}", e.message)))?;
    let timestamp = Utc::now().timestamp();
    let signature =
        sign(&due.secret, &due.delivery.message_id, timestamp, &due.body).map_err(|e| refused(e.to_string()))?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.delivery.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(due.body.clone())
        .send()
        .await
        .map_err(|e| refused(describe_error(e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Failed { status: Some(status.as_u16()), error: format!("HTTP {}", status.as_u16()) })
    }
}

/// A transport failure in a few words, never with the URL (its path or
/// query may hold a token).
fn describe_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    let e = e.without_url();
    let mut causes: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let head = if e.is_connect() { "could not connect" } else { "the request failed" };
    let detail = causes.last().cloned().unwrap_or_else(|| e.to_string());
    let text = format!("{head}: {detail}");
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow_http: bool, allow_private: bool) -> WebhooksConfig {
        WebhooksConfig {
            allow_http,
            allow_private_addresses: allow_private,
            retry_delays: vec![Duration::from_secs(1)],
        }
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_and_24_random_bytes() {
        let a = WebhookSecret::generate();
        let b64 = a.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap().len(), 24);
        assert_ne!(a.expose(), WebhookSecret::generate().expose());
        assert!(!format!("{a:?}").contains(b64));
    }

    #[test]
    fn events_are_a_list_or_all_and_a_bad_one_is_named() {
        assert_eq!(EventSet::parse("all").unwrap(), EventSet::All);
        let set = EventSet::parse("key.created, ban.added gateway.ban.added,key.created").unwrap();
        assert_eq!(set.to_string(), "key.created ban.added gateway.ban.added");
        assert!(set.contains(EventType::BanAdded) && !set.contains(EventType::KeyRevoked));
        assert_eq!(EventSet::from_storage(&set.to_storage()), set);
        let e = EventSet::parse("key.created, key.exploded").unwrap_err();
        assert!(e.message.starts_with("'key.exploded' is not an event type"), "{}", e.message);
        assert!(EventSet::parse(" , ").is_err());
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip} passed as public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_and_public_unless_allowed() {
        let strict = cfg(false, false);
        assert!(parse_url("https://93.184.216.34/hook?x=1", &strict).is_ok());
        for (url, needle) in [
            ("http://93.184.216.34/hook", "not https"),
            ("ftp://example.com/", "not an https URL"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://example.com/#x", "fragment"),
            ("https://10.0.0.1/hook", "private address"),
            ("https://127.0.0.1:8443/", "loopback address"),
            ("https://[::1]/", "loopback address"),
            ("not a url", "is not a URL"),
        ] {
            let e = parse_url(url, &strict).unwrap_err();
            assert!(e.field == "url" && e.message.contains(needle), "{url}: {}", e.message);
        }
        assert!(parse_url("http://127.0.0.1:9/hook", &cfg(true, true)).is_ok());
    }

    #[tokio::test]
    async fn a_host_name_resolving_to_loopback_is_refused_unless_allowed() {
        let e = check_url("https://localhost/hook", &cfg(false, false)).await.unwrap_err();
        assert!(e.message.contains("loopback address"), "{}", e.message);
        assert!(check_url("https://localhost/hook", &cfg(false, true)).await.is_ok());
    }
}
