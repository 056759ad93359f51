//! Quotas and rate limits: allocations per user, per client IP and in total (486 when
//! reached), token buckets for the per-allocation and total bandwidth caps, and the
//! per-IP limit on failed authentications. Every table is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The quota that stopped an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaHit {
    Total(usize),
    User(usize),
    Ip(usize),
}

impl QuotaHit {
    pub fn explain(&self) -> String {
        match self {
            QuotaHit::Total(n) => format!("the server has {n} allocations ([turn] total_quota)"),
            QuotaHit::User(n) => format!("this user has {n} allocations ([turn] user_quota)"),
            QuotaHit::Ip(n) => format!("this client address has {n} allocations (per-IP quota)"),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    users: HashMap<String, usize>,
    ips: HashMap<IpAddr, usize>,
}

/// Allocation counts for the quotas.
pub struct Quotas {
    total: usize,
    user: usize,
    ip: usize,
    counts: Mutex<Counts>,
}

impl Quotas {
    pub fn new(total: usize, user: usize, ip: usize) -> Quotas {
        Quotas {
            total,
            user,
            ip,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Reserves one allocation for `user` at `ip`, or says which quota is full.
    pub fn acquire(&self, user: &str, ip: IpAddr) -> Result<(), QuotaHit> {
        let mut c = self.counts.lock();
        if self.total > 0 && c.total >= self.total {
            return Err(QuotaHit::Total(c.total));
        }
        let u = c.users.get(user).copied().unwrap_or(0);
        if self.user > 0 && !user.is_empty() && u >= self.user {
            return Err(QuotaHit::User(u));
        }
        let i = c.ips.get(&ip).copied().unwrap_or(0);
        if self.ip > 0 && i >= self.ip {
            return Err(QuotaHit::Ip(i));
        }
        c.total += 1;
        *c.users.entry(user.to_string()).or_default() += 1;
        *c.ips.entry(ip).or_default() += 1;
        Ok(())
    }

    pub fn release(&self, user: &str, ip: IpAddr) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.users.remove(user);
            }
        }
        if let Some(n) = c.ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.ips.remove(&ip);
            }
        }
    }
}

/// A token bucket of bytes (one second of burst); `rate` 0 = unlimited.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `bps` in bits per second.
    pub fn new(bps: u64) -> Bucket {
        let rate = bps as f64 / 8.0;
        Bucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// Failed authentications per client IP in a sliding minute; at most `MAX_TRACKED` IPs.
pub struct AuthFailures {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const MAX_TRACKED: usize = 65_536;

impl AuthFailures {
    pub fn new(per_minute: u32) -> AuthFailures {
        AuthFailures {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is over the limit (its requests are then ignored).
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return false;
        }
        match self.seen.lock().get(&ip) {
            Some((since, n)) => {
                now.saturating_duration_since(*since) < Duration::from_secs(60)
                    && *n >= self.per_minute
            }
            None => false,
        }
    }

    pub fn record(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (since, _)| {
                now.saturating_duration_since(*since) < Duration::from_secs(60)
            });
            if seen.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_count_and_release() {
        let q = Quotas::new(3, 2, 0);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(q.acquire("a", ip).is_ok());
        assert!(q.acquire("a", ip).is_ok());
        assert_eq!(q.acquire("a", ip), Err(QuotaHit::User(2)));
        assert!(q.acquire("b", ip).is_ok());
        assert_eq!(q.acquire("c", ip), Err(QuotaHit::Total(3)));
        q.release("a", ip);
        assert!(q.acquire("c", ip).is_ok());
    }

    #[test]
    fn buckets_cap_bytes_per_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(8000);
        assert!(b.take(1000, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        assert!(Bucket::new(0).take(usize::MAX, t0));
    }

    #[test]
    fn auth_failures_block_after_the_limit() {
        let f = AuthFailures::new(2);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let t0 = Instant::now();
        f.record(ip, t0);
        assert!(!f.blocked(ip, t0));
        f.record(ip, t0);
        assert!(f.blocked(ip, t0));
        assert!(!f.blocked(ip, t0 + Duration::from_secs(61)));
    }
}
