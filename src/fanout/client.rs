//! The client protocol on a fanout shard: reading frames (a budget per
//! client per turn), the rate limit, subscribe/unsubscribe/ping, and
//! applying the resolver's answers.
//!
//! Work a client controls is bounded: at most [`READ_BUDGET`] frames and
//! [`READ_BYTES_BUDGET`] bytes of text per turn (the rest wait for the next
//! turn, so a flood from one socket cannot hold the loop; parsing a 64 KiB
//! message is about 0.3 ms), every frame — pings included — counts against the rate
//! limit, a rate-limited frame is dropped unparsed with at most one notice
//! a second, and a message naming symbols goes to the resolver thread
//! while the client's socket waits.

use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use super::protocol::{self, ClientMessage, InstrumentRef};
use super::resolver::{Job, Op};
use super::session::{Kind, Session, Slot};
use super::topics::Admission;
use super::{Worker, READ_BUDGET, READ_BYTES_BUDGET};
use crate::domain::{InstrumentKey, Mode, Segment};

/// `subscribe_orders` while trading is off.
pub const ORDERS_OFF: &str = "trading is off: set [trading] enabled = true in the config";
/// `subscribe_orders` from a client that may not trade.
pub const ORDERS_NOT_ALLOWED: &str = "this key lacks the 'trade' scope";

/// Instruments named in one error message, at most.
const NAMED_IN_ERROR: usize = 10;

/// How reading a client ended this turn.
enum Read {
    /// Nothing more to read (or reading stopped: closing, awaiting).
    Done,
    /// The budget ran out with frames possibly left: read again next turn.
    More,
    /// The connection is gone.
    Gone,
}

impl Worker {
    /// Reads every session that has input (within its budget).
    pub(super) fn read_clients(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.readable);
        list.sort_unstable();
        list.dedup();
        for &i in &list {
            let Some(mut s) = self.sessions.get_mut(i).and_then(Option::take) else {
                continue;
            };
            if s.awaiting || s.closing.is_some() {
                self.sessions[i] = Some(s);
                continue;
            }
            // A panic while serving one client (a bug, ours or a
            // dependency's) drops that client only.
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.read_session(i, &mut s, now)
            }));
            s.take_control_frames();
            if s.is_dirty() {
                self.dirty.push(i);
            }
            self.sessions[i] = Some(s);
            match read {
                Ok(Read::Done) => {}
                Ok(Read::More) => self.readable.push(i),
                Ok(Read::Gone) => self.close_slot(i),
                Err(_) => {
                    log::error!("a client handler panicked; that client was dropped");
                    for key in self.local.held_by(i) {
                        self.release(i, key);
                    }
                    self.close_slot(i);
                }
            }
        }
    }

    fn read_session(&mut self, i: usize, s: &mut Session, now: Instant) -> Read {
        let mut read = Read::More;
        let mut text_bytes = 0;
        for _ in 0..READ_BUDGET {
            match s.read() {
                Ok(Message::Text(text)) => {
                    text_bytes += text.len();
                    if s.allow_frame(now) {
                        self.on_text(i, s, text.as_str(), now);
                    } else {
                        self.stats.rate_limited.inc();
                    }
                    if s.awaiting || s.closing.is_some() {
                        read = Read::Done;
                        break;
                    }
                    if text_bytes >= READ_BYTES_BUDGET {
                        break; // parsing is the cost: one big message a turn
                    }
                }
                Ok(Message::Binary(_)) if s.kind.is_dhan() => {
                    let why = "binary frames are not requests; send DhanHQ's JSON requests";
                    self.dhan_disconnect(s, super::dhan::reason::INVALID_REQUEST, why, now);
                    read = Read::Done;
                    break;
                }
                Ok(Message::Binary(_)) => {
                    self.stats.protocol_closes.inc();
                    s.close(
                        CloseCode::Unsupported,
                        "binary frames are not understood; send JSON text",
                        now,
                    );
                    read = Read::Done;
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {
                    // tungstenite queued the pong; the frame still counts.
                    if !s.allow_frame(now) {
                        self.stats.rate_limited.inc();
                    }
                }
                Ok(Message::Close(_)) => {
                    s.peer_closed(now);
                    read = Read::Done;
                    break;
                }
                Ok(Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    read = Read::Done;
                    break;
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    self.stats.protocol_closes.inc();
                    let why = format!(
                        "message too big (limit {} bytes)",
                        self.config.max_frame_bytes
                    );
                    s.close(CloseCode::Size, &why, now);
                    read = Read::Done;
                    break;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    self.stats.protocol_closes.inc();
                    s.close(CloseCode::Invalid, "text frame is not valid UTF-8", now);
                    read = Read::Done;
                    break;
                }
                Err(tungstenite::Error::Protocol(e)) => {
                    self.stats.protocol_closes.inc();
                    s.close(CloseCode::Protocol, &format!("protocol error: {e}"), now);
                    read = Read::Done;
                    break;
                }
                Err(_) => return Read::Gone,
            }
        }
        if let Some(ignored) = s.rate_notice(now) {
            self.client_error(
                s,
                &format!(
                    "rate limit: at most {} messages per second (pings included); {ignored} ignored",
                    self.config.max_messages_per_sec
                ),
                now,
            );
        }
        if s.closing.is_some() && s.queued_bytes() == 0 && !s.is_dirty() {
            return Read::Gone;
        }
        read
    }

    fn on_text(&mut self, i: usize, s: &mut Session, text: &str, now: Instant) {
        let started = Instant::now();
        if s.kind == Kind::Prices {
            self.client_error(s, "/ws/prices only sends; subscribe on /ws", now);
            return;
        }
        if s.kind == Kind::DhanDepth {
            self.on_dhan_depth_text(i, s, text, now);
            self.message_latency
                .record(started.elapsed().as_nanos() as u64);
            return;
        }
        if s.kind == Kind::Dhan {
            self.on_dhan_text(i, s, text, now);
            self.message_latency
                .record(started.elapsed().as_nanos() as u64);
            return;
        }
        match protocol::parse(text, self.config.max_instruments_per_message) {
            Err(e) => self.client_error(s, &e.to_string(), now),
            Ok(ClientMessage::Ping) => s.reply(r#"{"type":"pong"}"#.to_string(), &self.stats, now),
            Ok(ClientMessage::Subscribe { instruments, mode }) => {
                self.request(i, s, Op::Subscribe(mode), instruments, now)
            }
            Ok(ClientMessage::SubscribeDepth20 { instruments }) => {
                self.request(i, s, Op::SubscribeDepth20, instruments, now)
            }
            Ok(ClientMessage::Unsubscribe { instruments }) => {
                self.request(i, s, Op::Unsubscribe, instruments, now)
            }
            Ok(ClientMessage::SubscribeOrders) => self.subscribe_orders(s, now),
            Ok(ClientMessage::SubscribeChain {
                underlying,
                expiry,
                strikes,
            }) => self.subscribe_chain(i, s, underlying, expiry, strikes, now),
            Ok(ClientMessage::UnsubscribeChain { chain }) => self.unsubscribe_chain(s, &chain, now),
            Ok(ClientMessage::UnsubscribeOrders) => {
                s.orders = false;
                s.reply(
                    r#"{"type":"unsubscribed","orders":true}"#.to_string(),
                    &self.stats,
                    now,
                );
            }
            Ok(ClientMessage::Options { flush_interval_us }) => {
                s.set_flush_interval(Duration::from_micros(u64::from(flush_interval_us)));
                s.reply(
                    format!(r#"{{"type":"options","flushIntervalUs":{flush_interval_us}}}"#),
                    &self.stats,
                    now,
                );
            }
        }
        self.message_latency
            .record(started.elapsed().as_nanos() as u64);
    }

    /// Applies a request at once when it names instruments by key only;
    /// otherwise hands it to the resolver and stops reading the client.
    fn request(
        &mut self,
        i: usize,
        s: &mut Session,
        op: Op,
        refs: Vec<InstrumentRef>,
        now: Instant,
    ) {
        if refs.iter().any(|r| matches!(r, InstrumentRef::Symbol(_))) {
            let job = Job {
                slot: i,
                session: s.id,
                op,
                refs,
            };
            if self.jobs.send(job).is_ok() {
                s.awaiting = true;
                self.stats.resolutions.inc();
            } else {
                self.client_error(s, "symbol lookup is unavailable; use segment and id", now);
            }
            return;
        }
        let keys = refs
            .into_iter()
            .filter_map(|r| match r {
                InstrumentRef::Key(k) => Some(k),
                InstrumentRef::Symbol(_) => None,
            })
            .collect();
        self.apply(i, s, op, keys, now);
    }

    fn apply(&mut self, i: usize, s: &mut Session, op: Op, keys: Vec<InstrumentKey>, now: Instant) {
        match op {
            Op::Subscribe(mode) => {
                // A plain mode replaces depth20 on these instruments.
                for key in &keys {
                    if s.depth20.remove(key) {
                        self.release_depth(i, *key);
                    }
                }
                self.subscribe(i, s, keys, mode, now)
            }
            Op::SubscribeDepth20 => self.subscribe_depth20(i, s, keys, now),
            Op::Unsubscribe => self.unsubscribe(i, s, keys, now),
        }
    }

    /// Resolver answers: apply each to its session (if still connected)
    /// and read that client again.
    pub(super) fn take_answers(&mut self, now: Instant) {
        while let Ok(answer) = self.answers.try_recv() {
            let i = answer.slot;
            let Some(mut s) = self.sessions.get_mut(i).and_then(Option::take) else {
                continue;
            };
            if s.id != answer.session {
                self.sessions[i] = Some(s);
                continue;
            }
            s.awaiting = false;
            let started = Instant::now();
            if let Some(e) = &answer.error {
                self.client_error(&mut s, e, now);
            }
            self.apply(i, &mut s, answer.op, answer.keys, now);
            self.message_latency
                .record(started.elapsed().as_nanos() as u64);
            if s.is_dirty() {
                self.dirty.push(i);
            }
            self.sessions[i] = Some(s);
            self.readable.push(i);
        }
    }

    /// `subscribe_orders` on `/ws`: trading must be on and the client
    /// allowed to trade ([`Session::trade`]).
    fn subscribe_orders(&self, s: &mut Session, now: Instant) {
        if self.orders.is_none() {
            self.client_error(s, ORDERS_OFF, now);
        } else if !s.trade {
            self.client_error(s, ORDERS_NOT_ALLOWED, now);
        } else {
            s.orders = true;
            s.reply(
                r#"{"type":"subscribed","orders":true}"#.to_string(),
                &self.stats,
                now,
            );
        }
    }

    pub(super) fn client_error(&self, s: &mut Session, message: &str, now: Instant) {
        self.stats.client_errors.inc();
        if s.kind.is_dhan() {
            // DhanHQ's protocol has no error message: logged only.
            log::debug!("/dhan client {}: {message}", s.id);
            return;
        }
        s.reply(protocol::error_message(message), &self.stats, now);
    }

    pub(super) fn subscribe(
        &mut self,
        i: usize,
        s: &mut Session,
        mut keys: Vec<InstrumentKey>,
        mode: Mode,
        now: Instant,
    ) {
        keys.sort_unstable();
        keys.dedup();
        let new = keys.iter().filter(|k| !s.subs.contains_key(k)).count();
        let limit = s.max_subs.min(self.config.max_subscriptions_per_client);
        if s.subs.len() + new > limit && s.kind == Kind::Dhan {
            let why = format!(
                "a client may hold {limit} instruments (holding {}, asked for {new} more)",
                s.subs.len()
            );
            self.dhan_disconnect(s, super::dhan::reason::TOO_MANY_INSTRUMENTS, &why, now);
            return;
        }
        if s.subs.len() + new > limit {
            self.client_error(s, &format!(
                "subscription limit: a client may hold {limit} instruments (holding {}, asked for {new} more); nothing subscribed",
                s.subs.len()
            ), now);
            return;
        }
        let snapshot = self.snapshot.load();
        let master = self.master.load();
        let mut queued = Vec::new();
        for key in keys {
            // Named once here, so every update (a look-up) carries it.
            if let (std::collections::hash_map::Entry::Vacant(e), Some(inst)) =
                (self.symbols.entry(key), master.get(key))
            {
                e.insert(inst.symbol().to_string());
            }
            if s.subs.insert(key, mode).is_none() {
                self.stats.subscriptions.inc();
            }
            if self.hold(i, key, mode) == Admission::Queued {
                s.queued.insert(key);
                queued.push(key);
                continue;
            }
            // Snapshot on subscribe: the fanout's own latest, else the book's.
            let state = self
                .local
                .get(&key)
                .and_then(|t| t.last.map(|u| u.state))
                .or_else(|| snapshot.get(key).copied());
            if let (Some(state), Kind::Dhan) = (state, s.kind) {
                self.dhan_snapshot(s, &state, mode, now);
            } else if let Some(state) = state {
                let symbol = self.symbols.get(&key).map(String::as_str);
                if let Some(msg) = self.renderer.state(&state, mode, symbol) {
                    s.deliver(Slot::Instrument(key), &msg, &self.stats, now);
                }
            }
        }
        if !queued.is_empty() {
            let (held, waiting) = self.union.load();
            log::warn!(
                "upstream capacity full ({held} of {} instruments): {} more queued for client {} ({waiting} queued in all)",
                self.config.upstream_capacity,
                queued.len(),
                s.id
            );
            let message = format!(
                "upstream capacity full ({held} of {} instruments held): {} queued, they start when slots free up: {}",
                self.config.upstream_capacity,
                queued.len(),
                name_some(&queued)
            );
            self.client_error(s, &message, now);
        }
    }

    /// `"mode": "depth20"`: full mode on the main feed (so the client has
    /// the LTP and the rest), plus the instrument's 20-level book, on
    /// NSE_EQ and NSE_FNO only; other segments get one error naming them.
    fn subscribe_depth20(
        &mut self,
        i: usize,
        s: &mut Session,
        keys: Vec<InstrumentKey>,
        now: Instant,
    ) {
        let (keys, refused): (Vec<InstrumentKey>, Vec<InstrumentKey>) = keys
            .into_iter()
            .partition(|k| matches!(k.segment, Segment::NseEq | Segment::NseFno));
        if !refused.is_empty() {
            self.client_error(
                s,
                &format!(
                    "depth20 is available on NSE_EQ and NSE_FNO only; not subscribed: {}",
                    name_some(&refused)
                ),
                now,
            );
        }
        if keys.is_empty() {
            return;
        }
        self.subscribe(i, s, keys.clone(), Mode::Full, now);
        let snapshot = self.snapshot.load();
        for key in keys {
            if !s.subs.contains_key(&key) || !s.depth20.insert(key) {
                continue; // refused (limit), or already held in depth20
            }
            self.hold_depth(i, key);
            if let Some(d) = snapshot.depth20(key) {
                let symbol = self.symbols.get(&key).map(String::as_str);
                let msg = self.renderer.depth20(d, symbol);
                s.deliver(Slot::Depth20(key), &msg, &self.stats, now);
            }
        }
    }

    fn unsubscribe(&mut self, i: usize, s: &mut Session, keys: Vec<InstrumentKey>, now: Instant) {
        let mut missing = Vec::new();
        for key in keys {
            if s.depth20.remove(&key) {
                self.release_depth(i, key);
            }
            if s.subs.remove(&key).is_some() {
                s.queued.remove(&key);
                self.release(i, key);
                self.stats.subscriptions.sub(1);
            } else {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            self.client_error(s, &format!("not subscribed: {}", name_some(&missing)), now);
        }
    }
}

/// `NSE_FNO 1, NSE_FNO 2, … and 40 more`.
pub(super) fn name_some(keys: &[InstrumentKey]) -> String {
    let mut text = keys
        .iter()
        .take(NAMED_IN_ERROR)
        .map(|k| format!("{} {}", k.segment, k.security_id))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > NAMED_IN_ERROR {
        text.push_str(&format!(" and {} more", keys.len() - NAMED_IN_ERROR));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use serde_json::Value;

    use super::super::front::NewClient;
    use super::super::session::tests::{pair, read_frames};
    use super::super::test_worker::{worker, Harness};
    use super::{ORDERS_NOT_ALLOWED, ORDERS_OFF};
    use crate::auth::{KeyLimits, Principal, Scope, Scopes, Via};
    use crate::serve_tls::ServerStream;

    /// A `/ws` session in a new slot; `trade` as the front door decided.
    fn client(h: &mut Harness, trade: bool) -> (usize, TcpStream) {
        let (mut s, peer) = pair(64 * 1024);
        s.trade = trade;
        h.worker.sessions.push(Some(Box::new(s)));
        (h.worker.sessions.len() - 1, peer)
    }

    /// The client in slot `i` sends `text`.
    fn send(h: &mut Harness, i: usize, text: &str) {
        let now = Instant::now();
        let mut s = h.worker.sessions[i].take().unwrap();
        h.worker.on_text(i, &mut s, text, now);
        h.worker.sessions[i] = Some(s);
        h.worker.dirty.push(i);
        h.worker.flush_dirty(now);
    }

    fn frames(peer: &mut TcpStream, n: usize) -> Vec<Value> {
        read_frames(peer, n)
            .iter()
            .map(|f| serde_json::from_slice(f).unwrap())
            .collect()
    }

    fn silent(peer: &mut TcpStream) -> bool {
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        std::io::Read::read(peer, &mut [0u8; 1]).is_err()
    }

    fn order(id: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"type":"order","orderId":"{id}","status":"PENDING"}}"#
        ))
    }

    #[test]
    fn subscribe_orders_is_refused_while_trading_is_off() {
        let mut h = worker(10);
        let (i, mut peer) = client(&mut h, true);
        send(&mut h, i, r#"{"type":"subscribe_orders"}"#);
        let reply = &frames(&mut peer, 1)[0];
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["message"], ORDERS_OFF);
        assert!(!h.worker.sessions[i].as_ref().unwrap().orders);
    }

    #[test]
    fn order_updates_reach_subscribers_only_once_each_and_in_order() {
        let mut h = worker(10);
        let (tx, rx) = crossbeam_channel::unbounded();
        h.worker.orders = Some(rx);
        let (a, mut pa) = client(&mut h, true);
        let (b, mut pb) = client(&mut h, true);
        let (_, mut idle) = client(&mut h, true); // never subscribes
        let (c, mut pc) = client(&mut h, false); // may not trade
        for i in [a, b, c] {
            send(&mut h, i, r#"{"type":"subscribe_orders"}"#);
        }
        for p in [&mut pa, &mut pb] {
            assert_eq!(
                frames(p, 1)[0],
                serde_json::json!({"type": "subscribed", "orders": true})
            );
        }
        let refused = &frames(&mut pc, 1)[0];
        assert_eq!(
            (refused["type"].as_str(), refused["message"].as_str()),
            (Some("error"), Some(ORDERS_NOT_ALLOWED))
        );

        // More than one turn's budget: all of them arrive, in order.
        let total = super::super::ORDERS_BUDGET as u32 + 10;
        for id in 0..total {
            tx.send(order(id)).unwrap();
        }
        let now = Instant::now();
        h.worker.drain_orders(now);
        assert!(h.worker.backlog, "the rest wait a turn");
        h.worker.flush_dirty(now);
        h.worker.drain_orders(now);
        assert!(!h.worker.backlog);
        h.worker.flush_dirty(now);
        for p in [&mut pa, &mut pb] {
            let got = frames(p, total as usize);
            let ids: Vec<String> = got
                .iter()
                .map(|v| v["orderId"].as_str().unwrap().to_string())
                .collect();
            let want: Vec<String> = (0..total).map(|i| i.to_string()).collect();
            assert_eq!(ids, want);
            assert!(silent(p), "each update once");
        }
        assert!(silent(&mut idle) && silent(&mut pc));

        // Unsubscribed: nothing more.
        send(&mut h, a, r#"{"type":"unsubscribe_orders"}"#);
        assert_eq!(
            frames(&mut pa, 1)[0],
            serde_json::json!({"type": "unsubscribed", "orders": true})
        );
        tx.send(order(999)).unwrap();
        h.worker.drain_orders(now);
        h.worker.flush_dirty(now);
        assert_eq!(frames(&mut pb, 1)[0]["orderId"], "999");
        assert!(silent(&mut pa));
    }

    /// A `/ws` client handed over by the front door with `principal`.
    fn hand_over(h: &mut Harness, principal: Principal) -> bool {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let c = NewClient {
            stream: ServerStream::Plain(mio::net::TcpStream::from_std(server)),
            early: Vec::new(),
            kind: super::Kind::Feed,
            prices: None,
            principal,
            limits: KeyLimits::default(),
            refused: false,
        };
        h.worker.add_client(c, Instant::now());
        let i = h.worker.sessions.len() - 1;
        h.worker.sessions[i].as_ref().unwrap().trade
    }

    #[test]
    fn who_may_trade() {
        let mut h = worker(10);
        assert!(
            hand_over(&mut h, Principal::off()),
            "access control off: a loopback peer may"
        );
        let key = |scopes: Scopes| Principal {
            key_name: Some("k".into()),
            scopes,
            via: Via::Bearer,
            key: None,
        };
        assert!(!hand_over(&mut h, key(Scopes::NONE.with(Scope::Read))));
        assert!(hand_over(
            &mut h,
            key(Scopes::NONE.with(Scope::Read).with(Scope::Trade))
        ));
    }
}
