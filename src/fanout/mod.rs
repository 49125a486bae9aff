//! Everything that faces clients: the fanout shards and two threads
//! around one contract.
//!
//! - **front door** ([`front`]): the listener, HTTP heads, REST
//!   ([`rest`]), the dashboard, WebSocket handshakes. Upgraded sockets are
//!   handed to the least loaded fanout shard over its channel.
//! - **fanout shards** (this module, [`client`], [`pump`]): WebSocket
//!   sessions only, each shard a loop serving its share of the clients
//!   (`fanout_threads`; one in the compact layout, where it shares the
//!   network thread). Each loop turn: take new clients and resolver
//!   answers, read what clients sent (a budget of frames per client per
//!   turn), take every update from the shard's own ring, render each once
//!   per message type and queue the same bytes to every subscriber, flush
//!   each dirty client with one vectored write, and bring the shared
//!   subscription [`union`] up to date, which tells the network thread
//!   what changed upstream. Shard 0, the lead, also takes order updates,
//!   chain events and the day's turn, and passes them on ([`shard`]).
//! - **resolver** ([`resolver`]): symbol look-ups for subscribe messages,
//!   so a client sending 1,000 unknown names costs the others nothing.
//!
//! No client can make a shard wait: sockets are non-blocking, queues
//! bounded ([`session`]), work per client per turn budgeted, and anything
//! heavy (REST bodies, the `/ws/prices` object, search, symbol resolution)
//! runs on the other two threads. The union publishes what they need — the
//! upstream subscriptions and the watchlist — as a [`rest::View`] through
//! `arc-swap`.

mod admin;
pub(crate) mod assets;
mod chains;
mod client;
mod day;
pub mod dhan;
pub mod front;
pub mod http;
mod local;
pub mod outbound;
pub mod protocol;
mod pump;
pub mod render;
pub mod resolver;
pub mod rest;
pub mod session;
pub mod shard;
pub mod stats;
pub mod topics;
pub mod trade;
mod union;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use ringbuf::HeapCons;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;

use crate::auth::Auth;
use crate::book::{BookStats, Depth20, SharedSnapshot, Update};
use crate::domain::{InstrumentKey, Mode};
use crate::instrument::watch::Watchlist;
use crate::instrument::{Calendar, SharedMaster, WallClock};
use crate::maintenance::{DayDone, DayTurn, MaintenanceStats};
use crate::metrics::{LatencyRecorder, SharedLatency};
use crate::sdnotify::Heartbeat;
use crate::token::KeeperHandle;
use crate::upstream::{UpstreamControl, UpstreamStats};
use front::{FrontDoor, Handoff, NewClient};
use local::Local;
use render::Renderer;
use resolver::{Answer, Job};
use rest::{RestState, SharedView, UpstreamStatus, View};
use session::{Kind, Session, Slot};
use shard::{Door, Load, Relayed};
use stats::FanoutStats;
use topics::Admission;
use union::Union;

const WAKER: Token = Token(usize::MAX);
/// How long a queued close frame may wait without the socket taking a
/// byte before the socket is dropped …
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// … and at most, however slowly the client reads.
const CLOSE_MAX: Duration = Duration::from_secs(5);
/// Frames read from one client per loop turn; the rest wait a turn.
pub const READ_BUDGET: usize = 16;
/// Bytes of text parsed from one client per loop turn, at most (after the
/// message that crosses it).
pub const READ_BYTES_BUDGET: usize = 16 * 1024;
/// New clients taken from the front door per loop turn.
const ACCEPT_BUDGET: usize = 256;
/// Order updates relayed per loop turn, at most (the rest wait a turn).
const ORDERS_BUDGET: usize = 256;
/// Shortest time between two published views.
const VIEW_EVERY: Duration = Duration::from_millis(100);

/// Fanout limits and listener settings.
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
    /// Kernel send buffer per client socket (`SO_SNDBUF`; Linux doubles
    /// it). Small enough that a client that stops reading is noticed, and
    /// conflated, within about a second instead of after megabytes of
    /// kernel buffering; 0 leaves the kernel's autotuning.
    pub client_send_buffer: usize,
    /// A client behind for longer than this is closed with 1008.
    pub slow_client_timeout: Duration,
    /// A request head must arrive within this.
    pub head_timeout: Duration,
    /// An idle kept-alive HTTP connection is closed after this.
    pub keep_alive_idle: Duration,
    /// Requests served on one HTTP connection before it is closed.
    pub keep_alive_requests: u32,
    /// Client messages (frames, pings included) allowed per second
    /// (bursts of twice that).
    pub max_messages_per_sec: u32,
    /// Grace before an instrument nobody wants is unsubscribed upstream.
    pub unsubscribe_grace: Duration,
    /// The account's upstream capacity in instruments (connections ×
    /// instruments per connection).
    pub upstream_capacity: usize,
    /// Extra browser origins allowed to open WebSockets (`*` for any).
    pub allowed_origins: Vec<String>,
    /// Host names (besides IP literals and `localhost`) requests may name
    /// in `Host` (`*` for any): DNS-rebinding protection.
    pub allowed_hosts: Vec<String>,
    /// Running against the built-in simulator.
    pub demo: bool,
    /// The thread layout in use (`compact` or `spread`), for `/stats`.
    pub threads: &'static str,
    /// Fanout shards: loops on threads of their own, each serving its
    /// share of the clients (1 in the compact layout).
    pub shards: usize,
    /// Pin the fanout thread to this core, when set (shard `k` to this
    /// core + `k`).
    pub core: Option<usize>,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            max_clients: 10_000,
            max_subscriptions_per_client: 5_000,
            max_instruments_per_message: 1_000,
            max_frame_bytes: 64 * 1024,
            client_queue_bytes: 256 * 1024,
            client_send_buffer: 64 * 1024,
            slow_client_timeout: Duration::from_secs(5),
            head_timeout: Duration::from_secs(5),
            keep_alive_idle: Duration::from_secs(10),
            keep_alive_requests: 1_000,
            max_messages_per_sec: 50,
            unsubscribe_grace: Duration::from_secs(2),
            upstream_capacity: 25_000,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            demo: false,
            threads: "spread",
            shards: 1,
            core: None,
        }
    }
}

/// What the fanout reads from the rest of the engine at run time.
pub struct FanoutInputs {
    /// Updates from the network thread's book, one ring per shard.
    pub updates: Vec<HeapCons<Update>>,
    /// 20-level books, one ring per shard (none: no depth feed).
    pub depth_updates: Option<Vec<HeapCons<Depth20>>>,
    /// The book's latest snapshot.
    pub snapshot: SharedSnapshot,
    /// Commands to the network thread.
    pub upstream: UpstreamControl,
    /// Network-thread counters.
    pub upstream_stats: Arc<UpstreamStats>,
    /// The depth connections' counters.
    pub depth_stats: Arc<UpstreamStats>,
    /// Book-thread counters.
    pub book_stats: Arc<BookStats>,
    /// Network receive → book apply latency.
    pub receive_to_book: SharedLatency,
    /// The instrument master: names, resolution, search (swapped by the
    /// daily maintenance).
    pub master: SharedMaster,
    /// The watchlist, resolved, with its daily expiry roll.
    pub watchlist: Watchlist,
    /// The wall clock for calendar decisions.
    pub clock: WallClock,
    /// The token keeper (status for REST, admin credential changes).
    pub token: KeeperHandle,
    /// Beaten once per loop turn, one per shard, for the service watchdog.
    pub heartbeats: Vec<Heartbeat>,
    /// The daily maintenance's turns of the day (to the lead shard) …
    pub day_turns: Receiver<DayTurn>,
    /// … and the answers to them (one from each shard).
    pub day_done: Sender<DayDone>,
    /// Its counters and last run, for REST.
    pub maintenance: Arc<MaintenanceStats>,
    /// Market hours, for REST.
    pub calendar: Calendar,
    /// Trading calls' way to the broker threads (off: every call 403).
    pub trading: crate::trading::broker::TradingDoor,
    /// Rendered order updates from the order stream
    /// ([`crate::trading::stream`]) for `/ws` clients that sent
    /// `subscribe_orders`; `None`: trading is off.
    pub orders: Option<Receiver<Bytes>>,
    /// Today's 1-minute bars, for `/api/history`.
    pub history: crate::history::HistoryHandle,
    /// What the chain thread last published, for REST.
    pub chain_board: crate::chain::service::SharedBoard,
    /// Its counters.
    pub chain_stats: Arc<crate::chain::service::ChainStats>,
    /// The chain thread: requests to it, events from it (`None`: no chains).
    pub chains: Option<(
        Sender<crate::chain::service::ChainRequest>,
        Receiver<crate::chain::service::ChainEvent>,
    )>,
    /// `--record`: the recorder's counters, for `/health`, `/stats`,
    /// `/metrics` (`None`: not recording).
    pub record: Option<Arc<crate::record::RecordStats>>,
}

impl std::fmt::Debug for FanoutInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FanoutInputs")
    }
}

/// The listener and the shards' polls, created before the threads so the
/// network thread can be given the shards' wakers.
#[derive(Debug)]
pub struct Fanout {
    /// Each shard's poll and the waker registered with it.
    shards: Vec<(Poll, Arc<Waker>)>,
    front: FrontDoor,
    config: FanoutConfig,
    auth: Arc<Auth>,
}

impl Fanout {
    /// Takes over bound listeners; setting `reload_tls` has the TLS
    /// listeners re-read their certificate files.
    pub fn new(
        listeners: Vec<front::Listener>,
        reload: Arc<AtomicBool>,
        access: crate::auth::Setup,
        config: FanoutConfig,
    ) -> std::io::Result<Fanout> {
        let auth = Arc::clone(&access.auth);
        let front = FrontDoor::new(listeners, reload, access)?;
        let shards = (0..config.shards.max(1))
            .map(|_| {
                let poll = Poll::new()?;
                let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
                Ok((poll, waker))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Fanout {
            shards,
            front,
            config,
            auth,
        })
    }

    /// Wakes the lead shard, the one that takes relay-wide events (order
    /// updates, chain events, the day's turn) for all.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.shards[0].1)
    }

    /// Every shard's waker, by shard: shard `k` reads update ring `k`.
    pub fn wakers(&self) -> Vec<Arc<Waker>> {
        self.shards.iter().map(|(_, w)| Arc::clone(w)).collect()
    }

    /// Wakes the front door (the broker threads call it with an answer).
    pub fn front_waker(&self) -> Arc<Waker> {
        self.front.waker()
    }

    /// Starts the front door and resolver threads; the shards' loops are
    /// the caller's to run ([`crate::evloop`]), on threads of their own
    /// (then given to [`FanoutThread::attach`]) or, for a single shard,
    /// sharing one with the network loop. Stopping the returned handle
    /// stops the loops, wherever they run, and waits for them to end.
    pub fn build(self, inputs: FanoutInputs) -> std::io::Result<(FanoutThread, Vec<FanoutLoop>)> {
        let n = self.shards.len();
        assert_eq!(inputs.updates.len(), n, "one update ring per shard");
        assert_eq!(inputs.heartbeats.len(), n, "one heartbeat per shard");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FanoutStats::default());
        stats
            .upstream_capacity
            .set(self.config.upstream_capacity as u64);
        let tick_to_wire = SharedLatency::default();
        let client_message = SharedLatency::default();
        let view: SharedView = Arc::new(ArcSwap::from_pointee(View {
            watchlist: inputs.watchlist.items().to_vec(),
            active: Vec::new(),
        }));
        let wakers: Vec<Arc<Waker>> = self.shards.iter().map(|(_, w)| Arc::clone(w)).collect();
        let (handoff_doors, handoff_rx) = shard::doors::<Handoff>(&wakers);
        let (answer_doors, answer_rx) = shard::doors::<Answer>(&wakers);
        let (relay_doors, relay_rx) = shard::doors::<Relayed>(&wakers);
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let load = Load::new(n);
        let mut threads = Vec::new();

        let resolver = {
            let (master, view, clock) = (
                Arc::clone(&inputs.master),
                Arc::clone(&view),
                inputs.clock.clone(),
            );
            std::thread::Builder::new()
                .name("dhan-resolver".into())
                .spawn(move || resolver::run(job_rx, answer_doors, master, view, clock))?
        };
        threads.push(resolver);

        let rest = RestState {
            snapshot: Arc::clone(&inputs.snapshot),
            view: Arc::clone(&view),
            master: Arc::clone(&inputs.master),
            upstream: Arc::clone(&inputs.upstream_stats),
            depth: Arc::clone(&inputs.depth_stats),
            book: Arc::clone(&inputs.book_stats),
            fanout: Arc::clone(&stats),
            receive_to_book: inputs.receive_to_book.clone(),
            tick_to_wire: tick_to_wire.clone(),
            client_message: client_message.clone(),
            started: Instant::now(),
            demo: self.config.demo,
            threads: self.config.threads,
            shard_load: load.clone(),
            token: inputs.token.clone(),
            maintenance: inputs.maintenance,
            calendar: inputs.calendar,
            clock: inputs.clock.clone(),
            listeners: self.front.listener_status(),
            insecure_no_auth: self.front.insecure(),
            trading: inputs.trading.monitor(),
            chains: inputs.chain_board.clone(),
            chain_stats: Arc::clone(&inputs.chain_stats),
            record: inputs.record.clone(),
            history: inputs.history.clone(),
        };
        let front_waker = self.front.waker();
        let front = {
            let (config, stop, load) = (self.config.clone(), Arc::clone(&stop), load.clone());
            let door = self.front;
            let trading = inputs.trading;
            std::thread::Builder::new()
                .name("dhan-front".into())
                .spawn(move || door.run(config, rest, handoff_doors, load, stop, trading))?
        };
        threads.push(front);

        let union = Arc::new(Union::new(
            self.config.unsubscribe_grace,
            self.config.upstream_capacity,
            inputs.upstream,
            Arc::clone(&stats),
            view,
            inputs.watchlist.items(),
            wakers.clone(),
        ));
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        let symbols: HashMap<InstrumentKey, String> = inputs
            .watchlist
            .items()
            .iter()
            .map(|w| (w.key, w.symbol.clone()))
            .collect();
        let mut depth_updates = inputs
            .depth_updates
            .map(|v| v.into_iter().map(Some).collect::<Vec<_>>())
            .unwrap_or_else(|| (0..n).map(|_| None).collect());
        let (chain_requests, mut chain_events) = match inputs.chains {
            Some((requests, events)) => (Some(requests), Some(events)),
            None => (None, None),
        };
        let mut orders = inputs.orders;
        let trading_on = orders.is_some();
        let mut day_turns = Some(inputs.day_turns);
        let keys_generation = self.auth.store().generation();
        let (mut handoff_rx, mut answer_rx) = (handoff_rx.into_iter(), answer_rx.into_iter());
        let mut loops = Vec::with_capacity(n);
        let shards = self.shards.into_iter().zip(inputs.updates).zip(relay_rx);
        for (k, (((poll, _), updates), relayed)) in shards.enumerate() {
            let lead = k == 0;
            loops.push(FanoutLoop(Box::new(Worker {
                shard: k,
                shards: n,
                union: Arc::clone(&union),
                union_dirty: true,
                load: load.clone(),
                followers: if lead {
                    relay_doors[1..].to_vec()
                } else {
                    Vec::new()
                },
                relayed,
                local: Local::default(),
                depth_updates: depth_updates[k].take(),
                poll,
                stop: Arc::clone(&stop),
                ws_config,
                updates,
                snapshot: Arc::clone(&inputs.snapshot),
                upstream_stats: Arc::clone(&inputs.upstream_stats),
                master: Arc::clone(&inputs.master),
                watchlist: inputs.watchlist.clone(),
                config: self.config.clone(),
                sessions: Vec::new(),
                free: Vec::new(),
                next_id: k as u64 + 1,
                readable: Vec::with_capacity(64),
                renderer: Renderer::new(),
                dhan: dhan::DhanRenderer::new(),
                stats: Arc::clone(&stats),
                latency: tick_to_wire.recorder(),
                message_latency: client_message.recorder(),
                symbols: symbols.clone(),
                handoff: handoff_rx.next().expect("one per shard"),
                jobs: job_tx.clone(),
                answers: answer_rx.next().expect("one per shard"),
                upstream_up: false,
                announced: "connecting",
                rotations_announced: 0,
                heartbeat: inputs.heartbeats[k].clone(),
                day_turns: day_turns.take().unwrap_or_else(crossbeam_channel::never),
                day_done: inputs.day_done.clone(),
                keys_generation,
                auth: Arc::clone(&self.auth),
                next_second: Instant::now(),
                turn_recv: Vec::with_capacity(1024),
                dirty: Vec::with_capacity(1024),
                held_until: None,
                // The lead drains the broker's order updates and passes
                // them on; the others get them from it.
                orders: match orders.take() {
                    Some(rx) => Some(rx),
                    None if trading_on => Some(crossbeam_channel::never()),
                    None => None,
                },
                backlog: false,
                chains: chain_requests.as_ref().map(|requests| chains::ChainLink {
                    requests: requests.clone(),
                    events: chain_events.take().unwrap_or_else(crossbeam_channel::never),
                    ids: HashMap::new(),
                }),
                events: Events::with_capacity(1024),
                events_full: false,
            })));
        }
        let mut all_wakers = wakers;
        all_wakers.push(front_waker);
        let running = FanoutThread {
            threads,
            stop,
            wakers: all_wakers,
            stats,
            tick_to_wire,
        };
        Ok((running, loops))
    }
}

/// The running fanout, front door and resolver threads.
#[derive(Debug)]
pub struct FanoutThread {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Every shard's and the front door's.
    wakers: Vec<Arc<Waker>>,
    /// Counters.
    pub stats: Arc<FanoutStats>,
    /// Network receive → client socket write latency.
    pub tick_to_wire: SharedLatency,
}

impl FanoutThread {
    /// A thread running a shard's loop alone: joined before the front
    /// door and resolver on stop.
    pub fn attach(&mut self, thread: JoinHandle<()>) {
        self.threads.push(thread);
    }

    /// Sends close frames (1001) to every client and joins the threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Relaxed);
        for w in &self.wakers {
            let _ = w.wake();
        }
        // The shards own the resolver's job senders: they end (their own
        // threads joined first, or the thread a single shard shares with
        // the network loop ending both), which closes that channel and
        // ends the resolver.
        while let Some(t) = self.threads.pop() {
            let _ = t.join();
        }
    }
}

impl Drop for FanoutThread {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A shard's loop, to run with [`crate::evloop`]: alone on a thread, or
/// (a single shard) sharing a thread with the network loop.
pub struct FanoutLoop(Box<Worker>);

impl std::fmt::Debug for FanoutLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FanoutLoop")
    }
}

impl crate::evloop::EventLoop for FanoutLoop {
    fn poll_fd(&self) -> std::os::fd::RawFd {
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

/// One shard's state.
struct Worker {
    /// This shard's number (0: the lead).
    shard: usize,
    /// How many shards there are.
    shards: usize,
    /// The subscription union of every shard.
    union: Arc<Union>,
    /// Something changed in the union this turn: sync it at the turn's end.
    union_dirty: bool,
    /// Clients per shard (this one's is lowered as its clients go).
    load: Load,
    /// The lead's ways into the other shards (empty on the others).
    followers: Vec<Door<Relayed>>,
    /// What the lead passed on (nothing arrives on the lead's own).
    relayed: Receiver<Relayed>,
    /// Who holds which instrument on this shard.
    local: Local,
    poll: Poll,
    stop: Arc<AtomicBool>,
    config: FanoutConfig,
    ws_config: WebSocketConfig,
    updates: HeapCons<Update>,
    depth_updates: Option<HeapCons<Depth20>>,
    snapshot: SharedSnapshot,
    upstream_stats: Arc<UpstreamStats>,
    master: SharedMaster,
    watchlist: Watchlist,
    /// Sessions by slot (the mio token).
    sessions: Vec<Option<Box<Session>>>,
    free: Vec<usize>,
    /// The next session's id (steps by the shard count, see
    /// [`shard::of_session`]).
    next_id: u64,
    /// Sessions to read this turn: readiness events, plus those whose
    /// read budget ran out last turn (edge-triggered readiness will not
    /// report them again).
    readable: Vec<usize>,
    renderer: Renderer,
    /// Packets for `/dhan` clients.
    dhan: dhan::DhanRenderer,
    stats: Arc<FanoutStats>,
    latency: LatencyRecorder,
    message_latency: LatencyRecorder,
    /// Names shown on updates: the watchlist's, then the master's.
    symbols: HashMap<InstrumentKey, String>,
    handoff: Receiver<Handoff>,
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
    upstream_up: bool,
    /// The upstream state last announced to clients.
    announced: &'static str,
    /// Credential rotations already announced to clients.
    rotations_announced: u64,
    heartbeat: Heartbeat,
    day_turns: Receiver<DayTurn>,
    day_done: Sender<DayDone>,
    /// Access control (revoked keys close their connections).
    auth: Arc<Auth>,
    /// The keys' generation last checked.
    keys_generation: u64,
    next_second: Instant,
    /// Receive stamps of the updates delivered this turn.
    turn_recv: Vec<u64>,
    /// Sessions with unflushed output this turn (and those a flush
    /// interval holds back).
    dirty: Vec<usize>,
    /// The earliest time a held-back session may write.
    held_until: Option<Instant>,
    /// Order updates for `subscribe_orders` clients (`None`: trading off;
    /// on the other shards a channel that stays empty, their updates come
    /// from the lead).
    orders: Option<Receiver<Bytes>>,
    /// The order or relay budget ran out last turn: do not sleep in the
    /// poll.
    backlog: bool,
    /// Option chains (`None`: none served).
    chains: Option<chains::ChainLink>,
    events: Events,
    /// The last poll filled `events`: poll again without sleeping.
    events_full: bool,
}

impl Worker {
    /// How long the loop may sleep: not at all with clients left to read
    /// or order updates waiting (no readiness event will announce them),
    /// else until the union's next due time (an unsubscribe grace, the
    /// view) or a held flush, at most 100 ms.
    fn sleep_for(&self) -> Duration {
        // `union_dirty` here: the once-a-second pass changed the union
        // after this turn's sync (a client closed, the day turned).
        if !self.readable.is_empty() || self.backlog || self.events_full || self.union_dirty {
            return Duration::ZERO;
        }
        let until = self
            .union
            .next_due()
            .into_iter()
            .chain(self.held_until)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
        until.map_or(Duration::from_millis(100), |u| {
            u.min(Duration::from_millis(100))
        })
    }

    /// One loop turn; false once the loop has ended (after
    /// [`Worker::shutdown`], on `stop`).
    fn turn(&mut self, timeout: Duration) -> bool {
        self.heartbeat.beat();
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                log::error!("fanout poll failed: {e}; stopping");
                return false;
            }
        }
        // A full batch may leave events behind, which an edge-triggered
        // poll (and a poll nesting this one) will not report again.
        self.events_full = self.events.iter().count() == self.events.capacity();
        let now = Instant::now();
        for event in self.events.iter() {
            match event.token() {
                WAKER => {}
                Token(i) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.readable.push(i);
                    }
                    if event.is_writable() {
                        self.dirty.push(i);
                    }
                }
            }
        }
        if self.stop.load(Relaxed) {
            self.shutdown();
            return false;
        }
        self.take_handoffs(now);
        self.take_answers(now);
        self.read_clients(now);
        self.take_promoted(now);
        self.drain_updates(now);
        self.drain_depth(now);
        self.drain_orders(now);
        self.drain_chains(now);
        self.drain_relayed(now);
        self.check_upstream(now);
        // The union before the flush, so what it tells clients (a freed
        // slot) goes out this turn.
        self.push_changes(now);
        self.flush_dirty(now);
        if now >= self.next_second {
            self.next_second = now + Duration::from_secs(1);
            self.every_second(now);
        }
        true
    }

    /// New clients and this second's prices object from the front door.
    fn take_handoffs(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            match self.handoff.try_recv() {
                Ok(Handoff::Client(c)) => self.add_client(c, now),
                Ok(Handoff::Prices(body)) => self.push_prices(&body, now),
                Err(_) => return,
            }
        }
    }

    fn add_client(&mut self, c: NewClient, now: Instant) {
        let NewClient {
            mut stream,
            early,
            kind,
            prices,
            principal,
            limits,
            refused,
        } = c;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot watch a new client: {e}");
            self.auth.connection_closed(principal.key);
            self.load.remove(self.shard);
            self.free.push(slot);
            return;
        }
        set_send_buffer(stream.tcp(), self.config.client_send_buffer);
        let id = self.next_id;
        self.next_id += self.shards as u64;
        let rate = limits
            .messages_per_sec
            .map_or(self.config.max_messages_per_sec, |r| {
                r.min(self.config.max_messages_per_sec)
            });
        let mut s = Box::new(Session::new(
            id,
            stream,
            early,
            kind,
            self.ws_config,
            self.config.client_queue_bytes,
            rate,
        ));
        s.max_subs = limits
            .subscriptions
            .unwrap_or(self.config.max_subscriptions_per_client)
            .min(self.config.max_subscriptions_per_client);
        // Who may receive order updates: the `trade` scope where access
        // control is on; loopback peers only where it is off.
        s.trade = if principal.via == crate::auth::Via::Off {
            s.stream_mut()
                .tcp()
                .peer_addr()
                .is_ok_and(|a| a.ip().is_loopback())
        } else {
            principal.can(crate::auth::Scope::Trade)
        };
        s.key = principal.key;
        s.key_name = principal.key_name;
        self.stats.clients.inc();
        self.stats.clients_total.inc();
        match kind {
            Kind::Feed => {
                let status = UpstreamStatus::of(&self.upstream_stats);
                let text = if status.is_up() {
                    "Connected to price feed".to_string()
                } else {
                    format!("Waiting for price feed: {}", status.detail)
                };
                s.reply(
                    protocol::status_message(Some(status.state), &text),
                    &self.stats,
                    now,
                );
            }
            Kind::Prices => {
                self.stats.prices_clients.inc();
                if let Some(body) = prices {
                    s.deliver(Slot::Prices, &body, &self.stats, now);
                }
            }
            Kind::Dhan => self.greet_dhan(&mut s, refused, now),
            Kind::DhanDepth => self.greet_dhan_depth(&mut s, refused, now),
        }
        log::debug!("client {id} connected");
        self.sessions[slot] = Some(s);
        self.dirty.push(slot);
        // A frame sent together with the handshake is already buffered.
        self.readable.push(slot);
    }

    /// The lead: takes order updates from the broker (at most
    /// [`ORDERS_BUDGET`] a turn), passes them on to the other shards and
    /// relays them to its own subscribers.
    fn drain_orders(&mut self, now: Instant) {
        self.backlog = false;
        let Some(rx) = &self.orders else {
            return;
        };
        let msgs: Vec<Bytes> = rx.try_iter().take(ORDERS_BUDGET).collect();
        self.backlog = !rx.is_empty();
        for f in self.followers.iter().filter(|_| !msgs.is_empty()) {
            for msg in &msgs {
                let _ = f.queue(Relayed::Order(msg.clone()));
            }
            f.wake();
        }
        self.deliver_orders(&msgs, now);
    }

    /// Relays order updates to every `/ws` session of this shard that
    /// subscribed to them: the same bytes to each, never conflated (a
    /// client that does not read its replies is closed, as for any reply).
    fn deliver_orders(&mut self, msgs: &[Bytes], now: Instant) {
        if msgs.is_empty() {
            return;
        }
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let Some(s) = s.as_mut().filter(|s| s.orders) else {
                continue;
            };
            for msg in msgs {
                s.reply_bytes(msg, &self.stats, now);
            }
            self.dirty.push(i);
        }
    }

    /// Another shard: what the lead passed on (at most [`ORDERS_BUDGET`]
    /// a turn).
    fn drain_relayed(&mut self, now: Instant) {
        let mut orders = Vec::new();
        for _ in 0..ORDERS_BUDGET {
            match self.relayed.try_recv() {
                Ok(Relayed::Order(msg)) => orders.push(msg),
                Ok(Relayed::Chain(event)) => self.chain_event(event, now),
                Ok(Relayed::Day(day)) => self.follow_day(&day, now),
                Err(_) => break,
            }
        }
        self.backlog |= !self.relayed.is_empty();
        self.deliver_orders(&orders, now);
    }

    fn push_prices(&mut self, body: &Bytes, now: Instant) {
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if let Some(s) = s.as_mut().filter(|s| s.kind == Kind::Prices) {
                s.deliver(Slot::Prices, body, &self.stats, now);
                self.dirty.push(i);
            }
        }
    }

    /// Tells `/ws` clients when the upstream goes down or comes back; the
    /// per-turn check is one atomic read.
    fn check_upstream(&mut self, now: Instant) {
        let up = self.upstream_stats.connections_up() > 0;
        if up != self.upstream_up {
            self.upstream_up = up;
            self.announce_status(now);
        }
    }

    /// Sends the upstream state to every `/ws` client if it changed since
    /// the last announcement, or if the upstream moved to a new access
    /// token (subscriptions carry over; clients need do nothing).
    fn announce_status(&mut self, now: Instant) {
        let status = UpstreamStatus::of(&self.upstream_stats);
        let rotations = self.upstream_stats.rotations.get();
        let text = if rotations != self.rotations_announced && status.is_up() {
            "Price feed moved to a new DhanHQ access token; subscriptions kept".to_string()
        } else if status.state == self.announced {
            return;
        } else if status.is_up() {
            "Connected to price feed".to_string()
        } else {
            format!("Price feed disconnected: {}", status.detail)
        };
        self.announced = status.state;
        self.rotations_announced = rotations;
        let msg = protocol::status_message(Some(status.state), &text);
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if let Some(s) = s.as_mut().filter(|s| s.kind == Kind::Feed) {
                s.reply(msg.clone(), &self.stats, now);
                self.dirty.push(i);
            }
        }
    }

    fn every_second(&mut self, now: Instant) {
        self.local.sweep(now);
        self.take_day_turns(now);
        self.ping_dhan(now);
        self.check_revoked(now);
        self.announce_status(now);
        let limit = self.config.slow_client_timeout;
        let abuse = self.config.max_messages_per_sec.saturating_mul(10);
        for i in 0..self.sessions.len() {
            let Some(s) = self.sessions[i].as_mut() else {
                continue;
            };
            if s.close_expired(now, CLOSE_GRACE, CLOSE_MAX) {
                self.close_slot(i);
                continue;
            }
            if s.too_slow(now, limit) {
                self.stats.slow_closes.inc();
                log::info!(
                    "closing client {} ({} bytes queued): behind for over {limit:?}",
                    s.id,
                    s.queued_bytes()
                );
                s.close(CloseCode::Policy, "too slow: not reading its messages", now);
                self.dirty.push(i);
            } else if s.take_ignored_this_second() > abuse {
                self.stats.protocol_closes.inc();
                log::info!("closing client {}: rate limit exceeded tenfold", s.id);
                s.close(
                    CloseCode::Policy,
                    "rate limit exceeded: too many messages",
                    now,
                );
                self.dirty.push(i);
            }
        }
        self.flush_dirty(now);
        self.latency.maybe_publish(now);
        self.message_latency.maybe_publish(now);
    }

    /// When the keys file changed: closes (4403) every connection whose key
    /// is no longer in it. The front door reloads the file every second, so
    /// a revoked key's connections end within about two.
    fn check_revoked(&mut self, now: Instant) {
        let generation = self.auth.store().generation();
        if generation == self.keys_generation {
            return;
        }
        self.keys_generation = generation;
        for i in 0..self.sessions.len() {
            let Some(s) = self.sessions[i].as_mut() else {
                continue;
            };
            let Some(id) = s.key else { continue };
            if self.auth.store().by_id(id).is_some() || s.closing.is_some() {
                continue;
            }
            log::info!(
                "closing client {} (key '{}'): the key was revoked",
                s.id,
                s.key_name.as_deref().unwrap_or_default()
            );
            if s.kind.is_dhan() {
                // DhanHQ's word for it first: authentication failed.
                let packet = if s.kind == Kind::DhanDepth {
                    dhan::depth_disconnect_packet(dhan::reason::AUTH_FAILED)
                } else {
                    dhan::disconnect_packet(dhan::reason::AUTH_FAILED)
                };
                s.send_binary(&packet, &self.stats);
            }
            s.close(CloseCode::from(4403), "API key revoked", now);
            self.dirty.push(i);
        }
    }

    /// Removes the session in slot `i` and everything it held.
    fn close_slot(&mut self, i: usize) {
        let Some(mut s) = self.sessions.get_mut(i).and_then(Option::take) else {
            return;
        };
        for key in s.subs.keys() {
            self.release(i, *key);
        }
        for key in s.depth20.iter() {
            self.release_depth(i, *key);
        }
        self.release_chains(&s);
        self.auth.connection_closed(s.key);
        self.load.remove(self.shard);
        self.stats.subscriptions.sub(s.subs.len() as u64);
        self.stats.clients.sub(1);
        if s.kind == Kind::Prices {
            self.stats.prices_clients.sub(1);
        }
        let _ = self.poll.registry().deregister(s.stream_mut());
        self.free.push(i);
        log::debug!("client {} closed", s.id);
    }

    /// Close frames (1001) to every client, a short wait for them to go out.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for s in self.sessions.iter_mut().flatten() {
            s.close(CloseCode::Away, "server shutting down", now);
            let _ = s.flush(&self.stats, now);
        }
        let deadline = now + Duration::from_millis(500);
        let mut events = Events::with_capacity(256);
        while Instant::now() < deadline
            && self.sessions.iter().flatten().any(|s| s.queued_bytes() > 0)
        {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(20)));
            let now = Instant::now();
            for s in self.sessions.iter_mut().flatten() {
                let _ = s.flush(&self.stats, now);
            }
        }
        self.latency.publish(Instant::now());
        self.message_latency.publish(Instant::now());
        log::info!("fanout stopped");
    }
}

impl Worker {
    /// Client `i` of this shard takes `key` in `mode` (new, or a mode
    /// change): whether it flows now or waits for upstream capacity.
    fn hold(&mut self, i: usize, key: InstrumentKey, mode: Mode) -> Admission {
        let held = self.local.add(i, key, mode);
        self.union_dirty = true;
        self.union.add(self.shard, key, held)
    }

    /// Client `i` lets go of `key`; true if it held it.
    fn release(&mut self, i: usize, key: InstrumentKey) -> bool {
        let held = self.local.remove(i, key);
        if held.changed {
            self.union_dirty = true;
            self.union.remove(self.shard, key, held);
        }
        held.changed
    }

    /// Client `i` takes `key`'s 20-level book.
    fn hold_depth(&mut self, i: usize, key: InstrumentKey) {
        if self.local.add_depth(i, key) {
            self.union_dirty = true;
            self.union.add_depth(self.shard, key);
        }
    }

    /// Client `i` lets go of `key`'s 20-level book.
    fn release_depth(&mut self, i: usize, key: InstrumentKey) {
        if self.local.remove_depth(i, key) {
            self.union_dirty = true;
            self.union.remove_depth(self.shard, key);
        }
    }
}

/// Caps the kernel send buffer of a client socket (see
/// [`FanoutConfig::client_send_buffer`]).
fn set_send_buffer(stream: &mio::net::TcpStream, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local
    // `c_int`; the descriptor is owned by `stream` for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!("SO_SNDBUF not set: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod test_worker {
    //! A fanout [`Worker`] with no threads around it, for unit tests of the
    //! pump and the client protocol.
    use super::*;
    use crate::instrument::watch::ResolvedWatchlist;
    use crate::instrument::Master;
    use crate::upstream::Command;
    use ringbuf::traits::Split;
    use ringbuf::{HeapProd, HeapRb};

    /// What a test drives the worker with.
    pub(in crate::fanout) struct Harness {
        pub(in crate::fanout) worker: Worker,
        pub(in crate::fanout) updates: HeapProd<Update>,
        pub(in crate::fanout) upstream: Receiver<Command>,
    }

    /// A worker with `capacity` upstream slots and default limits.
    pub(in crate::fanout) fn worker(capacity: usize) -> Harness {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let (updates, rx) = HeapRb::<Update>::new(1024).split();
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (_handoff_tx, handoff) = crossbeam_channel::unbounded();
        let (jobs, _job_rx) = crossbeam_channel::unbounded();
        let (_answer_tx, answers) = crossbeam_channel::unbounded();
        let config = FanoutConfig {
            upstream_capacity: capacity,
            ..FanoutConfig::default()
        };
        let stats: Arc<FanoutStats> = Arc::default();
        let union = Union::new(
            config.unsubscribe_grace,
            capacity,
            UpstreamControl::new(cmd_tx, Arc::clone(&waker)),
            Arc::clone(&stats),
            Arc::default(),
            &[],
            vec![waker],
        );
        let worker = Worker {
            shard: 0,
            shards: 1,
            union: Arc::new(union),
            union_dirty: false,
            load: Load::new(1),
            followers: Vec::new(),
            relayed: crossbeam_channel::never(),
            local: Local::default(),
            depth_updates: None,
            poll,
            stop: Arc::default(),
            ws_config: WebSocketConfig::default(),
            updates: rx,
            snapshot: Arc::default(),
            upstream_stats: Arc::default(),
            master: Arc::new(ArcSwap::from_pointee(Master::sample())),
            watchlist: Watchlist::new(ResolvedWatchlist::default()),
            config,
            sessions: Vec::new(),
            free: Vec::new(),
            next_id: 1,
            readable: Vec::new(),
            renderer: Renderer::new(),
            dhan: dhan::DhanRenderer::new(),
            stats,
            latency: SharedLatency::default().recorder(),
            message_latency: SharedLatency::default().recorder(),
            symbols: HashMap::new(),
            handoff,
            jobs,
            answers,
            upstream_up: false,
            announced: "connecting",
            rotations_announced: 0,
            heartbeat: Heartbeat::new(),
            day_turns: crossbeam_channel::never(),
            day_done: crossbeam_channel::unbounded().0,
            auth: Arc::new(Auth::off()),
            keys_generation: 0,
            next_second: Instant::now(),
            turn_recv: Vec::new(),
            dirty: Vec::new(),
            held_until: None,
            orders: None,
            backlog: false,
            chains: None,
            events: Events::with_capacity(64),
            events_full: false,
        };
        Harness {
            worker,
            updates,
            upstream: cmd_rx,
        }
    }
}
