//! The refusal-spike alert: a key whose refusals (401, 403, 429) jump gets
//! one audit-channel entry (`usage.spike`, actor guildkey) per spike.
//!
//! The rule, checked after each flush for keys this listener refused lately:
//! - **a spike**: at least [`MIN_REFUSALS`] refusals in the last
//!   [`WINDOW_MINUTES`] minutes, and at least [`FACTOR`] times the key's usual
//!   rate: its refusals over the [`BASELINE_HOURS`] hours before the current
//!   hour, per 5 minutes. (A key refused all day long is not news; a key
//!   with no refusals before needs the 50 alone.) The refusals counted are
//!   this listener's own not yet written plus every instance's written
//!   minutes (so with several listeners the sum counts, a minute late at
//!   worst);
//! - **one entry per spike**: a spike is new when the key was not seen
//!   spiking in the [`QUIET_MS`] before (checks run at most once a minute
//!   per key while it goes on), and an alert needs the last one to be at
//!   least [`ALERT_EVERY_MS`] old: at most one per key per hour, however
//!   many instances see it (the claim is one row in the database).
//!
//! A listener looks at the database for a key only once its own refusals
//! in the window reach [`LOCAL_MIN`], then again after a minute, or when
//! they doubled or first passed [`MIN_REFUSALS`] (a few looks per spike),
//! so a refusal costs one atomic on the request path and nothing more.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::audit::{Action, Actor};
use crate::keys::KeyId;

/// The window refusals are counted over, in minutes.
pub const WINDOW_MINUTES: i64 = 5;
/// Refusals in the window that may be a spike.
pub const MIN_REFUSALS: u64 = 50;
/// How many times the usual rate a spike must be.
pub const FACTOR: f64 = 10.0;
/// The hours before the current one the usual rate is taken over.
pub const BASELINE_HOURS: i64 = 24;
/// This listener's own refusals of a key in the window before it checks.
pub const LOCAL_MIN: u64 = 10;
/// A key is checked again after this long while its refusals go on (or
/// sooner, when they doubled since).
pub const CHECK_EVERY_MS: i64 = 60_000;
/// Alerts per key: at most one in this long.
pub const ALERT_EVERY_MS: i64 = 3_600_000;
/// A spike is over once a key has not been seen spiking for this long.
pub const QUIET_MS: i64 = 10 * 60_000;

/// Whether `recent` refusals in the window are a spike for a key refused
/// `baseline` times over the [`BASELINE_HOURS`] before.
pub fn is_spike(recent: u64, baseline: u64) -> bool {
    recent >= MIN_REFUSALS && recent as f64 >= FACTOR * usual_per_window(baseline)
}

/// The usual refusals per window from `baseline` over [`BASELINE_HOURS`].
pub fn usual_per_window(baseline: u64) -> f64 {
    baseline as f64 / (BASELINE_HOURS * 60 / WINDOW_MINUTES) as f64
}

/// One key's refusals on this listener lately.
#[derive(Default)]
struct Window {
    /// (when noted, in ms; how many), oldest first, within the window.
    seen: VecDeque<(i64, u64)>,
    /// When the key was last checked, and its local refusals then.
    checked: Option<(i64, u64)>,
}

impl Window {
    /// Whether `local` refusals at `now_ms` are worth a look at the
    /// database: some, and never looked at, or a minute since, or twice as
    /// many as then, or past [`MIN_REFUSALS`] for the first time.
    fn due(&self, now_ms: i64, local: u64) -> bool {
        local >= LOCAL_MIN
            && self.checked.is_none_or(|(at, then)| {
                now_ms - at >= CHECK_EVERY_MS || local >= then * 2 || (local >= MIN_REFUSALS && then < MIN_REFUSALS)
            })
    }
}

/// Refusals per key on this listener over the last window, fed by each
/// flush. Touched by the flush alone.
#[derive(Default)]
pub struct SpikeWatch {
    windows: Mutex<HashMap<KeyId, Window>>,
}

impl SpikeWatch {
    /// Adds the refusals a flush at `now_ms` took, forgets what left the
    /// window, and returns the keys to check now with this listener's
    /// refusals of each in the window.
    pub fn note(&self, now_ms: i64, refused: &[(KeyId, u64)]) -> Vec<(KeyId, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for (id, n) in refused {
            windows.entry(id.clone()).or_default().seen.push_back((now_ms, *n));
        }
        let since = now_ms - WINDOW_MINUTES * 60_000;
        let mut due = Vec::new();
        windows.retain(|id, w| {
            while w.seen.front().is_some_and(|(at, _)| *at <= since) {
                w.seen.pop_front();
            }
            let local: u64 = w.seen.iter().map(|(_, n)| n).sum();
            if w.due(now_ms, local) {
                w.checked = Some((now_ms, local));
                due.push((id.clone(), local));
            }
            !w.seen.is_empty() || w.checked.is_some_and(|(at, _)| now_ms - at < CHECK_EVERY_MS)
        });
        due
    }
}

impl super::KeyService {
    /// Checks a key this listener refused `local` times in the spike window
    /// against every instance's written counts, and alerts once per spike
    /// (see `spike`).
    pub(super) async fn check_spike(&self, id: &KeyId, local: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let now_minute = super::usage::minute_of(now.timestamp_millis());
        let since = now_minute - WINDOW_MINUTES + 1;
        // Written minutes (every instance) and this process's not yet written.
        let mut reasons: std::collections::BTreeMap<String, u64> =
            store.refusals(id, since, now_minute + 1).await?.into_iter().collect();
        let (pending, pending_ips) = self.inner.usage.pending_for(id);
        for m in pending.iter().filter(|m| m.minute >= since && crate::store::REFUSAL_STATUSES.contains(&m.status)) {
            *reasons.entry(m.outcome.to_owned()).or_default() += m.count;
        }
        let recent = local.max(reasons.values().sum());
        let hour = now_minute.div_euclid(60);
        let baseline: u64 = store
            .usage_hours(id, hour - BASELINE_HOURS, hour)
            .await?
            .iter()
            .filter(|h| crate::store::REFUSAL_STATUSES.contains(&h.status))
            .map(|h| h.count)
            .sum();
        if !is_spike(recent, baseline) {
            return Ok(());
        }
        let Some(key) = store.get_key(id).await? else { return Ok(()) };
        let mut ips: std::collections::HashMap<String, u64> =
            store.usage_ips(id, hour, hour + 1).await?.into_iter().collect();
        for p in pending_ips.iter().filter(|p| p.hour == hour) {
            *ips.entry(p.ip.clone()).or_default() += p.count;
        }
        let mut ips: Vec<(String, u64)> = ips.into_iter().collect();
        ips.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let usual = usual_per_window(baseline);
        let event = self.key_event(
            &key,
            Action::UsageSpike,
            &Actor::System,
            serde_json::json!({
                "refusals": recent,
                "window_minutes": WINDOW_MINUTES,
                "usual_per_window": (usual * 10.0).round() / 10.0,
                "reasons": reasons.into_iter().take(5).map(|(r, n)| (r, n.into())).collect::<serde_json::Map<_, _>>(),
                "top_ips": ips.into_iter().take(3).map(|(ip, n)| (ip, n.into())).collect::<serde_json::Map<_, _>>(),
            }),
        );
        if store.claim_usage_alert(id, now, QUIET_MS, ALERT_EVERY_MS, &event).await? {
            tracing::warn!(key_id = %id, guild_id = key.guild_id, refusals = recent, "a key's refusals spiked; alerted");
            self.inner.audit_posted.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_fifty_and_ten_times_the_usual() {
        assert!(!is_spike(49, 0));
        assert!(is_spike(50, 0));
        // 288 windows in 24 h: 5 refusals per window usually.
        assert!(!is_spike(49, 5 * 288));
        assert!(is_spike(50, 5 * 288));
        assert!(!is_spike(99, 10 * 288));
        assert!(is_spike(100, 10 * 288));
    }

    #[test]
    fn keys_are_checked_once_their_local_refusals_reach_the_minimum_then_a_minute_later_or_doubled() {
        let watch = SpikeWatch::default();
        let id = KeyId::generate();
        assert!(watch.note(0, &[(id.clone(), 9)]).is_empty());
        assert_eq!(watch.note(5_000, &[(id.clone(), 1)]), [(id.clone(), 10)]);
        assert!(watch.note(8_000, &[(id.clone(), 5)]).is_empty(), "checked a moment ago");
        // Doubled (and past 50): looked at again at once.
        assert_eq!(watch.note(10_000, &[(id.clone(), 35)]), [(id.clone(), 50)]);
        assert!(watch.note(20_000, &[(id.clone(), 10)]).is_empty());
        assert_eq!(watch.note(70_000, &[]), [(id.clone(), 60)], "a minute later");
        // Five minutes on, the window has emptied and the key is forgotten.
        assert!(watch.note(400_000, &[]).is_empty());
        assert!(watch.windows.lock().unwrap().is_empty());
    }
}
