//! One WebSocket client: its subscriptions, its rate limit and its bounded
//! outbound queue.
//!
//! Reading goes through tungstenite (frame parsing, masking, UTF-8, size
//! limits, the close handshake) over a [`ClientStream`] whose write side is
//! a byte sink: whatever tungstenite answers by itself (pongs, close
//! replies) lands there and is moved into our own [`Outbound`] queue at a
//! frame boundary. Everything else we frame ourselves, so a rendered
//! message is shared by every subscriber.
//!
//! Queue policy, per client (`client_queue_bytes` = `cap`):
//! - A price message is queued while fewer than `cap` bytes wait; a single
//!   message larger than `cap` still goes out whole (it waits for an empty
//!   queue, never forever).
//! - Past `cap` the client is **behind**: only the newest message per
//!   instrument is kept (conflation, counted) and those are queued as the
//!   socket drains.
//! - Replies (errors, pongs, status) are never conflated or dropped; a
//!   client that lets more than `4 × cap` of them pile up is closed with
//!   1008 and a reason.
//! - A client behind for longer than the slow-client limit is closed with
//!   1008 `too slow`.
//!
//! Nothing here blocks, so one slow client costs the others nothing.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::WebSocket;

use super::outbound::Outbound;
use super::stats::FanoutStats;
use crate::domain::{InstrumentKey, Mode};
use crate::serve_tls::ServerStream;

/// What the client connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/ws` (or `/`): the subscribe protocol.
    Feed,
    /// `/ws/prices`: the watchlist object every second.
    Prices,
    /// `/dhan`: DhanHQ's Live Market Feed v2 (JSON requests, binary
    /// packets; `super::dhan`).
    Dhan,
    /// `/dhan/twentydepth`: DhanHQ's 20-level depth feed (RequestCode
    /// 23/24, binary depth packets; `super::dhan`).
    DhanDepth,
}

impl Kind {
    /// Speaks one of DhanHQ's protocols (binary packets, disconnect codes,
    /// server pings).
    pub fn is_dhan(self) -> bool {
        matches!(self, Kind::Dhan | Kind::DhanDepth)
    }
}

/// Where a queued message came from: conflation keeps the newest per slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Latest value of an instrument.
    Instrument(InstrumentKey),
    /// The `/ws/prices` object.
    Prices,
    /// The latest `depth20` message of an instrument (kept apart from its
    /// `full` message: one must not replace the other).
    Depth20(InstrumentKey),
    /// The latest packet of one type (response code) for an instrument
    /// (`/dhan`: a quote must not replace an OI or previous-close packet).
    Packet(InstrumentKey, u8),
    /// The latest message of an option chain (by its number).
    Chain(u32),
}

/// The socket as tungstenite sees it: reads come from the connection
/// (TCP or TLS), writes (only ever pongs and close frames) are collected
/// for our queue.
#[derive(Debug)]
pub struct ClientStream {
    stream: ServerStream,
    ctrl: Vec<u8>,
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ctrl.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What happened to a session.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Health {
    /// Fine.
    Ok,
    /// The connection is gone (closed, reset, or closed by us and flushed).
    Gone,
}

/// A connected client.
#[derive(Debug)]
pub struct Session {
    /// Unique for the life of the process (slots are reused; ids are not).
    pub id: u64,
    ws: WebSocket<ClientStream>,
    out: Outbound,
    cap: usize,
    /// `/ws` or `/ws/prices`.
    pub kind: Kind,
    /// What the client holds, in which mode.
    pub subs: HashMap<InstrumentKey, Mode>,
    /// Instruments held in `depth20` (also in `subs`, in full mode).
    pub depth20: std::collections::HashSet<InstrumentKey>,
    /// Instruments it holds that wait for upstream capacity (told when
    /// each gets a slot).
    pub queued: std::collections::HashSet<InstrumentKey>,
    conflated: HashMap<Slot, Bytes>,
    behind_since: Option<Instant>,
    dirty: bool,
    bucket: TokenBucket,
    /// Messages ignored for the rate limit since the last notice.
    ignored: u32,
    /// Messages ignored in the current second (for the abuse close).
    ignored_this_second: u32,
    last_notice: Option<Instant>,
    /// A close frame was queued at this time; dropped once it is written or
    /// soon after.
    pub closing: Option<Instant>,
    /// When the socket last took bytes: a closing client that is still
    /// reading gets its close frame.
    wrote_at: Option<Instant>,
    /// A symbol resolution for this client is in flight: its socket is not
    /// read until the answer is applied, so its messages keep their order.
    pub awaiting: bool,
    /// Its API key (access control on), re-checked when the keys change.
    pub key: Option<crate::auth::KeyId>,
    /// The key's name, for the log.
    pub key_name: Option<String>,
    /// Instruments it may hold (its key's limit, else the relay's).
    pub max_subs: usize,
    /// `/dhan`: price messages go out as binary frames.
    binary: bool,
    /// `/dhan`: when the next server ping is due.
    pub next_ping: Option<Instant>,
    /// May receive order updates: its key has the `trade` scope (access
    /// control on) or it is a loopback peer (access control off).
    pub trade: bool,
    /// Sent `subscribe_orders` (and may trade).
    pub orders: bool,
    /// The option chains it subscribed (by number).
    pub chains: Vec<u32>,
    /// `options` `flushIntervalUs`: at most one write per this (zero: as
    /// soon as anything is queued).
    flush_every: Duration,
    /// With a flush interval: the earliest time of the next write.
    next_flush: Option<Instant>,
}

impl Session {
    /// A session over an upgraded socket; `early` holds bytes read past
    /// the request head (a first frame sent with the handshake).
    pub fn new(
        id: u64,
        stream: ServerStream,
        early: Vec<u8>,
        kind: Kind,
        config: WebSocketConfig,
        cap: usize,
        max_per_sec: u32,
    ) -> Self {
        let stream = ClientStream {
            stream,
            ctrl: Vec::new(),
        };
        Session {
            id,
            ws: WebSocket::from_partially_read(stream, early, Role::Server, Some(config)),
            out: Outbound::with_capacity(8),
            cap,
            kind,
            subs: HashMap::new(),
            depth20: std::collections::HashSet::new(),
            queued: std::collections::HashSet::new(),
            conflated: HashMap::new(),
            behind_since: None,
            dirty: false,
            bucket: TokenBucket::new(max_per_sec),
            ignored: 0,
            ignored_this_second: 0,
            last_notice: None,
            closing: None,
            wrote_at: None,
            key: None,
            key_name: None,
            max_subs: usize::MAX,
            awaiting: false,
            binary: kind.is_dhan(),
            next_ping: None,
            trade: false,
            orders: false,
            chains: Vec::new(),
            flush_every: Duration::ZERO,
            next_flush: None,
        }
    }

    /// Writes to this client at most once per `every` from now on.
    pub fn set_flush_interval(&mut self, every: Duration) {
        self.flush_every = every;
        self.next_flush = None;
    }

    /// With a flush interval, when this client's next write may go (`None`:
    /// now, and the interval restarts). A closing client is never held.
    pub fn flush_wait(&mut self, now: Instant) -> Option<Instant> {
        if self.flush_every.is_zero() || self.closing.is_some() {
            return None;
        }
        match self.next_flush {
            Some(at) if now < at => Some(at),
            _ => {
                self.next_flush = Some(now + self.flush_every);
                None
            }
        }
    }

    /// The connection, for (de)registration.
    pub fn stream_mut(&mut self) -> &mut ServerStream {
        &mut self.ws.get_mut().stream
    }

    /// The next frame from the client (tungstenite's `read`).
    pub fn read(&mut self) -> tungstenite::Result<tungstenite::Message> {
        self.ws.read()
    }

    /// Moves what tungstenite wrote by itself (pongs, close replies) into
    /// the queue. Call after reading.
    pub fn take_control_frames(&mut self) {
        let _ = self.ws.flush();
        let ctrl = &mut self.ws.get_mut().ctrl;
        if !ctrl.is_empty() {
            let raw = Bytes::from(std::mem::take(ctrl));
            self.out.push_raw(raw);
            self.dirty = true;
        }
    }

    /// Whether the next client frame fits the rate limit. Every frame
    /// counts, pings included. An ignored frame is counted; the client
    /// hears about it at most once a second (see [`Session::rate_notice`]).
    pub fn allow_frame(&mut self, now: Instant) -> bool {
        if self.bucket.take(now) {
            return true;
        }
        self.ignored += 1;
        self.ignored_this_second += 1;
        false
    }

    /// The count of frames ignored since the last notice, when a notice is
    /// due (at most one a second).
    pub fn rate_notice(&mut self, now: Instant) -> Option<u32> {
        let due = self.last_notice.map_or(true, |t| {
            now.saturating_duration_since(t) >= Duration::from_secs(1)
        });
        if self.ignored == 0 || !due {
            return None;
        }
        self.last_notice = Some(now);
        Some(std::mem::take(&mut self.ignored))
    }

    /// Frames ignored in the second that just ended (and a new second).
    pub fn take_ignored_this_second(&mut self) -> u32 {
        std::mem::take(&mut self.ignored_this_second)
    }

    /// Queues a price message; conflates once the client is behind.
    pub fn deliver(&mut self, slot: Slot, msg: &Bytes, stats: &FanoutStats, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.dirty = true;
        if self.out.bytes() >= self.cap || !self.conflated.is_empty() {
            self.behind_since.get_or_insert(now);
            if self.conflated.insert(slot, msg.clone()).is_some() {
                stats.conflated.inc();
            }
            return;
        }
        self.push_message(msg);
        stats.count_message(msg.len());
    }

    fn push_message(&mut self, msg: &Bytes) {
        if self.binary {
            self.out.push_binary(msg);
        } else {
            self.out.push_text(msg);
        }
    }

    /// Queues a binary frame that must not be conflated away (`/dhan`: the
    /// market-status packet on connect, a disconnect packet before a close).
    pub fn send_binary(&mut self, msg: &Bytes, stats: &FanoutStats) {
        if self.closing.is_some() {
            return;
        }
        stats.count_message(msg.len());
        self.out.push_binary(msg);
        self.dirty = true;
    }

    /// Queues a server ping (an empty ping frame, `/dhan`).
    pub fn ping(&mut self) {
        if self.closing.is_none() {
            self.out.push_raw(Bytes::from_static(&[0x89, 0x00]));
            self.dirty = true;
        }
    }

    /// Queues a reply that must not be conflated away (errors, pongs,
    /// status). A client that does not read its replies is closed.
    pub fn reply(&mut self, text: String, stats: &FanoutStats, now: Instant) {
        self.reply_bytes(&Bytes::from(text), stats, now);
    }

    /// [`Session::reply`] for a message already rendered and shared by
    /// reference (order updates: one render for every subscriber).
    pub fn reply_bytes(&mut self, msg: &Bytes, stats: &FanoutStats, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if self.out.bytes() > 4 * self.cap {
            stats.slow_closes.inc();
            self.close(
                CloseCode::Policy,
                "too slow: replies not read (send fewer requests or read the socket)",
                now,
            );
            return;
        }
        stats.count_message(msg.len());
        self.out.push_text(msg);
        self.dirty = true;
    }

    /// Whether a flush is due.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Bytes waiting for the socket.
    pub fn queued_bytes(&self) -> usize {
        self.out.bytes()
    }

    /// Writes what the socket takes (one vectored write, more only while
    /// each one empties a full batch), refilling from the conflated set as
    /// the queue drains. Terminates: every pass writes bytes or stops.
    pub fn flush(&mut self, stats: &FanoutStats, now: Instant) -> Health {
        loop {
            if self.out.is_empty() {
                self.refill(stats);
                if self.out.is_empty() {
                    // TLS: the last record may be partly on the wire.
                    match self.ws.get_mut().stream.flush_pending() {
                        Ok(true) => {}
                        Ok(false) => {
                            self.behind_since.get_or_insert(now);
                            return Health::Ok;
                        }
                        Err(_) => return Health::Gone,
                    }
                    self.dirty = false;
                    self.behind_since = None;
                    return match self.closing {
                        Some(_) => Health::Gone,
                        None => Health::Ok,
                    };
                }
            }
            match self.out.write_to(&mut self.ws.get_mut().stream) {
                Ok(n) => {
                    if n > 0 {
                        self.wrote_at = Some(now);
                    }
                    if self.out.bytes() < self.cap {
                        self.refill(stats);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.behind_since.get_or_insert(now);
                    return Health::Ok;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Health::Gone,
            }
        }
    }

    /// Moves conflated messages into the queue while it is under `cap`.
    fn refill(&mut self, stats: &FanoutStats) {
        if self.closing.is_some() {
            return;
        }
        while self.out.bytes() < self.cap {
            let Some(&slot) = self.conflated.keys().next() else {
                return;
            };
            if let Some(msg) = self.conflated.remove(&slot) {
                self.push_message(&msg);
                stats.count_message(msg.len());
            }
        }
    }

    /// True when the client has been behind for longer than `limit`.
    pub fn too_slow(&self, now: Instant, limit: Duration) -> bool {
        self.behind_since
            .is_some_and(|since| now.saturating_duration_since(since) > limit)
    }

    /// Whether a closing session has had its chance to take its close
    /// frame: `grace` without the socket taking a byte, or `max` in all.
    pub fn close_expired(&self, now: Instant, grace: Duration, max: Duration) -> bool {
        let Some(at) = self.closing else {
            return false;
        };
        let last = self.wrote_at.map_or(at, |w| w.max(at));
        now.saturating_duration_since(last) > grace || now.saturating_duration_since(at) > max
    }

    /// The client sent a close frame: tungstenite queued the reply. Drop
    /// whatever else was waiting; the session ends once the reply is out.
    pub fn peer_closed(&mut self, now: Instant) {
        self.conflated.clear();
        self.out.discard_unstarted();
        self.take_control_frames();
        self.closing = Some(now);
    }

    /// Queues a close frame with `code` and `reason` after what is queued
    /// (a slow client's backlog is dropped first: it would never be read);
    /// the loop drops the connection once it is written, or after a grace.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(now);
        self.conflated.clear();
        if code == CloseCode::Policy {
            self.out.discard_unstarted();
        }
        let _ = self.ws.close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        self.take_control_frames();
        self.dirty = true;
    }
}

/// A token bucket: `rate` frames per second, bursts of up to `2 × rate`.
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
pub(crate) mod tests {
    use super::*;
    use mio::net::TcpStream;
    use std::net::{TcpListener, TcpStream as StdStream};

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

    /// A session over a real loopback socket pair; the peer is returned
    /// for reading what the session wrote.
    pub(crate) fn pair(cap: usize) -> (Session, StdStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let s = Session::new(
            1,
            ServerStream::Plain(TcpStream::from_std(server)),
            Vec::new(),
            Kind::Feed,
            WebSocketConfig::default(),
            cap,
            50,
        );
        (s, peer)
    }

    /// Reads whole server frames (unmasked text) from the peer.
    pub(crate) fn read_frames(peer: &mut StdStream, n: usize) -> Vec<Vec<u8>> {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let mut h = [0u8; 2];
            peer.read_exact(&mut h).unwrap();
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    peer.read_exact(&mut b).unwrap();
                    usize::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    peer.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => usize::from(n),
            };
            let mut body = vec![0u8; len];
            peer.read_exact(&mut body).unwrap();
            out.push(body);
        }
        out
    }

    #[test]
    fn a_message_larger_than_the_queue_is_delivered_and_flush_ends() {
        // Regression: a /ws/prices body larger than client_queue_bytes used
        // to spin the fanout thread forever in flush.
        let stats = FanoutStats::default();
        let (mut s, mut peer) = pair(1024);
        let big = Bytes::from(vec![b'p'; 300_000]);
        let now = Instant::now();
        s.deliver(Slot::Prices, &big, &stats, now);
        let reader = std::thread::spawn(move || read_frames(&mut peer, 2));
        let t0 = Instant::now();
        while s.queued_bytes() > 0 {
            assert_eq!(s.flush(&stats, Instant::now()), Health::Ok);
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
        }
        // A second one, while nothing else is queued, also goes out.
        s.deliver(Slot::Prices, &big, &stats, now);
        while s.queued_bytes() > 0 {
            s.flush(&stats, Instant::now());
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
        }
        let frames = reader.join().unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() == 300_000));
    }

    #[test]
    fn behind_clients_are_conflated_and_replies_are_kept() {
        let stats = FanoutStats::default();
        let (mut s, mut peer) = pair(100);
        let now = Instant::now();
        let key = InstrumentKey::new(crate::domain::Segment::NseEq, 1);
        for i in 0..10 {
            let m = Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60)));
            s.deliver(Slot::Instrument(key), &m, &stats, now);
        }
        assert_eq!(
            stats.conflated.get(),
            7,
            "two queued, the third held, seven replaced"
        );
        s.reply(r#"{"type":"pong"}"#.into(), &stats, now);
        while s.queued_bytes() > 0 || s.is_dirty() {
            s.flush(&stats, now);
        }
        let frames = read_frames(&mut peer, 4);
        let texts: Vec<String> = frames
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        assert!(texts[0].starts_with("{\"n\":0"), "{texts:?}");
        assert!(texts[1].starts_with("{\"n\":1"), "{texts:?}");
        assert_eq!(texts[2], r#"{"type":"pong"}"#, "the reply is not dropped");
        assert!(texts[3].starts_with("{\"n\":9"), "newest kept: {texts:?}");
    }
}
