//! Starts, wires and stops the engine's threads.
//!
//! ```text
//! net (live book) ──Update ring──► fanout ──► clients
//!  │ ▲                                 ▲  │
//!  │ │   Tick ring ──► book ── Snapshot ┘  │ (arc-swap)
//!  │ └── subscription commands (crossbeam + mio::Waker) ◄┘
//! ```
//!
//! A tick is applied where it is decoded and crosses one thread boundary
//! to reach clients, none when the network and fanout loops share a thread
//! (`threads = "compact"`, [`crate::evloop`]); the book thread follows on its own ring for snapshots
//! and bars (see [`crate::book`]). The listener is bound first, so a port
//! in use fails before anything else starts. The fanout's waker exists
//! before the network thread starts (its live book pokes it), and the book
//! thread exists before the network thread (which wakes it when its ring
//! fills). Shutdown runs the other way: clients get close frames, the upstream
//! gets RequestCode 12, then every thread is joined. (In the compact layout
//! the two happen together: the shared thread closes the clients, then the
//! upstream, as soon as the fanout is stopped.)

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ringbuf::traits::Split;
use ringbuf::HeapRb;

use crate::book::{BookConfig, BookThread, Depth20, Outlet, Update};
use crate::chain::service::{ChainConfig, ChainLinks, ChainService};
use crate::config::{Feed, RunConfig};
use crate::evloop::Threads;
use crate::fanout::front::Listener;
use crate::fanout::{Fanout, FanoutInputs, FanoutThread};
use crate::history::{HistoryConfig, HistoryThread};
use crate::instrument::watch::{resolve_watchlist, WatchItem, Watchlist};
use crate::instrument::{source, Master, SharedMaster};
use crate::maintenance::{
    DayCounts, Maintenance, MaintenanceConfig, MaintenanceLinks, MaintenanceStats,
};
use crate::record::{RecordConfig, Recorder};
use crate::sdnotify::Heartbeat;
use crate::serve_tls::TlsListener;
use crate::sim::{SimConfig, Simulator};
use crate::tick::{DepthTick, Tick};
use crate::token::keeper::Start;
use crate::token::{Account, Keeper};
use crate::trading::broker::{Broker, BrokerLinks};
use crate::upstream::{load_ca_file, Credentials, Upstream, UpstreamConfig};

/// Capacity of each SPSC ring (ticks, updates).
const RING: usize = 65_536;

/// Capacity of each depth ring: the depth feed carries at most 250
/// instruments, two side packets each per update.
const DEPTH_RING: usize = 4_096;

/// Why the engine did not start; each maps to an exit code.
#[derive(Debug)]
pub enum StartError {
    /// The listen address is in use or not ours (exit 3).
    Bind(SocketAddr, std::io::Error),
    /// Bad configuration: CA file, feed URL… (exit 2).
    Config(String),
    /// The OS refused a thread, a poll or a socket (exit 1).
    Io(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind(addr, e) if e.kind() == std::io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {addr}: the port is in use (another dhan-relay?); pick another with --listen"
            ),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Config(e) => f.write_str(e),
            StartError::Io(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StartError {}

/// The running engine.
#[derive(Debug)]
pub struct Engine {
    /// Bound addresses, in configuration order, and whether each is TLS.
    addrs: Vec<(SocketAddr, bool)>,
    reload_tls: Arc<AtomicBool>,
    demo: Option<Simulator>,
    keeper: Option<Keeper>,
    /// The trading calls' threads (none when trading is off).
    broker: Option<Broker>,
    /// The option chain thread.
    chains: Option<ChainService>,
    /// Network, book and fanout shard loop heartbeats.
    beats: Vec<Heartbeat>,
    fanout: Option<FanoutThread>,
    upstream: Option<Upstream>,
    book: Option<BookThread>,
    /// `--record`: writes what the network thread offers it.
    recorder: Option<Recorder>,
    /// Today's 1-minute bars (fed by the book).
    history: Option<HistoryThread>,
    maintenance: Option<Maintenance>,
    master: SharedMaster,
    watchlist: Vec<WatchItem>,
}

impl Engine {
    /// Binds, loads the instrument master and resolves the watchlist,
    /// starts every thread, and subscribes the watchlist.
    pub fn start(config: RunConfig) -> Result<Engine, StartError> {
        // Access control and certificates first: a missing key or a bad
        // file is a configuration error (exit 2) whatever the state of the
        // ports, and nothing is bound before it is known.
        let listen: Vec<(SocketAddr, Option<crate::auth::AuthMode>)> =
            config.listen.iter().map(|l| (l.addr, l.auth)).collect();
        let access = crate::auth::setup(
            config.auth,
            config.insecure_no_auth,
            &listen,
            &config.keys_file,
            config.key_limits.clone(),
        )
        .map_err(StartError::Config)?;
        if access.insecure {
            log::warn!(
                "--insecure-no-auth: access control is OFF on every listener; anyone who can reach them can read prices and use admin calls"
            );
        }
        let mut tls = Vec::with_capacity(config.listen.len());
        for spec in &config.listen {
            tls.push(match &spec.tls {
                Some(files) => Some(
                    TlsListener::load(files)
                        .map_err(|e| StartError::Config(format!("listen {}: {e}", spec.addr)))?,
                ),
                None => None,
            });
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for ((spec, tls), &auth) in config.listen.iter().zip(tls).zip(&access.listeners) {
            let listener =
                TcpListener::bind(spec.addr).map_err(|e| StartError::Bind(spec.addr, e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?;
            listeners.push(Listener {
                listener,
                addr,
                tls,
                auth,
            });
        }
        let addrs: Vec<(SocketAddr, bool)> = listeners
            .iter()
            .map(|l| (l.addr, l.tls.is_some()))
            .collect();
        let reload_tls = Arc::new(AtomicBool::new(false));
        let (master, watchlist) = instruments(&config)?;
        // Option chains: every configured one must resolve against the
        // master and fit the upstream budget. Demo mode's own NIFTY chain
        // (no config line) is dropped with a warning instead.
        let mut chain_specs = config.chains.clone();
        let chain_budget = (config.upstream_connections * config.instruments_per_connection)
            .saturating_sub(watchlist.items().len());
        if let Err(e) = crate::chain::config::resolve_all(
            &chain_specs,
            &master,
            config.clock.today(),
            chain_budget,
        ) {
            if chain_specs.iter().any(|c| c.line.is_some()) {
                return Err(StartError::Config(e));
            }
            log::warn!("demo mode's NIFTY chain is not started: {e}");
            chain_specs.clear();
        }
        let master: SharedMaster = Arc::new(arc_swap::ArcSwap::new(master));
        let extra_ca = match &config.feed_ca {
            Some(path) => load_ca_file(path).map_err(StartError::Config)?,
            None => Vec::new(),
        };
        let (demo, feed_url, start) = match &config.feed {
            Feed::Demo { rate } => {
                let sim = Simulator::start(SimConfig {
                    ticks_per_sec: *rate,
                    ..SimConfig::default()
                })
                .map_err(|e| StartError::Io(format!("cannot start the built-in simulator: {e}")))?;
                let url = sim.feed_url();
                // A real (unsigned) JWT from the simulator, so the token's
                // expiry shows and renewal can be tried against it.
                let token = sim
                    .control()
                    .issue_token("demo-client", Duration::from_secs(24 * 3600));
                let account = Account {
                    credentials: Credentials::new("demo-client", token),
                    pin: None,
                    totp_secret: None,
                };
                let start = Start {
                    account,
                    origin: None,
                };
                (Some(sim), url, start)
            }
            Feed::Live {
                url,
                account,
                origin,
            } => {
                let start = Start {
                    account: account.clone(),
                    origin: Some(origin.clone()),
                };
                (None, url.clone(), start)
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let layout = config.threads.resolve(cores);
        let shards = layout.fanout_shards(config.fanout_threads, cores);
        if layout == Threads::Compact && config.fanout_threads.is_some_and(|n| n > 1) {
            log::warn!("threads = compact: one fanout loop shares the network thread; fanout_threads is ignored");
        }
        log::info!(
            "threads: {} ({}{} cores): {}",
            layout.name(),
            if config.threads == Threads::Auto {
                "auto, "
            } else {
                ""
            },
            cores,
            match layout {
                Threads::Compact => "network and fanout loops share one thread".to_string(),
                _ => format!("network loop and {shards} fanout shard(s) on a thread each"),
            }
        );
        let fanout = Fanout::new(
            listeners,
            Arc::clone(&reload_tls),
            access,
            crate::fanout::FanoutConfig {
                threads: layout.name(),
                shards,
                ..config.fanout.clone()
            },
        )
        .map_err(|e| StartError::Io(e.to_string()))?;
        let (tick_tx, tick_rx) = HeapRb::<Tick>::new(RING).split();
        let (depth_tick_tx, depth_tick_rx) = HeapRb::<DepthTick>::new(DEPTH_RING).split();
        // One update ring and one depth ring per fanout shard.
        let mut outlets = Vec::with_capacity(shards);
        let (mut update_rxs, mut depth_rxs) = (Vec::new(), Vec::new());
        for waker in fanout.wakers() {
            let (updates, update_rx) = HeapRb::<Update>::new(RING).split();
            let (depth, depth_rx) = HeapRb::<Depth20>::new(DEPTH_RING).split();
            update_rxs.push(update_rx);
            depth_rxs.push(depth_rx);
            let notify: crate::book::Notify = match layout {
                // Same thread: nothing to wake.
                Threads::Compact => Box::new(|| {}),
                _ => Box::new(move || {
                    let _ = waker.wake();
                }),
            };
            outlets.push(Outlet {
                updates,
                depth,
                notify,
            });
        }
        // Network, book, then one per fanout shard.
        let beats: Vec<Heartbeat> = (0..2 + shards).map(|_| Heartbeat::new()).collect();
        let (history, bar_sink) = HistoryThread::spawn(HistoryConfig {
            // Instruments subscribed mid-day get the day's earlier bars
            // from the recording, when there is one.
            backfill_dir: config.record.as_ref().map(|r| r.dir.clone()),
            ..HistoryConfig::default()
        })
        .map_err(|e| StartError::Io(format!("cannot start the history thread: {e}")))?;
        let mut book = BookThread::spawn(
            BookConfig {
                core: config.pin.book,
                heartbeat: beats[1].clone(),
                ..BookConfig::default()
            },
            tick_rx,
            Some(depth_tick_rx),
            Some(bar_sink),
        )
        .map_err(|e| StartError::Io(format!("cannot start the book thread: {e}")))?;
        let live = match layout {
            // Same thread: a full ring must not wait.
            Threads::Compact => book.live(outlets).spill_when_full(),
            _ => book.live(outlets),
        };
        let (recorder, tap) = match &config.record {
            Some(r) => {
                let (recorder, tap) = Recorder::spawn(RecordConfig {
                    keep_days: r.keep_days,
                    fail_after_bytes: r.fail_after_bytes,
                    ..RecordConfig::new(&r.dir)
                })
                .map_err(|e| {
                    StartError::Config(format!("cannot record into {}: {e}", r.dir.display()))
                })?;
                log::info!(
                    "recording every upstream frame into {} (days kept: {})",
                    r.dir.display(),
                    match r.keep_days {
                        0 => "all".to_string(),
                        n => n.to_string(),
                    }
                );
                (Some(recorder), Some(tap))
            }
            None => (None, None),
        };
        let depth_url = config
            .depth_url
            .clone()
            .unwrap_or_else(|| crate::upstream::derive_depth_url(&feed_url));
        let upstream_config = UpstreamConfig {
            feed_url,
            depth_url,
            credentials: start.account.credentials.clone(),
            extra_ca: extra_ca.clone(),
            max_connections: config.upstream_connections,
            max_per_connection: config.instruments_per_connection,
            silence_timeout: config.silence_timeout,
            core: config.pin.net,
            busy_poll: config.busy_poll,
            heartbeat: beats[0].clone(),
            ..UpstreamConfig::default()
        };
        let (mut upstream, net_loop) = Upstream::build(
            upstream_config,
            tick_tx,
            Some(depth_tick_tx),
            book.thread(),
            tap,
            Some(live),
        )
        .map_err(|e| match e {
            crate::upstream::SpawnError::Config(why) => StartError::Config(why),
            io @ crate::upstream::SpawnError::Io { .. } => StartError::Io(io.to_string()),
        })?;
        let mut token_config = config.token.clone();
        if let Some(sim) = &demo {
            // Demo mode renews (if asked to) against the built-in simulator.
            token_config.rest_url = sim.rest_url();
            token_config.auth_url = sim.rest_url();
        }
        let keeper = Keeper::spawn(token_config, start, upstream.control(), upstream.stats())
            .map_err(|e| StartError::Io(format!("cannot start the token keeper thread: {e}")))?;
        let mut trading = config.trading.clone();
        if let Some(sim) = &demo {
            // Demo mode trades on paper against the built-in simulator.
            trading.rest_url = sim.rest_url();
            trading.order_stream_url = sim.order_update_url();
        }
        let (broker, trading, orders) = Broker::spawn(
            trading,
            BrokerLinks {
                master: Arc::clone(&master),
                snapshot: book.snapshot.clone(),
                clock: config.clock.clone(),
                credentials: keeper.handle().credentials(),
                front_waker: fanout.front_waker(),
                fanout_waker: fanout.waker(),
                extra_ca: extra_ca.clone(),
            },
        )
        .map_err(StartError::Config)?;
        let (chain_events, chain_events_rx) = crossbeam_channel::unbounded();
        let chains = ChainService::spawn(
            ChainConfig {
                specs: chain_specs,
                interval: config.chain_interval,
                rate: config.chain_rate,
                budget: chain_budget,
            },
            ChainLinks {
                master: Arc::clone(&master),
                snapshot: book.snapshot.clone(),
                clock: config.clock.clone(),
                events: chain_events,
                fanout_waker: fanout.waker(),
            },
        )
        .map_err(|e| StartError::Io(format!("cannot start the option chain thread: {e}")))?;
        let fanout_waker = fanout.waker();
        let (turn_tx, turn_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let maintenance_stats = Arc::new(MaintenanceStats::default());
        let inputs = FanoutInputs {
            token: keeper.handle(),
            heartbeats: beats[2..].to_vec(),
            updates: update_rxs,
            depth_updates: Some(depth_rxs),
            snapshot: book.snapshot.clone(),
            upstream: upstream.control(),
            upstream_stats: upstream.stats(),
            depth_stats: upstream.depth_stats(),
            book_stats: book.stats.clone(),
            receive_to_book: book.latency.clone(),
            master: Arc::clone(&master),
            watchlist: watchlist.clone(),
            clock: config.clock.clone(),
            day_turns: turn_rx,
            day_done: done_tx,
            maintenance: Arc::clone(&maintenance_stats),
            calendar: config.calendar.clone(),
            trading,
            orders,
            history: history.handle.clone(),
            chain_board: Arc::clone(&chains.board),
            chain_stats: Arc::clone(&chains.stats),
            chains: Some((chains.requests.clone(), chain_events_rx)),
            record: recorder.as_ref().map(Recorder::stats),
        };
        let thread_error =
            |e| StartError::Io(format!("cannot start the network or fanout thread: {e}"));
        let (mut fanout, fanout_loops) = fanout.build(inputs).map_err(thread_error)?;
        match layout {
            Threads::Compact => {
                let fanout_loop = fanout_loops.into_iter().next().expect("one shard");
                if config.pin.fanout.is_some() {
                    log::warn!("threads = compact: the network and fanout loops share one thread, pinned as `net`; the `fanout` pin is ignored");
                }
                let thread = crate::evloop::spawn_together(
                    "dhan-net-fanout",
                    "net+fanout",
                    config.pin.net,
                    net_loop,
                    fanout_loop,
                )
                .map_err(thread_error)?;
                // Stopping either handle ends the shared thread.
                upstream.attach(thread);
            }
            _ => {
                let (net_core, fanout_core) = (config.pin.net, config.fanout.core);
                if let Some(first) = fanout_core {
                    let last = first + shards - 1;
                    let shared = [("net", net_core), ("book", config.pin.book)]
                        .into_iter()
                        .filter(|(_, c)| c.is_some_and(|c| (first..=last).contains(&c)))
                        .map(|(role, _)| role)
                        .collect::<Vec<_>>();
                    if !shared.is_empty() || last >= cores {
                        log::warn!(
                            "fanout pinned to core(s) {first}-{last} ({shards} shard(s)): {}",
                            if shared.is_empty() {
                                format!("this box has cores 0-{}", cores - 1)
                            } else {
                                format!("shared with the {} pin", shared.join(" and "))
                            }
                        );
                    }
                }
                let net = crate::evloop::spawn_alone("dhan-net", "net", net_core, net_loop);
                upstream.attach(net.map_err(thread_error)?);
                for (k, shard) in fanout_loops.into_iter().enumerate() {
                    let name = match k {
                        0 => "dhan-fanout".to_string(),
                        k => format!("dhan-fanout-{k}"),
                    };
                    let core = fanout_core.map(|c| c + k);
                    let fan = crate::evloop::spawn_alone(&name, "fanout", core, shard);
                    fanout.attach(fan.map_err(thread_error)?);
                }
            }
        }
        let maintenance = Maintenance::spawn(
            MaintenanceConfig {
                at: config.maintenance_at,
                source: config.instruments.clone(),
                clock: config.clock.clone(),
                settle: config.fanout.unsubscribe_grace + Duration::from_secs(1),
            },
            MaintenanceLinks {
                master: Arc::clone(&master),
                to_fanout: turn_tx,
                fanout_waker,
                from_fanout: done_rx,
                fanout_shards: shards,
                book: book.control(),
                snapshot: book.snapshot.clone(),
                counts: DayCounts {
                    book: book.stats.clone(),
                    fanout: Arc::clone(&fanout.stats),
                    upstream: upstream.stats(),
                    token: keeper.handle(),
                },
            },
            maintenance_stats,
        )
        .map_err(|e| StartError::Io(format!("cannot start the maintenance thread: {e}")))?;
        Ok(Engine {
            addrs,
            reload_tls,
            demo,
            keeper: Some(keeper),
            broker: Some(broker),
            chains: Some(chains),
            beats,
            fanout: Some(fanout),
            upstream: Some(upstream),
            book: Some(book),
            recorder,
            history: Some(history),
            maintenance: Some(maintenance),
            master,
            watchlist: watchlist.items().to_vec(),
        })
    }

    /// The instrument master in use now (the daily maintenance swaps it).
    pub fn instruments(&self) -> Arc<Master> {
        self.master.load_full()
    }

    /// The watchlist as resolved at start.
    pub fn watchlist(&self) -> &[WatchItem] {
        &self.watchlist
    }

    /// The address clients connect to (the first listener's).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0].0
    }

    /// Every listener's address, in configuration order, and whether it
    /// speaks TLS.
    pub fn listeners(&self) -> &[(SocketAddr, bool)] {
        &self.addrs
    }

    /// Set this (from a SIGHUP handler) to have the TLS listeners'
    /// certificate files re-read now; they are also re-read within a few
    /// seconds of changing.
    pub fn reload_tls(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reload_tls)
    }

    /// The built-in simulator's URL, in demo mode.
    pub fn demo_feed_url(&self) -> Option<String> {
        self.demo.as_ref().map(Simulator::feed_url)
    }

    /// The built-in simulator, in demo mode (tests inject packets through it).
    pub fn demo_simulator(&self) -> Option<&Simulator> {
        self.demo.as_ref()
    }

    /// The network, book and fanout loops' heartbeats, named, for the
    /// service watchdog.
    pub fn heartbeats(&self) -> Vec<(String, Heartbeat)> {
        self.beats
            .iter()
            .enumerate()
            .map(|(i, beat)| {
                let name = match i {
                    0 => "network".to_string(),
                    1 => "book".to_string(),
                    2 => "fanout".to_string(),
                    k => format!("fanout-{}", k - 2),
                };
                (name, beat.clone())
            })
            .collect()
    }

    /// The network thread's counters.
    pub fn upstream_stats(&self) -> Option<Arc<crate::upstream::UpstreamStats>> {
        self.upstream.as_ref().map(Upstream::stats)
    }

    /// Set this (from a SIGHUP handler) to have the credentials re-read.
    pub fn reload_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.keeper.as_ref().map(Keeper::hup_flag)
    }

    /// Orderly stop: close frames to clients, RequestCode 12 upstream, join.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(m) = self.maintenance.take() {
            m.shutdown();
        }
        if let Some(f) = self.fanout.take() {
            f.shutdown();
        }
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
        if let Some(c) = self.chains.take() {
            c.shutdown();
        }
        if let Some(k) = self.keeper.take() {
            k.shutdown();
        }
        if let Some(u) = self.upstream.take() {
            u.shutdown();
        }
        // After the network thread: every frame it offered gets written.
        if let Some(r) = self.recorder.take() {
            r.shutdown();
        }
        if let Some(b) = self.book.take() {
            b.shutdown();
        }
        if let Some(h) = self.history.take() {
            h.shutdown();
        }
        drop(self.demo.take());
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Loads the master (logging where from and what was wrong with it) and
/// resolves the configured watchlist against it.
fn instruments(config: &RunConfig) -> Result<(Arc<Master>, Watchlist), StartError> {
    let loaded =
        source::load(&config.instruments, config.clock.now()).map_err(StartError::Config)?;
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    // The report names the first bad rows by line: worth a warning.
    if loaded.master.report().bad > 0 {
        log::warn!("{}", loaded.describe());
    } else {
        log::info!("{}", loaded.describe());
    }
    let today = config.clock.today();
    let resolved = resolve_watchlist(&config.watch, &loaded.master, today, loaded.authoritative())
        .map_err(StartError::Config)?;
    for n in &resolved.notes {
        log::info!("{n}");
    }
    for s in &resolved.skipped {
        log::warn!("{s}");
    }
    let watchlist = Watchlist::new(resolved);
    Ok((Arc::new(loaded.master), watchlist))
}

/// Raises the open-file limit to its hard maximum (each client is a file
/// descriptor); warns when even that is short of `max_clients`.
pub fn raise_fd_limit(max_clients: usize) {
    let soft = match crate::fdlimit::raise_to_hard_limit() {
        Ok(soft) => soft,
        Err(e) => {
            log::warn!("cannot read the open-file limit: {e}");
            return;
        }
    };
    let needed = max_clients as u64 + 512;
    if soft < needed {
        log::warn!(
            "open-file limit is {soft} but max_clients {max_clients} needs about {needed}; raise it with `ulimit -n` or lower limits.max_clients"
        );
    }
}
