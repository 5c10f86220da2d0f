//! Rotations "until unused" (`guildkey keys rotate --grace-until-unused`,
//! `/apikey rotate grace_until_unused:`): the old secret keeps working
//! until it has gone unpresented for its idle time, and at most 30 days.
//!
//! - **Noting, on the hot path, in memory only**: verification that matches
//!   an old secret notes when and from which address ([`Sightings::note`]:
//!   one short lock, taken only for old secrets, never a database call).
//! - **Writing, in the background**: every [`SEEN_FLUSH`] each instance
//!   writes its latest sightings to the key's row (`previous_seen_at`,
//!   never moving backwards), so every instance sharing the database sees
//!   what every listener saw: the game servers using the old secret may sit
//!   behind any of them.
//! - **Retiring**: every [`CHECK_EVERY`] each instance retires the old
//!   secrets not presented for their idle time plus [`SEEN_MARGIN_MS`] (or
//!   past their 30 days), each in one conditional update with its
//!   `key.rotation_completed` audit entry: of two instances deciding at
//!   once one records it. The margin covers another instance's sightings
//!   not yet written (at most one [`SEEN_FLUSH`] and a write old), so no
//!   secret presented within its idle time anywhere is retired.
//!
//! So an old secret stops between its idle time plus the margin and that
//! plus [`CHECK_EVERY`] after its last presentation (and, on another
//! instance, when the index there applies the change: within a second).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::super::{KeyService, Result};
use crate::audit::{Action, Actor};
use crate::keys::{KeyHash, KeyId};
use crate::store::PreviousSeen;

/// How often each instance writes the old secrets' sightings it noted.
pub const SEEN_FLUSH: Duration = Duration::from_millis(500);

/// How often each instance looks for rotations to complete.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How much longer than its idle time an old secret must have gone
/// unpresented (as written) before it is retired: another instance's
/// sighting may be up to a [`SEEN_FLUSH`] and a write late.
pub const SEEN_MARGIN_MS: i64 = 1_000;

/// One old secret's latest presentation seen by this instance.
#[derive(Clone, Copy)]
struct Sighting {
    hash: KeyHash,
    at_ms: i64,
    ip: IpAddr,
}

/// The old secrets' presentations this instance saw and has not written
/// yet, by key.
#[derive(Default)]
pub struct Sightings {
    seen: Mutex<HashMap<KeyId, Sighting>>,
}

impl Sightings {
    /// Notes that `hash`, key `id`'s old secret, was presented from `ip`
    /// at `at_ms`. Memory only (the verify hot path calls it).
    pub fn note(&self, id: &KeyId, hash: KeyHash, at_ms: i64, ip: IpAddr) {
        let mut seen = self.seen.lock().expect("sightings lock poisoned");
        match seen.get_mut(id) {
            Some(s) if s.at_ms >= at_ms && s.hash == hash => {}
            Some(s) => *s = Sighting { hash, at_ms, ip },
            None => {
                seen.insert(id.clone(), Sighting { hash, at_ms, ip });
            }
        }
    }

    /// Key `id`'s latest sighting not yet written.
    pub fn pending(&self, id: &KeyId) -> Option<(DateTime<Utc>, IpAddr)> {
        let seen = self.seen.lock().expect("sightings lock poisoned");
        seen.get(id).map(|s| (from_millis(s.at_ms), s.ip))
    }

    fn take(&self) -> Vec<PreviousSeen> {
        let taken = std::mem::take(&mut *self.seen.lock().expect("sightings lock poisoned"));
        taken
            .into_iter()
            .map(|(id, s)| PreviousSeen {
                id,
                hash: s.hash,
                at: from_millis(s.at_ms),
                ip: s.ip.to_canonical().to_string(),
            })
            .collect()
    }

    /// Puts back sightings a failed write did not record (newer ones
    /// noted meanwhile win).
    fn put_back(&self, batch: Vec<PreviousSeen>) {
        for s in batch {
            if let Ok(ip) = s.ip.parse() {
                let at_ms = s.at.timestamp_millis();
                let mut seen = self.seen.lock().expect("sightings lock poisoned");
                if seen.get(&s.id).is_none_or(|old| old.at_ms < at_ms) {
                    seen.insert(s.id, Sighting { hash: s.hash, at_ms, ip });
                }
            }
        }
    }
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    chrono::TimeZone::timestamp_millis_opt(&Utc, ms).single().unwrap_or_default()
}

impl KeyService {
    /// Writes the old secrets' sightings noted since the last write;
    /// returns how many keys it wrote for.
    pub async fn flush_previous_seen(&self) -> Result<usize> {
        let batch = self.inner.sightings.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.record_previous_seen(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.inner.sightings.put_back(batch);
                Err(e.into())
            }
        }
    }

    /// Retires the old secrets of rotations "until unused" that are due
    /// at `now` (see the module docs), after writing this instance's
    /// sightings; returns how many this call retired (0 when another
    /// instance got there first).
    pub async fn complete_rotations(&self, now: DateTime<Utc>) -> Result<usize> {
        self.flush_previous_seen().await?;
        let mut retired = 0;
        for key in self.inner.store.rotations_due(now, SEEN_MARGIN_MS).await? {
            let unused_for = key.previous_secret_until_unused.map_or(0, |t| t.seconds());
            let limit_reached = key.previous_secret_expires_at.is_some_and(|until| until <= now);
            let last_seen = key.previous_secret_seen.as_ref().map(|(at, _)| *at);
            let why = if limit_reached {
                "the old secret reached the most a rotation keeps it (30 days) and stopped working".to_owned()
            } else {
                format!(
                    "the old secret was not presented for {} and stopped working",
                    crate::keys::Ttl::from_seconds(unused_for.max(1))
                )
            };
            let details = serde_json::json!({
                "why": why,
                "reason": if limit_reached { "limit" } else { "unused" },
                "until_unused_seconds": unused_for,
                "last_presented_at": last_seen,
            });
            let event = self.key_event(&key, Action::KeyRotationCompleted, &Actor::System, details);
            if self
                .change_key(&key.id, self.inner.store.complete_rotation(&key.id, now, SEEN_MARGIN_MS, &event))
                .await?
            {
                tracing::info!(key_id = %key.id, guild_id = key.guild_id, "rotation completed: old secret retired");
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Writes sightings every [`SEEN_FLUSH`] and completes rotations every
    /// [`CHECK_EVERY`] until `stop`; writes the sightings once more then.
    pub(in crate::service) async fn run_rotations(&self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(SEEN_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checks_every = (CHECK_EVERY.as_millis() / SEEN_FLUSH.as_millis()).max(1) as u64;
        let mut ticks = 0u64;
        let mut failing = false;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = tick.tick() => {
                    ticks += 1;
                    let outcome = if ticks % checks_every == 0 {
                        self.complete_rotations(self.now()).await.map(|_| ())
                    } else {
                        self.flush_previous_seen().await.map(|_| ())
                    };
                    match outcome {
                        Ok(()) if failing => {
                            tracing::info!("completing key rotations works again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if failing => tracing::debug!(error = %e, "still cannot complete key rotations"),
                        Err(e) => {
                            tracing::warn!(error = %e, "failed to write old secrets' use or complete rotations; will retry");
                            failing = true;
                        }
                    }
                }
            }
        }
        if let Err(e) = self.flush_previous_seen().await {
            tracing::warn!(error = %e, "failed to write old secrets' use at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sighting_keeps_the_latest_presentation_and_survives_a_failed_write() {
        let s = Sightings::default();
        let id = KeyId::from_stored("key_a".to_owned());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        s.note(&id, KeyHash([1; 32]), 2_000, a);
        s.note(&id, KeyHash([1; 32]), 1_000, b);
        assert_eq!(s.pending(&id).unwrap().1, a, "an older presentation does not replace a newer");
        let batch = s.take();
        assert_eq!((batch.len(), batch[0].ip.as_str()), (1, "192.0.2.1"));
        assert!(s.pending(&id).is_none());
        s.note(&id, KeyHash([1; 32]), 3_000, b);
        s.put_back(batch);
        assert_eq!(s.pending(&id).unwrap().1, b, "a newer sighting wins over a put-back one");
    }
}
