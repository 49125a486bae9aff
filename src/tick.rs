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

/// One side of one instrument's 20-level book, from the depth feed, stamped
/// with its receive time.
///
/// Depth travels on rings of its own (network → book → fanout), never
/// inside [`Tick`]: a side packet is 20 rows of 16 bytes, and putting it in
/// the `Tick` every ticker and quote crosses the ring in would take that
/// from 176 to 344+ bytes (measured) would cost the main path memory bandwidth for a feed that carries
/// at most 50 instruments per connection. `Copy`, so a push is a memcpy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthTick {
    /// What the packet said.
    pub book: crate::wire::depth::DepthBook,
    /// [`crate::clock::now_ns`] when the frame carrying it was read.
    pub recv_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_stays_out_of_the_main_tick() {
        // The main ring's record is unchanged by the depth feed: 176 bytes
        // before and after it (x86-64); depth (344) has its own ring.
        assert_eq!(std::mem::size_of::<Tick>(), 176);
        assert!(std::mem::size_of::<DepthTick>() > std::mem::size_of::<Tick>());
    }
}
