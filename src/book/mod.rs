//! The book: the latest state of every instrument, kept twice.
//!
//! A [`Book`] is a dense table (`Vec` indexed by an id handed out the first
//! time an instrument is seen; the `HashMap` from key to id allocates only
//! then). Applying a [`Tick`] gives an [`Update`] carrying the instrument's
//! whole new state, so the fanout can render any mode without a look-up.
//!
//! - **On the network thread** ([`LiveBook`]): ticks are applied as they
//!   are decoded and updates go straight to the fanout over an SPSC ring —
//!   one thread hop from socket to clients.
//! - **On the book thread** ([`BookThread`]): the same ticks, taken off a
//!   ring in batches, for what is not on the latency path: an immutable
//!   [`Snapshot`] published through `arc-swap` at most every
//!   `snapshot_interval` (REST, `/ws/prices`, snapshot-on-subscribe), the
//!   market-status times, and bars.
//!
//! The 20-level depth feed has rings of its own (see
//! [`crate::tick::DepthTick`]): side packets come in on one, and each
//! instrument's whole 20 + 20 rows ([`Depth20`]) go to the fanout on
//! another, so the main `Tick`/`Update` records stay as small as before.
//!
//! Bars: beside each state the book thread keeps the instrument's forming
//! 1-minute bar ([`crate::history::BarBuilder`]); finished bars go to the
//! history thread over a ring of their own (a full one drops and counts,
//! never waits), the forming bar is in the [`Snapshot`], and once a second
//! the book sweeps bars whose minute ended (see [`crate::history`]).
//!
//! Backpressure: a full ring is never a silent drop (see [`crate::spsc`]):
//! the network thread waits, so it stops reading its socket.

mod live;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use ringbuf::traits::{Consumer, Observer};
use ringbuf::{HeapCons, HeapProd};

pub use live::{LiveBook, Outlet};
pub use state::{FullExtras, InstrumentState, UpdateKind};

use crate::clock;
use crate::domain::{InstrumentKey, Segment};
use crate::history::{Bar, BarBuilder, BarEvent, BarSink, SWEEP_GRACE_SECS};
use crate::metrics::{Counter, SharedLatency};
use crate::sdnotify::Heartbeat;
use crate::stoppable::Stoppable;
use crate::tick::{DepthTick, Tick};
use crate::wire::depth::{DepthRow, Side, ROWS};
use crate::wire::feed::FeedData;

/// One instrument's latest 20-level book: the last bid packet's rows and
/// the last ask packet's rows (each side arrives in its own packet).
/// `Copy` and fixed-size (~680 bytes): forwarding it is a memcpy, never an
/// allocation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Depth20 {
    /// The instrument.
    pub key: InstrumentKey,
    /// Bid levels, best first as sent (zero rows until a bid packet came).
    pub bids: [DepthRow; ROWS],
    /// Ask levels, best first as sent.
    pub asks: [DepthRow; ROWS],
    /// Side packets applied to this instrument.
    pub seq: u64,
    /// The side of the last packet applied.
    pub side: Side,
    /// The header's sequence field of the last bid packet, as sent.
    pub bid_sequence: u32,
    /// The header's sequence field of the last ask packet, as sent.
    pub ask_sequence: u32,
    /// Receive time of the last packet ([`clock::now_ns`]).
    pub recv_ns: u64,
}

impl Depth20 {
    /// Empty rows for `key`.
    pub fn new(key: InstrumentKey) -> Depth20 {
        Depth20 {
            key,
            bids: [DepthRow::default(); ROWS],
            asks: [DepthRow::default(); ROWS],
            seq: 0,
            side: Side::Bid,
            bid_sequence: 0,
            ask_sequence: 0,
            recv_ns: 0,
        }
    }
}

/// One instrument changed: its whole new state, so the fanout can render
/// any mode from it without looking anything up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// What changed.
    pub kind: UpdateKind,
    /// The instrument's state after the change.
    pub state: InstrumentState,
}

/// An immutable copy of every instrument's state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// [`clock::now_ns`] when it was taken.
    pub taken_ns: u64,
    /// Every instrument seen so far, in first-seen order.
    pub instruments: Vec<InstrumentState>,
    /// Key → index in `instruments`; shared with the book and the other
    /// snapshots (cloned only when instruments were added since).
    ids: Arc<HashMap<InstrumentKey, usize>>,
    /// The latest 20-level book of every instrument the depth feed has
    /// sent (at most 5 × 50), for snapshot-on-subscribe.
    pub depth20: Vec<Depth20>,
    /// Each instrument's forming 1-minute bar, parallel to `instruments`
    /// (`t == 0`: none open).
    pub forming: Vec<Bar>,
}

impl Snapshot {
    /// A snapshot of these states (tests, tools).
    pub fn from_states(taken_ns: u64, instruments: Vec<InstrumentState>) -> Snapshot {
        let ids = instruments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, i))
            .collect();
        Snapshot {
            taken_ns,
            instruments,
            ids: Arc::new(ids),
            depth20: Vec::new(),
            forming: Vec::new(),
        }
    }

    /// The forming 1-minute bar of `key`, if one is open: O(1).
    pub fn forming(&self, key: InstrumentKey) -> Option<Bar> {
        let i = *self.ids.get(&key)?;
        self.forming.get(i).copied().filter(|b| b.t != 0)
    }

    /// The latest 20-level book of `key`, if the depth feed sent one: a scan
    /// of at most a few hundred entries.
    pub fn depth20(&self, key: InstrumentKey) -> Option<&Depth20> {
        self.depth20.iter().find(|d| d.key == key)
    }

    /// The state of one instrument, if it has been seen: O(1).
    pub fn get(&self, key: InstrumentKey) -> Option<&InstrumentState> {
        self.ids.get(&key).and_then(|&i| self.instruments.get(i))
    }
}

/// The latest snapshot, readable from any thread without locking.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// The table of instruments. Separate from the thread so tests and benches
/// drive it directly.
#[derive(Debug, Default)]
pub struct Book {
    /// Shared with snapshots; copied on write only when a new instrument
    /// arrives while a snapshot still holds it.
    ids: Arc<HashMap<InstrumentKey, usize>>,
    table: Vec<InstrumentState>,
    /// Forming bars, parallel to `table`.
    bars: Vec<BarBuilder>,
    /// Where finished bars go (none: bars are only in snapshots).
    sink: Option<BarSink>,
    /// The newest trade time seen, any instrument (the sweep's feed clock),
    /// at most [`MAX_LTT_AHEAD_SECS`] past the cached wall clock.
    ltt_high: u32,
    /// The cached wall clock (epoch seconds) plus [`MAX_LTT_AHEAD_SECS`];
    /// 0 until [`Book::set_clock`] (no cap).
    ltt_cap: u32,
    /// The start of the India date of `ltt_high`: a trade time before it
    /// is a stale snapshot and opens no bar.
    day_floor: u32,
    depth_ids: HashMap<InstrumentKey, usize>,
    depth: Vec<Depth20>,
    /// No bars at all (the network thread's book: the book thread keeps
    /// them).
    states_only: bool,
}

impl Book {
    /// An empty book.
    pub fn new() -> Self {
        Book::default()
    }

    /// An empty book of states and depth only: no bars, no feed clock.
    pub fn states_only() -> Self {
        Book {
            states_only: true,
            ..Book::default()
        }
    }

    /// An empty book that sends finished bars to the history thread.
    pub fn with_history(sink: BarSink) -> Self {
        Book {
            sink: Some(sink),
            ..Book::default()
        }
    }

    /// Applies one tick; the update to forward, if clients can see a change.
    pub fn apply(&mut self, tick: &Tick) -> Option<Update> {
        let id = match self.ids.get(&tick.key) {
            Some(&id) => id,
            None => {
                self.table.push(InstrumentState::new(tick.key));
                if !self.states_only {
                    self.bars.push(BarBuilder::default());
                }
                Arc::make_mut(&mut self.ids).insert(tick.key, self.table.len() - 1);
                self.table.len() - 1
            }
        };
        if !self.states_only {
            self.apply_bar(id, tick);
        }
        let state = &mut self.table[id];
        let kind = state.apply(tick)?;
        Some(Update {
            kind,
            state: *state,
        })
    }

    /// Feeds one tick to its instrument's forming bar and the feed clock.
    fn apply_bar(&mut self, id: usize, tick: &Tick) {
        let out = self.bars[id].apply_from(&tick.data, self.day_floor);
        if let Some(sink) = &mut self.sink {
            if let Some(bar) = out.finished {
                sink.push(BarEvent::Closed { key: tick.key, bar });
            }
            if let Some(t) = out.first {
                sink.push(BarEvent::Opened { key: tick.key, t });
            }
            if out.late {
                sink.stats().late.inc();
            }
        }
        self.raise_ltt_high(&tick.data);
    }

    /// Applies one depth side packet; the instrument's new 20 + 20 rows.
    /// Allocates only the first time an instrument is seen.
    pub fn apply_depth(&mut self, tick: &DepthTick) -> Depth20 {
        let key = tick.book.key;
        let id = match self.depth_ids.get(&key) {
            Some(&id) => id,
            None => {
                self.depth.push(Depth20::new(key));
                self.depth_ids.insert(key, self.depth.len() - 1);
                self.depth.len() - 1
            }
        };
        let d = &mut self.depth[id];
        match tick.book.side {
            Side::Bid => {
                d.bids = tick.book.rows;
                d.bid_sequence = tick.book.sequence;
            }
            Side::Ask => {
                d.asks = tick.book.rows;
                d.ask_sequence = tick.book.sequence;
            }
        }
        d.seq += 1;
        d.side = tick.book.side;
        d.recv_ns = tick.recv_ns;
        *d
    }

    /// Forgets `keys` (contracts that expired); how many it held. Rare, so
    /// it simply rebuilds the table and the index.
    pub fn remove(&mut self, keys: &[InstrumentKey]) -> usize {
        if self.depth.iter().any(|d| keys.contains(&d.key)) {
            self.depth.retain(|d| !keys.contains(&d.key));
            self.depth_ids = self
                .depth
                .iter()
                .enumerate()
                .map(|(i, d)| (d.key, i))
                .collect();
        }
        let before = self.table.len();
        let mut i = 0;
        let table = &self.table;
        self.bars.retain(|_| {
            i += 1;
            !keys.contains(&table[i - 1].key)
        });
        self.table.retain(|s| !keys.contains(&s.key));
        if self.table.len() != before {
            let ids = self
                .table
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key, i))
                .collect();
            self.ids = Arc::new(ids);
        }
        before - self.table.len()
    }

    /// A snapshot of every instrument.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            taken_ns: clock::now_ns(),
            instruments: self.table.clone(),
            ids: Arc::clone(&self.ids),
            depth20: self.depth.clone(),
            forming: self.bars.iter().map(BarBuilder::forming_or_empty).collect(),
        }
    }

    /// The newest trade time (LTT) seen on any instrument, capped at the
    /// cached wall clock plus [`MAX_LTT_AHEAD_SECS`].
    pub fn ltt_high(&self) -> u32 {
        self.ltt_high
    }

    /// Caches the wall clock (epoch seconds): trade times further than
    /// [`MAX_LTT_AHEAD_SECS`] ahead of it no longer move the feed clock
    /// past that. The book thread calls it once a second, not per tick.
    pub fn set_clock(&mut self, now_unix: u32) {
        self.ltt_cap = now_unix.saturating_add(MAX_LTT_AHEAD_SECS);
    }

    /// Raises the feed clock to a trade time, capped; a capped one is
    /// counted. Compares only, no clock read.
    #[inline]
    fn raise_ltt_high(&mut self, data: &FeedData) {
        let ltt = match *data {
            FeedData::Ticker(t) => t.ltt,
            FeedData::Quote(q) => q.ltt,
            FeedData::Full(f) => f.quote.ltt,
            _ => return,
        };
        if ltt <= self.ltt_high {
            return;
        }
        let ltt = if self.ltt_cap != 0 && ltt > self.ltt_cap {
            if let Some(sink) = &self.sink {
                sink.stats().future_ltt.inc();
            }
            self.ltt_cap
        } else {
            ltt
        };
        if ltt > self.ltt_high {
            self.ltt_high = ltt;
            if ltt.saturating_sub(self.day_floor) >= 86_400 {
                self.day_floor = crate::history::ist_day_start(ltt);
            }
        }
    }

    /// Closes every forming bar whose minute ended [`SWEEP_GRACE_SECS`]
    /// before `now` (epoch seconds on the feed clock) and sends it to the
    /// history thread; how many. A scan of the bar table, once a second.
    pub fn sweep(&mut self, now: u32) -> usize {
        let mut n = 0;
        for (b, s) in self.bars.iter_mut().zip(&self.table) {
            if let Some(bar) = b.sweep(now, SWEEP_GRACE_SECS) {
                n += 1;
                if let Some(sink) = &mut self.sink {
                    sink.push(BarEvent::Closed { key: s.key, bar });
                }
            }
        }
        if let Some(sink) = &self.sink {
            sink.stats().swept.add(n as u64);
            if n > 0 {
                sink.wake();
            }
        }
        n
    }
}

/// Book-thread settings.
#[derive(Clone, Debug)]
pub struct BookConfig {
    /// Shortest time between two snapshots.
    pub snapshot_interval: Duration,
    /// Pin the thread to this core, when set.
    pub core: Option<usize>,
    /// Beaten once per loop turn, for the service watchdog.
    pub heartbeat: Heartbeat,
}

impl Default for BookConfig {
    fn default() -> Self {
        BookConfig {
            snapshot_interval: Duration::from_millis(50),
            core: None,
            heartbeat: Heartbeat::new(),
        }
    }
}

/// The book thread's counters.
#[derive(Debug)]
pub struct BookStats {
    /// Ticks popped and applied.
    pub ticks: Counter,
    /// Updates the network thread's book pushed to the fanout ring.
    pub updates: Counter,
    /// Times an update found the fanout ring full (the network thread
    /// waited, or in the compact layout spilled and paused its reads).
    pub ring_full_waits: Counter,
    /// Snapshots published.
    pub snapshots: Counter,
    /// Unix seconds of the last market-status packet per segment code (0:
    /// none yet). DhanHQ's packet carries no open/closed flag, so this is
    /// what there is to reflect.
    market_status_at: [AtomicU64; 9],
}

impl Default for BookStats {
    fn default() -> Self {
        BookStats {
            ticks: Counter::new("book_ticks_total", "Ticks applied by the book"),
            updates: Counter::new("book_updates_total", "Updates forwarded to the fanout"),
            ring_full_waits: Counter::new(
                "book_ring_full_waits_total",
                "Times an update found the fanout's ring full",
            ),
            snapshots: Counter::new("book_snapshots_total", "Snapshots published"),
            market_status_at: Default::default(),
        }
    }
}

impl BookStats {
    /// When the last market-status packet for `segment` arrived (Unix s).
    pub fn market_status_at(&self, segment: Segment) -> Option<u64> {
        let v = self.market_status_at[segment as usize].load(Relaxed);
        (v != 0).then_some(v)
    }

    fn note_market_status(&self, segment: Segment) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.market_status_at[segment as usize].store(now, Relaxed);
    }

    /// Every counter, in `/metrics` order.
    pub fn counters(&self) -> [&Counter; 4] {
        [
            &self.ticks,
            &self.updates,
            &self.ring_full_waits,
            &self.snapshots,
        ]
    }
}

/// Orders for the book thread from outside the data path (rare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookCommand {
    /// Forget these instruments: contracts that expired, dropped by the
    /// daily maintenance once nothing subscribes them.
    Remove(Vec<InstrumentKey>),
}

/// Sends [`BookCommand`]s to both books and wakes the book thread to apply
/// them (the network thread's book takes them at the end of its next loop
/// turn).
#[derive(Debug, Clone)]
pub struct BookControl {
    tx: Sender<BookCommand>,
    live: Option<Sender<BookCommand>>,
    thread: Option<std::thread::Thread>,
}

impl BookControl {
    /// Queues `cmd`; applied on the book's next loop turn.
    pub fn send(&self, cmd: BookCommand) {
        if let Some(live) = &self.live {
            let _ = live.send(cmd.clone());
        }
        let _ = self.tx.send(cmd);
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

/// How far ahead of the wall clock a trade time may move the feed clock:
/// one packet with a wrong LTT hours ahead would otherwise close every bar
/// a second after it opened.
pub const MAX_LTT_AHEAD_SECS: u32 = 60;

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// How often the book sweeps bars whose minute ended.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Something to poke after a batch of updates (a fanout shard's waker).
pub type Notify = Box<dyn Fn() + Send>;

/// The running book thread: snapshots, market-status times and bars, off
/// the latency path (the network thread's [`LiveBook`] forwards updates).
#[derive(Debug)]
pub struct BookThread {
    worker: Stoppable,
    control: Sender<BookCommand>,
    /// The network thread's book's commands, once [`BookThread::live`]
    /// made it.
    live: Option<Sender<BookCommand>>,
    /// The latest snapshot.
    pub snapshot: SharedSnapshot,
    /// Counters.
    pub stats: Arc<BookStats>,
    /// Network receive → applied and forwarded (by the [`LiveBook`]).
    pub latency: SharedLatency,
}

impl BookThread {
    /// Starts the thread: ticks (and depth side packets) in, snapshots out,
    /// finished 1-minute bars to `history`. It wakes for a filling ring
    /// (see [`BookThread::should_wake`]), a [`BookCommand`], and otherwise
    /// once per snapshot interval.
    pub fn spawn(
        config: BookConfig,
        ticks: HeapCons<Tick>,
        depth: Option<HeapCons<DepthTick>>,
        history: Option<BarSink>,
    ) -> std::io::Result<BookThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let stats = Arc::new(BookStats::default());
        let core = config.core;
        let (control, commands) = crossbeam_channel::unbounded();
        let worker = Worker {
            book: history.map_or_else(Book::new, Book::with_history),
            commands,
            ticks,
            depth,
            stop: Arc::clone(&stop),
            snapshot: Arc::clone(&snapshot),
            stats: Arc::clone(&stats),
            config,
        };
        let worker = Stoppable::spawn("dhan-book", stop, move || {
            crate::affinity::pin("book", core);
            worker.run();
        })?;
        Ok(BookThread {
            worker,
            control,
            live: None,
            snapshot,
            stats,
            latency: SharedLatency::default(),
        })
    }

    /// Fill (in ring slots) at which the network thread wakes the book
    /// thread rather than letting it wake on its own timer …
    const WAKE_AT: usize = 4096;

    /// … or a quarter of a smaller ring: whether `ring` is that full.
    pub fn should_wake<T>(ring: &HeapProd<T>) -> bool {
        ring.occupied_len() >= Self::WAKE_AT.min(ring.capacity().get() / 4)
    }

    /// The network thread's book, forwarding every update to each fanout
    /// shard's [`Outlet`]; it shares this thread's
    /// counters and [`BookThread::latency`], and takes the commands sent
    /// through [`BookThread::control`] from now on.
    pub fn live(&mut self, outlets: Vec<Outlet>) -> LiveBook {
        let (tx, commands) = crossbeam_channel::unbounded();
        self.live = Some(tx);
        LiveBook {
            book: Book::states_only(),
            outlets,
            commands,
            stats: Arc::clone(&self.stats),
            latency: self.latency.recorder(),
            forwarded: 0,
            poke: false,
            spill: None,
        }
    }

    /// The thread's handle, for the network thread to unpark it.
    pub fn thread(&self) -> Option<std::thread::Thread> {
        self.worker.thread()
    }

    /// Where to send [`BookCommand`]s.
    pub fn control(&self) -> BookControl {
        BookControl {
            tx: self.control.clone(),
            live: self.live.clone(),
            thread: self.thread(),
        }
    }

    /// Stops and joins the thread (also on drop).
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

struct Worker {
    book: Book,
    commands: Receiver<BookCommand>,
    ticks: HeapCons<Tick>,
    depth: Option<HeapCons<DepthTick>>,
    stop: Arc<AtomicBool>,
    snapshot: SharedSnapshot,
    stats: Arc<BookStats>,
    config: BookConfig,
}

impl Worker {
    fn run(mut self) {
        let mut last_snapshot = Instant::now();
        let mut dirty = false;
        let mut last_sweep = Instant::now();
        // The feed clock: the newest LTT seen and when it was first seen.
        let mut feed_clock = (0u32, Instant::now());
        self.book.set_clock(unix_now());
        while !self.stop.load(Relaxed) {
            let mut applied = 0u64;
            while let Some(tick) = self.ticks.try_pop() {
                applied += 1;
                if matches!(tick.data, FeedData::MarketStatus) {
                    self.stats.note_market_status(tick.key.segment);
                }
                dirty |= self.book.apply(&tick).is_some();
            }
            if let Some(depth) = &mut self.depth {
                while let Some(tick) = depth.try_pop() {
                    applied += 1;
                    self.book.apply_depth(&tick);
                    dirty = true;
                }
            }
            if applied > 0 {
                self.stats.ticks.add(applied);
            }
            // One empty-channel check per turn, not per tick.
            while let Ok(BookCommand::Remove(keys)) = self.commands.try_recv() {
                let n = self.book.remove(&keys);
                log::info!("book: {n} expired instruments removed");
                dirty |= n > 0;
                // Published at once: REST must stop showing them now.
                last_snapshot = Instant::now() - self.config.snapshot_interval;
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                self.book.set_clock(unix_now());
                let high = self.book.ltt_high();
                if high != feed_clock.0 {
                    feed_clock = (high, now);
                }
                let elapsed = now.duration_since(feed_clock.1).as_secs() as u32;
                if high > 0 && self.book.sweep(high.saturating_add(elapsed)) > 0 {
                    dirty = true;
                }
            }
            if dirty && now.duration_since(last_snapshot) >= self.config.snapshot_interval {
                self.snapshot.store(Arc::new(self.book.snapshot()));
                self.stats.snapshots.inc();
                last_snapshot = now;
                dirty = false;
            }
            self.config.heartbeat.beat();
            if applied == 0 {
                // The network thread wakes us only when a ring fills (see
                // `should_wake`); the timeout bounds snapshot staleness and
                // shutdown latency.
                std::thread::park_timeout(self.config.snapshot_interval);
            }
        }
        self.snapshot.store(Arc::new(self.book.snapshot()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::wire::feed::{FeedData, PrevClose, Ticker};
    use ringbuf::traits::{Producer, Split};
    use ringbuf::HeapRb;

    fn tick(id: u32, data: FeedData) -> Tick {
        Tick {
            key: InstrumentKey::new(Segment::NseEq, id),
            data,
            recv_ns: clock::now_ns(),
        }
    }

    #[test]
    fn book_tracks_each_instrument_separately() {
        let mut book = Book::new();
        let u = book
            .apply(&tick(1, FeedData::Ticker(Ticker { ltp: 10.0, ltt: 1 })))
            .unwrap();
        assert_eq!(
            (u.kind, u.state.seq, u.state.ltp),
            (UpdateKind::Ticker, 1, Some(10.0))
        );
        book.apply(&tick(
            2,
            FeedData::PrevClose(PrevClose {
                prev_close: 5.0,
                prev_oi: 0,
            }),
        ));
        let u = book
            .apply(&tick(1, FeedData::Ticker(Ticker { ltp: 10.5, ltt: 2 })))
            .unwrap();
        assert_eq!(u.state.seq, 2);
        assert!(book.apply(&tick(3, FeedData::MarketStatus)).is_none());
        let snap = book.snapshot();
        assert_eq!(snap.instruments.len(), 3);
        assert_eq!(
            snap.get(InstrumentKey::new(Segment::NseEq, 1)).unwrap().ltp,
            Some(10.5)
        );
        assert!(snap.get(InstrumentKey::new(Segment::NseEq, 9)).is_none());
        // A later instrument does not leak into the earlier snapshot.
        book.apply(&tick(9, FeedData::Ticker(Ticker { ltp: 1.0, ltt: 1 })));
        assert!(snap.get(InstrumentKey::new(Segment::NseEq, 9)).is_none());
        assert!(book
            .snapshot()
            .get(InstrumentKey::new(Segment::NseEq, 9))
            .is_some());
        assert_eq!(
            snap.get(InstrumentKey::new(Segment::NseEq, 2))
                .unwrap()
                .prev_close
                .unwrap()
                .prev_close,
            5.0
        );
    }

    #[test]
    fn bars_go_to_the_history_ring_and_the_forming_one_to_snapshots() {
        use crate::history::{BarEvent, HistoryStats};
        use crate::wire::feed::Quote;
        const T0: u32 = 1_796_269_500;
        let (tx, mut rx) = HeapRb::<BarEvent>::new(16).split();
        let stats = Arc::new(HistoryStats::default());
        let mut book = Book::with_history(BarSink::new(tx, Arc::clone(&stats)));
        let q = |ltp: f32, ltt: u32, volume: u32| {
            tick(
                5,
                FeedData::Quote(Quote {
                    ltp,
                    ltt,
                    volume,
                    ..Quote::default()
                }),
            )
        };
        let key = InstrumentKey::new(Segment::NseEq, 5);
        book.apply(&q(10.0, T0 + 1, 100));
        book.apply(&q(11.0, T0 + 30, 120));
        assert_eq!(
            rx.try_pop(),
            Some(BarEvent::Opened { key, t: T0 }),
            "the first bar's note"
        );
        let f = book.snapshot().forming(key).unwrap();
        assert_eq!((f.t, f.o, f.c, f.v), (T0, 10.0, 11.0, 20));
        book.apply(&q(12.0, T0 + 61, 150));
        match rx.try_pop() {
            Some(BarEvent::Closed { key: k, bar }) => assert_eq!((k, bar), (key, f)),
            other => panic!("{other:?}"),
        }
        book.apply(&q(1.0, T0 + 2, 150));
        assert_eq!(stats.late.get(), 1);
        assert_eq!(book.ltt_high(), T0 + 61);
        // Nobody ticks after 09:16: the sweep closes it after the grace.
        assert_eq!(book.sweep(T0 + 120 + 2), 0);
        assert_eq!(book.sweep(T0 + 120 + 3), 1);
        match rx.try_pop() {
            Some(BarEvent::Closed { bar, .. }) => {
                assert_eq!((bar.t, bar.c, bar.v), (T0 + 60, 12.0, 30))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(book.snapshot().forming(key), None);
        assert_eq!(stats.swept.get(), 1);
        // Removing the instrument removes its bar too (tables stay parallel).
        book.apply(&q(13.0, T0 + 125, 160));
        book.apply(&tick(
            6,
            FeedData::Ticker(Ticker {
                ltp: 2.0,
                ltt: T0 + 126,
            }),
        ));
        book.remove(&[key]);
        let snap = book.snapshot();
        assert_eq!(snap.forming.len(), 1);
        assert_eq!(
            snap.forming(InstrumentKey::new(Segment::NseEq, 6))
                .unwrap()
                .c,
            2.0
        );
    }

    fn quote(id: u32, ltp: f32, ltt: u32) -> Tick {
        tick(
            id,
            FeedData::Quote(crate::wire::feed::Quote {
                ltp,
                ltt,
                volume: 1,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn a_far_future_trade_time_does_not_close_later_bars_early() {
        use crate::history::{BarEvent, HistoryStats};
        const T0: u32 = 1_796_269_500;
        let (tx, mut rx) = HeapRb::<BarEvent>::new(16).split();
        let stats = Arc::new(HistoryStats::default());
        let mut book = Book::with_history(BarSink::new(tx, Arc::clone(&stats)));
        book.set_clock(T0);
        book.apply(&quote(1, 10.0, T0 + 1));
        // One packet five hours ahead.
        book.apply(&quote(2, 20.0, T0 + 5 * 3600));
        assert_eq!(book.ltt_high(), T0 + MAX_LTT_AHEAD_SECS, "capped");
        assert_eq!(stats.future_ltt.get(), 1);
        // The book thread sweeps at the feed clock: nothing closes yet.
        assert_eq!(book.sweep(book.ltt_high()), 0);
        book.apply(&quote(1, 11.0, T0 + 30));
        let key = InstrumentKey::new(Segment::NseEq, 1);
        let f = book.snapshot().forming(key).unwrap();
        assert_eq!((f.t, f.o, f.c), (T0, 10.0, 11.0));
        assert_eq!(stats.late.get(), 0);
        while let Some(e) = rx.try_pop() {
            assert!(matches!(e, BarEvent::Opened { .. }), "{e:?}");
        }
    }

    #[test]
    fn a_trade_time_of_an_earlier_day_than_the_newest_opens_no_bar() {
        use crate::history::{BarEvent, HistoryStats};
        const T0: u32 = 1_796_269_500;
        let (tx, mut rx) = HeapRb::<BarEvent>::new(16).split();
        let stats = Arc::new(HistoryStats::default());
        let mut book = Book::with_history(BarSink::new(tx, Arc::clone(&stats)));
        book.apply(&quote(1, 10.0, T0 + 1));
        let key = |id| InstrumentKey::new(Segment::NseEq, id);
        assert_eq!(rx.try_pop(), Some(BarEvent::Opened { key: key(1), t: T0 }));
        // Subscribed now, not traded today: its quote carries yesterday's
        // last trade. A price update, but no bar and no note.
        assert!(book.apply(&quote(2, 5.0, T0 - 86_400 + 6 * 3600)).is_some());
        assert_eq!(rx.try_pop(), None);
        assert_eq!(book.snapshot().forming(key(2)), None);
        assert_eq!(stats.late.get(), 0, "a snapshot, not a late trade");
        // Its first trade today opens its first bar.
        book.apply(&quote(2, 5.5, T0 + 70));
        assert_eq!(
            rx.try_pop(),
            Some(BarEvent::Opened {
                key: key(2),
                t: T0 + 60
            })
        );
    }

    #[test]
    fn depth_keeps_the_last_rows_of_each_side() {
        use crate::wire::depth::DepthBook;
        let mut book = Book::new();
        let key = InstrumentKey::new(Segment::NseEq, 2885);
        let row = |p: f64| DepthRow {
            price: p,
            quantity: 3,
            orders: 1,
        };
        let side = |side, p| DepthTick {
            book: DepthBook {
                key,
                side,
                sequence: 9,
                rows: [row(p); ROWS],
            },
            recv_ns: 1,
        };
        book.apply_depth(&side(Side::Bid, 100.0));
        let d = book.apply_depth(&side(Side::Ask, 101.0));
        assert_eq!(
            (d.bids[19].price, d.asks[0].price, d.seq),
            (100.0, 101.0, 2)
        );
        let d = book.apply_depth(&side(Side::Bid, 99.5));
        assert_eq!((d.bids[0].price, d.asks[0].price), (99.5, 101.0));
        assert_eq!(book.snapshot().depth20(key).unwrap().bids[0].price, 99.5);
        assert_eq!(book.remove(&[key]), 0, "depth only: no main-feed state");
        assert!(book.snapshot().depth20(key).is_none());
    }

    #[test]
    fn removed_instruments_leave_the_book_and_the_rest_keep_their_state() {
        let mut book = Book::new();
        for id in 1..=3 {
            book.apply(&tick(
                id,
                FeedData::Ticker(Ticker {
                    ltp: id as f32,
                    ltt: 1,
                }),
            ));
        }
        let kept = book.snapshot();
        assert_eq!(book.remove(&[InstrumentKey::new(Segment::NseEq, 2)]), 1);
        assert_eq!(book.remove(&[InstrumentKey::new(Segment::NseEq, 2)]), 0);
        let snap = book.snapshot();
        assert_eq!(snap.instruments.len(), 2);
        assert!(snap.get(InstrumentKey::new(Segment::NseEq, 2)).is_none());
        assert_eq!(
            snap.get(InstrumentKey::new(Segment::NseEq, 3)).unwrap().ltp,
            Some(3.0)
        );
        assert!(
            kept.get(InstrumentKey::new(Segment::NseEq, 2)).is_some(),
            "old snapshots unchanged"
        );
        let u = book
            .apply(&tick(3, FeedData::Ticker(Ticker { ltp: 3.5, ltt: 2 })))
            .unwrap();
        assert_eq!((u.state.seq, u.state.ltp), (2, Some(3.5)));
    }

    #[test]
    fn the_live_book_forwards_in_order_waits_on_a_full_ring_and_the_thread_follows() {
        use std::sync::atomic::AtomicUsize;
        let (mut tick_tx, tick_rx) = HeapRb::<Tick>::new(64).split();
        let (update_tx, mut update_rx) = HeapRb::<Update>::new(4).split();
        let (depth_tx, _depth_rx) = HeapRb::<Depth20>::new(4).split();
        let mut book = BookThread::spawn(
            BookConfig {
                snapshot_interval: Duration::from_millis(5),
                ..BookConfig::default()
            },
            tick_rx,
            None,
            None,
        )
        .unwrap();
        let pokes = Arc::new(AtomicUsize::new(0));
        let mut live = {
            let pokes = Arc::clone(&pokes);
            book.live(vec![Outlet {
                updates: update_tx,
                depth: depth_tx,
                notify: Box::new(move || {
                    pokes.fetch_add(1, Relaxed);
                }),
            }])
        };
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let end = Instant::now() + Duration::from_secs(5);
            while seen.len() < 20 && Instant::now() < end {
                match update_rx.try_pop() {
                    Some(u) => seen.push(u.state.ltt),
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            seen
        });
        // More updates than the fanout's ring holds: the live book must
        // wait (poking the fanout), not drop.
        let stop = AtomicBool::new(false);
        for i in 0..20u32 {
            let t = tick(
                7,
                FeedData::Ticker(Ticker {
                    ltp: i as f32,
                    ltt: i,
                }),
            );
            live.apply(&t, &stop);
            tick_tx.try_push(t).unwrap();
        }
        live.end_turn();
        assert_eq!(reader.join().unwrap(), (0..20).collect::<Vec<_>>());
        assert!(book.stats.ring_full_waits.get() > 0);
        assert!(pokes.load(Relaxed) > 0);
        assert_eq!(book.stats.updates.get(), 20);
        // Nobody unparks the book thread: it follows on its own timer.
        let last_ltt = || book.snapshot.load().instruments.first().map(|s| s.ltt);
        let end = Instant::now() + Duration::from_secs(5);
        while last_ltt() != Some(19) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(last_ltt(), Some(19));
        assert_eq!(book.stats.ticks.get(), 20);
        live.finish();
        assert_eq!(book.latency.percentiles().count, 20);
        // Removal reaches both books.
        book.control()
            .send(BookCommand::Remove(vec![InstrumentKey::new(
                Segment::NseEq,
                7,
            )]));
        live.end_turn();
        assert!(live.book.snapshot().instruments.is_empty());
        let end = Instant::now() + Duration::from_secs(5);
        while !book.snapshot.load().instruments.is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            book.snapshot.load().instruments.is_empty(),
            "removed and published"
        );
        book.shutdown();
    }

    #[test]
    fn a_states_only_book_gives_the_same_updates_without_bars() {
        let mut full = Book::new();
        let mut lean = Book::states_only();
        for i in 0..50u32 {
            let t = tick(
                i % 3,
                FeedData::Ticker(Ticker {
                    ltp: i as f32,
                    ltt: 1_700_000_000 + i,
                }),
            );
            assert_eq!(full.apply(&t), lean.apply(&t));
        }
        assert!(lean.bars.is_empty() && lean.ltt_high() == 0);
        assert_eq!(full.bars.len(), 3);
    }
}
