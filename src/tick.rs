//! The record that crosses from the network thread to the book thread.
//!
//! `Copy` and fixed-size, so pushing it into the SPSC ring is a memcpy, never
//! an allocation.

use crate::domain::InstrumentKey;
use crate::wire::feed::FeedData;

/// One decoded instrument packet, stamped with its receive time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// The instrument.
    pub key: InstrumentKey,
    /// What the packet said.
    pub data: FeedData,
    /// [`crate::clock::now_ns`] when the frame carrying it was read.
    pub recv_ns: u64,
}
