//! The `dhan-history` thread: owns the per-instrument series, applies what
//! the book sends, backfills new instruments from today's recording, turns
//! the day, and publishes the [`Board`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::store::{initial_capacity, Board, Series, SharedBoard};
use super::{backfill, ist_day, Bar, BarEvent};
use crate::domain::InstrumentKey;
use crate::metrics::Counter;

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
        }
    }
}

impl HistoryStats {
    /// Every counter, in `/metrics` order.
    pub fn counters(&self) -> [&Counter; 6] {
        [
            &self.bars,
            &self.dropped,
            &self.late,
            &self.swept,
            &self.backfilled,
            &self.publications,
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
    stats: Arc<HistoryStats>,
}

/// Opens the recording of day `YYYYMMDD` in a directory.
pub type FrameSource =
    fn(&std::path::Path, u32) -> Box<dyn Iterator<Item = crate::record::RecordedFrame>>;

impl Store {
    /// An empty store.
    pub fn new(backfill_dir: Option<PathBuf>, stats: Arc<HistoryStats>) -> Store {
        Store {
            day: None,
            series: HashMap::new(),
            dirty: false,
            backfill_dir,
            frames: backfill::recorded_frames,
            stats,
        }
    }

    /// The same, reading recordings through `frames` (tests).
    pub fn with_frames(mut self, frames: FrameSource) -> Store {
        self.frames = frames;
        self
    }

    /// Applies one batch of events, backfilling the instruments it
    /// introduces first (one pass over the recording for all of them).
    pub fn apply(&mut self, events: &[BarEvent]) {
        let mut new: Vec<(InstrumentKey, u32)> = Vec::new();
        for e in events {
            let (key, t) = match *e {
                BarEvent::Opened { key, t } => (key, t),
                BarEvent::Closed { key, bar } => (key, bar.t),
            };
            self.turn_day(ist_day(t));
            if !self.series.contains_key(&key) && !new.iter().any(|(k, _)| *k == key) {
                new.push((key, t));
            }
        }
        if !new.is_empty() {
            self.add(&new);
        }
        for e in events {
            if let BarEvent::Closed { key, bar } = *e {
                self.store(key, bar);
            }
        }
    }

    /// Starts a new day when `day` is later than the one held.
    fn turn_day(&mut self, day: i64) {
        if self.day.map_or(true, |d| day > d) {
            if !self.series.is_empty() {
                log::info!("history: a new India date; yesterday's bars dropped");
            }
            self.series.clear();
            self.day = Some(day);
            self.dirty = true;
        }
    }

    /// The wall clock (epoch seconds) passed midnight India time: drop it all.
    pub fn tick_clock(&mut self, now_unix: u32) {
        if self.day.is_some_and(|d| ist_day(now_unix) > d) {
            self.turn_day(ist_day(now_unix));
        }
    }

    /// Series for instruments first seen at these minutes, with recorded
    /// bars from before that minute when a backfill directory is set.
    fn add(&mut self, new: &[(InstrumentKey, u32)]) {
        let mut recorded = HashMap::new();
        if let (Some(dir), Some(day)) = (&self.backfill_dir, self.day) {
            let keys: HashSet<InstrumentKey> = new.iter().map(|(k, _)| *k).collect();
            let frames = (self.frames)(dir, backfill::yyyymmdd(day));
            recorded = backfill::bars_from_frames(frames, &keys);
        }
        for &(key, first) in new {
            let mut bars = recorded.remove(&key).unwrap_or_default();
            bars.retain(|b| b.t < first && Some(ist_day(b.t)) == self.day);
            let from = bars.first().map_or(first, |b| b.t);
            let series =
                Series::with_capacity(initial_capacity(key.segment, from).max(bars.len() + 16));
            for b in &bars {
                series.push(*b);
            }
            self.stats.backfilled.add(bars.len() as u64);
            self.series.insert(key, Arc::new(series));
        }
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

/// The running history thread.
#[derive(Debug)]
pub struct HistoryThread {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
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
        let thread = std::thread::Builder::new()
            .name("dhan-history".into())
            .spawn(move || {
                crate::affinity::background("history");
                worker.run();
            })?;
        let sink = BarSink {
            ring: tx,
            stats: Arc::clone(&handle.stats),
            thread: Some(thread.thread().clone()),
        };
        Ok((
            HistoryThread {
                thread: Some(thread),
                stop,
                handle,
            },
            sink,
        ))
    }

    /// Stops and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Relaxed);
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for HistoryThread {
    fn drop(&mut self) {
        self.stop_now();
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
            let now_unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32);
            self.store.tick_clock(now_unix);
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
        // The wall clock passes midnight India time: all dropped.
        s.tick_clock(T0 + 15 * 3600);
        assert!(s.dirty());
        let b = s.board();
        assert!(b.is_empty());
        // Yesterday's bar now: late, not stored.
        s.apply(&[BarEvent::Closed {
            key: key(1),
            bar: bar(T0 + 120, 1.0),
        }]);
        assert!(s.board().get(key(1)).unwrap().is_empty());
        assert_eq!(stats.late.get(), 1);
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
                    recv_unix_ns: 0,
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
        let mut s =
            Store::new(Some(PathBuf::from("/nowhere")), Arc::clone(&stats)).with_frames(recording);
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
