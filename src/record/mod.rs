//! Recording what DhanHQ sent, and reading it back.
//!
//! The network thread offers every binary WebSocket frame it receives, with
//! its receive time and connection, to [`RecordTap`]; a recorder thread
//! writes them to one file per trading day (India time). Replay
//! (`dhan-relay replay`), `record-info` and the history backfill read those
//! files back as [`RecordedFrame`]s. The file format is in
//! `docs/recording.md`.

pub mod files;
pub mod format;
pub mod info;
pub mod reader;
pub mod writer;

pub use files::{day_file, day_files};
pub use format::{Header, MAX_PAYLOAD};
pub use info::{info, Info};
pub use reader::{Damage, Reader};
pub use writer::{RecordConfig, RecordStats, RecordTap, Recorder, DEFAULT_RING_BYTES};

/// Which DhanHQ feed a frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// The Live Market Feed v2 (ticker, quote, full, OI, previous close,
    /// market status, disconnect packets).
    Main = 0,
    /// The 20-level depth feed (bid and ask side packets).
    Depth = 1,
}

impl FeedKind {
    /// The byte stored in a record.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a stored byte; `None` for a byte no version wrote.
    pub fn from_code(code: u8) -> Option<FeedKind> {
        match code {
            0 => Some(FeedKind::Main),
            1 => Some(FeedKind::Depth),
            _ => None,
        }
    }
}

/// One recorded WebSocket binary frame, as read back from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFrame {
    /// When the network thread received it: Unix time, nanoseconds.
    pub recv_unix_ns: u64,
    /// The upstream connection it arrived on (slot number, per feed).
    pub conn: u8,
    /// Which feed.
    pub feed: FeedKind,
    /// The frame's bytes exactly as DhanHQ sent them (one or more packets).
    pub payload: Vec<u8>,
}
