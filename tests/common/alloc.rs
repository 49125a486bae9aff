//! For the allocation tests: a counting global allocator (each test binary
//! installs it with `#[global_allocator]`), the simulator as a child
//! process (so its allocations are not counted), and `/stats` counters.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::Value;

/// Counts every allocation and reallocation of threads not marked exempt.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on test-client threads: their allocations are not the engine's.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

/// Allocations counted so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Relaxed)
}

/// Leaves this thread's allocations out of the count (test clients).
pub fn exempt_this_thread() {
    EXEMPT.with(|e| e.set(true));
}

fn count() {
    if !EXEMPT.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; the counter
// is a static atomic and the flag a const-initialised thread local, neither
// of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The simulator as a child process (its feed URL in `.1`), killed on drop.
pub struct SimProcess(Child, pub String);

impl SimProcess {
    /// `dhan-relay sim` on a free loopback port at `rate` ticks a second.
    pub fn start(rate: u32) -> SimProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dhan-relay"))
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--rate",
                &rate.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator process starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        SimProcess(child, line.trim().to_string())
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/stats` counters.
pub fn counters(addr: SocketAddr) -> Value {
    let (status, stats) = super::http_get_json(addr, "/stats");
    assert_eq!(status, 200, "/stats: {stats}");
    stats["counters"].clone()
}

/// One of [`counters`].
pub fn counter(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}
