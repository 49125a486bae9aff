//! What the network thread does per frame never touches the heap: a
//! counting global allocator watches the frame walker over a large mixed
//! frame, and the recorder's tap offering frames (that fit, and that a full
//! ring counts lost), and must see zero allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dhan_relay::clock;
use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::record::{FeedKind, RecordConfig, Recorder};
use dhan_relay::wire::depth::{self, DepthBook, DepthMessage, DepthRow, Side};
use dhan_relay::wire::feed::{self, FeedData, FeedMessage, Full, Oi, PrevClose, Quote, Ticker};
use dhan_relay::wire::DisconnectReason;

/// Counts allocations made by the current thread, so other test threads
/// running in parallel do not disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn mixed_frame(packets: u32) -> Vec<u8> {
    let mut frame = Vec::new();
    for i in 0..packets {
        let key = InstrumentKey::new(Segment::ALL[i as usize % 8], i);
        let data = match i % 6 {
            0 => FeedData::Ticker(Ticker {
                ltp: i as f32,
                ltt: i,
            }),
            1 => FeedData::Quote(Quote {
                ltp: 1.5,
                ..Quote::default()
            }),
            2 => FeedData::Full(Full::default()),
            3 => FeedData::Oi(Oi { oi: i }),
            4 => FeedData::PrevClose(PrevClose {
                prev_close: 2.0,
                prev_oi: 0,
            }),
            _ => FeedData::MarketStatus,
        };
        FeedMessage::Data(key, data).encode(&mut frame);
    }
    // Bad packets the walker must report and step over.
    frame.extend_from_slice(&[99, 12, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    FeedMessage::Disconnect(DisconnectReason::TokenExpired).encode(&mut frame);
    frame
}

#[test]
fn walking_a_large_feed_frame_allocates_nothing() {
    let frame = mixed_frame(20_000);
    let (mut ok, mut errors, mut ltp_sum) = (0u64, 0u64, 0f64);
    let before = allocations();
    for packet in feed::packets(&frame) {
        match packet {
            Ok(p) => {
                ok += 1;
                if let FeedMessage::Data(_, FeedData::Ticker(t)) = p.message {
                    ltp_sum += f64::from(t.ltp);
                }
            }
            Err(_) => errors += 1,
        }
    }
    let during = allocations() - before;
    assert_eq!(during, 0, "decoding allocated {during} times");
    assert_eq!((ok, errors), (20_001, 1));
    assert!(ltp_sum > 0.0);
}

#[test]
fn walking_a_large_depth_frame_allocates_nothing() {
    let mut frame = Vec::new();
    for i in 0..2_000u32 {
        DepthMessage::Book(DepthBook {
            key: InstrumentKey::new(Segment::NseFno, i),
            side: if i % 2 == 0 { Side::Bid } else { Side::Ask },
            sequence: i,
            rows: [DepthRow {
                price: 1.0,
                quantity: 1,
                orders: 1,
            }; depth::ROWS],
        })
        .encode(&mut frame);
    }
    let before = allocations();
    let decoded = depth::packets(&frame).filter(Result::is_ok).count();
    let during = allocations() - before;
    assert_eq!(during, 0, "decoding allocated {during} times");
    assert_eq!(decoded, 2_000);
}

#[test]
fn the_counter_does_count() {
    // Guards the guard: if counting were broken, the tests above would pass
    // for the wrong reason.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn offer_does_not_allocate() {
    for ring_bytes in [8 << 20, 512] {
        let dir = common::TempDir::new("record-offer-alloc");
        let (rec, mut tap) = Recorder::spawn(RecordConfig {
            ring_bytes,
            ..RecordConfig::new(&dir.0)
        })
        .unwrap();
        let payload = vec![7u8; 500];
        let ticker = [2u8; 16];
        // Warm up (the clock's epoch, thread locals).
        tap.offer(0, FeedKind::Main, clock::now_ns(), &ticker);
        let before = allocations();
        for i in 0..200_000u32 {
            let p: &[u8] = if i % 2 == 0 { &payload } else { &ticker };
            tap.offer((i % 4) as u8, FeedKind::Main, clock::now_ns(), p);
        }
        let n = allocations() - before;
        let stats = rec.stats();
        rec.shutdown();
        assert_eq!(n, 0, "offer allocated {n} times (ring {ring_bytes})");
        assert_eq!(stats.frames() + stats.lost(), 200_001);
        if ring_bytes == 512 {
            assert!(stats.lost() > 0, "the tiny ring must have dropped some");
        }
    }
}
