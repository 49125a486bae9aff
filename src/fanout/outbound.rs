//! A client's outbound byte queue: WebSocket frames written by us, not by
//! tungstenite, so one rendered message is shared by every subscriber.
//!
//! Each queued [`Chunk`] is a frame header (2–10 bytes, kept inline) plus a
//! shared payload ([`Bytes`]: queueing a message to a subscriber is a
//! reference count, never a copy), or raw bytes tungstenite produced (pongs
//! and close frames). [`Outbound::write_to`] hands up to
//! [`MAX_SLICES`] slices to one vectored write, so a client costs one
//! syscall per flush however many messages it has queued.
//!
//! The queue itself has no limit: the session decides what to queue
//! (see `session`), which is what keeps any single message, however large,
//! deliverable.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Slices handed to one vectored write (two per chunk).
pub const MAX_SLICES: usize = 64;

/// One frame (header + payload) or raw bytes.
#[derive(Clone, Debug)]
struct Chunk {
    head: [u8; 10],
    head_len: u8,
    body: Bytes,
}

impl Chunk {
    fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }
}

/// The header of an unmasked, final server text frame carrying `len` bytes
/// (RFC 6455 §5.2): the 7-bit length, or 126 + u16, or 127 + u64, big-endian.
pub fn text_frame_header(len: usize) -> ([u8; 10], u8) {
    frame_header(0x81, len) // FIN + text
}

/// The header of an unmasked, final server binary frame carrying `len`
/// bytes (the `/dhan` feed's packets).
pub fn binary_frame_header(len: usize) -> ([u8; 10], u8) {
    frame_header(0x82, len) // FIN + binary
}

fn frame_header(first: u8, len: usize) -> ([u8; 10], u8) {
    let mut h = [0u8; 10];
    h[0] = first;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// Frames waiting for the socket.
#[derive(Debug, Default)]
pub struct Outbound {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Unwritten bytes queued.
    bytes: usize,
}

impl Outbound {
    /// An empty queue with room for `chunks` before it grows.
    pub fn with_capacity(chunks: usize) -> Self {
        Outbound {
            chunks: VecDeque::with_capacity(chunks),
            ..Outbound::default()
        }
    }

    /// Queues `payload` as one text frame.
    pub fn push_text(&mut self, payload: &Bytes) {
        let (head, head_len) = text_frame_header(payload.len());
        self.push(Chunk {
            head,
            head_len,
            body: payload.clone(),
        });
    }

    /// Queues `payload` as one binary frame.
    pub fn push_binary(&mut self, payload: &Bytes) {
        let (head, head_len) = binary_frame_header(payload.len());
        self.push(Chunk {
            head,
            head_len,
            body: payload.clone(),
        });
    }

    /// Queues bytes that are already framed (tungstenite's pongs and close
    /// frames).
    pub fn push_raw(&mut self, raw: Bytes) {
        if !raw.is_empty() {
            self.push(Chunk {
                head: [0; 10],
                head_len: 0,
                body: raw,
            });
        }
    }

    fn push(&mut self, chunk: Chunk) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Unwritten bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// A frame is partly on the wire: anything queued after this point must
    /// wait for it, and it must be finished before a close frame.
    pub fn mid_frame(&self) -> bool {
        self.offset > 0
    }

    /// Drops every frame not yet started (a slow client being closed keeps
    /// only the frame already partly written, so the stream stays valid).
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.offset > 0);
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                self.bytes -= c.len();
            }
        }
        if keep == 0 {
            self.offset = 0;
        }
    }

    /// One vectored write of the front of the queue. `Ok(n)` bytes went out
    /// (0 only when the queue is empty); `WouldBlock` and other errors are
    /// the socket's.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        if self.chunks.is_empty() {
            return Ok(0);
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        let mut skip = self.offset;
        for c in &self.chunks {
            if n + 2 > MAX_SLICES {
                break;
            }
            for part in [&c.head[..usize::from(c.head_len)], &c.body[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
            }
        }
        let written = w.write_vectored(&slices[..n])?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.advance(written);
        Ok(written)
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;

    /// A socket that takes at most `per_write` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        per_write: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let mut left = self.per_write;
            for b in bufs {
                let take = b.len().min(left);
                self.got.extend_from_slice(&b[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
            Ok(self.per_write - left)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn tungstenite_text_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn headers_match_tungstenite_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 300_000] {
            let payload = vec![b'x'; len];
            let (head, n) = text_frame_header(len);
            let mut ours = head[..usize::from(n)].to_vec();
            ours.extend_from_slice(&payload);
            assert_eq!(ours, tungstenite_text_frame(&payload), "length {len}");
        }
    }

    #[test]
    fn partial_writes_reassemble_into_the_exact_frames() {
        let msgs: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("{{\"n\":{i}}}").repeat(i % 7 + 1)))
            .collect();
        let mut q = Outbound::default();
        let mut expected = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if i % 50 == 0 {
                let raw = Bytes::from_static(&[0x8a, 0x00]); // a pong
                expected.extend_from_slice(&raw);
                q.push_raw(raw);
            }
            q.push_text(m);
            expected.extend_from_slice(&tungstenite_text_frame(m));
        }
        assert_eq!(q.bytes(), expected.len());
        let mut sock = Trickle {
            got: Vec::new(),
            per_write: 37,
            calls: 0,
        };
        while !q.is_empty() {
            q.write_to(&mut sock).unwrap();
        }
        assert_eq!(sock.got, expected);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn one_write_takes_many_messages() {
        let mut q = Outbound::default();
        let m = Bytes::from_static(b"{\"type\":\"ticker\"}");
        for _ in 0..20 {
            q.push_text(&m);
        }
        let mut sock = Trickle {
            got: Vec::new(),
            per_write: usize::MAX / 2,
            calls: 0,
        };
        q.write_to(&mut sock).unwrap();
        assert_eq!((sock.calls, q.is_empty()), (1, true), "20 frames, 1 call");
    }

    #[test]
    fn discarding_keeps_a_frame_already_started() {
        let mut q = Outbound::default();
        let m = Bytes::from(vec![b'a'; 1000]);
        q.push_text(&m);
        q.push_text(&m);
        let mut sock = Trickle {
            got: Vec::new(),
            per_write: 10,
            calls: 0,
        };
        q.write_to(&mut sock).unwrap();
        assert!(q.mid_frame());
        q.discard_unstarted();
        while !q.is_empty() {
            q.write_to(&mut sock).unwrap();
        }
        assert_eq!(sock.got, tungstenite_text_frame(&m), "one whole frame");
        let mut fresh = Outbound::default();
        fresh.push_text(&m);
        fresh.discard_unstarted();
        assert!(fresh.is_empty() && fresh.bytes() == 0);
    }
}
