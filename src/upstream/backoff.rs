//! Reconnect delays: capped exponential backoff with jitter, and a long fixed
//! wait after an authentication failure.
//!
//! Jitter keeps several relays (or several connections of one relay) from
//! reconnecting in lock-step after a DhanHQ outage. After 807/808/809 a quick
//! retry can only fail again and may get the account throttled, so the wait
//! is long until a person fixes the credentials.

use std::time::Duration;

/// Backoff settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First retry delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Delay after an authentication failure (807, 808, 809).
    pub auth_failure: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            auth_failure: Duration::from_secs(60),
        }
    }
}

/// The state of one connection's backoff.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff; `seed` varies the jitter between connections.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt after an ordinary failure: the
    /// exponential step with ±20 % jitter, never above `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .config
            .initial
            .saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let base = step.min(self.config.max);
        // 0.8 ..= 1.2 of base, capped.
        let jitter = 0.8 + 0.4 * self.unit();
        base.mul_f64(jitter).min(self.config.max)
    }

    /// The delay after an authentication failure.
    pub fn auth_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.config.auth_failure
    }

    /// A connection stayed up and delivered data: start over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// xorshift64*, mapped to [0, 1).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_bounded_jitter() {
        let config = BackoffConfig::default();
        let mut b = Backoff::new(config, 42);
        let delays: Vec<_> = (0..12).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let nominal = config.initial.saturating_mul(1 << i).min(config.max);
            assert!(*d >= nominal.mul_f64(0.8), "{i}: {d:?} < 0.8 × {nominal:?}");
            assert!(*d <= nominal.mul_f64(1.2).min(config.max), "{i}: {d:?}");
        }
        assert!(delays[11] >= config.max.mul_f64(0.8));
        b.reset();
        assert!(b.next_delay() <= config.initial.mul_f64(1.2));
    }

    #[test]
    fn jitter_differs_between_seeds() {
        let mut a = Backoff::new(BackoffConfig::default(), 1);
        let mut b = Backoff::new(BackoffConfig::default(), 2);
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let db: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
    }

    #[test]
    fn auth_failures_wait_long() {
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        assert_eq!(b.auth_delay(), Duration::from_secs(60));
    }
}
