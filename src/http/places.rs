//! The listener's places: how many requests the router handles at once,
//! and how those places are shared so that no guild can take them all.
//!
//! - Two pools of [`super::MAX_CONCURRENT_REQUESTS`] places each: one for
//!   the operations that may call Discord (bans, roles), one for the rest.
//!   A request that needs no Discord call never waits behind one that does,
//!   however slowly a guild's Discord answers.
//! - In each pool a guild holds at most [`GUILD_SHARE`] of the places (its
//!   keys' requests beyond that wait in the guild's own queue, first come
//!   first served, holding no place); requests without a key (health,
//!   metrics, leak reports, unknown paths) count for no guild.
//! - A request for an operation that may call Discord waits at most 1 s
//!   (`service::guard::PLACE_WAIT`) for its place here, and at most 1 s
//!   more for one of its guild's Discord calls; past either it is answered
//!   503 `discord_busy` with `Retry-After: 1`. A guild whose Discord is
//!   slow turns its places over at least once a second.
//!
//! Requests the front door answers itself (refusals, `/v1/verify`) take no
//! place and touch none of this.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::MAX_CONCURRENT_REQUESTS;

/// The most places of a pool one guild holds at once: an eighth, so that
/// it takes at least eight guilds at their share to fill a pool.
pub const GUILD_SHARE: usize = MAX_CONCURRENT_REQUESTS / 8;

/// Guild queues kept before the idle ones are forgotten.
const MAX_GUILD_QUEUES: usize = 10_000;

/// Which pool a request takes its place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Operations that need no Discord call.
    Plain,
    /// Operations that may call Discord.
    Discord,
}

/// What a request asks for: a pool, and the guild it counts for.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub pool: Pool,
    pub guild: Option<u64>,
}

/// Both pools and every guild's share of them. One per listener.
pub struct Places {
    plain: Shared,
    discord: Shared,
}

struct Shared {
    all: Semaphore,
    guilds: Mutex<HashMap<u64, Arc<Semaphore>>>,
}

/// A request's hold on its places; given back when dropped.
#[derive(Default)]
pub struct Held {
    pool: Option<Pool>,
    // Held for its drop: the guild's share, given back with the place.
    _share: Option<OwnedSemaphorePermit>,
    places: Option<Arc<Places>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(pool), Some(places)) = (self.pool, &self.places) {
            places.pool(pool).all.add_permits(1);
        }
    }
}

impl Places {
    pub fn new() -> Self {
        let shared = || Shared { all: Semaphore::new(MAX_CONCURRENT_REQUESTS), guilds: Mutex::default() };
        Self { plain: shared(), discord: shared() }
    }

    fn pool(&self, pool: Pool) -> &Shared {
        match pool {
            Pool::Plain => &self.plain,
            Pool::Discord => &self.discord,
        }
    }

    /// The guild's queue in `pool`.
    fn share(&self, pool: Pool, guild: u64) -> Arc<Semaphore> {
        let mut guilds = self.pool(pool).guilds.lock().expect("places lock poisoned");
        if guilds.len() >= MAX_GUILD_QUEUES {
            guilds.retain(|_, s| s.available_permits() < GUILD_SHARE);
        }
        guilds.entry(guild).or_insert_with(|| Arc::new(Semaphore::new(GUILD_SHARE))).clone()
    }

    /// The places `want` asks for if they are free now.
    pub fn try_take(self: &Arc<Self>, want: Want) -> Option<Held> {
        let share = match want.guild {
            Some(guild) => Some(self.share(want.pool, guild).try_acquire_owned().ok()?),
            None => None,
        };
        self.pool(want.pool).all.try_acquire().ok()?.forget();
        Some(Held { pool: Some(want.pool), _share: share, places: Some(self.clone()) })
    }

    /// The places `want` asks for, waiting for them: first the guild's share
    /// (in the guild's queue, holding no place of the pool), then a place.
    pub async fn take(self: Arc<Self>, want: Want) -> Held {
        let share = match want.guild {
            Some(guild) => self.share(want.pool, guild).acquire_owned().await.ok(),
            None => None,
        };
        let taken = self.pool(want.pool).all.acquire().await.map(|p| p.forget()).is_ok();
        Held { pool: taken.then_some(want.pool), _share: share, places: Some(self) }
    }

    /// Places free in `pool`, for tests.
    #[cfg(test)]
    fn free(&self, pool: Pool) -> usize {
        self.pool(pool).all.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_guild_holds_at_most_its_share_and_the_pools_are_apart() {
        let places = Arc::new(Places::new());
        let a = Want { pool: Pool::Discord, guild: Some(1) };
        let held: Vec<Held> = (0..GUILD_SHARE).map(|_| places.try_take(a).expect("within the share")).collect();
        assert!(places.try_take(a).is_none(), "past its share a guild waits");
        assert!(places.try_take(Want { pool: Pool::Discord, guild: Some(2) }).is_some(), "another guild does not");
        assert!(
            places.try_take(Want { pool: Pool::Plain, guild: Some(1) }).is_some(),
            "nor its requests without Discord"
        );
        assert_eq!(places.free(Pool::Discord), MAX_CONCURRENT_REQUESTS - GUILD_SHARE);
        let waiting = tokio::spawn(places.clone().take(a));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        let _next = waiting.await.unwrap();
        assert_eq!(places.free(Pool::Discord), MAX_CONCURRENT_REQUESTS - 1, "every place given back but the one held");
        assert_eq!(places.free(Pool::Plain), MAX_CONCURRENT_REQUESTS);
    }
}
