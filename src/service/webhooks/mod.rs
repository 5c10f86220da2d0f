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
//!   `webhook-signature: v1,<base64 HMAC-SHA256>`), 2 s to connect and 5 s in all to answer; a 2xx is
//!   success, anything else (a redirect too) or no answer a failure, retried
//!   after each of `webhooks.retry_delays` (5 s, 1 min, 5 min, 30 min, 2 h,
//!   5 h, 10 h) and then given up. Each attempt is claimed first, as the
//!   audit outbox claims posts, so however many instances run, one makes it.
//! - **Disabling** ([`DISABLE_AFTER_FAILING`], [`DISABLE_AFTER_FAILED_MESSAGES`]):
//!   a failed attempt once the webhook's attempts have failed for 6 h with
//!   no success between, or three messages in a row given up (every
//!   attempt of each failed), disable the webhook, with a
//!   `webhook.disabled` audit event; its pending messages are dropped.
//!   `set` turns it back on.

mod delivery;
mod events;
mod policy;
mod signing;

pub use super::tasks::webhook_dispatch::run;
pub use events::{EventSet, EventType};
pub use policy::{check_url, non_public, origin, parse_url};
pub use signing::{sign, WebhookSecret};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;

use super::{Error, KeyService, Result};
use crate::audit::{Action, Actor, NewAuditEvent};
use crate::config::WebhooksConfig;
use crate::store::{DeliveryRecord, NewDelivery, NewWebhook, Store};

use events::{audit_data, body};
pub(super) use policy::client;
use signing::new_message_id;

/// How long a receiver gets to answer one attempt, connecting included:
/// short, so that a receiver that accepts and never answers costs its own
/// guild's queue (one attempt in flight at a time) 5 s an attempt and no
/// other guild anything.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a receiver may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a claim on a delivery keeps other instances from attempting
/// it: longer than an attempt can take.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// Messages given up on in a row (each after every attempt failed) that
/// disable a webhook.
pub const DISABLE_AFTER_FAILED_MESSAGES: u32 = 3;
/// How long a webhook's attempts may keep failing, with no success between,
/// before the next failed one disables it. With the default retry waits a
/// dead receiver's first message is tried at 0, 5 s, 1 min 5 s, 6 min 5 s,
/// 36 min 5 s, 2 h 36 min 5 s and 7 h 36 min 5 s (plus at most 5 s an
/// attempt): the seventh attempt is the first past 6 h, so the webhook is
/// disabled about 7 h 36 min after the receiver stopped answering.
pub const DISABLE_AFTER_FAILING: Duration = Duration::from_secs(6 * 3600);
/// No message is retried past this long after it was queued, whatever the
/// configured waits add up to.
pub const MAX_RETRY_SPAN: Duration = Duration::from_secs(24 * 3600);
/// How many deliveries `/apikey webhook show` and the CLI list.
pub const SHOWN_DELIVERIES: u32 = 10;
/// Finished deliveries are kept this long (the delivery log), then pruned.
/// The longest URL accepted.
const MAX_URL_CHARS: usize = 2000;
/// Random bytes in a signing secret.
const SECRET_BYTES: usize = 24;

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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    keys: KeyService,
    pub(super) cfg: WebhooksConfig,
    /// Wakes the dispatcher: a message was queued here.
    pub(super) queued: Notify,
}

impl WebhookService {
    pub fn new(keys: KeyService, cfg: WebhooksConfig) -> Self {
        Self { inner: Arc::new(Inner { keys, cfg, queued: Notify::new() }) }
    }

    pub(super) fn store(&self) -> &Store {
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
        // Sealed under GUILDKEY_SECRETS_KEY when it is set (`credentials`).
        let stored_secret = self.inner.keys.credentials().seal_webhook_secret(guild_id, secret.expose());
        let row = NewWebhook {
            guild_id,
            url: url.as_str(),
            events: &events_text,
            secret: &stored_secret,
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
        if self.store().queue_delivery(&delivery, self.inner.cfg.max_pending_per_guild).await? {
            self.inner.queued.notify_one();
        }
        Ok(())
    }
}

fn no_webhook() -> Error {
    Error::Missing(
        "this server has no webhook; set one with /apikey webhook set (or guildkey keys webhook set)".to_owned(),
    )
}
