//! The in-process exchange: a DhanHQ Live Market Feed v2 server on
//! 127.0.0.1, just enough of it for the relay and for the `floor` clients,
//! built to cost little and to never lose a packet.
//!
//! Protocol: WebSocket upgrade at `/?version=2&token=T&clientId=C&authType=2`
//! (anything else gets HTTP 400/404); text requests parsed by
//! [`dhan_relay::wire::request::parse`]; RequestCodes 15/17/21 subscribe an
//! instrument (every packet is a ticker packet whatever the mode), 16/18/22
//! unsubscribe, 12 closes. Instruments that are not the schedule's are
//! counted and ignored. The server pings every 10 s and tungstenite answers
//! the client's pings. Packets are built by
//! [`dhan_relay::wire::feed::FeedMessage::encode`].
//!
//! Pacing: one thread, one `mio` loop. Once started it wakes every
//! `frame_period` (1 ms by default; `mio` sleeps in whole milliseconds, a
//! shorter remainder is slept with `thread::sleep`), takes every tick the
//! [`Schedule`] says is due, appends each one's 16-byte packet to the
//! pending frame of every connection subscribed to its instrument, stamps
//! the send time of all of them into the [`SendTable`] (one clock read per
//! batch, taken just before the writes), then writes one binary frame per
//! connection (at most 64 KiB; more in a wake means more frames). So at
//! 5,000 ticks/s a frame carries about five packets, as a real feed batches
//! them.
//!
//! Never lossy: a socket that will not take more keeps its bytes in
//! tungstenite's write buffer (capped at 256 MiB, then the connection is
//! closed and counted) and the wait is counted in `would_block`; the
//! latency it adds is measured, because the stamp is taken before the write.
//! When the loop falls behind the schedule it sends the backlog at once (at
//! most [`MAX_BATCH`] ticks per wake) and reports the worst lag.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhan_relay::clock;
use dhan_relay::wire::feed::{FeedData, FeedMessage, Ticker};
use dhan_relay::wire::request::{self, RequestCode};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tungstenite::handshake::server::{ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::MidHandshake;
use tungstenite::http::StatusCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, HandshakeError, Message, WebSocket};

use crate::schedule::{Schedule, SendTable};
use crate::sys;

const LISTENER: Token = Token(usize::MAX);
/// Most ticks taken in one wake.
pub const MAX_BATCH: u64 = 16_384;
/// Largest frame written (whole 16-byte packets).
const MAX_FRAME: usize = 64 * 1024;
const PING_EVERY: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep when idle, so a stop is seen promptly.
const IDLE: Duration = Duration::from_millis(20);

type Check = fn(&Request, Response) -> Result<Response, ErrorResponse>;

/// Counters the exchange thread keeps; read by the orchestrator.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    /// WebSocket connections up now.
    pub conns_up: AtomicU64,
    /// Connections accepted since start.
    pub conns_total: AtomicU64,
    /// Upgrades refused (bad path, version or login).
    pub refused: AtomicU64,
    /// Schedule instruments with at least one subscribed connection.
    pub instruments_subscribed: AtomicU64,
    /// (connection, instrument) subscriptions held.
    pub subscriptions: AtomicU64,
    /// Request frames read.
    pub requests: AtomicU64,
    /// Requests that did not parse or had an unsupported code.
    pub bad_requests: AtomicU64,
    /// Subscribed instruments that are not the schedule's (ignored).
    pub foreign_instruments: AtomicU64,
    /// Ticks taken from the schedule so far (the next tick number).
    pub ticks: AtomicU64,
    /// Packets written (a tick to two connections is two packets).
    pub packets: AtomicU64,
    /// Binary frames written.
    pub frames: AtomicU64,
    /// Bytes of packets written.
    pub bytes: AtomicU64,
    /// Flushes that found a socket full (the reader is behind).
    pub would_block: AtomicU64,
    /// Connections closed because their write buffer passed 256 MiB.
    pub overflow_closes: AtomicU64,
    /// Worst lateness of a tick against its scheduled time, ns.
    pub max_lag_ns: AtomicU64,
    /// Wakes that sent at least one tick.
    pub sends: AtomicU64,
    /// CPU time of the exchange thread, ns (updated every ~100 ms).
    pub cpu_ns: AtomicU64,
    /// [`clock::now_ns`] when the last tick was sent; 0 before.
    pub done_ns: AtomicU64,
}

#[derive(Debug, Default)]
struct Control {
    /// [`clock::now_ns`] at which tick 0 is due; 0: not started.
    go_ns: AtomicU64,
    stop: AtomicBool,
}

/// A running exchange.
#[derive(Debug)]
pub struct Exchange {
    addr: SocketAddr,
    control: Arc<Control>,
    /// Its counters.
    pub stats: Arc<ExchangeStats>,
    thread: Option<JoinHandle<()>>,
}

impl Exchange {
    /// Binds `listen` (loopback; port 0 picks a free one) and starts the
    /// thread (idle until [`Exchange::go`]).
    pub fn start(
        listen: SocketAddr,
        schedule: Arc<Schedule>,
        table: Arc<SendTable>,
        frame_period: Duration,
    ) -> std::io::Result<Exchange> {
        if !sys::is_loopback(listen.ip()) {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "the exchange listens on loopback only",
            ));
        }
        let mut listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let control = Arc::new(Control::default());
        let stats = Arc::new(ExchangeStats::default());
        let m = schedule.instruments as usize;
        let worker = Worker {
            poll,
            listener,
            subscribers: vec![Vec::new(); m],
            schedule,
            table,
            control: Arc::clone(&control),
            stats: Arc::clone(&stats),
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            next_n: 0,
            frame_ns: frame_period.as_nanos().max(1) as u64,
            packet: Vec::with_capacity(64),
            ws_config: WebSocketConfig::default()
                .max_write_buffer_size(256 << 20)
                .max_message_size(Some(1 << 20))
                .max_frame_size(Some(1 << 20)),
        };
        let thread = std::thread::Builder::new()
            .name("loadgen-exchange".into())
            .spawn(move || worker.run())?;
        Ok(Exchange {
            addr,
            control,
            stats,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the schedule: tick 0 is due at `at_ns` ([`clock::now_ns`]).
    pub fn go(&self, at_ns: u64) {
        self.control.go_ns.store(at_ns.max(1), Relaxed);
    }

    /// Closes every connection and joins the thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.thread.take() {
            self.control.stop.store(true, Relaxed);
            let _ = t.join();
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The upgrade check: path `/`, `version=2`, a token and a client id.
// The error type is tungstenite's `Callback` contract, not ours to shrink.
#[allow(clippy::result_large_err)]
fn check_login(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    let refuse = |code: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_string()));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/" {
        return Err(refuse(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    let (mut version, mut token, mut client) = (false, false, false);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("version", "2")) => version = true,
            Some(("token", t)) => token = !t.is_empty(),
            Some(("clientId", c)) => client = !c.is_empty(),
            _ => {}
        }
    }
    if !version {
        return Err(refuse(StatusCode::BAD_REQUEST, "version=2 required"));
    }
    if !(token && client) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "token and clientId required",
        ));
    }
    Ok(resp)
}

enum Conn {
    Handshake {
        mid: Option<Box<MidHandshake<ServerHandshake<TcpStream, Check>>>>,
        since: Instant,
    },
    Up(Box<Up>),
}

struct Up {
    ws: WebSocket<TcpStream>,
    /// Bitset over the schedule's instruments.
    held: Vec<u64>,
    /// Packets waiting for this wake's frame.
    out: Vec<u8>,
}

impl Up {
    fn holds(&self, inst: u32) -> bool {
        self.held[inst as usize / 64] & (1 << (inst % 64)) != 0
    }
    fn set(&mut self, inst: u32, on: bool) {
        let word = &mut self.held[inst as usize / 64];
        if on {
            *word |= 1 << (inst % 64);
        } else {
            *word &= !(1 << (inst % 64));
        }
    }
}

struct Worker {
    poll: Poll,
    listener: TcpListener,
    schedule: Arc<Schedule>,
    table: Arc<SendTable>,
    control: Arc<Control>,
    stats: Arc<ExchangeStats>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Per instrument: the connections subscribed to it.
    subscribers: Vec<Vec<u32>>,
    /// Connections with packets in `out` this wake.
    dirty: Vec<u32>,
    next_n: u64,
    frame_ns: u64,
    packet: Vec<u8>,
    ws_config: WebSocketConfig,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_send: u64 = 0; // ns after go
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut next_second = Instant::now() + Duration::from_secs(1);
        let mut next_cpu = Instant::now();
        let total = self.schedule.total_ticks;
        while !self.control.stop.load(Relaxed) {
            let go = self.control.go_ns.load(Relaxed);
            let sending = go != 0 && self.next_n < total;
            let wait = if sending {
                Duration::from_nanos((go + next_send).saturating_sub(clock::now_ns())).min(IDLE)
            } else {
                IDLE
            };
            // mio rounds a timeout up to whole milliseconds: round down here
            // and sleep any remainder below.
            let poll_wait = Duration::from_millis(wait.as_millis() as u64);
            if let Err(e) = self.poll.poll(&mut events, Some(poll_wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("loadgen: exchange poll failed: {e}");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(i) => self.ready(i),
                }
            }
            if sending {
                let now = clock::now_ns();
                let target = go + next_send;
                if now < target {
                    if !events.is_empty() {
                        continue; // woken by a socket: poll again for the rest
                    }
                    std::thread::sleep(Duration::from_nanos(target - now));
                }
                let now = clock::now_ns();
                let elapsed = now.saturating_sub(go);
                self.send_due(elapsed);
                // The next period boundary after now.
                next_send = (elapsed / self.frame_ns + 1) * self.frame_ns;
                if self.next_n >= total {
                    self.stats.done_ns.store(clock::now_ns(), Relaxed);
                }
            }
            let now = Instant::now();
            if now >= next_ping {
                next_ping = now + PING_EVERY;
                self.ping_all();
            }
            if now >= next_second {
                next_second = now + Duration::from_secs(1);
                self.expire_handshakes(now);
            }
            if now >= next_cpu {
                next_cpu = now + Duration::from_millis(100);
                self.stats.cpu_ns.store(sys::thread_cpu_ns(), Relaxed);
            }
        }
        self.stats.cpu_ns.store(sys::thread_cpu_ns(), Relaxed);
        for conn in self.conns.iter_mut().flatten() {
            if let Conn::Up(up) = conn {
                let _ = up.ws.close(None);
                let _ = up.ws.flush();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if !sys::is_loopback(peer.ip()) {
                        continue; // bound to 127.0.0.1; belt and braces
                    }
                    let _ = stream.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    add(&self.stats.conns_total, 1);
                    let result = tungstenite::accept_hdr_with_config(
                        stream,
                        check_login as Check,
                        Some(self.ws_config),
                    );
                    self.handshake_result(slot, result, Instant::now());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("loadgen: exchange accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn handshake_result(
        &mut self,
        slot: usize,
        result: Result<WebSocket<TcpStream>, HandshakeError<ServerHandshake<TcpStream, Check>>>,
        since: Instant,
    ) {
        match result {
            Ok(ws) => {
                let words = (self.schedule.instruments as usize).div_ceil(64);
                self.conns[slot] = Some(Conn::Up(Box::new(Up {
                    ws,
                    held: vec![0; words],
                    out: Vec::with_capacity(1024),
                })));
                add(&self.stats.conns_up, 1);
                // Requests may already be buffered behind the upgrade.
                self.ready(slot);
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.conns[slot] = Some(Conn::Handshake {
                    mid: Some(Box::new(mid)),
                    since,
                });
            }
            Err(HandshakeError::Failure(_)) => {
                add(&self.stats.refused, 1);
                self.conns[slot] = None;
                self.free.push(slot);
            }
        }
    }

    fn ready(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        match conn {
            Some(Conn::Handshake { mid, since }) => {
                let since = *since;
                if let Some(mid) = mid.take() {
                    let result = (*mid).handshake();
                    self.handshake_result(i, result, since);
                }
            }
            Some(Conn::Up(_)) => self.read_up(i),
            None => {}
        }
    }

    fn read_up(&mut self, i: usize) {
        let mut requests = Vec::new();
        let mut gone = false;
        if let Some(Some(Conn::Up(up))) = self.conns.get_mut(i) {
            loop {
                match up.ws.read() {
                    Ok(Message::Text(text)) => requests.push(text),
                    Ok(Message::Close(_)) => {
                        gone = true;
                        break;
                    }
                    Ok(_) => {} // pings are answered by tungstenite; pongs
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            // Pongs, and whatever was waiting for the socket.
            match up.ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => gone = true,
            }
        }
        for text in requests {
            if !gone {
                gone = self.request(i, text.as_str());
            }
        }
        if gone {
            self.close(i);
        }
    }

    /// Applies one request; true when the connection asked to close.
    fn request(&mut self, i: usize, text: &str) -> bool {
        add(&self.stats.requests, 1);
        let req = match request::parse(text) {
            Ok(r) => r,
            Err(_) => {
                add(&self.stats.bad_requests, 1);
                return false;
            }
        };
        if req.code == RequestCode::Disconnect {
            return true;
        }
        let Some((_mode, on)) = req.code.mode_change() else {
            add(&self.stats.bad_requests, 1);
            return false;
        };
        for key in req.instruments {
            match self.schedule.instrument_of(key) {
                Some(inst) => self.subscribe(i, inst, on),
                None => add(&self.stats.foreign_instruments, 1),
            }
        }
        false
    }

    fn subscribe(&mut self, i: usize, inst: u32, on: bool) {
        let Some(Some(Conn::Up(up))) = self.conns.get_mut(i) else {
            return;
        };
        if up.holds(inst) == on {
            return;
        }
        up.set(inst, on);
        let list = &mut self.subscribers[inst as usize];
        if on {
            list.push(i as u32);
            add(&self.stats.subscriptions, 1);
            if list.len() == 1 {
                add(&self.stats.instruments_subscribed, 1);
            }
        } else {
            if let Some(p) = list.iter().position(|&c| c == i as u32) {
                list.swap_remove(p);
            }
            self.stats.subscriptions.fetch_sub(1, Relaxed);
            if list.is_empty() {
                self.stats.instruments_subscribed.fetch_sub(1, Relaxed);
            }
        }
    }

    fn close(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        if let Conn::Up(mut up) = conn {
            for inst in 0..self.schedule.instruments {
                if up.holds(inst) {
                    let list = &mut self.subscribers[inst as usize];
                    if let Some(p) = list.iter().position(|&c| c == i as u32) {
                        list.swap_remove(p);
                    }
                    self.stats.subscriptions.fetch_sub(1, Relaxed);
                    if list.is_empty() {
                        self.stats.instruments_subscribed.fetch_sub(1, Relaxed);
                    }
                }
            }
            let _ = self.poll.registry().deregister(up.ws.get_mut());
            self.stats.conns_up.fetch_sub(1, Relaxed);
        }
        self.dirty.retain(|&c| c != i as u32);
        self.free.push(i);
    }

    /// Sends every tick due `elapsed` ns after the start.
    fn send_due(&mut self, elapsed: u64) {
        let due = self.schedule.due_count(elapsed);
        let start = self.next_n;
        let end = due.min(start + MAX_BATCH);
        if end <= start {
            return;
        }
        let lag = elapsed.saturating_sub(self.schedule.due_ns(start));
        self.stats.max_lag_ns.fetch_max(lag, Relaxed);
        let nonce = self.schedule.nonce;
        let mut packets = 0u64;
        for n in start..end {
            let (inst, seq) = self.schedule.tick(n);
            let subs = &self.subscribers[inst as usize];
            if subs.is_empty() {
                continue;
            }
            self.packet.clear();
            FeedMessage::Data(
                Schedule::key(inst),
                FeedData::Ticker(Ticker {
                    ltp: seq as f32,
                    ltt: nonce,
                }),
            )
            .encode(&mut self.packet);
            for &c in subs {
                if let Some(Some(Conn::Up(up))) = self.conns.get_mut(c as usize) {
                    if up.out.is_empty() {
                        self.dirty.push(c);
                    }
                    up.out.extend_from_slice(&self.packet);
                    packets += 1;
                }
            }
        }
        let sent_at = clock::now_ns();
        for n in start..end {
            self.table.stamp(n, sent_at);
        }
        fence(Release);
        self.next_n = end;
        self.stats.ticks.store(end, Relaxed);
        add(&self.stats.packets, packets);
        add(&self.stats.sends, 1);
        let dirty = std::mem::take(&mut self.dirty);
        let mut closed = Vec::new();
        for &c in &dirty {
            if !self.ship(c as usize) {
                closed.push(c as usize);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        for c in closed {
            self.close(c);
        }
    }

    /// Writes connection `c`'s pending packets as frames; false if the
    /// connection failed.
    fn ship(&mut self, c: usize) -> bool {
        let Some(Some(Conn::Up(up))) = self.conns.get_mut(c) else {
            return true;
        };
        let mut ok = true;
        for chunk in up.out.chunks(MAX_FRAME) {
            add(&self.stats.bytes, chunk.len() as u64);
            add(&self.stats.frames, 1);
            match up.ws.write(Message::Binary(Bytes::copy_from_slice(chunk))) {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(tungstenite::Error::WriteBufferFull(_)) => {
                    add(&self.stats.overflow_closes, 1);
                    ok = false;
                    break;
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        up.out.clear();
        if ok {
            match up.ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    add(&self.stats.would_block, 1);
                }
                Err(_) => ok = false,
            }
        }
        ok
    }

    fn ping_all(&mut self) {
        let mut failed = Vec::new();
        for (i, conn) in self.conns.iter_mut().enumerate() {
            if let Some(Conn::Up(up)) = conn {
                let r = up
                    .ws
                    .write(Message::Ping(Bytes::new()))
                    .and_then(|()| up.ws.flush());
                match r {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => failed.push(i),
                }
            }
        }
        for i in failed {
            self.close(i);
        }
    }

    fn expire_handshakes(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            if let Some(Conn::Handshake { since, .. }) = &self.conns[i] {
                if now.duration_since(*since) > HANDSHAKE_TIMEOUT {
                    self.conns[i] = None;
                    self.free.push(i);
                    add(&self.stats.refused, 1);
                }
            }
        }
    }
}
