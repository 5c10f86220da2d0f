//! The circuit breaker's counts: each key's destructive writes over the
//! last [`BREAKER_WINDOW`], kept in the database so that every instance
//! sharing it, and every restart, spends one budget (a per-process count
//! let two listeners make twice a key's bans, and a restart start afresh).
//! Only writes ask; verification never does. What trips it, and what
//! happens then, is `actions.rs`'s.

use super::guard::{WriteKind, BREAKER_WINDOW};
use super::{KeyService, Result};
use crate::keys::KeyId;

/// One turn per key and kind in this process, striped: concurrent spends
/// of one key wait here, not in the database holding a pooled connection
/// each while the key's row lock lets one through at a time (a burst of
/// one key's bans would otherwise starve the pool of every other write).
pub(super) struct Turns {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Turns {
    fn default() -> Self {
        Self { stripes: (0..Self::STRIPES).map(|_| tokio::sync::Mutex::new(())).collect() }
    }
}

impl Turns {
    const STRIPES: usize = 64;

    async fn take(&self, key: &KeyId, kind: WriteKind) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher as _;
        let hash = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one((key.as_str(), kind.as_str()));
        self.stripes[(hash % Self::STRIPES as u64) as usize].lock().await
    }
}

impl KeyService {
    /// Spends one of `key`'s writes of `kind` if it has budget left; false
    /// (nothing spent) once it has made `budget` of them in the window.
    #[tracing::instrument(skip_all, fields(key_id = %key, kind = kind.as_str()))]
    pub async fn spend_write(&self, key: &KeyId, kind: WriteKind, budget: u32) -> Result<bool> {
        let _turn = self.inner.breaker_turns.take(key, kind).await;
        let now_ms = self.inner.clock.now_ms();
        let window_ms = i64::try_from(BREAKER_WINDOW.as_millis()).unwrap_or(i64::MAX);
        Ok(self.inner.store.spend_write(key, kind.as_str(), now_ms, now_ms - window_ms, budget).await?)
    }
}
