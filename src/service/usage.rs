//! Last-used times and request counts, kept in memory and written to the
//! database in batches — never one write per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

use crate::keys::KeyId;
use crate::store::Store;

/// One key's uses since the last flush, counted without a lock: every
/// verified request touches it. Lives with the key in the index (and
/// survives its changes, see `index::LiveKey`).
#[derive(Default)]
pub struct KeyUsage {
    /// Milliseconds since the epoch of the latest use; 0 for none yet.
    last_ms: AtomicI64,
    count: AtomicU64,
    /// In the tracker's list of keys to flush.
    listed: AtomicBool,
}

/// The keys used since the last flush. The lock is taken once per key per
/// flush period (when a key is first used in it), not per request.
#[derive(Default)]
pub struct UsageTracker {
    /// Usually one entry per id; two if the key's record was replaced.
    used: Mutex<HashMap<KeyId, Vec<Arc<KeyUsage>>>>,
}

impl UsageTracker {
    /// Notes one use of key `id`, whose usage record is `usage` (the one
    /// its `index::LiveKey` holds), at `at_ms` (milliseconds since the epoch).
    pub fn touch(&self, id: &KeyId, usage: &Arc<KeyUsage>, at_ms: i64) {
        // Within one millisecond the time is already there: no write.
        if at_ms > usage.last_ms.load(Ordering::Relaxed) {
            usage.last_ms.fetch_max(at_ms, Ordering::Relaxed);
        }
        usage.count.fetch_add(1, Ordering::AcqRel);
        if !usage.listed.load(Ordering::Acquire) && !usage.listed.swap(true, Ordering::AcqRel) {
            self.list(id, usage);
        }
    }

    fn list(&self, id: &KeyId, usage: &Arc<KeyUsage>) {
        let mut used = self.used.lock().expect("usage lock poisoned");
        let entries = used.entry(id.clone()).or_default();
        if !entries.iter().any(|u| Arc::ptr_eq(u, usage)) {
            entries.push(usage.clone());
        }
    }

    /// The not-yet-flushed last use of a key and its count, if any.
    pub fn pending_last_use(&self, id: &KeyId) -> Option<(DateTime<Utc>, u64)> {
        let used = self.used.lock().expect("usage lock poisoned");
        let (at, n) = totals(used.get(id)?.iter(), false);
        (n > 0).then(|| Some((millis(at)?, n))).flatten()
    }

    /// Writes everything pending in one transaction. On failure the batch is
    /// put back, to be tried again at the next flush.
    pub async fn flush(&self, store: &Store) -> anyhow::Result<usize> {
        let taken = std::mem::take(&mut *self.used.lock().expect("usage lock poisoned"));
        let mut batch = Vec::with_capacity(taken.len());
        for (id, entries) in &taken {
            // A use from here on lists its key again, for the next flush.
            for usage in entries {
                usage.listed.store(false, Ordering::Release);
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
}

/// The latest use and the number of uses over `entries`; with `take`, the
/// counts are taken (reset to zero).
fn totals<'a>(entries: impl Iterator<Item = &'a Arc<KeyUsage>>, take: bool) -> (i64, u64) {
    entries.fold((0, 0), |(at, n), usage| {
        let count = if take { usage.count.swap(0, Ordering::AcqRel) } else { usage.count.load(Ordering::Acquire) };
        (at.max(usage.last_ms.load(Ordering::Acquire)), n + count)
    })
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_count_and_keep_the_latest_time_across_a_keys_usage_records() {
        let tracker = UsageTracker::default();
        let id = KeyId::generate();
        let first = Arc::new(KeyUsage::default());
        assert_eq!(tracker.pending_last_use(&id), None);
        for at in [5_000, 3_000, 9_000] {
            tracker.touch(&id, &first, at);
        }
        assert_eq!(tracker.pending_last_use(&id), Some((millis(9_000).unwrap(), 3)));
        // A replaced record of the same key counts beside the first.
        let second = Arc::new(KeyUsage::default());
        tracker.touch(&id, &second, 7_000);
        assert_eq!(tracker.pending_last_use(&id), Some((millis(9_000).unwrap(), 4)));
        assert_eq!(tracker.used.lock().unwrap()[&id].len(), 2, "each record listed once");
        // Taking the totals empties the counts.
        let taken = std::mem::take(&mut *tracker.used.lock().unwrap());
        assert_eq!(totals(taken[&id].iter(), true), (9_000, 4));
        assert_eq!(totals(taken[&id].iter(), false), (9_000, 0));
    }
}
