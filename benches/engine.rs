//! Engine hot-path benchmarks: the book apply and the fanout encode, on
//! realistic ticks.
//!
//! What is measured, and why:
//!
//! * `book_apply/{ticker,mix}`: [`Book::apply`] over 500 instruments already
//!   in the book (the steady state: the `HashMap` lookup and the table
//!   update, no first-seen insertions), reported per tick. `ticker` is
//!   ticker packets only (what a ticker-mode feed sends); `mix` is about 70 %
//!   ticker, 20 % quote, 10 % full with a few OI and previous-close packets,
//!   like `benches/decode.rs`. The returned [`Update`] (the instrument's
//!   whole state, ~300 bytes) goes to `black_box`, as the book thread pushes
//!   it into its ring.
//! * `fanout_render/{ticker,quote,full}`: [`Renderer::update`], the JSON the
//!   fanout thread writes once per update and message type, per update.
//! * `fanout_subscribers/N` for N = 1, 10, 100, 1,000: one update rendered
//!   once, then for each of N subscribers what the fanout thread does per
//!   client: queue the rendered `Bytes` (a reference count plus a frame
//!   header) on that client's [`Outbound`] queue and hand it to one
//!   vectored write. The sockets are in-memory sinks, so the kernel `send`
//!   the relay makes per dirty client and loop turn is **not** included.
//!   Reported per subscriber (`Throughput::Elements(N)`): as N grows the
//!   per-subscriber cost falls to the refcount + header, which is the
//!   "encode once, N subscribers cost N × tiny" figure; N = 1 shows render
//!   + one client.
//!
//! * `subscribe_1000/book_N`: what subscribing to 1,000 known instruments
//!   costs the fanout thread (topic refcount and capacity, snapshot look-up,
//!   snapshot message) against a book of N = 1,000 and 25,000 instruments.
//!   The two must match: the cost is O(instruments asked), not O(book).
//!
//! Inputs come from a fixed-seed PRNG so runs compare. The bench profile has
//! `lto = true, codegen-units = 1`. Timings are short (about a minute in
//! all) for small, noisy machines.
//!
//! ```text
//! cargo bench --bench engine
//! cargo bench --bench engine -- fanout_subscribers   # one group
//! ```

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dhan_relay::book::{Book, Update};
use dhan_relay::domain::{InstrumentKey, Mode, Segment};
use dhan_relay::fanout::outbound::Outbound;
use dhan_relay::fanout::render::Renderer;
use dhan_relay::fanout::topics::Topics;
use dhan_relay::tick::Tick;
use dhan_relay::wire::feed::{DepthLevel, FeedData, Full, Oi, PrevClose, Quote, Ticker};

/// Instruments in the book.
const INSTRUMENTS: u32 = 500;
/// Ticks replayed per iteration of the book benches.
const TICKS: usize = 4096;
const LTT: u32 = 1_770_109_795;

/// xorshift64*: deterministic inputs without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// A price on the 0.05 grid in `lo..hi`.
    fn price(&mut self, lo: f32, hi: f32) -> f32 {
        lo + self.below(((hi - lo) / 0.05) as u32) as f32 * 0.05
    }
}

fn key(i: u32) -> InstrumentKey {
    let segment = match i % 5 {
        0 | 1 => Segment::NseEq,
        2 | 3 => Segment::NseFno,
        _ => Segment::BseEq,
    };
    InstrumentKey::new(segment, 1_000 + i * 7)
}

fn quote(ltp: f32, rng: &mut Rng) -> Quote {
    Quote {
        ltp,
        ltq: 1 + rng.below(500) as u16,
        ltt: LTT,
        avg_price: ltp - 0.35,
        volume: 1_000_000 + rng.below(9_000_000),
        total_sell_qty: 10_000 + rng.below(900_000),
        total_buy_qty: 10_000 + rng.below(900_000),
        open: ltp - 5.0,
        close: ltp - 7.5,
        high: ltp + 12.25,
        low: ltp - 9.1,
    }
}

fn full(ltp: f32, rng: &mut Rng) -> Full {
    Full {
        quote: quote(ltp, rng),
        oi: 4_000_000 + rng.below(1_000_000),
        oi_day_high: 5_100_000,
        oi_day_low: 3_900_000,
        depth: std::array::from_fn(|i| DepthLevel {
            bid_qty: 25 * (1 + rng.below(400)),
            ask_qty: 25 * (1 + rng.below(400)),
            bid_orders: 1 + rng.below(60) as u16,
            ask_orders: 1 + rng.below(60) as u16,
            bid_price: ltp - 0.05 * (i as f32 + 1.0),
            ask_price: ltp + 0.05 * (i as f32 + 1.0),
        }),
    }
}

/// `TICKS` ticks over `INSTRUMENTS` instruments; `mix` adds quote, full, OI
/// and previous-close packets to the tickers.
fn ticks(mix: bool) -> Vec<Tick> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..TICKS)
        .map(|n| {
            let ltp = rng.price(10.0, 30_000.0);
            let data = match if mix { rng.below(100) } else { 0 } {
                0..=67 => FeedData::Ticker(Ticker { ltp, ltt: LTT }),
                68..=87 => FeedData::Quote(quote(ltp, &mut rng)),
                88..=97 => FeedData::Full(full(ltp, &mut rng)),
                98 => FeedData::Oi(Oi {
                    oi: rng.below(10_000_000),
                }),
                _ => FeedData::PrevClose(PrevClose {
                    prev_close: ltp,
                    prev_oi: rng.below(10_000_000),
                }),
            };
            Tick {
                key: key(rng.below(INSTRUMENTS)),
                data,
                recv_ns: n as u64,
            }
        })
        .collect()
}

/// A book that has seen every instrument once (quote and full included, so
/// every mode renders in full).
fn warm_book() -> Book {
    let mut rng = Rng(7);
    let mut book = Book::new();
    for i in 0..INSTRUMENTS {
        let ltp = rng.price(10.0, 30_000.0);
        book.apply(&Tick {
            key: key(i),
            data: FeedData::Full(full(ltp, &mut rng)),
            recv_ns: 0,
        });
        book.apply(&Tick {
            key: key(i),
            data: FeedData::PrevClose(PrevClose {
                prev_close: ltp - 7.5,
                prev_oi: 1,
            }),
            recv_ns: 0,
        });
    }
    book
}

fn book_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("book_apply");
    g.warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TICKS as u64));
    for (name, mix) in [("ticker", false), ("mix", true)] {
        let ticks = ticks(mix);
        let mut book = warm_book();
        g.bench_function(name, |b| {
            b.iter(|| {
                for t in &ticks {
                    black_box(book.apply(black_box(t)));
                }
            })
        });
    }
    g.finish();
}

/// One update of each kind for instrument 0, as the book produces it.
fn updates() -> [(&'static str, Update, Mode); 3] {
    let mut book = warm_book();
    let mut rng = Rng(11);
    let mut apply = |data| {
        book.apply(&Tick {
            key: key(0),
            data,
            recv_ns: 1,
        })
        .expect("visible update")
    };
    let ticker = apply(FeedData::Ticker(Ticker {
        ltp: 2_501.35,
        ltt: LTT,
    }));
    let quote = apply(FeedData::Quote(quote(2_501.4, &mut rng)));
    let full = apply(FeedData::Full(full(2_501.45, &mut rng)));
    [
        ("ticker", ticker, Mode::Ticker),
        ("quote", quote, Mode::Quote),
        ("full", full, Mode::Full),
    ]
}

fn fanout_render(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_render");
    g.warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    let mut renderer = Renderer::new();
    for (name, update, mode) in updates() {
        let bytes = renderer.update(&update, mode, None).map_or(0, |m| m.len());
        g.bench_function(BenchmarkId::new(name, format!("{bytes}B")), |b| {
            b.iter(|| black_box(renderer.update(black_box(&update), mode, None)))
        });
    }
    g.finish();
}

/// An in-memory socket: takes every byte written.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.wrapping_add(buf.len() as u64);
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.0 = self.0.wrapping_add(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fanout_subscribers(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_subscribers");
    g.warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4));
    let [(_, update, _), ..] = updates();
    let mut renderer = Renderer::new();
    for n in [1usize, 10, 100, 1000] {
        let mut sockets: Vec<(Outbound, Sink)> = (0..n)
            .map(|_| (Outbound::with_capacity(64), Sink(0)))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let msg = renderer
                    .update(black_box(&update), Mode::Ticker, None)
                    .expect("rendered");
                for (queue, sink) in &mut sockets {
                    queue.push_text(&msg);
                    queue.write_to(sink).expect("sink takes everything");
                }
            })
        });
        black_box(sockets.iter().map(|(_, sink)| sink.0).sum::<u64>());
    }
    g.finish();
}

/// What subscribing costs per instrument on the fanout thread: the topic
/// (refcount and capacity), the snapshot look-up and the snapshot message,
/// for 1,000 known instruments against books of 1,000 and 25,000. Flat
/// across book sizes means O(instruments asked), not O(book).
fn subscribe_1000(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscribe_1000");
    g.warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1_000));
    let mut renderer = Renderer::new();
    for size in [1_000u32, 25_000] {
        let mut book = Book::new();
        for i in 0..size {
            book.apply(&Tick {
                key: key(i),
                data: FeedData::Ticker(Ticker {
                    ltp: 100.0 + i as f32 * 0.05,
                    ltt: LTT,
                }),
                recv_ns: 1,
            });
        }
        let snapshot = book.snapshot();
        // The last 1,000 instruments: the worst place for a linear scan.
        let wanted: Vec<InstrumentKey> = (size - 1_000..size).map(key).collect();
        g.bench_function(BenchmarkId::from_parameter(format!("book_{size}")), |b| {
            b.iter_batched(
                || Topics::new(Duration::from_secs(2), 25_000),
                |mut topics| {
                    for k in &wanted {
                        topics.add(1, *k, Mode::Ticker);
                        let state = snapshot.get(*k).expect("in the book");
                        black_box(renderer.state(state, Mode::Ticker, None));
                    }
                    topics
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    book_apply,
    fanout_render,
    fanout_subscribers,
    subscribe_1000
);
criterion_main!(benches);
