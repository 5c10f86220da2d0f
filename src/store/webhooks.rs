//! What the store keeps of webhooks: one per guild ([`WebhookRecord`]) and
//! the queue of deliveries to it ([`DeliveryRecord`]); the calls both
//! backends answer are the webhook block of `impl Store` at the end of
//! `store/mod.rs`. The rules (what is sent, when it is retried, when a
//! webhook is disabled) are the service's (`service::webhooks`); the store
//! only keeps and claims.

use chrono::{DateTime, Utc};

/// A guild's webhook as stored. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct WebhookRecord {
    pub guild_id: u64,
    pub url: String,
    /// `whsec_` + base64 of the signing key: kept to sign, never shown
    /// after it was made, never logged.
    pub secret: String,
    /// Event types, space-separated.
    pub events: String,
    pub enabled: bool,
    /// Set, or last re-enabled: events recorded before are not sent.
    pub enabled_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Messages given up on in a row since the last success.
    pub failed_messages: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("guild_id", &self.guild_id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A webhook being set.
pub struct NewWebhook<'a> {
    pub guild_id: u64,
    pub url: &'a str,
    pub events: &'a str,
    /// The secret for a new webhook, or to replace the current one.
    pub secret: &'a str,
    /// Replace the secret of an existing webhook (otherwise it is kept).
    pub replace_secret: bool,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed; given up.
    Failed,
    /// Never finished: the webhook was disabled meanwhile.
    Dropped,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        [Self::Pending, Self::Delivered, Self::Failed, Self::Dropped]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("corrupt delivery state {s}"))
    }
}

/// A message about to be queued.
pub struct NewDelivery<'a> {
    /// The `webhook-id` header: unique, the same on every attempt.
    pub message_id: &'a str,
    pub guild_id: u64,
    pub event_type: &'a str,
    pub audit_event_id: Option<i64>,
    /// The JSON body, signed as is on every attempt.
    pub body: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A delivery and its attempts so far (no body).
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub message_id: String,
    pub guild_id: u64,
    pub event_type: String,
    pub audit_event_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last attempt, if it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, in a few words.
    pub last_error: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
}

/// A delivery due now, with what sending it needs.
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub body: String,
    pub url: String,
    pub secret: String,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// One attempt's outcome, recorded by the dispatcher that claimed it.
pub struct AttemptRecord<'a> {
    pub delivery_id: i64,
    pub guild_id: u64,
    /// The claim the attempt was made under: a dispatcher whose claim ran
    /// out (another took the delivery over) records nothing.
    pub claimed_until: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub next: AttemptNext,
}
