//! The `dhan-history` thread: owns the per-instrument series, applies what
//! the book sends, backfills new instruments from today's recording, turns
//! the day, and publishes the [`Board`].
//!
//! **Day.** The store's day is the India date of the newest bar (the feed's
//! clock): a batch first turns the day to its latest date, then creates
//! series for the instruments it brings. The wall clock never clears bars,
//! so a replayed earlier day is kept whole. Events of an earlier date than
//! the store's are stale: a closed bar is counted late, a first-open note
//! creates nothing.
//!
//! **Backfill.** Reading a day's recording (gigabytes) on this thread would
//! stop it draining the book's ring, which then drops bars for good. So a
//! pass runs on a short-lived `dhan-backfill` thread and sends its bars
//! back over a channel; this thread looks for them every turn and merges
//! them (recorded bars strictly before each instrument's first live minute,
//! then the live ones, in a new series). At most one pass runs; instruments
//! arriving meanwhile wait and go together in the next pass. A pass reads
//! only the recording of the India date the store started on (a later date
//! has nothing recorded before the start; an earlier one is a replay or a
//! stale snapshot) and stops at the first frame received at or after the
//! start: the recorder's frames from this process are already live.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::store::{initial_capacity, Board, Series, SharedBoard};
use super::{backfill, ist_day, Bar, BarEvent};
use crate::domain::InstrumentKey;
use crate::metrics::Counter;
use crate::stoppable::Stoppable;

/// Events the ring between the book and the history thread holds (40 B
/// each: 1.3 MB). A minute's roll over 25,000 instruments fits.
pub const RING: usize = 32_768;

/// The history counters.
#[derive(Debug)]
pub struct HistoryStats {
    /// Finished bars stored.
    pub bars: Counter,
    /// Bars (or first-open notes) dropped because the ring was full.
    pub dropped: Counter,
    /// Ticks older than the forming minute, ignored.
    pub late: Counter,
    /// Bars closed by the sweep (no tick of a later minute came).
    pub swept: Counter,
    /// Bars recovered from today's recording.
    pub backfilled: Counter,
    /// Boards published.
    pub publications: Counter,
    /// Ticks whose trade time was more than a minute ahead of the wall
    /// clock (the feed clock was capped).
    pub future_ltt: Counter,
}

impl Default for HistoryStats {
    fn default() -> Self {
        HistoryStats {
            bars: Counter::new("history_bars_total", "Finished 1-minute bars stored"),
            dropped: Counter::new(
                "history_bars_dropped_total",
                "Bars dropped because the book-to-history ring was full",
            ),
            late: Counter::new(
                "history_late_ticks_total",
                "Ticks older than the forming bar's minute, ignored for bars",
            ),
            swept: Counter::new(
                "history_bars_swept_total",
                "Bars closed by the sweep after their minute ended",
            ),
            backfilled: Counter::new(
                "history_bars_backfilled_total",
                "Bars recovered from today's recording",
            ),
            publications: Counter::new("history_publications_total", "History boards published"),
            future_ltt: Counter::new(
                "history_future_ltt_ticks_total",
                "Ticks with a trade time over 60 s ahead of the wall clock (feed clock capped)",
            ),
        }
    }
}

impl HistoryStats {
    /// Every counter, in `/metrics` order.
    pub fn counters(&self) -> [&Counter; 7] {
        [
            &self.bars,
            &self.dropped,
            &self.late,
            &self.swept,
            &self.backfilled,
            &self.publications,
            &self.future_ltt,
        ]
    }
}

/// The book's end of the ring: never blocks.
pub struct BarSink {
    ring: HeapProd<BarEvent>,
    stats: Arc<HistoryStats>,
    thread: Option<std::thread::Thread>,
}

impl std::fmt::Debug for BarSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BarSink")
    }
}

impl BarSink {
    /// A sink over `ring` (tests drive the consumer themselves).
    pub fn new(ring: HeapProd<BarEvent>, stats: Arc<HistoryStats>) -> BarSink {
        BarSink {
            ring,
            stats,
            thread: None,
        }
    }

    /// Pushes `event`; a full ring drops it and counts it.
    #[inline]
    pub fn push(&mut self, event: BarEvent) {
        if self.ring.try_push(event).is_err() {
            self.stats.dropped.inc();
        }
    }

    /// The counters (the book counts late ticks and sweeps here).
    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Wakes the history thread (the book calls it once per sweep, not per
    /// bar: the thread also wakes on its own every 50 ms).
    pub fn wake(&self) {
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

/// History-thread settings.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// Today's recordings: backfill new instruments' earlier bars from
    /// there (`None`: no backfill).
    pub backfill_dir: Option<PathBuf>,
    /// Shortest time between two boards.
    pub publish_interval: Duration,
    /// How often the thread looks at the ring.
    pub poll: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            backfill_dir: None,
            publish_interval: Duration::from_millis(500),
            poll: Duration::from_millis(50),
        }
    }
}

/// What readers need: the board and the counters.
#[derive(Clone, Debug, Default)]
pub struct HistoryHandle {
    /// The latest board.
    pub board: SharedBoard,
    /// Counters.
    pub stats: Arc<HistoryStats>,
}

/// The history thread's state. Separate from the thread so tests drive it.
#[derive(Debug)]
pub struct Store {
    day: Option<i64>,
    series: HashMap<InstrumentKey, Arc<Series>>,
    /// The board needs republishing.
    dirty: bool,
    backfill_dir: Option<PathBuf>,
    /// Opens a day's recording ([`backfill::recorded_frames`]; tests swap it).
    frames: FrameSource,
    /// When the store was made (Unix ns): a backfill reads only the
    /// recording of that India date, and only the frames recorded before it.
    started_unix_ns: u64,
    /// Instruments waiting for the next backfill pass, with their first
    /// live minute.
    waiting: Vec<(InstrumentKey, u32)>,
    /// The backfill pass running, if any (at most one).
    running: Option<Pass>,
    /// Tells a running pass to stop (the store is gone).
    cancel: Arc<AtomicBool>,
    stats: Arc<HistoryStats>,
}

/// One backfill pass on its own thread: the day it reads, the instruments
/// with their first live minutes, and where its bars come back.
#[derive(Debug)]
struct Pass {
    day: i64,
    firsts: Vec<(InstrumentKey, u32)>,
    result: mpsc::Receiver<HashMap<InstrumentKey, Vec<Bar>>>,
}

/// Opens the recording of day `YYYYMMDD` in a directory.
pub type FrameSource =
    fn(&std::path::Path, u32) -> Box<dyn Iterator<Item = crate::record::RecordedFrame>>;

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Store {
    /// An empty store, started now.
    pub fn new(backfill_dir: Option<PathBuf>, stats: Arc<HistoryStats>) -> Store {
        Store {
            day: None,
            series: HashMap::new(),
            dirty: false,
            backfill_dir,
            frames: backfill::recorded_frames,
            started_unix_ns: unix_now_ns(),
            waiting: Vec::new(),
            running: None,
            cancel: Arc::new(AtomicBool::new(false)),
            stats,
        }
    }

    /// The same, reading recordings through `frames` (tests).
    pub fn with_frames(mut self, frames: FrameSource) -> Store {
        self.frames = frames;
        self
    }

    /// The same, as if started at `unix_ns` (tests: which day's recording
    /// a backfill reads, and up to which frame).
    pub fn started_at(mut self, unix_ns: u64) -> Store {
        self.started_unix_ns = unix_ns;
        self
    }

    /// The India date the store started on.
    fn start_day(&self) -> i64 {
        ist_day((self.started_unix_ns / 1_000_000_000) as u32)
    }

    /// Applies one batch of events. The day turns first, to the latest
    /// India date in the batch; events of an earlier date than the store's
    /// are then stale (a closed bar is counted late, a first-open note of an
    /// instrument creates nothing). Instruments the batch introduces get a
    /// series at once and are queued for the next backfill pass.
    pub fn apply(&mut self, events: &[BarEvent]) {
        let time = |e: &BarEvent| match *e {
            BarEvent::Opened { key, t } => (key, t),
            BarEvent::Closed { key, bar } => (key, bar.t),
        };
        if let Some(day) = events.iter().map(|e| ist_day(time(e).1)).max() {
            self.turn_day(day);
        }
        let mut new: HashMap<InstrumentKey, u32> = HashMap::new();
        for e in events {
            let (key, t) = time(e);
            if Some(ist_day(t)) == self.day && !self.series.contains_key(&key) {
                let first = new.entry(key).or_insert(t);
                *first = (*first).min(t);
            }
        }
        if !new.is_empty() {
            self.add(new);
        }
        for e in events {
            if let BarEvent::Closed { key, bar } = *e {
                self.store(key, bar);
            }
        }
        self.poll_backfill();
    }

    /// Starts a new day when `day` is later than the one held: the first
    /// bar of a new India date clears every list. Only bars move the day
    /// (never the wall clock), so a replayed earlier date is kept whole.
    fn turn_day(&mut self, day: i64) {
        if self.day.map_or(true, |d| day > d) {
            if !self.series.is_empty() {
                log::info!("history: a new India date; the previous day's bars dropped");
            }
            self.series.clear();
            self.waiting.clear();
            self.day = Some(day);
            self.dirty = true;
        }
    }

    /// Series for instruments first seen at these minutes; queued for a
    /// backfill when there is a recording to read: the store's day is the
    /// India date it started on (a later date has no frames recorded before
    /// the start; an earlier one is a replay or a stale snapshot).
    fn add(&mut self, new: HashMap<InstrumentKey, u32>) {
        let backfill = self.backfill_dir.is_some() && self.day == Some(self.start_day());
        for (key, first) in new {
            let series = Series::with_capacity(initial_capacity(key.segment, first));
            self.series.insert(key, Arc::new(series));
            if backfill {
                self.waiting.push((key, first));
            }
        }
        self.dirty = true;
    }

    /// Merges a finished backfill pass, if one finished, and starts the
    /// next one for the instruments that arrived meanwhile. Never blocks.
    pub fn poll_backfill(&mut self) {
        if let Some(pass) = &self.running {
            match pass.result.try_recv() {
                Ok(recorded) => {
                    let pass = self.running.take().expect("a pass is running");
                    self.merge(pass, recorded);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    log::warn!("history: a backfill pass ended without bars");
                    self.running = None;
                }
            }
        }
        if self.running.is_none() && !self.waiting.is_empty() {
            self.start_pass();
        }
    }

    /// No backfill running or waiting.
    pub fn backfill_idle(&self) -> bool {
        self.running.is_none() && self.waiting.is_empty()
    }

    fn start_pass(&mut self) {
        let firsts = std::mem::take(&mut self.waiting);
        let (Some(dir), Some(day)) = (self.backfill_dir.clone(), self.day) else {
            return;
        };
        let keys: HashSet<InstrumentKey> = firsts.iter().map(|(k, _)| *k).collect();
        let (tx, result) = mpsc::channel();
        let frames = self.frames;
        let until = self.started_unix_ns;
        let cancel = Arc::clone(&self.cancel);
        let spawned = std::thread::Builder::new()
            .name("dhan-backfill".into())
            .spawn(move || {
                crate::affinity::background("backfill");
                // Frames are in recording order: the first one recorded at
                // or after the start is this process's own, already live.
                let frames = frames(&dir, backfill::yyyymmdd(day))
                    .take_while(|f| f.recv_unix_ns < until && !cancel.load(Relaxed));
                let _ = tx.send(backfill::bars_from_frames(frames, &keys));
            });
        match spawned {
            Ok(_) => {
                self.running = Some(Pass {
                    day,
                    firsts,
                    result,
                })
            }
            Err(e) => log::warn!("history: no backfill thread: {e}"),
        }
    }

    /// Puts a pass's recorded bars before each instrument's live ones:
    /// those strictly before its first live minute, of the store's day. A
    /// pass of a day that has since turned is dropped.
    fn merge(&mut self, pass: Pass, mut recorded: HashMap<InstrumentKey, Vec<Bar>>) {
        if Some(pass.day) != self.day {
            return;
        }
        let mut n = 0;
        for (key, first) in pass.firsts {
            let (Some(mut bars), Some(live)) = (recorded.remove(&key), self.series.get(&key))
            else {
                continue;
            };
            let live = live.bars();
            let before = live.first().map_or(first, |b| b.t.min(first));
            bars.retain(|b| b.t < before && ist_day(b.t) == pass.day);
            let Some(from) = bars.first() else {
                continue;
            };
            let capacity = initial_capacity(key.segment, from.t).max(bars.len() + live.len() + 16);
            let merged = Series::with_capacity(capacity);
            for b in bars.iter().chain(&live) {
                merged.push(*b);
            }
            n += bars.len();
            self.series.insert(key, Arc::new(merged));
        }
        self.stats.backfilled.add(n as u64);
        self.dirty = true;
    }

    fn store(&mut self, key: InstrumentKey, bar: Bar) {
        if Some(ist_day(bar.t)) != self.day {
            self.stats.late.inc();
            return;
        }
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        if series.last().is_some_and(|l| l.t >= bar.t) {
            // Only possible for a bar the backfill already had.
            return;
        }
        if !series.push(bar) {
            let grown = series.grown();
            grown.push(bar);
            *series = Arc::new(grown);
            self.dirty = true;
        }
        self.stats.bars.inc();
    }

    /// Whether the board changed since the last [`Store::board`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The board to publish.
    pub fn board(&mut self) -> Board {
        self.dirty = false;
        Board::new(self.day, self.series.clone())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.cancel.store(true, Relaxed);
    }
}

/// The running history thread.
#[derive(Debug)]
pub struct HistoryThread {
    worker: Stoppable,
    /// What readers need.
    pub handle: HistoryHandle,
}

impl HistoryThread {
    /// Starts the thread; the sink goes to the book.
    pub fn spawn(config: HistoryConfig) -> std::io::Result<(HistoryThread, BarSink)> {
        let (tx, rx) = HeapRb::<BarEvent>::new(RING).split();
        let handle = HistoryHandle::default();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            store: Store::new(config.backfill_dir.clone(), Arc::clone(&handle.stats)),
            ring: rx,
            board: Arc::clone(&handle.board),
            stats: Arc::clone(&handle.stats),
            stop: Arc::clone(&stop),
            config,
        };
        let worker = Stoppable::spawn("dhan-history", stop, move || {
            crate::affinity::background("history");
            worker.run();
        })?;
        let sink = BarSink {
            ring: tx,
            stats: Arc::clone(&handle.stats),
            thread: worker.thread(),
        };
        Ok((HistoryThread { worker, handle }, sink))
    }

    /// Stops and joins the thread (also on drop).
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

struct Worker {
    store: Store,
    ring: HeapCons<BarEvent>,
    board: SharedBoard,
    stats: Arc<HistoryStats>,
    stop: Arc<AtomicBool>,
    config: HistoryConfig,
}

impl Worker {
    fn run(mut self) {
        let mut events = Vec::with_capacity(1024);
        let mut last_publish = Instant::now() - self.config.publish_interval;
        while !self.stop.load(Relaxed) {
            events.clear();
            events.extend(self.ring.pop_iter());
            if !events.is_empty() {
                self.store.apply(&events);
            }
            self.store.poll_backfill();
            if self.store.dirty() && last_publish.elapsed() >= self.config.publish_interval {
                publish(&self.board, &mut self.store, &self.stats);
                last_publish = Instant::now();
            }
            std::thread::park_timeout(self.config.poll);
        }
    }
}

fn publish(board: &ArcSwap<Board>, store: &mut Store, stats: &HistoryStats) {
    board.store(Arc::new(store.board()));
    stats.publications.inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;
    use crate::record::RecordedFrame;

    const T0: u32 = 1_796_269_500;

    fn key(id: u32) -> InstrumentKey {
        InstrumentKey::new(Segment::NseEq, id)
    }

    fn bar(t: u32, c: f32) -> Bar {
        Bar {
            t,
            o: c,
            h: c,
            l: c,
            c,
            ..Bar::default()
        }
    }

    #[test]
    fn store_appends_in_order_grows_and_turns_the_day() {
        let stats = Arc::new(HistoryStats::default());
        let mut s = Store::new(None, Arc::clone(&stats));
        s.apply(&[
            BarEvent::Opened { key: key(1), t: T0 },
            BarEvent::Closed {
                key: key(1),
                bar: bar(T0, 1.0),
            },
        ]);
        let b = s.board();
        assert!(!s.dirty());
        assert_eq!(b.get(key(1)).unwrap().bars(), vec![bar(T0, 1.0)]);
        // A bar of an unknown instrument (its note was dropped) still counts.
        s.apply(&[BarEvent::Closed {
            key: key(2),
            bar: bar(T0 + 60, 2.0),
        }]);
        assert!(s.dirty());
        // Late in the session: a small series that grows when full.
        let late = T0 + 370 * 60;
        s.apply(&[BarEvent::Opened {
            key: key(3),
            t: late,
        }]);
        for i in 0..40 {
            s.apply(&[BarEvent::Closed {
                key: key(3),
                bar: bar(late + i * 60, i as f32),
            }]);
        }
        let b = s.board();
        assert_eq!(b.get(key(3)).unwrap().len(), 40);
        assert_eq!(stats.bars.get(), 42);
        // A repeated minute is not stored twice.
        s.apply(&[BarEvent::Closed {
            key: key(1),
            bar: bar(T0, 9.0),
        }]);
        assert_eq!(s.board().get(key(1)).unwrap().len(), 1);
        // The first bar of the next India date drops it all.
        s.apply(&[BarEvent::Closed {
            key: key(4),
            bar: bar(T0 + 86_400, 4.0),
        }]);
        assert!(s.dirty());
        let b = s.board();
        assert_eq!(b.len(), 1);
        assert_eq!(b.get(key(4)).unwrap().len(), 1);
        // Yesterday's bar now: late, not stored, no series made.
        s.apply(&[BarEvent::Closed {
            key: key(1),
            bar: bar(T0 + 120, 1.0),
        }]);
        assert!(s.board().get(key(1)).is_none());
        assert_eq!(stats.late.get(), 1);
    }

    /// Runs backfill passes until none is running or waiting.
    fn settle(s: &mut Store) {
        let end = Instant::now() + Duration::from_secs(5);
        while !s.backfill_idle() {
            assert!(Instant::now() < end, "backfill did not finish");
            s.poll_backfill();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A store started at 12:00 India time on T0's date.
    fn started_today(s: Store) -> Store {
        s.started_at(u64::from(T0 + 165 * 60) * 1_000_000_000)
    }

    /// Today's recording as the test writes it: key 1 quoted from 09:15 to
    /// 09:19 (one tick a minute), key 2 never.
    fn recording(_dir: &std::path::Path, day: u32) -> Box<dyn Iterator<Item = RecordedFrame>> {
        use crate::wire::feed::{FeedData, FeedMessage, Quote};
        assert_eq!(day, 20261203);
        let frames: Vec<RecordedFrame> = (0..5u32)
            .map(|i| {
                let mut payload = Vec::new();
                FeedMessage::Data(
                    key(1),
                    FeedData::Quote(Quote {
                        ltp: 100.0 + i as f32,
                        ltt: T0 + i * 60 + 5,
                        volume: 1_000 + i * 10,
                        ..Quote::default()
                    }),
                )
                .encode(&mut payload);
                RecordedFrame {
                    // Received a second after the trade.
                    recv_unix_ns: u64::from(T0 + i * 60 + 6) * 1_000_000_000,
                    conn: 0,
                    feed: crate::record::FeedKind::Main,
                    payload,
                }
            })
            .collect();
        Box::new(frames.into_iter())
    }

    #[test]
    fn new_instruments_are_backfilled_before_their_first_live_minute() {
        let stats = Arc::new(HistoryStats::default());
        let mut s = started_today(
            Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats)).with_frames(recording),
        );
        // Live from 09:18: the recording's 09:15–09:17 bars come first; its
        // 09:18 and 09:19 are the live feed's to give.
        s.apply(&[
            BarEvent::Opened {
                key: key(1),
                t: T0 + 180,
            },
            BarEvent::Opened { key: key(2), t: T0 },
            BarEvent::Closed {
                key: key(1),
                bar: bar(T0 + 180, 7.0),
            },
        ]);
        settle(&mut s);
        let b = s.board();
        let bars = b.get(key(1)).unwrap().bars();
        assert_eq!(
            bars.iter().map(|b| (b.t, b.c)).collect::<Vec<_>>(),
            [
                (T0, 100.0),
                (T0 + 60, 101.0),
                (T0 + 120, 102.0),
                (T0 + 180, 7.0)
            ]
        );
        assert_eq!(bars[1].v, 10, "the builder's volume rule");
        assert!(b.get(key(2)).unwrap().is_empty());
        assert_eq!(stats.backfilled.get(), 3);
    }

    #[test]
    fn a_backfill_reads_only_frames_recorded_before_the_start() {
        let stats = Arc::new(HistoryStats::default());
        // Started at 09:17:30: the recording's 09:18 and 09:19 frames are
        // this process's own (already live), not read.
        let mut s = Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats))
            .with_frames(recording)
            .started_at(u64::from(T0 + 150) * 1_000_000_000);
        s.apply(&[BarEvent::Opened {
            key: key(1),
            t: T0 + 240,
        }]);
        settle(&mut s);
        let bars = s.board().get(key(1)).unwrap().bars();
        assert_eq!(
            bars.iter().map(|b| b.t).collect::<Vec<_>>(),
            [T0, T0 + 60, T0 + 120]
        );
    }

    static GATE: AtomicBool = AtomicBool::new(false);
    static PASSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// The recording, opened only once the test opens the gate.
    fn gated(dir: &std::path::Path, day: u32) -> Box<dyn Iterator<Item = RecordedFrame>> {
        PASSES.fetch_add(1, Relaxed);
        let end = Instant::now() + Duration::from_secs(10);
        while !GATE.load(Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        recording(dir, day)
    }

    #[test]
    fn backfill_runs_off_the_thread_one_pass_at_a_time_and_batches_keys() {
        let stats = Arc::new(HistoryStats::default());
        let mut s = started_today(
            Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats)).with_frames(gated),
        );
        // The pass blocks on the gate, yet `apply` returns and live bars
        // are stored meanwhile.
        s.apply(&[BarEvent::Opened {
            key: key(1),
            t: T0 + 180,
        }]);
        s.apply(&[
            BarEvent::Closed {
                key: key(1),
                bar: bar(T0 + 180, 7.0),
            },
            BarEvent::Opened {
                key: key(2),
                t: T0 + 200,
            },
        ]);
        s.apply(&[BarEvent::Opened {
            key: key(3),
            t: T0 + 200,
        }]);
        let wait = Instant::now() + Duration::from_secs(5);
        while PASSES.load(Relaxed) == 0 && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(PASSES.load(Relaxed), 1, "one pass at a time");
        assert!(!s.backfill_idle());
        assert_eq!(s.board().get(key(1)).unwrap().bars(), [bar(T0 + 180, 7.0)]);
        GATE.store(true, Relaxed);
        settle(&mut s);
        assert_eq!(PASSES.load(Relaxed), 2, "keys 2 and 3 in one more pass");
        let b = s.board();
        assert_eq!(
            b.get(key(1))
                .unwrap()
                .bars()
                .iter()
                .map(|b| (b.t, b.c))
                .collect::<Vec<_>>(),
            [
                (T0, 100.0),
                (T0 + 60, 101.0),
                (T0 + 120, 102.0),
                (T0 + 180, 7.0)
            ]
        );
        assert!(b.get(key(3)).unwrap().is_empty());
        assert_eq!(stats.backfilled.get(), 3);
    }

    static ASKED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

    fn asked(dir: &std::path::Path, day: u32) -> Box<dyn Iterator<Item = RecordedFrame>> {
        ASKED.lock().unwrap().push(day);
        recording(dir, day)
    }

    #[test]
    fn stale_snapshots_of_yesterday_neither_backfill_it_nor_clear_today() {
        let stats = Arc::new(HistoryStats::default());
        let mut s = started_today(
            Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats)).with_frames(asked),
        );
        let yesterday = T0 - 86_400 + 374 * 60; // 15:29 the day before
                                                // Before the open: snapshots carry yesterday's last trade.
        s.apply(&[
            BarEvent::Opened {
                key: key(1),
                t: yesterday,
            },
            BarEvent::Closed {
                key: key(1),
                bar: bar(yesterday, 1.0),
            },
        ]);
        assert!(s.backfill_idle(), "no pass over yesterday's recording");
        // The open: today's bars.
        s.apply(&[
            BarEvent::Opened { key: key(2), t: T0 },
            BarEvent::Closed {
                key: key(2),
                bar: bar(T0, 2.0),
            },
        ]);
        settle(&mut s);
        // A stale snapshot of an instrument subscribed now.
        s.apply(&[
            BarEvent::Opened {
                key: key(3),
                t: yesterday,
            },
            BarEvent::Closed {
                key: key(3),
                bar: bar(yesterday, 3.0),
            },
        ]);
        assert!(s.backfill_idle());
        let b = s.board();
        assert_eq!(b.day, Some(ist_day(T0)));
        assert_eq!(b.get(key(2)).unwrap().bars(), [bar(T0, 2.0)], "kept");
        assert!(b.get(key(1)).is_none() && b.get(key(3)).is_none());
        assert_eq!(*ASKED.lock().unwrap(), [20261203], "today's file only");
        assert_eq!(stats.late.get(), 1);
    }

    #[test]
    fn a_day_change_inside_one_batch_keeps_bars_and_backfills_the_new_day() {
        let stats = Arc::new(HistoryStats::default());
        let mut s = started_today(
            Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats)).with_frames(recording),
        );
        let yesterday = T0 - 86_400 + 374 * 60;
        s.apply(&[
            BarEvent::Opened {
                key: key(2),
                t: yesterday - 60,
            },
            BarEvent::Closed {
                key: key(2),
                bar: bar(yesterday - 60, 2.0),
            },
        ]);
        // One batch: yesterday's stale note of key 1 and its last bar of
        // key 2, then today's bars of both.
        s.apply(&[
            BarEvent::Opened {
                key: key(1),
                t: yesterday,
            },
            BarEvent::Closed {
                key: key(2),
                bar: bar(yesterday, 2.5),
            },
            BarEvent::Closed {
                key: key(1),
                bar: bar(T0 + 240, 9.0),
            },
            BarEvent::Closed {
                key: key(2),
                bar: bar(T0 + 240, 3.0),
            },
        ]);
        settle(&mut s);
        let b = s.board();
        assert_eq!(b.day, Some(ist_day(T0)));
        assert_eq!(b.get(key(2)).unwrap().bars(), [bar(T0 + 240, 3.0)]);
        assert_eq!(
            b.get(key(1))
                .unwrap()
                .bars()
                .iter()
                .map(|b| b.t)
                .collect::<Vec<_>>(),
            [T0, T0 + 60, T0 + 120, T0 + 180, T0 + 240],
            "backfilled from today's first live minute, not yesterday's"
        );
    }

    #[test]
    fn the_thread_keeps_an_earlier_days_bars() {
        // 2026-11-27 09:15 India time: a replayed day in the past.
        let day0 = T0 - 6 * 86_400;
        let (thread, mut sink) = HistoryThread::spawn(HistoryConfig {
            publish_interval: Duration::from_millis(5),
            poll: Duration::from_millis(2),
            ..HistoryConfig::default()
        })
        .unwrap();
        sink.push(BarEvent::Opened {
            key: key(8),
            t: day0,
        });
        for i in 0..3 {
            sink.push(BarEvent::Closed {
                key: key(8),
                bar: bar(day0 + i * 60, i as f32),
            });
        }
        sink.wake();
        let board = Arc::clone(&thread.handle.board);
        let end = Instant::now() + Duration::from_secs(5);
        while board.load().get(key(8)).map_or(0, Series::len) < 3 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Several more turns of the thread: still there.
        std::thread::sleep(Duration::from_millis(50));
        let b = board.load();
        assert_eq!(b.day, Some(ist_day(day0)));
        let served = super::super::query::bars_of(&b, key(8), Some(bar(day0 + 180, 3.0)));
        assert_eq!(
            served.iter().map(|(b, p)| (b.t, *p)).collect::<Vec<_>>(),
            [
                (day0, false),
                (day0 + 60, false),
                (day0 + 120, false),
                (day0 + 180, true)
            ]
        );
        thread.shutdown();
    }

    #[test]
    fn the_thread_drains_the_ring_and_publishes() {
        let (thread, mut sink) = HistoryThread::spawn(HistoryConfig {
            publish_interval: Duration::from_millis(20),
            poll: Duration::from_millis(5),
            ..HistoryConfig::default()
        })
        .unwrap();
        sink.push(BarEvent::Opened { key: key(7), t: T0 });
        for i in 0..3 {
            sink.push(BarEvent::Closed {
                key: key(7),
                bar: bar(T0 + i * 60, i as f32),
            });
        }
        sink.wake();
        let board = Arc::clone(&thread.handle.board);
        let end = Instant::now() + Duration::from_secs(5);
        while board.load().get(key(7)).map_or(0, Series::len) < 3 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        let bars = board.load().get(key(7)).unwrap().bars();
        assert_eq!(
            bars.iter().map(|b| b.c).collect::<Vec<_>>(),
            [0.0, 1.0, 2.0]
        );
        assert!(thread.handle.stats.publications.get() >= 1);
        thread.shutdown();
    }

    #[test]
    fn a_full_ring_drops_and_counts() {
        let (tx, _rx) = HeapRb::<BarEvent>::new(2).split();
        let stats = Arc::new(HistoryStats::default());
        let mut sink = BarSink::new(tx, Arc::clone(&stats));
        for i in 0..5 {
            sink.push(BarEvent::Opened { key: key(i), t: T0 });
        }
        assert_eq!(stats.dropped.get(), 3);
    }
}
