//! Expiry reminders: a key that expires within 7 days gets one audit entry
//! saying so (`key.expiring`, actor guildkey), and another within 1 day.
//!
//! Each threshold is announced once per key, however many instances check
//! and however often they restart: the database remembers what was sent
//! (`key_expiry_reminder`), and recording a reminder *is* claiming it (one
//! row per key and threshold, written with the audit event in one
//! transaction), so two instances checking at once record it once. A key
//! first seen already within 1 day of its expiry (created to expire in 12
//! hours, or while guildkey was down) hears "within 1 day" alone, never
//! "within 7 days" after it. Revoked, deleted and expired keys hear nothing;
//! suspended keys are reminded (they still hold a place and will expire).
//!
//! Every `guildkey run` process checks every `keys.expiry_check_seconds`
//! (60 s by default) beside its upkeep ([`KeyService::run_upkeep`]); only
//! the bot posts the entries, as with every other audit event.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::super::{KeyService, Result};
use crate::audit::{Action, Actor, NewAuditEvent};
use crate::keys::KeyId;
use crate::store::{ExpiringKey, ExpiryReminder};

/// One reminder threshold: announced once a key expires within `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub seconds: i64,
    /// How the audit entry says it: "expires within 7 days".
    pub within: &'static str,
}

/// The thresholds, least urgent first.
pub const THRESHOLDS: [Threshold; 2] =
    [Threshold { seconds: 7 * 86_400, within: "7 days" }, Threshold { seconds: 86_400, within: "1 day" }];

/// Keys read per query while checking.
const PAGE: u32 = 500;

/// The most urgent threshold a key expiring in `remaining` is within, if any.
pub fn due_threshold(remaining: chrono::Duration) -> Option<Threshold> {
    let ms = remaining.num_milliseconds();
    THRESHOLDS.iter().copied().filter(|t| ms <= t.seconds * 1000).min_by_key(|t| t.seconds)
}

impl KeyService {
    /// Records the expiry reminders due at `now` (see the module docs) and
    /// returns how many it recorded; 0 when another instance got there
    /// first. `now` is a parameter so tests can move time; the upkeep
    /// passes the clock's.
    pub async fn send_expiry_reminders(&self, now: DateTime<Utc>) -> Result<usize> {
        let widest = THRESHOLDS.iter().map(|t| t.seconds).max().unwrap_or(0);
        let until = now + chrono::Duration::seconds(widest);
        let mut after: Option<(DateTime<Utc>, KeyId)> = None;
        let mut sent = 0;
        loop {
            let page =
                self.inner.store.expiring_keys(now, until, after.as_ref().map(|(at, id)| (*at, id)), PAGE).await?;
            for key in &page {
                if self.remind(key, now).await? {
                    sent += 1;
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
            after = page.last().map(|k| (k.expires_at, k.key.id.clone()));
        }
        if sent > 0 {
            self.inner.audit_posted.notify_one();
        }
        Ok(sent)
    }

    /// Records `key`'s due reminder unless it was already sent (by this
    /// instance or another); returns whether this call recorded it.
    async fn remind(&self, key: &ExpiringKey, now: DateTime<Utc>) -> Result<bool> {
        let Some(due) = due_threshold(key.expires_at - now) else { return Ok(false) };
        if key.reminded.is_some_and(|r| r <= due.seconds) {
            return Ok(false);
        }
        let passed_over: Vec<i64> = THRESHOLDS.iter().map(|t| t.seconds).filter(|&s| s > due.seconds).collect();
        let event = NewAuditEvent {
            guild_id: key.guild_id,
            action: Action::KeyExpiring,
            actor: Actor::System,
            key: Some(key.key.clone()),
            test: false,
            details: serde_json::json!({
                "expires_at": key.expires_at,
                "within": due.within,
                "threshold_seconds": due.seconds,
            }),
        };
        let reminder = ExpiryReminder {
            key_id: &key.key.id,
            expires_at: key.expires_at,
            threshold_seconds: due.seconds,
            passed_over: &passed_over,
        };
        let recorded = self.inner.store.claim_expiry_reminder(&reminder, now, &event).await?;
        if recorded {
            tracing::info!(
                key_id = %key.key.id,
                guild_id = key.guild_id,
                expires_at = %key.expires_at,
                within = due.within,
                "key expires soon; reminder recorded for the audit channel"
            );
        }
        Ok(recorded)
    }

    /// Checks for due reminders every `keys.expiry_check_seconds` (the
    /// first check at once) until `stop` resolves. Runs beside the upkeep's
    /// index watch, never in its way: a slow database delays reminders,
    /// not key verification.
    pub(in crate::service) async fn run_expiry_reminders(&self, stop: impl std::future::Future<Output = ()>) {
        let every = Duration::from_secs(self.inner.cfg.expiry_check_seconds.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = tick.tick() => match self.send_expiry_reminders(self.now()).await {
                    Ok(_) if failing => {
                        tracing::info!("checking for keys that expire soon works again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if failing => tracing::debug!(error = %e, "still cannot check for keys that expire soon"),
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to check for keys that expire soon; will retry");
                        failing = true;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_threshold_a_key_is_within_is_due() {
        let at = |s: i64| due_threshold(chrono::Duration::seconds(s)).map(|t| t.within);
        assert_eq!(at(10 * 86_400), None);
        assert_eq!(at(7 * 86_400 + 1), None);
        assert_eq!(at(7 * 86_400), Some("7 days"));
        assert_eq!(at(6 * 86_400), Some("7 days"));
        assert_eq!(at(86_400 + 1), Some("7 days"));
        assert_eq!(at(86_400), Some("1 day"));
        assert_eq!(at(12 * 3600), Some("1 day"));
        assert_eq!(at(1), Some("1 day"));
        // A millisecond past a threshold is not within it.
        assert_eq!(due_threshold(chrono::Duration::milliseconds(86_400_001)).map(|t| t.within), Some("7 days"));
    }
}
