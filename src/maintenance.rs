//! The daily maintenance, on its own thread because it downloads and
//! parses (seconds of work the hot threads must never wait for):
//!
//! 1. once a day at `maintenance_at` (India time; the first run is the day
//!    after start, which loaded a fresh master already), the day's scrip
//!    master is loaded again and swapped in whole ([`SharedMaster`]); a
//!    failed download keeps the master in use;
//! 2. the fanout is handed a [`DayTurn`]: it rolls expired watchlist
//!    contracts and drops expired contracts from every subscription,
//!    telling the clients that held them, and answers with a [`DayDone`];
//! 3. once the unsubscribes have gone upstream, the book forgets expired
//!    instruments ([`BookCommand::Remove`]);
//! 4. one log line sums up the day: ticks, clients, upstream reconnects,
//!    token renewals, what the maintenance changed.
//!
//! A contract counts as expired when its expiry date is before today. The
//! new master no longer lists yesterday's expired contracts, so the
//! previous master is asked too ([`expiry_of`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::book::{BookCommand, BookControl, BookStats, SharedSnapshot};
use crate::domain::InstrumentKey;
use crate::fanout::stats::FanoutStats;
use crate::instrument::date::ist_instant;
use crate::instrument::source::{self, SourceConfig};
use crate::instrument::{Date, Master, SharedMaster, TimeOfDay, WallClock};
use crate::metrics::Counter;
use crate::stoppable::Stoppable;
use crate::token::KeeperHandle;
use crate::upstream::UpstreamStats;

/// Once a day at a time of day (India time): due the first time the clock
/// shows a later date than the last run and the time has come.
#[derive(Clone, Debug)]
pub struct DailySchedule {
    at: TimeOfDay,
    last: Date,
}

impl DailySchedule {
    /// Last run (or start) on `last`.
    pub fn new(at: TimeOfDay, last: Date) -> DailySchedule {
        DailySchedule { at, last }
    }

    /// The date to run for, when a run is due at `now` (and marks it done).
    pub fn due(&mut self, now: SystemTime) -> Option<Date> {
        let today = Date::today_ist(now);
        if today > self.last && TimeOfDay::ist(now) >= self.at {
            self.last = today;
            Some(today)
        } else {
            None
        }
    }

    /// When the next run is due.
    pub fn next(&self) -> SystemTime {
        let m = self.at.minutes();
        ist_instant(self.last.add_days(1), u32::from(m / 60), u32::from(m % 60))
    }
}

/// The expiry of `key`'s contract, from the first master that lists it.
pub fn expiry_of(key: InstrumentKey, masters: &[&Master]) -> Option<Date> {
    masters
        .iter()
        .find_map(|m| m.get(key))
        .and_then(|i| i.expiry())
}

/// Whether `key` is a contract that expired before `today`.
pub fn expired(key: InstrumentKey, masters: &[&Master], today: Date) -> bool {
    expiry_of(key, masters).is_some_and(|d| d < today)
}

/// The fanout's part of a run.
#[derive(Debug)]
pub struct DayTurn {
    /// The new trading day.
    pub today: Date,
    /// The master before the swap (it still lists yesterday's contracts).
    pub previous: Arc<Master>,
}

/// What the fanout did with a [`DayTurn`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DayDone {
    /// Watchlist entries moved to their next contract.
    pub rolled: usize,
    /// Expired contracts dropped from the upstream subscriptions.
    pub dropped: Vec<InstrumentKey>,
    /// Client subscriptions those held.
    pub client_subscriptions: usize,
}

impl DayDone {
    /// Adds one fanout shard's answer (only the lead rolls and drops).
    pub fn add(&mut self, other: DayDone) {
        self.rolled += other.rolled;
        self.dropped.extend(other.dropped);
        self.client_subscriptions += other.client_subscriptions;
    }
}

/// The last run, for `/stats`.
#[derive(Debug, Clone)]
pub struct LastRun {
    /// When it ran.
    pub at: SystemTime,
    /// The day it opened.
    pub date: Date,
    /// Where the master came from, or why it was kept.
    pub master: String,
    /// Whether the master was replaced.
    pub master_swapped: bool,
    /// Instruments in the master now.
    pub instruments: usize,
    /// Watchlist rolls.
    pub rolled: usize,
    /// Expired contracts dropped from subscriptions.
    pub dropped: usize,
    /// Instruments removed from the book.
    pub removed: usize,
    /// The day-summary line.
    pub summary: String,
}

/// Counters and the last run.
#[derive(Debug)]
pub struct MaintenanceStats {
    /// Runs since start.
    pub runs: Counter,
    last: ArcSwapOption<LastRun>,
    next: std::sync::atomic::AtomicU64,
}

impl Default for MaintenanceStats {
    fn default() -> Self {
        MaintenanceStats {
            runs: Counter::new(
                "maintenance_runs_total",
                "Daily maintenance runs (master reload, expiry roll, expired contracts dropped)",
            ),
            last: ArcSwapOption::empty(),
            next: Default::default(),
        }
    }
}

impl MaintenanceStats {
    /// The last run, if any.
    pub fn last(&self) -> Option<Arc<LastRun>> {
        self.last.load_full()
    }

    /// When the next run is due (Unix seconds; 0 before the thread starts).
    pub fn next_at(&self) -> u64 {
        self.next.load(Relaxed)
    }

    fn set_next(&self, t: SystemTime) {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.next.store(secs, Relaxed);
    }
}

/// Settings.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// When (India time).
    pub at: TimeOfDay,
    /// Where the master comes from.
    pub source: SourceConfig,
    /// The calendar's clock.
    pub clock: WallClock,
    /// How long unsubscribed instruments may still tick (the fanout's
    /// unsubscribe grace) before the book forgets them.
    pub settle: Duration,
}

/// What the maintenance reads and talks to.
#[derive(Debug)]
pub struct MaintenanceLinks {
    /// The master, swapped here.
    pub master: SharedMaster,
    /// [`DayTurn`]s to the fanout's lead shard …
    pub to_fanout: Sender<DayTurn>,
    /// … woken with this …
    pub fanout_waker: Arc<Waker>,
    /// … every shard answering here …
    pub from_fanout: Receiver<DayDone>,
    /// … this many.
    pub fanout_shards: usize,
    /// The book's commands.
    pub book: BookControl,
    /// The book's latest snapshot (which instruments it holds).
    pub snapshot: SharedSnapshot,
    /// For the day summary.
    pub counts: DayCounts,
}

/// The counters the day summary reads.
#[derive(Debug, Clone)]
pub struct DayCounts {
    /// Ticks.
    pub book: Arc<BookStats>,
    /// Clients.
    pub fanout: Arc<FanoutStats>,
    /// Reconnects.
    pub upstream: Arc<UpstreamStats>,
    /// Renewals.
    pub token: KeeperHandle,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    ticks: u64,
    clients: u64,
    disconnects: u64,
    renewals: u64,
    rotations: u64,
}

impl DayCounts {
    fn totals(&self) -> Totals {
        Totals {
            ticks: self.book.ticks.get(),
            clients: self.fanout.clients_total.get(),
            disconnects: self.upstream.disconnects.get(),
            renewals: self.token.status().renewals,
            rotations: self.upstream.rotations.get(),
        }
    }
}

/// The running maintenance thread.
#[derive(Debug)]
pub struct Maintenance {
    worker: Stoppable,
}

impl Maintenance {
    /// Starts the thread; its first run is due on the day after the
    /// clock's today.
    pub fn spawn(
        config: MaintenanceConfig,
        links: MaintenanceLinks,
        stats: Arc<MaintenanceStats>,
    ) -> std::io::Result<Maintenance> {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            schedule: DailySchedule::new(config.at, config.clock.today()),
            since: links.counts.totals(),
            config,
            links,
            stats,
            stop: Arc::clone(&stop),
        };
        let worker = Stoppable::spawn("dhan-maintenance", stop, move || worker.run())?;
        Ok(Maintenance { worker })
    }

    /// Stops and joins the thread (a run in progress finishes its step;
    /// also on drop).
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

/// How often the clock is read: a run starts within this of its time.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long the fanout may take to answer a [`DayTurn`].
const FANOUT_ANSWER: Duration = Duration::from_secs(10);

struct Worker {
    config: MaintenanceConfig,
    links: MaintenanceLinks,
    stats: Arc<MaintenanceStats>,
    schedule: DailySchedule,
    since: Totals,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        while !self.stop.load(Relaxed) {
            self.stats.set_next(self.schedule.next());
            if let Some(today) = self.schedule.due(self.config.clock.now()) {
                self.stats.set_next(self.schedule.next());
                self.run_day(today);
            }
            std::thread::park_timeout(CHECK_EVERY);
        }
    }

    fn run_day(&mut self, today: Date) {
        let started = Instant::now();
        log::info!("daily maintenance for {today}: reloading the instrument master");
        let previous = self.links.master.load_full();
        // Today's download counts as fresh from today's maintenance time.
        let m = self.config.at.minutes();
        let fresh_since = ist_instant(today, u32::from(m / 60), u32::from(m % 60));
        let (master_note, swapped) = match source::reload(&self.config.source, fresh_since) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                let note = loaded.describe();
                log::info!("{note}");
                self.links.master.store(Arc::new(loaded.master));
                (note, true)
            }
            Err(e) => {
                let note = format!(
                    "kept the master in use ({} instruments): {e}",
                    previous.len()
                );
                log::error!("daily maintenance: {note}");
                (note, false)
            }
        };
        // Answers that came after an earlier run stopped waiting are not
        // this run's.
        while self.links.from_fanout.try_recv().is_ok() {}
        let _ = self.links.to_fanout.send(DayTurn {
            today,
            previous: Arc::clone(&previous),
        });
        let _ = self.links.fanout_waker.wake();
        let deadline = Instant::now() + FANOUT_ANSWER;
        let mut done = DayDone::default();
        for answered in 0..self.links.fanout_shards {
            match self.links.from_fanout.recv_deadline(deadline) {
                Ok(shard) => done.add(shard),
                Err(_) => {
                    log::warn!(
                        "daily maintenance: {} of {} fanout shards did not answer in {FANOUT_ANSWER:?}",
                        self.links.fanout_shards - answered,
                        self.links.fanout_shards
                    );
                    break;
                }
            }
        }
        let removed = self.forget_expired(today, &previous);
        let now = self.links.counts.totals();
        let d = Totals {
            ticks: now.ticks - self.since.ticks,
            clients: now.clients - self.since.clients,
            disconnects: now.disconnects - self.since.disconnects,
            renewals: now.renewals.saturating_sub(self.since.renewals),
            rotations: now.rotations - self.since.rotations,
        };
        self.since = now;
        let master = self.links.master.load();
        let summary = format!(
            "day summary before {today}: {} ticks, {} client connections ({} open now), \
             {} upstream reconnects, {} token renewals, {} token rotations; \
             maintenance: master {} ({} instruments), {} watchlist rolls, \
             {} expired contracts dropped ({} client subscriptions), \
             {} removed from the book, in {:.1} s",
            d.ticks,
            d.clients,
            self.links.counts.fanout.clients.get(),
            d.disconnects,
            d.renewals,
            d.rotations,
            if swapped { "reloaded" } else { "kept" },
            master.len(),
            done.rolled,
            done.dropped.len(),
            done.client_subscriptions,
            removed,
            started.elapsed().as_secs_f64(),
        );
        log::info!("{summary}");
        self.stats.runs.inc();
        self.stats.last.store(Some(Arc::new(LastRun {
            at: self.config.clock.now(),
            date: today,
            master: master_note,
            master_swapped: swapped,
            instruments: master.len(),
            rolled: done.rolled,
            dropped: done.dropped.len(),
            removed,
            summary,
        })));
    }

    /// Asks the book to forget expired instruments once the fanout's
    /// unsubscribes have had time to reach the upstream (else a last tick
    /// would bring them back).
    fn forget_expired(&self, today: Date, previous: &Master) -> usize {
        let end = Instant::now() + self.config.settle;
        while Instant::now() < end && !self.stop.load(Relaxed) {
            std::thread::park_timeout(CHECK_EVERY);
        }
        let master = self.links.master.load();
        let keys: Vec<InstrumentKey> = self
            .links
            .snapshot
            .load()
            .instruments
            .iter()
            .map(|s| s.key)
            .filter(|&k| expired(k, &[&master, previous], today))
            .collect();
        let n = keys.len();
        if n > 0 {
            self.links.book.send(BookCommand::Remove(keys));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Segment;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::from_ymd(y, m, d).unwrap()
    }

    #[test]
    fn the_schedule_runs_once_a_day_at_its_time() {
        let at = TimeOfDay::new(8, 30).unwrap();
        let mut s = DailySchedule::new(at, day(2026, 11, 19));
        assert_eq!(s.next(), ist_instant(day(2026, 11, 20), 8, 30));
        assert_eq!(
            s.due(ist_instant(day(2026, 11, 19), 23, 0)),
            None,
            "start day"
        );
        assert_eq!(
            s.due(ist_instant(day(2026, 11, 20), 8, 29)),
            None,
            "too early"
        );
        assert_eq!(
            s.due(ist_instant(day(2026, 11, 20), 8, 30)),
            Some(day(2026, 11, 20))
        );
        assert_eq!(s.due(ist_instant(day(2026, 11, 20), 9, 0)), None, "once");
        assert_eq!(s.next(), ist_instant(day(2026, 11, 21), 8, 30));
        // A box that slept through days runs once, for the day it wakes on.
        assert_eq!(
            s.due(ist_instant(day(2026, 11, 25), 10, 0)),
            Some(day(2026, 11, 25))
        );
    }

    #[test]
    fn expiry_comes_from_the_first_master_that_lists_the_contract() {
        let sample = Master::sample();
        let nov = InstrumentKey::new(Segment::McxComm, 472787);
        let nifty = InstrumentKey::new(Segment::IdxI, 13);
        assert_eq!(expiry_of(nov, &[&sample]), Some(day(2026, 11, 19)));
        assert!(
            !expired(nov, &[&sample], day(2026, 11, 19)),
            "trades on its day"
        );
        assert!(expired(nov, &[&sample], day(2026, 11, 20)));
        assert!(!expired(nifty, &[&sample], day(2030, 1, 1)), "no expiry");
        let empty = Master::parse(
            b"SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_TRADING_SYMBOL,SEM_EXPIRY_DATE\n",
        )
        .unwrap();
        assert!(
            expired(nov, &[&empty, &sample], day(2026, 11, 20)),
            "previous master"
        );
        assert!(!expired(nov, &[&empty], day(2026, 11, 20)), "unknown: kept");
    }
}
