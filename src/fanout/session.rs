//! One WebSocket client: its subscriptions and its bounded outbound queue.
//!
//! Outbound messages go into tungstenite's write buffer, which is capped at
//! the client's queue size; the fanout thread flushes every dirty client
//! once per loop turn (one `write` per client per turn). When the buffer is
//! full the client is behind: from then on only the newest message per
//! instrument is kept (conflation, counted), and those are written as the
//! socket drains. A client behind for longer than the slow-client limit is
//! closed with 1008 and a reason. Nothing here ever blocks or waits, so one
//! slow client costs the others nothing.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, Utf8Bytes, WebSocket};

use super::stats::{add, FanoutStats};
use crate::domain::{InstrumentKey, Mode};

/// What the client connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/ws`: the subscribe protocol.
    Feed,
    /// `/ws/prices`: the watchlist object every second.
    Prices,
}

/// Where a queued message came from: its instrument, or a one-off reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Latest value of an instrument (conflatable).
    Instrument(InstrumentKey),
    /// The `/ws/prices` object (conflatable).
    Prices,
}

/// A connected client.
#[derive(Debug)]
pub struct Session {
    /// The socket.
    pub ws: WebSocket<TcpStream>,
    /// `/ws` or `/ws/prices`.
    pub kind: Kind,
    /// What the client holds, in which mode.
    pub subs: HashMap<InstrumentKey, Mode>,
    /// Newest message per slot while behind.
    conflated: HashMap<Slot, Utf8Bytes>,
    /// Since when the client has had data the socket would not take.
    behind_since: Option<Instant>,
    /// Something was written since the last flush.
    dirty: bool,
    /// Request-rate limit.
    bucket: TokenBucket,
    /// A close frame was queued at this time; drop soon after.
    pub closing: Option<Instant>,
}

/// What happened to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// Fine.
    Ok,
    /// The connection is gone (closed, reset, or closed by us).
    Gone,
}

impl Session {
    /// A session over an upgraded socket.
    pub fn new(ws: WebSocket<TcpStream>, kind: Kind, max_per_sec: u32) -> Self {
        Session {
            ws,
            kind,
            subs: HashMap::new(),
            conflated: HashMap::new(),
            behind_since: None,
            dirty: false,
            bucket: TokenBucket::new(max_per_sec),
            closing: None,
        }
    }

    /// Whether the next client request fits the rate limit.
    pub fn allow_request(&mut self, now: Instant) -> bool {
        self.bucket.take(now)
    }

    /// Queues a message; conflates once the client is behind.
    pub fn deliver(&mut self, slot: Slot, msg: &Utf8Bytes, stats: &FanoutStats, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if self.behind_since.is_some() {
            self.conflate(slot, msg, stats);
            return;
        }
        match self.ws.write(Message::Text(msg.clone())) {
            Ok(()) => self.queued(msg, stats),
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.behind_since = Some(now);
                self.conflate(slot, msg, stats);
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                // Buffered; the socket is full.
                self.queued(msg, stats);
                self.behind_since.get_or_insert(now);
            }
            Err(_) => self.dirty = true, // the flush will find the error
        }
    }

    /// Queues a reply that must not be conflated away (errors, status).
    pub fn reply(&mut self, text: String, stats: &FanoutStats) {
        let msg = Utf8Bytes::from(text);
        if self.ws.write(Message::Text(msg.clone())).is_ok() {
            self.queued(&msg, stats);
        }
        self.dirty = true;
    }

    fn queued(&mut self, msg: &Utf8Bytes, stats: &FanoutStats) {
        self.dirty = true;
        add(&stats.messages, 1);
        add(&stats.bytes, msg.len() as u64);
    }

    fn conflate(&mut self, slot: Slot, msg: &Utf8Bytes, stats: &FanoutStats) {
        if self.conflated.insert(slot, msg.clone()).is_some() {
            add(&stats.conflated, 1);
        }
        self.dirty = true;
    }

    /// Whether a flush is due.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes what the socket takes; refills from the conflated set as the
    /// buffer drains.
    pub fn flush(&mut self, stats: &FanoutStats, now: Instant) -> Health {
        loop {
            match self.ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.behind_since.get_or_insert(now);
                    return Health::Ok;
                }
                Err(_) => return Health::Gone,
            }
            if self.conflated.is_empty() {
                self.dirty = false;
                self.behind_since = None;
                return Health::Ok;
            }
            let pending: Vec<(Slot, Utf8Bytes)> = self.conflated.drain().collect();
            let mut iter = pending.into_iter();
            for (slot, msg) in iter.by_ref() {
                match self.ws.write(Message::Text(msg.clone())) {
                    Ok(()) => self.queued(&msg, stats),
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                        self.queued(&msg, stats);
                    }
                    Err(tungstenite::Error::WriteBufferFull(_)) => {
                        self.conflated.insert(slot, msg);
                        break;
                    }
                    Err(_) => return Health::Gone,
                }
            }
            self.conflated.extend(iter);
        }
    }

    /// True when the client has been behind for longer than `limit`.
    pub fn too_slow(&self, now: Instant, limit: Duration) -> bool {
        self.behind_since
            .is_some_and(|since| now.saturating_duration_since(since) > limit)
    }

    /// Queues a close frame with `code` and `reason`; the loop drops the
    /// connection once it is written, or after a short grace.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(now);
        self.conflated.clear();
        let _ = self.ws.close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        self.dirty = true;
    }
}

/// A token bucket: `rate` requests per second, bursts of up to `2 × rate`.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        TokenBucket {
            rate,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10);
        b.last = t0;
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 20);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
