//! The in-memory key index: every key by the hash of its secret, so that
//! verifying a token reads no database row.
//!
//! It is rebuilt from the store after every change this process makes (before
//! that change returns) and whenever the store reports a commit by another
//! connection or process (the operator CLI, a second instance), which a
//! background task checks several times a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::keys::{KeyHash, KeyRecord};
use crate::store::Store;

/// What a hash maps to.
#[derive(Clone)]
pub struct IndexEntry {
    pub key: Arc<KeyRecord>,
    /// Set for a rotated-out secret: it works until then, not after.
    pub valid_until: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct KeyIndex {
    map: RwLock<Arc<HashMap<KeyHash, IndexEntry>>>,
    /// Serialises reloads so a slower, older snapshot never replaces a newer.
    reload: Mutex<Option<i64>>,
}

impl KeyIndex {
    /// Looks a hash up; no I/O.
    pub fn get(&self, hash: &KeyHash) -> Option<IndexEntry> {
        self.map.read().expect("index lock poisoned").get(hash).cloned()
    }

    /// The ids of every indexed key.
    pub fn key_ids(&self) -> std::collections::HashSet<crate::keys::KeyId> {
        self.map.read().expect("index lock poisoned").values().map(|e| e.key.id.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("index lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds the index from the store.
    pub async fn reload(&self, store: &Store) -> anyhow::Result<()> {
        let mut version = self.reload.lock().await;
        // Read the counter first: a commit landing during the load bumps it
        // again, and the next check reloads once more.
        let counter = store.change_counter().await?;
        let keys = store.all_keys_with_hashes().await?;
        let mut map = HashMap::with_capacity(keys.len() * 2);
        for k in keys {
            let key = Arc::new(k.record);
            if let (Some(prev), Some(until)) = (k.previous_hash, key.previous_secret_expires_at) {
                map.insert(prev, IndexEntry { key: key.clone(), valid_until: Some(until) });
            }
            map.insert(k.hash, IndexEntry { key, valid_until: None });
        }
        *self.map.write().expect("index lock poisoned") = Arc::new(map);
        *version = Some(counter);
        Ok(())
    }

    /// Reloads only if another connection committed since the last load.
    pub async fn refresh_if_changed(&self, store: &Store) -> anyhow::Result<bool> {
        let seen = *self.reload.lock().await;
        if seen == Some(store.change_counter().await?) {
            return Ok(false);
        }
        self.reload(store).await?;
        Ok(true)
    }
}
