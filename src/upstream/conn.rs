//! One upstream connection slot: name lookup → TCP connect → TLS →
//! WebSocket handshake → subscribed reading, then back to a backoff wait when
//! anything fails.
//!
//! Every step is non-blocking and resumable: the mio loop calls
//! [`Conn::on_ready`] on readiness and [`Conn::on_timer`] at deadlines, and
//! each call advances the phase as far as the socket allows, draining reads
//! until `WouldBlock` (the socket is registered edge-triggered). The name
//! lookup runs on another thread ([`super::dns`]); its answer arrives through
//! [`Conn::on_resolved`].

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use ringbuf::HeapProd;
use rustls::ClientConfig;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::backoff::{Backoff, BackoffConfig};
use super::dns::Lookups;
use super::stats::{SlotState, UpstreamStats};
use super::tls::{self, Transport};
use super::Credentials;
use crate::book::{BookThread, LiveBook};
use crate::clock;
use crate::record::{FeedKind, RecordTap};
use crate::spsc::push_or_wait;
use crate::tick::DepthTick;
use crate::tick::Tick;
use crate::wire::depth::{self, DepthMessage};
use crate::wire::feed::{self, FeedData, FeedMessage};
use crate::wire::request::DISCONNECT;
use crate::wire::DisconnectReason;

/// A connection that stayed up this long resets its backoff when it fails.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a graceful close may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Settings shared by every slot; only the credentials change after start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub feed_url: String,
    pub credentials: Credentials,
    /// Bumped with every change of `credentials`; a connection remembers the
    /// generation it logged in with.
    pub generation: u64,
    pub host: String,
    pub port: u16,
    /// The address when `host` is an IP literal: no lookup needed.
    pub literal: Option<SocketAddr>,
    /// How long a name lookup may take before the attempt counts as failed.
    pub resolve_timeout: Duration,
    pub tls: Option<Arc<ClientConfig>>,
    pub silence_timeout: Duration,
    pub connect_timeout: Duration,
    pub ws: WebSocketConfig,
}

/// Poll tokens of depth-feed connections start here (main-feed slots use
/// their slot number).
pub(crate) const DEPTH_TOKENS: usize = 1 << 16;

/// Where decoded ticks go: the network thread's book, when it keeps one
/// (the engine), and the SPSC rings to the book thread.
pub(crate) struct TickSink {
    pub ring: HeapProd<Tick>,
    /// The depth ring (see [`DepthTick`]); without one, depth packets are
    /// counted and dropped.
    pub depth: Option<HeapProd<DepthTick>>,
    pub consumer: Option<std::thread::Thread>,
    pub pushed: bool,
    /// Applies each tick here and forwards the update to the fanout (see
    /// [`LiveBook`]); the rings' consumer then runs behind, woken only
    /// when a ring fills past [`BookThread::should_wake`].
    pub live: Option<LiveBook>,
    /// `--record`: every binary frame, as received, goes here too (never
    /// blocks: a full recorder ring counts the frame lost).
    pub record: Option<RecordTap>,
    /// Set by [`super::Upstream`] before it asks the thread to stop, so a
    /// wait on a full ring cannot block shutdown.
    pub stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for TickSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TickSink")
    }
}

impl TickSink {
    /// Applies (with a live book) and pushes one tick. A full ring is never
    /// a silent drop: the thread waits (and counts the wait), which stops
    /// it reading the socket, so pressure travels back to the sender
    /// through TCP (see [`crate::spsc`]).
    fn push(&mut self, tick: Tick, stats: &UpstreamStats) {
        if let Some(live) = &mut self.live {
            live.apply(&tick, &self.stopping);
        }
        let TickSink {
            ring,
            consumer,
            stopping,
            ..
        } = self;
        push_or_wait(ring, tick, &stats.ring_full_waits, stopping, || {
            unpark(consumer)
        });
        self.pushed = true;
    }

    /// [`TickSink::push`] for one depth side packet.
    fn push_depth(&mut self, tick: DepthTick, stats: &UpstreamStats) {
        if let Some(live) = &mut self.live {
            live.apply_depth(&tick, &self.stopping);
        }
        let TickSink {
            depth: Some(ring),
            consumer,
            stopping,
            ..
        } = self
        else {
            return;
        };
        push_or_wait(ring, tick, &stats.ring_full_waits, stopping, || {
            unpark(consumer)
        });
        self.pushed = true;
    }

    /// Whether another frame may be read (see [`LiveBook::has_room`]).
    pub fn has_room(&mut self) -> bool {
        self.live.as_mut().map_or(true, LiveBook::has_room)
    }

    /// The end of a loop turn: the live book wakes the fanout; the rings'
    /// consumer is woken after each batch, or with a live book only once a
    /// ring fills past [`BookThread::should_wake`].
    pub fn wake(&mut self) {
        let Some(live) = &mut self.live else {
            if std::mem::take(&mut self.pushed) {
                unpark(&self.consumer);
            }
            return;
        };
        live.end_turn();
        let filling = BookThread::should_wake(&self.ring)
            || self.depth.as_ref().is_some_and(BookThread::should_wake);
        if std::mem::take(&mut self.pushed) && filling {
            unpark(&self.consumer);
        }
    }

    /// Updates wait in the live book's spill for room in the fanout's ring
    /// (compact layout): the loop must turn again soon, not sleep.
    pub fn spilled(&self) -> bool {
        self.live.as_ref().is_some_and(LiveBook::spilled)
    }
}

fn unpark(consumer: &Option<std::thread::Thread>) {
    if let Some(t) = consumer {
        t.unpark();
    }
}

/// What the event loop needs to act on after a call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Nothing changed that the loop must act on.
    None,
    /// The WebSocket is open: send the slot's subscriptions.
    Up,
    /// The connection went down: nothing is subscribed on it any more.
    Lost,
}

enum Phase {
    /// Not connected; connect at `retry_at` (never, when `None`).
    Down { retry_at: Option<Instant> },
    /// Waiting for the answer of name lookup `lookup`.
    Resolving { lookup: u64, deadline: Instant },
    /// TCP connect in flight.
    Connecting {
        socket: TcpStream,
        deadline: Instant,
    },
    /// TLS and WebSocket handshakes in flight.
    Handshaking {
        mid: MidHandshake<ClientHandshake<Transport>>,
        deadline: Instant,
    },
    /// Open and reading.
    Up {
        ws: Box<WebSocket<Transport>>,
        since: Instant,
        last_rx: Instant,
        probe_sent: bool,
    },
    /// Sent a close; waiting for the peer's, briefly.
    Closing {
        ws: Box<WebSocket<Transport>>,
        deadline: Instant,
    },
}

/// Why a connection ended.
enum Failure {
    /// A transport, TLS or protocol error, already redacted.
    Error(String),
    /// DhanHQ sent a disconnect packet.
    Server(DisconnectReason),
}

/// One connection slot.
pub(crate) struct Conn {
    slot: usize,
    /// A 20-level depth connection (`/twentydepth`), not the main feed.
    depth: bool,
    phase: Phase,
    backoff: Backoff,
    /// The credentials generation of the last handshake started.
    generation: u64,
    /// Instrument packets received (market status aside), over every
    /// connection of this slot.
    instrument_packets: u64,
    /// Reading stopped with data possibly left on the socket, because the
    /// fanout's ring had no room ([`TickSink::has_room`]); the loop reads
    /// again once it has (edge-triggered readiness would not say so).
    pub unread: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn {{ slot: {} }}", self.slot)
    }
}

/// What a call may touch.
pub(crate) struct Env<'a> {
    pub registry: &'a Registry,
    pub settings: &'a Settings,
    pub stats: &'a UpstreamStats,
    pub sink: &'a mut TickSink,
    pub lookups: &'a mut Lookups,
}

impl Conn {
    pub fn new(slot: usize, backoff: BackoffConfig) -> Self {
        Conn {
            slot,
            depth: false,
            phase: Phase::Down { retry_at: None },
            backoff: Backoff::new(backoff, clock::now_ns() ^ (slot as u64) << 32),
            generation: 0,
            unread: false,
            instrument_packets: 0,
        }
    }

    /// A depth-feed connection slot: its own poll tokens and packet format.
    pub fn new_depth(slot: usize, backoff: BackoffConfig) -> Self {
        Conn {
            depth: true,
            ..Conn::new(slot, backoff)
        }
    }

    fn token(&self) -> Token {
        Token(if self.depth {
            DEPTH_TOKENS + self.slot
        } else {
            self.slot
        })
    }

    /// Instrument packets received so far (all connections of this slot):
    /// a new connection has been served its subscriptions once this moves.
    pub fn instrument_packets(&self) -> u64 {
        self.instrument_packets
    }

    /// Logged in (or logging in) with credentials older than `generation`.
    pub fn is_stale(&self, generation: u64) -> bool {
        self.generation < generation
            && matches!(self.phase, Phase::Up { .. } | Phase::Handshaking { .. })
    }

    /// Waiting to retry after a failure (not an unused slot).
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Down { retry_at: Some(_) })
    }

    /// Moves the connection to another slot number (its poll token and its
    /// line in the stats): the two halves of a swap call this.
    pub fn move_to(&mut self, slot: usize, env: &mut Env<'_>) {
        self.slot = slot;
        let token = self.token();
        let state = match &self.phase {
            Phase::Up { .. } => SlotState::Up,
            Phase::Closing { .. } => SlotState::Unused,
            _ => return,
        };
        env.stats.set_slot(slot, state);
        let socket = match &mut self.phase {
            Phase::Up { ws, .. } | Phase::Closing { ws, .. } => ws.get_mut().tcp_mut(),
            _ => return,
        };
        if let Err(e) =
            env.registry
                .reregister(socket, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("upstream[{slot}] poll re-registration failed: {e}");
        }
    }

    /// Starts over at once with the current credentials: an open connection
    /// says goodbye (RequestCode 12, close frame) and is dropped, a handshake
    /// is abandoned, a wait for a retry ends now.
    pub fn restart(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        let was_up = match std::mem::replace(&mut self.phase, Phase::Down { retry_at: None }) {
            Phase::Up { mut ws, .. } => {
                let _ = ws.write(Message::text(DISCONNECT));
                let _ = ws.close(None);
                let _ = ws.flush();
                env.stats.disconnects.inc();
                true
            }
            Phase::Down { retry_at: None } => return Transition::None,
            _ => false,
        };
        self.backoff.reset();
        self.phase = Phase::Down {
            retry_at: Some(now),
        };
        env.stats.set_slot(self.slot, SlotState::Backoff);
        if was_up {
            Transition::Lost
        } else {
            Transition::None
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    /// Up, with data possibly left unread for want of room (see
    /// [`Conn::unread`]); a connection that went down since has nothing to
    /// resume.
    pub fn wants_read(&self) -> bool {
        self.unread && self.is_up()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Down { .. })
    }

    /// Makes sure the slot is connected or on its way there.
    pub fn want_connected(&mut self, now: Instant) {
        if let Phase::Down { retry_at: None } = self.phase {
            self.phase = Phase::Down {
                retry_at: Some(now),
            };
        }
    }

    /// The next moment [`Conn::on_timer`] has work to do.
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        match &self.phase {
            Phase::Down { retry_at } => *retry_at,
            Phase::Resolving { deadline, .. }
            | Phase::Connecting { deadline, .. }
            | Phase::Handshaking { deadline, .. }
            | Phase::Closing { deadline, .. } => Some(*deadline),
            Phase::Up {
                last_rx,
                probe_sent,
                ..
            } => Some(if *probe_sent {
                *last_rx + settings.silence_timeout
            } else {
                *last_rx + settings.silence_timeout / 2
            }),
        }
    }

    /// Time-driven work: start a connection, enforce deadlines, detect a
    /// silent socket.
    pub fn on_timer(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        let silence = env.settings.silence_timeout;
        match &mut self.phase {
            Phase::Down { retry_at: Some(at) } if *at <= now => self.connect(env, now),
            Phase::Resolving { deadline, .. } if *deadline <= now => {
                // The lookup thread may still be stuck; the next attempt
                // adopts it rather than starting another.
                let why = format!(
                    "DNS lookup of {} took longer than {:?}",
                    env.settings.host, env.settings.resolve_timeout
                );
                self.fail(env, now, Failure::Error(why))
            }
            Phase::Connecting { deadline, .. } | Phase::Handshaking { deadline, .. }
                if *deadline <= now =>
            {
                let why = format!("connect timed out after {:?}", env.settings.connect_timeout);
                self.fail(env, now, Failure::Error(why))
            }
            Phase::Closing { deadline, .. } if *deadline <= now => {
                self.phase = Phase::Down { retry_at: None };
                Transition::None
            }
            Phase::Up {
                ws,
                last_rx,
                probe_sent,
                ..
            } => {
                let quiet = now.saturating_duration_since(*last_rx);
                if quiet >= silence {
                    env.stats.silent_drops.inc();
                    let why = format!("no data and no ping for {quiet:.1?}: the socket is dead");
                    return self.fail(env, now, Failure::Error(why));
                }
                if quiet >= silence / 2 && !*probe_sent {
                    // A quiet market is normal; a ping tells a live peer
                    // from a dead socket before the timeout.
                    *probe_sent = true;
                    let _ = ws.write(Message::Ping(Default::default()));
                    if let Err(e) = flush(ws) {
                        return self.fail(env, now, e);
                    }
                }
                Transition::None
            }
            _ => Transition::None,
        }
    }

    /// Readiness on this slot's socket.
    pub fn on_ready(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        match std::mem::replace(&mut self.phase, Phase::Down { retry_at: None }) {
            Phase::Connecting { socket, deadline } => match socket.take_error() {
                Ok(None) => match socket.peer_addr() {
                    Ok(_) => self.handshake_start(env, now, socket, deadline),
                    Err(e) if e.kind() == ErrorKind::NotConnected => {
                        self.phase = Phase::Connecting { socket, deadline };
                        Transition::None
                    }
                    Err(e) => self.fail(env, now, Failure::Error(format!("connect failed: {e}"))),
                },
                Ok(Some(e)) | Err(e) => {
                    self.fail(env, now, Failure::Error(format!("connect failed: {e}")))
                }
            },
            Phase::Handshaking { mid, deadline } => {
                self.handshake_step(env, now, mid.handshake(), deadline)
            }
            Phase::Up {
                ws,
                since,
                last_rx,
                probe_sent,
            } => {
                self.phase = Phase::Up {
                    ws,
                    since,
                    last_rx,
                    probe_sent,
                };
                self.read_up(env, now)
            }
            Phase::Closing { mut ws, deadline } => {
                loop {
                    match ws.read() {
                        Ok(_) => continue,
                        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                            let _ = ws.flush();
                            self.phase = Phase::Closing { ws, deadline };
                            break;
                        }
                        Err(_) => break, // closed: stay Down
                    }
                }
                Transition::None
            }
            // No socket yet: nothing to read.
            idle @ (Phase::Down { .. } | Phase::Resolving { .. }) => {
                self.phase = idle;
                Transition::None
            }
        }
    }

    /// The answer of a name lookup. One this slot no longer waits for (it
    /// timed out, or the slot was closed) is dropped.
    pub fn on_resolved(
        &mut self,
        env: &mut Env<'_>,
        now: Instant,
        lookup: u64,
        result: Result<SocketAddr, String>,
    ) -> Transition {
        let waited = matches!(self.phase, Phase::Resolving { lookup: l, .. } if l == lookup);
        match result {
            _ if !waited => Transition::None,
            Ok(addr) => self.open(env, now, addr),
            Err(why) => self.fail(env, now, Failure::Error(why)),
        }
    }

    /// Sends subscription requests on an open connection.
    pub fn send_requests(
        &mut self,
        env: &mut Env<'_>,
        now: Instant,
        requests: Vec<String>,
    ) -> Transition {
        let Phase::Up { ws, .. } = &mut self.phase else {
            return Transition::None;
        };
        for r in requests {
            if let Err(e) = ws.write(Message::text(r)) {
                return self.fail(
                    env,
                    now,
                    Failure::Error(
                        env.settings
                            .credentials
                            .redact(&format!("send failed: {e}")),
                    ),
                );
            }
        }
        match flush(ws) {
            Ok(()) => Transition::None,
            Err(e) => self.fail(env, now, e),
        }
    }

    /// Closes politely: RequestCode 12, then a close frame. The slot stays
    /// down afterwards until [`Conn::want_connected`].
    pub fn close(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        match std::mem::replace(&mut self.phase, Phase::Down { retry_at: None }) {
            Phase::Up { mut ws, .. } => {
                let _ = ws.write(Message::text(DISCONNECT));
                let _ = ws.close(None);
                let _ = ws.flush();
                log::info!("upstream[{}] closed (RequestCode 12 sent)", self.slot);
                env.stats.set_slot(self.slot, SlotState::Unused);
                self.phase = Phase::Closing {
                    ws,
                    deadline: now + CLOSE_GRACE,
                };
                Transition::Lost
            }
            _ => {
                env.stats.set_slot(self.slot, SlotState::Unused);
                Transition::None
            }
        }
    }

    /// Starts an attempt: straight to TCP for an IP literal, else a name
    /// lookup on another thread (resolved afresh for every attempt).
    fn connect(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        env.stats.connect_attempts.inc();
        let settings = env.settings;
        if let Some(addr) = settings.literal {
            return self.open(env, now, addr);
        }
        match env.lookups.start(self.slot, &settings.host, settings.port) {
            Ok(lookup) => {
                env.stats.set_slot(self.slot, SlotState::Resolving);
                self.phase = Phase::Resolving {
                    lookup,
                    deadline: now + settings.resolve_timeout,
                };
                Transition::None
            }
            Err(e) => self.fail(
                env,
                now,
                Failure::Error(format!("cannot start a DNS lookup thread: {e}")),
            ),
        }
    }

    /// Opens the TCP connection; the handshake deadline starts now.
    fn open(&mut self, env: &mut Env<'_>, now: Instant, addr: SocketAddr) -> Transition {
        env.stats.set_slot(self.slot, SlotState::Connecting);
        let mut socket = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                return self.fail(
                    env,
                    now,
                    Failure::Error(format!("connect to {addr} failed: {e}")),
                )
            }
        };
        if let Err(e) = env.registry.register(
            &mut socket,
            self.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(
                env,
                now,
                Failure::Error(format!("poll registration failed: {e}")),
            );
        }
        let _ = socket.set_nodelay(true);
        self.phase = Phase::Connecting {
            socket,
            deadline: now + env.settings.connect_timeout,
        };
        Transition::None
    }

    fn handshake_start(
        &mut self,
        env: &mut Env<'_>,
        now: Instant,
        socket: TcpStream,
        deadline: Instant,
    ) -> Transition {
        let settings = env.settings;
        let transport = match &settings.tls {
            Some(config) => match tls::wrap(config, &settings.host, socket) {
                Ok(t) => t,
                Err(why) => return self.fail(env, now, Failure::Error(why)),
            },
            None => Transport::Plain(socket),
        };
        self.generation = settings.generation;
        let url = if self.depth {
            settings.credentials.depth_url(&settings.feed_url)
        } else {
            settings.credentials.url(&settings.feed_url)
        };
        let result =
            tungstenite::client::client_with_config(url.as_str(), transport, Some(settings.ws));
        self.handshake_step(env, now, result, deadline)
    }

    fn handshake_step(
        &mut self,
        env: &mut Env<'_>,
        now: Instant,
        result: Result<
            (
                WebSocket<Transport>,
                tungstenite::handshake::client::Response,
            ),
            HandshakeError<ClientHandshake<Transport>>,
        >,
        deadline: Instant,
    ) -> Transition {
        match result {
            Ok((ws, _response)) => {
                env.stats.connects.inc();
                env.stats.set_slot(self.slot, SlotState::Up);
                log::info!(
                    "upstream[{}] connected to {}",
                    self.slot,
                    Credentials::redacted_url(&env.settings.feed_url)
                );
                self.phase = Phase::Up {
                    ws: Box::new(ws),
                    since: now,
                    last_rx: now,
                    probe_sent: false,
                };
                // Data may already be buffered behind the handshake response.
                match self.read_up(env, now) {
                    Transition::Lost => Transition::Lost,
                    _ => Transition::Up,
                }
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.phase = Phase::Handshaking { mid, deadline };
                Transition::None
            }
            Err(HandshakeError::Failure(e)) => {
                let why = env
                    .settings
                    .credentials
                    .redact(&format!("WebSocket handshake failed: {e}"));
                self.fail(env, now, Failure::Error(why))
            }
        }
    }

    /// Reads every message available, decoding binary frames into ticks.
    fn read_up(&mut self, env: &mut Env<'_>, now: Instant) -> Transition {
        let Phase::Up {
            ws,
            last_rx,
            probe_sent,
            ..
        } = &mut self.phase
        else {
            return Transition::None;
        };
        let mut ended = None;
        self.unread = false;
        loop {
            if !env.sink.has_room() {
                self.unread = true;
                break;
            }
            match ws.read() {
                Ok(Message::Binary(frame)) => {
                    *last_rx = now;
                    *probe_sent = false;
                    let recv_ns = clock::now_ns();
                    if let Some(tap) = env.sink.record.as_mut() {
                        let feed = if self.depth {
                            FeedKind::Depth
                        } else {
                            FeedKind::Main
                        };
                        tap.offer(self.slot as u8, feed, recv_ns, &frame);
                    }
                    let (disconnect, packets) = if self.depth {
                        decode_depth_frame(&frame, recv_ns, env)
                    } else {
                        decode_frame(&frame, recv_ns, env)
                    };
                    self.instrument_packets += packets;
                    if let Some(reason) = disconnect {
                        ended = Some(Failure::Server(reason));
                        break;
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                    *last_rx = now;
                    *probe_sent = false;
                }
                Ok(Message::Text(text)) => {
                    *last_rx = now;
                    env.stats.text_frames.inc();
                    let shown: String = text.chars().take(200).collect();
                    log::warn!(
                        "upstream[{}] sent text: {}",
                        self.slot,
                        env.settings.credentials.redact(&shown)
                    );
                }
                Ok(Message::Close(frame)) => {
                    let why = match frame {
                        Some(f) => format!(
                            "server closed the connection ({} {})",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "server closed the connection".to_string(),
                    };
                    ended = Some(Failure::Error(env.settings.credentials.redact(&why)));
                    break;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    let why = env
                        .settings
                        .credentials
                        .redact(&format!("connection lost: {e}"));
                    ended = Some(Failure::Error(why));
                    break;
                }
            }
        }
        // Pongs for pings just read, and any queued writes.
        if ended.is_none() {
            if let Err(e) = flush(ws) {
                ended = Some(e);
            }
        }
        match ended {
            Some(failure) => self.fail(env, now, failure),
            None => Transition::None,
        }
    }

    /// Ends the connection and schedules the next attempt.
    fn fail(&mut self, env: &mut Env<'_>, now: Instant, failure: Failure) -> Transition {
        let was_up = match std::mem::replace(&mut self.phase, Phase::Down { retry_at: None }) {
            Phase::Up { since, .. } => {
                env.stats.disconnects.inc();
                if now.saturating_duration_since(since) >= STABLE_AFTER {
                    self.backoff.reset();
                }
                true
            }
            _ => false,
        };
        let (delay, state) = match &failure {
            Failure::Server(reason) => {
                env.stats.record_disconnect(*reason);
                if reason.is_auth_failure() {
                    (self.backoff.auth_delay(), SlotState::AuthFailed)
                } else {
                    (self.backoff.next_delay(), SlotState::Backoff)
                }
            }
            Failure::Error(_) => (self.backoff.next_delay(), SlotState::Backoff),
        };
        let why = match failure {
            Failure::Server(reason) => format!("DhanHQ disconnected: {reason}"),
            Failure::Error(why) => why,
        };
        log::warn!("upstream[{}] {why}; retrying in {delay:.1?}", self.slot);
        env.stats.set_error(why);
        env.stats.set_slot(self.slot, state);
        self.phase = Phase::Down {
            retry_at: Some(now + delay),
        };
        if was_up {
            Transition::Lost
        } else {
            Transition::None
        }
    }
}

/// Decodes one binary frame into the ring; returns a disconnect reason if the
/// frame carried one, and how many instrument packets (market status aside)
/// it carried. The receive stamp is taken once per frame, by the caller.
fn decode_frame(frame: &[u8], recv_ns: u64, env: &mut Env<'_>) -> (Option<DisconnectReason>, u64) {
    let stats = env.stats;
    stats.frames.inc();
    stats.bytes.add(frame.len() as u64);
    let mut disconnect = None;
    let mut instrument_packets = 0;
    for packet in feed::packets(frame) {
        match packet {
            Ok(p) => {
                stats.count_packet(&p.message);
                match p.message {
                    FeedMessage::Data(key, data) => {
                        instrument_packets += u64::from(!matches!(data, FeedData::MarketStatus));
                        env.sink.push(Tick { key, data, recv_ns }, stats)
                    }
                    FeedMessage::Disconnect(reason) => disconnect = Some(reason),
                }
            }
            Err(e) => {
                if stats.count_error(&e) {
                    log::warn!("upstream sent a bad packet ({e}); counting further ones of this kind silently");
                }
            }
        }
    }
    (disconnect, instrument_packets)
}

/// [`decode_frame`] for the 20-level depth feed: side packets go to the
/// depth ring.
fn decode_depth_frame(
    frame: &[u8],
    recv_ns: u64,
    env: &mut Env<'_>,
) -> (Option<DisconnectReason>, u64) {
    let stats = env.stats;
    stats.frames.inc();
    stats.bytes.add(frame.len() as u64);
    let mut disconnect = None;
    let mut books = 0;
    for packet in depth::packets(frame) {
        match packet {
            Ok(p) => match p.message {
                DepthMessage::Book(book) => {
                    books += 1;
                    env.sink.push_depth(DepthTick { book, recv_ns }, stats);
                }
                DepthMessage::Disconnect(reason) => disconnect = Some(reason),
            },
            Err(e) => {
                if stats.count_error(&e) {
                    log::warn!("depth feed sent a bad packet ({e}); counting further ones of this kind silently");
                }
            }
        }
    }
    (disconnect, books)
}

fn flush(ws: &mut WebSocket<Transport>) -> Result<(), Failure> {
    match ws.flush() {
        Ok(()) => Ok(()),
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(Failure::Error(format!("write failed: {e}"))),
    }
}
