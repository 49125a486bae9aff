//! Today's 1-minute bars of every instrument the relay holds, for
//! `GET /api/history` and the dashboard's intraday chart.
//!
//! ```text
//! book thread ─ BarBuilder per instrument (dense, beside the states)
//!     │  finished bar / first-open note ──SPSC ring (BarEvent)──► dhan-history
//!     │  forming bar: in the book's Snapshot                       │ Store: one append-only Series per instrument
//!     ▼                                                            ▼ Board (arc-swap) ─► REST
//! ```
//!
//! **Who owns what.** The book thread builds bars from ticks with
//! [`BarBuilder`] (one `Copy` value per instrument, in a table parallel to
//! the book's state table, so it moves with the book). A finished bar and
//! the note "this instrument opened its first bar" cross an SPSC ring to
//! the cold `dhan-history` thread ([`thread`]), which owns the
//! per-instrument lists ([`store`]). The forming bar travels in the book's
//! [`crate::book::Snapshot`] beside the states, so `/api/history` shows the
//! current minute (`"partial": true`).
//!
//! **Hot path.** Per tick the book does a few compares on a 64-byte value
//! and, once a minute per instrument, one `try_push` on the ring: no
//! allocation, lock or syscall. Backpressure: a full ring never blocks the
//! book; the bar is dropped and counted (`history_bars_dropped_total`).
//!
//! **Publication.** A [`store::Series`] is an append-only array of atomic
//! cells with an atomic length (single writer, release/acquire): readers see
//! a finished bar as soon as it is stored, without locks and without the
//! history thread copying anyone's list. The map of series (the [`Board`])
//! is republished through `arc-swap` only when instruments are added, a
//! series grows or the day turns, at most every 500 ms.
//!
//! **Bar rules.**
//! - Bar time: the tick's LTT (exchange last-trade time, epoch seconds)
//!   rounded down to the minute, so bars from a replayed recording equal
//!   the live ones.
//! - Only ticker, quote and full packets carry a trade time and open or
//!   extend bars; OI packets update the forming bar's OI; previous-close and
//!   market-status packets do nothing.
//! - Volume: quote and full packets carry the day's cumulative volume; a
//!   bar's volume is the cumulative at its last tick minus the cumulative at
//!   the previous bar's last tick. The first bar after the relay started (or
//!   after the India date changed) counts from the first tick seen, so it
//!   misses whatever traded before that tick. Ticker-only instruments
//!   (indices, ticker mode) have volume 0.
//! - A tick older than the forming bar's minute (or than the last finished
//!   bar's, once the sweep closed it) is late: ignored for OHLC and counted
//!   (`history_late_ticks_total`). A quote repeating the same old LTT (no
//!   new trade) is not counted.
//! - Sweep: every second the book closes forming bars whose minute ended
//!   [`SWEEP_GRACE_SECS`] ago on the feed clock (the newest LTT seen, plus
//!   wall time elapsed since it arrived), so the last minute is stored
//!   without a further tick; replay at its own pace closes bars the same way.
//! - Feed clock cap: the book's newest LTT is capped at its cached wall
//!   clock (read once a second) + 60 s, so one packet with an LTT hours
//!   ahead cannot make the sweep close every bar a second after it opens
//!   (`history_future_ltt_ticks_total`).
//! - Day: bars belong to the India date of their minute, and the day
//!   follows the bars (the feed's clock), never the wall clock: the history
//!   thread drops every list when a bar of a later India date arrives (the
//!   day's first bar is the reset), turning over a whole batch before
//!   looking at its instruments. A replayed earlier day is kept; after
//!   midnight the last session stays until the next one's first bar.
//! - Stale snapshots: a trade time of an earlier India date than the newest
//!   the book has seen (a quote of an instrument not traded yet today)
//!   opens no bar; the history thread ignores events of a date earlier than
//!   its own (no series, no backfill).
//! - Backfill ([`thread`]): instruments first seen mid-day get the earlier
//!   bars of the day from the recording, read on a short-lived thread per
//!   pass (one at a time; instruments arriving meanwhile go in the next
//!   pass), only for the India date the relay started on and only frames
//!   recorded before it started; merged before the live bars when it ends.
//!
//! **Memory.** A bar is 32 bytes (`t` u32, OHLC f32, OI u32, volume u64).
//! A series is sized on creation for the minutes left in its segment's
//! session (NSE/BSE 09:15–15:30: 375; currency 09:00–17:00: 480; MCX
//! 09:00–23:55: 895) plus 16, and doubles if a session runs longer. Per
//! instrument: NSE about 12.5 KB (391 × 32 B + ~100 B of map entry, `Arc`
//! and header), MCX about 29 KB; on the book side 64 B (builder) plus 32 B
//! per snapshot. So 5,000 NSE instruments ≈ 63 MB, 25,000 ≈ 315 MB (all
//! MCX: ≈ 145 MB / 725 MB). Instruments first seen late in the day take
//! less (only the minutes left).

pub mod backfill;
mod builder;
pub mod query;
pub mod store;
pub mod thread;

pub use builder::{BarBuilder, Outcome};
pub use store::{Board, Series, SharedBoard};
pub use thread::{BarSink, HistoryConfig, HistoryHandle, HistoryStats, HistoryThread};

use crate::domain::InstrumentKey;
use crate::instrument::date::IST_OFFSET_SECS;

/// Seconds after a minute ends (on the feed clock) before the sweep
/// closes a bar nobody ticked for.
pub const SWEEP_GRACE_SECS: u32 = 3;

/// One minute of one instrument. `Copy`, 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bar {
    /// The minute's start, epoch seconds (a multiple of 60); 0: no bar.
    pub t: u32,
    /// First trade price of the minute.
    pub o: f32,
    /// Highest.
    pub h: f32,
    /// Lowest.
    pub l: f32,
    /// Last.
    pub c: f32,
    /// Open interest at the minute's last tick (0: none known).
    pub oi: u32,
    /// Volume traded in the minute (see the module doc).
    pub v: u64,
}

/// What the book sends the history thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BarEvent {
    /// The instrument opened its first bar since the relay started, at
    /// minute `t`: recorded bars before `t` may be backfilled.
    Opened {
        /// The instrument.
        key: InstrumentKey,
        /// The first live minute.
        t: u32,
    },
    /// A finished bar.
    Closed {
        /// The instrument.
        key: InstrumentKey,
        /// The bar.
        bar: Bar,
    },
}

/// The India date of epoch second `t`, as days since 1970-01-01.
pub fn ist_day(t: u32) -> i64 {
    (i64::from(t) + IST_OFFSET_SECS).div_euclid(86_400)
}

/// The first second (epoch) of the India date of epoch second `t`.
pub fn ist_day_start(t: u32) -> u32 {
    (i64::from(t) - (i64::from(t) + IST_OFFSET_SECS).rem_euclid(86_400)).max(0) as u32
}

/// India time's minute of the day (0..1440) of epoch second `t`.
pub fn ist_minute_of_day(t: u32) -> u32 {
    ((i64::from(t) + IST_OFFSET_SECS).rem_euclid(86_400) / 60) as u32
}
