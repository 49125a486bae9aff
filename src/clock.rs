//! The relay's monotonic clock: nanoseconds since the process started.
//!
//! The network thread stamps each frame once with [`now_ns`]; everything
//! downstream takes that stamp as data (latency = later stamp − receive
//! stamp), so replay and tests stay deterministic. `Instant::now` reads the
//! vDSO clock, not a system call.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Monotonic nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_monotonic() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(b >= a);
    }
}
