//! The recorder's integration tests: `RecordTap::offer` never touches the
//! heap (a counting global allocator watches the offering thread, for
//! frames that fit and frames counted lost), and `dhan-relay record-info`'s
//! exit codes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;

use dhan_relay::clock;
use dhan_relay::record::{FeedKind, RecordConfig, Recorder};

/// Counts allocations made by the current thread, so the recorder thread
/// (and other tests) do not disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local `Cell` that never allocates.
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

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dhan-record-it-{name}-{}-{}",
        std::process::id(),
        clock::now_ns()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn offer_does_not_allocate() {
    for ring_bytes in [8 << 20, 512] {
        let dir = tempdir("alloc");
        let (rec, mut tap) = Recorder::spawn(RecordConfig {
            ring_bytes,
            ..RecordConfig::new(&dir)
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn record_info_exit_codes() {
    let dir = tempdir("cli");
    let (rec, mut tap) = Recorder::spawn(RecordConfig::new(&dir)).unwrap();
    let mut frame = vec![2u8, 16, 0, 1, 0x35, 0x05, 0, 0]; // ticker, NSE_EQ 1333
    frame.extend_from_slice(&100.5f32.to_le_bytes());
    frame.extend_from_slice(&1_741_578_300u32.to_le_bytes());
    tap.offer(0, FeedKind::Main, clock::now_ns(), &frame);
    let path = rec.stats().file().unwrap();
    rec.shutdown();
    let bin = env!("CARGO_BIN_EXE_dhan-relay");

    let out = Command::new(bin)
        .arg("record-info")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("frames:      1 (main 1, depth 0)"), "{text}");
    assert!(
        text.contains("ticker 1") && text.contains("damage:      none"),
        "{text}"
    );

    // A torn tail is reported, still exit 0.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[5, 0, 0]);
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new(bin)
        .arg("record-info")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("damage:      at offset"), "{text}");

    // Not a recording, or missing: exit 1 with the file named.
    let junk = dir.join("junk.dhr");
    std::fs::write(&junk, b"definitely not a recording file").unwrap();
    for p in [junk, dir.join("missing.dhr")] {
        let out = Command::new(bin)
            .arg("record-info")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
