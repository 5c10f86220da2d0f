//! The address throttle, with the governor crate (GCRA): per client
//! address block (an IPv4 address, an IPv6 /64: see
//! [`crate::keys::address_block`]), for refused requests: failed
//! authentications, and refusals of a known key (revoked, suspended,
//! expired, outside its allow-list, over its rate limit). After a burst of
//! them the block is refused with 429 until the bucket refills, so guessing
//! keys or hammering with a dead one costs real time. (A key's own rate
//! limit is the service's: `service::verify`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Refused requests per client address block.
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

    /// Seconds the IP's block must wait, if it is currently blocked.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        if self.blocked_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let ip = crate::keys::address_block(ip);
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

    /// Counts one failure; returns the wait if this IP's block is now blocked.
    pub fn record_failure(&self, ip: IpAddr) -> Option<u64> {
        let ip = crate::keys::address_block(ip);
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
