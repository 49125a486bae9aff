//! Counters that describe themselves, and latency histograms that live in
//! their thread and are published periodically, so recording is a plain
//! array increment and readers never touch the hot path.
//!
//! A [`Counter`] carries its Prometheus name and help text, so `/metrics`
//! and `/stats` render every counter of a thread from one list and a new
//! counter cannot be forgotten there. Names ending in `_total` are
//! counters; the rest are gauges.
//!
//! Each recording thread owns a [`LatencyRecorder`]: `record` adds to a
//! thread-local `hdrhistogram` (no allocation, no lock); about once a second
//! `maybe_publish` folds it into a shared histogram behind a mutex that only
//! `/metrics`, `/stats` and tests read.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency tracked: 60 s in nanoseconds; larger values are clamped.
const MAX_NS: u64 = 60_000_000_000;
/// How often a recorder folds its local counts into the shared histogram.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A relaxed atomic counter (or gauge) with its metric name and help.
#[derive(Debug)]
pub struct Counter {
    value: AtomicU64,
    /// The metric name without the `dhan_relay_` prefix.
    pub name: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
}

impl Counter {
    /// A zeroed counter.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            value: AtomicU64::new(0),
            name,
            help,
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Relaxed);
    }

    /// Subtracts `n` (gauges).
    pub fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Relaxed);
    }

    /// Sets the value (gauges).
    pub fn set(&self, n: u64) {
        self.value.store(n, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }

    /// `(name, help, value)` now.
    pub fn sample(&self) -> Sample {
        (self.name, self.help, self.get())
    }
}

/// A counter's name, help and value at one moment.
pub type Sample = (&'static str, &'static str, u64);

/// Appends samples in Prometheus text format: names ending in `_total` are
/// counters, the rest gauges.
pub fn render_prometheus(out: &mut String, samples: &[Sample]) {
    for (name, help, value) in samples {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP dhan_relay_{name} {help}\n# TYPE dhan_relay_{name} {kind}\ndhan_relay_{name} {value}"
        );
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits over 1 ns ..= 60 s: ~0.1 % resolution.
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// A latency histogram readable from any thread.
#[derive(Debug, Clone)]
pub struct SharedLatency(Arc<Mutex<Histogram<u64>>>);

impl Default for SharedLatency {
    fn default() -> Self {
        SharedLatency(Arc::new(Mutex::new(new_histogram())))
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest value.
    pub max_us: f64,
}

impl SharedLatency {
    /// Percentiles of everything published so far.
    pub fn percentiles(&self) -> Percentiles {
        let Ok(h) = self.0.lock() else {
            return Percentiles::default();
        };
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// A recorder that publishes into this histogram.
    pub fn recorder(&self) -> LatencyRecorder {
        LatencyRecorder {
            local: new_histogram(),
            shared: self.clone(),
            last_publish: Instant::now(),
        }
    }
}

/// The recording side, owned by one thread.
#[derive(Debug)]
pub struct LatencyRecorder {
    local: Histogram<u64>,
    shared: SharedLatency,
    last_publish: Instant,
}

impl LatencyRecorder {
    /// The shared histogram this recorder publishes into.
    pub fn shared(&self) -> &SharedLatency {
        &self.shared
    }

    /// Records one latency in nanoseconds (clamped to the tracked range).
    pub fn record(&mut self, ns: u64) {
        self.local.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Publishes if a second has passed since the last time.
    pub fn maybe_publish(&mut self, now: Instant) {
        if now.duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.publish(now);
        }
    }

    /// Folds local counts into the shared histogram now.
    pub fn publish(&mut self, now: Instant) {
        self.last_publish = now;
        if self.local.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.shared.0.lock() {
            // Same bounds on both sides, so `add` cannot fail.
            let _ = shared.add(&self.local);
        }
        self.local.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_their_kind() {
        let total = Counter::new("things_total", "Things seen");
        let level = Counter::new("things", "Things now");
        total.add(3);
        total.inc();
        level.set(7);
        level.sub(2);
        let mut out = String::new();
        render_prometheus(&mut out, &[total.sample(), level.sample()]);
        assert_eq!(
            out,
            "# HELP dhan_relay_things_total Things seen\n# TYPE dhan_relay_things_total counter\ndhan_relay_things_total 4\n\
             # HELP dhan_relay_things Things now\n# TYPE dhan_relay_things gauge\ndhan_relay_things 5\n"
        );
    }

    #[test]
    fn records_publish_and_report_microseconds() {
        let shared = SharedLatency::default();
        let mut r = shared.recorder();
        for ns in [1_000u64, 2_000, 3_000, 1_000_000] {
            r.record(ns);
        }
        assert_eq!(shared.percentiles().count, 0, "nothing until published");
        r.publish(Instant::now());
        let p = shared.percentiles();
        assert_eq!(p.count, 4);
        assert!((p.p50_us - 2.0).abs() < 0.01, "{p:?}");
        assert!((p.max_us - 1000.0).abs() < 1.0, "{p:?}");
        r.record(u64::MAX);
        r.publish(Instant::now());
        assert!(
            shared.percentiles().max_us >= 59_000_000.0,
            "clamped, not lost"
        );
    }
}
