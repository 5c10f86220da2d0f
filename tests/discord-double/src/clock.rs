//! The double's clock: Discord's time as the double tells it. It runs with the real clock,
//! plus however far a test has moved it on ([`crate::Double::advance_clock`]), so a test of
//! something that takes Discord minutes (an interaction token's 15-minute life) moves time
//! instead of waiting. It dates new snowflakes (so ids a bot reads carry the moved time) and
//! ages interactions (the 3-second ack deadline, the 15-minute token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Real time plus an offset that only grows. Cheap to clone; clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Moves the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }

    /// How far the clock has been moved on in total.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::Acquire))
    }

    /// A monotonic reading: `Instant::now()` plus the offset.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Milliseconds since the Unix epoch, plus the offset.
    pub fn unix_ms(&self) -> u64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        real + self.offset_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_both_readings_and_clones_share_it() {
        let clock = Clock::default();
        let twin = clock.clone();
        let (before, before_ms) = (clock.instant(), clock.unix_ms());
        twin.advance(Duration::from_secs(900));
        assert!(clock.instant() - before >= Duration::from_secs(900));
        assert!(clock.unix_ms() - before_ms >= 900_000);
        assert_eq!(clock.offset(), Duration::from_secs(900));
    }
}
