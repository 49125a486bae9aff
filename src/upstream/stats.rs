//! Counters the network thread keeps, readable from any thread.
//!
//! Only the network thread writes; `/metrics`, `/health` and tests read.
//! Relaxed atomics on counters that one thread owns cost a plain add; the
//! one lock guards the last error text, which changes only on a disconnect.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use crate::metrics::Counter;
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
#[derive(Debug)]
pub struct UpstreamStats {
    /// Binary frames received.
    pub frames: Counter,
    /// Bytes of binary frames received.
    pub bytes: Counter,
    /// Packets decoded, by [`PACKET_KINDS`].
    pub packets: [AtomicU64; 7],
    /// Decode errors, by [`WireError::KINDS`].
    pub decode_errors: [AtomicU64; 7],
    /// Connection attempts started.
    pub connect_attempts: Counter,
    /// WebSocket handshakes completed.
    pub connects: Counter,
    /// Connections lost or closed by the server after being up.
    pub disconnects: Counter,
    /// Connections dropped because nothing arrived for the silence timeout.
    pub silent_drops: Counter,
    /// Disconnect packets with 807, 808 or 809.
    pub auth_failures: Counter,
    /// Times a tick found the ring full and the thread had to wait.
    pub ring_full_waits: Counter,
    /// Subscriptions refused because every connection was full.
    pub rejected_subscriptions: Counter,
    /// Instruments the account's connections can carry: connection slots
    /// (`max_connections`, at most [`MAX_SLOTS`]) × `max_per_connection`.
    /// Fixed at start, so a caller can refuse a subscription before sending
    /// it rather than have it counted in `rejected_subscriptions`.
    pub instrument_capacity: Counter,
    /// Instruments subscribed (or waiting for a connection to carry them)
    /// across all connections, as of the last command batch the network
    /// thread applied; at most `instrument_capacity`.
    pub instruments_held: Counter,
    /// Text frames from the server (DhanHQ sends binary; text is logged).
    pub text_frames: Counter,
    /// Credential changes rolled out to every connection.
    pub rotations: Counter,
    /// The most recent disconnect reason code (0 = none yet).
    pub last_disconnect_code: AtomicU32,
    /// Disconnect packets by reason, in [`DISCONNECT_REASONS`] order (the
    /// last counts every undocumented code).
    pub disconnect_reasons: [AtomicU64; 6],
    slots: [AtomicU8; MAX_SLOTS],
    error_logged: [AtomicBool; 7],
    last_error: Mutex<Option<String>>,
}

impl Default for UpstreamStats {
    fn default() -> Self {
        UpstreamStats {
            frames: Counter::new(
                "upstream_frames_total",
                "Binary frames received from DhanHQ",
            ),
            bytes: Counter::new("upstream_bytes_total", "Bytes of binary frames received"),
            connect_attempts: Counter::new(
                "upstream_connect_attempts_total",
                "Upstream connection attempts",
            ),
            connects: Counter::new(
                "upstream_connects_total",
                "Upstream WebSocket handshakes completed",
            ),
            disconnects: Counter::new("upstream_disconnects_total", "Upstream connections lost"),
            silent_drops: Counter::new(
                "upstream_silent_drops_total",
                "Upstream sockets dropped for silence",
            ),
            auth_failures: Counter::new(
                "upstream_auth_failures_total",
                "Disconnects with 807, 808 or 809",
            ),
            ring_full_waits: Counter::new(
                "upstream_ring_full_waits_total",
                "Times the network thread waited on a full tick ring",
            ),
            rejected_subscriptions: Counter::new(
                "upstream_rejected_subscriptions_total",
                "Subscriptions refused: every connection full",
            ),
            instrument_capacity: Counter::new(
                "upstream_slots_capacity",
                "Instruments the upstream connections can carry",
            ),
            instruments_held: Counter::new(
                "upstream_slots_held",
                "Instruments the network thread holds on its connections",
            ),
            text_frames: Counter::new(
                "upstream_text_frames_total",
                "Text frames from DhanHQ (it sends binary; logged)",
            ),
            rotations: Counter::new(
                "upstream_credential_rotations_total",
                "New access tokens rolled out to every upstream connection",
            ),
            packets: Default::default(),
            decode_errors: Default::default(),
            last_disconnect_code: AtomicU32::new(0),
            disconnect_reasons: Default::default(),
            slots: Default::default(),
            error_logged: Default::default(),
            last_error: Mutex::new(None),
        }
    }
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl UpstreamStats {
    /// Every scalar counter for `/metrics`, in order. The labelled
    /// families (packets, decode errors, disconnect reasons) are rendered
    /// apart, and the capacity figures are the fanout's to report: it also
    /// knows what is queued and what waits out its grace period.
    pub fn counters(&self) -> [&Counter; 11] {
        [
            &self.frames,
            &self.bytes,
            &self.connect_attempts,
            &self.connects,
            &self.disconnects,
            &self.silent_drops,
            &self.auth_failures,
            &self.ring_full_waits,
            &self.rejected_subscriptions,
            &self.text_frames,
            &self.rotations,
        ]
    }

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
            self.auth_failures.inc();
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
