//! Brute-force protection (reference §6 item 4): failures are counted per client IP
//! (IPv6 by /64) and action; 10 failures in 30 minutes block the address, and each
//! failure delays the caller 100 ms · 2^(n-1), at most 25 s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    HelloResume,
    HelloInternal,
    BackendRoomAuth,
}

const MAX_ATTEMPTS: usize = 10;
const WINDOW: Duration = Duration::from_secs(30 * 60);
const MAX_DELAY: Duration = Duration::from_secs(25);
const BASE_DELAY: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<(IpAddr, Action), Vec<Instant>>>,
}

fn key_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let mut seg = v6.segments();
            for s in &mut seg[4..] {
                *s = 0;
            }
            IpAddr::V6(seg.into())
        }
    }
}

impl Throttle {
    /// True when the address is blocked for this action.
    pub fn is_blocked(&self, ip: IpAddr, action: Action) -> bool {
        let now = Instant::now();
        let mut map = self.failures.lock();
        match map.get_mut(&(key_ip(ip), action)) {
            Some(list) => {
                list.retain(|t| now.duration_since(*t) < WINDOW);
                list.len() >= MAX_ATTEMPTS
            }
            None => false,
        }
    }

    /// Record a failure; returns how long the caller should be delayed.
    pub fn record_failure(&self, ip: IpAddr, action: Action) -> Duration {
        let now = Instant::now();
        let mut map = self.failures.lock();
        let list = map.entry((key_ip(ip), action)).or_default();
        list.retain(|t| now.duration_since(*t) < WINDOW);
        list.push(now);
        let n = list.len().min(20) as u32;
        BASE_DELAY.saturating_mul(1 << (n - 1)).min(MAX_DELAY)
    }

    /// Forget old entries (called from housekeeping).
    pub fn expire(&self) {
        let now = Instant::now();
        self.failures.lock().retain(|_, list| {
            list.retain(|t| now.duration_since(*t) < WINDOW);
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_ten_failures_and_groups_ipv6_by_64() {
        let t = Throttle::default();
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        for i in 0..10 {
            assert!(!t.is_blocked(a, Action::HelloResume), "blocked after {i}");
            let d = t.record_failure(if i % 2 == 0 { a } else { b }, Action::HelloResume);
            assert!(d <= MAX_DELAY);
        }
        assert!(t.is_blocked(a, Action::HelloResume));
        assert!(!t.is_blocked(a, Action::HelloInternal));
    }
}
