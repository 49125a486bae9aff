//! Recorder benchmarks (issue 16): what recording costs the network thread,
//! and whether the recorder thread keeps up at 1 M packets/s.
//!
//! * `offer/*` (criterion): [`RecordTap::offer`] per frame, for a frame of
//!   10 quote packets (500 B) and a single ticker packet (16 B), with the
//!   recorder thread draining to a temp dir. Lost frames are printed after
//!   each bench (a lost offer is cheaper; the number says how many were).
//! * `crc/*` (criterion): `crc32fast` over the same payloads: what computing
//!   the CRC on the network thread would add to `offer` (it is done on the
//!   recorder thread instead).
//! * `sustained` (printed, not criterion; runs under `cargo bench` only):
//!   (a) unpaced: the producer offers as fast as it can for 2 s; frames
//!   written and lost, packets/s written; (b) paced at 1 M packets/s for
//!   3 s, single-ticker frames (one packet per WebSocket message, the worst
//!   case) and 10-quote frames: must lose nothing. File bytes per million
//!   packets, raw and zstd level 3.
//!
//! Run: `cargo bench --bench record` (or `-- offer` for one group).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use dhan_relay::clock;
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::record::files;
use dhan_relay::record::{FeedKind, RecordConfig, Recorder};
use dhan_relay::wire::feed::{FeedData, FeedMessage, Quote, Ticker};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dhan-record-bench-{name}-{}-{}",
        std::process::id(),
        clock::now_ns()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quote_frame(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        FeedMessage::Data(
            InstrumentKey::new(Segment::ALL[1], 1000 + i),
            FeedData::Quote(Quote {
                ltp: 100.0 + i as f32,
                ltq: 5,
                ltt: 1_741_578_300 + i,
                ..Quote::default()
            }),
        )
        .encode(&mut out);
    }
    out
}

fn ticker_frame() -> Vec<u8> {
    let mut out = Vec::new();
    FeedMessage::Data(
        InstrumentKey::new(Segment::ALL[1], 1333),
        FeedData::Ticker(Ticker {
            ltp: 1500.25,
            ltt: 1_741_578_300,
        }),
    )
    .encode(&mut out);
    out
}

fn offer(c: &mut Criterion) {
    let mut g = c.benchmark_group("offer");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, frame) in [
        ("quote10_500B", quote_frame(10)),
        ("ticker_16B", ticker_frame()),
    ] {
        let dir = tempdir("offer");
        let (rec, mut tap) = Recorder::spawn(RecordConfig::new(&dir)).unwrap();
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| tap.offer(0, FeedKind::Main, clock::now_ns(), black_box(&frame)))
        });
        let stats = rec.stats();
        rec.shutdown();
        eprintln!(
            "offer/{name}: {} frames written, {} lost",
            stats.frames(),
            stats.lost()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for (name, frame) in [
        ("quote10_500B", quote_frame(10)),
        ("ticker_16B", ticker_frame()),
    ] {
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| b.iter(|| crc32fast::hash(black_box(&frame))));
    }
    g.finish();
}

/// One sustained run: offers `frame` (`packets` packets each) for `secs`,
/// paced to `rate` packets/s (unpaced when `None`); prints the outcome.
fn sustained_run(label: &str, frame: &[u8], packets: u64, rate: Option<u64>, secs: u64) {
    let dir = tempdir("sustained");
    let (rec, mut tap) = Recorder::spawn(RecordConfig::new(&dir)).unwrap();
    let stats = rec.stats();
    let path = stats.file().unwrap();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut offered = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(rate) = rate {
            // Frames due by now at `rate` packets/s, offered in a burst.
            let due = (now - start).as_nanos() as u64 * rate / packets / 1_000_000_000;
            if offered >= due {
                std::hint::spin_loop();
                continue;
            }
            while offered < due {
                tap.offer(0, FeedKind::Main, clock::now_ns(), frame);
                offered += 1;
            }
        } else {
            for _ in 0..64 {
                tap.offer(0, FeedKind::Main, clock::now_ns(), frame);
            }
            offered += 64;
        }
    }
    let offering = start.elapsed();
    rec.shutdown();
    let done = start.elapsed();
    let written = stats.frames();
    let pk = written * packets;
    let size = std::fs::metadata(&path).unwrap().len();
    let zst = files::compress(&path, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    let zsize = std::fs::metadata(&zst).unwrap().len();
    eprintln!(
        "sustained/{label}: offered {offered} frames in {:.2} s, written {written} \
         ({:.2} M packets/s to disk incl. drain, {:.2} s), lost {}; \
         file {:.1} MB raw, {:.1} MB zstd-3 per million packets",
        offering.as_secs_f64(),
        pk as f64 / done.as_secs_f64() / 1e6,
        done.as_secs_f64(),
        stats.lost(),
        size as f64 / pk.max(1) as f64,
        zsize as f64 / pk.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn sustained() {
    let ticker = ticker_frame();
    let quotes = quote_frame(10);
    sustained_run("unpaced/ticker_16B", &ticker, 1, None, 2);
    sustained_run("unpaced/quote10_500B", &quotes, 10, None, 2);
    sustained_run("1M_per_s/ticker_16B", &ticker, 1, Some(1_000_000), 3);
    sustained_run("1M_per_s/quote10_500B", &quotes, 10, Some(1_000_000), 3);
}

criterion_group!(benches, offer, crc);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filtered = args.iter().skip(1).any(|a| !a.starts_with('-'));
    if args.iter().any(|a| a == "--bench") && (!filtered || args.iter().any(|a| a == "sustained")) {
        sustained();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
