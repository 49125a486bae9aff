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
//! The walk moves each trade by -3..=3 steps, a step being one tick per
//! ₹500 of price ([`walk_step`]): ₹0.05 for a ₹1,450 stock, ₹2.55 for
//! NIFTY near 25,800 — so an index moves tens of points a minute at the
//! demo's rate (its option chain visibly re-centres), and never strays more
//! than 10 % from the previous close.
//!
//! Indices (segment `IDX_I`) are computed, not traded, and DhanHQ sends
//! them so: their quotes carry no LTQ, volume, buy/sell quantities, book or
//! open interest — all zero.
//!
//! Options ([`SimOption`], built from the master) are not walked: each
//! trade prices them with [`crate::chain::greeks::price`] (Black–Scholes
//! on the underlying's spot, Black-76 on a future's price) at the
//! underlying's current simulated price, the time left to expiry at the
//! trade time and a smiled volatility ([`SimOption::vol`]), times a small
//! seeded noise (±0.5 %), rounded to the option's tick and never below
//! one tick. Their previous close is the model price at the underlying's
//! previous close when the simulator started; their open interest starts
//! largest near the money. A cheap option's 5- and 20-level bid rows below
//! one tick are empty (price, quantity and orders zero), as on the
//! exchange.
//!
//! Invariants every packet built here keeps (the tests below check them):
//! LTQ > 0 except for indices; volume and open interest never decrease;
//! `low <= open, ltp <= high`; for a traded instrument the 5-level (and
//! 20-level) book has its best bid at or one tick below the LTP and its best
//! ask one tick above the best bid, bids descending and asks ascending by
//! one tick, every price positive (a non-empty row's, for options).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ticks per walk step at a price of `ltp` ticks: one per ₹500 (10,000
/// ticks), at least one.
fn walk_step(ltp: u32) -> u32 {
    (ltp / 10_000).max(1)
}

use super::SimOption;
use crate::domain::{InstrumentKey, Segment};
use crate::wire::depth::{DepthBook, DepthRow, Side, ROWS};
use crate::wire::feed::{DepthLevel, Full, Oi, PrevClose, Quote, Ticker};

/// The price step, in rupees.
pub(crate) const TICK: f64 = 0.05;
/// Prices never fall below this many ticks (₹1.05), so a 20-level bid side
/// (best bid at most one tick under the LTP, then 19 more) stays positive.
/// Cheaper references (far out-of-the-money options) start here.
const MIN_TICKS: u32 = 21;
/// An option's price noise around its model price, as a fraction.
pub(crate) const OPTION_NOISE: f64 = 0.005;

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
    /// How an option is priced; `None`: a random walk.
    option: Option<SimOption>,
    /// The price step in ticks of [`TICK`] (1 but for options with a
    /// coarser tick).
    step_ticks: u32,
    /// The lowest price, in ticks.
    min_ticks: u32,
}

impl Instrument {
    /// The instrument's state before its first trade of the day: the
    /// previous close within about ±0.5 % of `reference` (rupees) when
    /// given, else at a seeded level plausible for the segment.
    pub(crate) fn new(seed: u64, key: InstrumentKey, reference: Option<f64>) -> Self {
        Self::build(seed, key, reference, MIN_TICKS)
    }

    /// An option priced by `spec`: its previous close the model price at
    /// `underlying` (rupees) at time `at`, its open interest largest near
    /// the money.
    pub(crate) fn new_option(
        seed: u64,
        key: InstrumentKey,
        spec: SimOption,
        underlying: f64,
        at: SystemTime,
    ) -> Self {
        let step_ticks = ((spec.tick / TICK).round().clamp(1.0, 1e6)) as u32;
        let level = spec.model_price(underlying, at);
        let mut inst = Self::build(seed, key, Some(level), step_ticks);
        inst.option = Some(spec);
        inst.step_ticks = step_ticks;
        inst.min_ticks = step_ticks;
        // Snap the opening levels to the option's tick.
        for t in [&mut inst.prev_close, &mut inst.open] {
            *t = (*t / step_ticks).max(1) * step_ticks;
        }
        (inst.high, inst.low, inst.ltp, inst.best_bid) =
            (inst.open, inst.open, inst.open, inst.open);
        if has_oi(key.segment) {
            let moneyness = (spec.strike / underlying).ln();
            let near = if moneyness.is_finite() {
                (-(moneyness / 0.05).powi(2)).exp()
            } else {
                0.0
            };
            let spread = 0.8 + f64::from(inst.rng.below(400)) / 1000.0;
            let oi = ((5_000.0 + 2_000_000.0 * near) * spread) as u32;
            (inst.prev_oi, inst.oi, inst.oi_low, inst.oi_high) = (oi, oi, oi, oi);
        }
        inst.redraw_book();
        inst
    }

    fn build(seed: u64, key: InstrumentKey, reference: Option<f64>, min_ticks: u32) -> Self {
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
        .max(min_ticks);
        // Open within about ±1 % of the previous close.
        let gap = rng.below(prev_close / 50 + 1);
        let open = (prev_close + gap)
            .saturating_sub(prev_close / 100)
            .max(min_ticks);
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
            option: None,
            step_ticks: 1,
            min_ticks,
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
        self.step_with(now, None);
    }

    /// One trade at time `now`; an option with its underlying's current
    /// price (`underlying`, rupees) is priced by its model (module doc),
    /// anything else walks as in [`Instrument::step`].
    pub(crate) fn step_with(&mut self, now: u32, underlying: Option<f64>) {
        let r = self.rng.next_u64();
        self.ltp = match (self.option, underlying) {
            (Some(spec), Some(u)) => self.option_ticks(&spec, u, now, r),
            _ => self.walk(r),
        };
        self.trade(now, r);
    }

    /// The option's price in ticks at underlying `u`: the model price with
    /// ±0.5 % noise drawn from `r`, on the option's tick, at least one tick.
    fn option_ticks(&self, spec: &SimOption, u: f64, now: u32, r: u64) -> u32 {
        let at = UNIX_EPOCH + Duration::from_secs(u64::from(now));
        let noise = ((r >> 32) % 2_001) as f64 / 1_000.0 - 1.0;
        let rupees = spec.model_price(u, at) * (1.0 + OPTION_NOISE * noise);
        let step = f64::from(self.step_ticks) * TICK;
        let steps = (rupees / step).round();
        let steps = if steps.is_finite() {
            steps.clamp(1.0, f64::from(u32::MAX / 4 / self.step_ticks))
        } else {
            1.0
        };
        (steps as u32 * self.step_ticks).max(self.min_ticks)
    }

    /// The random walk's next price in ticks (module doc).
    fn walk(&self, r: u64) -> u32 {
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
        delta *= i64::from(walk_step(self.ltp));
        let anchor = i64::from(self.prev_close);
        if (ltp > anchor + anchor / 10 && delta > 0) || (ltp < anchor - anchor / 10 && delta < 0) {
            delta = -delta;
        }
        u32::try_from((ltp + delta).max(i64::from(self.min_ticks))).unwrap_or(u32::MAX)
    }

    /// Everything a trade at the new `self.ltp` moves besides the price.
    fn trade(&mut self, now: u32, r: u64) {
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
        self.best_bid = (self.ltp - ((r >> 20) & 1) as u32).max(1);
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
            let bid_orders = 1 + (self.rng.below(bid_qty.min(40))) as u16;
            let ask_orders = 1 + (self.rng.below(ask_qty.min(40))) as u16;
            // No bids at or below zero: the row stays empty.
            let (bid_qty, bid_orders, bid_price) = match self.best_bid.checked_sub(i) {
                Some(t) if t > 0 => (bid_qty, bid_orders, price(t)),
                _ => (0, 0, 0.0),
            };
            *level = DepthLevel {
                bid_qty,
                ask_qty,
                bid_orders,
                ask_orders,
                bid_price,
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
            if let Some(t) = self.best_bid.checked_sub(i).filter(|t| *t > 0) {
                *bid = DepthRow {
                    price: f64::from(t) * TICK,
                    quantity: bq,
                    orders: bo,
                };
            }
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

    use crate::chain::greeks::{Model, Right};
    use crate::instrument::Date;

    const NIFTY: InstrumentKey = InstrumentKey::new(Segment::IdxI, 13);
    /// 2026-11-30 06:23 India time.
    const START: u32 = 1_796_000_000;

    fn nifty_option(right: Right, strike: f64, expiry: Date) -> SimOption {
        SimOption {
            underlying: NIFTY,
            model: Model::BlackScholes,
            right,
            strike,
            expiry,
            close_minutes_ist: 15 * 60 + 30,
            tick: 0.05,
            base_vol: 0.14,
        }
    }

    fn at(now: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(now))
    }

    fn rupees(p: f32) -> f64 {
        (f64::from(p) * 100.0).round() / 100.0
    }

    /// Steps the underlying and every option in turn for `steps` trades,
    /// calling `check(now, underlying, options)` after each round.
    fn run(
        seed: u64,
        specs: &[SimOption],
        steps: u32,
        mut check: impl FnMut(u32, f64, &[Instrument]),
    ) {
        let mut under = Instrument::new(seed, NIFTY, Some(25_800.0));
        let u0 = f64::from(under.prev_close().prev_close);
        let mut opts: Vec<Instrument> = specs
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let key = InstrumentKey::new(Segment::NseFno, 60_000 + n as u32);
                Instrument::new_option(seed, key, *s, u0, at(START))
            })
            .collect();
        for step in 0..steps {
            let now = START + step * 7;
            under.step(now);
            let u = rupees(under.ticker().ltp);
            for o in &mut opts {
                o.step_with(now, Some(u));
            }
            check(now, u, &opts);
        }
    }

    #[test]
    fn options_trade_near_their_model_price_at_the_simulated_underlying() {
        let expiry = Date::from_ymd(2026, 12, 29).unwrap();
        let specs: Vec<SimOption> = [24_000.0, 25_000.0, 25_800.0, 26_500.0, 27_500.0]
            .into_iter()
            .flat_map(|k| [Right::Call, Right::Put].map(|r| nifty_option(r, k, expiry)))
            .collect();
        let mut worst = 0.0f64;
        run(5, &specs, 3_000, |now, u, opts| {
            for (spec, o) in specs.iter().zip(opts) {
                let model = spec.model_price(u, at(now));
                let ltp = rupees(o.ticker().ltp);
                let off = (ltp - model).abs();
                assert!(
                    off <= 0.02 * model + TICK,
                    "{spec:?} at {u}: {ltp} vs {model}"
                );
                worst = worst.max(off / model.max(TICK));
                // On the tick, never below it.
                assert!(ltp >= TICK);
                assert!(((ltp / TICK).round() * TICK - ltp).abs() < 1e-6);
            }
        });
        assert!(worst > 0.0 && worst <= 0.02, "{worst}");
    }

    #[test]
    fn put_call_parity_roughly_holds() {
        let expiry = Date::from_ymd(2026, 12, 29).unwrap();
        for strike in [25_000.0, 25_800.0, 26_500.0] {
            let pair = [
                nifty_option(Right::Call, strike, expiry),
                nifty_option(Right::Put, strike, expiry),
            ];
            run(11, &pair, 1_000, |now, u, opts| {
                let years = crate::chain::greeks::years_to_expiry(at(now), expiry, 930);
                let c = rupees(opts[0].ticker().ltp);
                let p = rupees(opts[1].ticker().ltp);
                let parity = u - strike * (-super::super::SIM_RATE * years).exp();
                // Each side is within 0.5 % (and a tick) of its model price.
                let slack = 0.006 * (c + p) + 2.0 * TICK;
                assert!(
                    (c - p - parity).abs() <= slack,
                    "{strike}: C {c} P {p} S {u}"
                );
            });
        }
    }

    #[test]
    fn cheap_and_expired_options_stay_on_the_tick_with_a_sane_book() {
        let soon = Date::from_ymd(2026, 12, 1).unwrap();
        let gone = Date::from_ymd(2026, 11, 17).unwrap();
        let specs = [
            nifty_option(Right::Call, 30_000.0, soon),
            nifty_option(Right::Put, 20_000.0, soon),
            nifty_option(Right::Call, 27_000.0, gone),
            nifty_option(Right::Put, 25_000.0, gone),
            nifty_option(Right::Call, 25_000.0, gone),
        ];
        let mut last: Vec<(u32, u32)> = vec![(0, 0); specs.len()];
        run(3, &specs, 2_000, |_, u, opts| {
            for (n, o) in opts.iter().enumerate() {
                let f = o.full();
                let q = f.quote;
                assert!(q.ltp >= TICK as f32 * 0.999, "{}", q.ltp);
                assert!(q.low <= q.ltp && q.ltp <= q.high);
                assert!(q.volume >= last[n].0 && f.oi >= last[n].1 && f.oi > 0);
                last[n] = (q.volume, f.oi);
                let ltp = ticks(q.ltp);
                let bid0 = ticks(f.depth[0].bid_price);
                assert!(bid0 >= 1 && (bid0 == ltp || bid0 == ltp - 1));
                for (i, l) in f.depth.iter().enumerate() {
                    assert_eq!(ticks(l.ask_price), bid0 + 1 + i as i64);
                    if ticks(l.bid_price) > 0 {
                        assert_eq!(ticks(l.bid_price), bid0 - i as i64);
                        assert!(l.bid_qty > 0 && l.bid_orders > 0);
                    } else {
                        assert_eq!((l.bid_qty, l.bid_orders), (0, 0));
                    }
                }
            }
            // Expired: the intrinsic value (±0.5 %).
            let call = rupees(opts[4].ticker().ltp);
            assert!((call - (u - 25_000.0).max(0.0)).abs() <= 0.006 * call + TICK);
        });
        // The far ones sit at one tick.
        let mut o = Instrument::new_option(
            3,
            InstrumentKey::new(Segment::NseFno, 1),
            specs[0],
            25_800.0,
            at(START),
        );
        o.step_with(START, Some(25_800.0));
        assert_eq!(ticks(o.ticker().ltp), 1);
        let mut o = o.clone();
        let [bid, ask] = o.depth20();
        assert_eq!(bid.rows[0].price, TICK);
        assert!(bid.rows[1..].iter().all(|r| *r == DepthRow::default()));
        assert!(ask.rows.iter().all(|r| r.price > 0.0 && r.quantity > 0));
    }

    #[test]
    fn option_oi_is_largest_near_the_money() {
        let expiry = Date::from_ymd(2026, 12, 29).unwrap();
        let oi = |strike| -> u64 {
            (0..20)
                .map(|seed| {
                    let spec = nifty_option(Right::Call, strike, expiry);
                    let key = InstrumentKey::new(Segment::NseFno, 7);
                    let i = Instrument::new_option(seed, key, spec, 25_800.0, at(START));
                    assert!(i.prev_close().prev_oi > 0);
                    u64::from(i.prev_close().prev_oi)
                })
                .sum()
        };
        let (atm, near, far) = (oi(25_800.0), oi(26_500.0), oi(30_000.0));
        assert!(atm > near && near > far, "{atm} {near} {far}");
        // The opening price is the model's at the underlying's level.
        let spec = nifty_option(Right::Put, 25_800.0, expiry);
        let i = Instrument::new_option(
            1,
            InstrumentKey::new(Segment::NseFno, 8),
            spec,
            25_800.0,
            at(START),
        );
        let model = spec.model_price(25_800.0, at(START));
        let pc = f64::from(i.prev_close().prev_close);
        assert!(
            (pc - model).abs() <= 0.006 * model + TICK,
            "{pc} vs {model}"
        );
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
