//! The fanout thread: the public listener, HTTP routing, WebSocket clients
//! and the REST endpoints, in one mio loop.
//!
//! Each loop turn: accept and read what is ready; take every update the book
//! thread queued; render each update once per message type and append the
//! same bytes to every subscriber's bounded buffer; flush each dirty client
//! with one write; send subscription changes upstream. Time-driven work
//! (the `/ws/prices` push, slow-client and slowloris checks) runs once a
//! second. No client can make the loop wait: every socket is non-blocking
//! and every buffer bounded (see [`session`]).

mod assets;
pub mod http;
pub mod protocol;
pub mod render;
pub mod rest;
mod session;
pub mod stats;
pub mod topics;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use ringbuf::traits::Consumer;
use ringbuf::HeapCons;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::book::{BookStats, SharedSnapshot, Update};
use crate::clock;
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::watch::{plan_rolls, RollSchedule};
use crate::instrument::{Master, TimeOfDay, WallClock};
use crate::metrics::{LatencyRecorder, SharedLatency};
use crate::upstream::{Command, UpstreamControl, UpstreamStats};
use http::{Head, Parsed};
use protocol::{ClientMessage, InstrumentRef};
use render::{message_mode, Renderer};
use rest::RestContext;
pub use rest::WatchItem;
use session::{Health, Kind, Session, Slot};
use stats::{add, get, sub, FanoutStats};
use topics::Topics;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// How long a queued close frame may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Fanout settings and limits.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// Most WebSocket clients at once.
    pub max_clients: usize,
    /// Most instruments one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Most instruments in one subscribe message.
    pub max_instruments_per_message: usize,
    /// Largest client frame/message accepted; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Outbound buffer per client before it counts as behind.
    pub client_queue_bytes: usize,
    /// A client behind for longer than this is closed with 1008.
    pub slow_client_timeout: Duration,
    /// A request head must arrive within this.
    pub head_timeout: Duration,
    /// Client messages allowed per second (bursts of twice that).
    pub max_messages_per_sec: u32,
    /// Grace before an instrument nobody wants is unsubscribed upstream.
    pub unsubscribe_grace: Duration,
    /// Extra browser origins allowed to open WebSockets (`*` for any).
    pub allowed_origins: Vec<String>,
    /// The configured watchlist, subscribed at start.
    pub watchlist: Vec<WatchItem>,
    /// Running against the built-in simulator.
    pub demo: bool,
    /// Pin the thread to this core, when set.
    pub core: Option<usize>,
    /// The instrument master: symbol resolution, search, symbol names.
    pub master: Arc<Master>,
    /// Watchlist symbols resolved to a dated contract: re-resolved daily
    /// at `roll_at`, and moved to the next contract once theirs expired.
    pub rolling: Vec<String>,
    /// When the daily expiry check runs (India time).
    pub roll_at: TimeOfDay,
    /// The wall clock for calendar decisions.
    pub clock: WallClock,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            max_clients: 10_000,
            max_subscriptions_per_client: 5_000,
            max_instruments_per_message: 1_000,
            max_frame_bytes: 64 * 1024,
            client_queue_bytes: 256 * 1024,
            slow_client_timeout: Duration::from_secs(5),
            head_timeout: Duration::from_secs(5),
            max_messages_per_sec: 50,
            unsubscribe_grace: Duration::from_secs(2),
            allowed_origins: Vec::new(),
            watchlist: Vec::new(),
            demo: false,
            core: None,
            master: Arc::new(Master::empty()),
            rolling: Vec::new(),
            roll_at: TimeOfDay::new(8, 45).expect("valid"),
            clock: WallClock::system(),
        }
    }
}

/// What the fanout reads from the other threads.
pub struct FanoutInputs {
    /// Updates from the book thread.
    pub updates: HeapCons<Update>,
    /// The book's latest snapshot.
    pub snapshot: SharedSnapshot,
    /// Commands to the network thread.
    pub upstream: UpstreamControl,
    /// Network-thread counters.
    pub upstream_stats: Arc<UpstreamStats>,
    /// Book-thread counters.
    pub book_stats: Arc<BookStats>,
    /// Network receive → book apply latency.
    pub receive_to_book: SharedLatency,
}

impl std::fmt::Debug for FanoutInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FanoutInputs")
    }
}

/// The listener and poll, created before the thread so other threads can
/// be given its waker.
#[derive(Debug)]
pub struct Fanout {
    poll: Poll,
    waker: Arc<Waker>,
    listener: TcpListener,
    config: FanoutConfig,
}

impl Fanout {
    /// Takes over a bound listener.
    pub fn new(listener: std::net::TcpListener, config: FanoutConfig) -> std::io::Result<Fanout> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Fanout {
            poll,
            waker,
            listener,
            config,
        })
    }

    /// Wakes the loop (the book thread calls it after a batch of updates).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Starts the thread.
    pub fn start(self, inputs: FanoutInputs) -> std::io::Result<FanoutThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FanoutStats::default());
        let tick_to_wire = SharedLatency::default();
        let symbols: HashMap<InstrumentKey, String> = self
            .config
            .watchlist
            .iter()
            .map(|w| (w.key, w.symbol.clone()))
            .collect();
        let by_symbol = self
            .config
            .watchlist
            .iter()
            .map(|w| (w.symbol.to_ascii_uppercase(), w.key))
            .collect();
        let core = self.config.core;
        let roll = RollSchedule::new(self.config.roll_at, self.config.clock.today());
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(self.config.client_queue_bytes / 2)
            .max_write_buffer_size(self.config.client_queue_bytes)
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        let waker = Arc::clone(&self.waker);
        let worker = Worker {
            topics: Topics::new(self.config.unsubscribe_grace),
            poll: self.poll,
            listener: self.listener,
            stop: Arc::clone(&stop),
            config: self.config,
            ws_config,
            inputs,
            conns: Vec::new(),
            free: Vec::new(),
            renderer: Renderer::new(),
            stats: Arc::clone(&stats),
            latency: tick_to_wire.recorder(),
            symbols,
            by_symbol,
            roll,
            started: Instant::now(),
            upstream_up: false,
            next_second: Instant::now(),
            turn_recv: Vec::with_capacity(1024),
            dirty: Vec::with_capacity(1024),
        };
        let thread = std::thread::Builder::new()
            .name("dhan-fanout".into())
            .spawn(move || {
                crate::affinity::pin("fanout", core);
                worker.run();
            })?;
        Ok(FanoutThread {
            thread: Some(thread),
            stop,
            waker,
            stats,
            tick_to_wire,
        })
    }
}

/// The running fanout thread.
#[derive(Debug)]
pub struct FanoutThread {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Counters.
    pub stats: Arc<FanoutStats>,
    /// Network receive → client socket write latency.
    pub tick_to_wire: SharedLatency,
}

impl FanoutThread {
    /// Sends close frames (1001) to every client and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Relaxed);
            let _ = self.waker.wake();
            let _ = t.join();
        }
    }
}

impl Drop for FanoutThread {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A connection on the public listener, by phase.
enum Conn {
    /// Reading the request head.
    Head {
        stream: TcpStream,
        buf: Vec<u8>,
        since: Instant,
    },
    /// Writing a plain response, then closing.
    Http {
        stream: TcpStream,
        out: Vec<u8>,
        pos: usize,
        since: Instant,
    },
    /// A WebSocket client.
    Ws(Box<Session>),
}

struct Worker {
    poll: Poll,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    config: FanoutConfig,
    ws_config: WebSocketConfig,
    inputs: FanoutInputs,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    topics: Topics,
    renderer: Renderer,
    stats: Arc<FanoutStats>,
    latency: LatencyRecorder,
    symbols: HashMap<InstrumentKey, String>,
    by_symbol: HashMap<String, InstrumentKey>,
    roll: RollSchedule,
    started: Instant,
    upstream_up: bool,
    next_second: Instant,
    /// Receive stamps of the updates delivered this turn.
    turn_recv: Vec<u64>,
    /// Sessions with unflushed output this turn.
    dirty: Vec<usize>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let watch: Vec<InstrumentKey> = self.config.watchlist.iter().map(|w| w.key).collect();
        for key in watch {
            self.topics.add(Topics::RELAY, key, Mode::Ticker);
        }
        loop {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("fanout poll failed: {e}; stopping");
                    return;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(i) => self.ready(i, now),
                }
            }
            if self.stop.load(Relaxed) {
                self.shutdown();
                return;
            }
            self.drain_updates(now);
            self.check_upstream();
            self.flush_dirty(now);
            self.push_changes(now);
            if now >= self.next_second {
                self.next_second = now + Duration::from_secs(1);
                self.every_second(now);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _peer)) => {
                    let open = self.conns.len() - self.free.len();
                    if open >= self.config.max_clients + 256 {
                        // Past the limit even for plain requests: refuse at once.
                        add(&self.stats.clients_rejected, 1);
                        let _ = stream.write(&http::error_response(503, "too many connections"));
                        continue;
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
                    self.conns[slot] = Some(Conn::Head {
                        stream,
                        buf: Vec::with_capacity(1024),
                        since: now,
                    });
                    // Data may already be waiting; edge-triggered readiness
                    // would not report it again.
                    self.ready(slot, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: log once per burst, keep serving.
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Readiness on connection `i`. A panic while serving one connection
    /// (a bug, ours or a dependency's) drops that connection only.
    fn ready(&mut self, i: usize, now: Instant) {
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(i, now)));
        if served.is_err() {
            log::error!("a connection handler panicked; that connection was dropped");
            self.topics.remove_client(i);
            if self.conns.get(i).is_some_and(Option::is_none) && !self.free.contains(&i) {
                self.free.push(i);
            }
            let open = self
                .conns
                .iter()
                .flatten()
                .filter(|c| matches!(c, Conn::Ws(_)))
                .count();
            self.stats.clients.store(open as u64, Relaxed);
        }
    }

    fn serve(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        let next = match conn {
            Conn::Head { stream, buf, since } => self.read_head(stream, buf, since, now),
            Conn::Http {
                mut stream,
                out,
                mut pos,
                since,
            } => match write_some(&mut stream, &out, &mut pos) {
                Ok(true) => None,
                Ok(false) => Some(Conn::Http {
                    stream,
                    out,
                    pos,
                    since,
                }),
                Err(_) => None,
            },
            Conn::Ws(mut s) => match self.read_ws(i, &mut s, now) {
                Health::Ok => Some(Conn::Ws(s)),
                Health::Gone => {
                    self.drop_session(i, &s);
                    None
                }
            },
        };
        self.put(i, next);
    }

    /// Puts a connection back in its slot (queueing a flush if it has
    /// output), or frees the slot.
    fn put(&mut self, i: usize, conn: Option<Conn>) {
        match conn {
            Some(c) => {
                if matches!(&c, Conn::Ws(s) if s.is_dirty()) {
                    self.dirty.push(i);
                }
                self.conns[i] = Some(c);
            }
            None => {
                self.conns[i] = None;
                self.free.push(i);
            }
        }
    }

    fn read_head(
        &mut self,
        mut stream: TcpStream,
        mut buf: Vec<u8>,
        since: Instant,
        now: Instant,
    ) -> Option<Conn> {
        let mut chunk = [0u8; 2048];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= http::MAX_HEAD_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return None,
            }
        }
        match http::parse_head(&buf) {
            Parsed::Partial => Some(Conn::Head { stream, buf, since }),
            Parsed::Bad(status, why) => {
                self.respond(stream, http::error_response(status, why), now)
            }
            Parsed::Done(head) => {
                let rest = buf.split_off(head.len);
                self.route(stream, head, rest, now)
            }
        }
    }

    fn respond(&mut self, mut stream: TcpStream, out: Vec<u8>, now: Instant) -> Option<Conn> {
        add(&self.stats.http_requests, 1);
        let mut pos = 0;
        match write_some(&mut stream, &out, &mut pos) {
            Ok(false) => Some(Conn::Http {
                stream,
                out,
                pos,
                since: now,
            }),
            _ => None,
        }
    }

    fn route(
        &mut self,
        stream: TcpStream,
        head: Head,
        rest: Vec<u8>,
        now: Instant,
    ) -> Option<Conn> {
        if head.method != "GET" {
            return self.respond(
                stream,
                http::error_response(405, "only GET is served here"),
                now,
            );
        }
        let allowed = http::origin_allowed(
            head.origin.as_deref(),
            head.host.as_deref(),
            &self.config.allowed_origins,
        );
        let kind = match head.path.as_str() {
            "/ws" => Some(Kind::Feed),
            "/ws/prices" => Some(Kind::Prices),
            _ => None,
        };
        if let Some(kind) = kind {
            return self.upgrade(stream, head, rest, kind, allowed, now);
        }
        let cors = if allowed {
            head.origin.as_deref()
        } else {
            None
        };
        if let Some((ctype, body)) = assets::get(&head.path) {
            return self.respond(stream, http::response(200, ctype, body, None), now);
        }
        let ctx_out = {
            let snapshot = self.inputs.snapshot.load();
            let ctx = self.rest_context(&snapshot);
            match head.path.as_str() {
                "/prices" => Some((200, "application/json", ctx.prices())),
                "/health" => {
                    let (code, body) = ctx.health();
                    Some((code, "application/json", body))
                }
                "/stats" => Some((200, "application/json", ctx.stats())),
                "/metrics" => Some((200, "text/plain; version=0.0.4", ctx.metrics())),
                "/api/watchlist" => Some((200, "application/json", ctx.watchlist())),
                "/api/instruments" => {
                    let (code, body) = rest::search(&self.config.master, &head.query);
                    Some((code, "application/json", body))
                }
                "/api/v2/subscriptions/active" => {
                    Some((200, "application/json", ctx.subscriptions()))
                }
                "/api" => Some((200, "text/plain; charset=utf-8", index_text())),
                _ => None,
            }
        };
        let out = match ctx_out {
            Some((code, ctype, body)) => http::response(code, ctype, body.as_bytes(), cors),
            None => http::error_response(404, "no such endpoint; see GET /api"),
        };
        self.respond(stream, out, now)
    }

    fn upgrade(
        &mut self,
        mut stream: TcpStream,
        head: Head,
        rest: Vec<u8>,
        kind: Kind,
        allowed: bool,
        now: Instant,
    ) -> Option<Conn> {
        let Some(key) = head.ws_key.as_deref() else {
            return self.respond(
                stream,
                http::error_response(
                    426,
                    "this endpoint speaks WebSocket; connect with a WebSocket client",
                ),
                now,
            );
        };
        if head.ws_version.as_deref() != Some("13") {
            return self.respond(
                stream,
                http::error_response(400, "unsupported Sec-WebSocket-Version (13 required)"),
                now,
            );
        }
        if !allowed {
            log::debug!("refused WebSocket from origin {:?}", head.origin);
            return self.respond(stream, http::error_response(403, "origin not allowed"), now);
        }
        if get(&self.stats.clients) as usize >= self.config.max_clients {
            add(&self.stats.clients_rejected, 1);
            return self.respond(stream, http::error_response(503, "too many clients"), now);
        }
        let answer = http::upgrade_response(key);
        let mut pos = 0;
        // A fresh socket's send buffer takes a ~150-byte answer whole.
        if !matches!(write_some(&mut stream, &answer, &mut pos), Ok(true)) {
            return None;
        }
        let ws = WebSocket::from_partially_read(stream, rest, Role::Server, Some(self.ws_config));
        let mut s = Box::new(Session::new(ws, kind, self.config.max_messages_per_sec));
        add(&self.stats.clients, 1);
        add(&self.stats.clients_total, 1);
        // Bring the upstream view up to date first, so this client's greeting
        // and any later transition message agree (no duplicate "Connected").
        self.check_upstream();
        match kind {
            Kind::Feed => {
                let status = self.status_text();
                s.reply(protocol::status_message(&status), &self.stats);
            }
            Kind::Prices => {
                let snapshot = self.inputs.snapshot.load();
                let prices = Utf8Bytes::from(self.rest_context(&snapshot).prices());
                s.deliver(Slot::Prices, &prices, &self.stats, now);
            }
        }
        log::debug!("client connected to {}", head.path);
        Some(Conn::Ws(s))
    }

    fn status_text(&self) -> String {
        if self.upstream_up {
            "Connected to price feed".to_string()
        } else {
            let snapshot = self.inputs.snapshot.load();
            format!(
                "Waiting for price feed: {}",
                self.rest_context(&snapshot).status()
            )
        }
    }

    /// Reads every message the client sent; replies and closes as needed.
    fn read_ws(&mut self, i: usize, s: &mut Session, now: Instant) -> Health {
        // After a close we only drain our output: a reader that failed on an
        // oversized or broken frame must not be called again.
        while s.closing.is_none() {
            match s.ws.read() {
                Ok(Message::Text(text)) => self.on_text(i, s, text.as_str(), now),
                Ok(Message::Binary(_)) => {
                    add(&self.stats.protocol_closes, 1);
                    s.close(
                        CloseCode::Unsupported,
                        "binary frames are not understood; send JSON text",
                        now,
                    );
                }
                Ok(_) => {} // ping (pong queued by tungstenite), pong, close
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Capacity(_)) => {
                    add(&self.stats.protocol_closes, 1);
                    let why = format!(
                        "message too big (limit {} bytes)",
                        self.config.max_frame_bytes
                    );
                    s.close(CloseCode::Size, &why, now);
                    break;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    add(&self.stats.protocol_closes, 1);
                    s.close(CloseCode::Invalid, "text frame is not valid UTF-8", now);
                    break;
                }
                Err(tungstenite::Error::Protocol(e)) if s.closing.is_none() => {
                    add(&self.stats.protocol_closes, 1);
                    s.close(CloseCode::Protocol, &format!("protocol error: {e}"), now);
                    break;
                }
                Err(_) => return Health::Gone,
            }
        }
        // Pongs, replies and close frames go out now, not next turn.
        s.flush(&self.stats, now)
    }

    fn on_text(&mut self, i: usize, s: &mut Session, text: &str, now: Instant) {
        if !s.allow_request(now) {
            self.client_error(
                s,
                &format!(
                    "rate limit: at most {} messages per second; message ignored",
                    self.config.max_messages_per_sec
                ),
            );
            return;
        }
        if s.kind == Kind::Prices {
            self.client_error(s, "/ws/prices only sends; subscribe on /ws");
            return;
        }
        match protocol::parse(text, self.config.max_instruments_per_message) {
            Err(e) => self.client_error(s, &e),
            Ok(ClientMessage::Ping) => s.reply(r#"{"type":"pong"}"#.to_string(), &self.stats),
            Ok(ClientMessage::Subscribe { instruments, mode }) => {
                self.subscribe(i, s, instruments, mode, now)
            }
            Ok(ClientMessage::Unsubscribe { instruments }) => self.unsubscribe(i, s, instruments),
        }
    }

    fn client_error(&self, s: &mut Session, message: &str) {
        add(&self.stats.client_errors, 1);
        s.reply(protocol::error_message(message), &self.stats);
    }

    /// Resolves refs to keys: symbols through the instrument master as of
    /// today, then the watchlist's names; what does not resolve is reported
    /// (with the closest candidates) and skipped.
    fn resolve(&self, s: &mut Session, refs: Vec<InstrumentRef>) -> Vec<InstrumentKey> {
        let mut keys = Vec::with_capacity(refs.len());
        let today = self.config.clock.today();
        for r in refs {
            match r {
                InstrumentRef::Key(k) => keys.push(k),
                InstrumentRef::Symbol(sym) => match self.config.master.resolve(&sym, today) {
                    Ok(inst) => keys.push(inst.key()),
                    Err(e) => match self.by_symbol.get(&sym.to_ascii_uppercase()) {
                        Some(k) => keys.push(*k),
                        None => self.client_error(s, &e.to_string()),
                    },
                },
            }
        }
        keys
    }

    fn subscribe(
        &mut self,
        i: usize,
        s: &mut Session,
        refs: Vec<InstrumentRef>,
        mode: Mode,
        now: Instant,
    ) {
        let keys = self.resolve(s, refs);
        let new = keys.iter().filter(|k| !s.subs.contains_key(k)).count();
        if s.subs.len() + new > self.config.max_subscriptions_per_client {
            self.client_error(s, &format!(
                "subscription limit: a client may hold {} instruments (holding {}, asked for {new} more); nothing subscribed",
                self.config.max_subscriptions_per_client,
                s.subs.len()
            ));
            return;
        }
        add(&self.stats.subscriptions, new as u64);
        let snapshot = self.inputs.snapshot.load();
        for key in keys {
            // Name it once here, so every update (a look-up) carries it.
            if !self.symbols.contains_key(&key) {
                if let Some(inst) = self.config.master.get(key) {
                    self.symbols.insert(key, inst.symbol().to_string());
                }
            }
            s.subs.insert(key, mode);
            self.topics.add(i, key, mode);
            // Snapshot on subscribe: the fanout's own latest, else the book's.
            let state = self
                .topics
                .get(&key)
                .and_then(|t| t.last.map(|u| u.state))
                .or_else(|| snapshot.get(key).copied());
            if let Some(state) = state {
                let symbol = self.symbols.get(&key).map(String::as_str);
                if let Some(msg) = self.renderer.state(&state, mode, symbol) {
                    s.deliver(Slot::Instrument(key), &msg, &self.stats, now);
                }
            }
        }
    }

    fn unsubscribe(&mut self, i: usize, s: &mut Session, refs: Vec<InstrumentRef>) {
        let keys = self.resolve(s, refs);
        let mut missing = Vec::new();
        for key in keys {
            if s.subs.remove(&key).is_some() {
                self.topics.remove(i, key);
                sub(&self.stats.subscriptions, 1);
            } else {
                missing.push(key.to_string());
            }
        }
        if !missing.is_empty() {
            self.client_error(s, &format!("not subscribed: {}", missing.join(", ")));
        }
    }

    /// Takes every queued update and hands it to its subscribers.
    fn drain_updates(&mut self, now: Instant) {
        let Worker {
            inputs,
            topics,
            conns,
            renderer,
            stats,
            symbols,
            turn_recv,
            dirty,
            ..
        } = self;
        let mut n = 0u64;
        while let Some(update) = inputs.updates.try_pop() {
            n += 1;
            let key = update.state.key;
            let Some(topic) = topics.get_mut(&key) else {
                continue;
            };
            topic.last = Some(update);
            // Rendered at most once per message type, shared by all.
            let mut rendered: [Option<Option<Utf8Bytes>>; 3] = [None, None, None];
            let mut delivered = false;
            for &(client, mode) in &topic.subscribers {
                let Some(Some(Conn::Ws(s))) = conns.get_mut(client) else {
                    continue; // the relay's own watchlist entry
                };
                let as_mode = message_mode(update.kind, mode);
                let msg = rendered[as_mode as usize].get_or_insert_with(|| {
                    renderer.update(&update, as_mode, symbols.get(&key).map(String::as_str))
                });
                if let Some(msg) = msg {
                    if !s.is_dirty() {
                        dirty.push(client);
                    }
                    s.deliver(Slot::Instrument(key), msg, stats, now);
                    delivered = true;
                }
            }
            if delivered {
                turn_recv.push(update.state.recv_ns);
            }
        }
        if n > 0 {
            add(&stats.updates, n);
        }
    }

    /// One write per dirty client, then the tick-to-wire latencies.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &i in &dirty {
            let Some(Some(Conn::Ws(s))) = self.conns.get_mut(i) else {
                continue;
            };
            let health = s.flush(&self.stats, now);
            let done_closing = s.closing.is_some() && !s.is_dirty();
            if health == Health::Gone || done_closing {
                if let Some(Conn::Ws(s)) = self.conns[i].take() {
                    self.drop_session(i, &s);
                }
                self.free.push(i);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        let wire_ns = clock::now_ns();
        for recv in self.turn_recv.drain(..) {
            self.latency.record(wire_ns.saturating_sub(recv));
        }
    }

    /// Tells the network thread what changed.
    fn push_changes(&mut self, now: Instant) {
        let changes = self.topics.take_changes(now);
        if !changes.subscribe.is_empty() {
            self.inputs
                .upstream
                .send(Command::Subscribe(changes.subscribe));
        }
        if !changes.unsubscribe.is_empty() {
            self.inputs
                .upstream
                .send(Command::Unsubscribe(changes.unsubscribe));
        }
    }

    /// Tells `/ws` clients when the upstream goes down or comes back.
    fn check_upstream(&mut self) {
        let up = self.inputs.upstream_stats.connections_up() > 0;
        if up == self.upstream_up {
            return;
        }
        self.upstream_up = up;
        let text = if up {
            "Connected to price feed".to_string()
        } else {
            format!(
                "Price feed disconnected: {}",
                self.status_text()
                    .trim_start_matches("Waiting for price feed: ")
            )
        };
        let msg = protocol::status_message(&text);
        for i in 0..self.conns.len() {
            if let Some(Conn::Ws(s)) = &mut self.conns[i] {
                if s.kind == Kind::Feed {
                    s.reply(msg.clone(), &self.stats);
                    self.dirty.push(i);
                }
            }
        }
    }

    fn every_second(&mut self, now: Instant) {
        self.check_roll();
        // Rendered once for every /ws/prices client, and only if there is one.
        let any_prices = self
            .conns
            .iter()
            .flatten()
            .any(|c| matches!(c, Conn::Ws(s) if s.kind == Kind::Prices));
        let prices = any_prices.then(|| {
            let snapshot = self.inputs.snapshot.load();
            Utf8Bytes::from(self.rest_context(&snapshot).prices())
        });
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].take() else {
                continue;
            };
            let next = match conn {
                Conn::Head { stream, since, .. }
                    if now.duration_since(since) > self.config.head_timeout =>
                {
                    self.respond(
                        stream,
                        http::error_response(408, "request head not received in time"),
                        now,
                    )
                }
                Conn::Http { since, .. }
                    if now.duration_since(since) > self.config.head_timeout =>
                {
                    None
                }
                Conn::Ws(mut s) => {
                    if s.closing
                        .is_some_and(|at| now.duration_since(at) > CLOSE_GRACE)
                    {
                        self.drop_session(i, &s);
                        None
                    } else {
                        if s.too_slow(now, self.config.slow_client_timeout) {
                            add(&self.stats.slow_closes, 1);
                            log::info!(
                                "closing a client that stayed behind for {:?}",
                                self.config.slow_client_timeout
                            );
                            s.close(CloseCode::Policy, "too slow: not reading its messages", now);
                        } else if let (Kind::Prices, Some(prices)) = (s.kind, &prices) {
                            s.deliver(Slot::Prices, prices, &self.stats, now);
                        }
                        Some(Conn::Ws(s))
                    }
                }
                other => Some(other),
            };
            self.put(i, next);
        }
        self.flush_dirty(now);
        self.latency.maybe_publish(now);
    }

    /// The daily expiry check: watchlist entries whose contract expired move
    /// to the next one; the old one is released (unsubscribed upstream
    /// after the grace period unless a client holds it).
    fn check_roll(&mut self) {
        if self.config.rolling.is_empty() {
            return;
        }
        let Some(today) = self.roll.due(self.config.clock.now()) else {
            return;
        };
        let (rolls, warnings) = plan_rolls(
            &self.config.master,
            &self.config.watchlist,
            &self.config.rolling,
            today,
        );
        for w in warnings {
            log::warn!("{w}");
        }
        for roll in rolls {
            log::info!("{}", roll.message);
            self.topics.remove(Topics::RELAY, roll.from);
            self.topics.add(Topics::RELAY, roll.to, Mode::Ticker);
            self.config.watchlist[roll.index].key = roll.to;
            self.by_symbol
                .insert(roll.symbol.to_ascii_uppercase(), roll.to);
            // The old contract keeps its own name for anyone still holding it.
            match self.config.master.get(roll.from) {
                Some(old) => {
                    self.symbols.insert(roll.from, old.symbol().to_string());
                }
                None => {
                    self.symbols.remove(&roll.from);
                }
            }
            self.symbols.insert(roll.to, roll.symbol);
        }
    }

    fn drop_session(&mut self, i: usize, s: &Session) {
        for key in s.subs.keys() {
            self.topics.remove(i, *key);
        }
        sub(&self.stats.subscriptions, s.subs.len() as u64);
        sub(&self.stats.clients, 1);
        log::debug!("client closed");
    }

    fn rest_context<'a>(&'a self, snapshot: &'a crate::book::Snapshot) -> RestContext<'a> {
        RestContext {
            snapshot,
            watchlist: &self.config.watchlist,
            symbols: &self.symbols,
            upstream: &self.inputs.upstream_stats,
            book: &self.inputs.book_stats,
            fanout: &self.stats,
            receive_to_book: self.inputs.receive_to_book.percentiles(),
            tick_to_wire: self.latency_percentiles(),
            active: self.topics.active(),
            uptime: self.started.elapsed(),
            demo: self.config.demo,
        }
    }

    fn latency_percentiles(&self) -> crate::metrics::Percentiles {
        self.latency.shared().percentiles()
    }

    /// Close frames (1001) to every client, a short wait for them to go out.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for conn in self.conns.iter_mut().flatten() {
            if let Conn::Ws(s) = conn {
                s.close(CloseCode::Away, "server shutting down", now);
                let _ = s.flush(&self.stats, now);
            }
        }
        let deadline = now + Duration::from_millis(500);
        let mut events = Events::with_capacity(256);
        while Instant::now() < deadline
            && self
                .conns
                .iter()
                .flatten()
                .any(|c| matches!(c, Conn::Ws(s) if s.is_dirty()))
        {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(20)));
            let now = Instant::now();
            for conn in self.conns.iter_mut().flatten() {
                if let Conn::Ws(s) = conn {
                    let _ = s.flush(&self.stats, now);
                }
            }
        }
        self.latency.publish(Instant::now());
        log::info!("fanout stopped");
    }
}

/// Writes from `pos`; `Ok(true)` once everything is written.
fn write_some(stream: &mut TcpStream, out: &[u8], pos: &mut usize) -> std::io::Result<bool> {
    while *pos < out.len() {
        match stream.write(&out[*pos..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn index_text() -> String {
    "dhan-relay\n\n\
     GET  /prices                        watchlist prices (JSON)\n\
     GET  /health                        upstream state; 503 while no upstream connection is up\n\
     GET  /stats                         latency percentiles and counters (JSON)\n\
     GET  /metrics                       Prometheus text\n\
     GET  /api/v2/subscriptions/active   upstream subscriptions with modes and client counts\n\
     GET  /api/watchlist                 the configured watchlist\n\
     GET  /api/instruments?q=relia&limit=20  instrument search (exact, prefix, substring)\n\
     WS   /ws                            subscribe/unsubscribe protocol (JSON)\n\
     WS   /ws/prices                     the /prices object every second\n"
        .to_string()
}
