//! The service's clock: what time it is for keys (expiry, a rotation's
//! grace, the times written with every change, usage). Production reads
//! the system clock; a test clock stands still until set or advanced, so a
//! test of expiry or grace moves time instead of sleeping.
//!
//! Not on this clock: how long the index has gone without hearing from the
//! database (`index::STALE_AFTER_MS`), the shared rate-limit windows
//! (`lease`), the local rate limiter and the background loops' timers. They
//! measure real time passing, or agree with other instances on it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

/// The system clock, or a settable test clock. Cheap to clone; clones of a
/// test clock share its time.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock; else milliseconds since the epoch.
    set: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock (production).
    pub fn system() -> Self {
        Self { set: None }
    }

    /// A test clock reading `at` until [`Self::set`] or [`Self::advance`].
    pub fn at(at: DateTime<Utc>) -> Self {
        Self { set: Some(Arc::new(AtomicI64::new(at.timestamp_millis()))) }
    }

    /// Whether this is the system clock.
    pub fn is_system(&self) -> bool {
        self.set.is_none()
    }

    /// Sets a test clock to `at`. Panics on the system clock.
    pub fn set(&self, at: DateTime<Utc>) {
        self.test().store(at.timestamp_millis(), Ordering::Release);
    }

    /// Moves a test clock on by `by`. Panics on the system clock.
    pub fn advance(&self, by: chrono::Duration) {
        self.test().fetch_add(by.num_milliseconds(), Ordering::AcqRel);
    }

    fn test(&self) -> &AtomicI64 {
        self.set.as_deref().expect("only a test clock can be set")
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.set {
            None => Utc::now(),
            Some(ms) => Utc.timestamp_millis_opt(ms.load(Ordering::Acquire)).single().unwrap_or_default(),
        }
    }

    /// The time now in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.now_ms_or(super::unix_millis)
    }

    /// [`Self::now_ms`], with the system clock read by `wall` (the verify
    /// path reads it once for the index's freshness too).
    pub(super) fn now_ms_or(&self, wall: impl FnOnce() -> i64) -> i64 {
        match &self.set {
            None => wall(),
            Some(ms) => ms.load(Ordering::Acquire),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.set {
            None => f.write_str("Clock::system"),
            Some(ms) => write!(f, "Clock::at({})", ms.load(Ordering::Acquire)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_stands_still_until_moved_and_its_clones_share_it() {
        let start = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        let clock = Clock::at(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(chrono::Duration::seconds(90));
        assert_eq!(shared.now(), start + chrono::Duration::seconds(90));
        shared.set(start);
        assert_eq!((clock.now(), clock.now_ms()), (start, start.timestamp_millis()));
        assert!(!clock.is_system() && Clock::system().is_system());
    }
}
