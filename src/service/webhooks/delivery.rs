//! One delivery: audit events turned into queued messages, an attempt
//! under a claim (a signed POST), what follows a failure, and disabling a
//! webhook whose messages keep failing. The loop that runs them is
//! `tasks::webhook_dispatch`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    audit_data, body, events::skipped_body, new_message_id, origin, parse_url, sign, EventSet, EventType,
    WebhookService, ATTEMPT_TIMEOUT, CLAIM_FOR, DISABLE_AFTER_FAILED_MESSAGES, DISABLE_AFTER_FAILING, MAX_RETRY_SPAN,
};
use crate::audit::{Action, Actor, NewAuditEvent};
use crate::config::WebhooksConfig;
use crate::store::{AttemptNext, AttemptRecord, DeliveryRecord, DueDelivery, Failing, NewDelivery, SKIPPED_EVENT_TYPE};

impl WebhookService {
    /// Queues a message for every audit event not yet looked at whose
    /// guild's webhook wants it, each once however many instances look.
    pub(in crate::service) async fn queue_audit_events(&self) -> anyhow::Result<()> {
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
                store
                    .check_audit_event(event.id, Utc::now(), delivery.as_ref(), self.inner.cfg.max_pending_per_guild)
                    .await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// One attempt of a due delivery, under a claim; records the outcome
    /// and disables the webhook when this was the last straw.
    pub(in crate::service) async fn attempt(
        &self,
        client: &reqwest::Client,
        mut due: DueDelivery,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let claimed_until = now + chrono::Duration::from_std(CLAIM_FOR)?;
        if !self.store().claim_delivery(due.delivery.id, now, claimed_until).await? {
            return Ok(()); // another instance took it
        }
        if due.delivery.event_type == SKIPPED_EVENT_TYPE {
            // Claimed, so nothing more is folded into it: its final count.
            if let Some(skipped) = self.store().skipped_of(due.delivery.id).await? {
                due.body = skipped_body(due.delivery.guild_id, due.delivery.created_at, &skipped);
            }
        }
        let d = &due.delivery;
        let host = reqwest::Url::parse(&due.url).map(|u| origin(&u)).unwrap_or_default();
        let outcome = match self.inner.keys.credentials().open_webhook_secret(d.guild_id, &due.secret) {
            Ok(secret) => send(client, &due, &secret, &self.inner.cfg).await,
            Err(why) => Err(Failed { status: None, error: why }),
        };
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
        let Some(failing) = self.store().finish_attempt(&record, finished).await? else { return Ok(()) };
        if let Some(why) = disable_for(next, &failing, finished) {
            self.disable(d.guild_id, &host, &why, error.unwrap_or("no answer")).await?;
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

    /// Disables the guild's webhook (`why`: after how much failing), with
    /// an audit event (posted to the audit channel).
    async fn disable(&self, guild_id: u64, host: &str, why: &Disable, last: &str) -> anyhow::Result<()> {
        let failed = why.failed_messages;
        let why = match why.failing_for {
            Some(hours) => format!(
                "its deliveries have failed for {hours} hours with no success between (the last: {last}); \
                 set the webhook again to turn it back on"
            ),
            None => format!(
                "{failed} messages in a row could not be delivered (every attempt failed; the last: {last}); \
                 set the webhook again to turn it back on"
            ),
        };
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
}

/// Why a webhook is disabled.
#[derive(Debug, PartialEq, Eq)]
struct Disable {
    failed_messages: u32,
    /// Whole hours its attempts have failed for, when that is why.
    failing_for: Option<i64>,
}

/// Whether the attempt just recorded (`next`, leaving the webhook
/// `failing`) disables the webhook: it failed, and the webhook's attempts
/// have failed for [`DISABLE_AFTER_FAILING`] with no success between, or
/// it gave up the [`DISABLE_AFTER_FAILED_MESSAGES`]th message in a row.
fn disable_for(next: AttemptNext, failing: &Failing, now: DateTime<Utc>) -> Option<Disable> {
    let failed_messages = failing.failed_messages;
    if next == AttemptNext::Delivered {
        return None;
    }
    let failing_for = failing.since.map(|since| now - since).unwrap_or_default();
    if failing_for >= chrono::Duration::from_std(DISABLE_AFTER_FAILING).unwrap_or(chrono::Duration::MAX) {
        return Some(Disable { failed_messages, failing_for: Some(failing_for.num_hours()) });
    }
    (next == AttemptNext::GiveUp && failed_messages >= DISABLE_AFTER_FAILED_MESSAGES)
        .then_some(Disable { failed_messages, failing_for: None })
}

/// Why an attempt failed.
struct Failed {
    status: Option<u16>,
    error: String,
}

/// One signed POST. The URL is checked again (the settings may have
/// changed since it was set; an IP-literal host is not resolved, so the
/// resolver cannot check it).
async fn send(
    client: &reqwest::Client,
    due: &DueDelivery,
    secret: &str,
    cfg: &WebhooksConfig,
) -> std::result::Result<u16, Failed> {
    let refused = |why: String| Failed { status: None, error: why };
    let url = parse_url(&due.url, cfg).map_err(|e| refused(format!("refused: {}", e.message)))?;
    let timestamp = Utc::now().timestamp();
    let signature = sign(secret, &due.delivery.message_id, timestamp, &due.body).map_err(|e| refused(e.to_string()))?;
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

    #[test]
    fn a_webhook_is_disabled_once_its_attempts_have_failed_long_enough_or_three_messages_were_given_up() {
        let now = Utc::now();
        let since = |hours: i64| Some(now - chrono::Duration::hours(hours));
        let retry = AttemptNext::RetryAt(now);
        let failing = |failed_messages, since| Failing { failed_messages, since };
        assert_eq!(disable_for(retry, &failing(0, since(5)), now), None, "5 h of failing is not enough");
        assert_eq!(
            disable_for(retry, &failing(0, since(7)), now),
            Some(Disable { failed_messages: 0, failing_for: Some(7) }),
            "7 h is"
        );
        assert_eq!(disable_for(AttemptNext::Delivered, &failing(0, None), now), None, "a success never disables");
        assert_eq!(disable_for(AttemptNext::GiveUp, &failing(2, since(0)), now), None);
        assert_eq!(
            disable_for(AttemptNext::GiveUp, &failing(3, since(0)), now),
            Some(Disable { failed_messages: 3, failing_for: None }),
            "three messages given up in a row"
        );
    }
}
