//! One connection thread: the handshake ([`super::handshake`]), the login
//! check, then requests in and packets out until the connection ends.
//!
//! The socket is non-blocking under the thread's own `mio::Poll`; the
//! generator and [`super::SimControl`] wake it through a `mio::Waker`. Each
//! pass of the loop: carry out orders (disconnect, drop), read every frame
//! the client sent (requests, pongs), check the heartbeat clocks, drain the
//! outbound queue into WebSocket frames, flush, then sleep until the socket,
//! the waker or the next deadline (at most [`MAX_POLL`]) calls. While the
//! socket cannot take more bytes the queue is left alone, so it fills and the
//! generator drops (and counts) instead of anything here blocking.
//!
//! Everything a client sends is untrusted: a bad request is counted, a
//! protocol error ends this connection only, and nothing here panics on
//! input. The login token is kept only in the connection's registry entry
//! (so a revocation can find the connection), never printed or logged; a
//! revoked or expired token reaches this thread as an ordinary disconnect
//! order (807).

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::net::TcpStream;
use mio::{Interest, Poll, Token, Waker};
use tungstenite::{Bytes, Error as WsError, Message, WebSocket};

use super::handshake::{handshake, Stream, Waiter, MAX_POLL};

use super::shared::{bump, lock, ConnHandle, Control, Endpoint, Out, Shared};
use super::{LoggedRequest, QUEUE_CAPACITY};
use crate::domain::{InstrumentKey, Mode, Segment};
use crate::wire::depth::DepthMessage;
use crate::wire::feed::{FeedData, FeedMessage};
use crate::wire::request::{self, RequestCode, MAX_PER_DEPTH_MESSAGE};
use crate::wire::DisconnectReason;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// After our close frame, how long to wait for the client's.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Queue items taken per pass before reading again.
const DRAIN_PER_PASS: usize = 1_024;
/// Bytes of queued frames taken per pass (the WebSocket's write buffer
/// holds 4 MiB, `handshake.rs`).
const DRAIN_BYTES_PER_PASS: usize = 1 << 20;
/// Frames read per pass before writing again.
const READS_PER_PASS: usize = 64;
/// Most packets in one batched frame.
const MAX_BATCH: u32 = 32;

/// Removes the connection from the registry however the thread ends.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.deregister(self.id);
    }
}

/// The connection is over; the thread returns.
#[derive(Debug)]
struct End;

/// Runs one connection from accept to close.
pub(crate) fn run(shared: &Shared, id: u64, mut tcp: TcpStream) {
    let Ok(poll) = Poll::new() else { return };
    let Ok(waker) = Waker::new(poll.registry(), WAKE) else {
        return;
    };
    if poll
        .registry()
        .register(&mut tcp, SOCKET, Interest::READABLE | Interest::WRITABLE)
        .is_err()
    {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let (queue_tx, queue) = crossbeam_channel::bounded(QUEUE_CAPACITY);
    let (control_tx, control) = crossbeam_channel::unbounded();
    let handle = Arc::new(ConnHandle::new(id, waker, queue_tx, control_tx));
    shared.register(handle.clone());
    let _registered = Registered { shared, id };

    let Some(stream) = Stream::new(tcp, shared.tls.as_ref()) else {
        return;
    };
    let mut waiter = Waiter::new(poll);
    let Some((ws, login)) = handshake(shared, &mut waiter, stream) else {
        return;
    };
    bump(&shared.stats.connects);
    let verdict = shared.log_in(
        id,
        login.endpoint,
        login.token.as_deref(),
        login.client_id.as_deref(),
    );
    let endpoint = login.endpoint;
    drop(login);
    let now = Instant::now();
    let conn = Conn {
        shared,
        handle,
        ws,
        queue,
        control,
        waiter,
        endpoint,
        batching: shared.settings.ticks_per_sec >= super::generator::BATCH_RATE,
        last_heard: now,
        next_ping: later(now, shared.settings.ping_interval),
        closing: None,
        write_blocked: false,
        deferred: Vec::new(),
    };
    match verdict {
        Ok(()) => conn.serve(),
        Err(reason) => {
            bump(&shared.stats.auth_rejects);
            conn.refuse(reason);
        }
    }
}

/// `now + d`, or `None` when `d` is zero (disabled) or overflows.
fn later(now: Instant, d: Duration) -> Option<Instant> {
    if d.is_zero() {
        None
    } else {
        now.checked_add(d)
    }
}

/// An upgraded connection.
struct Conn<'a> {
    shared: &'a Shared,
    handle: Arc<ConnHandle>,
    ws: WebSocket<Stream>,
    queue: Receiver<Out>,
    control: Receiver<Control>,
    waiter: Waiter,
    endpoint: Endpoint,
    batching: bool,
    /// When the client last sent any frame.
    last_heard: Instant,
    next_ping: Option<Instant>,
    /// Set once our close frame is out: when to give up waiting for theirs.
    closing: Option<Instant>,
    /// The socket took less than we had; wait for it before writing more.
    write_blocked: bool,
    /// Orders received while stalled, carried out after.
    deferred: Vec<Control>,
}

impl Conn<'_> {
    /// A logged-in connection: market status, then the loop.
    fn serve(mut self) {
        if self.endpoint == Endpoint::Feed {
            let status =
                FeedMessage::Data(InstrumentKey::new(Segment::IdxI, 0), FeedData::MarketStatus);
            if self.send_feed(&status).is_err() {
                return;
            }
        }
        self.run_loop();
    }

    /// A refused login: the disconnect packet, a close frame, and the close
    /// handshake.
    fn refuse(mut self, reason: DisconnectReason) {
        if self.disconnect(reason).is_ok() {
            self.run_loop();
        }
    }

    fn run_loop(&mut self) {
        let mut stalled_since: Option<Instant> = None;
        loop {
            if self.shared.stopping() {
                return;
            }
            if self.shared.stalled() {
                stalled_since.get_or_insert_with(Instant::now);
                // A dropped socket is the network's doing, not the server's:
                // it happens even while stalled. Other orders wait.
                while let Ok(order) = self.control.try_recv() {
                    match order {
                        Control::Drop => {
                            self.shutdown();
                            return;
                        }
                        Control::Disconnect(_) => self.deferred.push(order),
                    }
                }
                self.waiter.wait(MAX_POLL);
                continue;
            }
            if let Some(since) = stalled_since.take() {
                self.resume_after(since.elapsed());
            }
            self.handle.clear_wake();
            if self.pass().is_err() {
                return;
            }
        }
    }

    /// Time stalled does not count against the client.
    fn resume_after(&mut self, stalled: Duration) {
        let now = Instant::now();
        self.last_heard = self.last_heard.checked_add(stalled).unwrap_or(now);
        self.next_ping = self.next_ping.and_then(|t| t.checked_add(stalled));
        self.closing = self.closing.and_then(|t| t.checked_add(stalled));
    }

    /// One turn of the loop; see the module doc.
    fn pass(&mut self) -> Result<(), End> {
        let deferred = std::mem::take(&mut self.deferred);
        let orders = deferred.into_iter().chain(self.control.try_iter());
        for order in orders.collect::<Vec<_>>() {
            match order {
                Control::Drop => {
                    self.shutdown();
                    return Err(End);
                }
                Control::Disconnect(reason) => self.disconnect(reason)?,
            }
        }
        let more_to_read = self.read()?;
        let now = Instant::now();
        if self.closing.is_some_and(|deadline| now >= deadline) {
            return Err(End);
        }
        self.flush()?;
        let mut more_to_write = false;
        if self.closing.is_none() {
            let silence = self.shared.settings.pong_timeout;
            if !silence.is_zero() && now.saturating_duration_since(self.last_heard) >= silence {
                bump(&self.shared.stats.dropped_for_silence);
                self.shutdown();
                return Err(End);
            }
            if self.next_ping.is_some_and(|t| now >= t) {
                self.write(Message::Ping(Bytes::new()))?;
                self.next_ping = later(now, self.shared.settings.ping_interval);
            }
            if !self.write_blocked {
                more_to_write = self.drain()?;
                self.flush()?;
            }
        }
        let timeout = if (more_to_read || more_to_write) && !self.write_blocked {
            Duration::ZERO
        } else {
            self.next_deadline(now)
        };
        self.waiter.wait(timeout);
        Ok(())
    }

    fn next_deadline(&self, now: Instant) -> Duration {
        let silence = self.shared.settings.pong_timeout;
        let silence_at = if self.closing.is_none() {
            later(self.last_heard, silence)
        } else {
            None
        };
        [self.next_ping, silence_at, self.closing]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(MAX_POLL, Duration::min)
    }

    /// Reads what the client sent; `Ok(true)` if there may be more.
    fn read(&mut self) -> Result<bool, End> {
        for _ in 0..READS_PER_PASS {
            match self.ws.read() {
                Ok(msg) => {
                    self.last_heard = Instant::now();
                    self.on_message(msg)?;
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(_) => return Err(End),
            }
        }
        Ok(true)
    }

    fn on_message(&mut self, msg: Message) -> Result<(), End> {
        if self.closing.is_some() {
            return Ok(());
        }
        match msg {
            Message::Text(text) => self.on_request(text.as_str()),
            Message::Pong(_) => {
                bump(&self.shared.stats.pongs_received);
                Ok(())
            }
            // Pings are answered and closes acknowledged by tungstenite;
            // DhanHQ defines no binary requests.
            _ => Ok(()),
        }
    }

    fn on_request(&mut self, text: &str) -> Result<(), End> {
        let stats = &self.shared.stats;
        let Ok(req) = request::parse(text) else {
            bump(&stats.rejected_requests);
            return Ok(());
        };
        self.shared.log_request(LoggedRequest {
            conn: self.handle.id,
            code: req.code,
            instruments: req.instruments.clone(),
        });
        match (self.endpoint, req.code) {
            (_, RequestCode::Disconnect) => self.close(),
            (Endpoint::Feed, code) => match code.mode_change() {
                Some((mode, subscribe)) => self.apply_feed(mode, subscribe, &req.instruments),
                None => {
                    bump(&stats.rejected_requests);
                    Ok(())
                }
            },
            (Endpoint::Depth, RequestCode::SubscribeDepth) => {
                self.apply_depth(&req.instruments);
                Ok(())
            }
            (Endpoint::Depth, RequestCode::UnsubscribeDepth) => {
                // 24 (SDK) or 25 (docs): both accepted.
                {
                    let mut subs = lock(&self.handle.subs);
                    for key in &req.instruments {
                        subs.remove(key);
                    }
                }
                self.shared.subs_changed();
                Ok(())
            }
            (Endpoint::Depth, _) => {
                bump(&stats.rejected_requests);
                Ok(())
            }
        }
    }

    /// RequestCodes 15–22 on the main feed.
    fn apply_feed(
        &mut self,
        mode: Mode,
        subscribe: bool,
        instruments: &[InstrumentKey],
    ) -> Result<(), End> {
        let settings = &self.shared.settings;
        if instruments.len() > settings.max_per_message {
            bump(&self.shared.stats.rejected_requests);
            return Ok(());
        }
        let mut first_time = Vec::new();
        {
            let mut subs = lock(&self.handle.subs);
            for key in instruments {
                if !subscribe {
                    subs.remove(key);
                } else if let Some(held) = subs.get_mut(key) {
                    *held = mode;
                } else if subs.len() >= settings.max_per_connection {
                    bump(&self.shared.stats.rejected_instruments);
                } else {
                    subs.insert(*key, mode);
                    first_time.push(*key);
                }
            }
        }
        self.shared.subs_changed();
        for key in first_time {
            if self.shared.replaying {
                // The latest recorded one, or nothing yet.
                if let Some(packet) = self.shared.recorded_prev_close(key) {
                    if self.write(Message::Binary(packet))? {
                        bump(&self.shared.stats.packets_sent);
                    }
                }
                continue;
            }
            let prev = settings.instrument(key).prev_close();
            self.send_feed(&FeedMessage::Data(key, FeedData::PrevClose(prev)))?;
        }
        Ok(())
    }

    /// RequestCode 23 on the depth feed: all or nothing per message.
    fn apply_depth(&mut self, instruments: &[InstrumentKey]) {
        let nse_only = instruments
            .iter()
            .all(|k| matches!(k.segment, Segment::NseEq | Segment::NseFno));
        if instruments.len() > MAX_PER_DEPTH_MESSAGE || !nse_only {
            bump(&self.shared.stats.rejected_requests);
            return;
        }
        {
            let mut subs = lock(&self.handle.subs);
            for key in instruments {
                if subs.contains_key(key) {
                    continue;
                }
                if subs.len() >= self.shared.settings.max_per_connection {
                    bump(&self.shared.stats.rejected_instruments);
                } else {
                    subs.insert(*key, Mode::Full);
                }
            }
        }
        self.shared.subs_changed();
    }

    /// Moves queued items into frames; `Ok(true)` if the queue may hold more.
    fn drain(&mut self) -> Result<bool, End> {
        let mut frames: Vec<(Bytes, u32)> = Vec::new();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut in_batch = 0u32;
        let mut bytes_taken = 0usize;
        let mut more = true;
        {
            let subs = lock(&self.handle.subs);
            for _ in 0..DRAIN_PER_PASS {
                let item = match self.queue.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                        more = false;
                        break;
                    }
                };
                match item {
                    Out::Tick {
                        key,
                        mode,
                        bytes,
                        packets,
                    } => {
                        if subs.get(&key) != Some(&mode) {
                            continue; // unsubscribed or re-moded since queued
                        }
                        bytes_taken += bytes.len();
                        if !self.batching {
                            frames.push((bytes, packets));
                            continue;
                        }
                        batch.push(bytes);
                        in_batch += packets;
                        if in_batch >= MAX_BATCH {
                            frames.push((concat(&mut batch), in_batch));
                            in_batch = 0;
                        }
                    }
                    Out::Raw(bytes) => {
                        if in_batch > 0 {
                            frames.push((concat(&mut batch), in_batch));
                            in_batch = 0;
                        }
                        bytes_taken += bytes.len();
                        frames.push((bytes, 1));
                    }
                    Out::Replay { bytes, packets } => {
                        if in_batch > 0 {
                            frames.push((concat(&mut batch), in_batch));
                            in_batch = 0;
                        }
                        bytes_taken += bytes.len();
                        frames.push((bytes, packets));
                    }
                }
                // Stay well under the WebSocket's write buffer limit, so a
                // pass never has to drop what it took from the queue.
                if bytes_taken >= DRAIN_BYTES_PER_PASS {
                    break;
                }
            }
        }
        if in_batch > 0 {
            frames.push((concat(&mut batch), in_batch));
        }
        for (bytes, packets) in frames {
            if self.write(Message::Binary(bytes))? {
                self.shared
                    .stats
                    .packets_sent
                    .fetch_add(u64::from(packets), std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(more)
    }

    /// Encodes and writes one feed packet as its own frame.
    fn send_feed(&mut self, msg: &FeedMessage) -> Result<(), End> {
        let mut b = Vec::with_capacity(msg.wire_len());
        msg.encode(&mut b);
        if self.write(Message::Binary(b.into()))? {
            bump(&self.shared.stats.packets_sent);
        }
        Ok(())
    }

    /// The disconnect packet in this endpoint's format, then a close frame.
    fn disconnect(&mut self, reason: DisconnectReason) -> Result<(), End> {
        if self.closing.is_some() {
            return Ok(());
        }
        match self.endpoint {
            Endpoint::Feed => self.send_feed(&FeedMessage::Disconnect(reason))?,
            Endpoint::Depth => {
                let mut b = Vec::new();
                DepthMessage::Disconnect(reason).encode(&mut b);
                if self.write(Message::Binary(b.into()))? {
                    bump(&self.shared.stats.packets_sent);
                }
            }
        }
        self.close()
    }

    /// Sends a close frame and waits (up to [`CLOSE_TIMEOUT`]) for the reply.
    fn close(&mut self) -> Result<(), End> {
        if self.closing.is_some() {
            return Ok(());
        }
        self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
        match self.ws.close(None) {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(())
            }
            Err(_) => Err(End),
        }
    }

    /// Queues a frame in the WebSocket; `Ok(false)` if its write buffer is
    /// full and the frame was dropped (and counted).
    fn write(&mut self, msg: Message) -> Result<bool, End> {
        match self.ws.write(msg) {
            Ok(()) => Ok(true),
            // Buffered; the socket is full for now.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(true)
            }
            Err(WsError::WriteBufferFull(_)) => {
                bump(&self.shared.stats.queue_drops);
                self.write_blocked = true;
                Ok(false)
            }
            Err(_) => Err(End),
        }
    }

    fn flush(&mut self) -> Result<(), End> {
        match self.ws.flush() {
            Ok(()) => {
                self.write_blocked = false;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(())
            }
            Err(_) => Err(End),
        }
    }

    /// Abrupt end: no close frame.
    fn shutdown(&mut self) {
        let _ = self.ws.get_ref().tcp().shutdown(Shutdown::Both);
    }
}

/// One frame out of several queued packets (no copy for a single one).
fn concat(batch: &mut Vec<Bytes>) -> Bytes {
    if batch.len() == 1 {
        if let Some(only) = batch.pop() {
            return only;
        }
    }
    let mut v = Vec::with_capacity(batch.iter().map(Bytes::len).sum());
    for b in batch.drain(..) {
        v.extend_from_slice(&b);
    }
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_keeps_a_single_frame_and_joins_several() {
        let mut one = vec![Bytes::from_static(b"ab")];
        assert_eq!(concat(&mut one), Bytes::from_static(b"ab"));
        let mut two = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        assert_eq!(concat(&mut two), Bytes::from_static(b"abcd"));
        assert!(two.is_empty());
    }
}
