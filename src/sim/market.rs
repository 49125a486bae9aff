//! The simulated market: a deterministic PRNG and one price process per
//! instrument. Pure: no clock, no I/O — the trade time is passed in.
//!
//! Each instrument's state is seeded from `(seed, instrument key)` alone, so
//! two simulators with the same seed produce the same sequence of prices for
//! the same instrument, whatever else is subscribed and in whatever order
//! instruments are stepped. Prices are kept as whole ticks of
//! [`TICK`] (₹0.05) and converted to the wire's `f32`/`f64` on the way out.
//!
//! Where a day starts: near the instrument's reference level when the
//! simulator was given one (the embedded sample master carries approximate
//! late-2025 levels: NIFTY about 25,800, RELIANCE about 1,450), else at a
//! seeded level plausible for its segment. Either way the same seed and
//! instrument give the same day.
//!
//! Indices (segment `IDX_I`) are computed, not traded, and DhanHQ sends
//! them so: their quotes carry no LTQ, volume, buy/sell quantities, book or
//! open interest — all zero.
//!
//! Invariants every packet built here keeps (the tests below check them):
//! LTQ > 0 except for indices; volume and open interest never decrease;
//! `low <= open, ltp <= high`; for a traded instrument the 5-level (and
//! 20-level) book has its best bid at or one tick below the LTP and its best
//! ask one tick above the best bid, bids descending and asks ascending by
//! one tick, every price positive.

use crate::domain::{InstrumentKey, Segment};
use crate::wire::depth::{DepthBook, DepthRow, Side, ROWS};
use crate::wire::feed::{DepthLevel, Full, Oi, PrevClose, Quote, Ticker};

/// The price step, in rupees.
pub(crate) const TICK: f64 = 0.05;
/// Prices never fall below this many ticks (₹1.05), so a 20-level bid side
/// (best bid at most one tick under the LTP, then 19 more) stays positive.
/// Cheaper references (far out-of-the-money options) start here.
const MIN_TICKS: u32 = 21;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for
/// simulated prices. Not for anything secret.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`; `n` must be positive. The modulo bias is
    /// irrelevant at these sizes.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n.max(1))) as u32
    }
}

/// Whether DhanHQ carries open interest for instruments of this segment (the
/// simulator sends OI packets for these only).
pub(crate) const fn has_oi(segment: Segment) -> bool {
    matches!(
        segment,
        Segment::NseFno | Segment::BseFno | Segment::McxComm
    )
}

fn price(ticks: u32) -> f32 {
    (f64::from(ticks) * TICK) as f32
}

/// One instrument's simulated day.
#[derive(Clone, Debug)]
pub(crate) struct Instrument {
    key: InstrumentKey,
    /// Whether it trades: false for indices (no quantities, no book).
    traded: bool,
    rng: SplitMix64,
    /// Seed for the 20-level book rows beyond the five the step draws.
    depth_seed: u64,
    prev_close: u32,
    prev_oi: u32,
    open: u32,
    high: u32,
    low: u32,
    ltp: u32,
    ltq: u16,
    ltt: u32,
    volume: u32,
    turnover: f64,
    oi: u32,
    oi_low: u32,
    oi_high: u32,
    total_buy: u32,
    total_sell: u32,
    /// Best bid in ticks; the best ask is one tick above.
    best_bid: u32,
    book: [DepthLevel; 5],
    steps: u64,
    depth_sequence: u32,
}

impl Instrument {
    /// The instrument's state before its first trade of the day: the
    /// previous close within about ±0.5 % of `reference` (rupees) when
    /// given, else at a seeded level plausible for the segment.
    pub(crate) fn new(seed: u64, key: InstrumentKey, reference: Option<f64>) -> Self {
        let ident = (u64::from(key.segment.code()) << 32) | u64::from(key.security_id.0);
        let mut rng = SplitMix64::new(SplitMix64::new(seed).next_u64() ^ ident);
        // Both draws happen either way, so the rest of the stream does not
        // depend on whether there is a reference.
        let r = rng.below(u32::MAX);
        let extra_ticks = rng.below(20);
        let prev_close = match reference.filter(|p| p.is_finite() && *p > 0.0) {
            Some(level) => {
                let ticks = (level / TICK).round().min(f64::from(u32::MAX / 4)) as u32;
                (ticks + r % (ticks / 100 + 1)).saturating_sub(ticks / 200)
            }
            None => {
                // A plausible level for the kind of instrument, in rupees.
                let rupees = match key.segment {
                    Segment::IdxI => 5_000 + r % 75_000,
                    Segment::NseCurrency | Segment::BseCurrency => 20 + r % 80,
                    Segment::McxComm => 100 + r % 70_000,
                    Segment::NseFno | Segment::BseFno => 10 + r % 2_000,
                    Segment::NseEq | Segment::BseEq => 20 + r % 4_980,
                };
                rupees * 20 + extra_ticks
            }
        }
        .max(MIN_TICKS);
        // Open within about ±1 % of the previous close.
        let gap = rng.below(prev_close / 50 + 1);
        let open = (prev_close + gap)
            .saturating_sub(prev_close / 100)
            .max(MIN_TICKS);
        let prev_oi = if has_oi(key.segment) {
            10_000 + rng.below(5_000_000)
        } else {
            0
        };
        let depth_seed = rng.next_u64();
        let mut inst = Instrument {
            key,
            traded: key.segment != Segment::IdxI,
            rng,
            depth_seed,
            prev_close,
            prev_oi,
            open,
            high: open,
            low: open,
            ltp: open,
            ltq: 0,
            ltt: 0,
            volume: 0,
            turnover: 0.0,
            oi: prev_oi,
            oi_low: prev_oi,
            oi_high: prev_oi,
            total_buy: 0,
            total_sell: 0,
            best_bid: open,
            book: [DepthLevel::default(); 5],
            steps: 0,
            depth_sequence: 0,
        };
        inst.redraw_book();
        inst
    }

    /// The instrument this state belongs to.
    pub(crate) const fn key(&self) -> InstrumentKey {
        self.key
    }

    /// One trade at time `now` (epoch seconds): the price moves by a few
    /// ticks at most, pulled back towards the previous close when it strays
    /// beyond ±10 %.
    pub(crate) fn step(&mut self, now: u32) {
        let r = self.rng.next_u64();
        let mut delta: i64 = match r % 16 {
            0 => -3,
            1 | 2 => -2,
            3..=5 => -1,
            6..=9 => 0,
            10..=12 => 1,
            13 | 14 => 2,
            _ => 3,
        };
        let ltp = i64::from(self.ltp);
        let anchor = i64::from(self.prev_close);
        if (ltp > anchor + anchor / 10 && delta > 0) || (ltp < anchor - anchor / 10 && delta < 0) {
            delta = -delta;
        }
        self.ltp = u32::try_from((ltp + delta).max(i64::from(MIN_TICKS))).unwrap_or(u32::MAX);
        self.high = self.high.max(self.ltp);
        self.low = self.low.min(self.ltp);
        self.ltq = if self.traded {
            1 + (((r >> 8) % 500) as u16)
        } else {
            0
        };
        self.ltt = now;
        self.volume = self.volume.saturating_add(u32::from(self.ltq));
        self.turnover += f64::from(self.ltq) * f64::from(self.ltp) * TICK;
        if has_oi(self.key.segment) {
            self.oi = self.oi.saturating_add(self.rng.below(200));
            self.oi_high = self.oi_high.max(self.oi);
        }
        // Best bid at the LTP or one tick below; the ask one tick above it.
        self.best_bid = self.ltp - ((r >> 20) & 1) as u32;
        self.redraw_book();
        self.steps += 1;
    }

    fn redraw_book(&mut self) {
        if !self.traded {
            // An index has no order book: every level and total stays zero.
            return;
        }
        let (mut buy, mut sell) = (0u32, 0u32);
        for (i, level) in self.book.iter_mut().enumerate() {
            let i = i as u32;
            let bid_qty = 1 + self.rng.below(2_000);
            let ask_qty = 1 + self.rng.below(2_000);
            *level = DepthLevel {
                bid_qty,
                ask_qty,
                bid_orders: 1 + (self.rng.below(bid_qty.min(40))) as u16,
                ask_orders: 1 + (self.rng.below(ask_qty.min(40))) as u16,
                bid_price: price(self.best_bid - i),
                ask_price: price(self.best_bid + 1 + i),
            };
            buy += bid_qty;
            sell += ask_qty;
        }
        self.total_buy = buy + self.rng.below(100_000);
        self.total_sell = sell + self.rng.below(100_000);
    }

    /// How many trades so far.
    pub(crate) const fn steps(&self) -> u64 {
        self.steps
    }

    /// The code-6 body, sent once when an instrument is first subscribed.
    pub(crate) fn prev_close(&self) -> PrevClose {
        PrevClose {
            prev_close: price(self.prev_close),
            prev_oi: self.prev_oi,
        }
    }

    /// The code-2 body.
    pub(crate) fn ticker(&self) -> Ticker {
        Ticker {
            ltp: price(self.ltp),
            ltt: self.ltt,
        }
    }

    /// The code-4 body.
    pub(crate) fn quote(&self) -> Quote {
        let avg = if self.volume == 0 {
            price(self.ltp)
        } else {
            (self.turnover / f64::from(self.volume)) as f32
        };
        Quote {
            ltp: price(self.ltp),
            ltq: self.ltq,
            ltt: self.ltt,
            avg_price: avg,
            volume: self.volume,
            total_sell_qty: self.total_sell,
            total_buy_qty: self.total_buy,
            open: price(self.open),
            close: price(self.prev_close),
            high: price(self.high),
            low: price(self.low),
        }
    }

    /// The code-5 body.
    pub(crate) fn oi(&self) -> Oi {
        Oi { oi: self.oi }
    }

    /// The code-8 body.
    pub(crate) fn full(&self) -> Full {
        Full {
            quote: self.quote(),
            oi: self.oi,
            oi_day_high: self.oi_high,
            oi_day_low: self.oi_low,
            depth: self.book,
        }
    }

    /// Both sides of a 20-level book around the current price; each call
    /// takes the next sequence number. The first five rows match the 5-level
    /// book; the rest are drawn from a stream seeded by the sequence number.
    pub(crate) fn depth20(&mut self) -> [DepthBook; 2] {
        self.depth_sequence = self.depth_sequence.wrapping_add(1);
        let mut rng = SplitMix64::new(self.depth_seed ^ u64::from(self.depth_sequence));
        let mut bids = [DepthRow::default(); ROWS];
        let mut asks = [DepthRow::default(); ROWS];
        let rows = if self.traded { ROWS } else { 0 };
        for (i, (bid, ask)) in bids.iter_mut().zip(asks.iter_mut()).take(rows).enumerate() {
            let (bq, aq, bo, ao) = match self.book.get(i) {
                Some(l) => (
                    l.bid_qty,
                    l.ask_qty,
                    u32::from(l.bid_orders),
                    u32::from(l.ask_orders),
                ),
                None => {
                    let (bq, aq) = (1 + rng.below(5_000), 1 + rng.below(5_000));
                    (bq, aq, 1 + rng.below(bq.min(60)), 1 + rng.below(aq.min(60)))
                }
            };
            let i = i as u32;
            *bid = DepthRow {
                price: f64::from(self.best_bid - i) * TICK,
                quantity: bq,
                orders: bo,
            };
            *ask = DepthRow {
                price: f64::from(self.best_bid + 1 + i) * TICK,
                quantity: aq,
                orders: ao,
            };
        }
        let book = |side, rows| DepthBook {
            key: self.key,
            side,
            sequence: self.depth_sequence,
            rows,
        };
        [book(Side::Bid, bids), book(Side::Ask, asks)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(p: f32) -> i64 {
        (f64::from(p) / TICK).round() as i64
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn same_seed_same_prices_different_seed_different_prices() {
        let key = InstrumentKey::new(Segment::NseEq, 2885);
        let walk = |seed| {
            let mut i = Instrument::new(seed, key, None);
            (0..200)
                .map(|_| {
                    i.step(1);
                    i.ticker().ltp
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(walk(7), walk(7));
        assert_ne!(walk(7), walk(8));
        let other = InstrumentKey::new(Segment::BseEq, 2885);
        assert_ne!(
            Instrument::new(7, key, None).prev_close(),
            Instrument::new(7, other, None).prev_close()
        );
    }

    #[test]
    fn a_reference_sets_the_level_and_the_seed_the_rest() {
        let nifty = InstrumentKey::new(Segment::IdxI, 13);
        let rel = InstrumentKey::new(Segment::NseEq, 2885);
        for (key, level) in [(nifty, 25_800.0), (rel, 1_450.0), (rel, 0.05), (rel, 1e12)] {
            for seed in 0..50 {
                let i = Instrument::new(seed, key, Some(level));
                let pc = f64::from(i.prev_close().prev_close);
                let want = level.clamp(f64::from(MIN_TICKS) * TICK, f64::from(u32::MAX / 4) * TICK);
                assert!(
                    (pc - want).abs() <= want * 0.006 + TICK,
                    "{key} {level}: {pc}"
                );
                let open = f64::from(i.quote().open);
                assert!((open - pc).abs() <= pc * 0.011 + TICK, "{open} vs {pc}");
            }
        }
        // Deterministic, and seeds still differ.
        let a = Instrument::new(3, rel, Some(1_450.0)).prev_close();
        assert_eq!(a, Instrument::new(3, rel, Some(1_450.0)).prev_close());
        assert_ne!(a, Instrument::new(4, rel, Some(1_450.0)).prev_close());
        // Nonsense references are ignored.
        for bad in [f64::NAN, -1.0, 0.0, f64::INFINITY] {
            assert_eq!(
                Instrument::new(3, rel, Some(bad)).prev_close(),
                Instrument::new(3, rel, None).prev_close()
            );
        }
    }

    #[test]
    fn indices_carry_no_quantities_book_or_oi() {
        let mut i = Instrument::new(9, InstrumentKey::new(Segment::IdxI, 13), Some(25_800.0));
        for step in 0..1_000 {
            i.step(1_700_000_000 + step);
            let f = i.full();
            let q = f.quote;
            assert!(q.ltp > 0.0);
            assert_eq!(
                (q.ltq, q.volume, q.total_buy_qty, q.total_sell_qty),
                (0, 0, 0, 0)
            );
            assert_eq!((f.oi, f.oi_day_high, f.oi_day_low), (0, 0, 0));
            assert_eq!(f.depth, [DepthLevel::default(); 5]);
            assert_eq!(i.prev_close().prev_oi, 0);
        }
        let [bid, ask] = i.depth20();
        assert!(bid
            .rows
            .iter()
            .chain(&ask.rows)
            .all(|r| *r == DepthRow::default()));
    }

    #[test]
    fn invariants_hold_over_a_long_walk() {
        for (n, segment) in Segment::ALL.into_iter().enumerate() {
            if segment == Segment::IdxI {
                continue; // no book or quantities: see the test above
            }
            let mut inst = Instrument::new(42, InstrumentKey::new(segment, 13 + n as u32), None);
            let (mut volume, mut oi) = (0, inst.oi().oi);
            for step in 0..20_000u32 {
                inst.step(1_700_000_000 + step);
                let f = inst.full();
                let q = f.quote;
                assert!(q.ltq > 0);
                assert!(q.volume >= volume && f.oi >= oi);
                (volume, oi) = (q.volume, f.oi);
                assert!(q.low <= q.ltp && q.ltp <= q.high);
                assert!(q.low <= q.open && q.open <= q.high);
                assert!(q.ltp > 0.0);
                assert_eq!(q.ltt, 1_700_000_000 + step);
                assert!(f.oi_day_low <= f.oi && f.oi <= f.oi_day_high);
                if !has_oi(segment) {
                    assert_eq!(f.oi, 0);
                }
                let ltp = ticks(q.ltp);
                let bid0 = ticks(f.depth[0].bid_price);
                assert!(bid0 == ltp || bid0 == ltp - 1);
                for (i, l) in f.depth.iter().enumerate() {
                    assert_eq!(ticks(l.bid_price), bid0 - i as i64);
                    assert_eq!(ticks(l.ask_price), bid0 + 1 + i as i64);
                    assert!(l.bid_qty > 0 && l.ask_qty > 0);
                    assert!(l.bid_orders > 0 && u32::from(l.bid_orders) <= l.bid_qty);
                }
                if step % 1000 == 0 {
                    let [bid, ask] = inst.depth20();
                    assert_eq!(bid.side, Side::Bid);
                    assert_eq!(ask.side, Side::Ask);
                    assert_eq!(bid.sequence, ask.sequence);
                    for i in 0..ROWS {
                        assert_eq!((bid.rows[i].price / TICK).round() as i64, bid0 - i as i64);
                        assert_eq!(
                            (ask.rows[i].price / TICK).round() as i64,
                            bid0 + 1 + i as i64
                        );
                        assert!(bid.rows[i].price > 0.0);
                    }
                    assert_eq!(bid.rows[0].quantity, f.depth[0].bid_qty);
                }
            }
            // Mean reversion keeps the walk near the previous close.
            let pc = ticks(inst.prev_close().prev_close);
            assert!((ticks(inst.ticker().ltp) - pc).abs() <= pc / 5 + 10);
        }
    }
}
