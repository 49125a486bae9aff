//! The record directory: one file per trading day (India time), named
//! `YYYY-MM-DD.dhr`; a finished day becomes `YYYY-MM-DD.dhr.zst`; days older
//! than the retention are deleted by the date in their name.
//!
//! Compression is crash-safe: the `.zst` is written to `.zst.tmp`, fsynced
//! and renamed (and the directory fsynced) before the `.dhr` is removed, so
//! at every instant one complete copy of the day exists. A leftover
//! `.zst.tmp` is an interrupted compression and is deleted; a `.dhr` next to
//! a `.zst` is a removal that did not happen and is finished.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::instrument::date::ist_instant;
use crate::instrument::Date;

/// Extension of a day being written (or not yet compressed).
pub const EXT: &str = "dhr";
/// Extension of a compressed day.
pub const EXT_ZST: &str = "dhr.zst";
/// The most days `keep_days` may ask for (100 years).
pub const MAX_KEEP_DAYS: u32 = 36_500;
/// zstd level for finished days.
pub const ZSTD_LEVEL: i32 = 3;

/// `YYYYMMDD` of a date.
pub fn yyyymmdd(date: Date) -> u32 {
    let (y, m, d) = date.ymd();
    (y.max(0) as u32) * 10_000 + m * 100 + d
}

/// The date of a `YYYYMMDD`, if it is one.
pub fn date_of(day: u32) -> Option<Date> {
    Date::from_ymd((day / 10_000) as i32, day / 100 % 100, day % 100)
}

/// The India date at `unix_ns`.
pub fn ist_date(unix_ns: u64) -> Date {
    Date::today_ist(UNIX_EPOCH + Duration::from_nanos(unix_ns))
}

/// Unix ns of India midnight opening `date` (0 before the epoch).
pub fn ist_midnight_ns(date: Date) -> u64 {
    ist_instant(date, 0, 0)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `YYYY-MM-DD.dhr`.
pub fn file_name(day: u32) -> String {
    format!(
        "{:04}-{:02}-{:02}.{EXT}",
        day / 10_000,
        day / 100 % 100,
        day % 100
    )
}

/// The day and whether compressed, for a day file's name.
pub fn parse_name(name: &str) -> Option<(u32, bool)> {
    let (date, rest) = name.split_at_checked(10)?;
    let compressed = match rest {
        ".dhr" => false,
        ".dhr.zst" => true,
        _ => return None,
    };
    let b = date.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse::<u32>().ok())?
    };
    let day = num(&date[0..4])? * 10_000 + num(&date[5..7])? * 100 + num(&date[8..10])?;
    date_of(day)?;
    Some((day, compressed))
}

/// Every day file in `dir` (`.dhr` and `.dhr.zst`), sorted by day (a day
/// with both forms lists the `.dhr` first).
pub fn day_files(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((day, compressed)) = parse_name(name) {
            out.push((day, compressed, entry.path()));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(d, _, p)| (d, p)).collect())
}

/// The existing file for `day`, either form (the `.dhr` when both exist:
/// it is the complete one until its compression has finished).
pub fn day_file(dir: &Path, day: u32) -> Option<PathBuf> {
    let plain = dir.join(file_name(day));
    if plain.is_file() {
        return Some(plain);
    }
    let zst = dir.join(format!("{}.zst", file_name(day)));
    zst.is_file().then_some(zst)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Compresses a `.dhr` into `.dhr.zst` (zstd level 3, via `.zst.tmp`,
/// fsynced, renamed), then removes the `.dhr`. Returns the `.zst` path.
/// Setting `stop` abandons it within a megabyte (`Interrupted`; the `.tmp`
/// is removed and the `.dhr` kept, so the next start does it again).
pub fn compress(path: &Path, stop: &AtomicBool) -> io::Result<PathBuf> {
    let name = |p: &Path| format!("{}", p.display());
    let zst = PathBuf::from(format!("{}.zst", name(path)));
    let tmp = PathBuf::from(format!("{}.zst.tmp", name(path)));
    let src = File::open(path)?;
    // Private like the day files; a stale `.zst.tmp` is replaced.
    let _ = fs::remove_file(&tmp);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    let mut src = BufReader::with_capacity(1 << 20, src);
    loop {
        if stop.load(Ordering::Relaxed) {
            drop(enc);
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        let chunk = src.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        enc.write_all(chunk)?;
        let n = chunk.len();
        src.consume(n);
    }
    let mut out = enc.finish()?;
    out.flush()?;
    out.sync_all()?;
    drop(out);
    fs::rename(&tmp, &zst)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    fs::remove_file(path)?;
    Ok(zst)
}

/// What [`tidy`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tidy {
    /// Days compressed.
    pub compressed: Vec<u32>,
    /// Files deleted by retention.
    pub deleted: Vec<PathBuf>,
}

/// Finishes every day before `today`: compresses `.dhr` files (removing a
/// `.dhr` whose `.zst` already exists), deletes stale `.zst.tmp` files, and
/// applies retention: with `keep_days` N > 0, files of days on or before
/// `today − N` are deleted (today and the N − 1 days before it stay);
/// 0 keeps everything. Problems are logged and the rest goes on; `stop`
/// (shutdown) ends it early, a compression in progress abandoned.
pub fn tidy(dir: &Path, today: Date, keep_days: u32, stop: &AtomicBool) -> Tidy {
    let mut done = Tidy::default();
    let today_n = yyyymmdd(today);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            if n.to_str().is_some_and(|n| n.ends_with(".dhr.zst.tmp")) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let files = match day_files(dir) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("record: cannot list {}: {e}", dir.display());
            return done;
        }
    };
    // Never today or later, whatever keep_days says (config caps it at
    // MAX_KEEP_DAYS; a larger value here just keeps everything).
    let cutoff = (keep_days > 0 && keep_days <= MAX_KEEP_DAYS)
        .then(|| yyyymmdd(today.add_days(-(keep_days as i32))));
    for (day, path) in files {
        if cutoff.is_some_and(|c| day <= c && day < today_n) {
            match fs::remove_file(&path) {
                Ok(()) => {
                    log::info!("record: retention deleted {}", path.display());
                    done.deleted.push(path);
                }
                Err(e) => log::warn!("record: cannot delete {}: {e}", path.display()),
            }
            continue;
        }
        if day >= today_n || path.extension().is_some_and(|x| x == "zst") {
            continue;
        }
        let zst = dir.join(format!("{}.zst", file_name(day)));
        if zst.is_file() {
            // The rename happened (so the .zst is complete); the removal did not.
            let _ = fs::remove_file(&path);
            continue;
        }
        let started = SystemTime::now();
        match compress(&path, stop) {
            Ok(z) => {
                let secs = started.elapsed().unwrap_or_default().as_secs_f64();
                log::info!("record: compressed {} in {secs:.1} s", z.display());
                done.compressed.push(day);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                log::info!(
                    "record: compressing {} stopped by shutdown; the next start does it",
                    path.display()
                );
                break;
            }
            Err(e) => log::warn!("record: cannot compress {}: {e}", path.display()),
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(20250310), "2025-03-10.dhr");
        assert_eq!(parse_name("2025-03-10.dhr"), Some((20250310, false)));
        assert_eq!(parse_name("2025-03-10.dhr.zst"), Some((20250310, true)));
        for bad in [
            "2025-03-10.dhr.zst.tmp",
            "2025-02-30.dhr",
            "2025-3-10.dhr",
            "x.dhr",
            "2025-03-10.dhr.damaged-1",
            "+025-03-10.dhr",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let d = Date::from_ymd(2025, 3, 10).unwrap();
        assert_eq!(date_of(yyyymmdd(d)), Some(d));
        // 2025-03-10 00:00 IST is 2025-03-09 18:30 UTC.
        assert_eq!(ist_midnight_ns(d), 1_741_545_000 * 1_000_000_000);
        assert_eq!(ist_date(ist_midnight_ns(d)), d);
        assert_eq!(ist_date(ist_midnight_ns(d) - 1), d.add_days(-1));
    }

    #[test]
    fn day_files_and_day_file() {
        let dir = super::super::reader::tests::tempdir("files");
        for n in [
            "2025-03-11.dhr",
            "2025-03-10.dhr.zst",
            "notes.txt",
            "2025-03-09.dhr",
        ] {
            fs::write(dir.join(n), b"").unwrap();
        }
        let days: Vec<u32> = day_files(&dir).unwrap().into_iter().map(|d| d.0).collect();
        assert_eq!(days, [20250309, 20250310, 20250311]);
        assert_eq!(
            day_file(&dir, 20250310),
            Some(dir.join("2025-03-10.dhr.zst"))
        );
        assert_eq!(day_file(&dir, 20250311), Some(dir.join("2025-03-11.dhr")));
        assert_eq!(day_file(&dir, 20250312), None);
    }
}
