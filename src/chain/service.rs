//! The chain thread: keeps every option chain's window centred on the
//! money and renders each chain once per interval for all its subscribers.
//!
//! It owns no sockets. Each turn (`chain_interval_ms`, default 250) it
//! reads the book's snapshot: the underlying's last price moves a chain's
//! window (hysteresis in [`super::window`]), and the strikes that came in
//! and went out go to the fanout as a [`ChainEvent::Hold`] — the fanout
//! holds them upstream like the watchlist, as a client of its own per
//! chain, so the new strikes are subscribed at once and the old ones are
//! released after the usual unsubscribe grace: never a gap at the centre.
//! A chain whose instruments changed since its last message is rendered
//! ([`super::render`]) into one [`Bytes`] the fanout queues to every
//! subscriber (conflated per chain for a slow client).
//!
//! Chains come from `[[chains]]` (always on) and from clients
//! (`subscribe_chain`, shared by everyone asking for the same underlying
//! and expiry, dropped 10 s after its last subscriber). After an expiry,
//! a chain moves to the expiry its rule now picks (checked each turn, so at
//! start and at the day's turn alike). The master scans (building a
//! ladder) happen here, never on the fanout thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;
use serde_json::{json, Value};

use super::config::ChainSpec;
use super::greeks::Model;
use super::ladder::{self, ExpiryPick, Ladder};
use super::render::{self, Pricing, Rows};
use super::window::Window;
use crate::book::SharedSnapshot;
use crate::domain::{InstrumentKey, Mode, Segment};
use crate::instrument::{Date, Kind, Master, SharedMaster, WallClock};

/// How long a client-asked chain lives after its last subscriber left.
const IDLE_DROP: Duration = Duration::from_secs(10);
/// Largest `strikes` a client may ask for.
pub const MAX_STRIKES: usize = 50;

/// What the fanout asks of the chain thread.
#[derive(Debug)]
pub enum ChainRequest {
    /// A client's `subscribe_chain`.
    Subscribe {
        /// The session's slot and id (the answer goes back to it).
        slot: usize,
        /// The session's id.
        session: u64,
        /// The underlying as named.
        underlying: String,
        /// `nearest`, `next`, `monthly` or a date.
        expiry: String,
        /// Strikes each side of ATM.
        strikes: usize,
    },
    /// A subscriber of this chain left (unsubscribed or closed).
    Release(u32),
}

/// What the chain thread tells the fanout.
#[derive(Debug)]
pub enum ChainEvent {
    /// The session is now a subscriber of `chain`.
    Subscribed {
        /// The session's slot.
        slot: usize,
        /// The session's id.
        session: u64,
        /// The chain's number.
        chain: u32,
        /// `UNDERLYING:YYYY-MM-DD`.
        id: Arc<str>,
        /// Its latest message, to greet the subscriber with.
        latest: Option<Bytes>,
    },
    /// The session's request was refused.
    Refused {
        /// The session's slot.
        slot: usize,
        /// The session's id.
        session: u64,
        /// Why, in words.
        message: String,
    },
    /// Hold these upstream for `chain` (added first), release those.
    Hold {
        /// The chain's number.
        chain: u32,
        /// Instruments to hold, with the mode.
        add: Vec<(InstrumentKey, Mode)>,
        /// Instruments no longer held for it.
        remove: Vec<InstrumentKey>,
    },
    /// This turn's message for the chain's subscribers.
    Render {
        /// The chain's number.
        chain: u32,
        /// The rendered message.
        body: Bytes,
    },
}

/// What REST shows: every chain's summary and latest body.
#[derive(Debug, Default)]
pub struct Board {
    /// `GET /api/chains` entries.
    pub chains: Vec<Value>,
    /// The latest REST body by chain id.
    pub bodies: HashMap<String, Bytes>,
}

/// Shared with the front door.
pub type SharedBoard = Arc<ArcSwap<Board>>;

/// Counters for `/stats` and `/metrics`.
#[derive(Debug)]
pub struct ChainStats {
    /// Window moves.
    pub recentres: crate::metrics::Counter,
    /// Chain messages rendered.
    pub renders: crate::metrics::Counter,
}

impl Default for ChainStats {
    fn default() -> ChainStats {
        ChainStats {
            recentres: crate::metrics::Counter::new(
                "chain_recentres_total",
                "Option chain windows moved to a new ATM strike",
            ),
            renders: crate::metrics::Counter::new(
                "chain_renders_total",
                "Option chain messages rendered (one per chain per interval with changes)",
            ),
        }
    }
}

/// Settings of the thread.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// `[[chains]]`, already checked against the master and the budget.
    pub specs: Vec<ChainSpec>,
    /// Messages at most this often per chain.
    pub interval: Duration,
    /// The risk-free rate for the greeks.
    pub rate: f64,
    /// Instruments chains may hold upstream at most (all chains together).
    pub budget: usize,
}

/// The running thread and the ways to it.
#[derive(Debug)]
pub struct ChainService {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Requests from the fanout.
    pub requests: Sender<ChainRequest>,
    /// For REST.
    pub board: SharedBoard,
    /// Counters.
    pub stats: Arc<ChainStats>,
}

/// What the thread reads.
#[derive(Clone)]
pub struct ChainLinks {
    /// The instrument master (swapped daily).
    pub master: SharedMaster,
    /// The book's snapshot.
    pub snapshot: SharedSnapshot,
    /// Today's date.
    pub clock: WallClock,
    /// Events to the fanout …
    pub events: Sender<ChainEvent>,
    /// … and its wake-up.
    pub fanout_waker: Arc<Waker>,
}

impl std::fmt::Debug for ChainLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainLinks")
    }
}

impl ChainService {
    /// Starts the thread.
    pub fn spawn(config: ChainConfig, links: ChainLinks) -> std::io::Result<ChainService> {
        let (requests, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let board: SharedBoard = Arc::default();
        let stats = Arc::new(ChainStats::default());
        let mut state = State {
            config,
            links,
            chains: Vec::new(),
            board: Arc::clone(&board),
            stats: Arc::clone(&stats),
        };
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dhan-chains".into())
            .spawn(move || {
                crate::affinity::background("option chains");
                state.run(&rx, &stop2);
            })?;
        Ok(ChainService {
            stop,
            thread: Some(thread),
            requests,
            board,
            stats,
        })
    }

    /// Stops and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ChainService {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// One chain.
struct Chain {
    number: u32,
    id: Arc<str>,
    pick: ExpiryPick,
    strikes: usize,
    mode: Mode,
    hysteresis: f64,
    configured: bool,
    subscribers: usize,
    /// When the last subscriber left (client chains).
    idle_since: Option<Instant>,
    ladder: Ladder,
    window: Window,
    pricing: Pricing,
    /// Instruments held upstream for it now.
    held: Vec<InstrumentKey>,
    /// Sum of the held instruments' update counts at the last render.
    seen: u64,
    latest: Option<Bytes>,
    recentres: u64,
}

struct State {
    config: ChainConfig,
    links: ChainLinks,
    chains: Vec<Chain>,
    board: SharedBoard,
    stats: Arc<ChainStats>,
}

impl State {
    fn run(&mut self, rx: &Receiver<ChainRequest>, stop: &AtomicBool) {
        let master = self.links.master.load_full();
        let today = self.links.clock.today();
        for spec in self.config.specs.clone() {
            match self.open(
                &master,
                today,
                &spec.underlying,
                spec.expiry,
                spec.strikes,
                spec.mode,
                spec.hysteresis,
                true,
            ) {
                Ok(_) => {}
                Err(e) => log::error!("chain {}: {e}", spec.underlying),
            }
        }
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let wait = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(request) => {
                    self.on_request(request);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            next = Instant::now() + self.config.interval;
            self.turn();
        }
    }

    fn on_request(&mut self, request: ChainRequest) {
        match request {
            ChainRequest::Release(n) => {
                if let Some(c) = self.chains.iter_mut().find(|c| c.number == n) {
                    c.subscribers = c.subscribers.saturating_sub(1);
                    if c.subscribers == 0 {
                        c.idle_since = Some(Instant::now());
                    }
                }
            }
            ChainRequest::Subscribe {
                slot,
                session,
                underlying,
                expiry,
                strikes,
            } => {
                let answer = self.subscribe(&underlying, &expiry, strikes);
                let event = match answer {
                    Ok(i) => {
                        let c = &mut self.chains[i];
                        c.subscribers += 1;
                        c.idle_since = None;
                        ChainEvent::Subscribed {
                            slot,
                            session,
                            chain: c.number,
                            id: Arc::clone(&c.id),
                            latest: c.latest.clone(),
                        }
                    }
                    Err(message) => ChainEvent::Refused {
                        slot,
                        session,
                        message,
                    },
                };
                self.send(event);
            }
        }
    }

    /// The chain for a client's request: an existing one for the same
    /// underlying and expiry (its window widened if asked), or a new one.
    fn subscribe(
        &mut self,
        underlying: &str,
        expiry: &str,
        strikes: usize,
    ) -> Result<usize, String> {
        if !(1..=MAX_STRIKES).contains(&strikes) {
            return Err(format!(
                "strikes must be 1 to {MAX_STRIKES} (each side of ATM)"
            ));
        }
        let pick: ExpiryPick = expiry.parse()?;
        let master = self.links.master.load_full();
        let today = self.links.clock.today();
        let ladder = ladder::build(&master, underlying, pick, today)?;
        if let Some(i) = self.chains.iter().position(|c| {
            c.ladder.underlying == ladder.underlying && c.ladder.expiry == ladder.expiry
        }) {
            if strikes > self.chains[i].strikes {
                self.check_budget(strikes - self.chains[i].strikes)?;
                let c = &mut self.chains[i];
                c.strikes = strikes;
                c.window = Window::new(strikes, c.hysteresis);
            }
            return Ok(i);
        }
        self.open(
            &master,
            today,
            underlying,
            pick,
            strikes,
            Mode::Quote,
            0.5,
            false,
        )
    }

    fn check_budget(&self, more_strikes: usize) -> Result<(), String> {
        let held: usize = self.chains.iter().map(|c| c.held.len()).sum();
        let wanted = held + 4 * more_strikes + 3;
        if wanted > self.config.budget {
            return Err(format!(
                "this chain would take the chains past their upstream budget ({} instruments held, {} allowed): ask for fewer strikes",
                held, self.config.budget
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        master: &Master,
        today: Date,
        underlying: &str,
        pick: ExpiryPick,
        strikes: usize,
        mode: Mode,
        hysteresis: f64,
        configured: bool,
    ) -> Result<usize, String> {
        let ladder = ladder::build(master, underlying, pick, today)?;
        if !configured {
            self.check_budget(2 * strikes + 1)?;
        }
        let number = self.chains.iter().map(|c| c.number + 1).max().unwrap_or(0);
        let id: Arc<str> = format!("{}:{}", ladder.underlying, ladder.expiry).into();
        let pricing = pricing_of(master, &ladder, self.config.rate);
        log::info!(
            "chain {id}: {} strikes listed (step {}), ATM ± {strikes}, {} on {}",
            ladder.strikes.len(),
            ladder.strike_step,
            match pricing.model {
                Model::Black76 => "Black-76",
                Model::BlackScholes => "Black-Scholes",
            },
            pricing.source
        );
        self.chains.push(Chain {
            number,
            id,
            pick,
            strikes,
            mode,
            hysteresis,
            configured,
            subscribers: 0,
            idle_since: (!configured).then(Instant::now),
            window: Window::new(strikes, hysteresis),
            ladder,
            pricing,
            held: Vec::new(),
            seen: u64::MAX,
            latest: None,
            recentres: 0,
        });
        let i = self.chains.len() - 1;
        self.hold_sources(i);
        Ok(i)
    }

    /// Holds the price sources (underlying, model future) at once: the
    /// window needs a price before it has strikes.
    fn hold_sources(&mut self, i: usize) {
        let c = &mut self.chains[i];
        let mut add = vec![(c.ladder.price_source, Mode::Quote)];
        if c.pricing.source != c.ladder.price_source {
            add.push((c.pricing.source, Mode::Quote));
        }
        c.held.extend(add.iter().map(|(k, _)| *k));
        let event = ChainEvent::Hold {
            chain: c.number,
            add,
            remove: Vec::new(),
        };
        self.send(event);
    }

    fn send(&self, event: ChainEvent) {
        if self.links.events.send(event).is_ok() {
            let _ = self.links.fanout_waker.wake();
        }
    }

    /// One interval: expiry rolls, idle drops, window moves, renders.
    fn turn(&mut self) {
        let snapshot = self.links.snapshot.load_full();
        // The engine's clock (a test's, too): time to expiry and the day.
        let now = self.links.clock.now();
        let today = Date::today_ist(now);
        self.drop_idle();
        for i in 0..self.chains.len() {
            if self.chains[i].ladder.expiry < today {
                self.roll(i, today);
            }
            let c = &mut self.chains[i];
            let price = snapshot
                .get(c.ladder.price_source)
                .and_then(|s| s.ltp)
                .map(f64::from);
            let mut events = Vec::new();
            if let Some(price) = price {
                if let Some(shift) = c.window.update(&c.ladder, price) {
                    if shift.from_atm.is_some() {
                        c.recentres += 1;
                        self.stats.recentres.inc();
                        log::info!(
                            "chain {}: re-centred {} → {} ({} at {price:.2})",
                            c.id,
                            shift.from_atm.unwrap_or_default(),
                            shift.to_atm,
                            c.ladder.underlying
                        );
                    }
                    c.held.retain(|k| !shift.removed.contains(k));
                    c.held.extend(shift.added.iter().copied());
                    events.push(ChainEvent::Hold {
                        chain: c.number,
                        add: shift.added.iter().map(|k| (*k, c.mode)).collect(),
                        remove: shift.removed,
                    });
                }
            }
            let seen: u64 = c
                .held
                .iter()
                .filter_map(|k| snapshot.get(*k))
                .map(|s| s.seq)
                .sum();
            if seen != c.seen && c.window.atm(&c.ladder).is_some() {
                c.seen = seen;
                let rows = rows_of(c);
                let atm = c.window.atm(&c.ladder);
                let body = render::chain_json(
                    &c.id, &c.ladder, rows, atm, &c.pricing, &snapshot, now, true,
                );
                let bytes = Bytes::from(body.to_string());
                c.latest = Some(bytes.clone());
                self.stats.renders.inc();
                events.push(ChainEvent::Render {
                    chain: c.number,
                    body: bytes,
                });
            }
            for e in events {
                self.send(e);
            }
        }
        self.publish(&snapshot);
    }

    /// A chain past its expiry moves to what its rule picks today.
    fn roll(&mut self, i: usize, today: Date) {
        let master = self.links.master.load_full();
        let c = &self.chains[i];
        let (underlying, pick) = (c.ladder.underlying.clone(), c.pick);
        match ladder::build(&master, &underlying, pick, today) {
            Ok(ladder) => {
                let c = &mut self.chains[i];
                log::info!("chain {}: expired; moves to {}", c.id, ladder.expiry);
                let remove = std::mem::take(&mut c.held);
                c.pricing = pricing_of(&master, &ladder, self.config.rate);
                c.id = format!("{}:{}", ladder.underlying, ladder.expiry).into();
                c.ladder = ladder;
                c.window = Window::new(c.strikes, c.hysteresis);
                c.seen = u64::MAX;
                let number = c.number;
                self.send(ChainEvent::Hold {
                    chain: number,
                    add: Vec::new(),
                    remove,
                });
                self.hold_sources(i);
            }
            Err(e) => log::warn!("chain {}: expired and cannot roll: {e}", self.chains[i].id),
        }
    }

    /// Client chains nobody has watched for [`IDLE_DROP`] let go.
    fn drop_idle(&mut self) {
        let mut k = 0;
        while k < self.chains.len() {
            let c = &self.chains[k];
            let idle = !c.configured
                && c.subscribers == 0
                && c.idle_since.is_some_and(|t| t.elapsed() >= IDLE_DROP);
            if idle {
                let c = self.chains.remove(k);
                log::info!("chain {}: no subscribers for {IDLE_DROP:?}; dropped", c.id);
                self.send(ChainEvent::Hold {
                    chain: c.number,
                    add: Vec::new(),
                    remove: c.held,
                });
            } else {
                k += 1;
            }
        }
    }

    fn publish(&self, snapshot: &crate::book::Snapshot) {
        let master = self.links.master.load_full();
        let today = self.links.clock.today();
        let mut board = Board::default();
        for c in &self.chains {
            let expiries: Vec<String> = ladder::expiries(&master, &c.ladder.underlying, today)
                .into_iter()
                .map(|d| d.to_string())
                .collect();
            board.chains.push(json!({
                "id": &*c.id,
                "underlying": c.ladder.underlying,
                "expiry": c.ladder.expiry.to_string(),
                "expiries": expiries,
                "strikes": c.strikes,
                "atm": c.window.atm(&c.ladder),
                "underlyingPrice": crate::fanout::rest::price_value(
                    snapshot.get(c.ladder.price_source).and_then(|s| s.ltp)
                ),
                "strikeStep": c.ladder.strike_step,
                "recentres": c.recentres,
                "subscribers": c.subscribers,
                "configured": c.configured,
            }));
            if let Some(body) = &c.latest {
                board.bodies.insert(c.id.to_string(), body.clone());
            }
        }
        self.board.store(Arc::new(board));
    }
}

/// The window's rows: ATM ± strikes, clamped at the ends of the ladder.
fn rows_of(c: &Chain) -> Rows {
    let n = c.ladder.strikes.len();
    let atm = c.window.atm(&c.ladder).unwrap_or_default();
    let centre = c
        .ladder
        .strikes
        .iter()
        .position(|s| s.strike == atm)
        .unwrap_or(n / 2);
    Rows {
        lo: centre.saturating_sub(c.strikes),
        hi: (centre + c.strikes).min(n.saturating_sub(1)),
    }
}

/// Black-76 on a future of the chain's expiry where one is listed (MCX
/// options are on their future, the price source), else Black–Scholes on
/// the spot.
fn pricing_of(master: &Master, ladder: &Ladder, rate: f64) -> Pricing {
    let close_minutes = match ladder.segment {
        Segment::McxComm => 23 * 60 + 30,
        _ => 15 * 60 + 30,
    };
    if ladder.segment == Segment::McxComm {
        return Pricing {
            model: Model::Black76,
            source: ladder.price_source,
            rate,
            close_minutes,
        };
    }
    let future = master
        .iter()
        .find(|i| {
            i.kind() == Kind::Future
                && i.underlying() == ladder.underlying
                && i.expiry() == Some(ladder.expiry)
                && i.key().segment == ladder.segment
        })
        .map(|i| i.key());
    match future {
        Some(source) => Pricing {
            model: Model::Black76,
            source,
            rate,
            close_minutes,
        },
        None => Pricing {
            model: Model::BlackScholes,
            source: ladder.price_source,
            rate,
            close_minutes,
        },
    }
}
