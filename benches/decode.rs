//! Decode benchmarks for the DhanHQ binary feeds, on real bytes.
//!
//! What is measured: the public functions the network thread calls on every
//! binary frame it reads — [`feed::decode`], the [`feed::packets`] frame walker
//! and [`depth::decode`] — on packets produced by the crate's own encoders
//! ([`FeedMessage::encode`], [`DepthMessage::encode`]), so the bytes are exactly
//! what DhanHQ sends and every packet takes the success path.
//!
//! Why: decoding sits on the one thread that drains the upstream socket; its
//! cost per packet bounds how many ticks a core can absorb in a burst before
//! the socket buffer (and then DhanHQ) backs up. Two views:
//!
//! * `feed_packet` / `depth_packet`: one packet at a time (ticker 16 B,
//!   quote 50 B, full 162 B, 20-level depth side 332 B), reported per packet
//!   (`Throughput::Elements(1)`). `decode` and `packets` (a one-packet frame
//!   through the walker) hand the whole decoded value to `black_box`, so they
//!   include writing it out in full (a `FeedPacket` is as big as its largest
//!   kind, 184 bytes today), as a consumer that stores or forwards it would;
//!   `decode_ltp` keeps only security id, LTP and LTT, as a price update
//!   does: the decode itself, once the decoder inlines into its caller.
//! * `feed_frame_64k` / `feed_frame_64k_bytes`: one 64 KiB frame filled with a
//!   realistic mix (~70 % ticker, ~20 % quote, ~10 % full, a few OI and
//!   previous-close packets; kinds, instruments and prices drawn from a
//!   fixed-seed PRNG, so runs compare and the branch predictor sees no simple
//!   pattern), walked with `packets` and every message consumed, reported as
//!   packets/s and as bytes/s.
//!
//! Inputs and outputs go through `std::hint::black_box`, so the compiler can
//! neither constant-fold the bytes nor drop the decode. The bench profile has
//! `lto = true, codegen-units = 1` (Cargo.toml), like a release build of the
//! relay. Timings are kept short (about 75 s of measuring) for small, noisy
//! machines.
//!
//! Run:
//!
//! ```text
//! cargo bench --bench decode
//! cargo bench --bench decode -- feed_packet/decode/ticker   # one bench
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::wire::depth::{self, DepthBook, DepthMessage, DepthRow, Side};
use dhan_relay::wire::feed::{
    self, DepthLevel, FeedData, FeedMessage, Full, Oi, PrevClose, Quote, Ticker,
};
use dhan_relay::wire::WireError;

/// The most a WebSocket frame may carry in the mixed-frame bench.
const FRAME_CAP: usize = 64 * 1024;

/// A small deterministic PRNG (xorshift64*), so the mixed frame is the same
/// on every run without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// A price on the 0.05 tick grid, within `lo..hi`.
    fn price(&mut self, lo: f32, hi: f32) -> f32 {
        let ticks = ((hi - lo) / 0.05) as u32;
        lo + self.below(ticks) as f32 * 0.05
    }
}

const LTT: u32 = 1_770_109_795;

fn ticker(key: InstrumentKey, ltp: f32) -> FeedMessage {
    FeedMessage::Data(key, FeedData::Ticker(Ticker { ltp, ltt: LTT }))
}

fn quote_fields(ltp: f32, rng: &mut Rng) -> Quote {
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

fn quote(key: InstrumentKey, ltp: f32, rng: &mut Rng) -> FeedMessage {
    FeedMessage::Data(key, FeedData::Quote(quote_fields(ltp, rng)))
}

fn full(key: InstrumentKey, ltp: f32, rng: &mut Rng) -> FeedMessage {
    let quote = quote_fields(ltp, rng);
    let depth = std::array::from_fn(|i| DepthLevel {
        bid_qty: 25 * (1 + rng.below(400)),
        ask_qty: 25 * (1 + rng.below(400)),
        bid_orders: 1 + rng.below(60) as u16,
        ask_orders: 1 + rng.below(60) as u16,
        bid_price: ltp - 0.05 * (i as f32 + 1.0),
        ask_price: ltp + 0.05 * (i as f32 + 1.0),
    });
    FeedMessage::Data(
        key,
        FeedData::Full(Full {
            quote,
            oi: 4_000_000 + rng.below(1_000_000),
            oi_day_high: 5_100_000,
            oi_day_low: 3_900_000,
            depth,
        }),
    )
}

/// One message as the bytes DhanHQ would send for it.
fn encoded(message: &FeedMessage) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(message.wire_len());
    message.encode(&mut bytes);
    bytes
}

/// A 20-level bid side for NSE_EQ 2885, as DhanHQ's depth feed sends it.
fn depth_side() -> Vec<u8> {
    let message = DepthMessage::Book(DepthBook {
        key: InstrumentKey::new(Segment::NseEq, 2885),
        side: Side::Bid,
        sequence: 123_456,
        rows: std::array::from_fn(|i| DepthRow {
            price: 1443.4 - 0.05 * i as f64,
            quantity: 100 + 37 * i as u32,
            orders: 1 + i as u32,
        }),
    });
    let mut bytes = Vec::with_capacity(message.wire_len());
    message.encode(&mut bytes);
    assert_eq!(bytes.len(), depth::SIDE_LEN);
    assert_eq!(depth::decode(&bytes).unwrap().message, message);
    bytes
}

/// As many whole packets of a realistic mix as fit in [`FRAME_CAP`] bytes:
/// per 100 packets about 68 tickers, 20 quotes, 10 fulls, one OI and one
/// previous close, over a few hundred instruments. Returns the frame and its
/// packet count.
fn mixed_frame() -> (Vec<u8>, u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let segments = [
        Segment::NseEq,
        Segment::NseEq,
        Segment::NseFno,
        Segment::NseFno,
        Segment::BseEq,
        Segment::IdxI,
        Segment::McxComm,
    ];
    let mut frame = Vec::with_capacity(FRAME_CAP);
    let mut count = 0u64;
    loop {
        let key = InstrumentKey::new(
            segments[rng.below(segments.len() as u32) as usize],
            1 + rng.below(60_000),
        );
        let ltp = rng.price(10.0, 30_000.0);
        let message = match rng.below(100) {
            0..=67 => ticker(key, ltp),
            68..=87 => quote(key, ltp, &mut rng),
            88..=97 => full(key, ltp, &mut rng),
            98 => FeedMessage::Data(
                key,
                FeedData::Oi(Oi {
                    oi: rng.below(10_000_000),
                }),
            ),
            _ => FeedMessage::Data(
                key,
                FeedData::PrevClose(PrevClose {
                    prev_close: ltp,
                    prev_oi: rng.below(10_000_000),
                }),
            ),
        };
        if frame.len() + message.wire_len() > FRAME_CAP {
            break;
        }
        message.encode(&mut frame);
        count += 1;
    }
    (frame, count)
}

/// What the network thread's consumer might keep from one frame: a count per
/// kind, the sum of LTPs seen, and something that depends on every key.
#[derive(Debug, Default)]
struct Tally {
    kinds: [u32; 8],
    ltp_sum: f64,
    keys: u64,
}

fn consume(frame: &[u8]) -> Tally {
    let mut t = Tally::default();
    for packet in feed::packets(frame) {
        let Ok(packet) = packet else {
            t.kinds[7] += 1;
            continue;
        };
        let FeedMessage::Data(key, data) = packet.message else {
            t.kinds[6] += 1;
            continue;
        };
        t.keys = t.keys.wrapping_add(u64::from(key.security_id.0)) ^ u64::from(key.segment.code());
        let (kind, ltp) = match data {
            FeedData::Ticker(x) => (0, x.ltp),
            FeedData::Quote(x) => (1, x.ltp),
            FeedData::Oi(_) => (2, 0.0),
            FeedData::PrevClose(_) => (3, 0.0),
            FeedData::MarketStatus => (4, 0.0),
            FeedData::Full(x) => (5, x.quote.ltp),
        };
        t.kinds[kind] += 1;
        t.ltp_sum += f64::from(ltp);
    }
    t
}

/// What a price update needs from any data packet: security id, LTP, LTT.
/// Used by the `decode_ltp` benches: only these fields leave the closure, so
/// if the decoder inlines into its caller, the rest of the decoded value need
/// never be written out.
fn ticker_fields(packet: Result<feed::FeedPacket<'_>, WireError>) -> (u32, f32, u32) {
    match packet {
        Ok(feed::FeedPacket {
            message: FeedMessage::Data(key, data),
            ..
        }) => {
            let (ltp, ltt) = match data {
                FeedData::Ticker(t) => (t.ltp, t.ltt),
                FeedData::Quote(q) => (q.ltp, q.ltt),
                FeedData::Full(f) => (f.quote.ltp, f.quote.ltt),
                _ => (0.0, 0),
            };
            (key.security_id.0, ltp, ltt)
        }
        _ => (0, f32::NAN, 0),
    }
}

fn per_packet(c: &mut Criterion) {
    let mut rng = Rng(7);
    let key = InstrumentKey::new(Segment::NseEq, 2885);
    let feed_packets = [
        ("ticker", ticker(key, 1443.4)),
        ("quote", quote(key, 1443.4, &mut rng)),
        ("full", full(key, 1443.4, &mut rng)),
    ];

    let mut group = c.benchmark_group("feed_packet");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4))
        .sample_size(100);
    for (name, message) in &feed_packets {
        let bytes = encoded(message);
        // Benchmark the success path: the bytes must decode to the message.
        assert_eq!(feed::decode(&bytes).unwrap().message, *message);
        let label = format!("{name}_{}B", bytes.len());
        group.bench_with_input(BenchmarkId::new("decode", &label), &bytes, |b, bytes| {
            b.iter(|| black_box(feed::decode(black_box(bytes.as_slice()))))
        });
        group.bench_with_input(
            BenchmarkId::new("decode_ltp", &label),
            &bytes,
            |b, bytes| b.iter(|| ticker_fields(feed::decode(black_box(bytes.as_slice())))),
        );
        group.bench_with_input(BenchmarkId::new("packets", &label), &bytes, |b, bytes| {
            b.iter(|| {
                for packet in feed::packets(black_box(bytes.as_slice())) {
                    let _ = black_box(packet);
                }
            })
        });
    }
    group.finish();

    let bytes = depth_side();
    let mut group = c.benchmark_group("depth_packet");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(4))
        .sample_size(100);
    let label = format!("side20_{}B", bytes.len());
    group.bench_with_input(BenchmarkId::new("decode", &label), &bytes, |b, bytes| {
        b.iter(|| black_box(depth::decode(black_box(bytes.as_slice()))))
    });
    group.finish();
}

fn frame_64k(c: &mut Criterion) {
    let (frame, count) = mixed_frame();
    let check = consume(&frame);
    assert_eq!(
        check.kinds[6] + check.kinds[7],
        0,
        "mixed frame must decode"
    );
    assert_eq!(u64::from(check.kinds.iter().sum::<u32>()), count);
    // Printed once so the mix behind the numbers is visible in the output.
    eprintln!(
        "mixed frame: {} bytes, {count} packets (ticker {}, quote {}, oi {}, prev_close {}, full {})",
        frame.len(),
        check.kinds[0],
        check.kinds[1],
        check.kinds[2],
        check.kinds[3],
        check.kinds[5],
    );

    for (group_name, throughput) in [
        ("feed_frame_64k", Throughput::Elements(count)),
        (
            "feed_frame_64k_bytes",
            Throughput::Bytes(frame.len() as u64),
        ),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .throughput(throughput)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(60);
        group.bench_function("packets", |b| {
            b.iter(|| black_box(consume(black_box(frame.as_slice()))))
        });
        group.finish();
    }
}

criterion_group!(benches, per_packet, frame_64k);
criterion_main!(benches);
