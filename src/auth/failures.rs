//! The failure limiter: a source address that presents [`MAX_FAILURES`]
//! wrong keys within a minute is answered 429 (with `Retry-After`) until
//! that minute is over, without its keys being checked. Successes do not
//! count. IPv6 addresses count per /64 (one host usually holds a whole
//! /64). Memory is bounded: at most [`MAX_TRACKED`] addresses, the one
//! seen longest ago dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong keys allowed per window.
pub const MAX_FAILURES: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
pub const MAX_TRACKED: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The first failure of the current window.
    since: Instant,
    failures: u32,
    /// The latest failure (eviction order).
    last: Instant,
}

/// Failures per source address.
#[derive(Debug)]
pub struct FailureLimiter {
    entries: HashMap<IpAddr, Entry>,
    cap: usize,
    max_failures: u32,
    window: Duration,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(MAX_TRACKED, MAX_FAILURES, WINDOW)
    }
}

/// The address failures are counted under: IPv4 as is (and IPv4-mapped
/// IPv6 as IPv4), IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

impl FailureLimiter {
    /// A limiter tracking `cap` addresses, allowing `max_failures` per
    /// `window`.
    pub fn new(cap: usize, max_failures: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            entries: HashMap::new(),
            cap: cap.max(1),
            max_failures: max_failures.max(1),
            window,
        }
    }

    /// `Some(seconds to wait)` while `ip` is over its limit.
    pub fn blocked(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let key = bucket(ip);
        let e = *self.entries.get(&key)?;
        let end = e.since + self.window;
        if now >= end {
            self.entries.remove(&key);
            return None;
        }
        (e.failures >= self.max_failures).then(|| {
            let left = end - now;
            // Whole seconds, rounded up, at least 1.
            (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
        })
    }

    /// Counts a wrong key from `ip`; true when this one reached the limit.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = bucket(ip);
        if let Some(e) = self.entries.get_mut(&key) {
            if now >= e.since + self.window {
                *e = Entry {
                    since: now,
                    failures: 0,
                    last: now,
                };
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            return e.failures == self.max_failures;
        }
        if self.entries.len() >= self.cap {
            self.evict(now);
        }
        self.entries.insert(
            key,
            Entry {
                since: now,
                failures: 1,
                last: now,
            },
        );
        self.max_failures == 1
    }

    /// Makes room: windows that are over go first, else the address whose
    /// latest failure is oldest.
    fn evict(&mut self, now: Instant) {
        let window = self.window;
        self.entries.retain(|_, e| now < e.since + window);
        if self.entries.len() >= self.cap {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(ip, _)| *ip)
            {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_a_minute_then_blocked_until_the_minute_is_over() {
        let mut l = FailureLimiter::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(l.blocked(ip, t0), None, "failure {i}");
            l.fail(ip, t0 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(ip, t0 + Duration::from_secs(10)), Some(50));
        assert_eq!(l.blocked(ip, t0 + Duration::from_millis(59_500)), Some(1));
        assert_eq!(
            l.blocked("203.0.113.8".parse().unwrap(), t0),
            None,
            "other addresses are not affected"
        );
        assert_eq!(l.blocked(ip, t0 + Duration::from_secs(60)), None);
        // A fresh window.
        l.fail(ip, t0 + Duration::from_secs(61));
        assert_eq!(l.blocked(ip, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut l = FailureLimiter::new(10, 2, WINDOW);
        let t = Instant::now();
        l.fail("2001:db8:1:2::1".parse().unwrap(), t);
        l.fail("2001:db8:1:2:ffff::9".parse().unwrap(), t);
        assert!(l.blocked("2001:db8:1:2::77".parse().unwrap(), t).is_some());
        assert!(l.blocked("2001:db8:1:3::1".parse().unwrap(), t).is_none());
        l.fail("::ffff:192.0.2.1".parse().unwrap(), t);
        l.fail("192.0.2.1".parse().unwrap(), t);
        assert!(l.blocked("192.0.2.1".parse().unwrap(), t).is_some());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_goes_first() {
        let mut l = FailureLimiter::new(4, 1, WINDOW);
        let t = Instant::now();
        for i in 0..4u8 {
            l.fail(
                IpAddr::from([10, 0, 0, i]),
                t + Duration::from_secs(u64::from(i)),
            );
        }
        l.fail(IpAddr::from([10, 0, 0, 9]), t + Duration::from_secs(5));
        assert_eq!(l.len(), 4);
        assert!(
            l.blocked(IpAddr::from([10, 0, 0, 0]), t).is_none(),
            "evicted"
        );
        assert!(l.blocked(IpAddr::from([10, 0, 0, 1]), t).is_some());
        // Over windows are dropped before anything live.
        for i in 0..10_000u32 {
            l.fail(IpAddr::from(i.to_be_bytes()), t + Duration::from_secs(120));
        }
        assert_eq!(l.len(), 4);
    }
}
