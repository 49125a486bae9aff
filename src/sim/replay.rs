//! The replay thread: plays a recording ([`RecordedFrame`]s) to the
//! simulator's clients instead of generated ticks (`dhan-relay replay`).
//!
//! Everything else is the simulator's: accept, handshake, tokens, login,
//! subscriptions, the `/twentydepth` endpoint, pings, REST. Only the source
//! of packets changes. The contract:
//!
//! * **What a connection gets.** For each recorded frame, each open
//!   connection gets the packets of that frame whose instrument it
//!   subscribed — main-feed frames to feed connections, depth frames to
//!   `/twentydepth` connections — as ONE binary WebSocket frame (the
//!   recorded batching is kept), each packet byte-for-byte as recorded. A
//!   connection that wants every packet of a frame gets the recorded frame
//!   itself. Market-status packets (code 7) go to every feed connection.
//!   Disconnect packets (code 50, either feed) are never replayed — the
//!   server does not kick its client for what happened upstream that day —
//!   and are counted in [`super::SimStats::replay_disconnects`]. Packets
//!   that do not decode are skipped and counted
//!   ([`super::SimStats::replay_bad_packets`]).
//! * **Mode.** Packets are sent as recorded, whatever mode the client asked
//!   for: a recording made in quote mode replays quote packets to a ticker
//!   subscriber too.
//! * **Previous close.** The latest recorded previous-close packet (code 6)
//!   of each instrument is kept; a client subscribing an instrument gets it
//!   at once (like DhanHQ on subscribe), or nothing if none was replayed yet.
//! * **Timing.** The clock starts when the first subscription arrives (a
//!   client connecting a second late does not miss the open). Frame `i` is
//!   due at `start + (recv_i − recv_first) / speed`; with [`Speed::Max`]
//!   frames go as fast as the slowest subscribed connection takes them. A
//!   frame found late is sent at once and, if more than [`MAX_LAG`] late,
//!   the schedule moves forward so that later frames keep their spacing
//!   instead of bursting. The recorded time going backwards or jumping
//!   forward by more than [`MAX_GAP`] (the next file, the next day) restarts
//!   the schedule at that frame.
//! * **Window.** `from` / `to` keep the frames whose receive time, India
//!   time of day (UTC+5:30), is at or after `from` and before `to`
//!   (`from > to` wraps past midnight).
//! * **End.** With `looped` the source is opened again when it ends and the
//!   schedule restarts. Without, the server stays up (clients stay connected,
//!   silent), logs `replay finished: N frames, M packets in T s` and sets
//!   [`super::SimStats::replay_finished`]. A source that cannot be opened is
//!   logged and also ends the replay.
//!
//! # Back-pressure
//!
//! At a finite speed a connection whose queue is full loses the frame and
//! it is counted in `queue_drops`, as with generated ticks: a slow client
//! must not hold up the others. At [`Speed::Max`] the thread waits for room
//! instead ([`ConnHandle::push_wait`]), bounded only by shutdown: nothing is
//! dropped, and the slowest connection sets the pace.
//!
//! # Allocation
//!
//! Per frame: one [`Bytes`] per connection that gets a subset (none for a
//! connection that gets the whole frame: the recorded payload is handed
//! over). The per-connection buffers, the routing table and the
//! previous-close table are reused; the routing table is rebuilt only when
//! subscriptions change.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tungstenite::Bytes;

use super::generator::HOUSEKEEPING;
use super::shared::{bump, lock, ConnHandle, Endpoint, Out, Shared};
use crate::domain::InstrumentKey;
use crate::record::{FeedKind, Reader, RecordedFrame};
use crate::wire::depth::{self, DepthMessage};
use crate::wire::feed::{self, FeedData, FeedMessage};

/// Where replayed frames come from: called once per pass (again for each
/// `--loop`), it returns the frames in recorded order.
pub type FrameSource =
    Arc<dyn Fn() -> io::Result<Box<dyn Iterator<Item = RecordedFrame> + Send>> + Send + Sync>;

/// The frames of `files`, played one after another in order, as a
/// [`FrameSource`] (each call opens them again, for `--loop`). Every file
/// is opened up front, so a missing or foreign file fails the call (the
/// error names it) before anything plays; a damaged tail ends that file's
/// frames where the damage starts, and is logged with what was cut.
pub fn open_recordings(files: &[PathBuf]) -> FrameSource {
    let files = files.to_vec();
    Arc::new(move || {
        let readers = files
            .iter()
            .map(|f| Reader::open(f))
            .collect::<io::Result<Vec<_>>>()?;
        let frames = readers
            .into_iter()
            .zip(files.clone())
            .flat_map(|(r, f)| Tail { reader: r, file: f });
        Ok(Box::new(frames) as Box<dyn Iterator<Item = RecordedFrame> + Send>)
    })
}

/// One file's frames, with a log line for a damaged tail when they end.
struct Tail {
    reader: Reader,
    file: PathBuf,
}

impl Iterator for Tail {
    type Item = RecordedFrame;

    fn next(&mut self) -> Option<RecordedFrame> {
        let frame = self.reader.next();
        if frame.is_none() {
            if let Some(d) = self.reader.damage() {
                log::warn!(
                    "replay: {} is damaged at byte {} ({}); played the {} whole frames before it",
                    self.file.display(),
                    d.offset,
                    d.reason,
                    d.frames_before
                );
            }
        }
        frame
    }
}

/// `HH:MM` (24-hour) as (hour, minute).
pub fn parse_hhmm(s: &str) -> Result<(u8, u8), String> {
    let bad = || format!("{s:?} is not a time of day HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m) = (
        h.parse::<u8>().map_err(|_| bad())?,
        m.parse::<u8>().map_err(|_| bad())?,
    );
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// Called by the replay thread for each frame it queues, with the frame's
/// index in the source (0-based, frames outside the window counted) and
/// the moment just before it was queued — for latency measurement
/// (`loadgen --replay`). It runs on the replay thread: keep it cheap.
pub type SendHook = Arc<dyn Fn(u64, Instant) + Send + Sync>;

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// The recorded spacing divided by this factor (1: real time).
    Times(f64),
    /// As fast as the slowest subscribed connection takes the frames.
    Max,
}

/// The slowest replay: a second of recording in 1,000 s (slower than that
/// a day's offsets would not fit a `Duration`).
pub const MIN_SPEED: f64 = 0.001;

impl std::str::FromStr for Speed {
    type Err = String;

    /// `max` or a number from [`MIN_SPEED`] up (`1`, `10`, `0.5`).
    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= MIN_SPEED => Ok(Speed::Times(x)),
            _ => Err(format!(
                "speed {s:?} is neither `max` nor a number of at least {MIN_SPEED}"
            )),
        }
    }
}

/// What the simulator replays instead of generating ticks
/// ([`super::SimConfig::replay`]).
#[derive(Clone)]
pub struct ReplayConfig {
    /// The recorded frames.
    pub source: FrameSource,
    /// Pace.
    pub speed: Speed,
    /// First India time of day (hour, minute) replayed, inclusive.
    pub from: Option<(u8, u8)>,
    /// India time of day (hour, minute) where replay stops, exclusive.
    pub to: Option<(u8, u8)>,
    /// Start again from the first frame when the source ends.
    pub looped: bool,
    /// Told of every frame sent ([`SendHook`]); `None` for no one.
    pub on_send: Option<SendHook>,
}

impl fmt::Debug for ReplayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayConfig")
            .field("speed", &self.speed)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("looped", &self.looped)
            .field("on_send", &self.on_send.is_some())
            .finish_non_exhaustive()
    }
}

/// A late frame beyond this moves the schedule forward (no catch-up burst).
pub const MAX_LAG: Duration = Duration::from_millis(100);
/// A forward jump in recorded time beyond this restarts the schedule.
pub const MAX_GAP: Duration = Duration::from_secs(3600);
/// India is UTC+5:30, no daylight saving.
const IST_OFFSET_SECS: u64 = 5 * 3600 + 30 * 60;

/// Minutes after midnight, India time, of a Unix time in nanoseconds.
pub fn ist_minute_of_day(unix_ns: u64) -> u16 {
    let secs = unix_ns / 1_000_000_000 + IST_OFFSET_SECS;
    ((secs % 86_400) / 60) as u16
}

/// Whether a frame received at `unix_ns` lies in the `from`..`to` window.
pub fn in_window(unix_ns: u64, from: Option<(u8, u8)>, to: Option<(u8, u8)>) -> bool {
    let m = ist_minute_of_day(unix_ns);
    let minutes = |(h, mi): (u8, u8)| u16::from(h) * 60 + u16::from(mi);
    match (from.map(minutes), to.map(minutes)) {
        (None, None) => true,
        (Some(f), None) => m >= f,
        (None, Some(t)) => m < t,
        (Some(f), Some(t)) if f <= t => m >= f && m < t,
        (Some(f), Some(t)) => m >= f || m < t,
    }
}

/// One routed connection and the frame being built for it.
struct Slot {
    conn: Arc<ConnHandle>,
    buf: Vec<u8>,
    packets: u32,
}

/// Who gets what, rebuilt when subscriptions change.
#[derive(Default)]
struct Routes {
    slots: Vec<Slot>,
    /// Feed connections (indices into `slots`), for market status.
    feed_all: Vec<usize>,
    feed: HashMap<InstrumentKey, Vec<usize>>,
    depth: HashMap<InstrumentKey, Vec<usize>>,
    /// Spare buffers from the previous table.
    spare: Vec<Vec<u8>>,
}

impl Routes {
    fn rebuild(&mut self, shared: &Shared) {
        for slot in self.slots.drain(..) {
            let mut b = slot.buf;
            b.clear();
            self.spare.push(b);
        }
        self.feed_all.clear();
        self.feed.clear();
        self.depth.clear();
        for (conn, login) in shared.open_conns() {
            let i = self.slots.len();
            let keys: Vec<InstrumentKey> = lock(&conn.subs).keys().copied().collect();
            let table = match login.endpoint {
                Endpoint::Feed => {
                    self.feed_all.push(i);
                    &mut self.feed
                }
                Endpoint::Depth => &mut self.depth,
            };
            for key in keys {
                table.entry(key).or_default().push(i);
            }
            self.slots.push(Slot {
                conn,
                buf: self.spare.pop().unwrap_or_default(),
                packets: 0,
            });
        }
    }

    fn anyone_subscribed(&self) -> bool {
        !self.feed.is_empty() || !self.depth.is_empty()
    }
}

/// The replay thread's state.
struct Player<'a> {
    shared: &'a Shared,
    poked: &'a Receiver<()>,
    cfg: ReplayConfig,
    routes: Routes,
    version: Option<u64>,
    touched: Vec<usize>,
    next_housekeeping: Instant,
}

/// Why the replay stops early.
struct Stop;

/// Runs until [`Shared::stop`] is set; `poked` wakes it early (a
/// subscription changed, stop).
pub(crate) fn run(shared: &Shared, poked: &Receiver<()>, cfg: ReplayConfig) {
    let mut p = Player {
        shared,
        poked,
        cfg,
        routes: Routes::default(),
        version: None,
        touched: Vec::new(),
        next_housekeeping: Instant::now(),
    };
    if p.play().is_err() {
        return;
    }
    // Finished: stay up, silent, until stopped.
    while p.idle(HOUSEKEEPING).is_ok() {}
}

impl Player<'_> {
    /// Waits up to `d` for a poke, doing housekeeping; `Err` once stopping.
    fn idle(&mut self, d: Duration) -> Result<(), Stop> {
        let now = Instant::now();
        let wait = d.min(self.next_housekeeping.saturating_duration_since(now));
        match self.poked.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(Stop),
        }
        self.housekeeping()
    }

    fn housekeeping(&mut self) -> Result<(), Stop> {
        if self.shared.stopping() {
            return Err(Stop);
        }
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.shared.expire_tokens();
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        Ok(())
    }

    fn refresh_routes(&mut self) {
        let v = self.shared.subs_version.load(Ordering::SeqCst);
        if self.version != Some(v) {
            self.version = Some(v);
            self.routes.rebuild(self.shared);
        }
    }

    /// Every pass; `Ok` when the replay ended normally.
    fn play(&mut self) -> Result<(), Stop> {
        loop {
            self.refresh_routes();
            if self.routes.anyone_subscribed() {
                break;
            }
            self.idle(HOUSEKEEPING)?;
        }
        let began = Instant::now();
        let stats = &self.shared.stats;
        loop {
            let frames = match (self.cfg.source)() {
                Ok(frames) => frames,
                Err(e) => {
                    log::error!("replay: cannot open the recording: {e}");
                    break;
                }
            };
            let sent = self.pass(frames)?;
            bump(&stats.replay_passes);
            if !self.cfg.looped {
                break;
            }
            if sent == 0 {
                // Looping over nothing would spin re-reading the files.
                log::warn!("replay: no frame of the recording is in the --from/--to window");
                break;
            }
        }
        log::info!(
            "replay finished: {} frames, {} packets in {:.1} s",
            stats.replay_frames.load(Ordering::Relaxed),
            stats.replay_packets.load(Ordering::Relaxed),
            began.elapsed().as_secs_f64()
        );
        self.shared.replay_finished.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// One pass over the source; how many frames it sent.
    fn pass(
        &mut self,
        frames: Box<dyn Iterator<Item = RecordedFrame> + Send>,
    ) -> Result<u64, Stop> {
        // (recorded time, wall time) the schedule counts from.
        let mut origin: Option<(u64, Instant)> = None;
        let mut last_recv = 0u64;
        let mut sent = 0u64;
        for (index, frame) in frames.enumerate() {
            if !in_window(frame.recv_unix_ns, self.cfg.from, self.cfg.to) {
                // A long stretch outside the window still answers stop.
                if index % 4096 == 0 {
                    self.housekeeping()?;
                }
                continue;
            }
            sent += 1;
            let recv = frame.recv_unix_ns;
            let gap = recv.checked_sub(last_recv);
            let restart = match gap {
                None => true,
                Some(g) => g > MAX_GAP.as_nanos() as u64,
            };
            last_recv = recv;
            if restart || origin.is_none() {
                origin = Some((recv, Instant::now()));
            }
            if let (Speed::Times(x), Some((first, start))) = (self.cfg.speed, origin.as_mut()) {
                let offset = Duration::from_secs_f64((recv - *first) as f64 / 1e9 / x);
                let due = *start + offset;
                self.wait_until(due)?;
                let late = Instant::now().saturating_duration_since(due);
                if late > MAX_LAG {
                    *start += late;
                }
            } else {
                self.housekeeping()?;
            }
            if let Some(hook) = &self.cfg.on_send {
                hook(index as u64, Instant::now());
            }
            self.send(frame)?;
        }
        Ok(sent)
    }

    /// Sleeps until `due`, watching for stop and subscription changes.
    fn wait_until(&mut self, due: Instant) -> Result<(), Stop> {
        loop {
            let now = Instant::now();
            if now >= due {
                return self.housekeeping();
            }
            self.idle(due - now)?;
        }
    }

    /// Routes one frame's packets and queues them.
    fn send(&mut self, frame: RecordedFrame) -> Result<(), Stop> {
        self.refresh_routes();
        let stats = &self.shared.stats;
        let routes = &mut self.routes;
        let touched = &mut self.touched;
        let mut total = 0u32;
        let mut add = |slots: &[usize], bytes: &[u8], routes_slots: &mut Vec<Slot>| {
            for &i in slots {
                let slot = &mut routes_slots[i];
                if slot.packets == 0 {
                    touched.push(i);
                }
                slot.packets += 1;
                slot.buf.extend_from_slice(bytes);
            }
        };
        match frame.feed {
            FeedKind::Main => {
                for packet in feed::packets(&frame.payload) {
                    let Ok(packet) = packet else {
                        bump(&stats.replay_bad_packets);
                        continue;
                    };
                    match packet.message {
                        FeedMessage::Disconnect(_) => bump(&stats.replay_disconnects),
                        FeedMessage::Data(_, FeedData::MarketStatus) => {
                            total += 1;
                            add(&routes.feed_all, packet.bytes, &mut routes.slots);
                        }
                        FeedMessage::Data(key, data) => {
                            total += 1;
                            if let FeedData::PrevClose(_) = data {
                                self.shared.remember_prev_close(key, packet.bytes);
                            }
                            if let Some(slots) = routes.feed.get(&key) {
                                add(slots, packet.bytes, &mut routes.slots);
                            }
                        }
                    }
                }
            }
            FeedKind::Depth => {
                for packet in depth::packets(&frame.payload) {
                    let Ok(packet) = packet else {
                        bump(&stats.replay_bad_packets);
                        continue;
                    };
                    match packet.message {
                        DepthMessage::Disconnect(_) => bump(&stats.replay_disconnects),
                        DepthMessage::Book(book) => {
                            total += 1;
                            if let Some(slots) = routes.depth.get(&book.key) {
                                add(slots, packet.bytes, &mut routes.slots);
                            }
                        }
                    }
                }
            }
        }
        bump(&stats.replay_frames);
        stats
            .replay_packets
            .fetch_add(u64::from(total), Ordering::Relaxed);
        let whole_len = frame.payload.len();
        let mut payload = Some(frame.payload);
        let mut whole: Option<Bytes> = None;
        let mut result = Ok(());
        for &i in touched.iter() {
            let slot = &mut routes.slots[i];
            let bytes = if slot.packets == total && slot.buf.len() == whole_len {
                whole
                    .get_or_insert_with(|| Bytes::from(payload.take().unwrap_or_default()))
                    .clone()
            } else {
                Bytes::copy_from_slice(&slot.buf)
            };
            let out = Out::Replay {
                bytes,
                packets: slot.packets,
            };
            slot.buf.clear();
            slot.packets = 0;
            if result.is_err() {
                continue;
            }
            match self.cfg.speed {
                Speed::Max => {
                    if !slot.conn.push_wait(out, self.shared) {
                        result = Err(Stop);
                    }
                }
                Speed::Times(_) => slot.conn.push(out, stats),
            }
            slot.conn.notify();
        }
        touched.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01 00:00 UTC in nanoseconds, plus India hours and minutes.
    fn at_ist(h: u64, m: u64) -> u64 {
        let midnight_utc = 1_704_067_200u64;
        (midnight_utc + h * 3600 + m * 60 - IST_OFFSET_SECS) * 1_000_000_000
    }

    #[test]
    fn india_time_of_day() {
        assert_eq!(ist_minute_of_day(at_ist(9, 15)), 9 * 60 + 15);
        assert_eq!(ist_minute_of_day(at_ist(0, 0)), 0);
        assert_eq!(ist_minute_of_day(at_ist(23, 59)), 23 * 60 + 59);
    }

    #[test]
    fn window_is_from_inclusive_to_exclusive_and_wraps() {
        let w = |h, m, f, t| in_window(at_ist(h, m), f, t);
        assert!(w(9, 15, Some((9, 15)), Some((9, 30))));
        assert!(w(9, 29, Some((9, 15)), Some((9, 30))));
        assert!(!w(9, 30, Some((9, 15)), Some((9, 30))));
        assert!(!w(9, 14, Some((9, 15)), Some((9, 30))));
        assert!(w(9, 14, None, Some((9, 30))));
        assert!(w(15, 0, Some((9, 15)), None));
        assert!(w(23, 30, Some((23, 0)), Some((1, 0))));
        assert!(w(0, 30, Some((23, 0)), Some((1, 0))));
        assert!(!w(12, 0, Some((23, 0)), Some((1, 0))));
        assert!(w(12, 0, None, None));
    }

    #[test]
    fn hhmm_parses() {
        assert_eq!(parse_hhmm("09:15"), Ok((9, 15)));
        assert_eq!(parse_hhmm("23:59"), Ok((23, 59)));
        assert!(parse_hhmm("24:00").is_err());
        assert!(parse_hhmm("9.15").is_err());
        assert!(parse_hhmm("09:60").is_err());
    }

    #[test]
    fn a_missing_recording_fails_the_source_naming_it() {
        let source = open_recordings(&[PathBuf::from("/nonexistent/2026-12-03.dhr")]);
        let err = source().err().expect("no such file").to_string();
        assert!(err.contains("/nonexistent/2026-12-03.dhr"), "{err}");
    }

    #[test]
    fn speed_parses() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Times(10.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Times(0.5)));
        assert!("0".parse::<Speed>().is_err());
        assert!("-1".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
        assert!(
            "1e-20".parse::<Speed>().is_err(),
            "a day would not fit a Duration"
        );
        assert!("inf".parse::<Speed>().is_err());
    }
}
