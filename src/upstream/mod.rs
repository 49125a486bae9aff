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
//! Secrets: the feed URL carries the token, so it is built only for the
//! handshake; logs and errors show [`Credentials::redacted_url`].

mod backoff;
mod conn;
mod credentials;
pub mod shard;
mod stats;
mod tls;

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
pub use stats::{SlotState, UpstreamStats, DISCONNECT_REASONS, MAX_SLOTS, PACKET_KINDS};
pub use tls::load_ca_file;

use crate::domain::{InstrumentKey, Mode};
use crate::tick::Tick;
use conn::{Conn, Env, Settings, TickSink, Transition};
use shard::Shards;

/// DhanHQ's Live Market Feed v2 address (credentials are appended).
pub const DHAN_FEED_URL: &str = "wss://api-feed.dhan.co";

const WAKER: Token = Token(usize::MAX);

/// How the network thread connects.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `wss://…` or `ws://…`, without query.
    pub feed_url: String,
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
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Largest WebSocket message accepted from upstream.
    pub max_message_bytes: usize,
    /// Pin the thread to this core, when set.
    pub core: Option<usize>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            feed_url: DHAN_FEED_URL.to_string(),
            credentials: Credentials::new("", ""),
            extra_ca: Vec::new(),
            max_connections: MAX_SLOTS,
            max_per_connection: 5000,
            silence_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            max_message_bytes: 1 << 20,
            core: None,
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
    /// Sends a command; false if the thread has ended.
    pub fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

/// The running network thread.
#[derive(Debug)]
pub struct Upstream {
    control: UpstreamControl,
    stopping: Arc<AtomicBool>,
    stats: Arc<UpstreamStats>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Validates `config` and starts the thread. Ticks go to `ring`;
    /// `consumer`, when given, is unparked after each batch.
    pub fn spawn(
        config: UpstreamConfig,
        ring: HeapProd<Tick>,
        consumer: Option<Thread>,
    ) -> Result<Upstream, String> {
        let settings = settings(&config)?;
        let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| format!("cannot create waker: {e}"))?,
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(UpstreamStats::default());
        let slots = config.max_connections.clamp(1, MAX_SLOTS);
        let stopping = Arc::new(AtomicBool::new(false));
        let net = Net {
            poll,
            rx,
            settings,
            stats: Arc::clone(&stats),
            sink: TickSink {
                ring,
                consumer,
                pushed: false,
                stopping: Arc::clone(&stopping),
            },
            shards: Shards::new(slots, config.max_per_connection),
            conns: (0..slots).map(|i| Conn::new(i, config.backoff)).collect(),
        };
        let core = config.core;
        let thread = std::thread::Builder::new()
            .name("dhan-net".into())
            .spawn(move || {
                crate::affinity::pin("net", core);
                net.run();
            })
            .map_err(|e| format!("cannot start the network thread: {e}"))?;
        Ok(Upstream {
            control: UpstreamControl { tx, waker },
            stopping,
            stats,
            thread: Some(thread),
        })
    }

    /// A handle for sending commands from other threads.
    pub fn control(&self) -> UpstreamControl {
        self.control.clone()
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<UpstreamStats> {
        Arc::clone(&self.stats)
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
    let uri: tungstenite::http::Uri = config
        .feed_url
        .parse()
        .map_err(|e| format!("feed URL '{}' is not a URL: {e}", config.feed_url))?;
    if uri.query().is_some() {
        return Err(format!(
            "feed URL '{}' must not carry a query: credentials come from DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN",
            config.credentials.redact(&config.feed_url)
        ));
    }
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(format!(
                "feed URL '{}' must start with wss:// or ws://",
                config.feed_url
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("feed URL '{}' has no host", config.feed_url))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tls = if secure {
        Some(tls::client_config(&config.extra_ca)?)
    } else {
        None
    };
    Ok(Settings {
        feed_url: config.feed_url.clone(),
        credentials: config.credentials.clone(),
        host,
        port,
        tls,
        silence_timeout: config.silence_timeout,
        connect_timeout: config.connect_timeout,
        // tungstenite zero-fills its whole read buffer on every read; the
        // 128 KiB default cost ~11 % of the thread's cycles (loadgen profile).
        ws: tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes)),
    })
}

/// The network thread's state.
struct Net {
    poll: Poll,
    rx: Receiver<Command>,
    settings: Settings,
    stats: Arc<UpstreamStats>,
    sink: TickSink,
    shards: Shards,
    conns: Vec<Conn>,
}

impl Net {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        self.reconcile(Instant::now());
        loop {
            let timeout = self
                .conns
                .iter()
                .filter_map(|c| c.deadline(&self.settings))
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("network thread poll failed: {e}; stopping");
                return;
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
                    Token(_) => {}
                }
            }
            if commands && self.apply_commands(now) {
                self.shutdown();
                return;
            }
            for slot in 0..self.conns.len() {
                let t = self.with_env(slot, |conn, env| conn.on_timer(env, now));
                self.after(slot, t, now);
            }
            self.sink.wake();
        }
    }

    fn with_env<R>(&mut self, slot: usize, f: impl FnOnce(&mut Conn, &mut Env<'_>) -> R) -> R {
        let mut env = Env {
            registry: self.poll.registry(),
            settings: &self.settings,
            stats: &self.stats,
            sink: &mut self.sink,
        };
        f(&mut self.conns[slot], &mut env)
    }

    /// Acts on a connection's transition: subscribe on open, forget on loss.
    fn after(&mut self, slot: usize, t: Transition, now: Instant) {
        match t {
            Transition::None => {}
            Transition::Lost => self.shards.connection_lost(slot),
            Transition::Up => self.sync(slot, now),
        }
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

    /// Drains the command channel; true on shutdown.
    fn apply_commands(&mut self, now: Instant) -> bool {
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Subscribe(items) => {
                    for (key, mode) in items {
                        if self.shards.set(key, mode).is_err() {
                            stats::inc(&self.stats.rejected_subscriptions);
                            log::warn!(
                                "cannot subscribe {key}: all {} connections hold {} instruments",
                                self.shards.len(),
                                self.shards.total()
                            );
                        }
                    }
                }
                Command::Unsubscribe(keys) => {
                    for key in keys {
                        self.shards.remove(key);
                    }
                }
                Command::Shutdown => return true,
            }
        }
        self.reconcile(now);
        false
    }

    /// Brings every slot in line with the shards: slot 0 is always wanted
    /// (it reports the account's health even with nothing subscribed), other
    /// slots while they carry instruments.
    fn reconcile(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let needed = slot == 0 || self.shards.wanted(slot) > 0;
            if needed {
                self.conns[slot].want_connected(now);
                self.sync(slot, now);
            } else if !self.conns[slot].is_closed() {
                let t = self.with_env(slot, |conn, env| conn.close(env, now));
                self.after(slot, t, now);
            }
        }
        // Start connections that are due now rather than after the next poll.
        for slot in 0..self.conns.len() {
            let t = self.with_env(slot, |conn, env| conn.on_timer(env, now));
            self.after(slot, t, now);
        }
    }

    /// RequestCode 12 and a close frame on every open connection, then wait
    /// briefly for the closes to complete.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for slot in 0..self.conns.len() {
            self.with_env(slot, |conn, env| conn.close(env, now));
        }
        let deadline = now + Duration::from_secs(1);
        let mut events = Events::with_capacity(16);
        while self.conns.iter().any(|c| !c.is_closed()) && Instant::now() < deadline {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            let now = Instant::now();
            for event in events.iter() {
                let Token(slot) = event.token();
                if slot < self.conns.len() {
                    self.with_env(slot, |conn, env| conn.on_ready(env, now));
                }
            }
            for slot in 0..self.conns.len() {
                self.with_env(slot, |conn, env| conn.on_timer(env, now));
            }
        }
        log::info!("network thread stopped");
    }
}
