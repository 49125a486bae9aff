//! The deterministic tick schedule, the instrument set, each client's
//! subscriptions, and the table of send times.
//!
//! Tick number `n` (0, 1, 2, … over the whole run, every instrument
//! together) goes to the instrument at position `n % M` of a seeded
//! permutation of the `M` instruments and carries that instrument's sequence
//! number `n / M + 1`. The packet says so in its data: LTP = sequence (an
//! integer `f32` is exact below 2^24, checked at start), LTT = the run's
//! nonce. So from a received `(instrument, seq)` anyone can compute `n`, and
//! `n` indexes the [`SendTable`] where the exchange wrote the packet's send
//! time. No per-packet bookkeeping is exchanged between threads.
//!
//! Timing: ticks `0..N0` are the warmup, paced at the warmup rate; ticks
//! `N0..N1` are the measured window, paced at the window rate; nothing is
//! sent after `N1`. The window of one instrument is therefore a fixed range
//! of its sequence numbers, [`Schedule::window`], known in advance to every
//! client.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use dhan_relay::domain::{InstrumentKey, Segment};

/// Security id of instrument 0; instrument `i` is `BASE_SECURITY_ID + i`.
/// High enough not to collide with the relay's default watchlist.
pub const BASE_SECURITY_ID: u32 = 1_000_001;
/// The segment every generated instrument is in.
pub const SEGMENT: Segment = Segment::NseEq;
/// Sequence numbers must stay exact as `f32` LTPs.
const MAX_SEQ: u64 = 1 << 24;
/// Most ticks one run may schedule (the send table is 8 bytes per tick).
pub const MAX_TICKS: u64 = 100_000_000;

/// A small deterministic PRNG (xorshift64*), seeded through splitmix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (e.g. a client number).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// The whole run's tick plan.
#[derive(Debug)]
pub struct Schedule {
    /// Number of instruments, `M`.
    pub instruments: u32,
    perm: Vec<u32>,
    pos: Vec<u32>,
    /// Ticks before the window, `N0`.
    pub warmup_ticks: u64,
    /// Ticks in the run, `N1`.
    pub total_ticks: u64,
    warmup_rate: f64,
    rate: f64,
    warmup_ns: u64,
    /// Written into every packet's LTT; messages carrying another value are
    /// stale (an attached engine remembering an earlier run).
    pub nonce: u32,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl Schedule {
    /// Plans `warmup` at `warmup_rate` ticks/s, then `window` at `rate`.
    pub fn new(
        instruments: u32,
        warmup_rate: u32,
        warmup: Duration,
        rate: u32,
        window: Duration,
        seed: u64,
        nonce: u32,
    ) -> Result<Schedule, String> {
        if instruments == 0 || rate == 0 || warmup_rate == 0 {
            return Err("instruments, rate and warmup rate must be at least 1".into());
        }
        let warmup_ticks = (f64::from(warmup_rate) * warmup.as_secs_f64()).floor() as u64;
        let window_ticks = (f64::from(rate) * window.as_secs_f64()).floor() as u64;
        if window_ticks == 0 {
            return Err("the window holds no tick: raise --rate or --duration".into());
        }
        let total_ticks = warmup_ticks + window_ticks;
        if total_ticks > MAX_TICKS {
            return Err(format!(
                "{total_ticks} ticks in one run is more than the {MAX_TICKS} the send table holds; shorten the run"
            ));
        }
        if total_ticks / u64::from(instruments) + 2 >= MAX_SEQ {
            return Err(
                "more than 2^24 ticks per instrument: LTP could not carry the sequence exactly"
                    .into(),
            );
        }
        if u64::from(BASE_SECURITY_ID) + u64::from(instruments) > u64::from(u32::MAX) {
            return Err("too many instruments".into());
        }
        let mut perm: Vec<u32> = (0..instruments).collect();
        let mut rng = Rng::new(seed, u64::MAX);
        for i in (1..perm.len()).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            perm.swap(i, j);
        }
        let mut pos = vec![0u32; perm.len()];
        for (p, &inst) in perm.iter().enumerate() {
            pos[inst as usize] = p as u32;
        }
        Ok(Schedule {
            instruments,
            perm,
            pos,
            warmup_ticks,
            total_ticks,
            warmup_rate: f64::from(warmup_rate),
            rate: f64::from(rate),
            warmup_ns: warmup.as_nanos() as u64,
            nonce,
        })
    }

    /// The instrument's key.
    pub fn key(inst: u32) -> InstrumentKey {
        InstrumentKey::new(SEGMENT, BASE_SECURITY_ID + inst)
    }

    /// The instrument number of a security id, if it is one of ours.
    pub fn instrument_of_id(&self, security_id: u32) -> Option<u32> {
        let i = security_id.checked_sub(BASE_SECURITY_ID)?;
        (i < self.instruments).then_some(i)
    }

    /// The instrument number of a key, if it is one of ours.
    pub fn instrument_of(&self, key: InstrumentKey) -> Option<u32> {
        if key.segment != SEGMENT {
            return None;
        }
        self.instrument_of_id(key.security_id.0)
    }

    /// Tick `n`: its instrument and sequence number.
    pub fn tick(&self, n: u64) -> (u32, u32) {
        let m = u64::from(self.instruments);
        (self.perm[(n % m) as usize], (n / m + 1) as u32)
    }

    /// The tick number of `seq` of `inst` (the inverse of [`Schedule::tick`]).
    pub fn index(&self, inst: u32, seq: u32) -> u64 {
        (u64::from(seq) - 1) * u64::from(self.instruments) + u64::from(self.pos[inst as usize])
    }

    /// The sequence numbers of `inst` sent in the window: `[start, end)`.
    pub fn window(&self, inst: u32) -> (u32, u32) {
        let m = u64::from(self.instruments);
        let p = u64::from(self.pos[inst as usize]);
        let start = ceil_div(self.warmup_ticks.saturating_sub(p), m) + 1;
        let end = ceil_div(self.total_ticks.saturating_sub(p), m) + 1;
        (start as u32, end as u32)
    }

    /// Nanoseconds after the start when tick `n` is due.
    pub fn due_ns(&self, n: u64) -> u64 {
        if n < self.warmup_ticks {
            (n as f64 * 1e9 / self.warmup_rate) as u64
        } else {
            self.warmup_ns + ((n - self.warmup_ticks) as f64 * 1e9 / self.rate) as u64
        }
    }

    /// How many ticks are due `elapsed_ns` after the start.
    pub fn due_count(&self, elapsed_ns: u64) -> u64 {
        let n = if elapsed_ns < self.warmup_ns {
            ((elapsed_ns as f64 * self.warmup_rate / 1e9).floor() as u64 + 1).min(self.warmup_ticks)
        } else {
            self.warmup_ticks
                + ((elapsed_ns - self.warmup_ns) as f64 * self.rate / 1e9).floor() as u64
                + 1
        };
        n.min(self.total_ticks)
    }

    /// When the window opens, in nanoseconds after the start.
    pub fn window_start_ns(&self) -> u64 {
        self.warmup_ns
    }

    /// When the last tick is due, in nanoseconds after the start.
    pub fn last_due_ns(&self) -> u64 {
        self.due_ns(self.total_ticks - 1)
    }

    /// Client `client`'s `k` instruments (distinct, sorted), drawn from
    /// `seed`: the same on every run with the same seed.
    pub fn subscriptions(
        &self,
        seed: u64,
        client: u32,
        k: u32,
        scratch: &mut Vec<u32>,
    ) -> Vec<u32> {
        let m = self.instruments;
        if scratch.len() != m as usize {
            *scratch = (0..m).collect();
        }
        let k = k.min(m);
        let mut rng = Rng::new(seed, u64::from(client));
        let mut swaps = Vec::with_capacity(k as usize);
        for j in 0..k {
            let r = j + rng.below(m - j);
            scratch.swap(j as usize, r as usize);
            swaps.push((j, r));
        }
        let mut picked = scratch[..k as usize].to_vec();
        // Undo, so the scratch is the identity again for the next client.
        for &(j, r) in swaps.iter().rev() {
            scratch.swap(j as usize, r as usize);
        }
        picked.sort_unstable();
        picked
    }
}

/// Send time of every tick, in [`dhan_relay::clock::now_ns`] nanoseconds
/// (0: not sent yet), indexed by tick number.
///
/// The exchange stores each packet's time just before the `write` that
/// carries it; a client loads it after its `read` returned the packet, so
/// the kernel's socket path orders the two. The values are also published
/// with a release fence per batch and read after an acquire fence per read.
#[derive(Debug)]
pub struct SendTable(Box<[AtomicU64]>);

impl SendTable {
    /// A table for `ticks` ticks.
    pub fn new(ticks: u64) -> Self {
        SendTable((0..ticks).map(|_| AtomicU64::new(0)).collect())
    }

    /// Records tick `n`'s send time.
    pub fn stamp(&self, n: u64, ns: u64) {
        if let Some(slot) = self.0.get(n as usize) {
            slot.store(ns.max(1), Relaxed);
        }
    }

    /// Tick `n`'s send time, 0 if not sent.
    pub fn get(&self, n: u64) -> u64 {
        self.0.get(n as usize).map_or(0, |s| s.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(m: u32, wr: u32, w: u64, r: u32, d: u64) -> Schedule {
        Schedule::new(
            m,
            wr,
            Duration::from_secs(w),
            r,
            Duration::from_secs(d),
            7,
            99,
        )
        .unwrap()
    }

    #[test]
    fn tick_and_index_are_inverse_and_round_robin() {
        let s = sched(7, 10, 1, 10, 2);
        let mut per_inst = [0u32; 7];
        for n in 0..s.total_ticks {
            let (inst, seq) = s.tick(n);
            assert_eq!(s.index(inst, seq), n);
            per_inst[inst as usize] += 1;
            assert_eq!(
                seq, per_inst[inst as usize],
                "sequences count up per instrument"
            );
        }
    }

    #[test]
    fn window_ranges_cover_exactly_the_window_ticks() {
        for (m, wr, w, r, d) in [
            (7, 10, 1, 10, 2),
            (3, 1, 2, 5, 1),
            (500, 1000, 3, 50_000, 1),
        ] {
            let s = sched(m, wr, w, r, d);
            let mut count = vec![0u64; m as usize];
            for n in s.warmup_ticks..s.total_ticks {
                let (inst, seq) = s.tick(n);
                let (a, b) = s.window(inst);
                assert!(a <= seq && seq < b, "tick {n} seq {seq} outside [{a},{b})");
                count[inst as usize] += 1;
            }
            for inst in 0..m {
                let (a, b) = s.window(inst);
                assert_eq!(u64::from(b - a), count[inst as usize]);
            }
        }
    }

    #[test]
    fn pacing() {
        let s = sched(10, 100, 2, 1000, 1);
        assert_eq!((s.warmup_ticks, s.total_ticks), (200, 1200));
        assert_eq!(s.due_count(0), 1);
        assert_eq!(s.due_count(1_000_000_000), 101);
        assert_eq!(s.due_count(2_000_000_000), 201);
        assert_eq!(s.due_count(2_500_000_000), 701);
        assert_eq!(s.due_count(10_000_000_000), 1200);
        for n in [0, 150, 199, 200, 700, 1199] {
            assert!(
                s.due_count(s.due_ns(n)) > n,
                "tick {n} is due at its due time"
            );
        }
        assert!(s.last_due_ns() < 3_000_000_000);
    }

    #[test]
    fn subscriptions_are_distinct_sorted_and_deterministic() {
        let s = sched(50, 10, 1, 10, 1);
        let mut scratch = Vec::new();
        let a = s.subscriptions(1, 3, 20, &mut scratch);
        let b = s.subscriptions(1, 3, 20, &mut scratch);
        assert_eq!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, s.subscriptions(1, 4, 20, &mut scratch));
        assert_ne!(a, s.subscriptions(2, 3, 20, &mut scratch));
        assert_eq!(s.subscriptions(1, 0, 80, &mut scratch).len(), 50);
    }

    #[test]
    fn limits() {
        assert!(Schedule::new(
            1,
            1,
            Duration::ZERO,
            20_000_000,
            Duration::from_secs(1),
            1,
            1
        )
        .unwrap_err()
        .contains("2^24"));
        assert!(Schedule::new(10, 1, Duration::ZERO, 1, Duration::ZERO, 1, 1).is_err());
    }
}
