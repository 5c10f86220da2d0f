//! The tracker's batched writes: last-used times, the request log and the
//! counters of ended minutes, each part in one transaction, a failed part
//! kept for the next flush.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::{
    ip_text, lock, millis, minute_of, totals, RequestFacts, UsageTracker, MAX_IPS_PER_KEY_HOUR, MAX_RETRY_LOG,
    NOTABLE_KEPT_PER_KEY,
};
use crate::keys::KeyId;
use crate::store::{NewRequestLog, Store};

impl UsageTracker {
    /// Writes what is due at `now_ms`, each part in one transaction: the
    /// last-used times and request counts, the request log, and (once the
    /// minute they are in has ended, or everything with `all`) the counters.
    /// The refusals noted since the last flush go to `refused`, whatever
    /// the database says. A part that fails is kept for the next flush; the
    /// first failure is returned after every part was tried. Returns how
    /// many keys' last-used times were written.
    pub async fn flush(
        &self,
        store: &Store,
        now_ms: i64,
        all: bool,
        refused: &mut Vec<(KeyId, u64)>,
    ) -> anyhow::Result<usize> {
        let last_used = self.flush_last_used(store, refused).await;
        let log = self.flush_log(store).await;
        let counts = self.flush_counts(store, now_ms, all).await;
        let written = last_used?;
        log?;
        counts?;
        Ok(written)
    }

    async fn flush_last_used(&self, store: &Store, refused: &mut Vec<(KeyId, u64)>) -> anyhow::Result<usize> {
        let taken = std::mem::take(&mut *lock(&self.used));
        let mut batch = Vec::with_capacity(taken.len());
        for (id, entries) in &taken {
            // A use from here on lists its key again, for the next flush.
            for usage in entries {
                usage.listed.store(false, Ordering::Release);
            }
            let refusals: u64 = entries.iter().map(|u| u.refused.swap(0, Ordering::AcqRel)).sum();
            if refusals > 0 {
                refused.push((id.clone(), refusals));
            }
            let (at, n) = totals(entries.iter(), true);
            if let (true, Some(at)) = (n > 0, millis(at)) {
                batch.push((id.clone(), at, n));
            }
        }
        if let Err(e) = store.record_usage(&batch).await {
            for (id, at, n) in &batch {
                let usage = &taken[id][0];
                usage.last_ms.fetch_max(at.timestamp_millis(), Ordering::Relaxed);
                usage.count.fetch_add(*n, Ordering::AcqRel);
                if !usage.listed.swap(true, Ordering::AcqRel) {
                    self.list(id, usage);
                }
            }
            return Err(e);
        }
        Ok(batch.len())
    }

    /// Writes the request log taken from every shard (and what a failed
    /// flush kept), the newest `usage.request_log_per_key` per key.
    pub async fn flush_log(&self, store: &Store) -> anyhow::Result<()> {
        let mut rows = std::mem::take(&mut lock(&self.retry).log);
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut lock(&shard.0).log);
            rows.extend(taken.into_iter().map(|(id, r)| log_row(id, &r)));
        }
        let dropped = self.log_dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "requests came faster than the request log is flushed; some were counted, not logged"
            );
        }
        if rows.is_empty() {
            return Ok(());
        }
        // Oldest first, so log ids follow time; then the newest per key and
        // kind (notable refusals apart from the rest).
        rows.sort_by_key(|r| r.at);
        let keep = |notable: bool| if notable { NOTABLE_KEPT_PER_KEY as usize } else { self.log_per_key as usize };
        let mut per_key: HashMap<(KeyId, bool), usize> = HashMap::new();
        for r in rows.iter().rev() {
            *per_key.entry((r.key_id.clone(), r.notable)).or_default() += 1;
        }
        let mut skip: HashMap<(KeyId, bool), usize> = per_key
            .into_iter()
            .filter(|((_, notable), n)| *n > keep(*notable))
            .map(|((id, notable), n)| ((id, notable), n - keep(notable)))
            .collect();
        rows.retain(|r| match skip.get_mut(&(r.key_id.clone(), r.notable)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
        let trim_every = (self.log_per_key / 8).max(1);
        let mut untrimmed = lock(&self.untrimmed).clone();
        for r in &rows {
            *untrimmed.entry(r.key_id.clone()).or_default() += 1;
        }
        let trim: Vec<KeyId> = untrimmed.iter().filter(|(_, n)| **n >= trim_every).map(|(id, _)| id.clone()).collect();
        if let Err(e) = store.record_requests(&rows, &trim, [self.log_per_key, NOTABLE_KEPT_PER_KEY]).await {
            let mut retry = lock(&self.retry);
            rows.append(&mut retry.log);
            let excess = rows.len().saturating_sub(MAX_RETRY_LOG);
            rows.drain(..excess);
            retry.log = rows;
            return Err(e);
        }
        for id in &trim {
            untrimmed.remove(id);
        }
        *lock(&self.untrimmed) = untrimmed;
        Ok(())
    }

    async fn flush_counts(&self, store: &Store, now_ms: i64, all: bool) -> anyhow::Result<()> {
        let now_minute = minute_of(now_ms);
        let before = if all { i64::MAX } else { now_minute };
        // Once per minute (the first flush after one ended), or everything.
        let from = self.counted_from.load(Ordering::Acquire);
        if !all && from >= before {
            return Ok(());
        }
        self.counted_from.fetch_max(before, Ordering::AcqRel);
        let mut batch = std::mem::take(&mut lock(&self.retry).counts);
        for shard in self.shards.iter() {
            // Swapped out under the lock, split outside it; the current
            // minute's counts go back (added to what came meanwhile).
            let keys = std::mem::take(&mut lock(&shard.0).keys);
            let mut ongoing = Vec::new();
            for (id, mut pending) in keys {
                pending.take_before(&id, before, &mut batch);
                if !pending.is_empty() {
                    ongoing.push((id, pending));
                }
            }
            if !ongoing.is_empty() {
                let mut shard = lock(&shard.0);
                for (id, pending) in ongoing {
                    shard.keys.entry(id).or_default().merge(pending);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (minutes, ips) = batch.rows();
        if let Err(e) = store.record_counters(&minutes, &ips).await {
            lock(&self.retry).counts.absorb(batch);
            return Err(e);
        }
        self.trim_ips(store, now_minute.div_euclid(60), &ips).await
    }

    /// Trims each key's hour whose address rows this instance may have
    /// taken past [`MAX_IPS_PER_KEY_HOUR`] (other instances add theirs; the
    /// trim keeps the busiest of all).
    async fn trim_ips(&self, store: &Store, now_hour: i64, ips: &[crate::store::IpCount]) -> anyhow::Result<()> {
        let due = |written: &mut HashMap<(KeyId, i64), usize>, unit: i64, per: i64| {
            written.retain(|(_, at), _| *at + 1 >= unit);
            for row in ips.iter().filter(|r| r.ip != "other") {
                *written.entry((row.key_id.clone(), row.hour.div_euclid(per))).or_default() += 1;
            }
            let due: Vec<(KeyId, i64)> =
                written.iter().filter(|(_, n)| **n > MAX_IPS_PER_KEY_HOUR).map(|(k, _)| k.clone()).collect();
            for pair in &due {
                written.insert(pair.clone(), MAX_IPS_PER_KEY_HOUR);
            }
            due
        };
        let hours = due(&mut lock(&self.ip_rows_written), now_hour, 1);
        let days = due(&mut lock(&self.ip_day_rows_written), now_hour.div_euclid(24), 24);
        // A failed trim is tried again at the key's next flush of that hour
        // (or left for the rows to age out): counts are never lost by it.
        store.trim_usage_ips(&hours, &days, MAX_IPS_PER_KEY_HOUR as u32).await
    }
}

fn log_row(key_id: KeyId, r: &RequestFacts) -> NewRequestLog {
    NewRequestLog {
        key_id,
        at: millis(r.at_ms).unwrap_or_default(),
        method: r.method,
        route: r.route,
        status: r.status,
        reason: r.reason,
        ip: ip_text(r.ip),
        latency_us: r.latency_us,
        target_user_id: r.target_user,
        target_role_id: r.target_role,
        notable: super::is_notable(r.reason),
    }
}
