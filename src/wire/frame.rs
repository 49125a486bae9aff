//! The frame walker shared by both DhanHQ binary feeds.
//!
//! DhanHQ's SDK assumes one packet per WebSocket frame; the relay does not.
//! [`Packets`] steps through a frame by each packet's length field and yields
//! every packet, good or bad, in order. A bad packet whose length is still
//! usable is reported and skipped; a length that cannot be trusted ends the
//! walk with one error. Nothing allocates.

use std::iter::FusedIterator;
use std::marker::PhantomData;

use super::WireError;

/// A binary packet format: how to find a packet's length and decode it.
///
/// Sealed: implemented by [`super::Feed`] and [`super::Depth`] only.
pub trait Format: sealed::Sealed {
    /// The decoded packet, borrowing the frame.
    type Packet<'a>;

    /// The declared length of the packet that starts `rest`, checked to lie
    /// between the header size and `rest.len()`.
    fn packet_len(rest: &[u8]) -> Result<usize, WireError>;

    /// Decodes exactly one packet; `packet.len()` is its declared length.
    fn decode_exact(packet: &[u8]) -> Result<Self::Packet<'_>, WireError>;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Decodes the packet at the start of `bytes`; bytes after it are ignored.
#[inline(always)]
pub fn decode<F: Format>(bytes: &[u8]) -> Result<F::Packet<'_>, WireError> {
    if bytes.is_empty() {
        return Err(WireError::EmptyFrame);
    }
    let len = F::packet_len(bytes)?;
    F::decode_exact(&bytes[..len])
}

/// Every packet in one binary frame, in order. See the module doc.
#[derive(Debug, Clone)]
pub struct Packets<'a, F> {
    rest: &'a [u8],
    empty: bool,
    format: PhantomData<F>,
}

impl<'a, F: Format> Packets<'a, F> {
    /// Walks `frame`. An empty frame yields one [`WireError::EmptyFrame`].
    pub fn new(frame: &'a [u8]) -> Self {
        Packets {
            rest: frame,
            empty: frame.is_empty(),
            format: PhantomData,
        }
    }
}

impl<'a, F: Format> Iterator for Packets<'a, F> {
    type Item = Result<F::Packet<'a>, WireError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.empty {
            self.empty = false;
            return Some(Err(WireError::EmptyFrame));
        }
        if self.rest.is_empty() {
            return None;
        }
        match F::packet_len(self.rest) {
            Ok(len) => {
                let (packet, rest) = self.rest.split_at(len);
                self.rest = rest;
                Some(F::decode_exact(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

impl<F: Format> FusedIterator for Packets<'_, F> {}
