//! The recorder: the network thread's [`RecordTap`] and the "dhan-record"
//! thread that writes day files.
//!
//! Contract (style rule 7, explicit backpressure): [`RecordTap::offer`]
//! never blocks, never allocates and never makes a system call. It copies
//! the whole record (20-byte header and payload) into an SPSC byte ring
//! after one vacancy check; when the ring has no room for all of it, the
//! frame is dropped and counted in [`RecordStats::lost`]. Recording is a
//! witness, not a participant: it must never slow ingest, so a recorder that
//! falls behind (or a full disk) costs recorded frames, never relayed ones.
//!
//! The recorder thread pops whole records, computes their CRC, batches them
//! in a 2 MiB buffer and writes it to the day's file at least every 100 ms
//! (so a crash loses at most that much), sleeping up to 2 ms when the ring
//! is empty (the producer never wakes it: no syscall on the hot path). When
//! a frame's India date is later than the open file's, the file is fsynced
//! and closed, the new day's file opened, and a helper thread
//! ("dhan-record-tidy") compresses finished days and applies retention.
//!
//! On a write error the thread stops writing, records the error in
//! [`RecordStats::error`], logs it once, and keeps draining the ring
//! (counting every frame as lost) until shutdown, so the tap never sees a
//! ring kept full by a dead disk.
//!
//! Where the CRC is computed: on the recorder thread. It protects the bytes
//! on disk, not in memory, and the network thread is the one whose every
//! nanosecond is latency; `benches/record.rs` measures what it would cost
//! there (`crc32fast` on the payload, in the "crc" group) and the numbers
//! are in `docs/recording.md`.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::files::{self, ist_date, ist_midnight_ns, yyyymmdd};
use super::format::{self, Header, MAX_PAYLOAD, RECORD_HEADER_LEN, VERSION};
use super::reader::Reader;
use super::FeedKind;
use crate::instrument::Date;
use crate::stoppable::Stoppable;

/// Default ring size: 64 MiB, about half a second of a 1 M packets/s burst
/// of ticker packets (≈ 100 MB/s with record headers) the disk may stall.
pub const DEFAULT_RING_BYTES: usize = 64 << 20;
/// The write buffer: holds any record (payload ≤ 1 MiB) whole.
const BUF_BYTES: usize = 2 << 20;
/// Written at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Sleep when the ring is empty.
const IDLE: Duration = Duration::from_millis(2);
/// Bytes taken from the ring before the flush timer is looked at again.
const DRAIN_BUDGET: usize = 4 << 20;

/// Recorder settings.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// Where the day files go (created 0700 if missing).
    pub dir: PathBuf,
    /// Days kept, today included; 0 keeps everything.
    pub keep_days: u32,
    /// The ring between the network thread and the recorder (bytes).
    pub ring_bytes: usize,
    /// Test injection: writes fail with `ENOSPC` once this many bytes have
    /// been written (file headers and records, all files of this run).
    #[doc(hidden)]
    pub fail_after_bytes: Option<u64>,
}

impl RecordConfig {
    /// Defaults (keep everything, a 64 MiB ring) for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            dir: dir.into(),
            keep_days: 0,
            ring_bytes: DEFAULT_RING_BYTES,
            fail_after_bytes: None,
        }
    }
}

/// The recorder's counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct RecordStats {
    frames: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    error: Mutex<Option<String>>,
    file: Mutex<Option<PathBuf>>,
}

impl RecordStats {
    /// Frames written to a file (handed to the OS) since start.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Record bytes (headers and payloads) written since start.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Frames offered but not recorded: the ring was full, the frame was
    /// over the size limit, or writing had failed.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Why recording stopped, once a write failed.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The day file being written.
    pub fn file(&self) -> Option<PathBuf> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// No error and nothing lost.
    pub fn healthy(&self) -> bool {
        self.lost() == 0 && self.error().is_none()
    }

    fn add_lost(&self, n: u64) {
        if n > 0 {
            self.lost.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn set_file(&self, p: Option<PathBuf>) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }
}

/// The network thread's end of the recorder. `Send`, not `Sync`.
pub struct RecordTap {
    ring: HeapProd<u8>,
    /// Unix ns minus monotonic ns, taken once at spawn.
    offset_ns: u64,
    stats: Arc<RecordStats>,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap")
            .field("vacant", &self.ring.vacant_len())
            .finish()
    }
}

impl RecordTap {
    /// Offers one received binary frame. `recv_ns` is the network thread's
    /// [`crate::clock::now_ns`] stamp. Never blocks, never allocates: if the
    /// ring has no room for the whole record the frame is counted lost.
    #[inline]
    pub fn offer(&mut self, conn: u8, feed: FeedKind, recv_ns: u64, payload: &[u8]) {
        let len = payload.len();
        if len > MAX_PAYLOAD || self.ring.vacant_len() < RECORD_HEADER_LEN + len {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let head =
            format::record_header(len as u32, recv_ns.wrapping_add(self.offset_ns), conn, feed);
        // Room for both was checked; only this thread pushes.
        self.ring.push_slice(&head);
        self.ring.push_slice(payload);
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<RecordStats> {
        &self.stats
    }
}

/// The recorder thread's handle.
#[derive(Debug)]
pub struct Recorder {
    stats: Arc<RecordStats>,
    worker: Stoppable,
}

impl Recorder {
    /// Creates the dir (0700) if needed, opens or repairs today's file (an
    /// error here is a start-up error), and starts the "dhan-record" thread.
    pub fn spawn(cfg: RecordConfig) -> io::Result<(Recorder, RecordTap)> {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let offset = unix.wrapping_sub(crate::clock::now_ns());
        Recorder::spawn_with_offset(cfg, offset)
    }

    /// [`Recorder::spawn`] with the monotonic→Unix offset given: tests and
    /// benches put the clock on any day (e.g. a minute before India
    /// midnight).
    #[doc(hidden)]
    pub fn spawn_with_offset(
        cfg: RecordConfig,
        offset_ns: u64,
    ) -> io::Result<(Recorder, RecordTap)> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.dir)
            .map_err(|e| named(&cfg.dir, e))?;
        let now_unix = crate::clock::now_ns().wrapping_add(offset_ns);
        let today = ist_date(now_unix);
        let stats = Arc::new(RecordStats::default());
        let mut limit = Limit {
            written: 0,
            fail_after: cfg.fail_after_bytes,
        };
        // A new day file is made here (cheap; a directory we cannot write
        // to fails the start). An existing one (a restart the same day) is
        // only checked for writing here: reading it through for a torn tail
        // can take a while on a big file, so the recorder thread does that
        // first, while the ring holds what arrives meanwhile.
        let path = cfg.dir.join(files::file_name(yyyymmdd(today)));
        let (out, reopen) = if path.exists() {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| named(&path, e))?;
            (None, Some((today, now_unix)))
        } else {
            (Some(open_day(&cfg.dir, today, now_unix, &mut limit)?), None)
        };
        stats.set_file(Some(path));
        let (prod, cons) = HeapRb::<u8>::new(cfg.ring_bytes.max(1)).split();
        let (tidy_tx, tidy_rx) = crossbeam_channel::unbounded::<Date>();
        let (dir, keep) = (cfg.dir.clone(), cfg.keep_days);
        let tidy_stop = Arc::new(AtomicBool::new(false));
        let tidy = {
            let stop = Arc::clone(&tidy_stop);
            std::thread::Builder::new()
                .name("dhan-record-tidy".into())
                .spawn(move || {
                    crate::affinity::background("record-tidy");
                    for today in tidy_rx {
                        files::tidy(&dir, today, keep, &stop);
                    }
                })?
        };
        let _ = tidy_tx.send(today);
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            cons,
            offset_ns,
            reopen,
            sink: Sink {
                stats: Arc::clone(&stats),
                dir: cfg.dir,
                out,
                buf: Vec::with_capacity(BUF_BYTES),
                pending: 0,
                last_flush: Instant::now(),
                limit,
                day_end_ns: ist_midnight_ns(today.add_days(1)),
                tidy: Some(Tidy {
                    days: tidy_tx,
                    thread: tidy,
                    stop: tidy_stop,
                }),
            },
        };
        let flag = Arc::clone(&stop);
        let worker = Stoppable::spawn("dhan-record", stop, move || worker.run(&flag))?;
        let tap = RecordTap {
            ring: prod,
            offset_ns,
            stats: Arc::clone(&stats),
            _not_sync: PhantomData,
        };
        Ok((Recorder { stats, worker }, tap))
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<RecordStats> {
        Arc::clone(&self.stats)
    }

    /// Drains the ring, writes and fsyncs the file, waits for a running
    /// compression, and joins the thread.
    /// (Also on drop.)
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Byte accounting for `fail_after_bytes`.
#[derive(Debug)]
struct Limit {
    written: u64,
    fail_after: Option<u64>,
}

impl Limit {
    /// Writes `bytes`, or as much as the injected limit allows and then
    /// fails with `ENOSPC` (a disk filling mid-write: a torn tail).
    fn write(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        if let Some(max) = self.fail_after {
            let room = max.saturating_sub(self.written);
            if (bytes.len() as u64) > room {
                file.write_all(&bytes[..room as usize])?;
                self.written += room;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// An open day file.
#[derive(Debug)]
struct DayFile {
    file: File,
    path: PathBuf,
    /// Where the last successful write ended.
    len: u64,
}

/// Opens `date`'s file for appending: a new file gets its header. An
/// existing one is read through: a torn tail (damage within one record's
/// length of the end: what a crash mid-write leaves) is cut back to the
/// last whole record; damage further in, a read error or a broken header
/// moves the file aside (`….damaged-<unix seconds>`, readable up to the
/// damage) and a fresh file is started, so good records after a bad one
/// are never cut away.
fn open_day(dir: &Path, date: Date, now_unix_ns: u64, limit: &mut Limit) -> io::Result<DayFile> {
    let day = yyyymmdd(date);
    let path = dir.join(files::file_name(day));
    if path.exists() {
        let aside = |why: &str| -> io::Result<()> {
            let secs = now_unix_ns / 1_000_000_000;
            let aside = PathBuf::from(format!("{}.damaged-{secs}", path.display()));
            log::warn!(
                "record: {}: {why}; moved aside to {} and starting a fresh file",
                path.display(),
                aside.display()
            );
            fs::rename(&path, &aside).map_err(|e| named(&path, e))
        };
        match Reader::open(&path) {
            Ok(mut r) => {
                let mut scratch = Vec::new();
                while r.next_into(&mut scratch).is_some() {}
                let good = r.offset();
                let len = fs::metadata(&path).map_err(|e| named(&path, e))?.len();
                let damage = r.damage().cloned();
                drop(r);
                match damage {
                    None => return append(path, good),
                    Some(d) if torn_tail(&d, good, len) => {
                        log::warn!(
                            "record: {} ends in a torn record ({}): cut {} bytes at offset {good}, \
                             keeping {} frames",
                            path.display(),
                            d.reason,
                            len.saturating_sub(good),
                            d.frames_before
                        );
                        return append(path, good);
                    }
                    Some(d) => aside(&format!(
                        "damaged at offset {} of {len} ({}) after {} frames",
                        d.offset, d.reason, d.frames_before
                    ))?,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => aside(&e.to_string())?,
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| named(&path, e))?;
    let header = format::encode_header(&Header {
        version: VERSION,
        created_unix_ns: now_unix_ns,
        day,
    });
    limit
        .write(&mut file, &header)
        .and_then(|()| file.sync_all())
        .map_err(|e| named(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| named(dir, e))?;
    Ok(DayFile {
        file,
        path,
        len: format::HEADER_LEN as u64,
    })
}

/// Damage a crash mid-write explains: the record at `good` is the last
/// one and is incomplete or fails its CRC (a record is at most
/// `RECORD_HEADER_LEN + MAX_PAYLOAD` bytes). A read error is never a tear.
fn torn_tail(d: &super::Damage, good: u64, len: u64) -> bool {
    !d.reason.starts_with("read error")
        && len.saturating_sub(good) <= (RECORD_HEADER_LEN + MAX_PAYLOAD) as u64
}

/// `path` opened for writing at `good`, the end of its last whole record
/// (anything after it cut off and the cut made durable).
fn append(path: PathBuf, good: u64) -> io::Result<DayFile> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| named(&path, e))?;
    let len = file.metadata().map_err(|e| named(&path, e))?.len();
    if good != len {
        file.set_len(good).map_err(|e| named(&path, e))?;
        file.sync_all().map_err(|e| named(&path, e))?;
    }
    io::Seek::seek(&mut file, io::SeekFrom::Start(good)).map_err(|e| named(&path, e))?;
    Ok(DayFile {
        file,
        path,
        len: good,
    })
}

/// The recorder thread's state.
struct Worker {
    cons: HeapCons<u8>,
    /// Unix ns minus monotonic ns (as the tap's).
    offset_ns: u64,
    /// An existing day file to validate and reopen before anything else
    /// (its date and the time now).
    reopen: Option<(Date, u64)>,
    sink: Sink,
}

/// The helper thread that compresses finished days and applies retention.
struct Tidy {
    /// Today's date, each time the day turns.
    days: Sender<Date>,
    thread: JoinHandle<()>,
    /// Set at shutdown: abandon a compression in progress.
    stop: Arc<AtomicBool>,
}

/// Everything but the ring (so a record borrowed from the ring can be
/// written while the ring is borrowed).
struct Sink {
    stats: Arc<RecordStats>,
    dir: PathBuf,
    /// `None` once writing failed.
    out: Option<DayFile>,
    buf: Vec<u8>,
    /// Frames in `buf`.
    pending: u64,
    last_flush: Instant,
    limit: Limit,
    /// Unix ns at which the open file's India day ends.
    day_end_ns: u64,
    tidy: Option<Tidy>,
}

/// `dst.len()` bytes from offset `at` of the two slices `a` ++ `b`.
fn copy_from_pair(a: &[u8], b: &[u8], at: usize, dst: &mut [u8]) {
    let (x, y) = pair_range(a, b, at, dst.len());
    dst[..x.len()].copy_from_slice(x);
    dst[x.len()..].copy_from_slice(y);
}

/// The range `at..at + len` of `a` ++ `b`, as up to two slices.
fn pair_range<'a>(a: &'a [u8], b: &'a [u8], at: usize, len: usize) -> (&'a [u8], &'a [u8]) {
    if at >= a.len() {
        (&b[at - a.len()..at - a.len() + len], &[])
    } else if at + len <= a.len() {
        (&a[at..at + len], &[])
    } else {
        (&a[at..], &b[..len - (a.len() - at)])
    }
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        crate::affinity::background("record");
        if let Some((date, now)) = self.reopen.take() {
            let sink = &mut self.sink;
            match open_day(&sink.dir, date, now, &mut sink.limit) {
                Ok(out) => {
                    sink.stats.set_file(Some(out.path.clone()));
                    sink.out = Some(out);
                }
                Err(e) => sink.fail(e),
            }
        }
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let drained = self.drain();
            if self.sink.last_flush.elapsed() >= FLUSH_EVERY {
                self.sink.flush();
            }
            if drained == 0 {
                if stopping {
                    break;
                }
                // Midnight with nothing arriving (a quiet night): the day
                // turns on time, so the finished day is compressed now and
                // not at the next morning's first frame.
                let now = crate::clock::now_ns().wrapping_add(self.offset_ns);
                if now >= self.sink.day_end_ns {
                    self.sink.rotate(now);
                }
                std::thread::park_timeout(IDLE);
            }
        }
        self.sink.close();
        if let Some(t) = self.sink.tidy.take() {
            // A day's compression can take minutes: abandon it (the next
            // start does it again) rather than hold up the shutdown.
            t.stop.store(true, Ordering::Relaxed);
            drop(t.days);
            let _ = t.thread.join();
        }
    }

    /// Writes every whole record in the ring (up to the budget); bytes taken.
    fn drain(&mut self) -> usize {
        let mut taken = 0;
        while taken < DRAIN_BUDGET {
            let (a, b) = self.cons.as_slices();
            let avail = a.len() + b.len();
            if avail < RECORD_HEADER_LEN {
                break;
            }
            let mut head = [0u8; RECORD_HEADER_LEN];
            copy_from_pair(a, b, 0, &mut head);
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if avail < RECORD_HEADER_LEN + len {
                break; // the tap is between its two pushes
            }
            let payload = pair_range(a, b, RECORD_HEADER_LEN, len);
            self.sink.record(&mut head, payload);
            self.cons.skip(RECORD_HEADER_LEN + len);
            taken += RECORD_HEADER_LEN + len;
        }
        taken
    }
}

impl Sink {
    fn record(&mut self, head: &mut [u8; RECORD_HEADER_LEN], payload: (&[u8], &[u8])) {
        let mut t = [0u8; 8];
        t.copy_from_slice(&head[8..16]);
        let recv = u64::from_le_bytes(t);
        if recv >= self.day_end_ns {
            self.rotate(recv);
        }
        if self.out.is_none() {
            self.stats.add_lost(1);
            return;
        }
        let crc = format::record_crc(head, payload);
        format::seal(head, crc);
        let total = RECORD_HEADER_LEN + payload.0.len() + payload.1.len();
        if self.buf.len() + total > BUF_BYTES {
            self.flush();
            if self.out.is_none() {
                self.stats.add_lost(1);
                return;
            }
        }
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(payload.0);
        self.buf.extend_from_slice(payload.1);
        self.pending += 1;
    }

    /// Writes the buffer to the file.
    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.buf.is_empty() {
            return;
        }
        let result = match self.out.as_mut() {
            Some(out) => self.limit.write(&mut out.file, &self.buf),
            None => Ok(()),
        };
        match result {
            Ok(()) if self.out.is_some() => {
                if let Some(out) = self.out.as_mut() {
                    out.len += self.buf.len() as u64;
                }
                self.stats.frames.fetch_add(self.pending, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            }
            Ok(()) => self.stats.add_lost(self.pending),
            Err(e) => {
                self.stats.add_lost(self.pending);
                if let Some(out) = self.out.as_ref() {
                    // Leave whole records only (a truncate frees space,
                    // so it usually works on a full disk too).
                    let _ = out.file.set_len(out.len);
                }
                self.fail(e);
            }
        }
        self.buf.clear();
        self.pending = 0;
    }

    /// Stops writing for good: the error is kept, logged once.
    fn fail(&mut self, e: io::Error) {
        let path = self.out.take().map_or_else(|| self.dir.clone(), |o| o.path);
        let msg = format!("writing {}: {e}", path.display());
        log::error!("record: {msg}; recording stopped (frames now count as lost)");
        let mut slot = self.stats.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(msg);
        }
    }

    /// Writes what is buffered and fsyncs the file.
    fn close(&mut self) {
        self.flush();
        if let Some(out) = self.out.as_ref() {
            if let Err(e) = out.file.sync_all() {
                self.fail(e);
            }
        }
    }

    /// The India day changed: close this file, open the next day's, and
    /// have the helper compress finished days and apply retention.
    fn rotate(&mut self, recv_unix_ns: u64) {
        let date = ist_date(recv_unix_ns);
        self.day_end_ns = ist_midnight_ns(date.add_days(1));
        if self.out.is_none() {
            return; // writing failed: it stays stopped
        }
        self.close();
        if self.out.take().is_none() {
            return;
        }
        match open_day(&self.dir, date, recv_unix_ns, &mut self.limit) {
            Ok(out) => {
                log::info!("record: new day file {}", out.path.display());
                self.stats.set_file(Some(out.path.clone()));
                self.out = Some(out);
            }
            Err(e) => {
                // `fail` names the directory when no file is open; the
                // message from `open_day` already names the file.
                self.fail(e);
                return;
            }
        }
        if let Some(t) = &self.tidy {
            let _ = t.days.send(date);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader::tests::tempdir;
    use super::super::RecordedFrame;
    use super::*;

    fn cfg(dir: &Path) -> RecordConfig {
        RecordConfig {
            ring_bytes: 1 << 20,
            ..RecordConfig::new(dir)
        }
    }

    fn frame(i: u32) -> Vec<u8> {
        let mut p = i.to_le_bytes().to_vec();
        p.resize(8 + (i as usize % 200), i as u8);
        p
    }

    /// Offset putting the tap's clock at `unix_ns` now.
    fn offset_for(unix_ns: u64) -> u64 {
        unix_ns.wrapping_sub(crate::clock::now_ns())
    }

    /// Waits (at most 20 s) for the tidy thread's work to show: a shutdown
    /// abandons a compression in progress, so tests look before they stop.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn read_all(path: &Path) -> (Vec<RecordedFrame>, Option<super::super::Damage>) {
        let mut r = Reader::open(path).unwrap();
        let frames: Vec<_> = r.by_ref().collect();
        (frames, r.damage().cloned())
    }

    #[test]
    fn round_trip_through_tap_and_thread() {
        let dir = tempdir("rt");
        let (rec, mut tap) = Recorder::spawn(cfg(&dir)).unwrap();
        let t0 = crate::clock::now_ns();
        for i in 0..5000u32 {
            let feed = if i % 3 == 0 {
                FeedKind::Depth
            } else {
                FeedKind::Main
            };
            tap.offer((i % 5) as u8, feed, t0 + u64::from(i), &frame(i));
            if i % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        let stats = rec.stats();
        let path = stats.file().unwrap();
        rec.shutdown();
        assert!(
            stats.healthy(),
            "lost {} error {:?}",
            stats.lost(),
            stats.error()
        );
        assert_eq!(stats.frames(), 5000);
        let (frames, damage) = read_all(&path);
        assert_eq!(damage, None);
        assert_eq!(frames.len(), 5000);
        let unix0 = frames[0].recv_unix_ns;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(now - unix0 < 60_000_000_000, "Unix time, not monotonic");
        for (i, f) in frames.iter().enumerate() {
            let i = i as u32;
            assert_eq!(f.payload, frame(i));
            assert_eq!(f.recv_unix_ns - unix0, u64::from(i));
            assert_eq!(f.conn, (i % 5) as u8);
            assert_eq!(f.feed == FeedKind::Depth, i % 3 == 0);
        }
        let bytes: u64 = frames.iter().map(|f| 20 + f.payload.len() as u64).sum();
        assert_eq!(stats.bytes(), bytes);
        assert_eq!(fs::metadata(&path).unwrap().len(), bytes + 32);
    }

    #[test]
    fn offer_never_blocks_and_counts_lost_on_a_tiny_ring() {
        let dir = tempdir("tiny");
        let (rec, mut tap) = Recorder::spawn(RecordConfig {
            ring_bytes: 256,
            ..cfg(&dir)
        })
        .unwrap();
        let payload = [7u8; 100];
        let started = Instant::now();
        for _ in 0..100_000 {
            tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &payload);
        }
        // Larger than the ring: always lost.
        tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &[0u8; 300]);
        // Larger than any record may be: lost, whatever the ring.
        tap.offer(0, FeedKind::Main, 0, &vec![0u8; MAX_PAYLOAD + 1]);
        let elapsed = started.elapsed();
        let stats = rec.stats();
        rec.shutdown();
        assert!(stats.lost() >= 2, "lost {}", stats.lost());
        assert_eq!(stats.frames() + stats.lost(), 100_002);
        assert!(!stats.healthy());
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn reopening_a_torn_file_truncates_and_appends() {
        let dir = tempdir("reopen");
        let (rec, mut tap) = Recorder::spawn(cfg(&dir)).unwrap();
        for i in 0..10 {
            tap.offer(1, FeedKind::Main, crate::clock::now_ns(), &frame(i));
        }
        let path = rec.stats().file().unwrap();
        rec.shutdown();
        let full = fs::read(&path).unwrap();
        // kill -9 mid-write: 7 bytes of an eleventh record's header.
        let mut torn = full.clone();
        torn.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3]);
        fs::write(&path, &torn).unwrap();
        // The cut is made on the recorder thread, before it writes more.
        let (rec, mut tap) = Recorder::spawn(cfg(&dir)).unwrap();
        for i in 10..15 {
            tap.offer(1, FeedKind::Main, crate::clock::now_ns(), &frame(i));
        }
        rec.shutdown();
        let (frames, damage) = read_all(&path);
        assert_eq!(damage, None);
        let payloads: Vec<_> = frames.into_iter().map(|f| f.payload).collect();
        assert_eq!(payloads, (0..15).map(frame).collect::<Vec<_>>());
    }

    #[test]
    fn damage_before_the_tail_moves_the_file_aside_and_cuts_nothing() {
        let dir = tempdir("mid-damage");
        let big = |i: u8| vec![i; 200_000];
        let (rec, mut tap) = Recorder::spawn(RecordConfig {
            ring_bytes: 4 << 20,
            ..RecordConfig::new(&dir)
        })
        .unwrap();
        for i in 0..8 {
            tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &big(i));
        }
        let path = rec.stats().file().unwrap();
        assert_eq!(rec.stats().lost(), 0);
        rec.shutdown();
        // One flipped byte in the second record, 1.2 MB of good records
        // after it: not a torn tail.
        let mut bytes = fs::read(&path).unwrap();
        let second = format::HEADER_LEN + RECORD_HEADER_LEN + 200_000 + RECORD_HEADER_LEN + 10;
        bytes[second] ^= 0xFF;
        fs::write(&path, &bytes).unwrap();
        let (rec, mut tap) = Recorder::spawn(cfg(&dir)).unwrap();
        tap.offer(0, FeedKind::Main, crate::clock::now_ns(), b"after");
        rec.shutdown();
        let aside: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .map(|e| e.path())
            .collect();
        assert_eq!(aside.len(), 1, "moved aside");
        assert_eq!(fs::read(&aside[0]).unwrap(), bytes, "nothing cut from it");
        let (frames, damage) = read_all(&path);
        assert_eq!(damage, None);
        assert_eq!(frames.len(), 1, "a fresh file");
        assert_eq!(frames[0].payload, b"after");
    }

    #[test]
    fn a_broken_header_is_moved_aside() {
        let dir = tempdir("aside");
        let today = yyyymmdd(ist_date(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        ));
        let path = dir.join(files::file_name(today));
        fs::write(&path, b"garbage that is not a header").unwrap();
        let (rec, mut tap) = Recorder::spawn(cfg(&dir)).unwrap();
        tap.offer(0, FeedKind::Main, crate::clock::now_ns(), b"x");
        rec.shutdown();
        let aside: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(read_all(&path).0.len(), 1);
    }

    #[test]
    fn rotation_at_india_midnight_compresses_the_finished_day() {
        let dir = tempdir("rotate");
        let day1 = Date::from_ymd(2025, 3, 10).unwrap();
        let midnight = ist_midnight_ns(day1.add_days(1));
        // The tap's clock: two seconds before India midnight.
        let (rec, mut tap) = Recorder::spawn_with_offset(
            RecordConfig {
                keep_days: 0,
                ..cfg(&dir)
            },
            offset_for(midnight - 2_000_000_000),
        )
        .unwrap();
        let t = crate::clock::now_ns();
        for i in 0..3 {
            tap.offer(0, FeedKind::Main, t + u64::from(i), &frame(i));
        }
        for i in 3..5 {
            tap.offer(
                0,
                FeedKind::Main,
                t + 3_000_000_000 + u64::from(i),
                &frame(i),
            );
        }
        let stats = rec.stats();
        wait_until("the finished day's compression", || {
            !dir.join("2025-03-10.dhr").exists()
        });
        rec.shutdown();
        assert!(stats.healthy());
        assert_eq!(
            stats.file().unwrap(),
            dir.join("2025-03-11.dhr"),
            "the second day's file is current"
        );
        assert!(!dir.join("2025-03-10.dhr").exists());
        let first = dir.join("2025-03-10.dhr.zst");
        let (f1, d1) = read_all(&first);
        assert_eq!((f1.len(), d1), (3, None));
        assert_eq!(Reader::open(&first).unwrap().header().day, 20250310);
        let (f2, _) = read_all(&dir.join("2025-03-11.dhr"));
        assert_eq!(
            f2.iter().map(|f| f.payload.clone()).collect::<Vec<_>>(),
            [frame(3), frame(4)]
        );
        assert!(f2.iter().all(|f| f.recv_unix_ns >= midnight));
        assert_eq!(files::day_file(&dir, 20250310), Some(first));
    }

    #[test]
    fn a_quiet_midnight_turns_the_day_on_time() {
        let dir = tempdir("quiet-midnight");
        let day1 = Date::from_ymd(2025, 3, 10).unwrap();
        let midnight = ist_midnight_ns(day1.add_days(1));
        let (rec, mut tap) =
            Recorder::spawn_with_offset(cfg(&dir), offset_for(midnight - 300_000_000)).unwrap();
        tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &frame(1));
        // Nothing more arrives: the recorder turns the day by the clock and
        // the finished day is compressed without waiting for a frame.
        let first = dir.join("2025-03-10.dhr.zst");
        wait_until("the day to turn by the clock", || {
            first.exists() && rec.stats().file() == Some(dir.join("2025-03-11.dhr"))
        });
        rec.shutdown();
        assert_eq!(read_all(&first).0.len(), 1);
        assert_eq!(read_all(&dir.join("2025-03-11.dhr")), (Vec::new(), None));
    }

    #[test]
    fn shutdown_abandons_a_compression_in_progress() {
        let dir = tempdir("stop-compress");
        let big = dir.join("2025-03-09.dhr");
        fs::write(&big, vec![7u8; 8 << 20]).unwrap();
        let stop = AtomicBool::new(true);
        let e = files::compress(&big, &stop).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert!(big.exists(), "the day is kept for the next start");
        assert!(!dir.join("2025-03-09.dhr.zst").exists());
        assert!(!dir.join("2025-03-09.dhr.zst.tmp").exists());
    }

    #[test]
    fn retention_deletes_old_days() {
        let dir = tempdir("keep");
        for n in [
            "2025-03-01.dhr.zst",
            "2025-03-07.dhr.zst",
            "2025-03-08.dhr.zst",
            "2025-03-09.dhr",
        ] {
            fs::write(dir.join(n), b"").unwrap();
        }
        let day = Date::from_ymd(2025, 3, 10).unwrap();
        let (rec, _tap) = Recorder::spawn_with_offset(
            RecordConfig {
                keep_days: 3,
                ..cfg(&dir)
            },
            offset_for(ist_midnight_ns(day) + 3_600_000_000_000),
        )
        .unwrap();
        let days = || -> Vec<u32> {
            files::day_files(&dir)
                .unwrap()
                .into_iter()
                .map(|d| d.0)
                .collect()
        };
        wait_until("yesterday's compression", || {
            !dir.join("2025-03-09.dhr").exists()
        });
        rec.shutdown();
        // Today and the two days before it stay; yesterday got compressed.
        assert_eq!(days(), [20250308, 20250309, 20250310]);
        assert!(dir.join("2025-03-09.dhr.zst").exists());
    }

    #[test]
    fn a_write_error_stops_recording_but_never_the_tap() {
        let dir = tempdir("enospc");
        let (rec, mut tap) = Recorder::spawn(RecordConfig {
            fail_after_bytes: Some(10_000),
            ring_bytes: 4096,
            ..cfg(&dir)
        })
        .unwrap();
        let stats = rec.stats();
        let path = stats.file().unwrap();
        let payload = [1u8; 500];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut offered = 0u64;
        while stats.error().is_none() {
            assert!(Instant::now() < deadline, "no error reported");
            tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &payload);
            offered += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        let err = stats.error().unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("No space left"), "{err}");
        // The thread keeps draining: the ring never stays full.
        let lost_before = stats.lost();
        let started = Instant::now();
        for _ in 0..2000 {
            tap.offer(0, FeedKind::Main, crate::clock::now_ns(), &payload);
            std::thread::sleep(Duration::from_micros(50));
        }
        offered += 2000;
        assert!(started.elapsed() < Duration::from_secs(5));
        rec.shutdown();
        assert!(stats.lost() >= lost_before + 2000 - 8, "drained as lost");
        assert_eq!(stats.frames() + stats.lost(), offered);
        assert!(!stats.healthy());
        // What reached the disk reads back, and is what `frames` counted.
        let (frames, damage) = read_all(&path);
        assert_eq!(frames.len() as u64, stats.frames());
        assert_eq!(damage, None, "cut back to the last whole write");
    }

    #[test]
    fn record_tap_is_send() {
        fn send<T: Send>() {}
        send::<RecordTap>();
    }
}
