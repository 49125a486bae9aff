//! The network thread: holds the DhanHQ connections and turns their binary
//! frames into [`Tick`]s on the SPSC ring to the book thread.
//!
//! One mio event loop, no async runtime: up to five connections (DhanHQ's
//! per-account limit), each TCP → rustls → tungstenite, non-blocking.
//! Subscription changes arrive on a crossbeam channel with a `mio::Waker`;
//! [`shard::Shards`] decides which connection carries which instrument and
//! what each one still has to be told. Pings are answered by tungstenite; a
//! socket silent for `silence_timeout` is probed, then dropped and
//! reconnected. Reconnects use capped exponential backoff with jitter, and a
//! long fixed wait after DhanHQ says the credentials are bad (807–809).
//!
//! The feed host's name is looked up afresh for every connect attempt, but
//! never on this thread (see `dns.rs`): a hung lookup must not stall the other
//! connections. Its answer comes back through the same waker as commands.
//!
//! Capacity: the account carries at most `max_connections ×
//! max_per_connection` instruments ([`UpstreamStats::instrument_capacity`]).
//! Subscriptions past that are refused here, counted, and logged once per
//! command batch; callers are expected to check
//! [`UpstreamStats::instruments_held`] first, so this is a safety net.
//!
//! Secrets: the feed URL carries the token, so it is built only for the
//! handshake; logs and errors show [`Credentials::redacted_url`].

pub(crate) mod backoff;
mod conn;
mod credentials;
mod dns;
pub mod shard;
mod stats;
pub(crate) mod tls;

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token, Waker};
use ringbuf::HeapProd;
use rustls::pki_types::CertificateDer;

pub use backoff::BackoffConfig;
pub use credentials::{Credentials, REDACTED};
pub use dns::{Resolver, SystemResolver};
pub use stats::{SlotState, UpstreamStats, DISCONNECT_REASONS, MAX_SLOTS, PACKET_KINDS};
pub use tls::load_ca_file;

use crate::book::LiveBook;
use crate::domain::{InstrumentKey, Mode};
use crate::evloop::EventLoop;
use crate::record::RecordTap;
use crate::sdnotify::Heartbeat;
use crate::tick::{DepthTick, Tick};
use conn::{Conn, Env, Settings, TickSink, Transition, DEPTH_TOKENS};
use dns::Lookups;
use shard::Shards;

/// DhanHQ's Live Market Feed v2 address (credentials are appended).
pub const DHAN_FEED_URL: &str = "wss://api-feed.dhan.co";

/// DhanHQ's 20-level depth feed (docs: depth; SDK `depth_20_feed_wss`).
pub const DHAN_DEPTH_URL: &str = "wss://depth-api-feed.dhan.co/twentydepth";

/// Most instruments on one 20-level depth connection (docs: depth; SDK).
pub const DEPTH_PER_CONNECTION: usize = 50;

/// The depth feed's address for a main-feed address: DhanHQ's own
/// ([`DHAN_DEPTH_URL`]) for DhanHQ's, else the same scheme, host and port
/// with the path `/twentydepth` (the built-in simulator, a custom
/// `--feed-url`).
pub fn derive_depth_url(feed_url: &str) -> String {
    let trimmed = feed_url.trim_end_matches('/');
    if trimmed == DHAN_FEED_URL {
        return DHAN_DEPTH_URL.to_string();
    }
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return format!("{trimmed}/twentydepth");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}/twentydepth")
}

const WAKER: Token = Token(usize::MAX);

/// How the network thread connects.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `wss://…` or `ws://…`, without query.
    pub feed_url: String,
    /// The 20-level depth feed, `wss://…` or `ws://…`, without query
    /// (see [`derive_depth_url`]).
    pub depth_url: String,
    /// Client id and access token.
    pub credentials: Credentials,
    /// Extra CA certificates to trust (`--feed-ca`), beside the web roots.
    pub extra_ca: Vec<CertificateDer<'static>>,
    /// Most connections to open (DhanHQ allows 5).
    pub max_connections: usize,
    /// Most instruments per connection (DhanHQ allows 5,000).
    pub max_per_connection: usize,
    /// Nothing received for this long means a dead socket.
    pub silence_timeout: Duration,
    /// TCP + TLS + WebSocket handshake limit.
    pub connect_timeout: Duration,
    /// Name lookup limit; a slower lookup fails the attempt (and backs off).
    pub resolve_timeout: Duration,
    /// Looks up the feed host (never called for an IP literal, and never on
    /// the network thread).
    pub resolver: Arc<dyn Resolver>,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Largest WebSocket message accepted from upstream.
    pub max_message_bytes: usize,
    /// Pin the thread to this core, when set.
    pub core: Option<usize>,
    /// Beaten once per loop turn (at least once a second), for the service
    /// watchdog.
    pub heartbeat: Heartbeat,
    /// Poll without sleeping: the thread spins on its sockets, trading a
    /// whole core for the wake-up latency (a dedicated box only).
    pub busy_poll: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            feed_url: DHAN_FEED_URL.to_string(),
            depth_url: DHAN_DEPTH_URL.to_string(),
            credentials: Credentials::new("", ""),
            extra_ca: Vec::new(),
            max_connections: MAX_SLOTS,
            max_per_connection: 5000,
            silence_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            resolver: Arc::new(SystemResolver),
            backoff: BackoffConfig::default(),
            max_message_bytes: 1 << 20,
            core: None,
            heartbeat: Heartbeat::new(),
            busy_poll: false,
        }
    }
}

/// A change for the network thread.
#[derive(Clone, Debug)]
pub enum Command {
    /// Subscribe these instruments, or change their mode.
    Subscribe(Vec<(InstrumentKey, Mode)>),
    /// Unsubscribe these instruments.
    Unsubscribe(Vec<InstrumentKey>),
    /// Subscribe these NSE_EQ / NSE_FNO instruments on the 20-level depth
    /// feed (connections opened as needed).
    SubscribeDepth(Vec<InstrumentKey>),
    /// Unsubscribe these from the depth feed (connections left empty close).
    UnsubscribeDepth(Vec<InstrumentKey>),
    /// Use these credentials from now on: every connection is replaced by
    /// one logged in with them (see [`Net::rotate`]).
    Credentials(Credentials),
    /// Send RequestCode 12 and close frames, then end the thread.
    Shutdown,
}

/// A cloneable handle that sends [`Command`]s and wakes the thread.
#[derive(Clone, Debug)]
pub struct UpstreamControl {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl UpstreamControl {
    /// A control end over a channel and a waker of the caller's choosing
    /// (tests stand in for the network thread with it).
    pub fn new(tx: Sender<Command>, waker: Arc<Waker>) -> UpstreamControl {
        UpstreamControl { tx, waker }
    }

    /// Sends a command; false if the thread has ended.
    pub fn send(&self, command: Command) -> bool {
        self.queue(command) && self.wake()
    }

    /// Queues a command without waking the thread (no system call: the
    /// caller may hold a lock); [`UpstreamControl::wake`] it afterwards.
    pub fn queue(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }

    /// Wakes the thread to take what was queued.
    pub fn wake(&self) -> bool {
        self.waker.wake().is_ok()
    }
}

/// Why [`Upstream::spawn`] failed.
#[derive(Debug)]
pub enum SpawnError {
    /// The configuration is unusable (feed URL, CA certificates, TLS setup):
    /// the operator must change it.
    Config(String),
    /// The OS refused a resource: `what` could not be created.
    Io {
        /// The resource, e.g. "network thread".
        what: &'static str,
        /// The OS's reason.
        source: std::io::Error,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Config(why) => f.write_str(why),
            SpawnError::Io { what, source } => write!(f, "cannot create the {what}: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Config(_) => None,
            SpawnError::Io { source, .. } => Some(source),
        }
    }
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Io { what, source }
}

/// The running network thread.
#[derive(Debug)]
pub struct Upstream {
    control: UpstreamControl,
    stopping: Arc<AtomicBool>,
    stats: Arc<UpstreamStats>,
    depth_stats: Arc<UpstreamStats>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Validates `config` and starts the thread. Ticks go to `ring`;
    /// `consumer`, when given, is unparked after each batch.
    pub fn spawn(
        config: UpstreamConfig,
        ring: HeapProd<Tick>,
        consumer: Option<Thread>,
    ) -> Result<Upstream, SpawnError> {
        Upstream::spawn_with_depth(config, ring, None, consumer, None, None)
    }

    /// [`Upstream::spawn`] with a ring for the 20-level depth feed (without
    /// one, depth subscriptions are still made but their packets dropped)
    /// and, with `--record`, the recorder's tap: every binary frame of
    /// either feed is offered to it as received. With a `live` book (the
    /// engine) every tick is applied on this thread and its update goes
    /// straight to the fanout; the rings then feed the book thread, which
    /// runs behind.
    pub fn spawn_with_depth(
        config: UpstreamConfig,
        ring: HeapProd<Tick>,
        depth_ring: Option<HeapProd<DepthTick>>,
        consumer: Option<Thread>,
        record: Option<RecordTap>,
        live: Option<LiveBook>,
    ) -> Result<Upstream, SpawnError> {
        let core = config.core;
        let (mut upstream, net) =
            Upstream::build(config, ring, depth_ring, consumer, record, live)?;
        let thread = crate::evloop::spawn_alone("dhan-net", "net", core, net);
        upstream.attach(thread.map_err(os("network thread"))?);
        Ok(upstream)
    }

    /// [`Upstream::spawn_with_depth`] without the thread: the network loop,
    /// for the caller to run ([`crate::evloop`]), and the handle, to be
    /// given the running thread with [`Upstream::attach`].
    pub fn build(
        config: UpstreamConfig,
        ring: HeapProd<Tick>,
        depth_ring: Option<HeapProd<DepthTick>>,
        consumer: Option<Thread>,
        record: Option<RecordTap>,
        live: Option<LiveBook>,
    ) -> Result<(Upstream, NetLoop), SpawnError> {
        let settings = settings(&config).map_err(SpawnError::Config)?;
        let depth_settings =
            settings_for(&config, &config.depth_url, "depth URL").map_err(SpawnError::Config)?;
        let poll = Poll::new().map_err(os("network thread's poll"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(os("network thread's waker"))?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(UpstreamStats::default());
        let depth_stats = Arc::new(UpstreamStats::default());
        let slots = config.max_connections.clamp(1, MAX_SLOTS);
        let shards = Shards::new(slots, config.max_per_connection);
        stats.instrument_capacity.set(shards.capacity() as u64);
        let stopping = Arc::new(AtomicBool::new(false));
        let net = Net {
            lookups: Lookups::new(Arc::clone(&config.resolver), Arc::clone(&waker), slots),
            depth_lookups: Lookups::new(Arc::clone(&config.resolver), Arc::clone(&waker), slots),
            depth_settings,
            depth_stats: Arc::clone(&depth_stats),
            depth_shards: Shards::new(slots, DEPTH_PER_CONNECTION),
            depth_conns: (0..slots)
                .map(|i| Conn::new_depth(i, config.backoff))
                .collect(),
            max_connections: slots,
            depth_starved: false,
            poll,
            rx,
            settings,
            stats: Arc::clone(&stats),
            sink: TickSink {
                ring,
                depth: depth_ring,
                consumer,
                pushed: false,
                live,
                record,
                stopping: Arc::clone(&stopping),
            },
            shards,
            conns: (0..slots).map(|i| Conn::new(i, config.backoff)).collect(),
            rotating: false,
            spare: None,
            retiring: None,
            heartbeat: config.heartbeat.clone(),
            busy_poll: config.busy_poll,
            events: Events::with_capacity(64),
            begun: false,
        };
        let upstream = Upstream {
            control: UpstreamControl { tx, waker },
            stopping,
            stats,
            depth_stats,
            thread: None,
        };
        Ok((upstream, NetLoop(net)))
    }

    /// The thread running the network loop: joined by [`Upstream::shutdown`].
    pub fn attach(&mut self, thread: JoinHandle<()>) {
        self.thread = Some(thread);
    }

    /// A handle for sending commands from other threads.
    pub fn control(&self) -> UpstreamControl {
        self.control.clone()
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<UpstreamStats> {
        Arc::clone(&self.stats)
    }

    /// The depth connections' counters (their slots are depth slots).
    pub fn depth_stats(&self) -> Arc<UpstreamStats> {
        Arc::clone(&self.depth_stats)
    }

    /// Closes every connection politely and joins the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stopping.store(true, Ordering::Relaxed);
            self.control.send(Command::Shutdown);
            let _ = thread.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn settings(config: &UpstreamConfig) -> Result<Settings, String> {
    settings_for(config, &config.feed_url, "feed URL")
}

fn settings_for(config: &UpstreamConfig, url: &str, what: &str) -> Result<Settings, String> {
    let uri: tungstenite::http::Uri = url
        .parse()
        .map_err(|e| format!("{what} '{url}' is not a URL: {e}"))?;
    if uri.query().is_some() {
        return Err(format!(
            "{what} '{}' must not carry a query: credentials come from DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN",
            config.credentials.redact(url)
        ));
    }
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(format!("{what} '{url}' must start with wss:// or ws://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{what} '{url}' has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let literal = host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, port));
    let tls = if secure {
        Some(tls::client_config(&config.extra_ca)?)
    } else {
        None
    };
    Ok(Settings {
        feed_url: url.to_string(),
        credentials: config.credentials.clone(),
        generation: 0,
        host,
        port,
        literal,
        tls,
        silence_timeout: config.silence_timeout,
        connect_timeout: config.connect_timeout,
        resolve_timeout: config.resolve_timeout,
        // tungstenite zero-fills its whole read buffer on every read; the
        // 128 KiB default cost ~11 % of the thread's cycles (loadgen profile).
        ws: tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes)),
    })
}

/// The network loop, to run with [`crate::evloop`]: alone on the
/// network thread, or sharing a thread with the fanout.
pub struct NetLoop(Net);

impl std::fmt::Debug for NetLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetLoop")
    }
}

impl EventLoop for NetLoop {
    fn poll_fd(&self) -> RawFd {
        self.0.poll.as_raw_fd()
    }

    fn timeout(&self) -> Duration {
        self.0.sleep_for()
    }

    fn turn(&mut self, timeout: Duration) -> bool {
        self.0.turn(timeout)
    }

    fn finish(&mut self) {
        self.0.shutdown();
    }
}

/// The network thread's state.
struct Net {
    /// Never sleep in the poll ([`UpstreamConfig::busy_poll`]).
    busy_poll: bool,
    events: Events,
    /// The first turn has run (it opens the connections).
    begun: bool,
    poll: Poll,
    rx: Receiver<Command>,
    settings: Settings,
    stats: Arc<UpstreamStats>,
    sink: TickSink,
    shards: Shards,
    conns: Vec<Conn>,
    lookups: Lookups,
    /// The 20-level depth feed: its own address, counters, name lookups,
    /// instrument assignment (50 per connection) and connection slots.
    /// Its connections share the account's `max_connections` with the
    /// main feed's, which come first.
    depth_settings: Settings,
    depth_stats: Arc<UpstreamStats>,
    depth_lookups: Lookups,
    depth_shards: Shards,
    depth_conns: Vec<Conn>,
    max_connections: usize,
    /// Depth instruments are waiting for a connection (logged once).
    depth_starved: bool,
    /// A credentials change is being rolled out.
    rotating: bool,
    /// (old slot, spare slot): a new connection is being opened on a spare
    /// slot to replace the old one.
    spare: Option<(usize, usize)>,
    /// A replaced connection that keeps delivering until its successor's
    /// first data arrives.
    retiring: Option<Retiring>,
    heartbeat: Heartbeat,
}

/// A replaced connection, parked on a spare slot until its successor
/// delivers (so clients see no gap) or [`RETIRE_WITHIN`] passes.
#[derive(Debug, Clone, Copy)]
struct Retiring {
    /// Where the old connection is parked.
    slot: usize,
    /// Where its successor runs.
    successor: usize,
    /// The successor's instrument packets at the swap.
    packets: u64,
    deadline: Instant,
}

/// Longest the loop sleeps: an idle loop still turns once a second, so the
/// service watchdog can tell it from a wedged one.
const IDLE_TURN: Duration = Duration::from_secs(1);

/// Longest overlap of a replaced connection and its successor.
const RETIRE_WITHIN: Duration = Duration::from_secs(2);

impl Net {
    /// How long the loop may sleep: until the nearest connection or
    /// retirement deadline, at most [`IDLE_TURN`].
    fn timeout(&self) -> Duration {
        self.conns
            .iter()
            .filter_map(|c| c.deadline(&self.settings))
            .chain(
                self.depth_conns
                    .iter()
                    .filter_map(|c| c.deadline(&self.depth_settings)),
            )
            .chain(self.retiring.map(|r| r.deadline))
            .min()
            .map_or(IDLE_TURN, |d| {
                d.saturating_duration_since(Instant::now()).min(IDLE_TURN)
            })
    }

    /// How long the loop may sleep: not at all when busy-polling, when a
    /// connection has unread data or when updates wait in the spill, else
    /// [`Net::timeout`].
    fn sleep_for(&self) -> Duration {
        let unread = self
            .conns
            .iter()
            .chain(&self.depth_conns)
            .any(Conn::wants_read);
        if self.busy_poll || unread || self.sink.spilled() {
            Duration::ZERO
        } else {
            self.timeout()
        }
    }

    /// One loop turn; false once the thread is to end (after
    /// [`Net::shutdown`] on a Shutdown command).
    fn turn(&mut self, timeout: Duration) -> bool {
        if !self.begun {
            self.begun = true;
            self.reconcile(Instant::now());
        }
        self.heartbeat.beat();
        // Taken out for the turn so handlers may borrow `self`.
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let more = self.turn_with(&mut events, timeout);
        self.events = events;
        more
    }

    fn turn_with(&mut self, events: &mut Events, timeout: Duration) -> bool {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return true;
            }
            log::error!("network thread poll failed: {e}; stopping");
            return false;
        }
        let now = Instant::now();
        let mut commands = false;
        for event in events.iter() {
            match event.token() {
                WAKER => commands = true,
                Token(slot) if slot < self.conns.len() => {
                    let t = self.with_env(slot, |conn, env| conn.on_ready(env, now));
                    self.after(slot, t, now);
                }
                Token(t) if t >= DEPTH_TOKENS && t - DEPTH_TOKENS < self.depth_conns.len() => {
                    let slot = t - DEPTH_TOKENS;
                    let t = self.with_depth_env(slot, |conn, env| conn.on_ready(env, now));
                    self.after_depth(slot, t, now);
                }
                Token(_) => {}
            }
        }
        self.resume_reads(now);
        if commands {
            self.take_answers(now);
            if self.apply_commands(now) {
                self.shutdown();
                return false;
            }
        }
        for slot in 0..self.conns.len() {
            let t = self.with_env(slot, |conn, env| conn.on_timer(env, now));
            self.after(slot, t, now);
        }
        self.depth_timers(now);
        if self.rotating {
            self.rotate(now);
        }
        self.sink.wake();
        true
    }

    /// Reads again from connections that stopped for want of room in the
    /// fanout's ring, now that there is room.
    fn resume_reads(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            if self.conns[slot].wants_read() && self.sink.has_room() {
                let t = self.with_env(slot, |conn, env| conn.on_ready(env, now));
                self.after(slot, t, now);
            }
        }
        for slot in 0..self.depth_conns.len() {
            if self.depth_conns[slot].wants_read() && self.sink.has_room() {
                let t = self.with_depth_env(slot, |conn, env| conn.on_ready(env, now));
                self.after_depth(slot, t, now);
            }
        }
    }

    /// Rolls new credentials out, one connection at a time. An open
    /// connection is replaced make-before-break where a slot is free (the
    /// account allows `max_connections`): a new connection logs in on the
    /// spare slot, the two swap slot numbers, the new one is sent the
    /// slot's whole subscription (each instrument exactly once), and the
    /// old one keeps delivering until the new one's first data arrives,
    /// then says goodbye. Without a free slot the old one is closed and
    /// reconnected at once. A connection that is down, or failed because
    /// DhanHQ refused the old token, retries now instead of after its
    /// backoff.
    fn rotate(&mut self, now: Instant) {
        let generation = self.settings.generation;
        if let Some(r) = self.retiring {
            let successor = &self.conns[r.successor];
            let delivered = successor.instrument_packets() > r.packets || !successor.is_up();
            if !delivered && now < r.deadline {
                return;
            }
            self.with_env(r.slot, |conn, env| conn.close(env, now));
            self.shards.connection_lost(r.slot);
            self.retiring = None;
        }
        if let Some((old, spare)) = self.spare {
            if self.conns[spare].is_stale(generation) {
                // Credentials changed again while it logged in.
                self.with_env(spare, |conn, env| conn.close(env, now));
                self.spare = None;
            } else if self.conns[spare].is_up() {
                self.conns.swap(old, spare);
                self.with_env(old, |conn, env| conn.move_to(old, env));
                self.with_env(spare, |conn, env| conn.move_to(spare, env));
                self.shards.connection_lost(old);
                self.sync(old, now);
                self.spare = None;
                self.retiring = Some(Retiring {
                    slot: spare,
                    successor: old,
                    packets: self.conns[old].instrument_packets(),
                    deadline: now + RETIRE_WITHIN,
                });
                log::info!("upstream[{old}] now runs on the new credentials (connection replaced)");
                return;
            } else if self.conns[spare].is_waiting() {
                log::warn!("upstream[{spare}] could not log in with the new credentials; reconnecting upstream[{old}] in place");
                self.with_env(spare, |conn, env| conn.close(env, now));
                self.spare = None;
                let t = self.with_env(old, |conn, env| conn.restart(env, now));
                self.after(old, t, now);
            } else {
                return;
            }
        }
        for slot in 0..self.conns.len() {
            let conn = &self.conns[slot];
            if conn.is_waiting() || (conn.is_stale(generation) && !conn.is_up()) {
                let t = self.with_env(slot, |conn, env| conn.restart(env, now));
                self.after(slot, t, now);
            }
        }
        let Some(old) = (0..self.conns.len()).find(|&s| self.conns[s].is_stale(generation)) else {
            self.rotating = false;
            self.stats.rotations.inc();
            log::info!("every upstream connection uses the new credentials");
            return;
        };
        // A spare only while the account has a connection to lend: depth
        // connections count too.
        let room = self.open_connections() < self.max_connections;
        let free = (1..self.conns.len()).find(|&s| {
            room && self.shards.wanted(s) == 0 && self.conns[s].is_closed() && !self.is_spare(s)
        });
        match free {
            Some(spare) => {
                self.spare = Some((old, spare));
                self.conns[spare].want_connected(now);
                let t = self.with_env(spare, |conn, env| conn.on_timer(env, now));
                self.after(spare, t, now);
            }
            None => {
                let t = self.with_env(old, |conn, env| conn.restart(env, now));
                self.after(old, t, now);
            }
        }
        // Start what is due now rather than after the next poll.
        for slot in 0..self.conns.len() {
            let t = self.with_env(slot, |conn, env| conn.on_timer(env, now));
            self.after(slot, t, now);
        }
    }

    fn with_env<R>(&mut self, slot: usize, f: impl FnOnce(&mut Conn, &mut Env<'_>) -> R) -> R {
        let mut env = Env {
            registry: self.poll.registry(),
            settings: &self.settings,
            stats: &self.stats,
            sink: &mut self.sink,
            lookups: &mut self.lookups,
        };
        f(&mut self.conns[slot], &mut env)
    }

    fn with_depth_env<R>(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Conn, &mut Env<'_>) -> R,
    ) -> R {
        let mut env = Env {
            registry: self.poll.registry(),
            settings: &self.depth_settings,
            stats: &self.depth_stats,
            sink: &mut self.sink,
            lookups: &mut self.depth_lookups,
        };
        f(&mut self.depth_conns[slot], &mut env)
    }

    /// Connections of either feed that are open or on their way.
    fn open_connections(&self) -> usize {
        self.conns
            .iter()
            .chain(&self.depth_conns)
            .filter(|c| !c.is_closed())
            .count()
    }

    /// [`Net::after`] for a depth slot.
    fn after_depth(&mut self, slot: usize, t: Transition, now: Instant) {
        match t {
            Transition::None => {}
            Transition::Lost => self.depth_shards.connection_lost(slot),
            Transition::Up => self.sync_depth(slot, now),
        }
    }

    fn sync_depth(&mut self, slot: usize, now: Instant) {
        if !self.depth_conns[slot].is_up() {
            return;
        }
        let requests = self.depth_shards.sync_depth(slot);
        if requests.is_empty() {
            return;
        }
        let t = self.with_depth_env(slot, |conn, env| conn.send_requests(env, now, requests));
        if t == Transition::Lost {
            self.depth_shards.connection_lost(slot);
        }
    }

    fn depth_timers(&mut self, now: Instant) {
        for slot in 0..self.depth_conns.len() {
            let t = self.with_depth_env(slot, |conn, env| conn.on_timer(env, now));
            self.after_depth(slot, t, now);
        }
    }

    /// Acts on a connection's transition: subscribe on open, forget on loss.
    fn after(&mut self, slot: usize, t: Transition, now: Instant) {
        if self.is_spare(slot) {
            // The spare carries nothing of its own.
            return;
        }
        if t != Transition::None {
            // The fanout announces the change to clients now, not at its
            // next timer.
            if let Some(live) = &mut self.sink.live {
                live.poke_fanout();
            }
        }
        match t {
            Transition::None => {}
            Transition::Lost => self.shards.connection_lost(slot),
            Transition::Up => self.sync(slot, now),
        }
    }

    /// A slot lent to a rotation: the new connection before it takes over,
    /// or the old one after.
    fn is_spare(&self, slot: usize) -> bool {
        self.spare.is_some_and(|(_, s)| s == slot) || self.retiring.is_some_and(|r| r.slot == slot)
    }

    fn sync(&mut self, slot: usize, now: Instant) {
        if !self.conns[slot].is_up() {
            return;
        }
        let requests = self.shards.sync(slot);
        if requests.is_empty() {
            return;
        }
        let t = self.with_env(slot, |conn, env| conn.send_requests(env, now, requests));
        if t == Transition::Lost {
            self.shards.connection_lost(slot);
        }
    }

    /// Hands finished name lookups to their slots.
    fn take_answers(&mut self, now: Instant) {
        while let Some(answer) = self.lookups.try_next() {
            let slot = answer.slot;
            let t = self.with_env(slot, |conn, env| {
                conn.on_resolved(env, now, answer.lookup, answer.result)
            });
            self.after(slot, t, now);
        }
        while let Some(answer) = self.depth_lookups.try_next() {
            let slot = answer.slot;
            let t = self.with_depth_env(slot, |conn, env| {
                conn.on_resolved(env, now, answer.lookup, answer.result)
            });
            self.after_depth(slot, t, now);
        }
    }

    /// Drains the command channel; true on shutdown. Refusals for lack of
    /// capacity are counted per instrument but logged once per batch: a client
    /// asking for 10,000 instruments too many is one event, not 10,000.
    fn apply_commands(&mut self, now: Instant) -> bool {
        let mut refused = 0u64;
        let mut first_refused = None;
        let mut shutdown = false;
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Subscribe(items) => {
                    for (key, mode) in items {
                        if self.shards.set(key, mode).is_err() {
                            refused += 1;
                            first_refused.get_or_insert(key);
                        }
                    }
                }
                Command::Unsubscribe(keys) => {
                    for key in keys {
                        self.shards.remove(key);
                    }
                }
                Command::SubscribeDepth(keys) => {
                    for key in keys {
                        if self.depth_shards.set(key, Mode::Full).is_err() {
                            refused += 1;
                            first_refused.get_or_insert(key);
                        }
                    }
                }
                Command::UnsubscribeDepth(keys) => {
                    for key in keys {
                        self.depth_shards.remove(key);
                    }
                }
                Command::Credentials(credentials) => {
                    self.depth_settings.credentials = credentials.clone();
                    self.depth_settings.generation += 1;
                    self.settings.credentials = credentials;
                    self.settings.generation += 1;
                    self.rotating = true;
                    // Depth connections are not rotated make-before-break
                    // (they would need a spare of the account's five): an
                    // open one is restarted with the new token at once.
                    for slot in 0..self.depth_conns.len() {
                        let t = self.with_depth_env(slot, |conn, env| {
                            if conn.is_closed() && !conn.is_waiting() {
                                Transition::None
                            } else {
                                conn.restart(env, now)
                            }
                        });
                        self.after_depth(slot, t, now);
                    }
                }
                Command::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
        }
        self.stats.instruments_held.set(self.shards.total() as u64);
        if let Some(first) = first_refused {
            self.stats.rejected_subscriptions.add(refused);
            log::warn!(
                "upstream capacity full: {refused} instruments refused (first: {first}); \
                 {} connections × {} instruments are all taken",
                self.shards.len(),
                self.shards.per_slot()
            );
        }
        if shutdown {
            return true;
        }
        self.reconcile(now);
        false
    }

    /// Brings every slot in line with the shards: slot 0 is always wanted
    /// (it reports the account's health even with nothing subscribed), other
    /// slots while they carry instruments.
    fn reconcile(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let needed = slot == 0 || self.shards.wanted(slot) > 0 || self.is_spare(slot);
            if needed {
                self.conns[slot].want_connected(now);
                self.sync(slot, now);
            } else if !self.conns[slot].is_closed() {
                let t = self.with_env(slot, |conn, env| conn.close(env, now));
                self.after(slot, t, now);
            }
        }
        // Depth connections get what the main feed leaves of the account's
        // connections, lowest slots first; the main feed has priority.
        let main = (0..self.conns.len())
            .filter(|&s| !self.conns[s].is_closed() || s == 0 || self.shards.wanted(s) > 0)
            .count();
        let mut budget = self.max_connections.saturating_sub(main);
        let mut starved = 0;
        for slot in 0..self.depth_conns.len() {
            let wanted = self.depth_shards.wanted(slot);
            if wanted > 0 && budget > 0 {
                budget -= 1;
                self.depth_conns[slot].want_connected(now);
                self.sync_depth(slot, now);
                continue;
            }
            starved += wanted;
            if !self.depth_conns[slot].is_closed() {
                let t = self.with_depth_env(slot, |conn, env| conn.close(env, now));
                self.after_depth(slot, t, now);
            }
        }
        if starved > 0 && !self.depth_starved {
            log::warn!(
                "20-level depth: {starved} instruments wait for a connection: the account's \
                 {} connections are taken (the main feed comes first)",
                self.max_connections
            );
        }
        self.depth_starved = starved > 0;
        // Start connections that are due now rather than after the next poll.
        for slot in 0..self.conns.len() {
            let t = self.with_env(slot, |conn, env| conn.on_timer(env, now));
            self.after(slot, t, now);
        }
        self.depth_timers(now);
    }

    /// RequestCode 12 and a close frame on every open connection, then wait
    /// briefly for the closes to complete.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for slot in 0..self.conns.len() {
            self.with_env(slot, |conn, env| conn.close(env, now));
        }
        for slot in 0..self.depth_conns.len() {
            self.with_depth_env(slot, |conn, env| conn.close(env, now));
        }
        let deadline = now + Duration::from_secs(1);
        let mut events = Events::with_capacity(16);
        while self
            .conns
            .iter()
            .chain(&self.depth_conns)
            .any(|c| !c.is_closed())
            && Instant::now() < deadline
        {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            let now = Instant::now();
            for event in events.iter() {
                let Token(slot) = event.token();
                if slot < self.conns.len() {
                    self.with_env(slot, |conn, env| conn.on_ready(env, now));
                } else if slot >= DEPTH_TOKENS && slot - DEPTH_TOKENS < self.depth_conns.len() {
                    self.with_depth_env(slot - DEPTH_TOKENS, |conn, env| conn.on_ready(env, now));
                }
            }
            for slot in 0..self.conns.len() {
                self.with_env(slot, |conn, env| conn.on_timer(env, now));
            }
            for slot in 0..self.depth_conns.len() {
                self.with_depth_env(slot, |conn, env| conn.on_timer(env, now));
            }
        }
        self.sink.wake();
        if let Some(live) = &mut self.sink.live {
            live.finish();
        }
        log::info!("network thread stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::traits::Split;
    use ringbuf::HeapRb;

    fn spawn(feed_url: &str) -> Result<Upstream, SpawnError> {
        let (prod, _cons) = HeapRb::<Tick>::new(8).split();
        Upstream::spawn(
            UpstreamConfig {
                feed_url: feed_url.into(),
                ..UpstreamConfig::default()
            },
            prod,
            None,
        )
    }

    #[test]
    fn a_bad_feed_url_is_a_config_error() {
        for url in [
            "not a url",
            "http://example.com",
            "wss://example.com/?token=x",
        ] {
            match spawn(url) {
                Err(SpawnError::Config(why)) => assert!(why.contains("feed URL"), "{why}"),
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_depth_url_is_dhans_or_the_feed_host_with_twentydepth() {
        assert_eq!(derive_depth_url(DHAN_FEED_URL), DHAN_DEPTH_URL);
        assert_eq!(derive_depth_url("wss://api-feed.dhan.co/"), DHAN_DEPTH_URL);
        assert_eq!(
            derive_depth_url("ws://127.0.0.1:9000"),
            "ws://127.0.0.1:9000/twentydepth"
        );
        assert_eq!(
            derive_depth_url("wss://feed.example:8443/feed"),
            "wss://feed.example:8443/twentydepth"
        );
    }

    #[test]
    fn an_os_refusal_says_what_was_refused() {
        let e = SpawnError::Io {
            what: "network thread",
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert!(e
            .to_string()
            .starts_with("cannot create the network thread: "));
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn ip_literals_skip_the_lookup_and_names_do_not() {
        let literal = |url: &str| {
            settings(&UpstreamConfig {
                feed_url: url.into(),
                ..UpstreamConfig::default()
            })
            .unwrap()
            .literal
        };
        assert_eq!(
            literal("ws://127.0.0.1:9000"),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            literal("ws://[::1]:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(literal("wss://[::1]"), Some("[::1]:443".parse().unwrap()));
        assert_eq!(literal(DHAN_FEED_URL), None);
        assert_eq!(literal("ws://localhost:9000"), None);
    }
}
