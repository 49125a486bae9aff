//! The fanout thread's counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters kept by the fanout thread; readable from any thread.
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// WebSocket clients connected now.
    pub clients: AtomicU64,
    /// Instrument subscriptions held by clients now.
    pub subscriptions: AtomicU64,
    /// WebSocket clients accepted since start.
    pub clients_total: AtomicU64,
    /// Connections refused because `max_clients` were connected.
    pub clients_rejected: AtomicU64,
    /// Updates taken from the book ring.
    pub updates: AtomicU64,
    /// Messages queued to clients (updates, snapshots, replies).
    pub messages: AtomicU64,
    /// Payload bytes queued to clients.
    pub bytes: AtomicU64,
    /// Messages replaced by a newer one for a client that was behind.
    pub conflated: AtomicU64,
    /// Clients closed for staying behind too long.
    pub slow_closes: AtomicU64,
    /// Error messages sent for bad client input.
    pub client_errors: AtomicU64,
    /// Clients closed for oversized frames, binary frames or protocol errors.
    pub protocol_closes: AtomicU64,
    /// Plain HTTP requests answered.
    pub http_requests: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Subtracts `n` from a gauge.
pub fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
