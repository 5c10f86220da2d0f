//! Last-used times and request counts, kept in memory and written to the
//! database in batches — never one write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::keys::KeyId;
use crate::store::Store;

#[derive(Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<KeyId, (DateTime<Utc>, u64)>>,
}

impl UsageTracker {
    /// Notes one use of a key. Hot path: a map update under a short lock.
    pub fn touch(&self, id: &KeyId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().expect("usage lock poisoned");
        match pending.get_mut(id) {
            Some(entry) => {
                entry.0 = entry.0.max(at);
                entry.1 += 1;
            }
            None => {
                pending.insert(id.clone(), (at, 1));
            }
        }
    }

    /// The not-yet-flushed last use of a key, if any.
    pub fn pending_last_use(&self, id: &KeyId) -> Option<(DateTime<Utc>, u64)> {
        self.pending.lock().expect("usage lock poisoned").get(id).copied()
    }

    /// Writes everything pending in one transaction. On failure the batch is
    /// put back, to be tried again at the next flush.
    pub async fn flush(&self, store: &Store) -> anyhow::Result<usize> {
        let batch: Vec<(KeyId, DateTime<Utc>, u64)> = {
            let mut pending = self.pending.lock().expect("usage lock poisoned");
            pending.drain().map(|(id, (at, n))| (id, at, n)).collect()
        };
        if let Err(e) = store.record_usage(&batch).await {
            let mut pending = self.pending.lock().expect("usage lock poisoned");
            for (id, at, n) in batch {
                let entry = pending.entry(id).or_insert((at, 0));
                entry.0 = entry.0.max(at);
                entry.1 += n;
            }
            return Err(e);
        }
        Ok(batch.len())
    }
}
