//! Rate limits, with the governor crate (GCRA):
//! - per key, at the key's own `rate_limit_per_minute` (and, when the
//!   database is shared, within the key's per-minute budget over all
//!   instances: `service::lease`);
//! - per client IP, for failed authentications: after a burst of failures
//!   the IP is refused with 429 until the bucket refills, so guessing keys
//!   costs real time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::service::index::KeyLimiter;

/// What a key's budget looks like after a request.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is full again.
    pub reset_secs: u64,
    /// Set when this request was refused: seconds to wait.
    pub retry_after_secs: Option<u64>,
}

/// Takes one request from a key's budget. The limiter is the key's own
/// (made on its first use, kept across its rotations, see
/// `service::index::LiveKey`), so this touches no shared map.
pub fn check(limiter: &KeyLimiter, per_minute: u32) -> Budget {
    let per_minute = per_minute.max(1);
    let per_cell = 60.0 / f64::from(per_minute);
    match limiter.check() {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            Budget {
                limit: per_minute,
                remaining,
                reset_secs: (f64::from(per_minute - remaining) * per_cell).ceil() as u64,
                retry_after_secs: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let wait_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Budget {
                limit: per_minute,
                remaining: 0,
                reset_secs: (f64::from(per_minute) * per_cell).ceil() as u64,
                retry_after_secs: Some(wait_secs),
            }
        }
    }
}

/// The budget of a request refused because every instance together has
/// used the key's window: nothing remains until the window ends, in
/// `retry_after_secs`.
pub fn window_spent(per_minute: u32, retry_after_secs: u64) -> Budget {
    Budget {
        limit: per_minute.max(1),
        remaining: 0,
        reset_secs: retry_after_secs,
        retry_after_secs: Some(retry_after_secs),
    }
}

/// Narrows an admitted request's local budget to the key's shared window:
/// about `remaining` left over all instances, full again at the window's
/// end in `reset_secs` (whichever of the two budgets is the tighter).
pub fn within_window(budget: &mut Budget, remaining: u32, reset_secs: u64) {
    budget.remaining = budget.remaining.min(remaining);
    budget.reset_secs = budget.reset_secs.max(reset_secs);
}

/// Failed authentications per client IP.
pub struct FailureThrottle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// `blocked.len()`, readable without the lock: every request checks,
    /// and almost always nothing is blocked.
    blocked_count: AtomicUsize,
}

impl FailureThrottle {
    /// `burst` failures at once, refilling at `per_minute`.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least 1"))
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"));
        Self {
            limiter: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
            blocked_count: AtomicUsize::new(0),
        }
    }

    /// Seconds the IP must wait, if it is currently blocked.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        if self.blocked_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut blocked = self.blocked.lock().expect("throttle lock poisoned");
        let until = *blocked.get(&ip)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&ip);
            self.blocked_count.store(blocked.len(), Ordering::Release);
            return None;
        }
        Some((until - now).as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts one failure; returns the wait if this IP is now blocked.
    pub fn record_failure(&self, ip: IpAddr) -> Option<u64> {
        match self.limiter.check_key(&ip) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now()).max(Duration::from_secs(1));
                let mut blocked = self.blocked.lock().expect("throttle lock poisoned");
                blocked.insert(ip, Instant::now() + wait);
                self.blocked_count.store(blocked.len(), Ordering::Release);
                Some(wait.as_secs_f64().ceil() as u64)
            }
        }
    }

    /// Drops state for IPs that have been quiet (bounded memory).
    pub fn cleanup(&self) {
        self.limiter.retain_recent();
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("throttle lock poisoned");
        blocked.retain(|_, until| *until > now);
        self.blocked_count.store(blocked.len(), Ordering::Release);
    }
}
