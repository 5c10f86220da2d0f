//! How many connections the listener holds open, so that one client, or
//! many, cannot take every file descriptor the process has:
//!
//! - **per address** (`http.max_connections_per_ip`, IPv6 counted per /64):
//!   a connection past the cap is closed as soon as it is accepted, before
//!   anything is read from it. The peers in `http.trusted_proxies` are not
//!   capped (with `http.trust_forwarded_for`), since every client behind a
//!   reverse proxy arrives from its address;
//! - **in all** (`http.max_connections`, and never more than the open-files
//!   limit leaves room for, [`RESERVED_FILES`] kept for the database,
//!   Discord and the logs): at the cap the listener stops accepting until a
//!   connection closes; new clients wait in the kernel's queue meanwhile
//!   (an idle connection is closed after 10 s), instead of the process
//!   running out of file descriptors.
//!
//! At start the open-files soft limit is raised to the hard limit
//! ([`raise_open_files_limit`]): systemd gives services 1,024 soft (and
//! 524,288 hard) by default.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors left to the rest of the process when the connection
/// cap is derived from the open-files limit.
pub const RESERVED_FILES: u64 = 128;

/// Raises the open-files soft limit to the hard limit; returns the soft
/// limit before and after (`None` where there is no such limit).
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit reads the struct it is given, nothing else.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        Some((to_u64(before), to_u64(limit.rlim_cur)))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A limit as u64 (`rlim_t` is u64 on Linux and macOS, not everywhere).
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn to_u64(n: libc::rlim_t) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The open-files soft limit now, if there is one.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then(|| to_u64(limit.rlim_cur))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The caps, and who holds what. One per listener.
pub struct Connections {
    per_ip: usize,
    exempt: Vec<ipnet::IpNet>,
    total: Arc<Semaphore>,
    /// The cap in all, as derived at start.
    pub max_total: usize,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's hold on its places: given back when it closes.
pub struct Held {
    _total: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut by_ip = self.by_ip.lock().expect("connections lock poisoned");
        if let Some(n) = by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&ip);
            }
        }
    }
}

/// The address a connection is counted under: IPv6 by its /64 (one
/// subscriber's prefix gives endless addresses).
fn counted(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Connections {
    /// `max_total` is lowered to what the open-files limit leaves room for.
    pub fn new(per_ip: usize, max_total: usize, exempt: Vec<ipnet::IpNet>) -> Self {
        let room = open_files_limit()
            .map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX));
        let max_total = max_total.min(room).min(Semaphore::MAX_PERMITS);
        Self { per_ip, exempt, total: Arc::new(Semaphore::new(max_total)), max_total, by_ip: Arc::default() }
    }

    /// The cap per address.
    pub fn per_ip(&self) -> usize {
        self.per_ip
    }

    /// Waits until fewer than the cap in all are open (before accepting).
    pub async fn room(&self) -> OwnedSemaphorePermit {
        self.total.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Counts a connection from `peer`, or `None` if its address already
    /// holds its cap (the connection is to be closed).
    pub fn admit(&self, peer: IpAddr, room: OwnedSemaphorePermit) -> Option<Held> {
        if self.exempt.iter().any(|net| net.contains(&peer)) {
            return Some(Held { _total: room, ip: None, by_ip: self.by_ip.clone() });
        }
        let ip = counted(peer);
        let mut by_ip = self.by_ip.lock().expect("connections lock poisoned");
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return None;
        }
        *n += 1;
        drop(by_ip);
        Some(Held { _total: room, ip: Some(ip), by_ip: self.by_ip.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_holds_its_cap_and_ipv6_counts_per_64() {
        let proxy: ipnet::IpNet = "10.0.0.1/32".parse().unwrap();
        let conns = Connections::new(2, 100, vec![proxy]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Held> = (0..2).map(|_| futures_held(&conns, a)).map(Option::unwrap).collect();
        assert!(futures_held(&conns, a).is_none(), "past its cap");
        assert!(futures_held(&conns, "192.0.2.2".parse().unwrap()).is_some(), "another address");
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _one = futures_held(&conns, v6("2001:db8::1")).unwrap();
        let _two = futures_held(&conns, v6("2001:db8::ffff:2")).unwrap();
        assert!(futures_held(&conns, v6("2001:db8::3")).is_none(), "one /64 counts as one address");
        assert!(futures_held(&conns, v6("2001:db8:0:1::1")).is_some(), "the next /64 is another");
        let proxied: Vec<Held> = (0..5).map(|_| futures_held(&conns, "10.0.0.1".parse().unwrap()).unwrap()).collect();
        assert_eq!(proxied.len(), 5, "a trusted proxy is not capped");
        drop(held);
        assert!(futures_held(&conns, a).is_some(), "closed connections are given back");
    }

    fn futures_held(conns: &Connections, ip: IpAddr) -> Option<Held> {
        let room = conns.total.clone().try_acquire_owned().expect("room in all");
        conns.admit(ip, room)
    }

    #[test]
    fn the_cap_in_all_leaves_room_for_the_rest_of_the_process() {
        let conns = Connections::new(10, usize::MAX, vec![]);
        let limit = open_files_limit().expect("a limit on unix");
        assert_eq!(
            conns.max_total as u64,
            limit.saturating_sub(RESERVED_FILES).max(1).min(Semaphore::MAX_PERMITS as u64)
        );
    }
}
