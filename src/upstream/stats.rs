//! Counters the network thread keeps, readable from any thread.
//!
//! Only the network thread writes; `/metrics`, `/health` and tests read.
//! Relaxed atomics on counters that one thread owns cost a plain add; the
//! one lock guards the last error text, which changes only on a disconnect.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use crate::wire::feed::{FeedData, FeedMessage};
use crate::wire::{DisconnectReason, WireError};

/// Names of the packet kinds counted in [`UpstreamStats::packets`].
pub const PACKET_KINDS: [&str; 7] = [
    "ticker",
    "quote",
    "oi",
    "prev_close",
    "market_status",
    "full",
    "disconnect",
];

/// Disconnect reasons counted by name in [`UpstreamStats::disconnect_reasons`].
pub const DISCONNECT_REASONS: [DisconnectReason; 6] = [
    DisconnectReason::TooManyConnections,
    DisconnectReason::DataApiNotSubscribed,
    DisconnectReason::TokenExpired,
    DisconnectReason::InvalidClientId,
    DisconnectReason::AuthFailed,
    DisconnectReason::Other(0),
];

/// Most connection slots (DhanHQ's per-account limit).
pub const MAX_SLOTS: usize = 5;

/// What one connection slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Not needed (no instruments on it).
    Unused = 0,
    /// Waiting to retry after a failure.
    Backoff = 1,
    /// TCP, TLS or WebSocket handshake in progress.
    Connecting = 2,
    /// Connected and subscribed.
    Up = 3,
    /// Waiting a long interval after an authentication failure.
    AuthFailed = 4,
    /// Waiting for the feed host's name lookup (on another thread).
    Resolving = 5,
}

impl SlotState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => SlotState::Backoff,
            2 => SlotState::Connecting,
            3 => SlotState::Up,
            4 => SlotState::AuthFailed,
            5 => SlotState::Resolving,
            _ => SlotState::Unused,
        }
    }

    /// A lower-case name for JSON and logs.
    pub const fn name(self) -> &'static str {
        match self {
            SlotState::Unused => "unused",
            SlotState::Backoff => "backoff",
            SlotState::Connecting => "connecting",
            SlotState::Up => "up",
            SlotState::AuthFailed => "auth_failed",
            SlotState::Resolving => "resolving",
        }
    }
}

/// The network thread's counters.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Binary frames received.
    pub frames: AtomicU64,
    /// Bytes of binary frames received.
    pub bytes: AtomicU64,
    /// Packets decoded, by [`PACKET_KINDS`].
    pub packets: [AtomicU64; 7],
    /// Decode errors, by [`WireError::KINDS`].
    pub decode_errors: [AtomicU64; 7],
    /// Connection attempts started.
    pub connect_attempts: AtomicU64,
    /// WebSocket handshakes completed.
    pub connects: AtomicU64,
    /// Connections lost or closed by the server after being up.
    pub disconnects: AtomicU64,
    /// Connections dropped because nothing arrived for the silence timeout.
    pub silent_drops: AtomicU64,
    /// Disconnect packets with 807, 808 or 809.
    pub auth_failures: AtomicU64,
    /// Times a tick found the ring full and the thread had to wait.
    pub ring_full_waits: AtomicU64,
    /// Subscriptions refused because every connection was full.
    pub rejected_subscriptions: AtomicU64,
    /// Instruments the account's connections can carry: connection slots
    /// (`max_connections`, at most [`MAX_SLOTS`]) × `max_per_connection`.
    /// Fixed at start, so a caller can refuse a subscription before sending
    /// it rather than have it counted in `rejected_subscriptions`.
    pub instrument_capacity: AtomicU64,
    /// Instruments subscribed (or waiting for a connection to carry them)
    /// across all connections, as of the last command batch the network
    /// thread applied; at most `instrument_capacity`.
    pub instruments_held: AtomicU64,
    /// Text frames from the server (DhanHQ sends binary; text is logged).
    pub text_frames: AtomicU64,
    /// The most recent disconnect reason code (0 = none yet).
    pub last_disconnect_code: AtomicU32,
    /// Disconnect packets by reason, in [`DISCONNECT_REASONS`] order (the
    /// last counts every undocumented code).
    pub disconnect_reasons: [AtomicU64; 6],
    slots: [AtomicU8; MAX_SLOTS],
    error_logged: [AtomicBool; 7],
    last_error: Mutex<Option<String>>,
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl UpstreamStats {
    pub(crate) fn count_packet(&self, message: &FeedMessage) {
        let i = match message {
            FeedMessage::Data(_, data) => match data {
                FeedData::Ticker(_) => 0,
                FeedData::Quote(_) => 1,
                FeedData::Oi(_) => 2,
                FeedData::PrevClose(_) => 3,
                FeedData::MarketStatus => 4,
                FeedData::Full(_) => 5,
            },
            FeedMessage::Disconnect(_) => 6,
        };
        inc(&self.packets[i]);
    }

    /// Counts a decode error; true the first time its kind is seen, so the
    /// caller logs each kind once instead of once per bad packet.
    pub(crate) fn count_error(&self, e: &WireError) -> bool {
        inc(&self.decode_errors[e.kind_index()]);
        !self.error_logged[e.kind_index()].swap(true, Relaxed)
    }

    pub(crate) fn set_slot(&self, slot: usize, state: SlotState) {
        if let Some(s) = self.slots.get(slot) {
            s.store(state as u8, Relaxed);
        }
    }

    pub(crate) fn set_error(&self, text: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(text);
        }
    }

    pub(crate) fn record_disconnect(&self, reason: DisconnectReason) {
        self.last_disconnect_code
            .store(u32::from(reason.code()), Relaxed);
        if reason.is_auth_failure() {
            inc(&self.auth_failures);
        }
        let i = DISCONNECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(DISCONNECT_REASONS.len() - 1);
        inc(&self.disconnect_reasons[i]);
    }

    /// The state of each slot.
    pub fn slot_states(&self) -> [SlotState; MAX_SLOTS] {
        std::array::from_fn(|i| SlotState::from_u8(self.slots[i].load(Relaxed)))
    }

    /// Connections up now.
    pub fn connections_up(&self) -> usize {
        self.slot_states()
            .iter()
            .filter(|s| **s == SlotState::Up)
            .count()
    }

    /// The last disconnect reason DhanHQ sent, if any.
    pub fn last_disconnect(&self) -> Option<DisconnectReason> {
        match self.last_disconnect_code.load(Relaxed) {
            0 => None,
            code => Some(DisconnectReason::from_code(code as u16)),
        }
    }

    /// The last connection error, in words, with no secrets in it.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
