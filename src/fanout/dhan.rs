//! `/dhan`: the relay as a DhanHQ Live Market Feed v2 server.
//!
//! A client connects as it would to `wss://api-feed.dhan.co`
//! (`/dhan?version=2&token=…&clientId=…&authType=2`), sends DhanHQ's JSON
//! requests (RequestCode 15–22 and 12, parsed by [`crate::wire::request`],
//! the parser the simulator uses) and gets DhanHQ's binary packets, encoded
//! by [`FeedMessage::encode`] from the engine's state — the same encoder the
//! simulator sends with, so a packet reaches a `/dhan` client byte for byte
//! as DhanHQ sent it to the relay.
//!
//! A `/dhan` client is an ordinary fanout [`Session`] of [`Kind::Dhan`]: same
//! queue, slow-client policy, rate limit and [`super::topics::Topics`] as a
//! `/ws` client, so JSON and DhanHQ clients of one instrument share one
//! upstream subscription in the highest mode. Only three things differ:
//! requests are DhanHQ's ([`Worker::on_dhan_text`]), updates are packets
//! ([`DhanRenderer`], rendered once per update and packet type and shared by
//! every subscriber, as the JSON path does), and errors are a disconnect
//! packet (code 50) followed by a close, since a DhanHQ client has no way to
//! read a JSON error.
//!
//! What a client gets, like DhanHQ: a market-status packet on connect; a
//! previous-close packet on subscribe when the relay knows it (and the
//! instrument's latest packet in the client's mode); then, per update:
//!
//! | update \ mode | ticker | quote | full |
//! |---|---|---|---|
//! | ticker packet | ticker | ticker | ticker |
//! | quote packet | ticker | quote | quote |
//! | full packet | ticker | quote (+ OI when it changed) | full |
//! | OI packet | — | OI | OI |
//! | previous close | prev close | prev close | prev close |
//!
//! Error → disconnect reason (docs/dhanhq-protocol.md, *The relay as a
//! DhanHQ server*): see [`refusal`].

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::CloseCode;

use super::session::{Kind, Session, Slot};
use super::Worker;
use crate::book::{Depth20, InstrumentState, Update, UpdateKind};
use crate::domain::{InstrumentKey, Mode, Segment};
use crate::wire::depth::{DepthBook, DepthMessage, Side};
use crate::wire::feed::{FeedData, FeedMessage, Full, Oi, Ticker};
use crate::wire::request::{self, ParseError, RequestCode, MAX_PER_DEPTH_MESSAGE, MAX_PER_MESSAGE};
use crate::wire::DisconnectReason;

/// How often the relay pings a `/dhan` client: DhanHQ's interval (its v2
/// docs: a ping every 10 s; the simulator does the same). The SDK's
/// `websockets` client answers pings by itself.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// Arena block size for rendered packets.
const ARENA: usize = 64 * 1024;

/// The market-status packet sent on connect (code 7, a bare header; segment
/// IDX_I, security id 0, as the simulator sends it).
pub const MARKET_STATUS: [u8; 8] = [7, 8, 0, 0, 0, 0, 0, 0];

/// Disconnect reasons the relay sends on `/dhan` besides DhanHQ's 805–809
/// (DhanHQ v2 docs, *Annexure*, data API errors).
pub mod reason {
    /// 804: requested number of instruments exceeds the limit.
    pub const TOO_MANY_INSTRUMENTS: u16 = 804;
    /// 809: authentication failed (SDK text).
    pub const AUTH_FAILED: u16 = 809;
    /// 813: invalid security id.
    pub const INVALID_SECURITY_ID: u16 = 813;
    /// 814: invalid request.
    pub const INVALID_REQUEST: u16 = 814;
}

/// The packet types a `/dhan` client can be sent for an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Code 2.
    Ticker,
    /// Code 4.
    Quote,
    /// Code 8.
    Full,
    /// Code 5.
    Oi,
    /// Code 6.
    PrevClose,
}

impl Packet {
    /// Every type, in index order.
    pub const ALL: [Packet; 5] = [
        Packet::Ticker,
        Packet::Quote,
        Packet::Full,
        Packet::Oi,
        Packet::PrevClose,
    ];

    /// The response code (first header byte).
    pub const fn code(self) -> u8 {
        use crate::wire::feed::code;
        match self {
            Packet::Ticker => code::TICKER,
            Packet::Quote => code::QUOTE,
            Packet::Full => code::FULL,
            Packet::Oi => code::OI,
            Packet::PrevClose => code::PREV_CLOSE,
        }
    }

    /// Index into a per-type array.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The packet for `state`, when what it needs is known.
    pub fn message(self, s: &InstrumentState) -> Option<FeedMessage> {
        let data = match self {
            Packet::Ticker => FeedData::Ticker(Ticker {
                ltp: s.ltp?,
                ltt: s.ltt,
            }),
            Packet::Quote => FeedData::Quote(s.quote?),
            Packet::Full => {
                let f = s.full?;
                FeedData::Full(Full {
                    quote: s.quote?,
                    oi: s.oi.unwrap_or(0),
                    oi_day_high: f.oi_day_high,
                    oi_day_low: f.oi_day_low,
                    depth: f.depth,
                })
            }
            Packet::Oi => FeedData::Oi(Oi { oi: s.oi? }),
            Packet::PrevClose => FeedData::PrevClose(s.prev_close?),
        };
        Some(FeedMessage::Data(s.key, data))
    }
}

/// The packets a `mode` subscriber gets for an update of `kind` (table in
/// the module docs); `oi_changed`: a full update moved the open interest.
pub fn packets_for(kind: UpdateKind, mode: Mode, oi_changed: bool) -> &'static [Packet] {
    use Packet as P;
    match (kind, mode) {
        (UpdateKind::Ticker, _) => &[P::Ticker],
        (UpdateKind::Quote | UpdateKind::Full, Mode::Ticker) => &[P::Ticker],
        (UpdateKind::Quote, _) => &[P::Quote],
        (UpdateKind::Full, Mode::Quote) if oi_changed => &[P::Quote, P::Oi],
        (UpdateKind::Full, Mode::Quote) => &[P::Quote],
        (UpdateKind::Full, Mode::Full) => &[P::Full],
        (UpdateKind::Oi, Mode::Ticker) => &[],
        (UpdateKind::Oi, _) => &[P::Oi],
        (UpdateKind::PrevClose, _) => &[P::PrevClose],
    }
}

/// The packet that shows `state` in `mode` to a new subscriber, lowered to
/// what is known; `None` without a price.
pub fn snapshot_packet(s: &InstrumentState, mode: Mode) -> Option<Packet> {
    s.ltp?;
    Some(match (mode, s.quote, s.full) {
        (Mode::Full, Some(_), Some(_)) => Packet::Full,
        (Mode::Full | Mode::Quote, Some(_), _) => Packet::Quote,
        _ => Packet::Ticker,
    })
}

/// Encodes packets into shared bytes: one render per update and packet
/// type, carved out of a 64 KiB arena, so queueing a packet to every
/// subscriber is a reference count and a packet costs no allocation of its
/// own. Keep one per thread.
#[derive(Debug, Default)]
pub struct DhanRenderer {
    buf: Vec<u8>,
    arena: BytesMut,
}

impl DhanRenderer {
    /// A new renderer.
    pub fn new() -> Self {
        Self::default()
    }

    /// `msg` as one packet, exactly as DhanHQ sends it.
    pub fn encode(&mut self, msg: &FeedMessage) -> Bytes {
        self.buf.clear();
        msg.encode(&mut self.buf);
        if self.arena.capacity() < self.buf.len() {
            self.arena.reserve(ARENA.max(self.buf.len()));
        }
        self.arena.extend_from_slice(&self.buf);
        self.arena.split().freeze()
    }

    /// One side of a 20-level book as the depth feed's packet (code 41 or
    /// 51, that side's sequence), exactly as DhanHQ sends it.
    pub fn depth(&mut self, d: &Depth20, side: Side) -> Bytes {
        let (rows, sequence) = match side {
            Side::Bid => (d.bids, d.bid_sequence),
            Side::Ask => (d.asks, d.ask_sequence),
        };
        self.buf.clear();
        DepthMessage::Book(DepthBook {
            key: d.key,
            side,
            sequence,
            rows,
        })
        .encode(&mut self.buf);
        if self.arena.capacity() < self.buf.len() {
            self.arena.reserve(ARENA.max(self.buf.len()));
        }
        self.arena.extend_from_slice(&self.buf);
        self.arena.split().freeze()
    }

    /// The `packet` for `state`, if its fields are known.
    pub fn packet(&mut self, packet: Packet, state: &InstrumentState) -> Option<Bytes> {
        packet.message(state).map(|m| self.encode(&m))
    }
}

/// The disconnect reason and a log text for a request DhanHQ would refuse.
///
/// | what | reason |
/// |---|---|
/// | not JSON, not a request's shape, missing or disagreeing `InstrumentCount` / `InstrumentList` | 814 invalid request |
/// | unknown `RequestCode` (or 23, a depth-feed code, on the main feed) | 814 |
/// | unknown `ExchangeSegment` | 814 |
/// | bad `SecurityId` | 813 invalid security id |
/// | over 100 instruments in one request, or over the relay's per-client limit | 804 instruments exceed the limit |
/// | a binary frame | 814 |
/// | wrong relay API key (access control on) | 809 authentication failed |
pub fn refusal(e: &ParseError) -> u16 {
    match e {
        ParseError::BadSecurityId { .. } => reason::INVALID_SECURITY_ID,
        _ => reason::INVALID_REQUEST,
    }
}

/// The disconnect packet for `code`.
pub fn disconnect_packet(code: u16) -> Bytes {
    let mut b = Vec::with_capacity(10);
    FeedMessage::Disconnect(DisconnectReason::from_code(code)).encode(&mut b);
    Bytes::from(b)
}

impl Worker {
    /// A new `/dhan` client: the market-status packet (or, with a refused
    /// key, the 809 disconnect), and its ping timer.
    pub(super) fn greet_dhan(&mut self, s: &mut Session, refused: bool, now: Instant) {
        if refused {
            self.dhan_disconnect(s, reason::AUTH_FAILED, "authentication failed", now);
            return;
        }
        s.send_binary(&Bytes::from_static(&MARKET_STATUS), &self.stats);
        s.next_ping = Some(now + PING_EVERY);
    }

    /// Sends DhanHQ's disconnect packet with `code`, then a close frame.
    pub(super) fn dhan_disconnect(&self, s: &mut Session, code: u16, why: &str, now: Instant) {
        if s.closing.is_some() {
            return;
        }
        self.stats.protocol_closes.inc();
        log::info!("closing /dhan client {}: disconnect {code} ({why})", s.id);
        let packet = if s.kind == Kind::DhanDepth {
            depth_disconnect_packet(code)
        } else {
            disconnect_packet(code)
        };
        s.send_binary(&packet, &self.stats);
        s.close(CloseCode::Normal, why, now);
    }

    /// A text frame from a `/dhan` client: one DhanHQ request.
    pub(super) fn on_dhan_text(&mut self, i: usize, s: &mut Session, text: &str, now: Instant) {
        let req = match request::parse(text) {
            Ok(req) => req,
            Err(e) => {
                let why = e.to_string();
                return self.dhan_disconnect(s, refusal(&e), &why, now);
            }
        };
        let Some((mode, subscribe)) = req.code.mode_change() else {
            return match req.code {
                RequestCode::Disconnect => {
                    log::debug!("/dhan client {}: RequestCode 12, closing", s.id);
                    s.close(CloseCode::Normal, "disconnect requested", now);
                }
                _ => self.dhan_disconnect(
                    s,
                    reason::INVALID_REQUEST,
                    "RequestCode 23 belongs to the depth feed",
                    now,
                ),
            };
        };
        if req.instruments.len() > MAX_PER_MESSAGE {
            let why = format!(
                "{} instruments in one request (DhanHQ takes at most {MAX_PER_MESSAGE})",
                req.instruments.len()
            );
            return self.dhan_disconnect(s, reason::TOO_MANY_INSTRUMENTS, &why, now);
        }
        if subscribe {
            self.subscribe(i, s, req.instruments, mode, now);
        } else {
            // DhanHQ unsubscribes whatever the mode of the code; what the
            // client does not hold is ignored.
            for key in req.instruments {
                if s.subs.remove(&key).is_some() {
                    s.queued.remove(&key);
                    self.release(i, key);
                    self.stats.subscriptions.sub(1);
                }
            }
        }
    }

    /// A `/dhan/twentydepth` client (DhanHQ's 20-level depth feed) is
    /// greeted with nothing (DhanHQ's depth feed sends no market status);
    /// a refused key gets the depth feed's disconnect packet, 809.
    pub(super) fn greet_dhan_depth(&mut self, s: &mut Session, refused: bool, now: Instant) {
        if refused {
            self.dhan_disconnect(s, reason::AUTH_FAILED, "authentication failed", now);
            return;
        }
        s.next_ping = Some(now + PING_EVERY);
    }

    /// A text frame from a `/dhan/twentydepth` client: RequestCode 23
    /// (subscribe, at most 50, NSE_EQ and NSE_FNO only), 24 or 25
    /// (unsubscribe: the SDK's and the docs' codes), 12 (close). Its
    /// instruments share the depth feed subscription with `/ws` depth20
    /// clients; it gets depth packets only, no main-feed packets.
    pub(super) fn on_dhan_depth_text(
        &mut self,
        i: usize,
        s: &mut Session,
        text: &str,
        now: Instant,
    ) {
        let req = match request::parse(text) {
            Ok(req) => req,
            Err(e) => {
                let why = e.to_string();
                return self.dhan_disconnect(s, refusal(&e), &why, now);
            }
        };
        match req.code {
            RequestCode::Disconnect => {
                log::debug!("/dhan/twentydepth client {}: RequestCode 12, closing", s.id);
                s.close(CloseCode::Normal, "disconnect requested", now);
            }
            RequestCode::SubscribeDepth => {
                if req.instruments.len() > MAX_PER_DEPTH_MESSAGE {
                    let why = format!(
                        "{} instruments in one request (the depth feed takes at most {MAX_PER_DEPTH_MESSAGE})",
                        req.instruments.len()
                    );
                    return self.dhan_disconnect(s, reason::TOO_MANY_INSTRUMENTS, &why, now);
                }
                if let Some(k) = req
                    .instruments
                    .iter()
                    .find(|k| !matches!(k.segment, Segment::NseEq | Segment::NseFno))
                {
                    let why = format!("20-level depth covers NSE_EQ and NSE_FNO only, not {k}");
                    return self.dhan_disconnect(s, reason::INVALID_REQUEST, &why, now);
                }
                let new = req
                    .instruments
                    .iter()
                    .filter(|k| !s.depth20.contains(k))
                    .count();
                let limit = s.max_subs.min(self.config.max_subscriptions_per_client);
                if s.depth20.len() + new > limit {
                    let why = format!(
                        "a client may hold {limit} instruments (holding {}, asked for {new} more)",
                        s.depth20.len()
                    );
                    return self.dhan_disconnect(s, reason::TOO_MANY_INSTRUMENTS, &why, now);
                }
                let snapshot = self.snapshot.load();
                for key in req.instruments {
                    if !s.depth20.insert(key) {
                        continue;
                    }
                    self.hold_depth(i, key);
                    if let Some(d) = snapshot.depth20(key) {
                        for side in [Side::Bid, Side::Ask] {
                            let b = self.dhan.depth(d, side);
                            let code = depth_code(side);
                            s.deliver(Slot::Packet(key, code), &b, &self.stats, now);
                        }
                    }
                }
            }
            RequestCode::UnsubscribeDepth => {
                for key in req.instruments {
                    if s.depth20.remove(&key) {
                        self.release_depth(i, key);
                    }
                }
            }
            other => {
                let why = format!(
                    "RequestCode {} is not a depth-feed request (23, 24 or 25, 12)",
                    other.code()
                );
                self.dhan_disconnect(s, reason::INVALID_REQUEST, &why, now);
            }
        }
    }

    /// What a new `/dhan` subscriber of `key` gets at once: the previous
    /// close when known, then the latest packet in its mode.
    pub(super) fn dhan_snapshot(
        &mut self,
        s: &mut Session,
        state: &InstrumentState,
        mode: Mode,
        now: Instant,
    ) {
        let key = state.key;
        if let Some(b) = self.dhan.packet(Packet::PrevClose, state) {
            s.deliver(
                Slot::Packet(key, Packet::PrevClose.code()),
                &b,
                &self.stats,
                now,
            );
        }
        if let Some(p) = snapshot_packet(state, mode) {
            if let Some(b) = self.dhan.packet(p, state) {
                s.deliver(Slot::Packet(key, p.code()), &b, &self.stats, now);
            }
        }
    }

    /// Server pings, every [`PING_EVERY`], to `/dhan` clients.
    pub(super) fn ping_dhan(&mut self, now: Instant) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let Some(s) = s.as_mut().filter(|s| s.kind.is_dhan()) else {
                continue;
            };
            if s.next_ping.is_some_and(|t| now >= t) {
                s.ping();
                s.next_ping = Some(now + PING_EVERY);
                self.dirty.push(i);
            }
        }
    }
}

/// The depth feed's response code for a side.
pub const fn depth_code(side: Side) -> u8 {
    match side {
        Side::Bid => crate::wire::depth::code::BID,
        Side::Ask => crate::wire::depth::code::ASK,
    }
}

/// The depth feed's disconnect packet (code 50) with reason `code`.
pub fn depth_disconnect_packet(code: u16) -> Bytes {
    let mut b = Vec::with_capacity(crate::wire::depth::DISCONNECT_LEN);
    DepthMessage::Disconnect(DisconnectReason::from_code(code)).encode(&mut b);
    Bytes::from(b)
}

/// Whether a full update changed the open interest since `before`.
pub fn oi_changed(before: Option<&Update>, after: &Update) -> bool {
    before.map_or(true, |b| b.state.oi != after.state.oi)
}

/// The instrument a market-status packet names on connect.
pub const MARKET_STATUS_KEY: InstrumentKey = InstrumentKey {
    segment: Segment::IdxI,
    security_id: crate::domain::SecurityId(0),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::FullExtras;
    use crate::wire::feed::{DepthLevel, PrevClose, Quote};

    fn state() -> InstrumentState {
        let mut s = InstrumentState::new(InstrumentKey::new(Segment::NseFno, 35001));
        s.ltp = Some(101.25);
        s.ltt = 1_729_412_345;
        s.quote = Some(Quote {
            ltp: 101.25,
            ltq: 75,
            ltt: 1_729_412_345,
            avg_price: 100.5,
            volume: 1000,
            total_sell_qty: 20,
            total_buy_qty: 30,
            open: 99.0,
            close: 98.0,
            high: 102.0,
            low: 97.5,
        });
        s.oi = Some(5000);
        s.full = Some(FullExtras {
            oi_day_high: 5100,
            oi_day_low: 4900,
            depth: [DepthLevel {
                bid_qty: 1,
                ask_qty: 2,
                bid_orders: 3,
                ask_orders: 4,
                bid_price: 101.2,
                ask_price: 101.3,
            }; 5],
        });
        s.prev_close = Some(PrevClose {
            prev_close: 98.0,
            prev_oi: 4800,
        });
        s
    }

    #[test]
    fn packets_decode_back_to_the_state() {
        let s = state();
        let mut r = DhanRenderer::new();
        for p in Packet::ALL {
            let b = r.packet(p, &s).unwrap();
            let decoded = crate::wire::feed::decode(&b).unwrap();
            assert_eq!(decoded.bytes.len(), b.len());
            assert_eq!(decoded.message, p.message(&s).unwrap());
            assert_eq!(b[0], p.code());
        }
        let mut b = Vec::new();
        FeedMessage::Data(MARKET_STATUS_KEY, FeedData::MarketStatus).encode(&mut b);
        assert_eq!(b, MARKET_STATUS);
        assert_eq!(
            &disconnect_packet(809)[..],
            &[50, 10, 0, 0, 0, 0, 0, 0, 0x29, 0x03]
        );
    }

    #[test]
    fn packet_choice_follows_the_table() {
        use Packet as P;
        assert_eq!(
            packets_for(UpdateKind::Quote, Mode::Ticker, false),
            [P::Ticker]
        );
        assert_eq!(
            packets_for(UpdateKind::Full, Mode::Quote, true),
            [P::Quote, P::Oi]
        );
        assert_eq!(packets_for(UpdateKind::Full, Mode::Full, true), [P::Full]);
        assert!(packets_for(UpdateKind::Oi, Mode::Ticker, true).is_empty());
        assert_eq!(
            packets_for(UpdateKind::PrevClose, Mode::Ticker, false),
            [P::PrevClose]
        );
        let mut s = state();
        assert_eq!(snapshot_packet(&s, Mode::Full), Some(P::Full));
        s.full = None;
        assert_eq!(snapshot_packet(&s, Mode::Full), Some(P::Quote));
        s.ltp = None;
        assert_eq!(snapshot_packet(&s, Mode::Ticker), None);
    }

    #[test]
    fn dhan_sessions_get_a_ping_every_ten_seconds_and_json_ones_do_not() {
        use crate::serve_tls::ServerStream;
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        use tungstenite::protocol::WebSocketConfig;

        let mut h = super::super::test_worker::worker(10);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = Vec::new();
        let now = Instant::now();
        for kind in [Kind::Dhan, Kind::Feed] {
            let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            peer.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let (server, _) = l.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let stream = ServerStream::Plain(mio::net::TcpStream::from_std(server));
            let cfg = WebSocketConfig::default();
            let mut s = Session::new(1, stream, Vec::new(), kind, cfg, 1 << 16, 50);
            s.next_ping = Some(now);
            h.worker.sessions.push(Some(Box::new(s)));
            peers.push(peer);
        }
        h.worker.ping_dhan(now + Duration::from_millis(1));
        h.worker.flush_dirty(now);
        let mut got = [0u8; 2];
        peers[0].read_exact(&mut got).unwrap();
        assert_eq!(got, [0x89, 0x00], "an empty ping frame");
        assert!(peers[1].read(&mut got).is_err(), "no ping on /ws");
        let next = h.worker.sessions[0].as_ref().unwrap().next_ping.unwrap();
        assert_eq!(next, now + Duration::from_millis(1) + PING_EVERY);
        // Not again before then.
        h.worker.ping_dhan(next - Duration::from_millis(1));
        assert!(h.worker.dirty.is_empty());
    }
}
