//! The client protocol on the fanout thread: reading frames (a budget per
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

use std::time::Instant;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use super::protocol::{self, ClientMessage, InstrumentRef};
use super::resolver::{Job, Op};
use super::session::{Kind, Session, Slot};
use super::topics::Admission;
use super::{Worker, READ_BUDGET, READ_BYTES_BUDGET};
use crate::domain::{InstrumentKey, Mode, Segment};

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
                    self.topics.remove_client(i);
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
                        self.depth_topics.remove(i, *key);
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
            if self.topics.add(i, key, mode) == Admission::Queued {
                queued.push(key);
                continue;
            }
            // Snapshot on subscribe: the fanout's own latest, else the book's.
            let state = self
                .topics
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
        self.view_dirty = true;
        if !queued.is_empty() {
            let (held, waiting) = self.topics.load();
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
            self.depth_topics.add(i, key);
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
                self.depth_topics.remove(i, key);
            }
            if s.subs.remove(&key).is_some() {
                self.topics.remove(i, key);
                self.stats.subscriptions.sub(1);
            } else {
                missing.push(key);
            }
        }
        self.view_dirty = true;
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
